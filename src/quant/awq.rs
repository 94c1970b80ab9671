//! AWQ (Lin et al., "AWQ: Activation-aware Weight Quantization for LLM Compression and
//! Acceleration", MLSys 2024), with the study's settings: asymmetric codes with a zero point,
//! a scale search over 20 points and an auto-clip search over 20 points with a maximum shrink
//! of 0.5 on 512 sampled tokens.
//!
//! 1. Scale search: for every linear whose input scale folds exactly (LayerNorm -> qkv,
//!    LayerNorm -> fc1, attention values -> output projection), try
//!    `s = mean|X_j|^r / sqrt(max * min)` for `r = 0, 1/20, ..., 19/20` and keep the one whose
//!    quantized `Q(W diag(s)) diag(s)^-1` reproduces the layer's output `X W^T` best on the
//!    calibration inputs; fold it (layout.rs). fc2 is fed by GELU, which no scale commutes
//!    with, so it is not scaled (AWQ adds a scaling op to the activation there; we do not).
//! 2. Auto-clip: per row and group, clamp the weight to `[-m, m]` with
//!    `m = max|w| (1 - i/20)`, `i < 10`, minimizing the group's partial output error on 512
//!    tokens; queries and keys are not clipped (their error shows in the attention scores).
//! 3. Asymmetric min-max codes of the scaled, clipped weights.

use half::f16;

use super::layout::{apply_fold, linear_out, sq_err, Layout, TensorStore};
use super::pack::{check_weight, PackedWeight};
use super::{rtn_asymmetric, CalibData, LayerInputs, QuantContext, Quantizer, WeightSpec};
use crate::Result;

pub struct Awq {
    pub grid: usize,
    pub clip_grid: usize,
    pub max_shrink: f32,
    pub clip_tokens: usize,
}

impl Default for Awq {
    fn default() -> Self {
        Awq {
            grid: 20,
            clip_grid: 20,
            max_shrink: 0.5,
            clip_tokens: 512,
        }
    }
}

/// Asymmetric quantize-dequantize of one group, as [`rtn_asymmetric`] packs it (range
/// including 0, f16 scale).
pub(crate) fn asym_qdq(s: &[f32], bits: u8, out: &mut [f32]) {
    let levels = ((1u32 << bits) - 1) as f32;
    let lo = s.iter().fold(0f32, |m, v| m.min(*v));
    let hi = s.iter().fold(0f32, |m, v| m.max(*v));
    let scale = (hi - lo) / levels;
    let zero = if scale > 0.0 {
        (-lo / scale).round().clamp(0.0, levels)
    } else {
        0.0
    };
    let sf = f16::from_f32(scale).to_f32();
    for (o, v) in out.iter_mut().zip(s) {
        *o = if sf > 0.0 {
            ((v / sf).round_ties_even() + zero).clamp(0.0, levels) - zero
        } else {
            0.0
        } * sf;
    }
}

/// `rows` rows of `x` spread evenly over the sample (deterministic sub-sampling).
fn subsample(l: &LayerInputs, rows: usize) -> Vec<f32> {
    let t = l.rows();
    if t <= rows {
        return l.x.clone();
    }
    (0..rows)
        .flat_map(|i| {
            let r = i * t / rows;
            l.x[r * l.k..(r + 1) * l.k].iter().copied()
        })
        .collect()
}

impl Awq {
    /// The best input scale of one linear (`None`: the unscaled weight is best).
    pub fn search_scale(
        &self,
        w: &[f32],
        n: usize,
        k: usize,
        spec: &WeightSpec,
        x: &LayerInputs,
    ) -> Result<Option<Vec<f32>>> {
        let xs = subsample(x, 4 * self.clip_tokens);
        let y = linear_out(&xs, w, n, k);
        let xmean = x.mean_abs();
        let mut best: (f64, Option<Vec<f32>>) = (f64::INFINITY, None);
        for i in 0..self.grid.max(1) {
            let r = i as f32 / self.grid.max(1) as f32;
            let mut s: Vec<f32> = xmean.iter().map(|m| m.powf(r).max(1e-4)).collect();
            let (mx, mn) = s
                .iter()
                .fold((0f32, f32::INFINITY), |(a, b), v| (a.max(*v), b.min(*v)));
            let norm = (mx * mn).sqrt();
            s.iter_mut().for_each(|v| *v /= norm);
            let mut ws = w.to_vec();
            for row in ws.chunks_exact_mut(k) {
                row.iter_mut().zip(&s).for_each(|(v, s)| *v *= s);
            }
            let mut wq = rtn_asymmetric(&ws, n, k, spec)?.dequantize();
            for row in wq.chunks_exact_mut(k) {
                row.iter_mut().zip(&s).for_each(|(v, s)| *v /= s);
            }
            let e = sq_err(&linear_out(&xs, &wq, n, k), &y);
            if e < best.0 {
                best = (e, (i > 0).then_some(s));
            }
        }
        Ok(best.1)
    }

    /// Clamp each (row, group) of `w` (rows `from..n`) to the range that minimizes the group's
    /// partial output error on the sampled inputs.
    pub fn auto_clip(
        &self,
        w: &mut [f32],
        n: usize,
        k: usize,
        spec: &WeightSpec,
        x: &LayerInputs,
        from: usize,
    ) -> Result<()> {
        let g = check_weight(w, n, k, spec.group)?.min(k);
        let xs = subsample(x, self.clip_tokens);
        let t = xs.len() / k;
        let steps = ((self.max_shrink * self.clip_grid as f32) as usize).max(1);
        let mut q = vec![0f32; g];
        let mut cur = vec![0f32; g];
        for r in from..n {
            for lo in (0..k).step_by(g) {
                let hi = (lo + g).min(k);
                let org = w[r * k + lo..r * k + hi].to_vec();
                let out = |wv: &[f32]| -> Vec<f64> {
                    (0..t)
                        .map(|ti| {
                            let xr = &xs[ti * k + lo..ti * k + hi];
                            xr.iter().zip(wv).map(|(a, b)| (*a * *b) as f64).sum()
                        })
                        .collect()
                };
                let y = out(&org);
                let amax = org.iter().fold(0f32, |m, v| m.max(v.abs()));
                let mut best = (f64::INFINITY, amax);
                for i in 0..steps {
                    let m = amax * (1.0 - i as f32 / self.clip_grid as f32);
                    for (c, v) in cur[..hi - lo].iter_mut().zip(&org) {
                        *c = v.clamp(-m, m);
                    }
                    asym_qdq(&cur[..hi - lo], spec.bits, &mut q[..hi - lo]);
                    let e: f64 = out(&q[..hi - lo])
                        .iter()
                        .zip(&y)
                        .map(|(a, b)| (a - b).powi(2))
                        .sum();
                    if e < best.0 {
                        best = (e, m);
                    }
                }
                for v in &mut w[r * k + lo..r * k + hi] {
                    *v = v.clamp(-best.1, best.1);
                }
            }
        }
        Ok(())
    }

    /// Step 1 only: search and fold the input scales (an exact transform of the float model).
    pub fn scale_model(
        &self,
        model: &mut dyn TensorStore,
        layout: &Layout,
        inputs: &mut CalibData,
    ) -> Result<()> {
        for (li, lin) in layout.quantized() {
            let (Some(fold), Some(ws)) = (layout.fold_for(li), lin.spec.weight) else {
                continue;
            };
            let w = model.tensor(&lin.name)?.1.to_vec();
            let x = inputs.layer(&lin.name)?;
            if let Some(s) = self.search_scale(&w, lin.n, lin.k, &ws, x)? {
                apply_fold(model, layout, fold, &s, None)?;
                inputs.layer_mut(&lin.name)?.transform(&s, None);
            }
        }
        Ok(())
    }
}

impl Quantizer for Awq {
    fn name(&self) -> &'static str {
        "awq"
    }

    fn needs_inputs(&self) -> bool {
        true
    }

    fn prepare(
        &self,
        model: &mut dyn TensorStore,
        layout: &Layout,
        inputs: Option<&mut CalibData>,
    ) -> Result<()> {
        let inputs = self.inputs(inputs)?;
        self.scale_model(model, layout, inputs)?;
        for (_, lin) in layout.quantized() {
            let ws = lin
                .spec
                .weight
                .ok_or_else(|| Error::Invalid(format!("{}: not a quantized linear", lin.name)))?;
            let x = inputs.layer(&lin.name)?;
            let w = model.tensor_mut(&lin.name)?;
            self.auto_clip(w, lin.n, lin.k, &ws, x, lin.qk_rows)?;
        }
        Ok(())
    }

    fn quantize(
        &self,
        w: &[f32],
        n: usize,
        k: usize,
        spec: &WeightSpec,
        _cx: &QuantContext,
    ) -> Result<PackedWeight> {
        rtn_asymmetric(w, n, k, spec)
    }
}
