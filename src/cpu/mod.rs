//! CPU reference of every GPU op, on candle tensors.
//!
//! It is the oracle for the GPU parity tests and the `--backend cpu` path, so it computes in
//! f32 with the same formulas as the WGSL kernels (two-pass LayerNorm, erf GELU, max-shifted
//! softmax) and uses candle's multithreaded gemm for the matmuls.

use candle_core::{DType, Device, Tensor, D};

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
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (var + eps as f64)?.sqrt()?.recip()?;
    Ok(xc
        .broadcast_mul(&inv)?
        .broadcast_mul(gamma)?
        .broadcast_add(beta)?)
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
    Ok(candle_nn::ops::softmax_last_dim(x)?)
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
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let out = probs.matmul(&v)?; // [B, H, T, D]
    Ok(out.permute((0, 2, 1, 3))?.reshape((b, t, heads * d))?)
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
