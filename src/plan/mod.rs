//! Planners over action sequences. A planner only sees a batched cost function (one call per
//! optimization step evaluates every sample, e.g. one batched world-model rollout on the GPU),
//! so the same code plans on either backend. A new planner is one new file implementing
//! [`Planner`] plus one line in [`make`].

pub mod calibrate;
mod cem;
pub mod eval;
pub mod mpc;
mod mppi;
pub mod stats;
pub mod world;

pub use cem::Cem;
pub use mpc::{run_episode, EpisodeRecord, MpcConfig, PlanModel, SuccessCheck, Task};
pub use mppi::Mppi;

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Settings shared by the sampling planners (DINO-WM's CEM defaults).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanConfig {
    /// Planning horizon in model steps.
    pub horizon: usize,
    /// Numbers per step: frameskip x action_dim (normalized action space).
    pub step_dim: usize,
    pub samples: usize,
    pub topk: usize,
    pub opt_steps: usize,
    /// Initial standard deviation of the sampling distribution.
    pub var_scale: f32,
    /// MPPI temperature.
    pub temperature: f32,
    pub seed: u64,
    /// How CEM refits its standard deviation to the top-k (DINO-WM: `torch.std`, k - 1).
    #[serde(default)]
    pub cem_std: CemStd,
}

/// Divisor of CEM's refitted variance over the top-k samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CemStd {
    /// Sample standard deviation, divisor k - 1: DINO-WM's `topk_action.std(dim=0)`.
    Sample,
    /// Population standard deviation, divisor k: qwm's default, kept so that the 50-episode
    /// results of docs/RESULTS.md (all planned with it) stay comparable and resumable; std is
    /// sqrt((k-1)/k) of `Sample`'s (k = 30: 1.7 % narrower).
    #[default]
    Population,
}

impl CemStd {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "sample" => Ok(CemStd::Sample),
            "population" => Ok(CemStd::Population),
            _ => Err(Error::Invalid(format!(
                "--cem-std must be sample (divisor k - 1, DINO-WM) or population (divisor k), \
                 got '{s}'"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CemStd::Sample => "sample",
            CemStd::Population => "population",
        }
    }

    /// Reports written before the option existed used the population divisor.
    pub fn population() -> Self {
        CemStd::Population
    }
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            horizon: 5,
            step_dim: 10,
            samples: 300,
            topk: 30,
            opt_steps: 30,
            var_scale: 1.0,
            temperature: 0.5,
            seed: 0,
            cem_std: CemStd::Population,
        }
    }
}

impl PlanConfig {
    /// Refuse settings that cannot work, before any work starts.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if self.horizon == 0 {
            return bad("planning horizon must be at least 1".into());
        }
        if self.step_dim == 0 {
            return bad("action step dimension must be at least 1".into());
        }
        if self.samples < 2 {
            return bad(format!("samples must be at least 2, got {}", self.samples));
        }
        if self.topk == 0 || self.topk > self.samples {
            return bad(format!(
                "top-k must be between 1 and samples ({}), got {}",
                self.samples, self.topk
            ));
        }
        if self.cem_std == CemStd::Sample && self.topk < 2 {
            return bad(format!(
                "top-k {} is too small for the sample standard deviation (divisor k - 1); use \
                 --topk 2 or more, or --cem-std population",
                self.topk
            ));
        }
        if self.opt_steps == 0 {
            return bad("opt steps must be at least 1".into());
        }
        use crate::limits::{check_range, product, MAX_PLAN_STEPS, MAX_SAMPLES};
        check_range("planning horizon", self.horizon, 1, MAX_PLAN_STEPS)?;
        check_range("samples", self.samples, 2, MAX_SAMPLES)?;
        check_range("opt steps", self.opt_steps, 1, MAX_PLAN_STEPS)?;
        // The planner holds samples x horizon x step values a few times over.
        let values = product(
            "samples x horizon x action step",
            &[self.samples, self.horizon, self.step_dim],
        )?;
        if values > 1 << 28 {
            return bad(format!(
                "samples x horizon x action step = {values} values, more than the {} a plan may \
                 hold; lower --samples or --horizon",
                1u64 << 28
            ));
        }
        if !(self.var_scale > 0.0 && self.var_scale.is_finite()) {
            return bad(format!("var_scale must be > 0, got {}", self.var_scale));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad(format!("temperature must be > 0, got {}", self.temperature));
        }
        Ok(())
    }

    pub fn seq_len(&self) -> usize {
        self.horizon * self.step_dim
    }
}

/// Cost of each of `n` action sequences laid out `[n, horizon * step_dim]`; lower is better.
pub type CostFn<'a> = dyn FnMut(&[f32], usize) -> Result<Vec<f32>> + 'a;

/// One optimization step, for logs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepStat {
    pub best_cost: f32,
    pub mean_cost: f32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanResult {
    /// The planned sequence `[horizon * step_dim]`.
    pub actions: Vec<f32>,
    /// Its cost (evaluated in the last step).
    pub cost: f32,
    pub steps: Vec<StepStat>,
}

pub trait Planner {
    fn name(&self) -> &'static str;

    /// Plan from `init` (the warm-start mean, zeros when `None`).
    fn plan(&mut self, cost: &mut CostFn, init: Option<&[f32]>) -> Result<PlanResult>;
}

pub const PLANNERS: [&str; 2] = ["cem", "mppi"];

pub fn make(name: &str, cfg: PlanConfig) -> Result<Box<dyn Planner>> {
    cfg.validate()?;
    match name.to_ascii_lowercase().as_str() {
        "cem" => Ok(Box::new(Cem::new(cfg))),
        "mppi" => Ok(Box::new(Mppi::new(cfg))),
        other => Err(Error::Invalid(format!(
            "unknown planner {other:?}; available: {}",
            PLANNERS.join(", ")
        ))),
    }
}

/// Seeded Gaussian sampler shared by the planners; each plan call draws a fresh stream.
pub(crate) struct Sampler {
    rng: StdRng,
}

impl Sampler {
    pub fn new(seed: u64) -> Self {
        Sampler {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// `[n, d]` samples `mean + std * eps`; row 0 is the mean itself (DINO-WM's CEM keeps the
    /// current mean among the candidates).
    pub fn around(&mut self, mean: &[f32], std: &[f32], n: usize) -> Vec<f32> {
        let d = mean.len();
        let mut out = Vec::with_capacity(n * d);
        out.extend_from_slice(mean);
        for _ in 1..n {
            for j in 0..d {
                let e: f32 = StandardNormal.sample(&mut self.rng);
                out.push(mean[j] + std[j] * e);
            }
        }
        out
    }
}

pub(crate) fn check_costs(costs: &[f32], n: usize) -> Result<()> {
    if costs.len() != n {
        return Err(Error::Shape(format!(
            "cost function returned {} costs for {n} samples",
            costs.len()
        )));
    }
    if costs.iter().any(|c| c.is_nan()) {
        return Err(Error::Invalid(
            "the planning objective is NaN for some samples (model weights or inputs non-finite?)"
                .into(),
        ));
    }
    Ok(())
}

pub(crate) fn step_stat(costs: &[f32]) -> StepStat {
    StepStat {
        best_cost: costs.iter().copied().fold(f32::INFINITY, f32::min),
        mean_cost: costs.iter().sum::<f32>() / costs.len() as f32,
    }
}
