//! The native window: eframe with its wgpu renderer (qwm's own wgpu 30). A live planner on a
//! GPU shares the window's device when its adapter can present to the window ([`device`]),
//! and keeps a device of its own otherwise; frames reach the UI as images either way, so the
//! window works on any adapter that can present, lavapipe under Xvfb included.
//!
//! [`device`]: super::device

use std::path::PathBuf;
use std::sync::Arc;

use super::device::{self, PlanBackend, PlanDevice};
use super::ViewerApp;
use crate::{Error, Result};

/// How to open the window.
#[derive(Clone, Debug, Default)]
pub struct WindowOptions {
    /// Write a PNG of the laid-out view here, then close (exit 0).
    pub screenshot: Option<PathBuf>,
    /// Print frame times over this many frames (while a live plan runs), then close.
    pub bench_frames: Option<usize>,
    pub size: Option<[f32; 2]>,
    /// A live planner's backend: the window then decides whether planning shares its device.
    /// `None` (replay): eframe chooses the adapter.
    pub planning: Option<PlanBackend>,
}

impl eframe::App for ViewerApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        ViewerApp::ui(self, ui);
    }

    /// The panels' colour: they leave their background to the clear (`panels_from_clear`).
    fn clear_color(&self, visuals: &egui::Visuals) -> [f32; 4] {
        visuals.panel_fill.to_normalized_gamma_f32()
    }
}

/// The error for a machine without a display.
fn no_display(why: &str) -> Error {
    Error::Invalid(format!(
        "qwm view needs a display ({why}): run it under `xvfb-run -a qwm view ...`, or record \
         a trace with `qwm plan --trace DIR` and export it without a window with \
         `qwm view DIR --gif OUT.gif`"
    ))
}

/// Builds the app once the window exists, given the function that wakes the UI and the device
/// live planning uses (`None` for a replay).
pub type MakeApp = Box<dyn FnOnce(Arc<dyn Fn() + Send + Sync>, Option<PlanDevice>) -> ViewerApp>;

/// Open the window and run until it closes. `make` builds the app once the window exists;
/// its first argument wakes the UI from other threads.
pub fn run_window(opts: WindowOptions, make: MakeApp) -> Result<()> {
    if cfg!(target_os = "linux") {
        let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
        if !set("DISPLAY") && !set("WAYLAND_DISPLAY") {
            return Err(no_display("DISPLAY and WAYLAND_DISPLAY are unset"));
        }
    }
    let size = opts.size.unwrap_or([1400.0, 900.0]);
    let mut native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_inner_size(size)
            .with_title("qwm view"),
        renderer: eframe::Renderer::Wgpu,
        // Dithering adds noise in every fragment against banding in gradients, which the
        // viewer does not draw; on a software rasterizer (lavapipe) that is paint time.
        dithering: false,
        ..Default::default()
    };
    // Frame times are measured without waiting for a vertical blank.
    if opts.bench_frames.is_some() {
        native.wgpu_options.surface.present_mode = wgpu::PresentMode::AutoNoVsync;
    }
    let slot = device::DecisionSlot::default();
    if let Some(setup) = opts
        .planning
        .and_then(|want| device::wgpu_setup(want, slot.clone()))
    {
        native.wgpu_options.wgpu_setup = setup;
    }
    let result = eframe::run_native(
        "qwm view",
        native,
        Box::new(move |cc| {
            let ctx = cc.egui_ctx.clone();
            let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || ctx.request_repaint());
            let plan_device = opts.planning.map(|want| {
                let decision = slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take()
                    .unwrap_or_else(|| match want {
                        PlanBackend::Cpu => device::Decision::Cpu("--backend cpu".into()),
                        _ => device::Decision::Own("the window chose no adapter".into()),
                    });
                let d = PlanDevice::resolve(decision, cc.wgpu_render_state.as_ref());
                // One line for the log (and the test that checks the choice).
                eprintln!("qwm view: planning device: {}", d.describe());
                d
            });
            let note = plan_device.as_ref().map(PlanDevice::describe);
            let mut app = make(wake, plan_device);
            app.plan_device = note;
            app.panels_from_clear = true;
            if let Some(p) = opts.screenshot {
                // A few frames for the layout to settle and the textures to upload.
                app.screenshot_then_close(p, 4);
            }
            if let Some(n) = opts.bench_frames {
                app.bench_frames(n);
            }
            Ok(Box::new(app))
        }),
    );
    result.map_err(|e| {
        let msg = e.to_string();
        if msg.to_ascii_lowercase().contains("display") || msg.contains("XOpenDisplay") {
            no_display(&msg)
        } else {
            Error::Invalid(format!("qwm view: the window failed: {msg}"))
        }
    })
}
