//! Frame preprocessing, the CPU reference: u8 RGB HWC frames -> f32 `[B, 3, S, S]` in [-1, 1],
//! resized to the encoder's input side with the filter the model was trained with
//! ([`ResizeFilter`]). The resize is separable and written as per-axis taps (source index,
//! weight) so both filters share one loop; `shaders/resize.wgsl` computes the same taps on the
//! GPU.

use super::{Frames, ModelConfig, ResizeFilter};
use crate::{Error, Result};

/// The source pixels and weights of each output index along one axis, in PyTorch's
/// conventions (half-pixel centres, `align_corners=False`, scale `n_in / n_out`).
pub fn resize_taps(n_in: usize, n_out: usize, filter: ResizeFilter) -> Vec<Vec<(usize, f32)>> {
    match filter {
        ResizeFilter::Bilinear => {
            // Kept in exactly this form: qwm's shipped models were trained and evaluated with it.
            let scale = n_in as f32 / n_out as f32;
            (0..n_out)
                .map(|o| {
                    let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
                    let i0 = (src.floor() as usize).min(n_in - 1);
                    let i1 = (i0 + 1).min(n_in - 1);
                    let f = src - i0 as f32;
                    vec![(i0, 1.0 - f), (i1, f)]
                })
                .collect()
        }
        ResizeFilter::BilinearAntialias => {
            // PyTorch's `_upsample_bilinear2d_aa` (what torchvision's Resize calls): a triangle
            // filter stretched by the scale when shrinking (support = scale, else 1), over the
            // source pixels whose centres it covers, weights normalized to sum 1. When
            // enlarging it reduces to plain bilinear.
            let scale = n_in as f64 / n_out as f64;
            let (support, inv) = if scale >= 1.0 {
                (scale, 1.0 / scale)
            } else {
                (1.0, 1.0)
            };
            (0..n_out)
                .map(|o| {
                    let center = scale * (o as f64 + 0.5);
                    // `as i64` truncates toward zero, as the C++ cast does.
                    let lo = ((center - support + 0.5) as i64).max(0) as usize;
                    let hi = ((center + support + 0.5) as i64).min(n_in as i64) as usize;
                    let w: Vec<f64> = (lo..hi)
                        .map(|j| (1.0 - ((j as f64 - center + 0.5) * inv).abs()).max(0.0))
                        .collect();
                    let total: f64 = w.iter().sum();
                    let norm = if total != 0.0 { 1.0 / total } else { 0.0 };
                    (lo..hi)
                        .zip(w)
                        .map(|(j, w)| (j, (w * norm) as f32))
                        .collect()
                })
                .collect()
        }
    }
}

/// The frames are the size the model was trained on.
pub(crate) fn check_frames(frames: &Frames, cfg: &ModelConfig) -> Result<()> {
    let s_in = cfg.image_size;
    if frames.height != s_in || frames.width != s_in {
        return Err(Error::Shape(format!(
            "frames are {}x{} but the model '{}' expects {s_in}x{s_in} RGB frames",
            frames.height, frames.width, cfg.name
        )));
    }
    Ok(())
}

/// u8 HWC frames -> f32 `[B, 3, S, S]` in [-1, 1] (x / 255 * 2 - 1), resized to
/// `S = encoder.resize` with `encoder.resize_filter`: rows first, then columns (as PyTorch's
/// separable antialiased kernel does; for plain bilinear the order gives the same numbers as
/// interpolating the two rows and then between them).
pub fn preprocess(frames: &Frames, cfg: &ModelConfig) -> Result<Vec<f32>> {
    check_frames(frames, cfg)?;
    let s = cfg.encoder.resize;
    let (h, w) = (frames.height, frames.width);
    let ty = resize_taps(h, s, cfg.encoder.resize_filter);
    let tx = resize_taps(w, s, cfg.encoder.resize_filter);
    let mut out = vec![0f32; frames.batch * 3 * s * s];
    let mut rows = vec![0f32; h * s];
    for b in 0..frames.batch {
        let img = &frames.data[b * h * w * 3..(b + 1) * h * w * 3];
        let px = |y: usize, x: usize, c: usize| img[(y * w + x) * 3 + c] as f32 / 255.0 * 2.0 - 1.0;
        for c in 0..3 {
            // Horizontal pass over every source row: rows[y, ox].
            for y in 0..h {
                for (ox, taps) in tx.iter().enumerate() {
                    let mut acc = 0f32;
                    for &(x, wt) in taps {
                        acc += px(y, x, c) * wt;
                    }
                    rows[y * s + ox] = acc;
                }
            }
            // Vertical pass.
            let dst = &mut out[(b * 3 + c) * s * s..(b * 3 + c + 1) * s * s];
            for (oy, taps) in ty.iter().enumerate() {
                for ox in 0..s {
                    let mut acc = 0f32;
                    for &(y, wt) in taps {
                        acc += rows[y * s + ox] * wt;
                    }
                    dst[oy * s + ox] = acc;
                }
            }
        }
    }
    Ok(out)
}

/// The inverse of [`preprocess`] for one decoded image: f32 `[3, h, w]` in [-1, 1] to RGB
/// u8 HWC (`(x + 1) * 127.5`, rounded and clamped).
pub fn postprocess(px: &[f32], h: usize, w: usize) -> Vec<u8> {
    let mut data = vec![0u8; h * w * 3];
    for y in 0..h {
        for x in 0..w {
            for ch in 0..3 {
                let v = px[(ch * h + y) * w + x];
                data[(y * w + x) * 3 + ch] = ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    data
}
