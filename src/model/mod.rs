//! The DINO-WM world model (see docs/MODEL_FORMAT.md): config, weights file, and the same
//! forward pass on two backends, [`GpuModel`] (wgpu) and [`CpuModel`] (candle reference),
//! behind the [`WorldModel`] trait.
//!
//! Conventions shared by both backends:
//! - frames are RGB u8, `[B, image_size, image_size, 3]` (HWC); [`preprocess`] scales them to
//!   [-1, 1] and resizes them (bilinear, half-pixel centres) to `encoder.resize`;
//! - visual latents are `[B, N, De]` (N patches, De encoder width, CLS dropped);
//! - predictor tokens are `[B, k, N, W]` with `W = De + proprio_emb + action_emb`, channels
//!   ordered visual | proprio embedding | action embedding (DINO-WM concat_dim = 1);
//! - actions and proprio passed to the model are already z-normalized
//!   ([`Normalization::normalize_actions`]); actions are `[B, T, frameskip * action_dim]`.

pub mod config;
mod cpu_model;
pub mod format;
mod gpu_model;
pub mod quantized;
pub mod weights;

pub use config::{DecoderConfig, EncoderConfig, ModelConfig, Normalization, PredictorConfig};
pub use cpu_model::{CpuLinear, CpuModel};
pub use gpu_model::{GpuModel, Linear};
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
    /// `base^t / sum_t base^t`.
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

/// u8 HWC frames -> f32 `[B, 3, S, S]` in [-1, 1] (x / 255 * 2 - 1), bilinearly resized to
/// `S = encoder.resize` with half-pixel centres and no antialiasing (PyTorch
/// `F.interpolate(mode="bilinear", align_corners=False, antialias=False)`).
pub fn preprocess(frames: &Frames, cfg: &ModelConfig) -> Result<Vec<f32>> {
    let s_in = cfg.image_size;
    if frames.height != s_in || frames.width != s_in {
        return Err(Error::Shape(format!(
            "frames are {}x{} but the model '{}' expects {s_in}x{s_in} RGB frames",
            frames.height, frames.width, cfg.name
        )));
    }
    let s = cfg.encoder.resize;
    let (h, w) = (frames.height, frames.width);
    let mut out = vec![0f32; frames.batch * 3 * s * s];
    // Source coordinate and weights per output index (same for rows and columns).
    let taps = |n_in: usize, n_out: usize| -> Vec<(usize, usize, f32)> {
        let scale = n_in as f32 / n_out as f32;
        (0..n_out)
            .map(|o| {
                let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(n_in - 1);
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, src - i0 as f32)
            })
            .collect()
    };
    let ty = taps(h, s);
    let tx = taps(w, s);
    for b in 0..frames.batch {
        let img = &frames.data[b * h * w * 3..(b + 1) * h * w * 3];
        let px = |y: usize, x: usize, c: usize| img[(y * w + x) * 3 + c] as f32 / 255.0 * 2.0 - 1.0;
        for c in 0..3 {
            let dst = &mut out[(b * 3 + c) * s * s..(b * 3 + c + 1) * s * s];
            for (oy, &(y0, y1, fy)) in ty.iter().enumerate() {
                for (ox, &(x0, x1, fx)) in tx.iter().enumerate() {
                    let top = px(y0, x0, c) * (1.0 - fx) + px(y0, x1, c) * fx;
                    let bot = px(y1, x0, c) * (1.0 - fx) + px(y1, x1, c) * fx;
                    dst[oy * s + ox] = top * (1.0 - fy) + bot * fy;
                }
            }
        }
    }
    Ok(out)
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
            let c: Vec<f64> = (0..steps).map(|i| (base as f64).powi(i as i32)).collect();
            let s: f64 = c.iter().sum();
            Ok(c.iter().map(|x| (x / s) as f32).collect())
        }
    }
}
