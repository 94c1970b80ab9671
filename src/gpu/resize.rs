//! Launcher of `shaders/resize.wgsl`: u8 RGB frames uploaded as packed bytes and turned into
//! the encoder's f32 input on the GPU (scale to [-1, 1], HWC -> CHW, resize with or without
//! antialiasing). The CPU reference is `model::preprocess`; this layer takes plain numbers so
//! it does not depend on the model's types.

use bytemuck::{Pod, Zeroable};

use super::ops::grid_1d;
use super::{GpuContext, GpuTensor, Recorder};
use crate::{Error, Result};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ResizeParams {
    n: u32,
    h: u32,
    w: u32,
    s: u32,
    row_stride: u32,
    _p: [u32; 3],
}

/// Upload u8 HWC frames `[batch, h, w, 3]` as little-endian packed u32 words (the last word
/// zero-padded).
pub fn upload_frames(ctx: &GpuContext, bytes: &[u8]) -> Result<GpuTensor> {
    let words: Vec<u32> = bytes
        .chunks(4)
        .map(|c| {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(b)
        })
        .collect();
    let n = words.len();
    ctx.upload_u32(&words, &[n])
}

/// Frames (from [`upload_frames`]) `[batch, h, w, 3]` -> f32 `[batch, 3, s, s]` in [-1, 1].
pub fn preprocess(
    rec: &mut Recorder,
    frames: &GpuTensor,
    batch: usize,
    h: usize,
    w: usize,
    s: usize,
    antialias: bool,
) -> Result<GpuTensor> {
    let bytes = batch * h * w * 3;
    if frames.len() != bytes.div_ceil(4) {
        return Err(Error::Shape(format!(
            "resize: {} packed words given for {batch} frames of {h}x{w}x3 ({} words)",
            frames.len(),
            bytes.div_ceil(4)
        )));
    }
    if h == 0 || w == 0 || s == 0 {
        return Err(Error::Shape(format!(
            "resize: sizes must be > 0, got {h}x{w} -> {s}"
        )));
    }
    let y = rec.ctx().alloc(&[batch, 3, s, s])?;
    let n = y.len();
    if n == 0 {
        return Ok(y);
    }
    let fit = |v: usize, what: &str| {
        u32::try_from(v).map_err(|_| Error::Limit(format!("resize: {what} = {v} over 32 bits")))
    };
    fit(bytes, "input bytes")?;
    let wg = 256;
    let (groups, stride) = grid_1d(rec.ctx(), n, wg);
    let p = ResizeParams {
        n: fit(n, "output elements")?,
        h: fit(h, "height")?,
        w: fit(w, "width")?,
        s: fit(s, "output side")?,
        row_stride: stride,
        _p: [0; 3],
    };
    let pl = rec.ctx().pipelines.get(
        &rec.ctx().device,
        "resize",
        "preprocess",
        &[("WG", wg as f64), ("ANTIALIAS", antialias as u8 as f64)],
    )?;
    rec.dispatch_at(
        "resize",
        &pl,
        Some(bytemuck::bytes_of(&p)),
        &[(1, frames.buffer()), (2, y.buffer())],
        groups,
    )?;
    Ok(y)
}
