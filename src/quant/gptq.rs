//! GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
//! Transformers", ICLR 2023): quantize a weight one input column at a time and spread each
//! column's rounding error over the columns not yet quantized, weighted by the inverse of the
//! calibration Hessian `H = X^T X / T` of the layer's inputs.
//!
//! As in the paper's algorithm: dampening `H + damp * mean(diag H) * I`, dead inputs
//! (`H_jj = 0`) zeroed, the upper Cholesky factor of `H^-1` taken once, and lazy batch updates
//! (error compensation inside a block of 128 columns, the rest of the matrix updated once per
//! block). Optional act-order processes columns by decreasing `H_jj`; with groups it uses
//! "static groups" (each group's scale fitted to the original weights before any update), so
//! the groups stay contiguous in the original column order that the packed format needs.
//! Codes are the study's symmetric per-row/per-group codes, computed against the f16 scale that
//! is stored, so the compensated values are exactly what the kernels dequantize. Linear algebra
//! runs in f64.

use half::f16;

use super::pack::{check_weight, pack, GroupParams, PackedWeight};
use super::{QuantContext, Quantizer, WeightSpec};
use crate::{Error, Result};

pub struct Gptq {
    /// Dampening as a fraction of the mean Hessian diagonal (the paper's 0.01).
    pub damp: f64,
    pub act_order: bool,
    /// Columns per lazy batch (a multiple of every group size).
    pub block: usize,
}

impl Default for Gptq {
    fn default() -> Self {
        Gptq {
            damp: 0.01,
            act_order: false,
            block: 128,
        }
    }
}

/// The symmetric scale of a slice, rounded to the f16 that is stored.
fn scale_of(w: impl Iterator<Item = f64>, qmax: f64) -> f64 {
    let amax = w.fold(0f64, |m, v| m.max(v.abs()));
    f16::from_f32((amax / qmax) as f32).to_f32() as f64
}

fn qdq(v: f64, s: f64, qmax: f64) -> f64 {
    if s <= 0.0 {
        return 0.0;
    }
    (v / s).round_ties_even().clamp(-qmax, qmax) * s
}

/// In-place lower Cholesky factor of the SPD matrix `a [n, n]` (upper part zeroed).
pub(crate) fn cholesky(a: &mut [f64], n: usize) -> Result<()> {
    for j in 0..n {
        let mut d = a[j * n + j];
        for p in 0..j {
            d -= a[j * n + p] * a[j * n + p];
        }
        if d.is_nan() || d <= 0.0 || !d.is_finite() {
            return Err(Error::Invalid(format!(
                "Hessian is not positive definite at column {j}"
            )));
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for p in 0..j {
                s -= a[i * n + p] * a[j * n + p];
            }
            a[i * n + j] = s / d;
        }
        for p in j + 1..n {
            a[j * n + p] = 0.0;
        }
    }
    Ok(())
}

/// Upper factor `U` with `H^-1 = U^T U`, from SPD `h`.
fn inverse_cholesky_upper(mut h: Vec<f64>, n: usize) -> Result<Vec<f64>> {
    cholesky(&mut h, n)?;
    // Linv: inverse of the lower factor, by forward substitution column by column.
    let mut li = vec![0f64; n * n];
    for c in 0..n {
        for i in c..n {
            let mut s = if i == c { 1.0 } else { 0.0 };
            for p in c..i {
                s -= h[i * n + p] * li[p * n + c];
            }
            li[i * n + c] = s / h[i * n + i];
        }
    }
    // H^-1 = Linv^T Linv.
    let mut hinv = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (i.max(j)..n).map(|p| li[p * n + i] * li[p * n + j]).sum();
            hinv[i * n + j] = s;
            hinv[j * n + i] = s;
        }
    }
    cholesky(&mut hinv, n)?;
    // Transpose the lower factor L' (H^-1 = L' L'^T) into U = L'^T.
    let mut u = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            u[j * n + i] = hinv[i * n + j];
        }
    }
    Ok(u)
}

impl Gptq {
    /// The GPTQ-compensated dequantized weight `[n, k]` and its per-(row, group) scales, from
    /// inputs `x [rows, k]`.
    pub fn solve(
        &self,
        w: &[f32],
        n: usize,
        k: usize,
        spec: &WeightSpec,
        x: &[f32],
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let g = check_weight(w, n, k, spec.group)?;
        let g = g.min(k);
        let gpr = k.div_ceil(g);
        let qmax = ((1u32 << (spec.bits - 1)) - 1) as f64;
        let rows = x.len() / k;
        if rows == 0 || !x.len().is_multiple_of(k) {
            return Err(Error::Shape(format!(
                "GPTQ needs calibration inputs of width {k}, got {} values",
                x.len()
            )));
        }
        let mut h = vec![0f64; k * k];
        for r in x.chunks_exact(k) {
            for i in 0..k {
                let xi = r[i] as f64;
                if xi == 0.0 {
                    continue;
                }
                for j in 0..=i {
                    h[i * k + j] += xi * r[j] as f64;
                }
            }
        }
        for i in 0..k {
            for j in 0..=i {
                h[i * k + j] /= rows as f64;
                h[j * k + i] = h[i * k + j];
            }
        }
        let mut wd: Vec<f64> = w.iter().map(|v| *v as f64).collect();
        for j in 0..k {
            if h[j * k + j] == 0.0 {
                h[j * k + j] = 1.0;
                for r in 0..n {
                    wd[r * k + j] = 0.0;
                }
            }
        }
        // Static scales (act-order with groups, or per-channel): from the weights before any
        // update, as GPTQ fits a per-channel quantizer once up front.
        let fit = |wd: &[f64], r: usize, gi: usize| -> f64 {
            let lo = gi * g;
            scale_of(
                wd[r * k + lo..r * k + ((gi + 1) * g).min(k)]
                    .iter()
                    .copied(),
                qmax,
            )
        };
        let mut scales = vec![0f64; n * gpr];
        let static_groups = self.act_order || spec.group.is_none();
        if static_groups {
            for r in 0..n {
                for gi in 0..gpr {
                    scales[r * gpr + gi] = fit(&wd, r, gi);
                }
            }
        }
        let perm: Vec<usize> = if self.act_order {
            let mut p: Vec<usize> = (0..k).collect();
            p.sort_by(|&a, &b| h[b * k + b].total_cmp(&h[a * k + a]).then(a.cmp(&b)));
            p
        } else {
            (0..k).collect()
        };
        // Permuted copies: W columns and H rows/columns in processing order.
        let mut wp = vec![0f64; n * k];
        for r in 0..n {
            for (c, &p) in perm.iter().enumerate() {
                wp[r * k + c] = wd[r * k + p];
            }
        }
        let mut hp = vec![0f64; k * k];
        for (i, &pi) in perm.iter().enumerate() {
            for (j, &pj) in perm.iter().enumerate() {
                hp[i * k + j] = h[pi * k + pj];
            }
        }
        let mean_diag = (0..k).map(|i| hp[i * k + i]).sum::<f64>() / k as f64;
        let mut damp = self.damp * mean_diag;
        let u = loop {
            let mut hd = hp.clone();
            for i in 0..k {
                hd[i * k + i] += damp;
            }
            match inverse_cholesky_upper(hd, k) {
                Ok(u) => break u,
                Err(e) if damp < mean_diag * 10.0 => {
                    let _ = e;
                    damp = damp.max(1e-12) * 10.0;
                }
                Err(e) => return Err(Error::Invalid(format!("GPTQ: {e} even with dampening"))),
            }
        };
        let mut q = vec![0f64; n * k];
        let block = self.block.max(g).div_ceil(g) * g;
        let mut err = vec![0f64; n * block];
        let mut i1 = 0;
        while i1 < k {
            let i2 = (i1 + block).min(k);
            for i in i1..i2 {
                let col = perm[i];
                let gi = col / g;
                if !static_groups && col.is_multiple_of(g) {
                    // Group scales from the current (compensated) weights, as the group starts.
                    for r in 0..n {
                        let end = (col + g).min(k);
                        scales[r * gpr + gi] = scale_of((col..end).map(|c| wp[r * k + c]), qmax);
                    }
                }
                let d = u[i * k + i];
                for r in 0..n {
                    let v = wp[r * k + i];
                    let qv = qdq(v, scales[r * gpr + gi], qmax);
                    q[r * k + col] = qv;
                    let e = (v - qv) / d;
                    err[r * block + (i - i1)] = e;
                    for j in i + 1..i2 {
                        wp[r * k + j] -= e * u[i * k + j];
                    }
                }
            }
            // Lazy batch update of every column after the block.
            for r in 0..n {
                for j in i2..k {
                    let mut s = 0f64;
                    for i in i1..i2 {
                        s += err[r * block + (i - i1)] * u[i * k + j];
                    }
                    wp[r * k + j] -= s;
                }
            }
            i1 = i2;
        }
        Ok((
            q.iter().map(|v| *v as f32).collect(),
            scales.iter().map(|v| *v as f32).collect(),
        ))
    }
}

impl Quantizer for Gptq {
    fn name(&self) -> &'static str {
        if self.act_order {
            "gptq-act"
        } else {
            "gptq"
        }
    }

    fn needs_inputs(&self) -> bool {
        true
    }

    fn quantize(
        &self,
        w: &[f32],
        n: usize,
        k: usize,
        spec: &WeightSpec,
        cx: &QuantContext,
    ) -> Result<PackedWeight> {
        super::pack::check_bits(spec.bits)?;
        let inputs = cx.inputs.ok_or_else(|| {
            Error::Invalid("GPTQ needs calibration inputs of every quantized linear".into())
        })?;
        let (qw, scales) = self.solve(w, n, k, spec, &inputs.x)?;
        let params: Vec<GroupParams> = scales
            .into_iter()
            .map(|scale| GroupParams { scale, zero: None })
            .collect();
        pack(&qw, n, k, spec.bits, spec.group, &params)
    }
}
