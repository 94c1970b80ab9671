//! Packed quantized linears on the CPU: `y = x W^T + b` straight from the packed format the
//! GPU reads (`quant::pack`: bit-plane codes in u32, f16 scales, zero points, per row or per
//! group), never holding an f32 copy of `W`.
//!
//! Shape of the work: rayon splits the tokens (rows of `x`) into chunks; each chunk walks the
//! output rows in blocks of [`NB`], decoding that block's codes into a small L1-sized buffer
//! once and dotting it with every token of the chunk, so decoding costs `1 / chunk` of the
//! arithmetic. Two numerics:
//! - activation-quantized specs (A8 and below): the inputs become unsigned codes exactly as
//!   `quant::act` defines them (dynamic per token, or the static per-tensor range), and each
//!   group's dot is `sum (a - za) (c - z)` in i32, scaled by `s_w * s_a` in f32. Integer sums
//!   are exact, so the AVX2 kernel and the portable one give identical results.
//! - weight-only specs: a block decodes to the exact f32 values of `PackedWeight::dequantize`
//!   (`(c - z) * s`) and is dotted in f32 (FMA under AVX2; portable sums in the same 8-lane
//!   order, differing from AVX2 only by FMA rounding).
//!
//! AVX2 (+FMA) is chosen at run time with `is_x86_feature_detected!`; `QWM_CPU_PORTABLE=1`
//! forces the portable kernels (tests compare both).

use rayon::prelude::*;

use crate::quant::{ActParams, ActSpec, PackedWeight};
use crate::{Error, Result};

/// Output rows decoded per block (4 dots share each activation load).
const NB: usize = 4;

/// Which kernels run: AVX2/FMA when the CPU has them, else portable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Portable,
    Avx2,
}

impl Isa {
    /// The best kernels this CPU runs (portable when `QWM_CPU_PORTABLE` is set).
    pub fn detect() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            if std::env::var_os("QWM_CPU_PORTABLE").is_some() {
                return Isa::Portable;
            }
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
            Isa::Portable
        })
    }
}

/// Activation quantization of a packed linear: the spec and, for static specs, the calibrated
/// per-tensor parameters.
pub type ActQuant<'a> = (&'a ActSpec, Option<&'a ActParams>);

/// `y[M, N] = x[M, K] W^T + b` on packed `w` (`x` row-major, `M = x.len() / K`).
pub fn qlinear(
    x: &[f32],
    w: &PackedWeight,
    bias: Option<&[f32]>,
    act: Option<ActQuant<'_>>,
    isa: Isa,
) -> Result<Vec<f32>> {
    let (n, k) = (w.n, w.k);
    if k == 0 || !x.len().is_multiple_of(k) {
        return Err(Error::Shape(format!(
            "packed linear [{n}, {k}]: input of {} values is not rows of {k}",
            x.len()
        )));
    }
    if let Some(b) = bias {
        if b.len() != n {
            return Err(Error::Shape(format!(
                "packed linear [{n}, {k}]: bias has {} values",
                b.len()
            )));
        }
    }
    let static_params = match act {
        Some((spec, p)) if !spec.dynamic => Some(*p.ok_or_else(|| {
            Error::Invalid("static activation quantization needs calibrated params".into())
        })?),
        _ => None,
    };
    let m = x.len() / k;
    let mut y = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return Ok(y);
    }
    // Enough chunks for every thread, each long enough to amortize decoding.
    let threads = rayon::current_num_threads().max(1);
    let mc = m.div_ceil(threads * 2).clamp(1, 256);
    y.par_chunks_mut(mc * n)
        .zip(x.par_chunks(mc * k))
        .for_each(|(yc, xc)| match act {
            Some((spec, _)) => int_chunk(xc, yc, w, bias, spec, static_params, isa),
            None => f32_chunk(xc, yc, w, bias, isa),
        });
    Ok(y)
}

/// The codes of row `r` (all planes), `k_pad` of them, each passed to `put(k, code)`.
fn decode_row(w: &PackedWeight, r: usize, mut put: impl FnMut(usize, u32)) {
    let mut shift = 0;
    for (p, wpr, off) in w.plane_layout() {
        let cpw = 32 / p as usize;
        let mask = (1u32 << p) - 1;
        for (wi, &word) in w.codes[off + r * wpr..off + (r + 1) * wpr]
            .iter()
            .enumerate()
        {
            for j in 0..cpw {
                put(wi * cpw + j, ((word >> (j as u32 * p)) & mask) << shift);
            }
        }
        shift += p;
    }
}

/// Group `g`'s span of a padded row: the last group runs to `k_pad` (padding decodes to 0).
fn group_span(w: &PackedWeight, g: usize) -> (usize, usize) {
    let gpr = w.groups_per_row();
    let end = if g + 1 == gpr {
        w.k_pad()
    } else {
        (g + 1) * w.group
    };
    (g * w.group, end)
}

/// Row `r` of `w` as f32 into `row` (`k_pad` long, padding 0): bit for bit the values of
/// [`PackedWeight::dequantize`]. `codes` is scratch of `k_pad`.
pub fn decode_row_f32(w: &PackedWeight, r: usize, codes: &mut [u32], row: &mut [f32]) {
    codes.iter_mut().for_each(|c| *c = 0);
    decode_row(w, r, |kk, c| codes[kk] |= c);
    for g in 0..w.groups_per_row() {
        let (s, z) = (w.scale(r, g), w.zero(r, g));
        let (a, b) = group_span(w, g);
        for kk in a..b.min(w.k) {
            row[kk] = (codes[kk] as f32 - z) * s;
        }
    }
}

fn f32_chunk(xc: &[f32], yc: &mut [f32], w: &PackedWeight, bias: Option<&[f32]>, isa: Isa) {
    let (n, k, kp) = (w.n, w.k, w.k_pad());
    let m = xc.len() / k;
    // Tokens padded to k_pad with zeros.
    let mut xp = vec![0f32; m * kp];
    for (d, s) in xp.chunks_mut(kp).zip(xc.chunks(k)) {
        d[..k].copy_from_slice(s);
    }
    let mut wb = vec![0f32; NB * kp];
    let mut codes = vec![0u32; kp];
    for r0 in (0..n).step_by(NB) {
        let nb = NB.min(n - r0);
        wb.iter_mut().for_each(|v| *v = 0.0);
        for i in 0..nb {
            decode_row_f32(w, r0 + i, &mut codes, &mut wb[i * kp..(i + 1) * kp]);
        }
        for (t, xr) in xp.chunks(kp).enumerate() {
            let mut acc = [0f32; NB];
            dot4_f32(xr, &wb, kp, &mut acc, isa);
            for i in 0..nb {
                yc[t * n + r0 + i] = acc[i] + bias.map_or(0.0, |b| b[r0 + i]);
            }
        }
    }
}

/// `acc[i] = x . w[i]` for the NB rows of `w` (each `kp` long, `kp` a multiple of 32).
fn dot4_f32(x: &[f32], w: &[f32], kp: usize, acc: &mut [f32; NB], isa: Isa) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        // SAFETY: Isa::Avx2 is only chosen when the CPU reports AVX2 and FMA.
        unsafe { avx2::dot4_f32(x, w, kp, acc) };
        return;
    }
    let _ = isa;
    for (i, a) in acc.iter_mut().enumerate() {
        let row = &w[i * kp..(i + 1) * kp];
        let mut lanes = [0f32; 8];
        for (xs, ws) in x.chunks_exact(8).zip(row.chunks_exact(8)) {
            for l in 0..8 {
                lanes[l] += xs[l] * ws[l];
            }
        }
        *a = hsum8(&lanes);
    }
}

fn hsum8(l: &[f32; 8]) -> f32 {
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

#[allow(clippy::too_many_arguments)]
fn int_chunk(
    xc: &[f32],
    yc: &mut [f32],
    w: &PackedWeight,
    bias: Option<&[f32]>,
    spec: &ActSpec,
    static_params: Option<ActParams>,
    isa: Isa,
) {
    let (n, k, kp) = (w.n, w.k, w.k_pad());
    let m = xc.len() / k;
    // Activation codes minus their zero point, padded with 0; one scale per token.
    let mut xq = vec![0i16; m * kp];
    let mut xs = vec![0f32; m];
    for ((d, s), sc) in xq.chunks_mut(kp).zip(xc.chunks(k)).zip(xs.iter_mut()) {
        let p = static_params.unwrap_or_else(|| {
            let lo = s.iter().fold(0f32, |m, v| m.min(*v));
            let hi = s.iter().fold(0f32, |m, v| m.max(*v));
            ActParams::from_range(lo, hi, spec.bits)
        });
        for (q, v) in d.iter_mut().zip(s) {
            *q = (p.code(*v) as f32 - p.zero) as i16;
        }
        *sc = p.scale;
    }
    let gpr = w.groups_per_row();
    let mut wb = vec![0i16; NB * kp];
    let mut ws = vec![0f32; NB * gpr];
    let mut codes = vec![0u32; kp];
    for r0 in (0..n).step_by(NB) {
        let nb = NB.min(n - r0);
        wb.iter_mut().for_each(|v| *v = 0);
        ws.iter_mut().for_each(|v| *v = 0.0);
        for i in 0..nb {
            let r = r0 + i;
            codes.iter_mut().for_each(|c| *c = 0);
            decode_row(w, r, |kk, c| codes[kk] |= c);
            for g in 0..gpr {
                // Zero points are whole numbers (pack rounds them).
                let z = w.zero(r, g) as i32;
                ws[i * gpr + g] = w.scale(r, g);
                let (a, b) = group_span(w, g);
                for kk in a..b.min(k) {
                    wb[i * kp + kk] = (codes[kk] as i32 - z) as i16;
                }
            }
        }
        for (t, xr) in xq.chunks(kp).enumerate() {
            let mut acc = [0f32; NB];
            dot4_groups(xr, &wb, kp, w.group, gpr, &ws, &mut acc, isa);
            for i in 0..nb {
                yc[t * n + r0 + i] = acc[i] * xs[t] + bias.map_or(0.0, |b| b[r0 + i]);
            }
        }
    }
}

/// `acc[i] = sum_g ws[i * gpr + g] * (x . w[i] over group g)` for the NB rows of `w` (each
/// `kp` long). Each group's dot is exact in i32 per 8 lanes (lane `l` holds the pairs `2l,
/// 2l + 1` of every 16 inputs, as `madd_epi16` forms them); lanes are scaled and summed in
/// f32 in the same order on both paths, so AVX2 and portable agree bit for bit.
#[allow(clippy::too_many_arguments)]
fn dot4_groups(
    x: &[i16],
    w: &[i16],
    kp: usize,
    group: usize,
    gpr: usize,
    ws: &[f32],
    acc: &mut [f32; NB],
    isa: Isa,
) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        // SAFETY: Isa::Avx2 is only chosen when the CPU reports AVX2 and FMA.
        unsafe { avx2::dot4_groups(x, w, kp, group, gpr, ws, acc) };
        return;
    }
    let _ = isa;
    for (i, a) in acc.iter_mut().enumerate() {
        let row = &w[i * kp..(i + 1) * kp];
        let mut lanes = [0f32; 8];
        for g in 0..gpr {
            let end = if g + 1 == gpr { kp } else { (g + 1) * group };
            let mut il = [0i32; 8];
            for j in (g * group..end).step_by(16) {
                for (l, v) in il.iter_mut().enumerate() {
                    let (p, q) = (j + 2 * l, j + 2 * l + 1);
                    *v += x[p] as i32 * row[p] as i32 + x[q] as i32 * row[q] as i32;
                }
            }
            let s = ws[i * gpr + g];
            for l in 0..8 {
                lanes[l] += il[l] as f32 * s;
            }
        }
        *a = hsum8(&lanes);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::NB;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4_f32(x: &[f32], w: &[f32], kp: usize, acc: &mut [f32; NB]) {
        assert!(x.len() >= kp && w.len() >= NB * kp && kp.is_multiple_of(8));
        let mut s = [_mm256_setzero_ps(); NB];
        let mut j = 0;
        while j + 8 <= kp {
            let xv = _mm256_loadu_ps(x.as_ptr().add(j));
            for (i, si) in s.iter_mut().enumerate() {
                let wv = _mm256_loadu_ps(w.as_ptr().add(i * kp + j));
                *si = _mm256_fmadd_ps(xv, wv, *si);
            }
            j += 8;
        }
        for i in 0..NB {
            let mut l = [0f32; 8];
            _mm256_storeu_ps(l.as_mut_ptr(), s[i]);
            acc[i] = super::hsum8(&l);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4_groups(
        x: &[i16],
        w: &[i16],
        kp: usize,
        group: usize,
        gpr: usize,
        ws: &[f32],
        acc: &mut [f32; NB],
    ) {
        assert!(x.len() >= kp && w.len() >= NB * kp && ws.len() >= NB * gpr);
        let mut f = [_mm256_setzero_ps(); NB];
        for g in 0..gpr {
            let end = if g + 1 == gpr { kp } else { (g + 1) * group };
            let mut s = [_mm256_setzero_si256(); NB];
            let mut j = g * group;
            while j + 16 <= end {
                let xv = _mm256_loadu_si256(x.as_ptr().add(j) as *const __m256i);
                for (i, si) in s.iter_mut().enumerate() {
                    let wv = _mm256_loadu_si256(w.as_ptr().add(i * kp + j) as *const __m256i);
                    *si = _mm256_add_epi32(*si, _mm256_madd_epi16(xv, wv));
                }
                j += 16;
            }
            for i in 0..NB {
                // mul then add (no FMA): the portable path's rounding.
                let sc = _mm256_set1_ps(ws[i * gpr + g]);
                f[i] = _mm256_add_ps(f[i], _mm256_mul_ps(_mm256_cvtepi32_ps(s[i]), sc));
            }
        }
        for i in 0..NB {
            let mut l = [0f32; 8];
            _mm256_storeu_ps(l.as_mut_ptr(), f[i]);
            acc[i] = super::hsum8(&l);
        }
    }
}
