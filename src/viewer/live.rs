//! Live planning for the viewer: the planning job runs on its own thread and streams
//! [`Msg`]s through a channel; the UI drains the channel once per frame into an ordinary
//! [`Trace`] (so every panel draws live and replayed episodes with the same code) and never
//! waits on the planner. Pause, single-step and stop go through the job's [`Control`].
//!
//! The viewer does not know how to open models: the command line hands it a [`JobFn`] that
//! loads, quantizes and records (layering: the viewer sits below the CLI and the application
//! code that opens models).

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use crate::env::Frame;
use crate::trace::record::{Control, Event};
use crate::trace::{IterMeta, OptStat, RunMeta, RunTrace, Trace, TraceMeta};

/// What the user asks a live session to plan.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveRequest {
    pub env: String,
    pub model: Option<String>,
    pub quant: String,
    /// A second quantization spec of the same model, planned on the same episode and seed.
    pub compare: Option<String>,
    pub seed: u64,
}

/// What a planning job reports.
pub enum Msg {
    /// The episode and settings (first message).
    Meta(Box<TraceMeta>, Frame),
    /// Run `r`'s model is loaded.
    Run(usize, Box<RunMeta>),
    Event(Event),
    /// Run `r` ended: `Ok(success)` or an error message (a stop is `Err("stopped")`).
    Done(usize, Result<bool, String>),
}

/// Runs a request to the end on the calling thread, sending messages as it goes.
pub type JobFn = Arc<dyn Fn(LiveRequest, Arc<Control>, Sender<Msg>) + Send + Sync>;

/// One live planning job and the trace it has produced so far.
pub struct LiveSession {
    pub request: LiveRequest,
    pub control: Arc<Control>,
    rx: Receiver<Msg>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub trace: Option<Trace>,
    /// Optimization steps of each run's iteration in progress.
    pub pending: Vec<Vec<OptStat>>,
    /// Per run: `None` while planning, then the outcome.
    pub done: Vec<Option<Result<bool, String>>>,
    /// Whether anything arrived in the last [`LiveSession::poll`].
    pub changed: bool,
}

impl LiveSession {
    /// Start `job` on a new thread; `wake` is called after each message (to repaint the UI).
    pub fn start(job: JobFn, request: LiveRequest, wake: Arc<dyn Fn() + Send + Sync>) -> Self {
        let (tx, rx) = channel();
        let control = Arc::new(Control::new());
        let (c, r) = (control.clone(), request.clone());
        let (wtx, wrx) = channel::<Msg>();
        // A forwarding thread wakes the UI after every message, so the job itself never
        // touches UI state.
        let fwd = std::thread::spawn(move || {
            while let Ok(m) = wrx.recv() {
                if tx.send(m).is_err() {
                    break;
                }
                wake();
            }
        });
        // Spawning fails only when the OS is out of threads, where the window (itself threads)
        // could not run either; `start` is called from the UI, which has no error path.
        #[allow(clippy::expect_used)]
        let thread = std::thread::Builder::new()
            .name("qwm-plan".into())
            .spawn(move || {
                job(r, c, wtx);
                let _ = fwd.join();
            })
            .expect("spawning the planning thread");
        LiveSession {
            request,
            control,
            rx,
            thread: Some(thread),
            trace: None,
            pending: Vec::new(),
            done: Vec::new(),
            changed: false,
        }
    }

    /// Move every message that arrived into the trace (never blocks).
    pub fn poll(&mut self) {
        self.changed = false;
        while let Ok(m) = self.rx.try_recv() {
            self.changed = true;
            self.apply(m);
        }
    }

    /// Apply one message (also used by tests to build a session's state by hand).
    pub fn apply(&mut self, m: Msg) {
        match m {
            // Each run's thread sends the same episode; the first one sets it up.
            Msg::Meta(_, _) if self.trace.is_some() => {}
            Msg::Meta(meta, goal) => {
                let n = meta.runs.len();
                self.trace = Some(Trace {
                    runs: meta
                        .runs
                        .iter()
                        .map(|r| RunTrace {
                            meta: r.clone(),
                            iters: Vec::new(),
                        })
                        .collect(),
                    meta: *meta,
                    goal_frame: goal,
                });
                self.pending = vec![Vec::new(); n];
                self.done = vec![None; n];
            }
            Msg::Run(r, meta) => {
                if let Some(run) = self.trace.as_mut().and_then(|t| t.runs.get_mut(r)) {
                    run.meta = *meta;
                }
            }
            Msg::Event(Event::OptStep { run, stat, .. }) => {
                if let Some(p) = self.pending.get_mut(run) {
                    p.push(stat);
                }
            }
            Msg::Event(Event::Iter { run, iter }) => {
                if let Some(t) = self.trace.as_mut() {
                    if let Some(rt) = t.runs.get_mut(run) {
                        rt.meta.iterations.push(iter.meta.clone());
                        rt.iters.push(*iter);
                    }
                }
                if let Some(p) = self.pending.get_mut(run) {
                    p.clear();
                }
            }
            Msg::Done(r, res) => {
                if let Some(t) = self.trace.as_mut().and_then(|t| t.runs.get_mut(r)) {
                    t.meta.finished = res.is_ok();
                    t.meta.success = matches!(res, Ok(true));
                }
                if let Some(d) = self.done.get_mut(r) {
                    *d = Some(res);
                }
            }
        }
    }

    pub fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stop the job and wait for its thread (it stops at the next optimization step).
    pub fn stop(&mut self) {
        self.control.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.poll();
    }

    /// The objective statistics to plot for run `r` at MPC iteration `iter`: a finished
    /// iteration's, or the steps so far of the one in progress.
    pub fn steps_of(&self, r: usize, iter: usize) -> Option<&[OptStat]> {
        let t = self.trace.as_ref()?;
        let run = t.runs.get(r)?;
        if iter < run.iters.len() {
            Some(&run.iters[iter].meta.opt_steps)
        } else {
            self.pending.get(r).map(|p| p.as_slice())
        }
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.control.stop();
    }
}

/// Mean of an iteration's divergence over the predicted steps (step 0 is the encoder alone).
pub fn mean_divergence(m: &IterMeta) -> Option<f32> {
    let v = m.divergence.get(1..)?;
    if v.is_empty() {
        return None;
    }
    Some(v.iter().sum::<f32>() / v.len() as f32)
}
