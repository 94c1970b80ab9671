//! Planner settings as a user gives them, with the per-environment defaults (DINO-WM's plan
//! configs, in `EnvSpec`) filled in where they are left open. The CLI's flags default to
//! [`PlanSettings::default`], so every default is written here once.

use crate::env::EnvSpec;
use crate::plan::{CemStd, MpcConfig, PlanConfig, SuccessCheck};

#[derive(Clone, Debug)]
pub struct PlanSettings {
    /// `plan::PLANNERS`: cem or mppi.
    pub planner: String,
    /// Planning horizon (model steps).
    pub horizon: usize,
    pub samples: usize,
    pub topk: usize,
    /// Optimization steps per plan; `None` = the environment's default.
    pub opt_steps: Option<usize>,
    /// MPC iterations per episode; `None` = the environment's default.
    pub max_iter: Option<usize>,
    /// Model steps executed per plan.
    pub n_taken: usize,
    pub var_scale: f32,
    pub temperature: f32,
    /// CEM's std divisor over the top-k: k (default, qwm's results) or k - 1 as DINO-WM.
    pub cem_std: CemStd,
    /// When MPC checks success: after each executed plan as DINO-WM (default) or at every
    /// step (qwm's rule before 2026-12-04).
    pub success_check: SuccessCheck,
}

impl Default for PlanSettings {
    fn default() -> Self {
        PlanSettings {
            planner: "cem".into(),
            horizon: 5,
            samples: 300,
            topk: 30,
            opt_steps: None,
            max_iter: None,
            n_taken: 5,
            var_scale: 1.0,
            temperature: 0.5,
            cem_std: CemStd::Population,
            success_check: SuccessCheck::AfterPlan,
        }
    }
}

impl PlanSettings {
    /// The planner and MPC configs for `env` with `step_dim` numbers per model step.
    pub fn configs(&self, env: &EnvSpec, step_dim: usize, seed: u64) -> (PlanConfig, MpcConfig) {
        (
            PlanConfig {
                horizon: self.horizon,
                step_dim,
                samples: self.samples,
                topk: self.topk,
                opt_steps: self.opt_steps.unwrap_or(env.plan_opt_steps),
                var_scale: self.var_scale,
                temperature: self.temperature,
                seed,
                cem_std: self.cem_std,
            },
            MpcConfig {
                max_iters: self.max_iter.unwrap_or(env.plan_max_iters),
                n_taken: self.n_taken,
                success_check: self.success_check,
            },
        )
    }

    /// Refuse a bad planner name or bad settings before anything is loaded.
    pub fn validate(&self, env: &EnvSpec) -> crate::Result<()> {
        crate::plan::make(&self.planner, self.configs(env, 10, 0).0).map(|_| ())
    }
}
