//! Calibration as in the QuantWM study: run the float planner (MPC around CEM, 2 iterations)
//! on calibration episodes with observers on the inputs of every linear, then quantize. The
//! observer belongs to the calibrated model, so other forwards in the process do not count.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::eval::calib_seed;
use super::world::WorldPlanModel;
use super::{make, run_episode, MpcConfig, PlanConfig, Task};
use crate::env;
use crate::model::{CpuModel, Weights};
use crate::quant::{ActObserver, ActStats, CalibData, InputSampler};
use crate::{Error, Result};

/// Min/max statistics of every linear's inputs over `episodes` calibration episodes of `env`
/// (seeds `calib_seed(i)`, disjoint from evaluation), on the CPU backend.
pub fn calibrate(
    w: &Weights,
    env_name: &str,
    episodes: usize,
    plan_cfg: &PlanConfig,
    alpha: f32,
) -> Result<BTreeMap<String, ActStats>> {
    if episodes == 0 {
        return Err(crate::Error::Invalid(
            "calibration needs at least 1 episode (--calib-episodes 0 was given)".into(),
        ));
    }
    crate::limits::check_range("--calib-episodes", episodes, 1, crate::limits::MAX_EPISODES)?;
    let m = CpuModel::new(w)?.observing();
    run_calibration(&m, w, env_name, episodes, plan_cfg, alpha)?;
    Ok(m.take_observed())
}

/// The float planner on the calibration episodes, with `m`'s observer on.
fn run_calibration(
    m: &CpuModel,
    w: &Weights,
    env_name: &str,
    episodes: usize,
    plan_cfg: &PlanConfig,
    alpha: f32,
) -> Result<()> {
    let mut env = env::make(env_name)?;
    let mut pm = WorldPlanModel::new(m, w.norm.clone(), plan_cfg.horizon, alpha);
    let mpc = MpcConfig {
        max_iters: 2,
        n_taken: 5,
        // What the shipped calibration files were captured with.
        success_check: crate::plan::SuccessCheck::EveryStep,
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
    Ok(())
}

/// Calibration inputs of every quantized linear (`tokens` sampled rows each, exact channel
/// ranges) over `episodes` calibration episodes, stamped with the model's CRC-32.
pub fn capture_inputs(
    w: &Weights,
    env_name: &str,
    episodes: usize,
    plan_cfg: &PlanConfig,
    alpha: f32,
    tokens: usize,
) -> Result<CalibData> {
    let sampler = InputSampler::new(&linear_widths(w), tokens);
    let m = CpuModel::new(w)?.observing_with(ActObserver::sampling(sampler));
    run_calibration(&m, w, env_name, episodes, plan_cfg, alpha)?;
    let s = m.take_inputs().ok_or_else(|| {
        Error::Invalid("internal error: the calibration observer kept no inputs".into())
    })?;
    Ok(s.finish(w.crc32(), episodes, capture_key(env_name, plan_cfg, alpha)))
}

/// The settings that decide what a capture sees: the environment and the float planner
/// (calibration episodes and the row budget are checked on their own).
pub fn capture_key(env_name: &str, c: &PlanConfig, alpha: f32) -> String {
    format!(
        "{env_name}: cem samples {} topk {} horizon {} opt_steps {} var_scale {} temperature {} \
         seed {} std {:?}, alpha {alpha}",
        c.samples, c.topk, c.horizon, c.opt_steps, c.var_scale, c.temperature, c.seed, c.cem_std
    )
}

/// Where calibration inputs of a model file are kept by default: next to it,
/// `NAME.calib.safetensors`.
pub fn default_inputs_path(model_file: &Path) -> PathBuf {
    let stem = model_file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    model_file.with_file_name(format!("{stem}.calib.safetensors"))
}

/// The calibration inputs of `w`: read from `path` when it exists (checked against the model
/// and the requested episodes and tokens), else captured with the float planner and, when a
/// path is given, written there so that every method and run reuses them.
#[allow(clippy::too_many_arguments)]
pub fn load_or_capture_inputs(
    w: &Weights,
    path: Option<&Path>,
    env_name: &str,
    episodes: usize,
    plan_cfg: &PlanConfig,
    alpha: f32,
    tokens: usize,
) -> Result<CalibData> {
    // Rows kept per linear: bounded so a typo cannot ask for gigabytes.
    crate::limits::check_range("--calib-tokens", tokens, 1, 1 << 20)?;
    if let Some(p) = path.filter(|p| p.exists()) {
        let c = CalibData::load(p)?;
        let linears = linear_widths(w);
        c.check(&w.crc32(), &linears, &p.display().to_string())?;
        let key = capture_key(env_name, plan_cfg, alpha);
        if c.capture != key {
            return Err(Error::Invalid(format!(
                "{}: calibration inputs were captured with other settings ({}), this run \
                 calibrates with {key}; delete the file or pass another calibration path \
                 (--calib)",
                p.display(),
                if c.capture.is_empty() {
                    "not recorded: written by an older qwm"
                } else {
                    &c.capture
                }
            )));
        }
        if c.episodes != episodes || c.tokens != tokens {
            return Err(Error::Invalid(format!(
                "{}: calibration inputs hold {} episodes x {} tokens, this run asks for {} x \
                 {}; pass --calib-episodes {} --calib-tokens {}, another --calib path, or \
                 delete the file",
                p.display(),
                c.episodes,
                c.tokens,
                episodes,
                tokens,
                c.episodes,
                c.tokens
            )));
        }
        eprintln!("calibration inputs from {}", p.display());
        return Ok(c);
    }
    eprintln!("capturing calibration inputs: float planner on {episodes} calibration episodes");
    let t = std::time::Instant::now();
    let c = capture_inputs(w, env_name, episodes, plan_cfg, alpha, tokens)?;
    eprintln!("captured in {:.1} s", t.elapsed().as_secs_f64());
    if let Some(p) = path {
        c.save(p)?;
        eprintln!("wrote calibration inputs to {}", p.display());
    }
    Ok(c)
}

fn linear_widths(w: &Weights) -> Vec<(String, usize)> {
    crate::model::quantized::quantized_linears(&w.config)
        .into_iter()
        .map(|(n, _)| {
            let k = w.get(&n).map(|t| t.shape[1]).unwrap_or(0);
            (n, k)
        })
        .collect()
}
