//! The DINO-WM world model (see docs/MODEL_FORMAT.md): config, weights file, the parameter
//! tree ([`params`]), and one forward pass ([`Model`]) written over an op backend
//! ([`backend`]); [`GpuModel`] (wgpu) and [`CpuModel`] (candle reference) are that model on
//! the two backends, behind the [`WorldModel`] trait.
//!
//! Conventions shared by both backends:
//! - frames are RGB u8, `[B, image_size, image_size, 3]` (HWC); [`preprocess`] scales them to
//!   [-1, 1] and resizes them to `encoder.resize` with the model's `resize_filter` (bilinear,
//!   or antialiased bilinear for DINO-WM checkpoints);
//! - visual latents are `[B, N, De]` (N patches, De encoder width, CLS dropped);
//! - predictor tokens are `[B, k, N, W]` with `W = De + proprio_emb + action_emb`, channels
//!   ordered visual | proprio embedding | action embedding (DINO-WM concat_dim = 1);
//! - actions and proprio passed to the model are already z-normalized
//!   ([`Normalization::normalize_actions`]); actions are `[B, T, frameskip * action_dim]`.

pub mod backend;
pub mod config;
mod cpu_model;
pub mod format;
mod forward;
mod gpu_model;
pub mod params;
pub mod preprocess;
pub mod quant_error;
pub mod quantized;
mod quantized_file;
pub mod weights;

pub use config::{
    DecoderConfig, EncoderConfig, ModelConfig, Normalization, PredictorConfig, ResizeFilter,
};
pub use cpu_model::{Cpu, CpuLinear, CpuModel, CpuOps};
pub use forward::Model;
pub use gpu_model::{Gpu, GpuModel, GpuOps, Linear, LinearWeight};
pub use preprocess::{postprocess, preprocess, resize_taps};
pub use quantized::QuantizedModel;
pub use weights::{expected_tensors, HostTensor, Weights};

use crate::{Error, Result};

/// RGB u8 frames, `[batch, height, width, 3]` row-major (HWC), as environments render them.
#[derive(Clone, Copy, Debug)]
pub struct Frames<'a> {
    pub data: &'a [u8],
    pub batch: usize,
    pub height: usize,
    pub width: usize,
}

impl<'a> Frames<'a> {
    pub fn new(data: &'a [u8], batch: usize, height: usize, width: usize) -> Result<Self> {
        let want = batch * height * width * 3;
        if data.len() != want {
            return Err(Error::Shape(format!(
                "frames: {} bytes given, expected {batch} x {height} x {width} x 3 = {want}",
                data.len()
            )));
        }
        Ok(Frames {
            data,
            batch,
            height,
            width,
        })
    }
}

/// Planning objective mode (DINO-WM `objective_fn_last` / `objective_fn_all`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ObjectiveMode {
    /// MSE of the last frame's visual latent to the goal + alpha x MSE of its proprio
    /// embedding (patch 0) to the goal's proprio embedding.
    Last,
    /// The same term for every frame of the rollout (frame 0 included), weighted by
    /// `base^t / sum_t base^t` and averaged over the `T + 1` frames (DINO-WM
    /// `objective_fn_all`: `(loss * coeffs).mean(dim=1)`).
    All { base: f32 },
}

/// Frames of a rollout, split into the batch chunks it was computed in (so nothing larger
/// than one chunk has to exist in one buffer). `chunks[c].frames[t]` is `[len, N, W]`;
/// frame 0 is the encoded observation with its first action, frames 1..=T are predicted.
#[derive(Debug)]
pub struct Rollout<T> {
    pub batch: usize,
    pub chunks: Vec<RolloutChunk<T>>,
}

#[derive(Debug)]
pub struct RolloutChunk<T> {
    pub start: usize,
    pub len: usize,
    pub frames: Vec<T>,
}

impl<T> Rollout<T> {
    /// Number of frames (actions + 1).
    pub fn steps(&self) -> usize {
        self.chunks.first().map(|c| c.frames.len()).unwrap_or(0)
    }
}

/// The world model on some backend. All tensors stay on the backend between calls.
pub trait WorldModel {
    type Tensor;

    fn config(&self) -> &ModelConfig;
    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<Self::Tensor>;
    fn download(&self, t: &Self::Tensor) -> Result<Vec<f32>>;
    fn dims(t: &Self::Tensor) -> Vec<usize>;

    /// Encode preprocessed pixels `[B, 3, S, S]` in [-1, 1] to visual latents `[B, N, De]`.
    fn encode_pixels(&self, pixels: &Self::Tensor) -> Result<Self::Tensor>;

    /// Encode u8 frames (resize and normalization included) to `[B, N, De]`.
    fn encode(&self, frames: &Frames) -> Result<Self::Tensor> {
        let cfg = self.config();
        let px = preprocess(frames, cfg)?;
        let s = cfg.encoder.resize;
        let t = self.upload(&px, &[frames.batch, 3, s, s])?;
        self.encode_pixels(&t)
    }

    /// Normalized actions `[.., frameskip * action_dim]` -> `[.., action_emb]`.
    fn embed_action(&self, actions: &Self::Tensor) -> Result<Self::Tensor>;
    /// Normalized proprio `[.., proprio_dim]` -> `[.., proprio_emb]`.
    fn embed_proprio(&self, proprio: &Self::Tensor) -> Result<Self::Tensor>;

    /// One predictor forward: history `[B, k, N, W]` (k <= num_hist) -> `[B, k, N, W]`.
    /// Does not split the batch; [`WorldModel::rollout`] does.
    fn predict(&self, history: &Self::Tensor) -> Result<Self::Tensor>;

    /// DINO-WM rollout: `z0[B or 1, N, De]` (a batch of 1 is shared by all samples),
    /// `proprio0[B or 1, proprio_dim]`, `actions[B, T, frameskip * action_dim]` (normalized).
    /// Frame 0 pairs the observation with action 0; each of the T predictor calls predicts
    /// from the last `num_hist` frames, and the predicted frame gets the next action's
    /// embedding in its action channels. Returns T + 1 frames `[B, N, W]`.
    fn rollout(
        &self,
        z0: &Self::Tensor,
        proprio0: &Self::Tensor,
        actions: &Self::Tensor,
    ) -> Result<Rollout<Self::Tensor>>;

    /// Planning cost per sample `[B]`: goal visual latent `[N, De]` (or `[1, N, De]`) and goal
    /// proprio embedding `[proprio_emb]` (or `[1, proprio_emb]`).
    fn objective(
        &self,
        rollout: &Rollout<Self::Tensor>,
        goal_visual: &Self::Tensor,
        goal_proprio: &Self::Tensor,
        mode: ObjectiveMode,
        alpha: f32,
    ) -> Result<Self::Tensor>;

    /// Decode visual latents `[B, N, De]` (or full tokens `[B, N, W]`) to images
    /// `[B, 3, 16 * grid, 16 * grid]` (in the encoder's [-1, 1] pixel space).
    fn decode(&self, latents: &Self::Tensor) -> Result<Self::Tensor>;

    /// Every frame of a rollout on the host, each `[B, N, W]` flattened.
    fn rollout_to_host(&self, r: &Rollout<Self::Tensor>) -> Result<Vec<Vec<f32>>> {
        let mut out = vec![Vec::new(); r.steps()];
        for c in &r.chunks {
            for (t, f) in c.frames.iter().enumerate() {
                out[t].extend(self.download(f)?);
            }
        }
        Ok(out)
    }
}

/// Check `[B, T, A]` actions against the config; returns (B, T).
pub(crate) fn check_actions(cfg: &ModelConfig, dims: &[usize]) -> Result<(usize, usize)> {
    match dims {
        [b, t, a] if *a == cfg.action_in() && *t > 0 => Ok((*b, *t)),
        [_, _, a] if *a != cfg.action_in() => Err(Error::Shape(format!(
            "actions have {a} values per step, the model expects frameskip {} x action_dim {} = {}",
            cfg.frameskip,
            cfg.action_dim,
            cfg.action_in()
        ))),
        [_, 0, _] => Err(Error::Shape(
            "actions: need at least one step, got T = 0".into(),
        )),
        s => Err(Error::Shape(format!(
            "actions must be [B, T, {}], got {s:?}",
            cfg.action_in()
        ))),
    }
}

/// Check a history `[B, k, N, W]`; returns (B, k).
pub(crate) fn check_history(cfg: &ModelConfig, dims: &[usize]) -> Result<(usize, usize)> {
    let (n, w) = (cfg.patches(), cfg.latent_dim());
    match dims {
        [b, k, dn, dw] if *dn == n && *dw == w => {
            if *k == 0 || *k > cfg.num_hist {
                Err(Error::Shape(format!(
                    "history of {k} frames given; the predictor takes 1 to num_hist = {} frames",
                    cfg.num_hist
                )))
            } else {
                Ok((*b, *k))
            }
        }
        s => Err(Error::Shape(format!(
            "history must be [B, k, {n}, {w}] (patches, latent width), got {s:?}"
        ))),
    }
}

/// Objective frame weights: `[1]` for Last, normalized `base^t` for All.
pub(crate) fn objective_weights(mode: ObjectiveMode, steps: usize) -> Result<Vec<f32>> {
    match mode {
        ObjectiveMode::Last => Ok(vec![1.0]),
        ObjectiveMode::All { base } => {
            if !(base.is_finite() && base > 0.0) {
                return Err(Error::Invalid(format!(
                    "objective base must be > 0, got {base}"
                )));
            }
            // DINO-WM's objective_fn_all: coefficient-weighted per-frame losses averaged over
            // the frames (`(loss * coeffs).mean(dim=1)`), so each weight is also divided by
            // the number of frames.
            let c: Vec<f64> = (0..steps).map(|i| (base as f64).powi(i as i32)).collect();
            let s: f64 = c.iter().sum::<f64>() * steps as f64;
            Ok(c.iter().map(|x| (x / s) as f32).collect())
        }
    }
}
