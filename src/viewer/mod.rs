//! `qwm view`: the desktop viewer of planned and imagined trajectories (egui/eframe on
//! wgpu). It shows a [`Trace`], replayed from a directory or growing live while a planning
//! thread streams into it ([`live`]), so every panel has one code path for both.
//!
//! Layout: a top bar (source, live controls, compare toggle, export), the info panel on the
//! left, the plots on the right, the timeline at the bottom, and in the centre one column per
//! shown run (scene over imagination), so two quantizations of one model sit side by side at
//! the same MPC iteration. [`ViewerApp::ui`] draws everything from `&mut Ui`, which is what
//! both eframe and the egui_kittest tests call.

pub mod device;
pub mod export;
pub mod live;
mod panels;
mod plots;
mod window;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use egui::{Color32, ColorImage, Key, TextureHandle, TextureOptions};

use crate::env::Frame;
use crate::trace::Trace;
use live::{JobFn, LiveRequest, LiveSession};

pub use window::{run_window, WindowOptions};

/// Line colours of run 0 and run 1 (paths, plots, column headers).
pub const RUN_COLORS: [Color32; 2] = [
    Color32::from_rgb(31, 119, 180),
    Color32::from_rgb(255, 127, 14),
];

/// Where the viewer's trace comes from.
// One per window: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Source {
    Replay {
        trace: Trace,
        dir: PathBuf,
    },
    Live {
        session: LiveSession,
        job: JobFn,
        /// The request being edited for the next re-run.
        form: LiveRequest,
        form_compare: String,
        wake: Arc<dyn Fn() + Send + Sync>,
    },
}

/// The timeline position: an MPC iteration and an optimization step within it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub iter: usize,
    pub step: usize,
}

/// A finished screenshot request: where to save it and the pixels once they arrive.
struct Shot {
    path: PathBuf,
    image: Arc<Mutex<Option<Arc<ColorImage>>>>,
    /// Close the window after saving (`--screenshot`).
    then_close: bool,
}

pub struct ViewerApp {
    pub source: Source,
    pub cursor: Cursor,
    pub playing: bool,
    /// Optimization steps per second while playing.
    pub speed: f32,
    pub looping: bool,
    /// Whether the second run's column is shown (when the trace has one).
    pub compare_shown: bool,
    /// Live: the cursor follows the newest iteration.
    pub follow: bool,
    play_acc: f32,
    textures: HashMap<String, TextureHandle>,
    /// Status line (exports, errors of the live job).
    pub status: String,
    shot: Option<Shot>,
    /// Frames drawn so far (the screenshot waits for a laid-out frame).
    pub frames: u64,
    screenshot_after: Option<(PathBuf, u64)>,
    /// Frame-time benchmark: `(frames to measure, intervals so far, ui seconds so far)`.
    bench: Option<(usize, Vec<f64>, Vec<f64>)>,
    last_frame: Option<std::time::Instant>,
    /// The trace's environment, made once (PushT builds a physics world).
    env: Option<(String, Arc<Box<dyn crate::env::Env>>)>,
    /// Panels leave their background to the frame's clear colour (the window sets it to the
    /// panel colour) instead of filling it: on a software rasterizer the fills are a
    /// full-window pass of the fragment shader every frame (docs/BENCHMARKS.md).
    pub(crate) panels_from_clear: bool,
    /// Live: which device planning runs on (shared with the window, its own, or the CPU).
    pub plan_device: Option<String>,
    /// Where each plot was drawn in the last frame.
    plot_rects: Vec<(&'static str, egui::Rect)>,
}

impl ViewerApp {
    fn new(source: Source) -> Self {
        let compare_shown = match &source {
            Source::Replay { trace, .. } => trace.runs.len() > 1,
            Source::Live { form, .. } => form.compare.is_some(),
        };
        ViewerApp {
            source,
            cursor: Cursor::default(),
            playing: false,
            speed: 10.0,
            looping: true,
            compare_shown,
            follow: true,
            play_acc: 0.0,
            textures: HashMap::new(),
            status: String::new(),
            shot: None,
            frames: 0,
            screenshot_after: None,
            bench: None,
            last_frame: None,
            env: None,
            panels_from_clear: false,
            plan_device: None,
            plot_rects: Vec::new(),
        }
    }

    /// The environment named `name` (cached).
    fn env(&mut self, name: &str) -> Option<Arc<Box<dyn crate::env::Env>>> {
        if self.env.as_ref().is_none_or(|(n, _)| n != name) {
            self.env = crate::env::make(name)
                .ok()
                .map(|e| (name.to_string(), Arc::new(e)));
        }
        self.env.as_ref().map(|(_, e)| e.clone())
    }

    /// A viewer replaying a loaded trace from `dir`.
    pub fn replay(trace: Trace, dir: PathBuf) -> Self {
        Self::new(Source::Replay { trace, dir })
    }

    /// A viewer planning `request` live with `job`; `wake` repaints the UI from the planning
    /// thread.
    pub fn live(job: JobFn, request: LiveRequest, wake: Arc<dyn Fn() + Send + Sync>) -> Self {
        let session = LiveSession::start(job.clone(), request.clone(), wake.clone());
        let form_compare = request.compare.clone().unwrap_or_default();
        Self::new(Source::Live {
            session,
            job,
            form: request,
            form_compare,
            wake,
        })
    }

    /// Save a screenshot to `path` after `frames` frames, then close the window.
    pub fn screenshot_then_close(&mut self, path: PathBuf, frames: u64) {
        self.screenshot_after = Some((path, frames));
    }

    /// Measure `frames` frame intervals, print them and close (the frame-time benchmark).
    pub fn bench_frames(&mut self, frames: usize) {
        self.bench = Some((frames, Vec::new(), Vec::new()));
    }

    pub fn trace(&self) -> Option<&Trace> {
        match &self.source {
            Source::Replay { trace, .. } => Some(trace),
            Source::Live { session, .. } => session.trace.as_ref(),
        }
    }

    /// Runs whose columns are drawn.
    pub fn shown_runs(&self) -> Vec<usize> {
        let n = self.trace().map_or(0, |t| t.runs.len());
        (0..n).filter(|&r| r == 0 || self.compare_shown).collect()
    }

    /// Number of columns in the central view.
    pub fn columns(&self) -> usize {
        self.shown_runs().len().max(1)
    }

    /// Finished iterations available to the timeline (the most of any shown run).
    pub fn iterations(&self) -> usize {
        let Some(t) = self.trace() else { return 0 };
        self.shown_runs()
            .iter()
            .map(|&r| t.runs[r].iters.len())
            .max()
            .unwrap_or(0)
    }

    /// Optimization steps of iteration `iter` (the most of any shown run).
    pub fn steps_at(&self, iter: usize) -> usize {
        let Some(t) = self.trace() else { return 0 };
        self.shown_runs()
            .iter()
            .filter_map(|&r| t.runs[r].iters.get(iter))
            .map(|i| i.meta.opt_steps.len())
            .max()
            .unwrap_or(0)
    }

    /// Move the cursor to an iteration (clamped), at its last optimization step.
    pub fn select_iteration(&mut self, iter: usize) {
        let n = self.iterations();
        self.cursor.iter = iter.min(n.saturating_sub(1));
        self.cursor.step = self.steps_at(self.cursor.iter).saturating_sub(1);
    }

    /// Advance the playback by one optimization step (to the next iteration after the last).
    pub fn advance(&mut self) {
        let n = self.iterations();
        if n == 0 {
            return;
        }
        if self.cursor.step + 1 < self.steps_at(self.cursor.iter) {
            self.cursor.step += 1;
        } else if self.cursor.iter + 1 < n {
            self.cursor.iter += 1;
            self.cursor.step = 0;
        } else if self.looping {
            self.cursor = Cursor::default();
        } else {
            self.playing = false;
        }
    }

    fn step_back(&mut self) {
        if self.cursor.step > 0 {
            self.cursor.step -= 1;
        } else if self.cursor.iter > 0 {
            self.cursor.iter -= 1;
            self.cursor.step = self.steps_at(self.cursor.iter).saturating_sub(1);
        }
    }

    /// A texture for a frame, uploaded once per key.
    fn texture(&mut self, ctx: &egui::Context, key: &str, f: &Frame) -> TextureHandle {
        if let Some(t) = self.textures.get(key) {
            return t.clone();
        }
        let img = ColorImage::from_rgb([f.width, f.height], &f.data);
        let t = ctx.load_texture(key, img, TextureOptions::NEAREST);
        self.textures.insert(key.to_string(), t.clone());
        t
    }

    fn keyboard(&mut self, ctx: &egui::Context) {
        if ctx.egui_wants_keyboard_input() {
            return;
        }
        let (left, right, up, down, space, home, end) = ctx.input(|i| {
            (
                i.key_pressed(Key::ArrowLeft),
                i.key_pressed(Key::ArrowRight),
                i.key_pressed(Key::ArrowUp),
                i.key_pressed(Key::ArrowDown),
                i.key_pressed(Key::Space),
                i.key_pressed(Key::Home),
                i.key_pressed(Key::End),
            )
        });
        if left {
            self.follow = false;
            self.select_iteration(self.cursor.iter.saturating_sub(1));
        }
        if right {
            self.select_iteration(self.cursor.iter + 1);
        }
        if up {
            self.follow = false;
            self.step_back();
        }
        if down {
            self.advance();
        }
        if space {
            self.playing = !self.playing;
            self.follow = false;
        }
        if home {
            self.follow = false;
            self.cursor = Cursor::default();
        }
        if end {
            let n = self.iterations();
            self.select_iteration(n.saturating_sub(1));
        }
    }

    fn tick(&mut self, ctx: &egui::Context) {
        if let Source::Live { session, .. } = &mut self.source {
            session.poll();
            if session.changed {
                let n = session.trace.as_ref().map_or(0, |t| t.max_iters());
                if self.follow && n > 0 {
                    self.cursor.iter = n - 1;
                    self.cursor.step = usize::MAX;
                }
                if let Some(Err(e)) = session.done.iter().flatten().find(|d| d.is_err()) {
                    self.status = format!("planning ended: {e}");
                }
            }
        }
        if self.playing {
            let dt = ctx.input(|i| i.stable_dt).min(0.1);
            self.play_acc += dt * self.speed;
            while self.play_acc >= 1.0 {
                self.play_acc -= 1.0;
                self.advance();
            }
            ctx.request_repaint();
        }
        let n = self.iterations();
        if n > 0 {
            self.cursor.iter = self.cursor.iter.min(n - 1);
            self.cursor.step = self
                .cursor
                .step
                .min(self.steps_at(self.cursor.iter).saturating_sub(1));
        }
    }

    /// Draw the whole viewer into `ui` (one frame).
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let t0 = std::time::Instant::now();
        let ctx = ui.ctx().clone();
        self.tick(&ctx);
        self.keyboard(&ctx);
        let style = ui.style().clone();
        let clear = |f: egui::Frame| match self.panels_from_clear {
            true => f.fill(Color32::TRANSPARENT),
            false => f,
        };
        let side = clear(egui::Frame::side_top_panel(&style));
        let central = clear(egui::Frame::central_panel(&style));
        egui::Panel::top("qwm_top")
            .frame(side)
            .show(ui, |ui| panels::top_bar(self, ui));
        egui::Panel::bottom("qwm_timeline")
            .frame(side)
            .show(ui, |ui| panels::timeline(self, ui));
        // Fixed widths: a panel sized to its first frame's content stays narrow when the live
        // trace arrives later.
        egui::Panel::left("qwm_info")
            .exact_size(230.0)
            .frame(side)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| panels::info(self, ui))
            });
        egui::Panel::right("qwm_plots")
            .exact_size(330.0)
            .frame(side)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| plots::plots(self, ui))
            });
        egui::CentralPanel::default().frame(central).show(ui, |ui| {
            egui::ScrollArea::both().show(ui, |ui| panels::columns(self, ui))
        });
        self.frames += 1;
        self.screenshots(&ctx);
        self.measure(&ctx, t0);
    }

    /// Ask for a PNG of the current view (saved when the pixels arrive).
    pub fn request_png(&mut self, ctx: &egui::Context, path: PathBuf, then_close: bool) {
        let image = Arc::new(Mutex::new(None));
        let slot = image.clone();
        let c = ctx.clone();
        ctx.request_screenshot(move |img| {
            *slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(img);
            c.request_repaint();
        });
        self.shot = Some(Shot {
            path,
            image,
            then_close,
        });
    }

    fn screenshots(&mut self, ctx: &egui::Context) {
        if let Some((path, after)) = self.screenshot_after.clone() {
            // Wait until the trace is there (live: every run's first iteration, or its end)
            // and laid out.
            let ready = match &self.source {
                Source::Replay { .. } => true,
                Source::Live { session, .. } => session.trace.as_ref().is_some_and(|t| {
                    t.runs
                        .iter()
                        .zip(&session.done)
                        .all(|(r, d)| !r.iters.is_empty() || d.is_some())
                }),
            };
            if ready && self.frames >= after && self.shot.is_none() {
                self.screenshot_after = None;
                self.request_png(ctx, path, true);
            }
            ctx.request_repaint();
        }
        let done = self.shot.as_ref().and_then(|s| {
            s.image
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        });
        if let (Some(img), Some(shot)) = (done, self.shot.as_ref()) {
            let res = export::save_color_image(&img, &shot.path);
            self.status = match &res {
                Ok(()) => format!("saved {}", shot.path.display()),
                Err(e) => format!("{e}"),
            };
            if shot.then_close {
                if let Err(e) = res {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
                eprintln!("{}", self.status);
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            }
            self.shot = None;
        } else if self.shot.is_some() {
            ctx.request_repaint();
        }
    }

    fn measure(&mut self, ctx: &egui::Context, t0: std::time::Instant) {
        let now = std::time::Instant::now();
        // Only frames while the live plan runs count.
        let planning = match &self.source {
            Source::Live { session, .. } => session.running(),
            Source::Replay { .. } => true,
        } && self.iterations() > 0;
        let Some((want, intervals, uis)) = self.bench.as_mut() else {
            return;
        };
        if planning {
            if let Some(prev) = self.last_frame {
                intervals.push((now - prev).as_secs_f64());
                uis.push((now - t0).as_secs_f64());
            }
            self.last_frame = Some(now);
        }
        ctx.request_repaint();
        if intervals.len() >= *want {
            let report = export::frame_report(intervals, uis);
            println!("{report}");
            self.bench = None;
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }
}
