//! Elementwise math of the inference path: the erf GELU (the WGSL kernel's formula) and the
//! exponential that it and the attention's softmax use, vectorised by blocks so that the
//! chains of dependent operations of several values overlap.

use std::mem::MaybeUninit;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::{filled, simd_dispatch, with_f32};
use crate::Result;

/// Erf GELU. Inference runs the WGSL kernel's formula (`erfc_approx`, fractional error below
/// 1.2e-7) in one parallel pass: candle's libm erf took a fifth of a CPU planning step.
/// Training graphs keep candle's op, which has a backward.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        return gelu_exact(x);
    }
    let v = with_f32(x, |xs| {
        filled(xs.len(), |v| {
            v.par_chunks_mut(1 << 14)
                .zip(xs.par_chunks(1 << 14))
                .for_each(|(c, xc)| gelu_slice(c, xc))
        })
    })?;
    Ok(Tensor::from_vec(v, x.dims(), &Device::Cpu)?)
}

simd_dispatch! {
    /// `y = gelu(y)` in place: [`gelu`]'s arithmetic (the same bits) for fused epilogues.
    pub(crate) fn gelu_in_place(y: &mut [f32]) = gelu_in_place_body
}

#[inline(always)]
fn gelu_in_place_body(y: &mut [f32]) {
    let (blocks, rest) = y.as_chunks_mut::<GELU_BLOCK>();
    let mut out = [0f32; GELU_BLOCK];
    for b in blocks {
        gelu_block(b, &mut out);
        *b = out;
    }
    for v in rest {
        *v = gelu_erfc(*v);
    }
}

/// GELU with libm's erf: the oracle the fast GELUs (CPU and WGSL) are tested against.
pub fn gelu_exact(x: &Tensor) -> Result<Tensor> {
    Ok(x.gelu_erf()?)
}

simd_dispatch! {
    /// `y = gelu(x)` elementwise, vectorised (the elementwise loops were a third of a CPU
    /// planning step on baseline x86-64).
    fn gelu_slice(y: &mut [MaybeUninit<f32>], x: &[f32]) = gelu_slice_body
}

#[inline(always)]
fn gelu_slice_body(y: &mut [MaybeUninit<f32>], x: &[f32]) {
    let (yb, yr) = y.as_chunks_mut::<GELU_BLOCK>();
    let (xb, xr) = x.as_chunks::<GELU_BLOCK>();
    let mut out = [0f32; GELU_BLOCK];
    for (y, x) in yb.iter_mut().zip(xb) {
        gelu_block(x, &mut out);
        for (y, v) in y.iter_mut().zip(&out) {
            y.write(*v);
        }
    }
    for (y, a) in yr.iter_mut().zip(xr) {
        y.write(gelu_erfc(*a));
    }
}

/// Values per [`gelu_block`].
const GELU_BLOCK: usize = 64;

/// [`gelu_erfc`] of a block, one step of the formula at a time over the whole block: a
/// value's GELU is a chain of ~45 dependent operations, and one value (vector) at a time ran
/// at the chain's latency (8.6 cycles a value on Zen 4); steps over four vectors interleave
/// four chains. Each value sees the same operations in the same order: the same bits.
#[inline(always)]
#[allow(clippy::excessive_precision)]
fn gelu_block(x: &[f32; GELU_BLOCK], y: &mut [f32; GELU_BLOCK]) {
    const N: usize = GELU_BLOCK;
    let (mut z, mut t, mut q) = ([0f32; N], [0f32; N], [0f32; N]);
    for i in 0..N {
        z[i] = (-x[i] * std::f32::consts::FRAC_1_SQRT_2).abs();
        t[i] = 1.0 / (1.0 + 0.5 * z[i]);
        q[i] = -0.82215223 + t[i] * 0.17087277;
    }
    for c in [
        1.48851587,
        -1.13520398,
        0.27886807,
        -0.18628806,
        0.09678418,
        0.37409196,
        1.00002368,
    ] {
        for i in 0..N {
            q[i] = c + t[i] * q[i];
        }
    }
    for i in 0..N {
        q[i] = -z[i] * z[i] - 1.26551223 + t[i] * q[i];
    }
    exp_block(&mut q);
    for i in 0..N {
        let r = t[i] * q[i];
        let u = -x[i] * std::f32::consts::FRAC_1_SQRT_2;
        y[i] = 0.5 * x[i] * if u >= 0.0 { r } else { 2.0 - r };
    }
}

/// `n` as an integer, for a whole `n` in [-126, 127] or NaN (the clamp in [`exp_fast`] passes
/// NaN through): NaN gives 0, and the result is NaN from `e` (a select rather than a
/// saturating cast, which stopped the block loops vectorising and doubled GELU's time).
#[inline(always)]
fn exponent(n: f32) -> i32 {
    let n = if n.is_nan() { 0.0 } else { n };
    // SAFETY: `n` is now finite and within [-126, 127].
    unsafe { n.to_int_unchecked() }
}

/// [`exp_fast`] in place, in blocks of 64 and 16 ([`exp_block`]); the same bits.
#[inline(always)]
pub(super) fn exp_slice(x: &mut [f32]) {
    let (b64, rest) = x.as_chunks_mut::<64>();
    for b in b64 {
        exp_block(b);
    }
    let (b16, rest) = rest.as_chunks_mut::<16>();
    for b in b16 {
        exp_block(b);
    }
    for v in rest {
        *v = exp_fast(*v);
    }
}

/// [`exp_fast`] in place over a block, a step at a time (see [`gelu_block`]): the same bits.
#[inline(always)]
fn exp_block<const N: usize>(x: &mut [f32; N]) {
    let (mut n, mut r, mut p) = ([0f32; N], [0f32; N], [0f32; N]);
    for i in 0..N {
        let v = x[i].clamp(-87.0, 88.0);
        n[i] = (v * EXP_LOG2E + EXP_ROUND) - EXP_ROUND;
        r[i] = v - n[i] * EXP_LN2_HI - n[i] * EXP_LN2_LO;
        p[i] = 1.987_569_1e-4 * r[i] + 1.398_199_9e-3;
    }
    for c in [8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
        for i in 0..N {
            p[i] = p[i] * r[i] + c;
        }
    }
    for i in 0..N {
        let e = p[i] * r[i] * r[i] + r[i] + 1.0;
        let k = exponent(n[i]);
        x[i] = e * f32::from_bits(((k + 127) as u32) << 23);
    }
}

/// `0.5 x erfc(-x / sqrt 2)` with Numerical Recipes' erfcc, as in shaders/elementwise.wgsl.
#[inline(always)]
fn gelu_erfc(x: f32) -> f32 {
    let u = -x * std::f32::consts::FRAC_1_SQRT_2;
    let z = u.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    // The shader's digits, so both parse to the same f32 constants.
    #[allow(clippy::excessive_precision)]
    let poly = -z * z - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807
                            + t * (-1.13520398
                                + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let r = t * exp_fast(poly);
    0.5 * x * if u >= 0.0 { r } else { 2.0 - r }
}

const EXP_LOG2E: f32 = std::f32::consts::LOG2_E;
const EXP_LN2_HI: f32 = 0.693_359_4;
const EXP_LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 * 2^23: adding and subtracting it rounds to the nearest integer without a libcall.
const EXP_ROUND: f32 = 12_582_912.0;

/// `e^x` for f32 with straight-line code that the compiler vectorises (std's `exp` is a libm
/// call per element, which was a sixth of a CPU planning step): Cody-Waite reduction to
/// |r| <= ln2/2, Cephes' degree-6 polynomial (about 1 ulp), and 2^n built from exponent bits.
/// Inputs are clamped to the finite range, so it returns a tiny normal instead of 0 below -87.
#[inline(always)]
fn exp_fast(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * EXP_LOG2E + EXP_ROUND) - EXP_ROUND;
    let r = x - n * EXP_LN2_HI - n * EXP_LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001e-1, which rounds to 0.5 in f32
    let e = p * r * r + r + 1.0;
    let n = exponent(n);
    e * f32::from_bits(((n + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::super::tests::random;
    use super::super::to_vec;
    use super::*;

    /// `exp_fast` within 2 ulp-ish (4e-7 relative) of std's exp over the range softmax and GELU use.
    #[test]
    fn exp_fast_matches_std() {
        let mut worst = 0f32;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let (f, e) = (exp_fast(x), x.exp());
            worst = worst.max((f - e).abs() / e);
        }
        assert!(worst <= 4e-7, "exp_fast: relative error {worst}");
        assert_eq!(exp_fast(0.0), 1.0);
        assert!(exp_fast(-1e4) >= 0.0 && exp_fast(-1e4) < 1e-37);
        assert!(exp_fast(f32::NAN).is_nan());
        let mut b = [f32::NAN; 16];
        exp_block(&mut b);
        assert!(b.iter().all(|v| v.is_nan()));
    }

    /// The block GELU (and so the block exp) gives the bits of one value at a time, on values
    /// across the whole range, the clamps of exp and non-finite inputs.
    #[test]
    fn gelu_blocks_give_the_same_bits() {
        let mut x = to_vec(&random(&[GELU_BLOCK * 40], -12.0, 12.0, 3)).unwrap();
        x.extend_from_slice(&[0.0, -0.0, 1e-30, -1e-30, 200.0, -200.0, f32::INFINITY]);
        x.extend_from_slice(&[f32::NEG_INFINITY, f32::NAN, 5.0]);
        x.resize(GELU_BLOCK * 41 + 7, 0.5);
        let mut y = vec![MaybeUninit::new(0f32); x.len()];
        gelu_slice(&mut y, &x);
        let mut z = x.clone();
        gelu_in_place(&mut z);
        for ((a, y), z) in x.iter().zip(&y).zip(&z) {
            // SAFETY: initialised above.
            let y = unsafe { y.assume_init() };
            assert_eq!(y.to_bits(), gelu_erfc(*a).to_bits(), "gelu_slice({a})");
            assert_eq!(z.to_bits(), gelu_erfc(*a).to_bits(), "gelu_in_place({a})");
        }
    }

    /// The fast GELU against libm's erf, elementwise and relative, including the negative
    /// tail where 1 + erf(x) is tiny.
    #[test]
    fn fast_gelu_matches_libm_erf() {
        let x = random(&[20_011], -12.0, 12.0, 9);
        let (fast, exact) = (
            to_vec(&gelu(&x).unwrap()).unwrap(),
            to_vec(&gelu_exact(&x).unwrap()).unwrap(),
        );
        for ((f, e), x) in fast.iter().zip(&exact).zip(to_vec(&x).unwrap()) {
            let tol = 2e-6 * e.abs() + 1e-30;
            assert!((f - e).abs() <= tol.max(1e-7), "gelu({x}) = {f}, libm {e}");
        }
    }
}
