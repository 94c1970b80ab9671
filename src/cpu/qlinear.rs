//! Packed quantized linears on the CPU: `y = x W^T + b` straight from the packed format the
//! GPU reads (`quant::pack`: bit-plane codes in u32, f16 scales, zero points, per row or per
//! group), never holding an f32 copy of `W`.
//!
//! Shape of the work: rayon splits the tokens (rows of `x`) into chunks. A chunk first brings
//! its tokens into the kernel's form once (activation codes, or f32 rows), then walks the
//! output rows one panel at a time ([`Isa::panel_rows`] rows) and runs `cpu::qkernels`' tiles
//! of `MR` tokens over it. Int panels are laid out once per model ([`Panels`], held by
//! `CpuModel` for 8-bit codes) or once per call; float panels are decoded per chunk into a
//! small cache-resident buffer (from nibble panels for 4-bit codes), so decoding costs
//! `1 / chunk` of the arithmetic. Two numerics:
//! - activation-quantized specs (A8 and below): the inputs become unsigned codes `a` exactly
//!   as `quant::act` defines them (dynamic per token, or the static per-tensor range); weights
//!   become signed codes `e = c - off` (`off` 128 for 8-bit codes, else 0, so `e` fits i8).
//!   Each group's `sum (a - za)(c - z)` is then `sum a e + d A - za E - za d n` with
//!   `d = off - z`, `A`/`E` the group sums of `a`/`e` and `n` its length: all exact integers,
//!   so AVX-512 VNNI, AVX2 and the portable kernels give identical results, scaled by
//!   `s_w * s_a` in f32 by one shared epilogue.
//! - weight-only specs: a panel decodes to the exact f32 values of `PackedWeight::dequantize`
//!   (`(c - z) * s`) and is dotted in f32 with one fused multiply-add per input in increasing
//!   order on every ISA, so those agree bit for bit too.
//!
//! The ISA is chosen at run time ([`Isa::detect`]); `QWM_CPU_ISA=portable|avx2|avx512` (or the
//! older `QWM_CPU_PORTABLE=1`) caps it, for tests and comparisons.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::qkernels::{self, MR};
use crate::quant::pack::k_pad;
use crate::quant::{ActParams, ActSpec, PackedWeight};
use crate::{Error, Result};

/// Which kernels run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Portable,
    /// AVX2 + FMA.
    Avx2,
    /// AVX-512 F/BW with VNNI (and AVX2 + FMA).
    Avx512,
}

impl Isa {
    /// The best kernels this CPU runs, capped by `QWM_CPU_ISA` / `QWM_CPU_PORTABLE`.
    pub fn detect() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            let best = Isa::best();
            if std::env::var_os("QWM_CPU_PORTABLE").is_some() {
                return Isa::Portable;
            }
            let cap = match std::env::var("QWM_CPU_ISA").as_deref() {
                Ok("portable") => Isa::Portable,
                Ok("avx2") => Isa::Avx2,
                _ => Isa::Avx512,
            };
            best.min(cap)
        })
    }

    /// The best kernels the CPU supports, ignoring the environment.
    pub fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                if has!("avx512f") && has!("avx512bw") && has!("avx512vnni") {
                    return Isa::Avx512;
                }
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Every ISA this CPU runs, portable first (tests compare them).
    pub fn available() -> Vec<Isa> {
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|i| *i <= Isa::best())
            .collect()
    }
}

/// Activation quantization of a packed linear: the spec and, for static specs, the calibrated
/// per-tensor parameters.
pub type ActQuant<'a> = (&'a ActSpec, Option<&'a ActParams>);

/// What a linear does to its output after the bias, in the same task while the chunk is in
/// cache (no second pass over memory, no second buffer): nothing, the GELU of `cpu::gelu`
/// (the same bits), or a residual `r + y` with `r` shaped as `y`.
#[derive(Clone, Copy, Debug)]
pub enum Post<'a> {
    None,
    Gelu,
    Residual(&'a [f32]),
}

impl Post<'_> {
    fn check(&self, len: usize) -> Result<()> {
        match self {
            Post::Residual(r) if r.len() != len => Err(Error::Shape(format!(
                "linear: residual of {} values for an output of {len}",
                r.len()
            ))),
            _ => Ok(()),
        }
    }

    /// `yc` starts at flat index `off` of the output.
    fn apply(&self, yc: &mut [f32], off: usize) {
        match self {
            Post::None => {}
            Post::Gelu => super::gelu_in_place(yc),
            Post::Residual(r) => {
                // `y + r` rounds as `r + y` (IEEE addition commutes): `add(r, y)`'s bits.
                for (y, r) in yc.iter_mut().zip(&r[off..]) {
                    *y += r;
                }
            }
        }
    }
}

/// `y[M, N] = x[M, K] W^T + b` on packed `w` (`x` row-major, `M = x.len() / K`).
pub fn qlinear(
    x: &[f32],
    w: &PackedWeight,
    bias: Option<&[f32]>,
    act: Option<ActQuant<'_>>,
    isa: Isa,
) -> Result<Vec<f32>> {
    qlinear_post(x, w, bias, act, Post::None, isa)
}

/// [`qlinear`] followed by `post`.
pub fn qlinear_post(
    x: &[f32],
    w: &PackedWeight,
    bias: Option<&[f32]>,
    act: Option<ActQuant<'_>>,
    post: Post<'_>,
    isa: Isa,
) -> Result<Vec<f32>> {
    qlinear_with(x, w, None, bias, act, post, isa)
}

/// A packed weight laid out beforehand for this CPU's tiles ([`Panels::new`]).
pub enum Panels {
    /// For activation-quantized specs.
    Int(IntPanels),
    /// 4-bit codes for weight-only specs.
    Nibble(NibblePanels),
}

impl Panels {
    /// `w`'s panels for `isa` where they are worth holding: int panels for 8-bit codes with
    /// quantized activations (`int`; the same bytes as the codes), nibble panels for 4-bit
    /// weight-only ones. Lower bit-widths with quantized activations decode their int panels
    /// per call instead: held, they would take twice the 4-bit codes' bytes or more, for a
    /// few percent of a step (docs/BENCHMARKS.md, round 6).
    pub fn new(w: &PackedWeight, isa: Isa, int: bool) -> Result<Option<Panels>> {
        Ok(match int {
            true if w.bits != 8 => None,
            true => Some(Panels::Int(IntPanels::new(w, isa)?)),
            false => NibblePanels::new(w, isa).map(Panels::Nibble),
        })
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Panels::Int(p) => p.bytes(),
            Panels::Nibble(p) => p.bytes(),
        }
    }
}

/// [`qlinear_post`] on `w`'s panels built beforehand when they fit `w` and `isa`; otherwise
/// the panels are decoded here.
pub fn qlinear_with(
    x: &[f32],
    w: &PackedWeight,
    panels: Option<&Panels>,
    bias: Option<&[f32]>,
    act: Option<ActQuant<'_>>,
    post: Post<'_>,
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
    post.check(m * n)?;
    let decoded;
    let (int, nibbles) = match (act, panels) {
        (None, Some(Panels::Nibble(p))) if p.fits(w, isa) => (None, Some(p)),
        (None, _) => (None, None),
        (Some(_), Some(Panels::Int(p))) if p.fits(w, isa) => (Some(p), None),
        (Some(_), _) => {
            decoded = IntPanels::new(w, isa)?;
            (Some(&decoded), None)
        }
    };
    if m == 0 || n == 0 {
        return Ok(vec![0f32; m * n]);
    }
    // Enough chunks for every thread, each long enough to amortize decoding the panels.
    let threads = rayon::current_num_threads().max(1);
    let mc = m.div_ceil(threads * 2).next_multiple_of(MR).clamp(MR, 2048);
    let src = match nibbles {
        Some(p) => Rows::Nibbles(w, p),
        None => Rows::Packed(w),
    };
    // The chunks write every output, so `y` is not zero-filled first.
    let mut y: Vec<f32> = Vec::with_capacity(m * n);
    y.spare_capacity_mut()[..m * n]
        .par_chunks_mut(mc * n)
        .zip(x.par_chunks(mc * k))
        .enumerate()
        .for_each(|(i, (yc, xc))| {
            if let (Some((spec, _)), Some(ip)) = (act, int) {
                let off = i * mc * n;
                int_chunk(xc, yc, off, ip, bias, spec, static_params, &post);
                return;
            }
            f32_chunk(xc, yc, src, bias, isa);
            // SAFETY: `f32_chunk` initialised every element of `yc`.
            let yc = unsafe { &mut *(yc as *mut [MaybeUninit<f32>] as *mut [f32]) };
            post.apply(yc, i * mc * n);
        });
    // SAFETY: the chunks cover `0..m * n` and each initialised all of its elements.
    unsafe { y.set_len(m * n) };
    Ok(y)
}

/// The integer path needs whole zero points (pack rounds them) and codes of at most 8 bits.
fn check_int_weight(w: &PackedWeight) -> Result<()> {
    if w.k > 32768 {
        return Err(Error::Invalid(format!(
            "packed linear [{}, {}]: the integer kernels take at most 32768 inputs",
            w.n, w.k
        )));
    }
    if w.bits > 8 {
        return Err(Error::Invalid(format!(
            "packed linear [{}, {}]: {}-bit codes; the integer kernels take at most 8",
            w.n, w.k, w.bits
        )));
    }
    for r in 0..w.n {
        for g in 0..w.groups_per_row() {
            let z = w.zero(r, g);
            if z.fract() != 0.0 || !(0.0..=255.0).contains(&z) {
                return Err(Error::Invalid(format!(
                    "packed linear [{}, {}]: zero point {z} of row {r} group {g} is not a \
                     whole code; requantize the model",
                    w.n, w.k
                )));
            }
        }
    }
    Ok(())
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

/// Group boundaries of a padded row: `[0, G, 2G, .., k_pad]`.
fn group_bounds(w: &PackedWeight) -> Vec<usize> {
    let gpr = w.groups_per_row();
    let mut b: Vec<usize> = (0..gpr).map(|g| group_span(w, g).0).collect();
    b.push(w.k_pad());
    b
}

/// The integer tiles' group boundaries: [`group_bounds`] with the last one at `K` rounded up
/// to 4 codes (a `vpdpbusd` step) rather than at `k_pad`: the codes past `K` are 0 on both
/// sides, so the tiles need not multiply them (a sixth of the work at K = 80).
fn int_bounds(w: &PackedWeight) -> Vec<usize> {
    let mut b = group_bounds(w);
    if let Some(last) = b.last_mut() {
        *last = w.k.next_multiple_of(4);
    }
    b
}

/// Where a float tile's weight rows come from.
#[derive(Clone, Copy)]
enum Rows<'a> {
    /// Decoded from packed codes.
    Packed(&'a PackedWeight),
    /// Decoded from nibble panels (scales and zero points from the packed weight).
    Nibbles(&'a PackedWeight, &'a NibblePanels),
    /// A plain f32 weight `[n, k]` (float models).
    F32 { w: &'a [f32], n: usize, k: usize },
}

impl Rows<'_> {
    fn dims(&self) -> (usize, usize) {
        match self {
            Rows::Packed(w) | Rows::Nibbles(w, _) => (w.n, w.k),
            Rows::F32 { n, k, .. } => (*n, *k),
        }
    }
}

/// Writes every element of `yc`.
fn f32_chunk(
    xc: &[f32],
    yc: &mut [MaybeUninit<f32>],
    src: Rows<'_>,
    bias: Option<&[f32]>,
    isa: Isa,
) {
    let ((n, k), nr) = (src.dims(), isa.panel_rows());
    // The tiles run over the K inputs themselves, not the packed rows' padding to 32 (a
    // fifth more FMAs at K = 80), so full tiles read the tokens in place and only the last,
    // partial tile is copied into a zero-padded block.
    let m = xc.len() / k;
    let full = m / MR * MR;
    let mut tail = vec![0f32; MR * k];
    tail[..(m - full) * k].copy_from_slice(&xc[full * k..]);
    let mut panel = vec![0f32; nr * k];
    let kp = crate::quant::pack::k_pad(k);
    let (mut codes, mut row) = (vec![0u32; kp], vec![0f32; kp]);
    let (mut out, mut b) = (vec![0f32; MR * nr], vec![0f32; nr]);
    let gpr = match src {
        Rows::Nibbles(w, _) => w.groups_per_row(),
        _ => 0,
    };
    let (mut zs, mut ss) = (vec![0f32; gpr * nr], vec![0f32; gpr * nr]);
    for (pi, p0) in (0..n).step_by(nr).enumerate() {
        let rows = nr.min(n - p0);
        b.fill(0.0);
        if let Some(bias) = bias {
            b[..rows].copy_from_slice(&bias[p0..p0 + rows]);
        }
        if let Rows::Nibbles(w, np) = src {
            // Rows past `n` decode code 0 with zero point and scale 0: the value 0.
            for g in 0..gpr {
                for i in 0..nr {
                    let (z, s) = match i < rows {
                        true => (w.zero(p0 + i, g), w.scale(p0 + i, g)),
                        false => (0.0, 0.0),
                    };
                    (zs[g * nr + i], ss[g * nr + i]) = (z, s);
                }
            }
            nibble_panel(np.panel(pi), &zs, &ss, w.group, nr, &mut panel);
        } else {
            panel.fill(0.0);
            for i in 0..rows {
                let r = match src {
                    Rows::Packed(w) | Rows::Nibbles(w, _) => {
                        decode_row_f32(w, p0 + i, &mut codes, &mut row);
                        &row[..k]
                    }
                    Rows::F32 { w, .. } => &w[(p0 + i) * k..(p0 + i + 1) * k],
                };
                for (kk, v) in r.iter().enumerate() {
                    panel[kk * nr + i] = *v;
                }
            }
        }
        for t0 in (0..m).step_by(MR) {
            let xs = if t0 < full { &xc[t0 * k..] } else { &tail[..] };
            qkernels::f32_tile(isa, xs, &panel, k, &mut out);
            for t in 0..MR.min(m - t0) {
                let yr = &mut yc[(t0 + t) * n + p0..(t0 + t) * n + p0 + rows];
                for ((y, o), b) in yr.iter_mut().zip(&out[t * nr..]).zip(&b) {
                    y.write(o + b);
                }
            }
        }
    }
}

/// 4-bit codes of a packed weight laid out for the float tiles' panels ([`Isa::panel_rows`]
/// rows each, the last zero-padded): `[panel][k][nr / 2]` bytes, byte `j` holding row `j`
/// in its low nibble and row `j + nr / 2` in its high one, so that a panel decodes to f32 in
/// whole vectors. The same bytes as the packed codes (K unpadded).
pub struct NibblePanels {
    isa: Isa,
    n: usize,
    k: usize,
    codes: Vec<u8>,
}

impl NibblePanels {
    /// `w`'s codes for `isa`'s float panels; `None` unless `w` has 4-bit codes.
    pub fn new(w: &PackedWeight, isa: Isa) -> Option<NibblePanels> {
        if w.bits != 4 {
            return None;
        }
        let (k, nr) = (w.k, isa.panel_rows());
        let h = nr / 2;
        let mut codes = vec![0u8; w.n.div_ceil(nr) * k * h];
        let mut buf = vec![0u32; w.k_pad()];
        for r in 0..w.n {
            let (pi, i) = (r / nr, r % nr);
            buf.fill(0);
            decode_row(w, r, |kk, c| buf[kk] |= c);
            for (kk, &c) in buf[..k].iter().enumerate() {
                let byte = &mut codes[(pi * k + kk) * h + i % h];
                *byte |= (c as u8) << (4 * (i / h));
            }
        }
        Some(NibblePanels {
            isa,
            n: w.n,
            k,
            codes,
        })
    }

    /// Whether these are `w`'s panels for `isa`.
    pub fn fits(&self, w: &PackedWeight, isa: Isa) -> bool {
        (self.isa, self.n, self.k, w.bits) == (isa, w.n, w.k, 4)
    }

    pub fn bytes(&self) -> usize {
        self.codes.len()
    }

    fn panel(&self, i: usize) -> &[u8] {
        let len = self.k * self.isa.panel_rows() / 2;
        &self.codes[i * len..(i + 1) * len]
    }
}

super::simd_dispatch! {
    /// A float panel `[k][nr]` from nibble codes: `(c - z) * s` with each row's zero point
    /// and scale for the group of `k` (`z`, `s`: `[group][nr]`), the operations of
    /// [`PackedWeight::dequantize`], so the same bits. Writes all of `panel`.
    fn nibble_panel(
        codes: &[u8],
        z: &[f32],
        s: &[f32],
        group: usize,
        nr: usize,
        panel: &mut [f32]
    ) = nibble_panel_body
}

#[inline(always)]
fn nibble_panel_body(
    codes: &[u8],
    z: &[f32],
    s: &[f32],
    group: usize,
    nr: usize,
    panel: &mut [f32],
) {
    // Fixed panel widths, so that the row loops are whole vectors.
    match nr {
        32 => nibble_panel_nr::<32>(codes, z, s, group, panel),
        16 => nibble_panel_nr::<16>(codes, z, s, group, panel),
        _ => unreachable!("panel of {nr} rows"),
    }
}

#[inline(always)]
fn nibble_panel_nr<const NR: usize>(
    codes: &[u8],
    z: &[f32],
    s: &[f32],
    group: usize,
    panel: &mut [f32],
) {
    let h = NR / 2;
    for (kk, (b, out)) in codes
        .chunks_exact(h)
        .zip(panel.chunks_exact_mut(NR))
        .enumerate()
    {
        let g = kk / group;
        let (z, s) = (&z[g * NR..(g + 1) * NR], &s[g * NR..(g + 1) * NR]);
        for j in 0..h {
            out[j] = ((b[j] & 15) as f32 - z[j]) * s[j];
            out[j + h] = ((b[j] >> 4) as f32 - z[j + h]) * s[j + h];
        }
    }
}

/// `y[M, N] = x[M, K] W^T + b` for a plain f32 `w[N, K]` on the same tiles as the packed
/// weight-only path (bias added in the tile's epilogue, work split over tokens).
pub fn linear_f32(
    x: &[f32],
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    isa: Isa,
) -> Result<Vec<f32>> {
    linear_f32_post(x, w, n, bias, Post::None, isa)
}

/// [`linear_f32`] followed by `post`.
pub fn linear_f32_post(
    x: &[f32],
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    post: Post<'_>,
    isa: Isa,
) -> Result<Vec<f32>> {
    let k = w.len().checked_div(n).unwrap_or(0);
    if n == 0 || k == 0 || w.len() != n * k || !x.len().is_multiple_of(k) {
        return Err(Error::Shape(format!(
            "linear: weight of {} values is not {n} rows, or input of {} values is not rows \
             of {k}",
            w.len(),
            x.len()
        )));
    }
    if bias.is_some_and(|b| b.len() != n) {
        return Err(Error::Shape(format!(
            "linear [{n}, {k}]: bias is not {n} values"
        )));
    }
    let m = x.len() / k;
    post.check(m * n)?;
    let mut y = vec![0f32; m * n];
    let threads = rayon::current_num_threads().max(1);
    let mc = m.div_ceil(threads * 2).next_multiple_of(MR).clamp(MR, 2048);
    let src = Rows::F32 { w, n, k };
    y.par_chunks_mut(mc * n)
        .zip(x.par_chunks(mc * k))
        .enumerate()
        .for_each(|(i, (yc, xc))| {
            // SAFETY: f32 and `MaybeUninit<f32>` have the same layout, and `f32_chunk` only
            // writes initialised values.
            let yu = unsafe { &mut *(yc as *mut [f32] as *mut [MaybeUninit<f32>]) };
            f32_chunk(xc, yu, src, bias, isa);
            post.apply(yc, i * mc * n);
        });
    Ok(y)
}

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
    for (t, x) in xc.chunks(k).enumerate() {
        let a = &mut c.a[t * kp..t * kp + k];
        let sums = &mut c.sums[t * gpr..(t + 1) * gpr];
        let p = token_codes(x, a, sums, bounds, bits, static_params.as_ref());
        c.scale[t] = p.scale;
        c.zero[t] = p.zero as i32;
    }
    c
}

super::simd_dispatch! {
    /// One token's codes `a` (`ActParams::code` of `x`, per-token range unless `fixed`) and
    /// their sums over each group of `bounds`, in the ISA's vectors (min, max and integer
    /// sums are exact, so every ISA gives the same codes and sums).
    fn token_codes(
        x: &[f32],
        a: &mut [u8],
        sums: &mut [i32],
        bounds: &[usize],
        bits: u8,
        fixed: Option<&ActParams>
    ) -> ActParams = token_codes_body
}

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
fn sum_u8(a: &[u8]) -> i32 {
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

/// `min(0, x)` and `max(0, x)` over a token (16 running lanes so that it vectorises; min and
/// max are exact, so the order does not matter).
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
    let lo = tail.iter().chain(&lo).fold(0f32, |m, v| m.min(*v));
    let hi = tail.iter().chain(&hi).fold(0f32, |m, v| m.max(*v));
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
}

/// One panel of an [`IntPanels`].
struct Panel<'a> {
    /// Every `d` is 0 (symmetric codes: `z = off`).
    centred: bool,
    codes: &'a [i8],
    delta: &'a [i32],
    c1: &'a [i32],
    scale: &'a [f32],
}

impl IntPanels {
    /// `w` decoded for `isa`'s integer tiles (errors as the integer path of [`qlinear`]).
    pub fn new(w: &PackedWeight, isa: Isa) -> Result<IntPanels> {
        check_int_weight(w)?;
        let (k, kp, gpr, nr) = (w.k, w.k_pad(), w.groups_per_row(), isa.panel_rows());
        let panels = w.n.div_ceil(nr);
        let mut p = IntPanels {
            isa,
            n: w.n,
            k,
            bits: w.bits,
            bounds: int_bounds(w),
            codes: vec![0; panels * nr * kp],
            delta: vec![0; panels * gpr * nr],
            c1: vec![0; panels * gpr * nr],
            scale: vec![0.0; panels * gpr * nr],
            centred: false,
        };
        let off: i32 = if w.bits == 8 { 128 } else { 0 };
        let mut buf = vec![0u32; kp];
        for r in 0..w.n {
            let (pi, i) = (r / nr, r % nr);
            let codes = &mut p.codes[pi * nr * kp..(pi + 1) * nr * kp];
            let meta = pi * gpr * nr;
            buf.fill(0);
            decode_row(w, r, |kk, c| buf[kk] |= c);
            for g in 0..gpr {
                // Whole numbers in 0..=255 (`check_int_weight`).
                let z = w.zero(r, g) as i32;
                let (a, b) = group_span(w, g);
                let mut sum = 0i32;
                for (kk, &c) in buf.iter().enumerate().take(b.min(k)).skip(a) {
                    let e = c as i32 - off;
                    codes[qkernels::int_panel_index(isa, i, kk, kp)] = e as i8;
                    sum += e;
                }
                let d = off - z;
                p.delta[meta + g * nr + i] = d;
                p.c1[meta + g * nr + i] = sum.wrapping_add(d.wrapping_mul((b.min(k) - a) as i32));
                p.scale[meta + g * nr + i] = w.scale(r, g);
            }
        }
        p.centred = p.delta.iter().all(|d| *d == 0);
        Ok(p)
    }

    /// Whether these are `w`'s panels for `isa` (same shape and bit-width).
    pub fn fits(&self, w: &PackedWeight, isa: Isa) -> bool {
        (self.isa, self.n, self.k, self.bits) == (isa, w.n, w.k, w.bits)
            && self.bounds == int_bounds(w)
    }

    /// Bytes held (codes and per-group constants).
    pub fn bytes(&self) -> usize {
        self.codes.len() + 4 * (self.delta.len() + self.c1.len() + self.scale.len())
    }

    fn panel(&self, i: usize) -> Panel<'_> {
        let (nr, kp) = (self.isa.panel_rows(), k_pad(self.k));
        let gn = (self.bounds.len() - 1) * nr;
        Panel {
            centred: self.centred,
            codes: &self.codes[i * nr * kp..(i + 1) * nr * kp],
            delta: &self.delta[i * gn..(i + 1) * gn],
            c1: &self.c1[i * gn..(i + 1) * gn],
            scale: &self.scale[i * gn..(i + 1) * gn],
        }
    }
}

/// Writes every element of `yc` (which starts at flat index `off` of the output), then
/// applies `post` to it.
#[allow(clippy::too_many_arguments)]
fn int_chunk(
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
    let panels = n.div_ceil(nr);
    let mut b = vec![0f32; panels * nr];
    if let Some(bias) = bias {
        b[..n].copy_from_slice(bias);
    }
    // Blocks of tokens whose outputs (~128 KiB) stay in cache from the tiles' writes to
    // `post` (the panels are held, so revisiting them per block costs no decoding).
    let tb = (32768 / n).next_multiple_of(MR).max(MR);
    for b0 in (0..m).step_by(tb) {
        let b1 = (b0 + tb).min(m);
        for (pi, p0) in (0..n).step_by(nr).enumerate() {
            let p = ip.panel(pi);
            let bp = &b[pi * nr..(pi + 1) * nr];
            // Symmetric per-channel full panels: the AVX-512 tile finishes its outputs in
            // registers (the operations of `epilogue`, so the same bits).
            let fused = isa == Isa::Avx512 && gpr == 1 && p.centred && p0 + nr <= n;
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
                    );
                    continue;
                }
                qkernels::int_tile(isa, &ac.a[t0 * kp..], p.codes, kp, bounds, &mut out);
                let tile = Tile {
                    s: &out,
                    t0,
                    tokens: MR.min(m - t0),
                    p0,
                    rows: nr.min(n - p0),
                    n,
                };
                epilogue(&tile, &p, &ac, bp, yc);
            }
        }
        let yb = &mut yc[b0 * n..b1 * n];
        // SAFETY: the block's tiles initialised every element of `yb`.
        let yb = unsafe { &mut *(yb as *mut [MaybeUninit<f32>] as *mut [f32]) };
        post.apply(yb, off + b0 * n);
    }
}

/// One tile's integer group sums `s[t][g][row]` and where its outputs go in `y[.., n]`.
struct Tile<'a> {
    s: &'a [i32],
    t0: usize,
    tokens: usize,
    p0: usize,
    rows: usize,
    n: usize,
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
