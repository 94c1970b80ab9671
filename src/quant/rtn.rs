//! RTN: round-to-nearest with min-max scales (the study's baseline).

use super::pack::{check_weight, pack, GroupParams, PackedWeight};
use super::{for_each_group, sym_scale, QuantContext, Quantizer, WeightSpec};
use crate::Result;

/// Symmetric min-max: `s = max|w| / qmax` per row or group.
pub struct Rtn;

impl Quantizer for Rtn {
    fn name(&self) -> &'static str {
        "rtn"
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
        let mut params = Vec::with_capacity(n * k.div_ceil(g));
        for_each_group(w, n, k, g, |s| {
            params.push(GroupParams {
                scale: sym_scale(s, spec.bits, 1.0),
                zero: None,
            })
        });
        pack(w, n, k, spec.bits, spec.group, &params)
    }
}

/// Asymmetric min-max codes with a zero point (the format AWQ-style methods use):
/// `s = (max - min) / (2^bits - 1)`, `z = round(-min / s)`.
pub fn rtn_asymmetric(w: &[f32], n: usize, k: usize, spec: &WeightSpec) -> Result<PackedWeight> {
    super::pack::check_bits(spec.bits)?;
    let g = check_weight(w, n, k, spec.group)?;
    let levels = ((1u32 << spec.bits) - 1) as f32;
    let mut params = Vec::with_capacity(n * k.div_ceil(g));
    for_each_group(w, n, k, g, |s| {
        let lo = s.iter().fold(0f32, |m, v| m.min(*v));
        let hi = s.iter().fold(0f32, |m, v| m.max(*v));
        let scale = (hi - lo) / levels;
        let zero = if scale > 0.0 {
            (-lo / scale).round().clamp(0.0, levels)
        } else {
            0.0
        };
        params.push(GroupParams {
            scale,
            zero: Some(zero),
        })
    });
    pack(w, n, k, spec.bits, spec.group, &params)
}
