//! Calibration as in the QuantWM study: run the float planner (MPC around CEM, 2 iterations)
//! on calibration episodes with observers on the inputs of every linear, then quantize. The
//! observer belongs to the calibrated model, so other forwards in the process do not count.

use std::collections::BTreeMap;

use super::eval::calib_seed;
use super::world::WorldPlanModel;
use super::{make, run_episode, MpcConfig, PlanConfig, Task};
use crate::env;
use crate::model::{CpuModel, Weights};
use crate::quant::ActStats;
use crate::Result;

/// Min/max statistics of every linear's inputs over `episodes` calibration episodes of `env`
/// (seeds `calib_seed(i)`, disjoint from evaluation), on the CPU backend.
pub fn calibrate(
    w: &Weights,
    env_name: &str,
    episodes: usize,
    plan_cfg: &PlanConfig,
    alpha: f32,
) -> Result<BTreeMap<String, ActStats>> {
    let mut env = env::make(env_name)?;
    let m = CpuModel::new(w)?.observing();
    let mut pm = WorldPlanModel::new(&m, w.norm.clone(), plan_cfg.horizon, alpha);
    let mpc = MpcConfig {
        max_iters: 2,
        n_taken: 5,
    };
    for i in 0..episodes {
        let seed = calib_seed(i);
        let (start, goal) = env.sample_start_goal(seed);
        let mut pc = plan_cfg.clone();
        pc.seed ^= seed;
        let mut planner = make("cem", pc)?;
        run_episode(
            env.as_mut(),
            &mut pm,
            planner.as_mut(),
            &mpc,
            Task {
                seed,
                start: &start,
                goal: &goal,
            },
            &mut |_, _| {},
        )?;
    }
    Ok(m.take_observed())
}
