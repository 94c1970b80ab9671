//! Plan traces: everything `qwm view` shows about a planned episode, recorded by
//! `qwm plan --trace DIR` (and `qwm eval --trace DIR`) and replayed without a model.
//!
//! A trace is a directory (format in docs/TRACE.md): `trace.json` holds the settings and the
//! small per-iteration numbers (objective statistics per optimization step, timings,
//! imagination error per horizon step); each MPC iteration's arrays (frames, latents, states,
//! elite action sequences) go to their own `r<run>/iter<k>.safetensors`. One file per
//! iteration keeps recording incremental (an interrupted recording keeps what it wrote, and
//! `trace.json` is replaced atomically after each iteration) and lets a reader check each
//! file's shapes against `trace.json` before using it.
//!
//! [`record`] runs a traced MPC episode and streams the same data as events (the live viewer).

pub mod record;
mod store;

use serde::{Deserialize, Serialize};

use crate::env::Frame;
use crate::plan::{MpcConfig, PlanConfig};

pub use store::{load, TraceWriter};

/// Name in `trace.json`'s `format` field.
pub const FORMAT_NAME: &str = "qwm-trace";
/// The version this qwm writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// `trace.json`: the episode, the settings and one entry per run (model).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TraceMeta {
    pub format: String,
    pub version: u32,
    pub env: String,
    /// Seed of the start/goal pair and of the planner.
    pub seed: u64,
    pub planner: String,
    pub plan: PlanConfig,
    pub mpc: MpcConfig,
    /// Size of real frames (the model's input).
    pub image_size: usize,
    pub start: Vec<f32>,
    pub goal: Vec<f32>,
    /// One run per model planning this episode (a second one when comparing).
    pub runs: Vec<RunMeta>,
}

/// One model planning the episode.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunMeta {
    /// Short label for column headers (the quantization spec, e.g. `fp`, `w4g32`).
    pub label: String,
    /// Model file or name.
    pub model: String,
    pub quant: String,
    /// `cpu` or `gpu`.
    pub backend: String,
    /// The GPU adapter (empty on the CPU backend).
    pub adapter: String,
    /// Bytes of the linear layers as stored (quantized) and as f32.
    pub linear_bytes: Option<(u64, u64)>,
    /// Seconds to load (and quantize) the model.
    pub load_seconds: f64,
    /// Side of the decoded imagined frames (0 when the model has no decoder).
    pub decoded_size: usize,
    /// Patches x encoder width of one visual latent.
    pub latent_shape: (usize, usize),
    pub success: bool,
    /// True once the episode ended (success or the iteration limit); false while recording
    /// or when it was stopped.
    pub finished: bool,
    pub iterations: Vec<IterMeta>,
}

/// Statistics of one optimization step over the samples' objective values.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct OptStat {
    pub best: f32,
    pub mean: f32,
    pub elite_mean: f32,
    pub elite_min: f32,
    pub elite_max: f32,
    /// Sampling spread: the standard deviation of the samples around their mean, averaged
    /// over the sequence's dimensions (normalized action units).
    pub spread: f32,
}

/// The small numbers of one MPC iteration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IterMeta {
    pub index: usize,
    pub opt_steps: Vec<OptStat>,
    /// Objective of the final plan (the last refitted mean) as the model imagines it.
    pub plan_cost: f32,
    /// Distance to the goal after executing the plan's first steps.
    pub distance: f32,
    /// Environment steps executed.
    pub executed_steps: usize,
    /// Mean squared error between the imagined visual latent and the encoding of the real
    /// frame the same actions reach in the simulator, per horizon step (step 0 is the
    /// observation itself).
    pub latent_err: Vec<f32>,
    /// The compared model's latent divergence on this iteration's plan from this
    /// observation, per horizon step: `||z_other - z_this||^2 / ||z_this||^2` (empty
    /// without a compared model).
    pub divergence: Vec<f32>,
    /// Seconds: encoding + optimization (`plan`), executing in the environment (`env`), the
    /// trace's extra work (`record`: imagination, decoding, simulating elites).
    pub plan_seconds: f64,
    pub env_seconds: f64,
    pub record_seconds: f64,
}

/// One MPC iteration with its arrays.
#[derive(Clone, Debug)]
pub struct IterTrace {
    pub meta: IterMeta,
    /// The observation the plan started from.
    pub obs: Frame,
    /// Decoded imagined frames, horizon + 1 (empty without a decoder).
    pub imagined: Vec<Frame>,
    /// Real frames the plan's actions reach in the simulator (open loop, whole horizon),
    /// horizon + 1.
    pub real: Vec<Frame>,
    /// Imagined visual latents `[horizon + 1][N * De]`.
    pub pred_latent: Vec<Vec<f32>>,
    /// Encoded real frames `[horizon + 1][N * De]`.
    pub real_latent: Vec<Vec<f32>>,
    /// States at each model step of the open-loop plan, horizon + 1.
    pub real_states: Vec<Vec<f32>>,
    /// The plan (normalized actions, `horizon * frameskip * action_dim`).
    pub plan_actions: Vec<f32>,
    /// Raw actions executed, one per environment step.
    pub executed_actions: Vec<Vec<f32>>,
    /// States along the executed steps, the start included (`executed_steps + 1`).
    pub executed_states: Vec<Vec<f32>>,
    /// The last optimization step's top-k sequences (normalized), best first.
    pub elite_actions: Vec<Vec<f32>>,
    /// States each elite reaches at every model step in the simulator `[k][horizon + 1]`.
    pub elite_states: Vec<Vec<Vec<f32>>>,
}

/// A run with its iterations.
#[derive(Clone, Debug)]
pub struct RunTrace {
    pub meta: RunMeta,
    pub iters: Vec<IterTrace>,
}

/// A whole trace in memory.
#[derive(Clone, Debug)]
pub struct Trace {
    pub meta: TraceMeta,
    pub goal_frame: Frame,
    pub runs: Vec<RunTrace>,
}

impl Trace {
    /// Executed path of a run: the start, then every executed state in order.
    pub fn path(&self, run: usize) -> Vec<Vec<f32>> {
        let mut p = vec![self.meta.start.clone()];
        for it in &self.runs[run].iters {
            p.extend(it.executed_states.iter().skip(1).cloned());
        }
        p
    }

    /// The most MPC iterations of any run.
    pub fn max_iters(&self) -> usize {
        self.runs.iter().map(|r| r.iters.len()).max().unwrap_or(0)
    }
}

/// Objective statistics of one optimization step: `samples` `[n, d]`, `costs` `[n]`.
pub fn opt_stat(samples: &[f32], costs: &[f32], topk: usize) -> OptStat {
    let n = costs.len().max(1);
    let d = samples.len() / n;
    let mut sorted: Vec<f32> = costs.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let k = topk.clamp(1, sorted.len().max(1));
    let elite = &sorted[..k.min(sorted.len())];
    let mut spread = 0.0f64;
    for j in 0..d {
        let m = (0..n).map(|i| samples[i * d + j] as f64).sum::<f64>() / n as f64;
        let v = (0..n)
            .map(|i| (samples[i * d + j] as f64 - m).powi(2))
            .sum::<f64>()
            / n as f64;
        spread += v.sqrt();
    }
    OptStat {
        best: sorted.first().copied().unwrap_or(f32::NAN),
        mean: costs.iter().sum::<f32>() / n as f32,
        elite_mean: elite.iter().sum::<f32>() / elite.len().max(1) as f32,
        elite_min: elite.first().copied().unwrap_or(f32::NAN),
        elite_max: elite.last().copied().unwrap_or(f32::NAN),
        spread: (spread / d.max(1) as f64) as f32,
    }
}
