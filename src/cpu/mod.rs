//! CPU reference of every GPU op, on candle tensors.
//!
//! It is the oracle for the GPU parity tests and the `--backend cpu` path, so it computes in
//! f32 with the same formulas as the WGSL kernels (two-pass LayerNorm, erf GELU, max-shifted
//! softmax) and uses candle's multithreaded gemm for the matmuls.

use candle_core::{DType, Device, Tensor, D};
use rayon::prelude::*;

use crate::{Error, Result};

pub type CpuTensor = Tensor;

pub fn tensor(data: &[f32], shape: &[usize]) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    if n != data.len() {
        return Err(Error::Shape(format!(
            "{} values for shape {shape:?} ({n} elements)",
            data.len()
        )));
    }
    Ok(Tensor::from_slice(data, shape, &Device::Cpu)?)
}

pub fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

/// `Y[.., N] = X[.., K] W^T + b` with `W[N, K]`.
pub fn matmul(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = *dims
        .last()
        .ok_or_else(|| Error::Shape("matmul input is a scalar".into()))?;
    let (n, wk) = w.dims2()?;
    if wk != k {
        return Err(Error::Shape(format!(
            "matmul: input {dims:?} has K = {k} but weight [{n}, {wk}] has K = {wk}"
        )));
    }
    let m = x.elem_count() / k.max(1);
    let y = x.reshape((m, k))?.matmul(&w.t()?)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut out = dims;
    *out.last_mut().unwrap() = n;
    Ok(y.reshape(out)?)
}

/// LayerNorm over the last dimension (two-pass mean and variance, biased variance).
pub fn layernorm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
    if !(x.track_op() || gamma.track_op() || beta.track_op()) {
        return layernorm_rows(x, gamma, beta, eps);
    }
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (var + eps as f64)?.sqrt()?.recip()?;
    Ok(xc
        .broadcast_mul(&inv)?
        .broadcast_mul(gamma)?
        .broadcast_add(beta)?)
}

/// The same LayerNorm in one parallel pass over rows (inference: candle's composed ops cost
/// ten passes over the activations).
fn layernorm_rows(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let n = *dims.last().unwrap_or(&1);
    let (g, b) = (to_vec(gamma)?, to_vec(beta)?);
    if g.len() != n || b.len() != n {
        return Err(Error::Shape(format!(
            "layernorm: input {dims:?} has {n} features, gamma/beta have {}/{}",
            g.len(),
            b.len()
        )));
    }
    let mut v = to_vec(x)?;
    v.par_chunks_mut(n.max(1)).for_each(|row| {
        let mean = row.iter().sum::<f32>() / n as f32;
        let var = row.iter().map(|a| (a - mean) * (a - mean)).sum::<f32>() / n as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((a, g), b) in row.iter_mut().zip(&g).zip(&b) {
            *a = (*a - mean) * inv * g + b;
        }
    });
    Ok(Tensor::from_vec(v, dims, &Device::Cpu)?)
}

/// Exact erf GELU.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    Ok(x.gelu_erf()?)
}

pub fn relu(x: &Tensor) -> Result<Tensor> {
    Ok(x.relu()?)
}

pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dims() != b.dims() {
        return Err(Error::Shape(format!(
            "add: shapes {:?} and {:?} differ",
            a.dims(),
            b.dims()
        )));
    }
    Ok((a + b)?)
}

/// `a + scale * b`, `scale` per feature of the last dimension.
pub fn add_scaled(a: &Tensor, b: &Tensor, scale: &Tensor) -> Result<Tensor> {
    Ok((a + b.broadcast_mul(scale)?)?)
}

/// Softmax over the last dimension.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    // candle's fused softmax has no backward; training graphs take the composed one.
    if x.track_op() {
        Ok(candle_nn::ops::softmax(x, D::Minus1)?)
    } else {
        Ok(candle_nn::ops::softmax_last_dim(x)?)
    }
}

/// `y[r, t] = [x[r, t], v[r]]`; `x` is `[R, DX]` or `[R, T, DX]`, `v` is `[R, DT]`.
pub fn concat_tile(x: &Tensor, v: &Tensor) -> Result<Tensor> {
    match x.rank() {
        2 => Ok(Tensor::cat(&[x, v], 1)?),
        3 => {
            let (r, t, _) = x.dims3()?;
            let (_, dt) = v.dims2()?;
            let vt = v.unsqueeze(1)?.broadcast_as((r, t, dt))?;
            Ok(Tensor::cat(&[x, &vt], 2)?)
        }
        _ => Err(Error::Shape(format!(
            "concat_tile: x must be [R, D] or [R, T, D], got {:?}",
            x.dims()
        ))),
    }
}

pub fn slice_cols(x: &Tensor, col0: usize, width: usize) -> Result<Tensor> {
    Ok(x.narrow(D::Minus1, col0, width)?.contiguous()?)
}

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
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    let x = to_vec(qkv)?;
    let mut out = vec![0f32; b * t * hd];
    out.par_chunks_mut((t * hd).max(1))
        .zip(x.par_chunks(t * w))
        .for_each(|(ob, xb)| {
            let mut s = vec![0f32; t];
            for h in 0..heads {
                for i in 0..t {
                    let q = &xb[i * w + h * d..i * w + h * d + d];
                    let keys = frame_tokens.map_or(t, |p| ((i / p + 1) * p).min(t));
                    let mut m = f32::NEG_INFINITY;
                    for (j, sj) in s.iter_mut().enumerate().take(keys) {
                        let k = &xb[j * w + hd + h * d..j * w + hd + h * d + d];
                        let dot: f32 = q.iter().zip(k).map(|(a, b)| a * b).sum();
                        *sj = dot * scale;
                        m = m.max(*sj);
                    }
                    let mut sum = 0f32;
                    for sj in s.iter_mut().take(keys) {
                        *sj = (*sj - m).exp();
                        sum += *sj;
                    }
                    let o = &mut ob[i * hd + h * d..i * hd + h * d + d];
                    o.fill(0.0);
                    for (j, sj) in s.iter().enumerate().take(keys) {
                        let p = sj / sum;
                        let v = &xb[j * w + 2 * hd + h * d..j * w + 2 * hd + h * d + d];
                        for (oc, vc) in o.iter_mut().zip(v) {
                            *oc += p * vc;
                        }
                    }
                }
            }
        });
    Ok(Tensor::from_vec(out, (b, t, hd), &Device::Cpu)?)
}

/// Patch embedding: `img[B, C, H, W]`, `w[D, C, P, P]` -> `[B, (H/P)*(W/P), D]`.
pub fn patch_embed(img: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (_, _, p, _) = w.dims4()?;
    let y = img.conv2d(w, 0, p, 1, 1)?; // [B, D, GH, GW]
    let y = match b {
        Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?)?,
        None => y,
    };
    let (bn, d, gh, gw) = y.dims4()?;
    Ok(y.reshape((bn, d, gh * gw))?.transpose(1, 2)?.contiguous()?)
}

fn add_channel_bias(y: Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    Ok(match b {
        Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?)?,
        None => y,
    })
}

/// 2-D convolution, `w[CO, CI, K, K]`.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    add_channel_bias(x.conv2d(w, pad, stride, 1, 1)?, b)
}

/// Transposed 2-D convolution, `w[CI, CO, K, K]`.
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    add_channel_bias(x.conv_transpose2d(w, pad, 0, stride, 1)?, b)
}

/// Per-item MSE of `a[B, ...]` against a target of the same shape or of one item's shape.
pub fn mse_per_item(a: &Tensor, target: &Tensor) -> Result<Tensor> {
    let b = a.dim(0)?;
    let a2 = a.reshape((b, ()))?;
    let len = a2.dim(1)?;
    let t2 = if target.elem_count() == len {
        target.reshape((1, len))?
    } else {
        target.reshape((b, len))?
    };
    Ok(a2.broadcast_sub(&t2)?.sqr()?.mean(1)?)
}
