//! The dataset in memory (split by episode into training and validation), the items a phase
//! trains on, the batches of an epoch, and the frozen encoder's latents of every frame.

use std::path::Path;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;

use super::config::{Phase, TrainConfig};
use crate::env::dataset::{Dataset, Episode};
use crate::env::sub_seed;
use crate::model::{preprocess, CpuModel, Frames, ModelConfig, Normalization};
use crate::{Error, Result};

/// Which part of the dataset a loss is computed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Split {
    Train,
    Validation,
}

/// The dataset in memory, split by episode.
pub(crate) struct Data {
    pub(crate) train: Vec<Episode>,
    pub(crate) val: Vec<Episode>,
    pub(crate) norm: Normalization,
    /// Probe targets from states: (state index, mean, std, is an angle) per dimension of
    /// `TrainConfig::probe_state`; empty = proprio position.
    pub(crate) probe: Vec<(usize, f32, f32, bool)>,
}

impl Data {
    /// Length of a probe target.
    pub(crate) fn probe_len(&self, cfg: &ModelConfig) -> usize {
        if self.probe.is_empty() {
            cfg.proprio_dim.min(2)
        } else {
            self.probe.iter().map(|p| 1 + p.3 as usize).sum()
        }
    }

    pub(crate) fn episodes(&self, split: Split) -> &[Episode] {
        match split {
            Split::Train => &self.train,
            Split::Validation => &self.val,
        }
    }
}

pub(crate) fn load_data(dir: &Path, cfg: &TrainConfig) -> Result<Data> {
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

pub(crate) fn frame_pixels(ep: &Episode, frames: &[usize], cfg: &ModelConfig) -> Result<Vec<f32>> {
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
pub(crate) fn batch_pixels(
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

/// Per-epoch batches of item indices, drawn from (seed, phase, epoch) alone.
pub(crate) fn epoch_batches(
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
pub(crate) fn frame_items(eps: &[Episode]) -> Vec<(usize, usize)> {
    eps.iter()
        .enumerate()
        .flat_map(|(e, ep)| (0..=ep.steps).map(move |t| (e, t)))
        .collect()
}

/// Training windows (episode, first frame): `max(num_hist, rollout) + 1` frames `frameskip`
/// apart.
pub(crate) fn window_items(
    eps: &[Episode],
    cfg: &ModelConfig,
    rollout: usize,
) -> Vec<(usize, usize)> {
    let span = cfg.num_hist.max(rollout) * cfg.frameskip;
    eps.iter()
        .enumerate()
        .flat_map(|(e, ep)| (0..(ep.steps + 1).saturating_sub(span)).map(move |t| (e, t)))
        .collect()
}

/// Validation items: a fixed, evenly spaced subset so each epoch's number is comparable.
pub(crate) fn val_subset(items: &[(usize, usize)], max: usize) -> Vec<(usize, usize)> {
    if items.len() <= max {
        return items.to_vec();
    }
    (0..max).map(|i| items[i * items.len() / max]).collect()
}

/// Visual latents of every frame of every episode, each `[T+1, N, De]` flattened.
pub(crate) struct Latents {
    train: Vec<Vec<f32>>,
    val: Vec<Vec<f32>>,
}

impl Latents {
    pub(crate) fn episodes(&self, split: Split) -> &[Vec<f32>] {
        match split {
            Split::Train => &self.train,
            Split::Validation => &self.val,
        }
    }
}

pub(crate) fn encode_all(model: &CpuModel, data: &Data, cfg: &ModelConfig) -> Result<Latents> {
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
    let [train, val] = out;
    Ok(Latents { train, val })
}
