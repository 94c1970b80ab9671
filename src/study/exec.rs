//! Running a cell's episodes: load (and quantize, calibrating static activations) the cell's
//! model once, then play evaluation episodes by index on the chosen backend, exactly as
//! `qwm eval` plays them (`plan::eval::run_eval_episode`), and compute what a finished cell
//! adds (latent divergence from the float model, bytes of the quantized linears).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::spec::{Cell, Study};
use crate::env;
use crate::gpu::GpuContext;
use crate::model::{self, CpuModel, GpuModel, Weights, WorldModel};
use crate::plan::eval::{file_crc32, run_eval_episode, EvalConfig};
use crate::plan::world::{latent_divergence, WorldPlanModel};
use crate::plan::{EpisodeRecord, PlanModel};
use crate::quant::model::{quantize_model, QuantizedModel};
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
    pub gpu: Option<GpuContext>,
}

impl Engine {
    pub fn open(b: Backend) -> Result<Engine> {
        let gpu = match b {
            Backend::Cpu => None,
            Backend::Auto => GpuContext::new()
                .ok()
                .filter(|c| c.report.device_type != "cpu"),
            Backend::Gpu => Some(GpuContext::new().map_err(|e| {
                Error::Invalid(format!(
                    "--backend gpu: {e}; run with --backend cpu (or auto) on a machine \
                     without a GPU"
                ))
            })?),
        };
        Ok(Engine { gpu })
    }

    pub fn name(&self) -> &'static str {
        if self.gpu.is_some() {
            "gpu"
        } else {
            "cpu"
        }
    }
}

/// A cell's model, quantized as the cell asks.
pub struct CellModel {
    pub weights: Weights,
    /// The float model a spec was applied to (for the latent divergence).
    pub float: Option<Weights>,
    pub quant: Option<QuantizedModel>,
    pub config: EvalConfig,
}

/// The eval configuration of a cell; `model_crc32` from its model file. Quantized cells are
/// labelled `PATH (SPEC METHOD)` as `qwm eval` labels them.
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
    let fp = cell.spec() == QuantSpec::default();
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
        model_crc32: Some(file_crc32(path)?),
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
    let c = model::format::load(&cell.model)?.config;
    cell_config(study, cell, c.frameskip * c.action_dim, backend)
}

/// Load the float model and quantize it; static activation ranges are calibrated first with
/// the float planner on `calib_episodes` calibration episodes, as `qwm eval` does.
pub fn load(study: &Study, cell: &Cell, backend: &str) -> Result<CellModel> {
    if !Path::new(&cell.model).exists() {
        cell_config(study, cell, 1, backend)?; // the error names the cell
    }
    if crate::quant::model::is_quantized_file(&cell.model)? {
        return Err(Error::Invalid(format!(
            "cell {}: {} is already quantized; a study quantizes float models (give the \
             float file as the env's model)",
            cell.name, cell.model
        )));
    }
    let w = model::format::load(&cell.model)?;
    let env = env::make(&cell.env)?;
    let (c, s) = (&w.config, env.spec());
    if c.action_dim != s.action_dim || c.proprio_dim != s.proprio_dim {
        return Err(Error::Invalid(format!(
            "cell {}: model {} plans {}-D actions with {}-D proprio but {} has {}-D actions \
             and {}-D proprio",
            cell.name, cell.model, c.action_dim, c.proprio_dim, s.name, s.action_dim, s.proprio_dim
        )));
    }
    let step = c.frameskip * c.action_dim;
    let config = cell_config(study, cell, step, backend)?;
    let spec = cell.spec();
    if spec == QuantSpec::default() {
        return Ok(CellModel {
            weights: w,
            float: None,
            quant: None,
            config,
        });
    }
    let needs_calib = [spec.encoder, spec.predictor]
        .iter()
        .any(|m| m.act.is_some_and(|a| !a.dynamic));
    let stats = if needs_calib {
        eprintln!(
            "{}: calibrating on {} episodes",
            cell.name, study.calib_episodes
        );
        Some(crate::plan::calibrate::calibrate(
            &w,
            &cell.env,
            study.calib_episodes,
            &study.plan_config(cell, step),
            s.alpha,
        )?)
    } else {
        None
    };
    let q = quantize_model(&w, &spec, &cell.method, stats.as_ref())
        .map_err(|e| Error::Invalid(format!("cell {}: {e}", cell.name)))?;
    Ok(CellModel {
        weights: q.weights.clone(),
        float: Some(w),
        quant: Some(q),
        config,
    })
}

/// Play evaluation episodes `indices` of a cell, calling `done` after each with its record and
/// wall-clock seconds.
pub fn run_episodes(
    engine: &Engine,
    study: &Study,
    cell: &Cell,
    cm: &CellModel,
    indices: &[usize],
    done: &mut dyn FnMut(usize, EpisodeRecord, f64) -> Result<()>,
) -> Result<()> {
    match &engine.gpu {
        Some(ctx) => {
            let m = match &cm.quant {
                Some(q) => GpuModel::new_quantized(ctx, q)?,
                None => GpuModel::new(ctx, &cm.weights)?,
            };
            play(&m, study, cell, cm, indices, done)
        }
        None => {
            let m = match &cm.quant {
                Some(q) => CpuModel::new_quantized(q)?,
                None => CpuModel::new(&cm.weights)?,
            };
            play(&m, study, cell, cm, indices, done)
        }
    }
}

fn play<M: WorldModel>(
    m: &M,
    study: &Study,
    cell: &Cell,
    cm: &CellModel,
    indices: &[usize],
    done: &mut dyn FnMut(usize, EpisodeRecord, f64) -> Result<()>,
) -> Result<()> {
    let mut env = env::make(&cell.env)?;
    let alpha = env.spec().alpha;
    let w = &cm.weights;
    let step = w.config.frameskip * w.config.action_dim;
    let pc = study.plan_config(cell, step);
    let mpc = study.mpc_config(cell);
    let mut pm = WorldPlanModel::new(m, w.norm.clone(), pc.horizon, alpha);
    for &i in indices {
        let t = std::time::Instant::now();
        let rec = run_eval_episode(
            env.as_mut(),
            &study.planner.name,
            &pc,
            &mpc,
            &mut pm,
            i,
            &mut |_, _| {},
        )?;
        done(i, rec, t.elapsed().as_secs_f64())?;
    }
    Ok(())
}

/// Mean latent divergence of the quantized model from the float one over the first 10
/// episodes (8 random action sequences each), on the CPU backend: the number `qwm eval`
/// reports. `None` for float cells.
pub fn divergence(cell: &Cell, cm: &CellModel, episodes: &[EpisodeRecord]) -> Result<Option<f64>> {
    let (Some(q), Some(fw)) = (&cm.quant, &cm.float) else {
        return Ok(None);
    };
    let fm = CpuModel::new(fw)?;
    let qm = CpuModel::new_quantized(q)?;
    let horizon = cm.config.plan.horizon;
    let mut env = env::make(&cell.env)?;
    let alpha = env.spec().alpha;
    let mut fp = WorldPlanModel::new(&fm, fw.norm.clone(), horizon, alpha);
    let mut qp = WorldPlanModel::new(&qm, cm.weights.norm.clone(), horizon, alpha);
    let size = cm.weights.config.image_size;
    let mut divs = Vec::new();
    for e in episodes.iter().take(10) {
        env.reset_to(&e.start)?;
        let obs = env.render(size);
        let goal = env.render_state(&e.goal, size)?;
        let (p, gp) = (env.proprio(), env.proprio_of(&e.goal));
        fp.set_problem(&obs, &p, &goal, &gp)?;
        qp.set_problem(&obs, &p, &goal, &gp)?;
        divs.push(latent_divergence(&mut fp, &mut qp, 8, e.seed)?);
    }
    Ok((!divs.is_empty()).then(|| divs.iter().sum::<f64>() / divs.len() as f64))
}

/// Bytes of the quantized linears and their f32 size.
pub fn linear_bytes(cm: &CellModel) -> Option<[usize; 2]> {
    cm.quant.as_ref().map(|q| {
        let (a, b) = q.linear_bytes();
        [a, b]
    })
}
