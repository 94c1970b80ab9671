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
//! - weight-only specs with [`WeightOnly::Int8`] (opt-in, `QWM_CPU_WEIGHT_ONLY=int8`): the
//!   inputs become int8 per group of 32 and run on the integer tiles (`cpu::qgroups`), the
//!   same bits on every ISA but not the spec's exact numerics.
//!
//! The ISA is chosen at run time ([`Isa::detect`]); `QWM_CPU_ISA=portable|avx2|avx512` (or the
//! older `QWM_CPU_PORTABLE=1`) caps it, for tests and comparisons.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::qkernels::{self, MR};

use super::qgroups::groups_chunk;
pub use super::qgroups::{act_group_codes, ACT_GROUP, NIBBLE_MIN_CODES};
use super::qint::int_chunk;
pub use super::qint::IntPanels;
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
    pub(super) fn apply(&self, yc: &mut [f32], off: usize) {
        match self {
            Post::None => {}
            Post::Gelu => super::gelu_in_place(yc),
            Post::Residual(r) => add_into(yc, &r[off..]),
        }
    }
}

super::simd_dispatch! {
    /// `y += r`, which rounds as `r + y` (IEEE addition commutes): `add(r, y)`'s bits.
    fn add_into(y: &mut [f32], r: &[f32]) = add_into_body
}

#[inline(always)]
fn add_into_body(y: &mut [f32], r: &[f32]) {
    for (y, r) in y.iter_mut().zip(r) {
        *y += r;
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

/// How the CPU runs a weight-only spec's packed linears.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightOnly {
    /// Float inputs against the exact dequantized weights: the spec's numerics, bit for bit
    /// those of the fake-quant reference (the default; the study's).
    #[default]
    Exact,
    /// Inputs quantized to int8 per token and group of [`ACT_GROUP`] on the integer tiles
    /// (`cpu::qgroups`): faster, within ~0.5% of the exact outputs. Codes of at most 7 bits;
    /// 8-bit weights stay exact.
    Int8,
}

impl WeightOnly {
    /// `QWM_CPU_WEIGHT_ONLY=exact|int8` (unset: exact); anything else is an error that names
    /// the variable.
    pub fn from_env() -> Result<WeightOnly> {
        match std::env::var("QWM_CPU_WEIGHT_ONLY") {
            Err(std::env::VarError::NotPresent) => Ok(WeightOnly::Exact),
            Ok(v) => v.parse(),
            Err(e) => Err(Error::Invalid(format!("QWM_CPU_WEIGHT_ONLY: {e}"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WeightOnly::Exact => "exact",
            WeightOnly::Int8 => "int8",
        }
    }
}

impl std::str::FromStr for WeightOnly {
    type Err = Error;

    fn from_str(s: &str) -> Result<WeightOnly> {
        match s.trim().to_ascii_lowercase().as_str() {
            "exact" | "" => Ok(WeightOnly::Exact),
            "int8" => Ok(WeightOnly::Int8),
            _ => Err(Error::Invalid(format!(
                "QWM_CPU_WEIGHT_ONLY={s:?}: use `exact` (float inputs, the spec's numerics) \
                 or `int8` (inputs quantized per group of {ACT_GROUP} on the integer tiles)"
            ))),
        }
    }
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
    /// With `weight_only` [`WeightOnly::Int8`], weight-only specs of at most 7 bits get
    /// [`IntPanels::for_groups`] (a byte per code) and run on the integer tiles.
    pub fn new(
        w: &PackedWeight,
        isa: Isa,
        int: bool,
        weight_only: WeightOnly,
    ) -> Result<Option<Panels>> {
        Ok(match int {
            true if w.bits != 8 => None,
            true => Some(Panels::Int(IntPanels::new(w, isa)?)),
            false if weight_only == WeightOnly::Int8 && w.bits <= 7 => {
                Some(Panels::Int(IntPanels::for_groups(w, isa)?))
            }
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
        (None, Some(Panels::Int(p))) if p.groups() && p.fits(w, isa) => (Some(p), None),
        (None, _) => (None, None),
        (Some(_), Some(Panels::Int(p))) if !p.groups() && p.fits(w, isa) => (Some(p), None),
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
            let off = i * mc * n;
            match (act, int) {
                (Some((spec, _)), Some(ip)) => {
                    return int_chunk(xc, yc, off, ip, bias, spec, static_params, &post)
                }
                (None, Some(ip)) => return groups_chunk(xc, yc, off, ip, bias, &post),
                _ => {}
            }
            f32_chunk(xc, yc, src, bias, isa);
            // SAFETY: `f32_chunk` initialised every element of `yc`.
            let yc = unsafe { &mut *(yc as *mut [MaybeUninit<f32>] as *mut [f32]) };
            post.apply(yc, off);
        });
    // SAFETY: the chunks cover `0..m * n` and each initialised all of its elements.
    unsafe { y.set_len(m * n) };
    Ok(y)
}

/// The integer path needs whole zero points (pack rounds them) and codes of at most 8 bits.
pub(super) fn check_int_weight(w: &PackedWeight) -> Result<()> {
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
pub(super) fn decode_row(w: &PackedWeight, r: usize, mut put: impl FnMut(usize, u32)) {
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
pub(super) fn group_span(w: &PackedWeight, g: usize) -> (usize, usize) {
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
pub(super) fn int_bounds(w: &PackedWeight) -> Vec<usize> {
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

super::simd_dispatch! {
    /// Writes every element of `yc`. Compiled per ISA, so that the panel layout and the
    /// bias epilogue are whole vectors too (in baseline x86-64 they were a tenth of a float
    /// step); the arithmetic is the same in every ISA.
    fn f32_chunk(
        xc: &[f32],
        yc: &mut [MaybeUninit<f32>],
        src: Rows<'_>,
        bias: Option<&[f32]>,
        isa: Isa
    ) = f32_chunk_body
}

#[inline(always)]
fn f32_chunk_body(
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
        let pan: &[f32] = match src {
            Rows::Nibbles(w, np) => {
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
                &panel
            }
            Rows::Packed(w) => {
                panel.fill(0.0);
                for i in 0..rows {
                    decode_row_f32(w, p0 + i, &mut codes, &mut row);
                    for (kk, v) in row[..k].iter().enumerate() {
                        panel[kk * nr + i] = *v;
                    }
                }
                &panel
            }
            Rows::F32 { w, .. } => {
                transpose_panel(&w[p0 * k..(p0 + rows) * k], k, nr, &mut panel);
                &panel
            }
        };
        for t0 in (0..m).step_by(MR) {
            let xs = if t0 < full { &xc[t0 * k..] } else { &tail[..] };
            qkernels::f32_tile(isa, xs, pan, k, &mut out);
            for t in 0..MR.min(m - t0) {
                let yr = &mut yc[(t0 + t) * n + p0..(t0 + t) * n + p0 + rows];
                for ((y, o), b) in yr.iter_mut().zip(&out[t * nr..]).zip(&b) {
                    y.write(o + b);
                }
            }
        }
    }
}

/// Rows `w` (`[rows, k]`, `rows <= nr`) as one float panel `[k][nr]`, zero past `rows`.
fn transpose_panel(w: &[f32], k: usize, nr: usize, panel: &mut [f32]) {
    panel.fill(0.0);
    for (i, r) in w.chunks_exact(k).enumerate() {
        for (kk, v) in r.iter().enumerate() {
            panel[kk * nr + i] = *v;
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
    let threads = rayon::current_num_threads().max(1);
    let mc = m.div_ceil(threads * 2).next_multiple_of(MR).clamp(MR, 2048);
    let src = Rows::F32 { w, n, k };
    Ok(super::filled(m * n, |y| {
        y.par_chunks_mut(mc * n)
            .zip(x.par_chunks(mc * k))
            .enumerate()
            .for_each(|(i, (yc, xc))| {
                f32_chunk(xc, yc, src, bias, isa);
                // SAFETY: `f32_chunk` initialised every element of `yc`.
                let yc = unsafe { &mut *(yc as *mut [MaybeUninit<f32>] as *mut [f32]) };
                post.apply(yc, i * mc * n);
            })
    }))
}
