//! CPU reference of every GPU op, on candle tensors.
//!
//! It is the oracle for the GPU parity tests and the `--backend cpu` path, so it computes in
//! f32 with the same formulas as the WGSL kernels (two-pass LayerNorm, erf GELU, max-shifted
//! softmax) and uses candle's multithreaded gemm for the matmuls.

mod attention;
mod elementwise;
mod linear;
mod qgroups;
mod qint;
mod qkernels;
pub mod qlinear;

pub use attention::attention;
use elementwise::exp_slice;
pub(crate) use elementwise::gelu_in_place;
pub use elementwise::{gelu, gelu_exact};

pub use linear::{
    linear, linear_then, matmul, packed_linear, packed_linear_then, then_composed, Then,
};

/// `fn $name(args) = $body`: calls `$body(args)` compiled for AVX-512 (F/BW/VL) or AVX2 when
/// the CPU has them (`qlinear::Isa::detect`, capped by `QWM_CPU_ISA`), else for the release
/// build's baseline x86-64 (SSE2). `$body` is `#[inline(always)]` so that it is compiled into
/// each variant. The compiler contracts no multiply-add into an FMA and reassociates no float
/// sum, so every variant gives the same bits; only the vector width differs.
macro_rules! simd_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),*) $(-> $r:ty)? = $body:ident) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
                fn v4($($a: $t),*) $(-> $r)? {
                    $body($($a),*)
                }
                // FMA with AVX2 (as `Isa::Avx2` requires): `mul_add` is an instruction
                // rather than a libm call (the same correctly rounded result).
                #[target_feature(enable = "avx2,fma")]
                fn v3($($a: $t),*) $(-> $r)? {
                    $body($($a),*)
                }
                match $crate::cpu::qlinear::Isa::detect() {
                    // SAFETY: `Isa::detect` reports only features the CPU has.
                    $crate::cpu::qlinear::Isa::Avx512 => return unsafe { v4($($a),*) },
                    $crate::cpu::qlinear::Isa::Avx2 => return unsafe { v3($($a),*) },
                    $crate::cpu::qlinear::Isa::Portable => {}
                }
            }
            $body($($a),*)
        }
    };
}
pub(crate) use simd_dispatch;

use std::mem::MaybeUninit;

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

/// Calls `f` on a tensor's f32 values in row-major order without copying them when it is a
/// contiguous f32 CPU tensor (the inference ops' inputs always are); copies otherwise.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    if t.dtype() == DType::F32 && t.is_contiguous() {
        let (storage, layout) = t.storage_and_layout();
        if let candle_core::Storage::Cpu(cpu) = &*storage {
            let start = layout.start_offset();
            return Ok(f(&cpu.as_slice::<f32>()?[start..start + t.elem_count()]));
        }
    }
    Ok(f(&to_vec(t)?))
}

/// A vector of `len` values that `fill` writes every one of, without zeroing it first (the
/// zeroing was ~4% of a CPU planning step, for outputs that are overwritten anyway).
pub(crate) fn filled(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: callers' `fill` writes every element of the slice it is given.
    unsafe { v.set_len(len) };
    v
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
    let rows = (4096 / n.max(1)).max(1) * n.max(1);
    let v = with_f32(x, |xs| {
        filled(xs.len(), |v| {
            v.par_chunks_mut(rows)
                .zip(xs.par_chunks(rows))
                .for_each(|(y, x)| layernorm_chunk(y, x, &g, &b, eps))
        })
    })?;
    Ok(Tensor::from_vec(v, dims, &Device::Cpu)?)
}

simd_dispatch! {
    /// LayerNorm of whole rows of `g.len()` features.
    fn layernorm_chunk(y: &mut [MaybeUninit<f32>], x: &[f32], g: &[f32], b: &[f32], eps: f32) =
        layernorm_chunk_body
}

#[inline(always)]
fn layernorm_chunk_body(y: &mut [MaybeUninit<f32>], x: &[f32], g: &[f32], b: &[f32], eps: f32) {
    let n = g.len();
    for (row, xr) in y.chunks_mut(n).zip(x.chunks(n)) {
        let mean = sum_lanes(xr) / n as f32;
        // The squared deviations' sum in the same eight lanes as `sum_lanes`.
        let mut acc = [0f32; 8];
        let chunks = xr.chunks_exact(8);
        let tail: f32 = chunks
            .remainder()
            .iter()
            .map(|a| (a - mean) * (a - mean))
            .sum();
        for c in chunks {
            for (s, a) in acc.iter_mut().zip(c) {
                *s += (a - mean) * (a - mean);
            }
        }
        let var = (acc.iter().sum::<f32>() + tail) / n as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (((y, a), g), b) in row.iter_mut().zip(xr).zip(g).zip(b) {
            y.write((*a - mean) * inv * g + b);
        }
    }
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
    if x.rank() == 3
        && v.rank() == 2
        && x.elem_count() > 0
        && v.elem_count() > 0
        && !(x.track_op() || v.track_op())
    {
        return concat_tile_rows(x, v);
    }
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

/// [`concat_tile`] of `[R, T, D]` and `[R, E]` as row copies (inference: candle's strided
/// copy of the broadcast was ~3% of a W8A8t planning step).
fn concat_tile_rows(x: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (r, t, d) = x.dims3()?;
    let (rv, e) = v.dims2()?;
    if rv != r {
        return Err(Error::Shape(format!(
            "concat_tile: x {:?} and v {:?} differ in rows",
            x.dims(),
            v.dims()
        )));
    }
    let w = d + e;
    let out = with_f32(x, |xs| {
        with_f32(v, |vs| {
            filled(r * t * w, |o| {
                o.par_chunks_mut(t * w)
                    .zip(xs.par_chunks(t * d))
                    .zip(vs.par_chunks(e))
                    .for_each(|((o, x), v)| {
                        for (o, x) in o.chunks_exact_mut(w).zip(x.chunks_exact(d)) {
                            write_row(&mut o[..d], x);
                            write_row(&mut o[d..], v);
                        }
                    })
            })
        })
    })??;
    Ok(Tensor::from_vec(out, (r, t, w), &Device::Cpu)?)
}

fn write_row(o: &mut [MaybeUninit<f32>], x: &[f32]) {
    for (o, x) in o.iter_mut().zip(x) {
        o.write(*x);
    }
}

/// `parts` (`[B, T_i, W]`) concatenated along tokens: `[B, sum T_i, W]`, as row copies when
/// no part records a graph (candle's cat was ~3% of a W8A8t planning step).
pub fn cat_tokens(parts: &[Tensor]) -> Result<Tensor> {
    let plain =
        |p: &Tensor| !p.track_op() && p.rank() == 3 && p.dtype() == DType::F32 && p.is_contiguous();
    if parts.is_empty() || !parts.iter().all(plain) || parts.iter().any(|p| p.elem_count() == 0) {
        return Ok(Tensor::cat(parts, 1)?);
    }
    let (b, _, w) = parts[0].dims3()?;
    let mut t = 0;
    for p in parts {
        let (pb, pt, pw) = p.dims3()?;
        if (pb, pw) != (b, w) {
            return Err(Error::Shape(format!(
                "cat_tokens: parts {:?} and {:?} differ in batch or width",
                parts[0].dims(),
                p.dims()
            )));
        }
        t += pt;
    }
    // The parts' storage, read in place (each is contiguous f32, checked above).
    let held: Vec<_> = parts.iter().map(|p| p.storage_and_layout()).collect();
    let mut data = Vec::with_capacity(parts.len());
    for (p, (storage, layout)) in parts.iter().zip(&held) {
        let candle_core::Storage::Cpu(cpu) = &**storage else {
            return Ok(Tensor::cat(parts, 1)?);
        };
        let start = layout.start_offset();
        data.push(&cpu.as_slice::<f32>()?[start..start + p.elem_count()]);
    }
    let out = filled(b * t * w, |o| {
        o.par_chunks_mut(t * w).enumerate().for_each(|(i, o)| {
            let mut at = 0;
            for d in &data {
                let n = d.len() / b;
                write_row(&mut o[at..at + n], &d[i * n..(i + 1) * n]);
                at += n;
            }
        })
    });
    Ok(Tensor::from_vec(out, (b, t, w), &Device::Cpu)?)
}

/// `x [B, T, D] + pos[0, :T, :]`. Without a graph, rows added on rayon's threads: candle's
/// broadcast add runs on its own spinning thread pool, which at 2 threads took ~8% of a
/// W8A8t planning step from rayon's (the same one addition per value: the same bits).
pub fn add_positions(x: &Tensor, pos: &Tensor) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    let p = pos.narrow(1, 0, t)?;
    if x.track_op() || pos.track_op() || p.dims() != [1, t, d] || x.elem_count() == 0 {
        return Ok(x.broadcast_add(&p)?);
    }
    let out = with_f32(x, |xs| {
        with_f32(&p, |ps| {
            filled(b * t * d, |o| {
                o.par_chunks_mut(t * d)
                    .zip(xs.par_chunks(t * d))
                    .for_each(|(o, x)| {
                        for ((o, x), p) in o.iter_mut().zip(x).zip(ps) {
                            o.write(x + p);
                        }
                    })
            })
        })
    })??;
    Ok(Tensor::from_vec(out, (b, t, d), &Device::Cpu)?)
}

pub fn slice_cols(x: &Tensor, col0: usize, width: usize) -> Result<Tensor> {
    Ok(x.narrow(D::Minus1, col0, width)?.contiguous()?)
}

/// A sum with eight partial accumulators, so that it vectorises.
#[inline(always)]
pub(super) fn sum_lanes(v: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + tail
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

#[cfg(test)]
mod tests {
    use super::attention::{attention_item, one_query, AttnShape};
    use super::*;
    use candle_core::Var;
    use rand::{Rng, SeedableRng};

    pub(super) fn random(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
        tensor(&v, shape).unwrap()
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let (a, b) = (to_vec(a).unwrap(), to_vec(b).unwrap());
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
        a.iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs() / scale))
    }

    /// The inference attention (transposed keys, masked keys skipped) against candle's composed
    /// ops, which training differentiates: odd token counts, frames that do not divide them.
    #[test]
    fn attention_rows_match_composed_ops() {
        for (b, t, heads, d, frame) in [
            (3, 48, 4, 16, Some(16)),
            (2, 17, 4, 16, None),
            (1, 37, 3, 5, Some(7)),
        ] {
            let qkv = random(&[b, t, 3 * heads * d], -2.0, 2.0, t as u64);
            let fast = attention(&qkv, heads, frame).unwrap();
            let tracked = Var::from_tensor(&qkv).unwrap();
            assert!(tracked.as_tensor().track_op());
            let slow = attention(tracked.as_tensor(), heads, frame).unwrap();
            let err = max_rel(&fast, &slow);
            assert!(err <= 1e-5, "attention {b}x{t}x{heads}x{d}: rel err {err}");
        }
    }

    /// Every query of every head on its own ([`one_query`], the attention before query
    /// blocks): the blocked computation must give the same bits.
    fn attention_item_one_query(ob: &mut [f32], xb: &[f32], shape: &AttnShape) {
        let (t, w, d) = (shape.t, shape.w, shape.d);
        let hd = shape.heads * d;
        let tp = t.next_multiple_of(16);
        let (mut kt, mut s) = (vec![0f32; d * tp], vec![0f32; tp]);
        for h in 0..shape.heads {
            for j in 0..t {
                for c in 0..d {
                    kt[c * tp + j] = xb[j * w + hd + h * d + c];
                }
            }
            for i in 0..t {
                one_query(ob, xb, shape, &kt, &mut s, h, i);
            }
        }
    }

    #[test]
    fn query_blocks_give_the_same_bits() {
        for (t, heads, d, frame) in [
            (48, 4, 16, Some(16)),
            (17, 4, 16, None),
            (37, 3, 5, Some(7)),
            (23, 2, 32, Some(5)),
            (30, 2, 16, Some(6)),
            (3, 1, 16, Some(2)),
        ] {
            let w = 3 * heads * d;
            let x = to_vec(&random(&[t, w], -3.0, 3.0, (t * d) as u64)).unwrap();
            let shape = AttnShape {
                t,
                w,
                heads,
                d,
                frame_tokens: frame,
            };
            let (mut a, mut b) = (vec![0f32; t * heads * d], vec![0f32; t * heads * d]);
            attention_item(&mut a, &x, &shape);
            attention_item_one_query(&mut b, &x, &shape);
            let same = a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits());
            assert!(
                same,
                "attention {t}x{heads}x{d} {frame:?}: blocked differs from per-query"
            );
        }
    }

    /// The row-copy concatenations and the position add give candle's values, including on
    /// a non-contiguous input.
    #[test]
    fn copies_match_candles_concatenations() {
        let x = random(&[3, 5, 7], -1.0, 1.0, 1);
        let v = random(&[3, 4], -1.0, 1.0, 2);
        let vt = v.unsqueeze(1).unwrap().broadcast_as((3, 5, 4)).unwrap();
        let want = Tensor::cat(&[&x, &vt], 2).unwrap();
        assert_eq!(
            to_vec(&concat_tile(&x, &v).unwrap()).unwrap(),
            to_vec(&want).unwrap()
        );
        let xt = random(&[3, 7, 5], -1.0, 1.0, 3).transpose(1, 2).unwrap();
        let want = Tensor::cat(&[&xt, &vt], 2).unwrap();
        assert_eq!(
            to_vec(&concat_tile(&xt, &v).unwrap()).unwrap(),
            to_vec(&want).unwrap()
        );
        let parts = [
            random(&[2, 3, 6], -1.0, 1.0, 4),
            random(&[2, 1, 6], -1.0, 1.0, 5),
            random(&[2, 4, 6], -1.0, 1.0, 6),
        ];
        let got = cat_tokens(&parts).unwrap();
        assert_eq!(got.dims(), [2, 8, 6]);
        assert_eq!(
            to_vec(&got).unwrap(),
            to_vec(&Tensor::cat(&parts, 1).unwrap()).unwrap()
        );
        let pos = random(&[1, 9, 6], -1.0, 1.0, 8);
        let want = parts[0]
            .broadcast_add(&pos.narrow(1, 0, 3).unwrap())
            .unwrap();
        let got = add_positions(&parts[0], &pos).unwrap();
        assert_eq!(to_vec(&got).unwrap(), to_vec(&want).unwrap());
        let odd = [parts[0].clone(), random(&[2, 3, 5], -1.0, 1.0, 7)];
        assert!(cat_tokens(&odd).is_err());
    }
}
