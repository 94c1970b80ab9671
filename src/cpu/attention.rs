//! Multi-head attention on the CPU: the composed candle ops that training differentiates,
//! and the inference path that computes each batch item's heads directly.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::{exp_slice, simd_dispatch, softmax, sum_lanes, with_f32};
use crate::{Error, Result};

/// Multi-head attention over packed `qkv[B, T, 3*H*D]`, optional frame-block-causal mask.
pub fn attention(qkv: &Tensor, heads: usize, frame_tokens: Option<usize>) -> Result<Tensor> {
    if !qkv.track_op() {
        return attention_rows(qkv, heads, frame_tokens);
    }
    let (b, t, w) = qkv.dims3()?;
    let d = w / (3 * heads);
    let qkv = qkv.reshape((b, t, 3, heads, d))?.permute((2, 0, 3, 1, 4))?;
    let q = qkv.get(0)?.contiguous()?;
    let k = qkv.get(1)?.contiguous()?;
    let v = qkv.get(2)?.contiguous()?;
    let scale = 1.0 / (d as f64).sqrt();
    let scores = (q.matmul(&k.t()?)? * scale)?; // [B, H, T, T]
    let scores = match frame_tokens {
        Some(p) => {
            let mask: Vec<f32> = (0..t * t)
                .map(|ij| {
                    let (i, j) = (ij / t, ij % t);
                    if j / p <= i / p {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect();
            let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu)?;
            scores.broadcast_add(&mask)?
        }
        None => scores,
    };
    let probs = softmax(&scores)?;
    let out = probs.matmul(&v)?; // [B, H, T, D]
    Ok(out.permute((0, 2, 1, 3))?.reshape((b, t, heads * d))?)
}

/// The same attention computed per batch item in parallel, one query row at a time, skipping
/// the masked keys (inference: the composed version materialises every score tensor).
fn attention_rows(qkv: &Tensor, heads: usize, frame_tokens: Option<usize>) -> Result<Tensor> {
    let (b, t, w) = qkv.dims3()?;
    if heads == 0 || w % (3 * heads) != 0 {
        return Err(Error::Shape(format!(
            "attention: width {w} is not 3 x {heads} heads x head_dim"
        )));
    }
    let d = w / (3 * heads);
    let hd = heads * d;
    let mut out = vec![0f32; b * t * hd];
    let shape = AttnShape {
        t,
        w,
        heads,
        d,
        frame_tokens,
    };
    with_f32(qkv, |x| {
        out.par_chunks_mut((t * hd).max(1))
            .zip(x.par_chunks(t * w))
            .for_each(|(ob, xb)| attention_item(ob, xb, &shape))
    })?;
    Ok(Tensor::from_vec(out, (b, t, hd), &Device::Cpu)?)
}

pub(super) struct AttnShape {
    pub(super) t: usize,
    pub(super) w: usize,
    pub(super) heads: usize,
    pub(super) d: usize,
    pub(super) frame_tokens: Option<usize>,
}

simd_dispatch! {
    /// One batch item's attention: `xb[t, 3 * heads * d]` -> `ob[t, heads * d]`, vectorised.
    pub(super) fn attention_item(ob: &mut [f32], xb: &[f32], shape: &AttnShape) = attention_item_body
}

/// Queries of one frame block computed together in [`attention_item_body`]: they share their
/// keys, and their dot products run as independent chains of adds over the same loads (one
/// query's 16-key score block or 16-channel output is one dependent chain, whose latency was
/// most of the attention time). Each query's sums keep their order: the same bits.
const QUERY_BLOCK: usize = 4;

#[inline(always)]
fn attention_item_body(ob: &mut [f32], xb: &[f32], shape: &AttnShape) {
    let AttnShape {
        t,
        w,
        heads,
        d,
        frame_tokens,
    } = *shape;
    let hd = heads * d;
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    let keys_of = |i: usize| frame_tokens.map_or(t, |p| ((i / p + 1) * p).min(t));
    // Keys padded to whole blocks of 16 (zeros), so scores are computed 16 at a time in
    // registers.
    let tp = t.next_multiple_of(16);
    let mut s = vec![0f32; QUERY_BLOCK * tp];
    // One head's keys transposed to [d, tp]: a query's scores then accumulate as contiguous,
    // vectorised rows, in the same order (c = 0..d) as a plain dot product.
    let mut kt = vec![0f32; d * tp];
    for h in 0..heads {
        // Sixteen keys at a time: their d values copied to a block, then written out column
        // by column (a key at a time, the compiler scattered each value: 10% of the
        // attention on Zen 4).
        let mut blk = [[0f32; 16]; 16];
        for j0 in (0..t).step_by(16) {
            let nj = 16.min(t - j0);
            for c0 in (0..d).step_by(16) {
                let nc = 16.min(d - c0);
                for (jj, row) in xb[j0 * w..].chunks_exact(w).take(nj).enumerate() {
                    let k0 = hd + h * d + c0;
                    blk[jj][..nc].copy_from_slice(&row[k0..k0 + nc]);
                }
                for c in 0..nc {
                    let col = &mut kt[(c0 + c) * tp + j0..(c0 + c) * tp + j0 + nj];
                    for (jj, v) in col.iter_mut().enumerate() {
                        *v = blk[jj][c];
                    }
                }
            }
        }
        let mut i = 0;
        while i < t {
            let keys = keys_of(i);
            let q = |i: usize| &xb[i * w + h * d..i * w + h * d + d];
            if d % 16 == 0 && i + QUERY_BLOCK <= t && keys_of(i + QUERY_BLOCK - 1) == keys {
                let qs: [&[f32]; QUERY_BLOCK] = std::array::from_fn(|g| q(i + g));
                for j0 in (0..keys).step_by(16) {
                    let mut acc = [[0f32; 16]; QUERY_BLOCK];
                    for c in 0..d {
                        let k = &kt[c * tp + j0..c * tp + j0 + 16];
                        for (a, qg) in acc.iter_mut().zip(&qs) {
                            let qc = qg[c];
                            for (a, kj) in a.iter_mut().zip(k) {
                                *a += qc * kj;
                            }
                        }
                    }
                    for (g, a) in acc.iter().enumerate() {
                        s[g * tp + j0..g * tp + j0 + 16].copy_from_slice(a);
                    }
                }
                softmax_rows(&mut s, tp, keys, scale);
                for c0 in (0..d).step_by(16) {
                    let mut acc = [[0f32; 16]; QUERY_BLOCK];
                    for j in 0..keys {
                        let v0 = j * w + 2 * hd + h * d + c0;
                        let v = &xb[v0..v0 + 16];
                        for (g, a) in acc.iter_mut().enumerate() {
                            let p = s[g * tp + j];
                            for (a, vc) in a.iter_mut().zip(v) {
                                *a += p * vc;
                            }
                        }
                    }
                    for (g, a) in acc.iter().enumerate() {
                        let o = (i + g) * hd + h * d + c0;
                        ob[o..o + 16].copy_from_slice(a);
                    }
                }
                i += QUERY_BLOCK;
                continue;
            }
            // One query alone (a block's queries straddle a frame, the last few, or d is not
            // a multiple of 16).
            one_query(ob, xb, shape, &kt, &mut s, h, i);
            i += 1;
        }
    }
}

/// Attention of query `i` in head `h` alone, on the head's transposed keys `kt` (`[d, tp]`)
/// with `s` as its score row.
#[inline(always)]
pub(super) fn one_query(
    ob: &mut [f32],
    xb: &[f32],
    shape: &AttnShape,
    kt: &[f32],
    s: &mut [f32],
    h: usize,
    i: usize,
) {
    let AttnShape {
        t,
        w,
        heads,
        d,
        frame_tokens,
    } = *shape;
    let (hd, tp) = (heads * d, t.next_multiple_of(16));
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    let keys = frame_tokens.map_or(t, |p| ((i / p + 1) * p).min(t));
    let q = &xb[i * w + h * d..i * w + h * d + d];
    for j0 in (0..keys).step_by(16) {
        let mut acc = [0f32; 16];
        for (c, &qc) in q.iter().enumerate() {
            let k = &kt[c * tp + j0..c * tp + j0 + 16];
            for (a, kj) in acc.iter_mut().zip(k) {
                *a += qc * kj;
            }
        }
        s[j0..j0 + 16].copy_from_slice(&acc);
    }
    let s = &mut s[..keys];
    softmax_row(s, scale);
    let o = &mut ob[i * hd + h * d..i * hd + h * d + d];
    if d % 16 == 0 {
        // 16 outputs at a time in registers, each summed over keys in order as below.
        for c0 in (0..d).step_by(16) {
            let mut acc = [0f32; 16];
            for (j, &p) in s.iter().enumerate() {
                let v0 = j * w + 2 * hd + h * d + c0;
                for (a, vc) in acc.iter_mut().zip(&xb[v0..v0 + 16]) {
                    *a += p * vc;
                }
            }
            o[c0..c0 + 16].copy_from_slice(&acc);
        }
        return;
    }
    o.fill(0.0);
    for (j, &p) in s.iter().enumerate() {
        let v = &xb[j * w + 2 * hd + h * d..j * w + 2 * hd + h * d + d];
        for (oc, vc) in o.iter_mut().zip(v) {
            *oc += p * vc;
        }
    }
}

/// [`softmax_row`] of the first `keys` scores of each row of `s` (rows of `tp`), with the
/// exponentials of all rows computed together ([`exp_slice`]: a row of Wall's predictor is
/// one to three vectors, too short a chain to hide exp's latency). The same bits.
#[inline(always)]
fn softmax_rows(s: &mut [f32], tp: usize, keys: usize, scale: f32) {
    let mut inv = [0f32; QUERY_BLOCK];
    for row in s.chunks_exact_mut(tp) {
        let m = scaled_max(&mut row[..keys], scale);
        for sj in &mut row[..keys] {
            *sj -= m;
        }
        // The padding exponentiates to 1 and is not read.
        row[keys..].fill(0.0);
    }
    exp_slice(s);
    for (row, inv) in s.chunks_exact_mut(tp).zip(&mut inv) {
        *inv = 1.0 / sum_lanes(&row[..keys]);
    }
    for (row, inv) in s.chunks_exact_mut(tp).zip(&inv) {
        for sj in &mut row[..keys] {
            *sj *= inv;
        }
    }
}

/// `s *= scale` and the maximum of `s` (blocks of 16 keep the running maxima in one register;
/// maxima are exact, so the order does not matter). The lanes are folded in order: a tree
/// fold, as in `qint::min_max`, made the compiler split this loop into 4-lane pieces and the
/// W8A8t step 5% slower.
#[inline(always)]
fn scaled_max(s: &mut [f32], scale: f32) -> f32 {
    let mut ml = [f32::NEG_INFINITY; 16];
    let mut blocks = s.chunks_exact_mut(16);
    for c in &mut blocks {
        for (sj, m) in c.iter_mut().zip(ml.iter_mut()) {
            *sj *= scale;
            *m = if *sj > *m { *sj } else { *m };
        }
    }
    for (sj, m) in blocks.into_remainder().iter_mut().zip(ml.iter_mut()) {
        *sj *= scale;
        *m = if *sj > *m { *sj } else { *m };
    }
    ml.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b))
}

/// Scaled scores to probabilities in place: `s * scale`, minus the maximum, exponentiated and
/// normalised.
#[inline(always)]
fn softmax_row(s: &mut [f32], scale: f32) {
    let m = scaled_max(s, scale);
    for sj in s.iter_mut() {
        *sj -= m;
    }
    exp_slice(s);
    let inv = 1.0 / sum_lanes(s);
    for sj in s.iter_mut() {
        *sj *= inv;
    }
}
