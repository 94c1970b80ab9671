//! The parameters as candle `Var`s (the model's tensors plus the encoder phase's heads),
//! the model over them, and the run directory: checkpoint (parameters and optimizer moments),
//! state and loss curves, each written atomically so an interrupted run resumes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::adamw::AdamW;
use super::config::{EpochLog, TrainConfig};
use super::plot;
use crate::env::sub_seed;
use crate::model::{CpuModel, HostTensor, ModelConfig, Normalization, Weights};
use crate::{Error, Result};

/// Progress saved next to the checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) config: TrainConfig,
    pub(crate) data: String,
    pub(crate) epochs: Vec<EpochLog>,
    pub(crate) adam_step: usize,
    pub(crate) finished: bool,
}

/// All parameters as Vars: the model's tensors plus the encoder phase's heads (`aux.`).
pub(crate) fn init_vars(cfg: &TrainConfig, npos: usize) -> Result<BTreeMap<String, Var>> {
    let w = Weights::random(&cfg.model, cfg.seed)?;
    let mut vars = BTreeMap::new();
    for (n, t) in &w.tensors {
        vars.insert(
            n.clone(),
            Var::from_vec(t.data.clone(), t.shape.as_slice(), &Device::Cpu)?,
        );
    }
    let mc = &cfg.model;
    let d = mc.encoder.width;
    let p = mc.encoder.resize / mc.grid();
    let pix = 3 * p * p;
    let mut add = |name: &str, shape: &[usize], std: f32, seed: u64| -> Result<()> {
        let n: usize = shape.iter().product();
        let data = crate::tensor::randn(n, std, sub_seed(cfg.seed, seed));
        vars.insert(name.to_string(), Var::from_vec(data, shape, &Device::Cpu)?);
        Ok(())
    };
    add(
        "aux.pixel_head.weight",
        &[pix, d],
        (1.0 / d as f32).sqrt(),
        101,
    )?;
    add("aux.pixel_head.bias", &[pix], 0.0, 102)?;
    add("aux.probe.weight", &[npos, d], (1.0 / d as f32).sqrt(), 103)?;
    add("aux.probe.bias", &[npos], 0.0, 104)?;
    if cfg.flat_probe_weight > 0.0 {
        let nf = mc.patches() * d;
        add(
            "aux.flat_probe.weight",
            &[npos, nf],
            (1.0 / nf as f32).sqrt(),
            105,
        )?;
        add("aux.flat_probe.bias", &[npos], 0.0, 106)?;
    }
    Ok(vars)
}

pub(crate) fn model_over(
    vars: &BTreeMap<String, Var>,
    cfg: &ModelConfig,
    detach: bool,
) -> Result<CpuModel> {
    let map: HashMap<String, Tensor> = vars
        .iter()
        .filter(|(n, _)| !n.starts_with("aux."))
        .map(|(n, v)| {
            let frozen = detach || n.starts_with("proprio_encoder.");
            let t = if frozen {
                v.as_tensor().detach()
            } else {
                v.as_tensor().clone()
            };
            (n.clone(), t)
        })
        .collect();
    CpuModel::from_tensors(cfg.clone(), &map)
}

pub(crate) fn weights_of(
    vars: &BTreeMap<String, Var>,
    cfg: &ModelConfig,
    norm: &Normalization,
) -> Result<Weights> {
    let mut tensors = BTreeMap::new();
    for (n, v) in vars.iter().filter(|(n, _)| !n.starts_with("aux.")) {
        let t = v.as_tensor();
        tensors.insert(
            n.clone(),
            HostTensor::new(t.dims(), t.flatten_all()?.to_vec1::<f32>()?)?,
        );
    }
    let w = Weights {
        config: cfg.clone(),
        norm: norm.clone(),
        tensors,
    };
    w.validate()?;
    Ok(w)
}

/// Set every model parameter from the file `path` (the `aux.` heads keep their seeded
/// values). Its config must be the run's and its normalization the data's, or the decoder
/// would learn from other latents than the planner's.
pub(crate) fn init_from_model(
    vars: &BTreeMap<String, Var>,
    path: &str,
    cfg: &ModelConfig,
    norm: &Normalization,
) -> Result<()> {
    let w = crate::model::format::load(path)?;
    if w.config != *cfg {
        return Err(Error::Invalid(format!(
            "--init-from {path}: its model config differs from the run's; `qwm train` takes \
             the config from the file, so this run's settings were changed in between"
        )));
    }
    if w.norm != *norm {
        return Err(Error::Invalid(format!(
            "--init-from {path}: its normalization statistics differ from the dataset's; \
             regenerate the data with the command the model was trained on (docs/MODELS.md)"
        )));
    }
    for (n, v) in vars.iter().filter(|(n, _)| !n.starts_with("aux.")) {
        let t = w
            .tensors
            .get(n)
            .ok_or_else(|| Error::Invalid(format!("--init-from {path}: lacks tensor {n}")))?;
        if t.shape.as_slice() != v.as_tensor().dims() {
            return Err(Error::Invalid(format!(
                "--init-from {path}: tensor {n} has shape {:?}, the run's {:?}",
                t.shape,
                v.as_tensor().dims()
            )));
        }
        v.set(&Tensor::from_vec(
            t.data.clone(),
            t.shape.as_slice(),
            &Device::Cpu,
        )?)?;
    }
    Ok(())
}

/// Paths of a run's side files: `<out>.train/{checkpoint.safetensors, state.json, loss.csv,
/// loss.png}`.
pub fn run_dir(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".train");
    PathBuf::from(s)
}

pub(crate) fn save_checkpoint(
    dir: &Path,
    vars: &BTreeMap<String, Var>,
    opt: Option<&AdamW>,
    state: &State,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut raw: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut push = |name: String, t: &Tensor| -> Result<()> {
        let v = t.flatten_all()?.to_vec1::<f32>()?;
        raw.push((name, t.dims().to_vec(), v));
        Ok(())
    };
    for (n, v) in vars {
        push(format!("param.{n}"), v.as_tensor())?;
    }
    if let Some(o) = opt {
        for (n, _, m, v) in &o.params {
            push(format!("adam_m.{n}"), m)?;
            push(format!("adam_v.{n}"), v)?;
        }
    }
    let tmp = dir.join("checkpoint.safetensors.tmp");
    crate::model::format::write_f32_tensors(&raw, HashMap::new(), &tmp)?;
    let ck = dir.join("checkpoint.safetensors");
    std::fs::rename(&tmp, &ck).map_err(|e| Error::io(&ck, e))?;
    let js = serde_json::to_string_pretty(state).map_err(|e| Error::Invalid(e.to_string()))?;
    let tmp = dir.join("state.json.tmp");
    std::fs::write(&tmp, js).map_err(|e| Error::io(&tmp, e))?;
    let st = dir.join("state.json");
    std::fs::rename(&tmp, &st).map_err(|e| Error::io(&st, e))?;
    write_curves(dir, &state.epochs)
}

pub(crate) fn write_curves(dir: &Path, epochs: &[EpochLog]) -> Result<()> {
    let mut csv = String::from("phase,epoch,steps,train_loss,val_loss,seconds\n");
    for e in epochs {
        csv.push_str(&format!(
            "{},{},{},{:.6e},{:.6e},{:.1}\n",
            e.phase.name(),
            e.epoch,
            e.steps,
            e.train_loss,
            e.val_loss,
            e.seconds
        ));
    }
    let p = dir.join("loss.csv");
    std::fs::write(&p, csv).map_err(|e| Error::io(&p, e))?;
    plot::loss_png(&dir.join("loss.png"), epochs)
}

/// Restore parameters and the moments of `opt` from a checkpoint.
pub(crate) fn load_checkpoint(
    dir: &Path,
    vars: &BTreeMap<String, Var>,
    opt: Option<&mut AdamW>,
) -> Result<()> {
    let tensors = crate::model::format::read_f32_tensors(&dir.join("checkpoint.safetensors"))?;
    let get = |name: &str, like: &Tensor| -> Result<Tensor> {
        let (shape, data) = tensors.get(name).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: checkpoint lacks {name}; delete the directory to start over",
                dir.display()
            ))
        })?;
        if shape.as_slice() != like.dims() {
            return Err(Error::Invalid(format!(
                "{}: checkpoint tensor {name} is {shape:?}, expected {:?}",
                dir.display(),
                like.dims()
            )));
        }
        Ok(Tensor::from_vec(
            data.clone(),
            shape.as_slice(),
            &Device::Cpu,
        )?)
    };
    for (n, v) in vars {
        v.set(&get(&format!("param.{n}"), v.as_tensor())?)?;
    }
    if let Some(o) = opt {
        for (n, _, m, v) in o.params.iter_mut() {
            *m = get(&format!("adam_m.{n}"), m)?;
            *v = get(&format!("adam_v.{n}"), v)?;
        }
    }
    Ok(())
}
