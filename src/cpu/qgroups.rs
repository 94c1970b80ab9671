//! Weight-only specs on the integer tiles ([`WeightOnly::Int8`], opt-in): the inputs of a
//! packed linear are quantized per token and per group of [`ACT_GROUP`] inputs to symmetric
//! int8 (`s = round(x * 127 / m)`, `m = max |x|` of the group, as llama.cpp's Q8_0 blocks),
//! held as `a = s + 128` for the tiles' u8 operand, and multiplied with the weight codes
//! centred on their zero points (`e = c - z`, [`IntPanels::for_groups`]). Each group's
//! `sum (a - 128) e = S - 128 E` is exact in i32, so every ISA gives the same integers; the
//! output `y = b + sum_g (S - 128 E) (s_w s_a)` is the same f32 operations (a product and a
//! fused multiply-add per group) in the same order on every ISA, so every build gives the
//! same bits.
//!
//! These are not the spec's exact numerics (float inputs: the float path, the fake-quant
//! reference, the GPU and the study): rounding each input to 8 bits of its group's range
//! moves an output by ~0.1-0.5% of its size (measured in `tests/cpu_qgroups.rs`), far below
//! what the weights' own 4-bit rounding does, for the integer tiles' speed
//! (docs/BENCHMARKS.md).
//!
//! [`WeightOnly::Int8`]: super::qlinear::WeightOnly::Int8

use std::mem::MaybeUninit;

use super::qint::{panel_bias, post_block, token_block, IntPanels, Panel, Tile};
use super::qkernels::{self, MR};
use super::qlinear::{Isa, Post};
use crate::quant::pack::k_pad;

/// Inputs per activation group (the smallest weight group, so a group never straddles two).
pub const ACT_GROUP: usize = 32;

/// Weights of at least this many codes (of at most 4 bits) hold them two to a byte on
/// AVX-512 (`IntPanels`' `nibbles`): half the bytes where memory counts, while smaller
/// weights, in cache either way, keep byte codes, which skip the unpacking
/// (docs/BENCHMARKS.md, round 11).
pub const NIBBLE_MIN_CODES: usize = 1 << 18;

/// Activation-group boundaries of a row of `k` inputs: `[0, 32, 64, ..]`, the last at `k`
/// rounded up to 4 codes (a `vpdpbusd` step; codes past `k` are 0 on both sides).
pub(super) fn act_group_bounds(k: usize) -> Vec<usize> {
    let mut b: Vec<usize> = (0..k).step_by(ACT_GROUP).collect();
    b.push(k.next_multiple_of(4));
    b
}

/// One chunk's activation codes: `[m rounded up to MR, kp]` u8 (padding 0) and a scale per
/// token and group, `[m][groups]`.
struct GroupCodes {
    a: Vec<u8>,
    scale: Vec<f32>,
    /// Per token and group, the sum of its codes `a` (for nibble panels; else empty).
    sums: Vec<f32>,
}

super::simd_dispatch! {
    /// The codes and scales of every token of a chunk (`xc`, rows of `k`).
    fn group_codes(xc: &[f32], k: usize, kp: usize, bounds: &[usize], c: &mut GroupCodes) = group_codes_body
}

#[inline(always)]
fn group_codes_body(xc: &[f32], k: usize, kp: usize, bounds: &[usize], c: &mut GroupCodes) {
    let gpr = bounds.len() - 1;
    debug_assert_eq!(bounds, act_group_bounds(k));
    // Per token: every group's range, then their scales in one vectorised pass (not a
    // division per group in the codes loop), then the codes. Whole groups go through
    // fixed-length chunks, which compile to straight vector code.
    let full = k / ACT_GROUP;
    let (mut m, mut inv) = (vec![0f32; gpr], vec![0f32; gpr]);
    for (t, x) in xc.chunks_exact(k).enumerate() {
        let (xf, xr) = x.split_at(full * ACT_GROUP);
        let groups = xf
            .chunks_exact(ACT_GROUP)
            .chain((!xr.is_empty()).then_some(xr));
        for (m, xs) in m.iter_mut().zip(groups) {
            let (v, finite) = abs_max(xs);
            // A group with a NaN or an infinity gets scale NaN, so its outputs are NaN as
            // on the exact path rather than a quiet wrong number.
            *m = if finite { v } else { f32::NAN };
        }
        let scale = &mut c.scale[t * gpr..(t + 1) * gpr];
        for ((s, inv), m) in scale.iter_mut().zip(inv.iter_mut()).zip(&m) {
            // NaN fails `m > 0`: scale NaN, inverse 0.
            *s = m * (1.0 / 127.0);
            *inv = if *m > 0.0 { 127.0 / m } else { 0.0 };
        }
        let a = &mut c.a[t * kp..t * kp + k];
        let (af, ar) = a.split_at_mut(full * ACT_GROUP);
        for ((aq, xs), &inv) in af
            .chunks_exact_mut(ACT_GROUP)
            .zip(xf.chunks_exact(ACT_GROUP))
            .zip(&inv)
        {
            codes_into(aq, xs, inv);
        }
        if !xr.is_empty() {
            codes_into(ar, xr, inv[full]);
        }
        if !c.sums.is_empty() {
            let sums = &mut c.sums[t * gpr..(t + 1) * gpr];
            for (sum, aq) in sums.iter_mut().zip(a.chunks(ACT_GROUP)) {
                // At most 255 x 32: exact in f32.
                *sum = super::qint::sum_u8(aq) as f32;
            }
        }
    }
}

/// One group's codes: `s = clamp(round(x * inv), -127, 127)`, held as `s + 128`.
#[inline(always)]
fn codes_into(a: &mut [u8], x: &[f32], inv: f32) {
    for (q, v) in a.iter_mut().zip(x) {
        let s = (v * inv).round_ties_even().clamp(-127.0, 127.0);
        // `(s + 128) as u8` for a whole `s` in -127..=127 with bit operations that vectorise
        // (as `qint`'s codes): adding 1.5 * 2^23 + 128 puts `s + 128` in the low mantissa
        // bits, exactly.
        *q = (s + 12_583_040.0).to_bits() as u8;
    }
}

/// `max |x|` and whether every value is finite (max is exact, so the order does not
/// matter): a whole group as two 16-lane vectors folded as a tree, else 16 running lanes.
#[inline(always)]
fn abs_max(x: &[f32]) -> (f32, bool) {
    let (mut m, mut ok) = ([0f32; 16], [true; 16]);
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..16 {
            let a = c[l].abs();
            m[l] = if a > m[l] { a } else { m[l] };
            ok[l] &= a <= f32::MAX;
        }
    }
    let mut w = 8;
    while w > 0 {
        for l in 0..w {
            m[l] = if m[l + w] > m[l] { m[l + w] } else { m[l] };
            ok[l] &= ok[l + w];
        }
        w /= 2;
    }
    let (mut r, mut finite) = (m[0], ok[0]);
    for v in tail {
        let a = v.abs();
        r = if a > r { a } else { r };
        finite &= a <= f32::MAX;
    }
    (r, finite)
}

/// The codes (activation groups of `bounds`) and scales of `xc` as [`WeightOnly::Int8`]
/// quantizes them: for tests, which check them against their definition.
///
/// [`WeightOnly::Int8`]: super::qlinear::WeightOnly::Int8
pub fn act_group_codes(xc: &[f32], k: usize) -> (Vec<u8>, Vec<f32>) {
    let bounds = act_group_bounds(k);
    let m = xc.len() / k.max(1);
    let mut c = GroupCodes {
        a: vec![0u8; m * k_pad(k)],
        scale: vec![0f32; m * (bounds.len() - 1)],
        sums: Vec::new(),
    };
    if k > 0 {
        group_codes(xc, k, k_pad(k), &bounds, &mut c);
    }
    let a = c.a.chunks(k_pad(k).max(1)).flat_map(|r| &r[..k]).copied();
    (a.collect(), c.scale)
}

super::simd_dispatch! {
    /// Writes every element of `yc` (which starts at flat index `off` of the output), then
    /// applies `post` to it.
    pub(super) fn groups_chunk(
        xc: &[f32],
        yc: &mut [MaybeUninit<f32>],
        off: usize,
        ip: &IntPanels,
        bias: Option<&[f32]>,
        post: &Post<'_>
    ) = groups_chunk_body
}

#[inline(always)]
fn groups_chunk_body(
    xc: &[f32],
    yc: &mut [MaybeUninit<f32>],
    off: usize,
    ip: &IntPanels,
    bias: Option<&[f32]>,
    post: &Post<'_>,
) {
    let (n, k, isa) = (ip.n(), ip.k(), ip.isa());
    let (kp, nr) = (k_pad(k), isa.panel_rows());
    let m = xc.len() / k;
    let bounds = ip.bounds();
    let gpr = bounds.len() - 1;
    // Scales padded to whole tiles (the fused tile reads `MR` tokens' worth).
    let mp = m.next_multiple_of(MR);
    let mut ac = GroupCodes {
        a: vec![0u8; mp * kp],
        scale: vec![0f32; mp * gpr],
        sums: vec![0f32; if ip.nibbles() { mp * gpr } else { 0 }],
    };
    group_codes(xc, k, kp, bounds, &mut ac);
    // Every tile writes all of `out` (no fill needed between tiles).
    let mut out = vec![0i32; MR * gpr * nr];
    let b = panel_bias(bias, n, nr);
    let tb = token_block(n);
    for b0 in (0..m).step_by(tb) {
        let b1 = (b0 + tb).min(m);
        for (pi, p0) in (0..n).step_by(nr).enumerate() {
            let p = ip.panel(pi);
            let bp = &b[pi * nr..(pi + 1) * nr];
            let rows = nr.min(n - p0);
            if isa == Isa::Avx512 {
                // The whole block in one call, finished in registers.
                let o = qkernels::GroupOut {
                    sa: &ac.scale[b0 * gpr..],
                    c1: p.c1,
                    sw: p.scale,
                    b: bp,
                    nibbles: p.nibbles.map(|zf| (zf, &ac.sums[b0 * gpr..])),
                };
                let (a, y) = (&ac.a[b0 * kp..], &mut yc[b0 * n + p0..]);
                qkernels::int_tile_groups(isa, a, p.codes, kp, bounds, &o, b1 - b0, y, n, rows);
                continue;
            }
            for t0 in (b0..b1).step_by(MR) {
                qkernels::int_tile(isa, &ac.a[t0 * kp..], p.codes, kp, bounds, &mut out);
                let tile = Tile {
                    s: &out,
                    t0,
                    tokens: MR.min(m - t0),
                    p0,
                    rows,
                    n,
                };
                match nr {
                    32 => epilogue::<32>(&tile, &p, &ac.scale, bp, yc),
                    16 => epilogue::<16>(&tile, &p, &ac.scale, bp, yc),
                    nr => unreachable!("panel of {nr} rows"),
                }
            }
        }
        // SAFETY: the block's tiles initialised every element of its rows.
        unsafe { post_block(yc, b0, b1, n, off, post) };
    }
}

/// A tile's outputs: `y = b + sum_g (s + c1) as f32 * (s_w s_a)`, each group one fused
/// multiply-add in increasing group order (correctly rounded on every ISA, so every ISA gives
/// the same bits). `c1` is `-128 E` ([`IntPanels::for_groups`]).
#[inline(always)]
fn epilogue<const NR: usize>(
    t: &Tile<'_>,
    p: &Panel<'_>,
    sa: &[f32],
    b: &[f32],
    y: &mut [MaybeUninit<f32>],
) {
    let gpr = p.c1.len() / NR;
    let mut bias = [0f32; NR];
    bias.copy_from_slice(&b[..NR]);
    for i in 0..t.tokens {
        let tt = t.t0 + i;
        let sa = &sa[tt * gpr..(tt + 1) * gpr];
        let mut f = bias;
        for (g, &sa) in sa.iter().enumerate() {
            let r = g * NR..(g + 1) * NR;
            let s = &t.s[i * gpr * NR..][r.clone()];
            let c1 = &p.c1[r.clone()];
            let sw = &p.scale[r];
            for j in 0..NR {
                let dot = s[j].wrapping_add(c1[j]);
                f[j] = (dot as f32).mul_add(sw[j] * sa, f[j]);
            }
        }
        let yr = &mut y[tt * t.n + t.p0..tt * t.n + t.p0 + t.rows];
        if let Ok(yr) = <&mut [MaybeUninit<f32>; NR]>::try_from(&mut *yr) {
            // A whole panel: fixed-length stores rather than a copy call.
            for j in 0..NR {
                yr[j].write(f[j]);
            }
            continue;
        }
        for (y, fi) in yr.iter_mut().zip(&f) {
            y.write(*fi);
        }
    }
}
