//! What the forward pass needs from a backend: the ops it is written in ([`Ops`]) and the few
//! things that differ between devices ([`Backend`]): how a batch is split, when recorded
//! work is submitted, and how a linear layer runs (packed low-bit codes on the GPU,
//! quantize-dequantize on the CPU).
//!
//! Tensor conventions: activations are `[B, tokens, width]`, images `[B, C, H, W]`; every op
//! returns a new tensor and never mutates its inputs.

use super::params::Norm;
use super::{preprocess, Frames, ModelConfig};
use crate::Result;

/// What follows a linear layer in [`Ops::linear_then`].
pub enum Then<'a, T> {
    /// The GELU of the output.
    Gelu,
    /// A residual `r + linear(x)` (`r` shaped as the output).
    Add(&'a T),
}

/// The ops of the DINO-WM forward. On the GPU they record into one command buffer; on the
/// CPU they run at once (and record candle's autodiff graph over `Var`s in training).
pub trait Ops {
    type T: Clone;
    type Linear;

    /// Same data, new shape (same element count).
    fn reshape(&mut self, x: &Self::T, shape: &[usize]) -> Result<Self::T>;
    /// `x[.., K] -> [.., N]` through a linear layer.
    fn linear(&mut self, l: &Self::Linear, x: &Self::T) -> Result<Self::T>;
    /// `linear(x)` then `then`, the same numbers as the two ops; a backend may fuse `then`
    /// into the linear's epilogue (the CPU does: no second pass, no second buffer).
    fn linear_then(
        &mut self,
        l: &Self::Linear,
        x: &Self::T,
        then: Then<'_, Self::T>,
    ) -> Result<Self::T> {
        let y = self.linear(l, x)?;
        match then {
            Then::Gelu => self.gelu(&y),
            Then::Add(r) => self.add(r, &y),
        }
    }
    fn layernorm(&mut self, x: &Self::T, n: &Norm<Self::T>) -> Result<Self::T>;
    /// Multi-head attention over packed `qkv[B, T, 3 * H * D]`; with `frame_tokens`, a token
    /// sees only the tokens of its own and earlier frames.
    fn attention(
        &mut self,
        qkv: &Self::T,
        heads: usize,
        frame_tokens: Option<usize>,
    ) -> Result<Self::T>;
    fn gelu(&mut self, x: &Self::T) -> Result<Self::T>;
    fn relu(&mut self, x: &Self::T) -> Result<Self::T>;
    fn add(&mut self, a: &Self::T, b: &Self::T) -> Result<Self::T>;
    /// `a + scale * b`, `scale` per feature of the last dimension (or one value).
    fn add_scaled(&mut self, a: &Self::T, b: &Self::T, scale: &Self::T) -> Result<Self::T>;
    /// `y[r, t] = [x[r, t], v[r]]`: `v[R, DV]` appended to every token of `x[R, (T,) DX]`.
    fn concat_tile(&mut self, x: &Self::T, v: &Self::T) -> Result<Self::T>;
    /// Columns `col0..col0 + width` of the last dimension.
    fn slice_cols(&mut self, x: &Self::T, col0: usize, width: usize) -> Result<Self::T>;
    /// Tokens `t0..t0 + len` of `x[B, T, W]`.
    fn slice_tokens(&mut self, x: &Self::T, t0: usize, len: usize) -> Result<Self::T>;
    /// `[B, T_i, W]` parts concatenated along tokens.
    fn cat_tokens(&mut self, parts: &[Self::T]) -> Result<Self::T>;
    /// Items `start..start + len` of a batch.
    fn slice_batch(&mut self, x: &Self::T, start: usize, len: usize) -> Result<Self::T>;
    /// Batches concatenated (at least one part).
    fn cat_batch(&mut self, parts: &[Self::T]) -> Result<Self::T>;
    /// A batch of 1 repeated `b` times.
    fn broadcast_batch(&mut self, x: &Self::T, b: usize) -> Result<Self::T>;
    /// `x[B, T, W] + pos[1, :T, W]` (`pos` may hold more tokens).
    fn add_positions(&mut self, x: &Self::T, pos: &Self::T) -> Result<Self::T>;
    /// `tok[1, 1, W]` prepended to the tokens of every item of `x[B, T, W]`.
    fn prepend_token(&mut self, x: &Self::T, tok: &Self::T) -> Result<Self::T>;
    /// Non-overlapping patches of `img[B, 3, S, S]` through a conv `w[D, 3, P, P]`: `[B, N, D]`.
    fn patch_embed(&mut self, img: &Self::T, w: &Self::T, b: &Self::T) -> Result<Self::T>;
    /// Tokens `[B, g * g, C]` as an image `[B, C, g, g]`.
    fn tokens_to_image(&mut self, x: &Self::T, g: usize) -> Result<Self::T>;
    fn conv2d(
        &mut self,
        x: &Self::T,
        w: &Self::T,
        b: &Self::T,
        stride: usize,
        pad: usize,
    ) -> Result<Self::T>;
    fn conv_transpose2d(
        &mut self,
        x: &Self::T,
        w: &Self::T,
        b: &Self::T,
        stride: usize,
        pad: usize,
    ) -> Result<Self::T>;
    /// Per-item mean squared error against `target` (one item's shape, or the same shape).
    fn mse_per_item(&mut self, a: &Self::T, target: &Self::T) -> Result<Self::T>;
    /// A one-element tensor `[1]`.
    fn scalar(&mut self, v: f32) -> Result<Self::T>;
    fn zeros(&mut self, shape: &[usize]) -> Result<Self::T>;
}

/// A device the model runs on.
pub trait Backend: Sync {
    type T: Clone + Send + Sync;
    type Linear: Sync;
    type Ops<'s>: Ops<T = Self::T, Linear = Self::Linear>
    where
        Self: 's;

    /// Start a unit of work (a recording on the GPU).
    fn ops(&self) -> Self::Ops<'_>;
    /// Finish it (submit on the GPU). The outputs are valid for later units.
    fn finish(&self, ops: Self::Ops<'_>) -> Result<()>;
    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<Self::T>;
    fn download(&self, t: &Self::T) -> Result<Vec<f32>>;
    fn dims(t: &Self::T) -> Vec<usize>;
    /// u8 frames to the encoder's input `[B, 3, S, S]` in [-1, 1]: [`preprocess`] on the
    /// host, then uploaded. The GPU overrides it to resize on the device from the packed u8
    /// frames (a quarter of the upload, no host pass).
    fn pixels(&self, frames: &Frames, cfg: &ModelConfig) -> Result<Self::T> {
        let px = preprocess(frames, cfg)?;
        let s = cfg.encoder.resize;
        self.upload(&px, &[frames.batch, 3, s, s])
    }
    /// Samples per encoder chunk, per predictor/rollout chunk and per decoder chunk of a
    /// batch of `b`.
    fn encoder_chunk(&self, cfg: &ModelConfig) -> usize;
    fn predictor_chunk(&self, cfg: &ModelConfig) -> usize;
    fn decoder_chunk(&self, b: usize) -> usize;
    /// The `(start, len)` spans a batch of `b` is rolled out in, at most `chunk` long:
    /// consecutive full chunks here; the CPU balances them over its threads.
    fn spans(&self, b: usize, chunk: usize) -> Vec<(usize, usize)> {
        let chunk = chunk.max(1);
        (0..b)
            .step_by(chunk)
            .map(|s| (s, chunk.min(b - s)))
            .collect()
    }
    /// `f` on every span, results in span order: one after another here (one recording on
    /// the GPU); the CPU runs them on parallel threads.
    fn map_spans<R: Send>(
        &self,
        spans: &[(usize, usize)],
        f: &(dyn Fn(usize, usize) -> Result<R> + Sync),
    ) -> Result<Vec<R>> {
        spans.iter().map(|&(s, l)| f(s, l)).collect()
    }
}
