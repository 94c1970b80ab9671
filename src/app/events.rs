//! What a running session reports: one-line notices (backend choice, calibration,
//! quantization) and typed progress (each optimization step, each MPC iteration, each
//! finished episode). Events own their data, so an observer may forward them to another
//! thread (a viewer's UI) through a channel.

use crate::model::ModelConfig;
use crate::plan::mpc::MpcIter;
use crate::plan::{EpisodeRecord, MpcConfig, PlanConfig};

#[derive(Clone, Debug)]
pub enum Event {
    /// A line for a log: which backend, calibration started, what quantization gave.
    Notice(String),
    /// The model is loaded (and quantized when asked): its display name and config.
    ModelLoaded { name: String, config: ModelConfig },
    /// An episode starts (`index` counts episodes of an evaluation; 0 for `plan_episode`).
    EpisodeStarted {
        index: usize,
        seed: u64,
        planner: String,
        plan: PlanConfig,
        mpc: MpcConfig,
    },
    /// One optimization step of the planner (one batched cost evaluation): `iteration` is the
    /// MPC iteration (0-based), `step` the step within it (0-based).
    OptStep {
        iteration: usize,
        step: usize,
        samples: usize,
        best_cost: f32,
        mean_cost: f32,
    },
    /// An MPC iteration finished: the plan, its cost, and the real state after executing it.
    MpcIteration {
        iteration: usize,
        iter: MpcIter,
        state: Vec<f32>,
    },
    /// An episode finished.
    EpisodeFinished { index: usize, record: EpisodeRecord },
}

/// Receives events. Any `FnMut(&Event)` closure is one.
pub type Observer<'a> = dyn FnMut(&Event) + 'a;

/// An observer that ignores everything.
pub fn ignore(_: &Event) {}
