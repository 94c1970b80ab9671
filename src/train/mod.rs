//! Training small DINO-WM models on `qwm data` datasets, on the CPU with candle's autodiff.
//!
//! Three phases, as in DINO-WM's recipe (REFERENCE.md section 3), with the encoder pretrained
//! here because no DINOv2 weights can be downloaded:
//! 1. **encoder**: the ViT is trained on single frames with a masked-autoencoder-style pixel
//!    head (each patch token reconstructs its own patch) plus a linear probe from the
//!    mean-pooled tokens to the position part of proprio; both heads are dropped afterwards
//!    and the encoder is frozen (docs/MODELS.md says why).
//! 2. **predictor**: latents of every frame are computed once with the frozen encoder; the
//!    predictor and the action encoder learn with teacher forcing on windows of `num_hist`
//!    frames `frameskip` steps apart, MSE on the visual and proprio channels of the next frames
//!    (action channels excluded). The proprio encoder stays at its seeded initialisation:
//!    its output is also the target, and training it lets that target collapse.
//! 3. **decoder**: the visualization decoder on detached latents, pixel MSE.
//!
//! Every epoch ends with a validation loss, a checkpoint (all parameters and the optimizer
//! moments) and rewritten `loss.csv` / `loss.png`; an interrupted run resumes from the last
//! finished epoch with the same batches it would have drawn.

mod plot;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::env::dataset::{Dataset, Episode};
use crate::env::sub_seed;
use crate::model::{
    preprocess, CpuModel, Frames, HostTensor, ModelConfig, Normalization, Weights, WorldModel,
};
use crate::{Error, Result};

/// What to train and how long.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub seed: u64,
    pub batch: usize,
    pub encoder_epochs: usize,
    pub predictor_epochs: usize,
    pub decoder_epochs: usize,
    pub encoder_lr: f64,
    pub predictor_lr: f64,
    pub decoder_lr: f64,
    pub weight_decay: f64,
    /// Weight of the proprio-position probe on the mean-pooled tokens in the encoder loss.
    pub probe_weight: f64,
    /// Weight of a second probe on all tokens (flattened). It learns at once where the first
    /// can sit on a plateau for epochs (small objects, e.g. PointMaze's ball); 0 disables it.
    #[serde(default)]
    pub flat_probe_weight: f64,
    /// Weight of the temporal-distance term in the encoder loss (0 disables it; see
    /// `Ctx::td_loss` and docs/MODELS.md). It shapes the planner's visual cost itself: the
    /// root-mean-square distance between two frames' tokens is pushed apart for random pairs
    /// and held below `td_scale` x the (normalized) distance the agent moved for consecutive
    /// frames, so it grows like the shortest path the data can take between two states, and
    /// states on either side of an obstacle end up far apart.
    #[serde(default)]
    pub td_weight: f64,
    /// Latent distance allowed per unit of normalized proprio motion between consecutive
    /// frames (the slope of the temporal-distance metric).
    #[serde(default = "default_td_scale")]
    pub td_scale: f64,
    /// State dimensions the probes (and the temporal-distance term) see instead of the
    /// position part of proprio; empty = proprio position. Dimensions named "... angle" enter
    /// as (cos, sin), the others z-normalized over the training episodes. PushT needs the
    /// block pose here: its proprio is the agent alone.
    #[serde(default)]
    pub probe_state: Vec<usize>,
    /// Use at most this many episodes of the dataset (all when None).
    pub max_episodes: Option<usize>,
    /// Cap on optimizer steps per epoch (all batches when None).
    pub max_steps_per_epoch: Option<usize>,
    /// Fraction of episodes held out for validation (DINO-WM: 0.1).
    pub val_fraction: f64,
    /// Open-loop rollout steps added to the predictor loss (0: teacher forcing only, as
    /// DINO-WM). With `k > 0` each window is also rolled out from its first frame for `k`
    /// steps exactly as planning does (the model's own predictions fed back) and the mean
    /// latent MSE of those steps is added; this is what a planner sees, and it stops errors
    /// from compounding over the horizon. May change between runs, like the epoch counts.
    #[serde(default)]
    pub rollout_steps: usize,
}

impl TrainConfig {
    /// Defaults for a model config (action/proprio sizes must already match the data).
    pub fn new(model: ModelConfig) -> Self {
        TrainConfig {
            model,
            seed: 0,
            batch: 32,
            encoder_epochs: 4,
            predictor_epochs: 12,
            decoder_epochs: 2,
            encoder_lr: 1e-3,
            predictor_lr: 5e-4,
            decoder_lr: 1e-3,
            weight_decay: 0.01,
            probe_weight: 1.0,
            flat_probe_weight: 0.0,
            td_weight: 0.0,
            td_scale: default_td_scale(),
            probe_state: Vec::new(),
            max_episodes: None,
            max_steps_per_epoch: None,
            val_fraction: 0.1,
            rollout_steps: 0,
        }
    }
}

fn default_td_scale() -> f64 {
    1.0
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Encoder,
    Predictor,
    Decoder,
}

impl Phase {
    const ALL: [Phase; 3] = [Phase::Encoder, Phase::Predictor, Phase::Decoder];
    fn name(self) -> &'static str {
        match self {
            Phase::Encoder => "encoder",
            Phase::Predictor => "predictor",
            Phase::Decoder => "decoder",
        }
    }
    fn prefixes(self) -> &'static [&'static str] {
        match self {
            Phase::Encoder => &["encoder.", "aux."],
            Phase::Predictor => &["predictor.", "action_encoder."],
            Phase::Decoder => &["decoder."],
        }
    }
    fn index(self) -> u64 {
        self as u64
    }
}

/// One finished epoch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochLog {
    pub phase: Phase,
    pub epoch: usize,
    pub steps: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub seconds: f64,
}

/// Progress saved next to the checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    config: TrainConfig,
    data: String,
    epochs: Vec<EpochLog>,
    adam_step: usize,
    finished: bool,
}

/// How to run (not part of the settings a resumed run must match).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Progress bars and per-epoch lines on stderr.
    pub progress: bool,
    /// Stop after this many finished epochs in total (an interruption, for tests); the model
    /// file is not written then.
    pub stop_after_epochs: Option<usize>,
}

/// What a run produced.
pub struct TrainReport {
    /// None when the run stopped early ([`RunOptions::stop_after_epochs`]).
    pub weights: Option<Weights>,
    pub epochs: Vec<EpochLog>,
    pub resumed_epochs: usize,
    pub seconds: f64,
}

/// AdamW (decoupled weight decay) with moments as candle tensors, so they can be
/// checkpointed.
struct AdamW {
    lr: f64,
    wd: f64,
    step: usize,
    params: Vec<(String, Var, Tensor, Tensor)>,
}

impl AdamW {
    const B1: f64 = 0.9;
    const B2: f64 = 0.999;
    const EPS: f64 = 1e-8;

    fn new(vars: &BTreeMap<String, Var>, phase: Phase, lr: f64, wd: f64) -> Result<Self> {
        let mut params = Vec::new();
        for (n, v) in vars {
            if phase.prefixes().iter().any(|p| n.starts_with(p)) {
                let z = v.as_tensor().zeros_like()?;
                params.push((n.clone(), v.clone(), z.clone(), z));
            }
        }
        Ok(AdamW {
            lr,
            wd,
            step: 0,
            params,
        })
    }

    fn apply(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step += 1;
        let t = self.step as i32;
        let (c1, c2) = (1.0 - Self::B1.powi(t), 1.0 - Self::B2.powi(t));
        for (_, var, m, v) in self.params.iter_mut() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Detached: otherwise each step's moments hold the previous step's graph (and its
            // activations) alive, and memory grows without bound.
            let g = g.detach();
            let g = &g;
            *m = ((&*m * Self::B1)? + (g * (1.0 - Self::B1))?)?.detach();
            *v = ((&*v * Self::B2)? + (g.sqr()? * (1.0 - Self::B2))?)?.detach();
            let upd = ((&*m / c1)? / ((&*v / c2)?.sqrt()? + Self::EPS)?)?;
            let p = var.as_tensor();
            let next = ((p * (1.0 - self.lr * self.wd))? - (upd * self.lr)?)?;
            var.set(&next)?;
        }
        Ok(())
    }
}

/// The dataset in memory, split by episode.
struct Data {
    train: Vec<Episode>,
    val: Vec<Episode>,
    norm: Normalization,
    /// Probe targets from states: (state index, mean, std, is an angle) per dimension of
    /// `TrainConfig::probe_state`; empty = proprio position.
    probe: Vec<(usize, f32, f32, bool)>,
}

impl Data {
    /// Length of a probe target.
    fn probe_len(&self, cfg: &ModelConfig) -> usize {
        if self.probe.is_empty() {
            cfg.proprio_dim.min(2)
        } else {
            self.probe.iter().map(|p| 1 + p.3 as usize).sum()
        }
    }
}

fn load_data(dir: &Path, cfg: &TrainConfig) -> Result<Data> {
    let ds = Dataset::open(dir)?;
    let m = &ds.manifest;
    let mc = &cfg.model;
    if m.image_size != mc.image_size {
        return Err(Error::Invalid(format!(
            "{}: frames are {} px but the model takes {} px; collect with `qwm data --size {}`",
            dir.display(),
            m.image_size,
            mc.image_size,
            mc.image_size
        )));
    }
    if m.action_dim != mc.action_dim || m.proprio_dim != mc.proprio_dim {
        return Err(Error::Invalid(format!(
            "{}: data has action_dim {} / proprio_dim {}, the model {} / {}",
            dir.display(),
            m.action_dim,
            m.proprio_dim,
            mc.action_dim,
            mc.proprio_dim
        )));
    }
    let need = mc.num_hist * mc.frameskip + 1;
    if m.steps < need {
        return Err(Error::Invalid(format!(
            "{}: episodes have {} steps; training windows need at least num_hist x frameskip + 1 = {need}",
            dir.display(),
            m.steps
        )));
    }
    let mut eps = ds.episodes()?;
    if let Some(k) = cfg.max_episodes {
        eps.truncate(k);
    }
    if eps.len() < 2 {
        return Err(Error::Invalid(format!(
            "{}: need at least 2 episodes (train and validation), found {}",
            dir.display(),
            eps.len()
        )));
    }
    let n_val = ((eps.len() as f64 * cfg.val_fraction).round() as usize).clamp(1, eps.len() - 1);
    let val = eps.split_off(eps.len() - n_val);
    let norm = Normalization {
        action_mean: m.action_mean.clone(),
        action_std: m.action_std.iter().map(|s| s.max(1e-6)).collect(),
        proprio_mean: m.proprio_mean.clone(),
        proprio_std: m.proprio_std.iter().map(|s| s.max(1e-6)).collect(),
    };
    norm.validate(mc)?;
    let sd = m.state_dim;
    let mut probe = Vec::new();
    for &i in &cfg.probe_state {
        if i >= sd {
            return Err(Error::Invalid(format!(
                "--probe-state {i}: {} has {sd} state dimensions ({})",
                dir.display(),
                m.state_names.join(", ")
            )));
        }
        let vals: Vec<f64> = eps
            .iter()
            .flat_map(|e| e.states.chunks_exact(sd).map(move |s| s[i] as f64))
            .collect();
        let n = vals.len().max(1) as f64;
        let mean = vals.iter().sum::<f64>() / n;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let angle = m.state_names.get(i).is_some_and(|s| s.contains("angle"));
        probe.push((i, mean as f32, (var.sqrt() as f32).max(1e-6), angle));
    }
    Ok(Data {
        train: eps,
        val,
        norm,
        probe,
    })
}

fn frame_pixels(ep: &Episode, frames: &[usize], cfg: &ModelConfig) -> Result<Vec<f32>> {
    let n = ep.image_size * ep.image_size * 3;
    let mut bytes = Vec::with_capacity(frames.len() * n);
    for &t in frames {
        bytes.extend_from_slice(&ep.frames[t * n..(t + 1) * n]);
    }
    preprocess(
        &Frames::new(&bytes, frames.len(), ep.image_size, ep.image_size)?,
        cfg,
    )
}

/// Pixels of a batch of (episode, frame) pairs at the encoder's input size (or, with
/// `size`, at another size: the decoder's output).
fn batch_pixels(
    eps: &[Episode],
    items: &[(usize, usize)],
    cfg: &ModelConfig,
    size: Option<usize>,
) -> Result<Tensor> {
    let mut c = cfg.clone();
    if let Some(s) = size {
        c.encoder.resize = s;
    }
    let s = c.encoder.resize;
    let mut px = Vec::with_capacity(items.len() * 3 * s * s);
    for &(e, t) in items {
        px.extend(frame_pixels(&eps[e], &[t], &c)?);
    }
    Ok(Tensor::from_vec(px, (items.len(), 3, s, s), &Device::Cpu)?)
}

fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok((a - b)?.sqr()?.mean_all()?)
}

/// All parameters as Vars: the model's tensors plus the encoder phase's heads (`aux.`).
fn init_vars(cfg: &TrainConfig, npos: usize) -> Result<BTreeMap<String, Var>> {
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

fn model_over(vars: &BTreeMap<String, Var>, cfg: &ModelConfig, detach: bool) -> Result<CpuModel> {
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

fn weights_of(
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

/// Paths of a run's side files: `<out>.train/{checkpoint.safetensors, state.json, loss.csv,
/// loss.png}`.
pub fn run_dir(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".train");
    PathBuf::from(s)
}

fn save_checkpoint(
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

fn write_curves(dir: &Path, epochs: &[EpochLog]) -> Result<()> {
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
fn load_checkpoint(
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

/// Per-epoch batches of item indices, drawn from (seed, phase, epoch) alone.
fn epoch_batches(
    n: usize,
    batch: usize,
    seed: u64,
    phase: Phase,
    epoch: usize,
    cap: Option<usize>,
) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = crate::env::rng(sub_seed(seed, phase.index() * 100_000 + epoch as u64));
    idx.shuffle(&mut rng);
    let mut out: Vec<Vec<usize>> = idx
        .chunks(batch)
        .filter(|c| c.len() == batch || n < batch)
        .map(|c| c.to_vec())
        .collect();
    if let Some(c) = cap {
        out.truncate(c.max(1));
    }
    out
}

/// Every frame of every episode as (episode, frame).
fn frame_items(eps: &[Episode]) -> Vec<(usize, usize)> {
    eps.iter()
        .enumerate()
        .flat_map(|(e, ep)| (0..=ep.steps).map(move |t| (e, t)))
        .collect()
}

/// Training windows (episode, first frame): `max(num_hist, rollout) + 1` frames `frameskip`
/// apart.
fn window_items(eps: &[Episode], cfg: &ModelConfig, rollout: usize) -> Vec<(usize, usize)> {
    let span = cfg.num_hist.max(rollout) * cfg.frameskip;
    eps.iter()
        .enumerate()
        .flat_map(|(e, ep)| (0..(ep.steps + 1).saturating_sub(span)).map(move |t| (e, t)))
        .collect()
}

/// Validation items: a fixed, evenly spaced subset so each epoch's number is comparable.
fn val_subset(items: &[(usize, usize)], max: usize) -> Vec<(usize, usize)> {
    if items.len() <= max {
        return items.to_vec();
    }
    (0..max).map(|i| items[i * items.len() / max]).collect()
}

/// Latents, proprio and actions of a batch of frames, flattened in gather order.
#[derive(Default)]
struct Gathered {
    z: Vec<f32>,
    p: Vec<f32>,
    a: Vec<f32>,
}

struct Ctx<'a> {
    cfg: &'a TrainConfig,
    vars: &'a BTreeMap<String, Var>,
    data: &'a Data,
}

impl Ctx<'_> {
    fn encoder_loss(
        &self,
        model: &CpuModel,
        eps: &[Episode],
        items: &[(usize, usize)],
    ) -> Result<Tensor> {
        let mc = &self.cfg.model;
        let px = batch_pixels(eps, items, mc, None)?;
        let z = model.encode_chunk(&px)?; // [B, N, D]
        let b = items.len();
        let (g, p) = (mc.grid(), mc.encoder.resize / mc.grid());
        let target = px
            .reshape((b, 3, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b, g * g, 3 * p * p))?;
        let v = |n: &str| self.vars[n].as_tensor().clone();
        let rec = crate::cpu::matmul(
            &z,
            &v("aux.pixel_head.weight"),
            Some(&v("aux.pixel_head.bias")),
        )?;
        // Normalized position (the first two proprio dimensions) of every frame.
        let here: Vec<Vec<f32>> = items
            .iter()
            .map(|&(e, t)| self.position(eps, e, t))
            .collect();
        let npos = here[0].len();
        let pos = Tensor::from_vec(here.concat(), (b, npos), &Device::Cpu)?;
        let pred = crate::cpu::matmul(
            &z.mean(1)?,
            &v("aux.probe.weight"),
            Some(&v("aux.probe.bias")),
        )?;
        let mut l = (mse(&rec, &target)? + (mse(&pred, &pos)? * self.cfg.probe_weight)?)?;
        if self.cfg.flat_probe_weight > 0.0 {
            let flat = crate::cpu::matmul(
                &z.flatten_from(1)?,
                &v("aux.flat_probe.weight"),
                Some(&v("aux.flat_probe.bias")),
            )?;
            l = (l + (mse(&flat, &pos)? * self.cfg.flat_probe_weight)?)?;
        }
        if self.cfg.td_weight > 0.0 {
            l = (l + (self.td_loss(model, eps, items, &here, &z)? * self.cfg.td_weight)?)?;
        }
        Ok(l)
    }

    /// Temporal-distance term on the planner's own visual distance `d(a, b)` = root mean
    /// square over tokens and channels (so `d^2` is the objective's visual MSE). Consecutive
    /// frames may be at most `td_scale` x the normalized distance the agent moved apart
    /// (a squared penalty); random pairs are pushed apart (a hinge at `TD_MAX`). The largest
    /// spread that keeps every observed step short is the shortest-path metric of the data's
    /// transitions (METRA / temporal-distance representations use the same constraint):
    /// states that no short sequence of observed steps connects, such as the two sides of a
    /// wall, are pushed far apart, and the planner's cost then says which side the agent is on.
    fn td_loss(
        &self,
        model: &CpuModel,
        eps: &[Episode],
        items: &[(usize, usize)],
        here: &[Vec<f32>],
        z: &Tensor,
    ) -> Result<Tensor> {
        // In units of td_scale x normalized proprio: past the largest shortest path of the
        // built-in tasks (normalized arenas are a few units across), so every pair is pushed.
        const TD_MAX: f64 = 10.0;
        // A soft constraint: on the shipped Wall encoder consecutive frames end up 1.36x
        // their allowance on average (docs/MODELS.md), close enough that the distance still
        // grows with the path between states.
        const TD_PENALTY: f64 = 100.0;
        let mc = &self.cfg.model;
        let b = items.len();
        let next: Vec<(usize, usize)> = items
            .iter()
            .map(|&(e, t)| (e, if t < eps[e].steps { t + 1 } else { t - 1 }))
            .collect();
        let z2 = model.encode_chunk(&batch_pixels(eps, &next, mc, None)?)?;
        let dist = |a: &Tensor, b: &Tensor| -> Result<Tensor> {
            Ok(((a - b)?.sqr()?.flatten_from(1)?.mean(1)? + 1e-8)?.sqrt()?)
        };
        let dist2 =
            |a: &[f32], c: &[f32]| -> f32 { a.iter().zip(c).map(|(x, y)| (x - y).powi(2)).sum() };
        let moved: Vec<f32> = here
            .iter()
            .zip(&next)
            .map(|(a, &(e, u))| {
                dist2(a, &self.position(eps, e, u)).sqrt() * self.cfg.td_scale as f32
            })
            .collect();
        let moved = Tensor::from_vec(moved, b, &Device::Cpu)?;
        let excess = (dist(z, &z2)? - &moved)?.relu()?;
        let step = (excess.sqr()?.mean_all()? * TD_PENALTY)?;
        // Two sets of pairs are pushed apart: each frame against the next item of the
        // (shuffled) batch, which spreads the latents globally, and against the batch item
        // nearest to it in position, which spends the latent's room where it matters to a
        // planner: nearby states that no short path joins (the other side of a wall) end up
        // far apart, nearby states on the same side stay held together by their steps.
        let near: Vec<u32> = (0..b)
            .map(|i| {
                let d2 = |j: usize| dist2(&here[i], &here[j]);
                (0..b)
                    .filter(|&j| j != i)
                    .min_by(|&j, &k| d2(j).total_cmp(&d2(k)))
                    .unwrap_or(i) as u32
            })
            .collect();
        let next_item: Vec<u32> = (0..b as u32).map(|i| (i + 1) % b as u32).collect();
        let hinge = |idx: Vec<u32>| -> Result<Tensor> {
            let other = z.index_select(&Tensor::from_vec(idx, b, &Device::Cpu)?, 0)?;
            Ok((dist(z, &other)? * -1.0)?
                .affine(1.0, TD_MAX * self.cfg.td_scale)?
                .relu()?
                .mean_all()?)
        };
        let spread = (hinge(next_item)? + hinge(near)?)?;
        Ok((step + spread)?)
    }

    /// The probe target of frame `t`: the normalized position part (first two dimensions)
    /// of its proprio, or the `probe_state` dimensions of its state.
    fn position(&self, eps: &[Episode], e: usize, t: usize) -> Vec<f32> {
        if !self.data.probe.is_empty() {
            let sd = eps[e].states.len() / (eps[e].steps + 1);
            let s = &eps[e].states[t * sd..(t + 1) * sd];
            let mut out = Vec::new();
            for &(i, mean, std, angle) in &self.data.probe {
                if angle {
                    out.extend([s[i].cos(), s[i].sin()]);
                } else {
                    out.push((s[i] - mean) / std);
                }
            }
            return out;
        }
        let pd = self.cfg.model.proprio_dim;
        let pr = &eps[e].proprio[t * pd..(t + 1) * pd];
        let mut p = self.data.norm.normalize_proprio(pr);
        p.truncate(pd.min(2));
        p
    }

    /// Append frame `u` of episode `e`: its latent tokens, its normalized proprio and, with
    /// `action`, the normalized actions of the `frameskip` steps that follow it.
    fn gather(
        &self,
        lat: &Latents,
        eps: &[Episode],
        which: usize,
        (e, u): (usize, usize),
        out: &mut Gathered,
        action: bool,
    ) {
        let mc = &self.cfg.model;
        let (fs, nd) = (mc.frameskip, mc.patches() * mc.visual_dim());
        let (pd, ad) = (mc.proprio_dim, mc.action_dim);
        let (ep, norm) = (&eps[e], &self.data.norm);
        out.z
            .extend_from_slice(&lat.per_episode[which][e][u * nd..(u + 1) * nd]);
        out.p
            .extend(norm.normalize_proprio(&ep.proprio[u * pd..(u + 1) * pd]));
        if action {
            out.a
                .extend(norm.normalize_actions(&ep.actions[u * ad..(u + fs) * ad]));
        }
    }

    fn predictor_loss(
        &self,
        model: &CpuModel,
        lat: &Latents,
        eps: &[Episode],
        which: usize,
        items: &[(usize, usize)],
    ) -> Result<Tensor> {
        let mc = &self.cfg.model;
        let (h, fs, n, de) = (mc.num_hist, mc.frameskip, mc.patches(), mc.visual_dim());
        let (pd, ad) = (mc.proprio_dim, mc.action_dim);
        let b = items.len();
        let (mut src, mut tgt) = (Gathered::default(), Gathered::default());
        for &(e, t0) in items {
            for i in 0..h {
                self.gather(lat, eps, which, (e, t0 + i * fs), &mut src, true);
                self.gather(lat, eps, which, (e, t0 + (i + 1) * fs), &mut tgt, false);
            }
        }
        let (z, p, a, zt, pt) = (src.z, src.p, src.a, tgt.z, tgt.p);
        let dev = &Device::Cpu;
        let z = Tensor::from_vec(z, (b, h, n, de), dev)?;
        let zt = Tensor::from_vec(zt, (b, h, n, de), dev)?;
        let p = Tensor::from_vec(p, (b, h, pd), dev)?;
        let pt = Tensor::from_vec(pt, (b, h, pd), dev)?;
        let a = Tensor::from_vec(a, (b, h, fs * ad), dev)?;
        let tile = |x: Tensor| -> Result<Tensor> {
            let k = x.dim(D::Minus1)?;
            Ok(x.unsqueeze(2)?.broadcast_as((b, h, n, k))?)
        };
        let pe = tile(model.embed_proprio(&p)?)?;
        let pet = tile(model.embed_proprio(&pt)?)?;
        let ae = tile(model.embed_action(&a)?)?;
        let x = Tensor::cat(&[&z, &pe, &ae], 3)?.reshape((b, h * n, mc.latent_dim()))?;
        let y = model
            .predict_tokens(&x)?
            .reshape((b, h, n, mc.latent_dim()))?;
        let pred = y.narrow(3, 0, de + mc.proprio_emb)?;
        let target = Tensor::cat(&[&zt, &pet], 3)?;
        mse(&pred, &target)
    }

    /// Mean latent MSE of an open-loop rollout from each window's first frame, made by the
    /// planner's own rollout (`CpuModel::rollout_chunk`): each step's predicted visual and
    /// proprio tokens, with the true action of that step, are the next input frame.
    fn rollout_loss(
        &self,
        model: &CpuModel,
        lat: &Latents,
        eps: &[Episode],
        which: usize,
        items: &[(usize, usize)],
    ) -> Result<Tensor> {
        let mc = &self.cfg.model;
        let steps = self.cfg.rollout_steps;
        let (fs, n, de) = (mc.frameskip, mc.patches(), mc.visual_dim());
        let (pd, ad, ep) = (mc.proprio_dim, mc.action_dim, mc.proprio_emb);
        let b = items.len();
        let mut g = Gathered::default();
        for &(e, t0) in items {
            for i in 0..=steps {
                self.gather(lat, eps, which, (e, t0 + i * fs), &mut g, i < steps);
            }
        }
        let dev = &Device::Cpu;
        let z = Tensor::from_vec(g.z, (b, steps + 1, n, de), dev)?;
        let p = Tensor::from_vec(g.p, (b, steps + 1, pd), dev)?;
        let a = Tensor::from_vec(g.a, (b, steps, fs * ad), dev)?;
        let frames = model.rollout_chunk(
            &z.narrow(1, 0, 1)?.squeeze(1)?,
            &p.narrow(1, 0, 1)?.squeeze(1)?,
            &a,
        )?;
        let pe = model.embed_proprio(&p)?;
        let mut total = Tensor::zeros((), DType::F32, dev)?;
        for (t, frame) in frames.iter().enumerate().skip(1) {
            let pred = frame.narrow(2, 0, de + ep)?;
            let pe_t = pe.narrow(1, t, 1)?.broadcast_as((b, n, ep))?;
            let target = Tensor::cat(&[&z.narrow(1, t, 1)?.squeeze(1)?, &pe_t], 2)?;
            total = (total + mse(&pred, &target)?)?;
        }
        Ok((total / steps as f64)?)
    }

    fn decoder_loss(
        &self,
        model: &CpuModel,
        lat: &Latents,
        eps: &[Episode],
        which: usize,
        items: &[(usize, usize)],
    ) -> Result<Tensor> {
        let mc = &self.cfg.model;
        let (n, de) = (mc.patches(), mc.visual_dim());
        let mut z = Vec::with_capacity(items.len() * n * de);
        for &(e, t) in items {
            z.extend_from_slice(&lat.per_episode[which][e][t * n * de..(t + 1) * n * de]);
        }
        let z = Tensor::from_vec(z, (items.len(), n, de), &Device::Cpu)?;
        let img = model.decode(&z)?;
        let target = batch_pixels(eps, items, mc, Some(16 * mc.grid()))?;
        mse(&img, &target)
    }
}

/// Visual latents of every frame: `per_episode[0]` train, `[1]` validation, each `[T+1, N, De]`.
struct Latents {
    per_episode: [Vec<Vec<f32>>; 2],
}

fn encode_all(model: &CpuModel, data: &Data, cfg: &ModelConfig) -> Result<Latents> {
    let mut out: [Vec<Vec<f32>>; 2] = [Vec::new(), Vec::new()];
    for (k, eps) in [&data.train, &data.val].into_iter().enumerate() {
        for ep in eps {
            let frames: Vec<usize> = (0..=ep.steps).collect();
            let mut v = Vec::new();
            for chunk in frames.chunks(64) {
                let s = cfg.encoder.resize;
                let px = Tensor::from_vec(
                    frame_pixels(ep, chunk, cfg)?,
                    (chunk.len(), 3, s, s),
                    &Device::Cpu,
                )?;
                v.extend(model.encode_chunk(&px)?.flatten_all()?.to_vec1::<f32>()?);
            }
            out[k].push(v);
        }
    }
    Ok(Latents { per_episode: out })
}

/// Train (or resume) a model on the dataset in `data_dir`; writes the model to `out` and the
/// run's files to [`run_dir`]`(out)`.
pub fn train(
    cfg: &TrainConfig,
    data_dir: &Path,
    out: &Path,
    opts: &RunOptions,
) -> Result<TrainReport> {
    let progress = opts.progress;
    cfg.model.validate()?;
    if cfg.batch == 0 {
        return Err(Error::Invalid("batch must be at least 1".into()));
    }
    let start = Instant::now();
    let data = load_data(data_dir, cfg)?;
    let dir = run_dir(out);
    let vars = init_vars(cfg, data.probe_len(&cfg.model))?;
    let data_key = data_dir.display().to_string();
    let mut state = State {
        config: cfg.clone(),
        data: data_key.clone(),
        epochs: Vec::new(),
        adam_step: 0,
        finished: false,
    };
    let state_path = dir.join("state.json");
    if state_path.exists() {
        let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
        let old: State = serde_json::from_str(&text).map_err(|e| {
            Error::Invalid(format!(
                "{}: {e}; delete it to start over",
                state_path.display()
            ))
        })?;
        // The schedule (epoch counts, steps per epoch, rollout steps) may change between runs
        // (extend or shorten a phase, fine-tune with rollouts); nothing else.
        let same = TrainConfig {
            encoder_epochs: cfg.encoder_epochs,
            predictor_epochs: cfg.predictor_epochs,
            decoder_epochs: cfg.decoder_epochs,
            rollout_steps: cfg.rollout_steps,
            max_steps_per_epoch: cfg.max_steps_per_epoch,
            ..old.config.clone()
        } == *cfg;
        if !same || old.data != data_key {
            return Err(Error::Invalid(format!(
                "{} belongs to a run with other settings or data; delete {} to start over or pass the same settings",
                state_path.display(),
                dir.display()
            )));
        }
        state = State {
            config: cfg.clone(),
            ..old
        };
    }
    let resumed_epochs = state.epochs.len();
    let ctx = Ctx {
        cfg,
        vars: &vars,
        data: &data,
    };
    let mc = &cfg.model;
    let mut latents: Option<Latents> = None;
    if resumed_epochs > 0 {
        load_checkpoint(&dir, &vars, None)?;
    }
    for phase in Phase::ALL {
        let (epochs, lr) = match phase {
            Phase::Encoder => (cfg.encoder_epochs, cfg.encoder_lr),
            Phase::Predictor => (cfg.predictor_epochs, cfg.predictor_lr),
            Phase::Decoder => (
                if mc.decoder.is_some() {
                    cfg.decoder_epochs
                } else {
                    0
                },
                cfg.decoder_lr,
            ),
        };
        let done = state.epochs.iter().filter(|e| e.phase == phase).count();
        if done >= epochs {
            continue;
        }
        // The predictor and decoder learn from the frozen encoder's latents, so the encoder
        // cannot change once they ran. The predictor and decoder do not depend on each other:
        // either may be extended later.
        if phase == Phase::Encoder && state.epochs.iter().any(|e| e.phase > phase) {
            return Err(Error::Invalid(format!(
                "{}: the encoder phase cannot get more epochs after later phases ran on its \
                 latents; delete the directory to start over",
                dir.display(),
            )));
        }
        let mut opt = AdamW::new(&vars, phase, lr, cfg.weight_decay)?;
        if !state.finished && state.epochs.last().map(|e| e.phase) == Some(phase) {
            // Interrupted inside this phase: the checkpoint holds its optimizer moments.
            load_checkpoint(&dir, &vars, Some(&mut opt))?;
            opt.step = state.adam_step;
        } else if done > 0 && progress {
            // Extending a phase after the run finished or moved on: its moments are gone.
            eprintln!(
                "{}: {} more epochs after epoch {done}, with a fresh optimizer",
                phase.name(),
                epochs - done
            );
        }
        let model = model_over(&vars, mc, false)?;
        let (train_items, val_items) = match phase {
            Phase::Encoder | Phase::Decoder => (frame_items(&data.train), frame_items(&data.val)),
            Phase::Predictor => (
                window_items(&data.train, mc, cfg.rollout_steps),
                window_items(&data.val, mc, cfg.rollout_steps),
            ),
        };
        if train_items.is_empty() || val_items.is_empty() {
            return Err(Error::Invalid(
                "not enough frames for a training window in train or validation episodes".into(),
            ));
        }
        let val_items = val_subset(&val_items, 2048);
        if phase != Phase::Encoder && latents.is_none() {
            latents = Some(encode_all(&model_over(&vars, mc, true)?, &data, mc)?);
        }
        let loss_of = |items: &[(usize, usize)], which: usize| -> Result<Tensor> {
            let eps = if which == 0 { &data.train } else { &data.val };
            match phase {
                Phase::Encoder => ctx.encoder_loss(&model, eps, items),
                Phase::Predictor => {
                    let lat = latents.as_ref().unwrap();
                    let tf = ctx.predictor_loss(&model, lat, eps, which, items)?;
                    if cfg.rollout_steps == 0 {
                        Ok(tf)
                    } else {
                        Ok((tf + ctx.rollout_loss(&model, lat, eps, which, items)?)?)
                    }
                }
                Phase::Decoder => {
                    ctx.decoder_loss(&model, latents.as_ref().unwrap(), eps, which, items)
                }
            }
        };
        for epoch in done..epochs {
            let t0 = Instant::now();
            let batches = epoch_batches(
                train_items.len(),
                cfg.batch,
                cfg.seed,
                phase,
                epoch,
                cfg.max_steps_per_epoch,
            );
            let bar = progress_bar(
                progress,
                batches.len(),
                &format!("{} {}/{}", phase.name(), epoch + 1, epochs),
            );
            let mut sum = 0.0;
            for (k, b) in batches.iter().enumerate() {
                let items: Vec<(usize, usize)> = b.iter().map(|&i| train_items[i]).collect();
                let loss = loss_of(&items, 0)?;
                let lv = loss.to_scalar::<f32>()? as f64;
                if !lv.is_finite() {
                    return Err(Error::Invalid(format!(
                        "{} loss became {lv} at epoch {} step {k}; lower the learning rate",
                        phase.name(),
                        epoch + 1
                    )));
                }
                sum += lv;
                opt.apply(&loss)?;
                if let Some(bar) = &bar {
                    bar.set_message(format!("loss {:.4e}", sum / (k + 1) as f64));
                    bar.inc(1);
                }
            }
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            let mut vsum = 0.0;
            let mut vn = 0;
            for chunk in val_items.chunks(64) {
                let l = loss_of(chunk, 1)?.detach().to_scalar::<f32>()? as f64;
                vsum += l * chunk.len() as f64;
                vn += chunk.len();
            }
            let log = EpochLog {
                phase,
                epoch: epoch + 1,
                steps: batches.len(),
                train_loss: sum / batches.len().max(1) as f64,
                val_loss: vsum / vn.max(1) as f64,
                seconds: t0.elapsed().as_secs_f64(),
            };
            if progress {
                eprintln!(
                    "{} epoch {}/{}: train {:.4e}  val {:.4e}  ({:.0} s)",
                    phase.name(),
                    epoch + 1,
                    epochs,
                    log.train_loss,
                    log.val_loss,
                    log.seconds
                );
            }
            state.epochs.push(log);
            state.finished = false;
            state.adam_step = opt.step;
            save_checkpoint(&dir, &vars, Some(&opt), &state)?;
            if opts
                .stop_after_epochs
                .is_some_and(|k| state.epochs.len() >= k)
            {
                return Ok(TrainReport {
                    weights: None,
                    epochs: state.epochs,
                    resumed_epochs,
                    seconds: start.elapsed().as_secs_f64(),
                });
            }
        }
    }
    let weights = weights_of(&vars, mc, &data.norm)?;
    crate::model::format::save(&weights, out)?;
    state.finished = true;
    save_checkpoint(&dir, &vars, None, &state)?;
    Ok(TrainReport {
        weights: Some(weights),
        epochs: state.epochs,
        resumed_epochs,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn progress_bar(on: bool, len: usize, what: &str) -> Option<indicatif::ProgressBar> {
    if !on {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    Some(bar)
}
