//! The native window: eframe with its wgpu renderer (qwm's own wgpu 30). Planning keeps its
//! own device (the CPU backend, or a `GpuContext`) and hands frames to the UI as images, so the
//! window works on any adapter that can present, lavapipe under Xvfb included.

use std::path::PathBuf;
use std::sync::Arc;

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

/// Builds the app once the window exists, given the function that wakes the UI.
pub type MakeApp = Box<dyn FnOnce(Arc<dyn Fn() + Send + Sync>) -> ViewerApp>;

/// Open the window and run until it closes. `make` builds the app once the window exists;
/// its argument wakes the UI from other threads.
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
    let result = eframe::run_native(
        "qwm view",
        native,
        Box::new(move |cc| {
            let ctx = cc.egui_ctx.clone();
            let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || ctx.request_repaint());
            let mut app = make(wake);
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
