//! `qwm eval`: MPC episodes over evaluation seeds, written to JSON as they finish so an
//! interrupted run resumes without losing finished episodes.
//!
//! Seeds: episode `i` starts from `env.sample_start_goal(sub_seed(EVAL_SEED, i))`.
//! Calibration uses `sub_seed(CALIB_SEED, i)`; dataset collection (`qwm data`) draws from its
//! own `--seed` streams. The streams are hashed apart, so evaluation never reuses a
//! calibration or training episode.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::mpc::{run_episode, EpisodeRecord, MpcConfig, MpcIter, PlanModel, SuccessCheck};
use super::stats::{median, spearman, wilson95};
use super::{make, CemStd, PlanConfig};
use crate::env::{self, Env};
use crate::{Error, Result};

pub const EVAL_SEED: u64 = 99;
pub const CALIB_SEED: u64 = 7;

pub fn eval_seed(i: usize) -> u64 {
    env::sub_seed(EVAL_SEED, i as u64)
}

pub fn calib_seed(i: usize) -> u64 {
    env::sub_seed(CALIB_SEED, i as u64)
}

/// Everything that defines an evaluation; a resumed run must match it exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalConfig {
    pub env: String,
    pub episodes: usize,
    pub planner: String,
    pub plan: PlanConfigKey,
    pub mpc: MpcConfigKey,
    /// Model file and quantization, for the record and the resume check.
    pub model: String,
    /// CRC-32 of the model file's bytes (hex), so that a report is never resumed with a
    /// retrained file at the same path; `None` for in-memory models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_crc32: Option<String>,
    /// CRC-32 of what planning reads from the model file (`format::planning_crc32`: config,
    /// normalization and every tensor except the visualization decoder). When both a stored
    /// report and a run have it, the resume check compares it instead of `model_crc32`, so a
    /// decoder retrained for the viewer keeps finished evaluations valid. Absent in reports
    /// written before it existed (those compare the file CRC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_planning_crc32: Option<String>,
    pub quant: String,
    pub backend: String,
}

/// CRC-32 (hex) of a file's bytes, for [`EvalConfig::model_crc32`].
pub fn file_crc32(path: &Path) -> Result<String> {
    let bytes = crate::io::read_file(path, crate::io::MAX_FILE_BYTES)?;
    Ok(format!("{:08x}", crc32fast::hash(&bytes)))
}

/// [`EvalConfig::model_crc32`] and [`EvalConfig::model_planning_crc32`] of a model file.
pub fn model_crc32s(path: &Path) -> Result<(Option<String>, Option<String>)> {
    let (file, planning) = crate::model::format::identity_crc32s(path)?;
    Ok((Some(file), Some(planning)))
}

/// Serializable, comparable copies of the planner and MPC settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanConfigKey {
    pub horizon: usize,
    pub samples: usize,
    pub topk: usize,
    pub opt_steps: usize,
    pub var_scale: f32,
    pub temperature: f32,
    pub seed: u64,
    /// Absent in reports written before the option existed, which used the population std.
    #[serde(default = "CemStd::population")]
    pub cem_std: CemStd,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MpcConfigKey {
    pub max_iters: usize,
    pub n_taken: usize,
    /// Absent in reports written before the option existed, which checked at every step.
    #[serde(default = "SuccessCheck::every_step")]
    pub success_check: SuccessCheck,
}

impl From<&PlanConfig> for PlanConfigKey {
    fn from(c: &PlanConfig) -> Self {
        PlanConfigKey {
            horizon: c.horizon,
            samples: c.samples,
            topk: c.topk,
            opt_steps: c.opt_steps,
            var_scale: c.var_scale,
            temperature: c.temperature,
            seed: c.seed,
            cem_std: c.cem_std,
        }
    }
}

impl From<&MpcConfig> for MpcConfigKey {
    fn from(c: &MpcConfig) -> Self {
        MpcConfigKey {
            max_iters: c.max_iters,
            n_taken: c.n_taken,
            success_check: c.success_check,
        }
    }
}

/// Statistics that can be NaN (no episodes, a diverging model) are written as `null` and read
/// back as NaN (`crate::io::nan_as_null`), so a report is always readable by qwm itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub config: EvalConfig,
    pub finished: usize,
    #[serde(with = "crate::io::nan_as_null")]
    pub success_rate: f64,
    #[serde(with = "crate::io::nan_as_null::pair")]
    pub success_ci95: [f64; 2],
    #[serde(with = "crate::io::nan_as_null")]
    pub mean_state_dist: f64,
    pub plan_seconds_median: Option<f64>,
    /// Spearman correlation across episodes of the final planning objective and the final
    /// true state distance (alignment of objective and task).
    pub spearman_objective_vs_distance: Option<f64>,
    /// Divergence of a quantized model's predicted latents from the float model's on the same
    /// action sequences; null for float models.
    pub latent_divergence: Option<f64>,
    /// GPU bytes of the quantized linear layers (codes, scales, zero points) and their f32
    /// size; null for float models.
    #[serde(default)]
    pub linear_bytes: Option<[usize; 2]>,
    /// Seconds the PTQ method took to quantize the model on load (given its captured
    /// calibration inputs); absent for float models and reports written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize_seconds: Option<f64>,
    pub episodes: Vec<EpisodeRecord>,
}

impl EvalReport {
    pub fn summarize(
        config: EvalConfig,
        episodes: Vec<EpisodeRecord>,
        latent_divergence: Option<f64>,
    ) -> Self {
        let n = episodes.len();
        let k = episodes.iter().filter(|e| e.success).count();
        let dists: Vec<f64> = episodes
            .iter()
            .map(|e| e.final_state_distance as f64)
            .collect();
        let objs: Vec<f64> = episodes.iter().map(|e| e.final_objective as f64).collect();
        let secs: Vec<f64> = episodes
            .iter()
            .flat_map(|e| e.plan_seconds.clone())
            .collect();
        EvalReport {
            config,
            finished: n,
            success_rate: if n == 0 { 0.0 } else { k as f64 / n as f64 },
            success_ci95: wilson95(k, n),
            mean_state_dist: if n == 0 {
                f64::NAN
            } else {
                dists.iter().sum::<f64>() / n as f64
            },
            plan_seconds_median: median(&secs),
            spearman_objective_vs_distance: spearman(&objs, &dists),
            latent_divergence,
            linear_bytes: None,
            quantize_seconds: None,
            episodes,
        }
    }
}

/// Write a report atomically (a per-process temporary renamed over `path`), so that an
/// interrupted write never leaves a truncated report for the next run to resume from. A process
/// that owns the report for a whole run writes through [`ReportFile`], which also holds the lock.
pub fn write_report(path: &Path, report: &EvalReport) -> Result<()> {
    let text = serde_json::to_string_pretty(report)
        .map_err(|e| Error::Invalid(format!("{}: cannot serialize: {e}", path.display())))?;
    crate::io::write_atomic(path, text.as_bytes())
}

/// Read an eval report (a regular file of at most `io::MAX_JSON_BYTES`).
pub fn read_report(path: &Path) -> Result<EvalReport> {
    let text = crate::io::read_text(path)?;
    let r: EvalReport = serde_json::from_str(&text).map_err(|e| {
        Error::Invalid(format!(
            "{} exists but is not a qwm eval report ({e}); pick another --json path or delete it",
            path.display()
        ))
    })?;
    r.check(path)?;
    Ok(r)
}

impl EvalReport {
    /// A report read back must agree with itself: its summary counts the episodes it holds
    /// (every reader, the study's report and resumes among them, relies on that).
    pub fn check(&self, path: &Path) -> Result<()> {
        if self.finished != self.episodes.len() {
            return Err(Error::Invalid(format!(
                "{}: says {} episodes finished but holds {}; the file was edited or damaged \
                 (restore it, or delete it to start over)",
                path.display(),
                self.finished,
                self.episodes.len()
            )));
        }
        Ok(())
    }
}

/// An eval report file owned by this process: its path checked as an output and its advisory
/// lock held until dropped, so a second process evaluating into the same report is refused
/// instead of silently overwriting episodes. Writes are atomic (per-process temporary, rename).
#[derive(Debug)]
pub struct ReportFile {
    path: PathBuf,
    _lock: crate::io::FileLock,
}

impl ReportFile {
    /// Check `path` (`flag` names the option in errors) and take its lock; an error if another
    /// process holds it.
    pub fn open(path: &Path, flag: &str) -> Result<Self> {
        crate::io::check_output(path, flag)?;
        match crate::io::FileLock::acquire_patiently(path)? {
            Some(lock) => Ok(ReportFile {
                path: path.to_path_buf(),
                _lock: lock,
            }),
            None => Err(Error::Invalid(format!(
                "{flag} {}: another qwm process is writing this report now; wait for it to \
                 finish (a rerun then resumes) or pick another {flag} path",
                path.display()
            ))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored report, if the file exists.
    pub fn read(&self) -> Result<Option<EvalReport>> {
        if std::fs::symlink_metadata(&self.path).is_err() {
            return Ok(None);
        }
        read_report(&self.path).map(Some)
    }

    pub fn write(&self, report: &EvalReport) -> Result<()> {
        let text = serde_json::to_string_pretty(report).map_err(|e| {
            Error::Invalid(format!("{}: cannot serialize: {e}", self.path.display()))
        })?;
        crate::io::write_atomic(&self.path, text.as_bytes())
    }

    /// Change the stored report in place (e.g. add the latent divergence): it keeps every
    /// finished episode, also those beyond a smaller `--episodes` of this run.
    pub fn update(&self, f: impl FnOnce(&mut EvalReport)) -> Result<()> {
        let Some(mut r) = self.read()? else {
            return Err(Error::Invalid(format!(
                "{}: the report disappeared while qwm was writing it",
                self.path.display()
            )));
        };
        f(&mut r);
        self.write(&r)
    }
}

/// Finished episodes of an earlier run with the same config (empty if none); all of them, also
/// beyond `config.episodes`.
fn resume(file: &ReportFile, config: &EvalConfig) -> Result<Vec<EpisodeRecord>> {
    let Some(old) = file.read()? else {
        return Ok(Vec::new());
    };
    let path = file.path();
    // The episode count may grow between runs; everything else must match.
    let diffs = config_differences(&old.config, config);
    if !diffs.is_empty() {
        return Err(Error::Invalid(format!(
            "{} holds an evaluation with different settings ({}); pick another --json path \
             or delete it to start over",
            path.display(),
            diffs.join("; ")
        )));
    }
    Ok(old.episodes)
}

/// The settings that differ between a stored report's config and this run's, as
/// "field: old -> new". The episode count may differ. When both sides carry the planning CRC
/// it identifies the model and the file CRC may differ (a retrained decoder); otherwise the
/// file CRC does. A model file that moved is the same model when its identity matches: the
/// label's path may differ, its quantization suffix not.
pub fn config_differences(old: &EvalConfig, new: &EvalConfig) -> Vec<String> {
    fn suffix(label: &str) -> &str {
        label.rfind(" (").map_or("", |i| &label[i..])
    }
    let by_planning = old.model_planning_crc32.is_some() && new.model_planning_crc32.is_some();
    let same_model = if by_planning {
        old.model_planning_crc32 == new.model_planning_crc32
    } else {
        old.model_crc32.is_some() && old.model_crc32 == new.model_crc32
    };
    let norm = |c: &EvalConfig| {
        let mut c = c.clone();
        c.episodes = 0;
        if same_model {
            c.model = suffix(&c.model).to_string();
        }
        if by_planning {
            c.model_crc32 = None;
        } else {
            c.model_planning_crc32 = None;
        }
        serde_json::to_value(c).unwrap_or_default()
    };
    let (a, b) = (norm(old), norm(new));
    let empty = serde_json::Map::new();
    let (a, b) = (
        a.as_object().unwrap_or(&empty),
        b.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let show = |v: Option<&serde_json::Value>| v.map_or("none".to_string(), |v| v.to_string());
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let why = match k.as_str() {
                "model_planning_crc32" => {
                    " (another planning model: its encoder, predictor, action or proprio \
                     encoder, config or normalization differ; only a retrained decoder keeps it)"
                }
                _ => "",
            };
            format!("{k}: {} -> {}{why}", show(a.get(k)), show(b.get(k)))
        })
        .collect()
}

/// Evaluation episode `i`: the start/goal pair of `eval_seed(i)` and a fresh planner seeded by
/// it, so an episode's outcome does not depend on which episodes ran before it (resumed runs
/// and `qwm study` shards, which run episode ranges, match a run from the start).
pub fn run_eval_episode(
    env: &mut dyn Env,
    planner: &str,
    plan_cfg: &PlanConfig,
    mpc: &MpcConfig,
    model: &mut dyn PlanModel,
    i: usize,
    on_iter: &mut dyn FnMut(&MpcIter, &dyn Env),
) -> Result<EpisodeRecord> {
    let seed = eval_seed(i);
    let (start, goal) = env.sample_start_goal(seed);
    let mut pc = plan_cfg.clone();
    pc.seed = plan_cfg.seed ^ seed;
    let mut planner = make(planner, pc)?;
    run_episode(
        env,
        model,
        planner.as_mut(),
        mpc,
        crate::plan::Task {
            seed,
            start: &start,
            goal: &goal,
        },
        on_iter,
    )
}

/// Run (or resume) an evaluation, rewriting `json` after every episode. See [`run_eval_into`].
pub fn run_eval(
    config: &EvalConfig,
    plan_cfg: &PlanConfig,
    mpc: &MpcConfig,
    model: &mut dyn PlanModel,
    json: Option<&Path>,
    on_episode: &mut dyn FnMut(&EpisodeRecord, usize),
    on_iter: &mut dyn FnMut(&MpcIter, &dyn Env),
) -> Result<EvalReport> {
    let file = json.map(|p| ReportFile::open(p, "--json")).transpose()?;
    run_eval_into(
        config,
        plan_cfg,
        mpc,
        model,
        file.as_ref(),
        on_episode,
        on_iter,
    )
}

/// Run (or resume) an evaluation into a report this process owns, rewriting it after every
/// episode. A stored report with the same settings is resumed; one that already holds more
/// finished episodes than `config.episodes` is left as it is (nothing finished is ever dropped)
/// and the returned report covers its first `config.episodes`.
pub fn run_eval_into(
    config: &EvalConfig,
    plan_cfg: &PlanConfig,
    mpc: &MpcConfig,
    model: &mut dyn PlanModel,
    json: Option<&ReportFile>,
    on_episode: &mut dyn FnMut(&EpisodeRecord, usize),
    on_iter: &mut dyn FnMut(&MpcIter, &dyn Env),
) -> Result<EvalReport> {
    crate::limits::check_range(
        "--episodes",
        config.episodes,
        1,
        crate::limits::MAX_EPISODES,
    )?;
    let mut env = env::make(&config.env)?;
    make(&config.planner, plan_cfg.clone())?; // validate before any work
    let mut episodes = match json {
        Some(f) => resume(f, config)?,
        None => Vec::new(),
    };
    if episodes.len() >= config.episodes && json.is_some() {
        episodes.truncate(config.episodes);
        return Ok(EvalReport::summarize(config.clone(), episodes, None));
    }
    for i in episodes.len()..config.episodes {
        let rec = run_eval_episode(
            env.as_mut(),
            &config.planner,
            plan_cfg,
            mpc,
            model,
            i,
            on_iter,
        )?;
        on_episode(&rec, i);
        episodes.push(rec);
        if let Some(f) = json {
            f.write(&EvalReport::summarize(
                config.clone(),
                episodes.clone(),
                None,
            ))?;
        }
    }
    let report = EvalReport::summarize(config.clone(), episodes, None);
    if let Some(f) = json {
        f.write(&report)?;
    }
    Ok(report)
}
