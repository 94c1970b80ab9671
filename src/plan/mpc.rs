//! Model predictive control: plan, execute the first actions in the real environment, re-plan
//! from the real observation; stop at success (checked as [`SuccessCheck`] says) or after
//! `max_iters` plans.
//!
//! The loop sees the world model only through [`PlanModel`], so either backend (GPU or CPU) and
//! any quantization plugs in unchanged: env -> encoder -> planner <-> predictor rollouts -> env.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{PlanResult, Planner};
use crate::env::{Env, Frame};
use crate::{Error, Result};

/// What the planner needs from a world model.
pub trait PlanModel {
    /// Raw action dimension of the environment.
    fn action_dim(&self) -> usize;
    /// Environment steps per model step.
    fn frameskip(&self) -> usize;
    /// Encode the current observation and the goal once per plan; later cost calls reuse them.
    fn set_problem(
        &mut self,
        obs: &Frame,
        proprio: &[f32],
        goal: &Frame,
        goal_proprio: &[f32],
    ) -> Result<()>;
    /// Planning objective of `n` normalized action sequences `[n, horizon * frameskip *
    /// action_dim]`, one batched rollout.
    fn costs(&mut self, actions: &[f32], n: usize) -> Result<Vec<f32>>;
    /// Normalized planner actions to raw environment actions (same layout).
    fn denormalize(&self, actions: &[f32]) -> Vec<f32>;
    /// Frame size the model's encoder expects.
    fn image_size(&self) -> usize;
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MpcConfig {
    pub max_iters: usize,
    /// Model steps executed per plan (each repeated as `frameskip` env steps).
    pub n_taken: usize,
    /// When an episode's success is checked; absent in traces written before the setting
    /// existed, which checked at every step.
    #[serde(default = "SuccessCheck::every_step")]
    pub success_check: SuccessCheck,
}

impl Default for MpcConfig {
    fn default() -> Self {
        MpcConfig {
            max_iters: 10,
            n_taken: 5,
            success_check: SuccessCheck::default(),
        }
    }
}

/// When MPC checks whether an episode has succeeded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SuccessCheck {
    /// At the start (a start that meets the goal is a success without a plan) and after every
    /// executed env step, stopping there: qwm's rule before 2026-12-04 (every report without
    /// the setting). Lenient: a plan that passes the goal on its way counts, which hides a
    /// quantized objective whose minimum is off the goal (docs/ENVIRONMENTS.md).
    EveryStep,
    /// DINO-WM's `MPCPlanner` (the default): at least one plan, and success only on the state
    /// after all of a plan's executed actions, so passing through the goal mid-plan does not
    /// count.
    #[default]
    AfterPlan,
}

impl SuccessCheck {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "every-step" => Ok(SuccessCheck::EveryStep),
            "after-plan" => Ok(SuccessCheck::AfterPlan),
            _ => Err(Error::Invalid(format!(
                "--success-check must be after-plan (the default, DINO-WM's: after each \
                 executed plan) or every-step (at the start and after every env step), got '{s}'"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SuccessCheck::EveryStep => "every-step",
            SuccessCheck::AfterPlan => "after-plan",
        }
    }

    /// Reports written before the option existed checked at every step.
    pub fn every_step() -> Self {
        SuccessCheck::EveryStep
    }
}

/// One MPC iteration, for logs and plots.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MpcIter {
    pub plan_seconds: f64,
    pub best_cost: f32,
    pub state_distance: f32,
    pub plan: PlanResult,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpisodeRecord {
    pub seed: u64,
    pub success: bool,
    pub iterations: usize,
    // Floats that a diverging model can make NaN round-trip through JSON as null.
    #[serde(with = "crate::io::nan_as_null")]
    pub final_state_distance: f32,
    /// Planning objective of the last executed plan (its mean's cost).
    #[serde(with = "crate::io::nan_as_null")]
    pub final_objective: f32,
    #[serde(with = "crate::io::nan_as_null::vec")]
    pub plan_seconds: Vec<f64>,
    #[serde(with = "crate::io::nan_as_null::vec")]
    pub start: Vec<f32>,
    #[serde(with = "crate::io::nan_as_null::vec")]
    pub goal: Vec<f32>,
    #[serde(with = "crate::io::nan_as_null::vec")]
    pub final_state: Vec<f32>,
}

/// One episode to solve: where it starts, where it must go, and the seed that drew them.
#[derive(Clone, Copy, Debug)]
pub struct Task<'a> {
    pub seed: u64,
    pub start: &'a [f32],
    pub goal: &'a [f32],
}

/// Run one MPC episode from `task.start` to `task.goal`. `on_iter` sees each iteration as it
/// finishes (progress display, frames for the strip).
pub fn run_episode(
    env: &mut dyn Env,
    model: &mut dyn PlanModel,
    planner: &mut dyn Planner,
    cfg: &MpcConfig,
    task: Task,
    on_iter: &mut dyn FnMut(&MpcIter, &dyn Env),
) -> Result<EpisodeRecord> {
    let Task { seed, start, goal } = task;
    if cfg.n_taken == 0 {
        return Err(Error::Invalid("n_taken must be at least 1".into()));
    }
    crate::limits::check_range(
        "MPC iterations",
        cfg.max_iters,
        0,
        crate::limits::MAX_PLAN_STEPS,
    )?;
    crate::limits::check_range("n_taken", cfg.n_taken, 1, crate::limits::MAX_PLAN_STEPS)?;
    let a = model.action_dim();
    if a != env.action_dim() {
        return Err(Error::Invalid(format!(
            "the model plans {a}-D actions but {} takes {}-D actions",
            env.spec().name,
            env.action_dim()
        )));
    }
    let fs = model.frameskip();
    env.reset_to(start)?;
    let size = model.image_size();
    let goal_frame = env.render_state(goal, size)?;
    let goal_proprio = env.proprio_of(goal);
    let every_step = cfg.success_check == SuccessCheck::EveryStep;
    let mut rec = EpisodeRecord {
        seed,
        success: every_step && env.is_success(start, goal),
        iterations: 0,
        final_state_distance: env.state_distance(start, goal),
        final_objective: f32::NAN,
        plan_seconds: Vec::new(),
        start: start.to_vec(),
        goal: goal.to_vec(),
        final_state: start.to_vec(),
    };
    while !rec.success && rec.iterations < cfg.max_iters {
        let t = Instant::now();
        let obs = env.render(size);
        model.set_problem(&obs, &env.proprio(), &goal_frame, &goal_proprio)?;
        let plan = planner.plan(&mut |s, n| model.costs(s, n), None)?;
        let secs = t.elapsed().as_secs_f64();
        let raw = model.denormalize(&plan.actions);
        let steps = (raw.len() / (fs * a)).min(cfg.n_taken);
        'exec: for s in 0..steps {
            for f in 0..fs {
                let off = (s * fs + f) * a;
                env.step(&raw[off..off + a])?;
                if every_step && env.is_success(&env.state(), goal) {
                    break 'exec;
                }
            }
        }
        let state = env.state();
        rec.iterations += 1;
        rec.plan_seconds.push(secs);
        rec.final_objective = plan.cost;
        rec.final_state_distance = env.state_distance(&state, goal);
        rec.success = env.is_success(&state, goal);
        rec.final_state = state;
        let it = MpcIter {
            plan_seconds: secs,
            best_cost: plan.steps.last().map_or(f32::NAN, |s| s.best_cost),
            state_distance: rec.final_state_distance,
            plan,
        };
        on_iter(&it, &*env);
    }
    Ok(rec)
}
