//! Packed low-bit weights: the on-disk and on-GPU format (docs/QUANT.md).
//!
//! A weight `[N, K]` (K contiguous) is stored as unsigned codes `c` with
//! `w = (c - z) * s`, one `(s, z)` per output row and group of `G` inputs. Symmetric (signed)
//! codes use the implicit zero point `z = 2^(bits-1)`; asymmetric codes store `z`. Scales and
//! zero points are f16 (two per u32, low half first).
//!
//! Codes are split into bit planes whose widths are powers of two, so a word never straddles a
//! group: 2 = [2], 3 = [2, 1], 4 = [4], 6 = [4, 2], 8 = [8] (low bits first). In a plane of `p`
//! bits, code `k` of a row sits in word `k / (32 / p)` at bit `(k % (32 / p)) * p`,
//! least-significant first. Rows are padded to `K_pad = ceil(K / 32) * 32` codes so every
//! plane's row is whole words; padded codes hold the zero point and dequantize to 0. The last
//! group of a row is ragged when `G` does not divide `K` (the predictor's 404 = 3 x 128 + 20):
//! it covers `[G * (groups - 1), K)` and its scale is fitted to those inputs only.

use half::f16;
use serde::{Deserialize, Serialize};

use super::spec::WEIGHT_BITS;
use crate::{Error, Result};

/// Bit planes (low bits first) for a bit-width.
pub fn planes(bits: u8) -> &'static [u32] {
    match bits {
        2 => &[2],
        3 => &[2, 1],
        4 => &[4],
        6 => &[4, 2],
        8 => &[8],
        _ => &[],
    }
}

pub fn check_bits(bits: u8) -> Result<()> {
    if WEIGHT_BITS.contains(&bits) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "weight bit-width {bits} unsupported; use one of {WEIGHT_BITS:?}"
        )))
    }
}

/// Packed weight, ready to upload. `codes` holds every plane, plane after plane, each `[N,
/// K_pad * p / 32]` words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackedWeight {
    pub n: usize,
    pub k: usize,
    pub bits: u8,
    /// Group size along K; equals `k_pad` for per-channel scales.
    pub group: usize,
    pub per_channel: bool,
    pub codes: Vec<u32>,
    /// f16 scales, `[N, groups]`, two per u32.
    pub scales: Vec<u32>,
    /// f16 zero points `[N, groups]` for asymmetric codes; `None` for symmetric.
    pub zeros: Option<Vec<u32>>,
}

pub fn k_pad(k: usize) -> usize {
    k.div_ceil(32) * 32
}

fn f16_at(words: &[u32], i: usize) -> f32 {
    let w = words[i / 2];
    let h = if i.is_multiple_of(2) {
        w & 0xffff
    } else {
        w >> 16
    };
    f16::from_bits(h as u16).to_f32()
}

fn pack_f16(vals: &[f32]) -> Vec<u32> {
    let mut out = vec![0u32; vals.len().div_ceil(2)];
    for (i, v) in vals.iter().enumerate() {
        let h = f16::from_f32(*v).to_bits() as u32;
        out[i / 2] |= if i % 2 == 0 { h } else { h << 16 };
    }
    out
}

impl PackedWeight {
    pub fn k_pad(&self) -> usize {
        k_pad(self.k)
    }

    pub fn groups_per_row(&self) -> usize {
        self.k.div_ceil(self.group)
    }

    pub fn symmetric(&self) -> bool {
        self.zeros.is_none()
    }

    /// Words per row of each plane, and each plane's offset into `codes`.
    pub fn plane_layout(&self) -> Vec<(u32, usize, usize)> {
        let mut off = 0;
        planes(self.bits)
            .iter()
            .map(|&p| {
                let wpr = self.k_pad() * p as usize / 32;
                let l = (p, wpr, off);
                off += wpr * self.n;
                l
            })
            .collect()
    }

    pub fn code(&self, row: usize, k: usize) -> u32 {
        let mut c = 0;
        let mut shift = 0;
        for (p, wpr, off) in self.plane_layout() {
            let cpw = 32 / p as usize;
            let word = self.codes[off + row * wpr + k / cpw];
            let v = (word >> ((k % cpw) as u32 * p)) & ((1u32 << p) - 1);
            c |= v << shift;
            shift += p;
        }
        c
    }

    pub fn scale(&self, row: usize, group: usize) -> f32 {
        f16_at(&self.scales, row * self.groups_per_row() + group)
    }

    pub fn zero(&self, row: usize, group: usize) -> f32 {
        match &self.zeros {
            Some(z) => f16_at(z, row * self.groups_per_row() + group),
            None => (1u32 << (self.bits - 1)) as f32,
        }
    }

    /// The exact f32 values the GPU kernels compute: `(c - z) * s`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.k];
        for r in 0..self.n {
            for g in 0..self.groups_per_row() {
                let (s, z) = (self.scale(r, g), self.zero(r, g));
                for k in g * self.group..((g + 1) * self.group).min(self.k) {
                    out[r * self.k + k] = (self.code(r, k) as f32 - z) * s;
                }
            }
        }
        out
    }

    /// GPU bytes of this weight: codes, scales, zero points.
    pub fn bytes(&self) -> usize {
        4 * (self.codes.len() + self.scales.len() + self.zeros.as_ref().map_or(0, |z| z.len()))
    }

    /// The lengths in u32 words that `codes` and `scales` (and `zeros`) must have, from the
    /// sizes, bit-width and group alone, in checked arithmetic: these numbers come from files.
    pub fn expected_words(&self) -> Result<(usize, usize)> {
        check_bits(self.bits)?;
        let shape = format!(
            "[{}, {}] at {} bits, group {}",
            self.n, self.k, self.bits, self.group
        );
        if self.group == 0 {
            return Err(Error::Invalid(format!("{shape}: group size 0")));
        }
        if self.per_channel {
            if Some(self.group) != self.k.checked_next_multiple_of(32) {
                return Err(Error::Invalid(format!(
                    "{shape}: a per-channel group must be the padded row width"
                )));
            }
        } else if !self.group.is_multiple_of(32) {
            return Err(Error::Invalid(format!(
                "{shape}: group size {} is not a multiple of 32",
                self.group
            )));
        }
        let overflow = || Error::Invalid(format!("{shape}: the sizes overflow"));
        let k_pad = self.k.checked_next_multiple_of(32).ok_or_else(overflow)?;
        // Bits per row over all planes = k_pad * bits (planes add up to the bit-width).
        let words_per_row = k_pad.checked_mul(self.bits as usize).ok_or_else(overflow)? / 32;
        let codes = words_per_row.checked_mul(self.n).ok_or_else(overflow)?;
        let scales = self
            .n
            .checked_mul(self.k.div_ceil(self.group))
            .ok_or_else(overflow)?
            .div_ceil(2);
        Ok((codes, scales))
    }

    /// Check internal consistency (lengths, bit-width), e.g. after loading from a file.
    pub fn validate(&self, name: &str) -> Result<()> {
        let (want_codes, want_s) = self
            .expected_words()
            .map_err(|e| Error::Invalid(format!("quantized weight {name}: {e}")))?;
        let bad = |what: &str, want: usize, got: usize| {
            Err(Error::Invalid(format!(
                "quantized weight {name}: {what} has {got} words, expected {want} for [{}, {}] \
                 at {} bits, group {}",
                self.n, self.k, self.bits, self.group
            )))
        };
        if self.codes.len() != want_codes {
            return bad("codes", want_codes, self.codes.len());
        }
        if self.scales.len() != want_s {
            return bad("scales", want_s, self.scales.len());
        }
        if let Some(z) = &self.zeros {
            if z.len() != want_s {
                return bad("zero points", want_s, z.len());
            }
        }
        Ok(())
    }
}

/// Per-(row, group) quantization parameters chosen by a method, and the codes they imply.
pub struct GroupParams {
    pub scale: f32,
    pub zero: Option<f32>,
}

/// Shape checks shared by every quantizer: finite weights, sizes, group.
pub fn check_weight(w: &[f32], n: usize, k: usize, group: Option<usize>) -> Result<usize> {
    if w.len() != n * k {
        return Err(Error::Shape(format!(
            "weight has {} values, expected [{n}, {k}] = {}",
            w.len(),
            n * k
        )));
    }
    if let Some(i) = w.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "weight [{n}, {k}] holds a non-finite value {} at row {}, column {}",
            w[i],
            i / k,
            i % k
        )));
    }
    match group {
        None => Ok(k_pad(k)),
        Some(g) if g > k => Err(Error::Invalid(format!(
            "group size {g} is larger than the input width {k}; use a smaller group or \
             per-channel"
        ))),
        Some(g) if g % 32 != 0 || g == 0 => Err(Error::Invalid(format!(
            "group size {g} must be a positive multiple of 32"
        ))),
        Some(g) => Ok(g),
    }
}

/// Pack codes for `w[N, K]` with the given per-(row, group) parameters. Codes are
/// `round(w / s) + z` clamped to the code range, computed against the f16-rounded scale and
/// zero point that are stored, so packing and dequantization agree exactly.
pub fn pack(
    w: &[f32],
    n: usize,
    k: usize,
    bits: u8,
    group: Option<usize>,
    params: &[GroupParams],
) -> Result<PackedWeight> {
    check_bits(bits)?;
    let g = check_weight(w, n, k, group)?;
    let gpr = k.div_ceil(g);
    if params.len() != n * gpr {
        return Err(Error::Shape(format!(
            "{} group parameters for [{n}, {k}] with group {g} ({} expected)",
            params.len(),
            n * gpr
        )));
    }
    let symmetric = params.iter().all(|p| p.zero.is_none());
    let scales: Vec<f32> = params.iter().map(|p| p.scale).collect();
    for (i, s) in scales.iter().enumerate() {
        if !s.is_finite() || f16::from_f32(*s).to_f32().is_infinite() || *s < 0.0 {
            return Err(Error::Invalid(format!(
                "scale {s} of row {}, group {} does not fit f16 (weights too large?)",
                i / gpr,
                i % gpr
            )));
        }
    }
    let zeros: Option<Vec<f32>> = (!symmetric).then(|| {
        params
            .iter()
            .map(|p| p.zero.unwrap_or(0.0).round())
            .collect()
    });
    let mut pw = PackedWeight {
        n,
        k,
        bits,
        group: g,
        per_channel: group.is_none(),
        codes: Vec::new(),
        scales: pack_f16(&scales),
        zeros: zeros.as_ref().map(|z| pack_f16(z)),
    };
    let layout = pw.plane_layout();
    let total: usize = layout.iter().map(|(_, w, _)| w * n).sum();
    pw.codes = vec![0u32; total];
    let cmax = ((1u32 << bits) - 1) as f32;
    // Symmetric codes stay within +-qmax around the zero point: [1, 2^bits - 1].
    let cmin = if symmetric { 1.0 } else { 0.0 };
    for r in 0..n {
        for kk in 0..pw.k_pad() {
            let gi = (kk / g).min(gpr - 1);
            let (s, z) = (pw.scale(r, gi), pw.zero(r, gi));
            let c = if kk < k && s > 0.0 {
                (w[r * k + kk] / s).round_ties_even() + z
            } else {
                z
            };
            let c = c.clamp(cmin, cmax) as u32;
            let mut shift = 0;
            for &(p, wpr, off) in &layout {
                let cpw = 32 / p as usize;
                let v = (c >> shift) & ((1u32 << p) - 1);
                pw.codes[off + r * wpr + kk / cpw] |= v << ((kk % cpw) as u32 * p);
                shift += p;
            }
        }
    }
    Ok(pw)
}
