//! Built-in visual control tasks with DINO-WM's dynamics, rendering and success criteria:
//! [`wall::Wall`] (DotWall), [`pointmaze::PointMaze`] (D4RL U-maze) and [`pusht::PushT`]
//! (rapier2d physics), plus offline datasets ([`dataset`]) collected with the policies in
//! [`policy`].
//!
//! Every environment keeps its whole state in a small `Vec<f32>` (see [`EnvSpec::state_dim`]),
//! so a planner can reset to any observed state, and stepping is a pure function of
//! (state, action): the same inputs always give the same next state.
//!
//! ```no_run
//! let mut env = qwm::env::make("wall").unwrap();
//! let (start, goal) = env.sample_start_goal(99);
//! env.reset_to(&start).unwrap();
//! env.step(&[1.0, 0.0]).unwrap();
//! let frame = env.render(224);
//! println!("{} px, success: {}", frame.width, env.is_success(&env.state(), &goal));
//! ```

pub mod dataset;
pub mod pointmaze;
pub mod policy;
pub mod pusht;
pub mod render;
pub mod wall;

use crate::{Error, Result};
use rayon::prelude::*;

pub use render::Frame;

/// Names accepted by [`make`].
pub const ENV_NAMES: [&str; 3] = ["wall", "pointmaze", "pusht"];

/// Static description of an environment: sizes, rendering and planning hints.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvSpec {
    /// Name as accepted by [`make`].
    pub name: &'static str,
    /// Length of the state vector (`reset_to`, `state`).
    pub state_dim: usize,
    /// Length of the action vector (`step`).
    pub action_dim: usize,
    /// Length of the proprioceptive vector (`proprio`).
    pub proprio_dim: usize,
    /// Size the reference implementation draws at (Wall 65, PointMaze 224, PushT 512 before
    /// DINO-WM resizes to 224). `render` accepts any size.
    pub native_size: usize,
    /// Default frame size of `qwm data`.
    pub default_data_size: usize,
    /// Success threshold on the position distance (px for Wall and PushT, maze units for
    /// PointMaze). PushT also needs the angle within [`pusht::SUCCESS_ANGLE`].
    pub success_threshold: f32,
    /// Weight of the proprio term in DINO-WM's planning objective (Wall 1, PointMaze 0,
    /// PushT 1).
    pub alpha: f32,
    /// Actions are clipped to `[-c, c]` per dimension by `step` when set (PointMaze: 1).
    pub action_clip: Option<f32>,
    /// Typical magnitude of one action component in the collected data; a normalization
    /// hint (datasets store exact per-dimension mean/std in their manifest).
    pub action_scale: f32,
    /// Names of the state dimensions, for error messages and docs.
    pub state_names: &'static [&'static str],
    /// Planning defaults from DINO-WM's plan configs: CEM/MPPI optimization steps per plan
    /// and MPC iterations per episode (10 and 50 for Wall and PointMaze, 30 and 30 PushT).
    pub plan_opt_steps: usize,
    pub plan_max_iters: usize,
}

/// A visual control task. Implementations are cheap to clone (`box_clone`) and `Send`, so a
/// batch can be stepped in parallel with [`step_batch`].
pub trait Env: Send + Sync {
    fn spec(&self) -> &EnvSpec;

    fn action_dim(&self) -> usize {
        self.spec().action_dim
    }
    fn proprio_dim(&self) -> usize {
        self.spec().proprio_dim
    }
    fn state_dim(&self) -> usize {
        self.spec().state_dim
    }

    /// Set the full state. Rejects wrong lengths, non-finite values and states outside the
    /// workspace with [`Error::Invalid`] naming the bad value and the valid range.
    fn reset_to(&mut self, state: &[f32]) -> Result<()>;

    /// Current full state.
    fn state(&self) -> Vec<f32>;

    /// Proprioceptive part of a state (what DINO-WM feeds its proprio encoder).
    fn proprio_of(&self, state: &[f32]) -> Vec<f32>;

    /// Proprio of the current state.
    fn proprio(&self) -> Vec<f32> {
        self.proprio_of(&self.state())
    }

    /// Advance one environment step. Rejects wrong lengths and NaN/infinite actions.
    fn step(&mut self, action: &[f32]) -> Result<()>;

    /// The state one step after `state` under `action`, leaving this environment unchanged.
    fn step_state(&self, state: &[f32], action: &[f32]) -> Result<Vec<f32>> {
        let mut e = self.box_clone();
        e.reset_to(state)?;
        e.step(action)?;
        Ok(e.state())
    }

    /// Draw `state` as an RGB u8 frame of `size` x `size` pixels (row-major, HWC).
    fn render_state(&self, state: &[f32], size: usize) -> Result<Frame>;

    /// Draw the current state.
    // An environment's own state always renders (render_state only refuses foreign states of
    // the wrong length); the signature without Result is the one every caller uses.
    #[allow(clippy::expect_used)]
    fn render(&self, size: usize) -> Frame {
        self.render_state(&self.state(), size)
            .expect("the current state of an environment is always valid")
    }

    /// A (start, goal) pair drawn from `seed` the way DINO-WM's evaluation does.
    fn sample_start_goal(&self, seed: u64) -> (Vec<f32>, Vec<f32>);

    /// DINO-WM's success criterion between a state and a goal state.
    fn is_success(&self, state: &[f32], goal: &[f32]) -> bool;

    /// DINO-WM's `state_dist`: Euclidean distance between full states.
    fn state_distance(&self, state: &[f32], goal: &[f32]) -> f32 {
        state
            .iter()
            .zip(goal)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            .sqrt()
    }

    fn box_clone(&self) -> Box<dyn Env>;
}

impl Clone for Box<dyn Env> {
    fn clone(&self) -> Self {
        self.box_clone()
    }
}

/// Create an environment by name (`wall`, `pointmaze`, `pusht`; case-insensitive, `-`/`_`
/// ignored, so `point_maze` and `PushT` work too).
pub fn make(name: &str) -> Result<Box<dyn Env>> {
    let key: String = name
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    match key.as_str() {
        "wall" | "dotwall" => Ok(Box::new(wall::Wall::new())),
        "pointmaze" | "umaze" => Ok(Box::new(pointmaze::PointMaze::new())),
        "pusht" => Ok(Box::new(pusht::PushT::new())),
        _ => Err(Error::Invalid(format!(
            "unknown environment '{name}'; valid names: {}",
            ENV_NAMES.join(", ")
        ))),
    }
}

/// The spec of a named environment.
pub fn spec(name: &str) -> Result<EnvSpec> {
    Ok(make(name)?.spec().clone())
}

/// Step every environment with its action, in parallel (rayon). All actions are checked
/// before any environment moves, so an error leaves the batch untouched.
pub fn step_batch(envs: &mut [Box<dyn Env>], actions: &[Vec<f32>]) -> Result<()> {
    if envs.len() != actions.len() {
        return Err(Error::Invalid(format!(
            "step_batch: {} environments but {} actions",
            envs.len(),
            actions.len()
        )));
    }
    for (i, (e, a)) in envs.iter().zip(actions).enumerate() {
        check_action(e.spec(), a)
            .map_err(|err| Error::Invalid(format!("batch item {i}: {err}")))?;
    }
    envs.par_iter_mut()
        .zip(actions.par_iter())
        .try_for_each(|(e, a)| e.step(a))
}

/// Render every environment's current state at `size`, in parallel.
pub fn render_batch(envs: &[Box<dyn Env>], size: usize) -> Vec<Frame> {
    envs.par_iter().map(|e| e.render(size)).collect()
}

/// Check the length and finiteness of an action.
pub fn check_action(spec: &EnvSpec, action: &[f32]) -> Result<()> {
    if action.len() != spec.action_dim {
        return Err(Error::Invalid(format!(
            "{}: action has {} values, expected {}",
            spec.name,
            action.len(),
            spec.action_dim
        )));
    }
    for (i, v) in action.iter().enumerate() {
        if !v.is_finite() {
            return Err(Error::Invalid(format!(
                "{}: action[{i}] is {v}; actions must be finite numbers",
                spec.name
            )));
        }
    }
    Ok(())
}

/// Check the length and finiteness of a state (range checks are per environment).
pub fn check_state(spec: &EnvSpec, state: &[f32]) -> Result<()> {
    if state.len() != spec.state_dim {
        return Err(Error::Invalid(format!(
            "{}: state has {} values, expected {} ({})",
            spec.name,
            state.len(),
            spec.state_dim,
            spec.state_names.join(", ")
        )));
    }
    for (i, v) in state.iter().enumerate() {
        if !v.is_finite() {
            return Err(Error::Invalid(format!(
                "{}: state[{i}] ({}) is {v}; states must be finite numbers",
                spec.name, spec.state_names[i]
            )));
        }
    }
    Ok(())
}

/// Range check of one state value, with a message naming the value and the valid range.
pub(crate) fn check_range(spec: &EnvSpec, state: &[f32], i: usize, lo: f32, hi: f32) -> Result<()> {
    let v = state[i];
    if v < lo || v > hi {
        return Err(Error::Invalid(format!(
            "{}: state[{i}] ({}) = {v} is outside the workspace; valid range [{lo}, {hi}]",
            spec.name, spec.state_names[i]
        )));
    }
    Ok(())
}

/// A fresh RNG for a seed; every random choice in this module comes from one of these.
pub fn rng(seed: u64) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Mix a seed and a stream index into an independent seed (splitmix64), so episode `i` of a
/// dataset does not depend on how many episodes came before it.
pub fn sub_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed
        ^ stream
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(0x632B_E59B_D9B4_E019);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
