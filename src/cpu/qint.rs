//! The integer half of the packed CPU linears (`cpu::qlinear`): activations quantized per
//! token into u8 codes with their group sums, weights as [`IntPanels`], and the int8 x int8
//! tiles with their epilogue.

use std::mem::MaybeUninit;

use super::qgroups::act_group_bounds;
use super::qkernels::{self, MR};
use super::qlinear::*;
use crate::quant::pack::k_pad;
use crate::quant::{ActParams, ActSpec, PackedWeight};
use crate::Result;

/// Activation codes of one chunk: `[m, kp]` u8 (padding 0), per token scale, zero point and
/// per-group code sums.
struct ActCodes {
    a: Vec<u8>,
    scale: Vec<f32>,
    zero: Vec<i32>,
    sums: Vec<i32>,
}

fn quantize_tokens(
    xc: &[f32],
    k: usize,
    kp: usize,
    bounds: &[usize],
    bits: u8,
    static_params: Option<ActParams>,
) -> ActCodes {
    let m = xc.len() / k;
    let gpr = bounds.len() - 1;
    let mut c = ActCodes {
        a: vec![0u8; m.next_multiple_of(MR) * kp],
        scale: vec![0f32; m],
        zero: vec![0i32; m],
        sums: vec![0i32; m * gpr],
    };
    chunk_codes(xc, k, kp, &mut c, bounds, bits, static_params.as_ref());
    c
}

super::simd_dispatch! {
    /// Every token's codes of a chunk, dispatched once per chunk rather than once per token:
    /// Wall's tokens are 64-192 values, so a per-token call and its reductions cost as much
    /// as the codes.
    fn chunk_codes(
        xc: &[f32],
        k: usize,
        kp: usize,
        c: &mut ActCodes,
        bounds: &[usize],
        bits: u8,
        fixed: Option<&ActParams>
    ) = chunk_codes_body
}

#[inline(always)]
fn chunk_codes_body(
    xc: &[f32],
    k: usize,
    kp: usize,
    c: &mut ActCodes,
    bounds: &[usize],
    bits: u8,
    fixed: Option<&ActParams>,
) {
    let gpr = bounds.len() - 1;
    for (t, x) in xc.chunks(k).enumerate() {
        let a = &mut c.a[t * kp..t * kp + k];
        let sums = &mut c.sums[t * gpr..(t + 1) * gpr];
        let p = token_codes_body(x, a, sums, bounds, bits, fixed);
        c.scale[t] = p.scale;
        c.zero[t] = p.zero as i32;
    }
}

/// One token's codes `a` (`ActParams::code` of `x`, per-token range unless `fixed`) and their
/// sums over each group of `bounds` (min, max and integer sums are exact, so every ISA gives
/// the same codes and sums).
#[inline(always)]
fn token_codes_body(
    x: &[f32],
    a: &mut [u8],
    sums: &mut [i32],
    bounds: &[usize],
    bits: u8,
    fixed: Option<&ActParams>,
) -> ActParams {
    let p = fixed.copied().unwrap_or_else(|| {
        let (lo, hi) = min_max(x);
        ActParams::from_range(lo, hi, bits)
    });
    act_codes_body(x, a, &p);
    let k = a.len();
    for (g, s) in sums.iter_mut().enumerate() {
        let (lo, hi) = (bounds[g].min(k), bounds[g + 1].min(k));
        *s = sum_u8(&a[lo..hi]);
    }
    p
}

/// Sum of bytes (32 running lanes so that it vectorises).
#[inline(always)]
pub(super) fn sum_u8(a: &[u8]) -> i32 {
    let mut acc = [0i32; 32];
    let chunks = a.chunks_exact(32);
    let tail: i32 = chunks.remainder().iter().map(|v| *v as i32).sum();
    for c in chunks {
        for l in 0..32 {
            acc[l] += c[l] as i32;
        }
    }
    acc.iter().sum::<i32>() + tail
}

/// `min(0, x)` and `max(0, x)` over a token (16 running lanes so that it vectorises, folded
/// as a tree rather than lane by lane, which was a chain of 32 dependent scalar ops per token;
/// min and max are exact, so the order does not matter).
#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = ([0f32; 16], [0f32; 16]);
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..16 {
            lo[l] = if c[l] < lo[l] { c[l] } else { lo[l] };
            hi[l] = if c[l] > hi[l] { c[l] } else { hi[l] };
        }
    }
    let mut w = 8;
    while w > 0 {
        for l in 0..w {
            lo[l] = if lo[l + w] < lo[l] { lo[l + w] } else { lo[l] };
            hi[l] = if hi[l + w] > hi[l] { hi[l + w] } else { hi[l] };
        }
        w /= 2;
    }
    let lo = tail.iter().fold(lo[0], |m, v| if *v < m { *v } else { m });
    let hi = tail.iter().fold(hi[0], |m, v| if *v > m { *v } else { m });
    (lo, hi)
}

/// `a = ActParams::code(x)` elementwise, vectorised (a rounding instruction instead of a libm
/// call per value; the same arithmetic, so the same codes).
#[inline(always)]
fn act_codes_body(x: &[f32], a: &mut [u8], p: &ActParams) {
    let levels = ((1u32 << p.bits) - 1) as f32;
    for (q, v) in a.iter_mut().zip(x) {
        let c = ((v * p.inv_scale).round_ties_even() + p.zero).clamp(0.0, levels);
        // `c as u8` for a whole number in 0..=255, with bit operations that vectorise (the
        // saturating cast does not): adding 1.5 * 2^23 puts it in the low mantissa bits.
        *q = (c + 12_582_912.0).to_bits() as u8;
    }
}

/// A packed weight's codes laid out in one ISA's int panels ([`Isa::panel_rows`] rows each,
/// the last zero-padded) with each panel's per-group constants, `[group][row]`: `d = off - z`,
/// `c1 = E + d n` (`E` the group's weight code sum, `n` its real length) and the scale. Built
/// once per model (`CpuModel`), so calls and their token chunks only read it; 8-bit codes
/// take the same bytes as packed, lower bit-widths a byte per code. No f32 weight values.
pub struct IntPanels {
    isa: Isa,
    n: usize,
    k: usize,
    bits: u8,
    bounds: Vec<usize>,
    codes: Vec<i8>,
    delta: Vec<i32>,
    c1: Vec<i32>,
    scale: Vec<f32>,
    centred: bool,
    /// Built by [`IntPanels::for_groups`].
    groups: bool,
    /// Activation-group panels of codes of at most 4 bits on AVX-512, for weights of at
    /// least [`NIBBLE_MIN_CODES`](super::qgroups::NIBBLE_MIN_CODES) codes: the raw codes `c` two
    /// to a byte (row `r` of a 32-row panel in the low nibble for `r < 16`, else the high one,
    /// at `(k / 4) * 64 + (r % 16) * 4 + k % 4`), `c1 = 128 (z n - C)` (`C` the group's code
    /// sum) and `zf` each group's zero point; the tile subtracts `z A` (`A` the group's
    /// activation code sum), which gives the same integers as centred byte codes.
    nibbles: bool,
    zf: Vec<f32>,
}

/// One panel of an [`IntPanels`].
pub(super) struct Panel<'a> {
    /// Every `d` is 0 (symmetric codes: `z = off`).
    pub centred: bool,
    pub codes: &'a [i8],
    pub delta: &'a [i32],
    pub c1: &'a [i32],
    pub scale: &'a [f32],
    /// Nibble codes ([`IntPanels`]'s `nibbles`) with their zero points `[group][row]`.
    pub nibbles: Option<&'a [f32]>,
}

impl IntPanels {
    /// `w` decoded for `isa`'s integer tiles (errors as the integer path of [`qlinear`]).
    pub fn new(w: &PackedWeight, isa: Isa) -> Result<IntPanels> {
        Self::build(w, isa, false)
    }

    /// `w` decoded for the activation-group path of weight-only specs (`cpu::qgroups`):
    /// groups of [`ACT_GROUP`](super::qgroups::ACT_GROUP) inputs (each inside one weight group), codes centred on their
    /// row's zero point (`e = c - z`, so `d = 0`), and `c1 = -128 E`, where the group's sum
    /// starts so that it ends at `sum (a - 128) e`. Codes of at most 7 bits.
    pub fn for_groups(w: &PackedWeight, isa: Isa) -> Result<IntPanels> {
        Self::build(w, isa, true)
    }

    fn build(w: &PackedWeight, isa: Isa, groups: bool) -> Result<IntPanels> {
        check_int_weight(w)?;
        if groups && w.bits > 7 {
            return Err(crate::Error::Invalid(format!(
                "packed linear [{}, {}]: {}-bit codes; activation groups take at most 7-bit \
                 codes (8-bit weights run the exact float path)",
                w.n, w.k, w.bits
            )));
        }
        let bounds = match groups {
            true => act_group_bounds(w.k),
            false => int_bounds(w),
        };
        let (k, kp, gpr, nr) = (w.k, w.k_pad(), bounds.len() - 1, isa.panel_rows());
        let panels = w.n.div_ceil(nr);
        let nibbles = groups
            && isa == Isa::Avx512
            && w.bits <= 4
            && w.n * w.k >= super::qgroups::NIBBLE_MIN_CODES;
        let per_panel = if nibbles { nr * kp / 2 } else { nr * kp };
        let meta = panels * gpr * nr;
        let mut p = IntPanels {
            isa,
            n: w.n,
            k,
            bits: w.bits,
            bounds,
            codes: vec![0; panels * per_panel],
            // Activation-group panels are centred: no `d` held.
            delta: vec![0; if groups { 0 } else { meta }],
            c1: vec![0; meta],
            scale: vec![0.0; meta],
            centred: groups,
            groups,
            nibbles,
            zf: vec![0.0; if nibbles { meta } else { 0 }],
        };
        let mut buf = vec![0u32; kp];
        for r in 0..w.n {
            let (pi, i) = (r / nr, r % nr);
            let codes = &mut p.codes[pi * per_panel..(pi + 1) * per_panel];
            let meta = pi * gpr * nr;
            buf.fill(0);
            decode_row(w, r, |kk, c| buf[kk] |= c);
            for g in 0..gpr {
                // Group `g`'s real inputs (the last bound is rounded up for the tiles).
                let (a, b) = (p.bounds[g], p.bounds[g + 1].min(k));
                let wg = match groups {
                    true => (a / w.group.max(1)).min(w.groups_per_row() - 1),
                    false => g,
                };
                // Whole numbers in 0..=255 (`check_int_weight`).
                let z = w.zero(r, wg) as i32;
                let off: i32 = match (groups, w.bits) {
                    (true, _) => z,
                    (false, 8) => 128,
                    (false, _) => 0,
                };
                let at = meta + g * nr + i;
                p.scale[at] = w.scale(r, wg);
                if nibbles {
                    // Codes of at most 4 bits and `z` within their range (`check_int_weight`
                    // allows any whole zero point up to 255): `c1` stays far from overflow.
                    let mut csum = 0i32;
                    for (kk, &c) in buf.iter().enumerate().take(b).skip(a) {
                        // The byte panels' limit too, so every ISA takes the same weights.
                        if !(-128..=127).contains(&(c as i32 - z)) {
                            return Err(crate::Error::Invalid(format!(
                                "packed linear [{}, {}]: zero point {z} of row {r} is outside \
                                 the {}-bit code range; requantize the model",
                                w.n, w.k, w.bits
                            )));
                        }
                        let j = (kk / 4) * 64 + (i % 16) * 4 + kk % 4;
                        codes[j] |= ((c as u8) << (4 * (i / 16))) as i8;
                        csum += c as i32;
                    }
                    let n = (b - a) as i32;
                    p.c1[at] = 128i32.wrapping_mul(z.wrapping_mul(n).wrapping_sub(csum));
                    p.zf[at] = z as f32;
                    continue;
                }
                let mut sum = 0i32;
                for (kk, &c) in buf.iter().enumerate().take(b).skip(a) {
                    let e = c as i32 - off;
                    if !(-128..=127).contains(&e) {
                        return Err(crate::Error::Invalid(format!(
                            "packed linear [{}, {}]: zero point {z} of row {r} is outside the \
                             {}-bit code range; requantize the model",
                            w.n, w.k, w.bits
                        )));
                    }
                    codes[qkernels::int_panel_index(isa, i, kk, kp)] = e as i8;
                    sum += e;
                }
                let d = off - z;
                p.c1[at] = match groups {
                    // The activation-group tiles' starting sum (`qgroups`).
                    true => sum.wrapping_mul(-128),
                    false => {
                        p.delta[at] = d;
                        sum.wrapping_add(d.wrapping_mul((b - a) as i32))
                    }
                };
            }
        }
        p.centred = p.delta.iter().all(|d| *d == 0);
        Ok(p)
    }

    /// Whether these are panels for the activation-group path ([`IntPanels::for_groups`]).
    pub fn groups(&self) -> bool {
        self.groups
    }

    pub(super) fn n(&self) -> usize {
        self.n
    }

    pub(super) fn k(&self) -> usize {
        self.k
    }

    pub(super) fn isa(&self) -> Isa {
        self.isa
    }

    pub(super) fn bounds(&self) -> &[usize] {
        &self.bounds
    }

    /// Whether these are `w`'s panels for `isa` (same shape and bit-width).
    pub fn fits(&self, w: &PackedWeight, isa: Isa) -> bool {
        let bounds = match self.groups {
            true => act_group_bounds(w.k),
            false => int_bounds(w),
        };
        (self.isa, self.n, self.k, self.bits) == (isa, w.n, w.k, w.bits) && self.bounds == bounds
    }

    /// Bytes held (codes and per-group constants).
    pub fn bytes(&self) -> usize {
        let meta = self.delta.len() + self.c1.len() + self.scale.len() + self.zf.len();
        self.codes.len() + 4 * meta
    }

    /// Whether the codes are held two to a byte (see the field).
    pub fn nibbles(&self) -> bool {
        self.nibbles
    }

    pub(super) fn panel(&self, i: usize) -> Panel<'_> {
        let (nr, kp) = (self.isa.panel_rows(), k_pad(self.k));
        let per_panel = if self.nibbles { nr * kp / 2 } else { nr * kp };
        let gn = (self.bounds.len() - 1) * nr;
        let meta = i * gn..(i + 1) * gn;
        Panel {
            centred: self.centred,
            codes: &self.codes[i * per_panel..(i + 1) * per_panel],
            delta: self.delta.get(meta.clone()).unwrap_or(&[]),
            c1: &self.c1[meta.clone()],
            scale: &self.scale[meta.clone()],
            nibbles: self.nibbles.then(|| &self.zf[meta]),
        }
    }
}

super::simd_dispatch! {
    /// Writes every element of `yc` (which starts at flat index `off` of the output), then
    /// applies `post` to it. Compiled per ISA, so that the loop over tiles can inline them
    /// and the residual or GELU after them runs in whole vectors (the same arithmetic in
    /// every ISA).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn int_chunk(
        xc: &[f32],
        yc: &mut [MaybeUninit<f32>],
        off: usize,
        ip: &IntPanels,
        bias: Option<&[f32]>,
        spec: &ActSpec,
        static_params: Option<ActParams>,
        post: &Post<'_>
    ) = int_chunk_body
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn int_chunk_body(
    xc: &[f32],
    yc: &mut [MaybeUninit<f32>],
    off: usize,
    ip: &IntPanels,
    bias: Option<&[f32]>,
    spec: &ActSpec,
    static_params: Option<ActParams>,
    post: &Post<'_>,
) {
    let (n, k, isa) = (ip.n, ip.k, ip.isa);
    let (kp, nr) = (k_pad(k), isa.panel_rows());
    let m = xc.len() / k;
    let bounds = &ip.bounds;
    let gpr = bounds.len() - 1;
    let ac = quantize_tokens(xc, k, kp, bounds, spec.bits, static_params);
    // Every tile writes all of `out` (no fill needed between tiles).
    let mut out = vec![0i32; MR * gpr * nr];
    let b = panel_bias(bias, n, nr);
    let tb = token_block(n);
    for b0 in (0..m).step_by(tb) {
        let b1 = (b0 + tb).min(m);
        for (pi, p0) in (0..n).step_by(nr).enumerate() {
            let p = ip.panel(pi);
            let bp = &b[pi * nr..(pi + 1) * nr];
            // Symmetric per-channel panels: the AVX-512 tile finishes its outputs in registers
            // (the operations of `epilogue`, so the same bits; a partial last panel under a
            // mask).
            let fused = isa == Isa::Avx512 && gpr == 1 && p.centred;
            let rows = nr.min(n - p0);
            for t0 in (b0..b1).step_by(MR) {
                if fused {
                    let tokens = MR.min(m - t0);
                    let out = qkernels::FusedOut {
                        za: &ac.zero[t0..t0 + tokens],
                        sa: &ac.scale[t0..t0 + tokens],
                        c1: p.c1,
                        sw: p.scale,
                        b: bp,
                    };
                    let y = &mut yc[t0 * n + p0..];
                    qkernels::int_tile_fused(
                        isa,
                        &ac.a[t0 * kp..],
                        p.codes,
                        kp,
                        bounds,
                        &out,
                        y,
                        n,
                        rows,
                    );
                    continue;
                }
                qkernels::int_tile(isa, &ac.a[t0 * kp..], p.codes, kp, bounds, &mut out);
                let tile = Tile {
                    s: &out,
                    t0,
                    tokens: MR.min(m - t0),
                    p0,
                    rows,
                    n,
                };
                epilogue(&tile, &p, &ac, bp, yc);
            }
        }
        // SAFETY: the block's tiles initialised every element of its rows.
        unsafe { post_block(yc, b0, b1, n, off, post) };
    }
}

/// The bias padded to whole panels of `nr` rows (zero without one).
pub(super) fn panel_bias(bias: Option<&[f32]>, n: usize, nr: usize) -> Vec<f32> {
    let mut b = vec![0f32; n.div_ceil(nr) * nr];
    if let Some(bias) = bias {
        b[..n].copy_from_slice(bias);
    }
    b
}

/// Tokens per block of an int chunk: their outputs (~128 KiB) stay in cache from the tiles'
/// writes to `post` (the panels are held, so revisiting them per block costs no decoding).
pub(super) fn token_block(n: usize) -> usize {
    (32768 / n).next_multiple_of(MR).max(MR)
}

/// `post` on tokens `b0..b1` of `yc` (rows of `n`, starting at flat index `off` of the
/// output).
///
/// # Safety
/// Every element of those rows must be initialised.
#[inline(always)]
pub(super) unsafe fn post_block(
    yc: &mut [MaybeUninit<f32>],
    b0: usize,
    b1: usize,
    n: usize,
    off: usize,
    post: &Post<'_>,
) {
    let yb = &mut yc[b0 * n..b1 * n];
    // SAFETY: the caller's contract.
    let yb = unsafe { &mut *(yb as *mut [MaybeUninit<f32>] as *mut [f32]) };
    post.apply(yb, off + b0 * n);
}

/// One tile's integer group sums `s[t][g][row]` and where its outputs go in `y[.., n]`.
pub(super) struct Tile<'a> {
    pub s: &'a [i32],
    pub t0: usize,
    pub tokens: usize,
    pub p0: usize,
    pub rows: usize,
    pub n: usize,
}

super::simd_dispatch! {
    /// A tile's outputs: `y = (sum_g s_w (s + d A - za c1)) s_a + b`. The integer part is
    /// exact in wrapping i32 (the true value `sum (a - za)(c - z)` is below 2^31 for
    /// `K <= 32768`, checked by `qlinear`); the f32 part is the same sequence of roundings on
    /// every ISA (the compiler does not contract it into FMAs), so all builds give the same
    /// bits. Writes every output of the tile.
    fn epilogue(
        t: &Tile<'_>,
        p: &Panel<'_>,
        ac: &ActCodes,
        b: &[f32],
        y: &mut [MaybeUninit<f32>]
    ) = epilogue_body
}

#[inline(always)]
fn epilogue_body(
    t: &Tile<'_>,
    p: &Panel<'_>,
    ac: &ActCodes,
    b: &[f32],
    y: &mut [MaybeUninit<f32>],
) {
    // Fixed panel widths, so that the row loops are whole vectors.
    match b.len() {
        32 => epilogue_nr::<32>(t, p, ac, b, y),
        16 => epilogue_nr::<16>(t, p, ac, b, y),
        nr => unreachable!("panel of {nr} rows"),
    }
}

#[inline(always)]
fn epilogue_nr<const NR: usize>(
    t: &Tile<'_>,
    p: &Panel<'_>,
    ac: &ActCodes,
    b: &[f32],
    y: &mut [MaybeUninit<f32>],
) {
    let gpr = p.delta.len() / NR;
    // Slices of exactly `NR` values: the row loops below index them without bounds checks.
    let b = &b[..NR];
    for i in 0..t.tokens {
        let tt = t.t0 + i;
        let (za, sums) = (ac.zero[tt], &ac.sums[tt * gpr..(tt + 1) * gpr]);
        let sa = ac.scale[tt];
        let yr = &mut y[tt * t.n + t.p0..tt * t.n + t.p0 + t.rows];
        if gpr == 1 {
            // Per-channel scales: straight to the output, the same operations as below.
            let s = &t.s[i * NR..(i + 1) * NR];
            let d = &p.delta[..NR];
            let c1 = &p.c1[..NR];
            let sw = &p.scale[..NR];
            let a = sums[0];
            if yr.len() == NR && p.centred {
                // `d A` is 0: the same integers without its multiply.
                for j in 0..NR {
                    let dot = s[j].wrapping_sub(za.wrapping_mul(c1[j]));
                    yr[j].write(dot as f32 * sw[j] * sa + b[j]);
                }
                continue;
            }
            if yr.len() == NR {
                for j in 0..NR {
                    let dot = s[j]
                        .wrapping_add(d[j].wrapping_mul(a))
                        .wrapping_sub(za.wrapping_mul(c1[j]));
                    yr[j].write(dot as f32 * sw[j] * sa + b[j]);
                }
                continue;
            }
        }
        let mut f = [0f32; NR];
        for (g, &a) in sums.iter().enumerate() {
            let r = g * NR..(g + 1) * NR;
            let s = &t.s[i * gpr * NR..][r.clone()];
            let d = &p.delta[r.clone()];
            let c1 = &p.c1[r.clone()];
            let sw = &p.scale[r];
            for j in 0..NR {
                let dot = s[j]
                    .wrapping_add(d[j].wrapping_mul(a))
                    .wrapping_sub(za.wrapping_mul(c1[j]));
                let v = dot as f32 * sw[j];
                // Group 0 sets, later groups add (in increasing group order on every ISA).
                f[j] = if g == 0 { v } else { f[j] + v };
            }
        }
        for ((y, fi), bi) in yr.iter_mut().zip(&f).zip(b) {
            y.write(*fi * sa + bi);
        }
    }
}
