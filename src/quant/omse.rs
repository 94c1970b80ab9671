//! OMSE: per row or group, the clip ratio among `steps` values in `[lo, 1]` that minimizes the
//! squared error of the dequantized weights (101 values in [0.35, 1.0] in the study).

use half::f16;

use super::pack::{check_weight, pack, GroupParams, PackedWeight};
use super::{for_each_group, sym_scale, QuantContext, Quantizer, WeightSpec};
use crate::Result;

pub struct Omse {
    pub lo: f32,
    pub steps: usize,
}

impl Default for Omse {
    fn default() -> Self {
        Omse {
            lo: 0.35,
            steps: 101,
        }
    }
}

/// Squared error of symmetric quantization of `s` with scale `scale` (as stored, in f16).
fn sq_error(s: &[f32], scale: f32, qmax: f32) -> f64 {
    let scale = f16::from_f32(scale).to_f32();
    if scale <= 0.0 {
        return s.iter().map(|v| (*v as f64).powi(2)).sum();
    }
    s.iter()
        .map(|&v| {
            let q = (v / scale).round_ties_even().clamp(-qmax, qmax);
            ((q * scale - v) as f64).powi(2)
        })
        .sum()
}

impl Quantizer for Omse {
    fn name(&self) -> &'static str {
        "omse"
    }

    fn quantize(
        &self,
        w: &[f32],
        n: usize,
        k: usize,
        spec: &WeightSpec,
        _cx: &QuantContext,
    ) -> Result<PackedWeight> {
        super::pack::check_bits(spec.bits)?;
        let g = check_weight(w, n, k, spec.group)?;
        let qmax = ((1u32 << (spec.bits - 1)) - 1) as f32;
        let steps = self.steps.max(2);
        let mut params = Vec::with_capacity(n * k.div_ceil(g));
        for_each_group(w, n, k, g, |s| {
            let full = sym_scale(s, spec.bits, 1.0);
            let mut best = (f64::INFINITY, full);
            for i in 0..steps {
                let ratio = self.lo + (1.0 - self.lo) * i as f32 / (steps - 1) as f32;
                let scale = full * ratio;
                let e = sq_error(s, scale, qmax);
                if e < best.0 {
                    best = (e, scale);
                }
            }
            params.push(GroupParams {
                scale: best.1,
                zero: None,
            });
        });
        pack(w, n, k, spec.bits, spec.group, &params)
    }
}
