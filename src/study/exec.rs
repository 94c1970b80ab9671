//! Running a cell's episodes through the application layer (`crate::app`): open the cell's
//! model once (`LoadedModel::open`: quantized as the cell asks, static activations calibrated
//! first), then play evaluation episodes by index on the opened backend exactly as `qwm eval`
//! plays them (`plan::eval::run_eval_episode`), and compute what a finished cell adds (latent
//! divergence from the float model, bytes of the quantized linears).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::spec::{Cell, Study};
use crate::app::{
    self, BackendChoice, Event, LoadedModel, ModelRequest, ModelSource, PlanSettings,
};
use crate::env;
use crate::plan::eval::{model_crc32s, run_eval_episode, EvalConfig};
use crate::plan::EpisodeRecord;
use crate::quant::QuantSpec;
use crate::{Error, Result};

/// Where episodes run. `auto`: a hardware GPU if there is one, else the CPU backend (faster
/// than a software Vulkan driver); `gpu`: any adapter, an error when none opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Auto,
    Gpu,
    Cpu,
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Backend::Auto),
            "gpu" => Ok(Backend::Gpu),
            "cpu" => Ok(Backend::Cpu),
            _ => Err(Error::Invalid(format!(
                "unknown backend {s:?}; use auto, gpu or cpu"
            ))),
        }
    }
}

/// The opened backend, shared by every cell a process runs.
pub struct Engine {
    pub backend: app::Backend,
}

impl Engine {
    /// Open the backend; `gpu` without an adapter is an error here (the app layer would fall
    /// back to the CPU, which on a GPU machine means a misconfigured driver, not a plan).
    pub fn open(b: Backend) -> Result<Engine> {
        let choice = match b {
            Backend::Auto => BackendChoice::Auto,
            Backend::Gpu => BackendChoice::Gpu,
            Backend::Cpu => BackendChoice::Cpu,
        };
        let mut notes = Vec::new();
        let backend = app::Backend::open(choice, &mut |e| {
            if let Event::Notice(m) = e {
                notes.push(m.clone());
            }
        });
        if b == Backend::Gpu && backend.name() != "gpu" {
            return Err(Error::Invalid(format!(
                "--backend gpu: no adapter opened ({}); run with --backend cpu (or auto) on a \
                 machine without a GPU",
                notes.join("; ")
            )));
        }
        if b != Backend::Cpu {
            notes.iter().for_each(|n| eprintln!("{n}"));
        }
        Ok(Engine { backend })
    }

    pub fn name(&self) -> &'static str {
        self.backend.name()
    }
}

/// A cell's model, quantized as the cell asks, with its eval configuration.
pub struct CellModel {
    pub model: LoadedModel,
    pub settings: PlanSettings,
    pub config: EvalConfig,
}

/// The planner settings of a cell.
pub fn settings(study: &Study, cell: &Cell) -> PlanSettings {
    let p = &study.planner;
    PlanSettings {
        planner: p.name.clone(),
        horizon: p.horizon,
        samples: p.samples,
        topk: p.topk,
        opt_steps: Some(cell.opt_steps),
        max_iter: Some(cell.max_iter),
        n_taken: p.n_taken,
        var_scale: p.var_scale,
        temperature: p.temperature,
        // Divisor k, as every imported 50-episode report (docs/RESULTS_HISTORY.md).
        cem_std: crate::plan::CemStd::default(),
        success_check: p.success_check,
    }
}

/// The eval configuration of a cell; `model_crc32` and `model_planning_crc32` from its model
/// file. Quantized cells are
/// labelled `PATH (SPEC METHOD)` as `qwm eval` (`LoadedModel::open`) labels them.
pub fn cell_config(
    study: &Study,
    cell: &Cell,
    step_dim: usize,
    backend: &str,
) -> Result<EvalConfig> {
    let path = Path::new(&cell.model);
    if !path.exists() {
        return Err(Error::Invalid(format!(
            "cell {}: model file {} does not exist; set `model` in the study's [[env]] block \
             or run from the repository root",
            cell.name, cell.model
        )));
    }
    let fp = cell.spec()? == QuantSpec::default();
    let (model_crc32, model_planning_crc32) = model_crc32s(path)?;
    Ok(EvalConfig {
        env: cell.env.clone(),
        episodes: cell.episodes,
        planner: study.planner.name.clone(),
        plan: (&study.plan_config(cell, step_dim)).into(),
        mpc: (&study.mpc_config(cell)).into(),
        model: if fp {
            cell.model.clone()
        } else {
            format!("{} ({} {})", cell.model, cell.quant, cell.method)
        },
        model_crc32,
        model_planning_crc32,
        quant: cell.quant.clone(),
        backend: backend.to_string(),
    })
}

/// The eval configuration of a cell without quantizing: the planner's step size comes from
/// the model file's config.
pub fn config_of(study: &Study, cell: &Cell, backend: &str) -> Result<EvalConfig> {
    if !Path::new(&cell.model).exists() {
        return cell_config(study, cell, 1, backend); // the error names the cell
    }
    let c = crate::model::format::load(&cell.model)?.config;
    cell_config(study, cell, c.frameskip * c.action_dim, backend)
}

/// Open the cell's model (a float file, quantized on load as the cell asks). Calibrated cells
/// read (or capture first) their calibration inputs at `calib`: one file per study and
/// environment, so every method shares one capture made with the study's own planner.
pub fn load(study: &Study, cell: &Cell, backend: &str, calib: &Path) -> Result<CellModel> {
    cell_config(study, cell, 1, backend)?; // a missing file is named with its cell
    let env = env::make(&cell.env)?;
    let settings = settings(study, cell);
    let req = ModelRequest {
        source: ModelSource::File(cell.model.clone()),
        quant: cell.quant.clone(),
        method: cell.method.clone(),
        calib_episodes: study.calib_episodes,
        calib_tokens: crate::quant::calib_data::DEFAULT_TOKENS,
        calib: Some(calib.to_path_buf()),
    };
    let name = &cell.name;
    let model = LoadedModel::open(&req, env.as_ref(), &settings, &mut |e| {
        if let Event::Notice(m) = e {
            if m.starts_with("calibrating") {
                eprintln!("{name}: {m}");
            }
        }
    })
    .map_err(|e| Error::Invalid(format!("cell {name}: {e}")))?;
    if model.quant().is_some() && model.float_source.is_none() {
        return Err(Error::Invalid(format!(
            "cell {name}: {} is already quantized; a study quantizes float models (give the \
             float file as the env's model)",
            cell.model
        )));
    }
    let config = cell_config(study, cell, model.step_dim(), backend)?;
    Ok(CellModel {
        model,
        settings,
        config,
    })
}

/// Play evaluation episodes `indices` of a cell, calling `done` after each with its record and
/// wall-clock seconds.
pub fn run_episodes(
    engine: &Engine,
    cell: &Cell,
    cm: &CellModel,
    indices: &[usize],
    done: &mut dyn FnMut(usize, EpisodeRecord, f64) -> Result<()>,
) -> Result<()> {
    let mut env = env::make(&cell.env)?;
    let (pc, mpc) = cm.settings.configs(env.spec(), cm.model.step_dim(), 0);
    let alpha = env.spec().alpha;
    engine
        .backend
        .with_plan_model(&cm.model, pc.horizon, alpha, |pm| {
            for &i in indices {
                let t = std::time::Instant::now();
                let rec = run_eval_episode(
                    env.as_mut(),
                    &cm.settings.planner,
                    &pc,
                    &mpc,
                    pm,
                    i,
                    &mut |_, _| {},
                )?;
                done(i, rec, t.elapsed().as_secs_f64())?;
            }
            Ok(())
        })
}

/// The latent divergence `qwm eval` reports (first 10 episodes, CPU); `None` for float cells.
pub fn divergence(cell: &Cell, cm: &CellModel, episodes: &[EpisodeRecord]) -> Result<Option<f64>> {
    let env = env::make(&cell.env)?;
    app::latent_divergence_of(&cm.model, env.spec(), episodes, cm.config.plan.horizon)
}

/// Bytes of the quantized linears and their f32 size.
pub fn linear_bytes(cm: &CellModel) -> Option<[usize; 2]> {
    cm.model.quant().map(|q| {
        let (a, b) = q.linear_bytes();
        [a, b]
    })
}
