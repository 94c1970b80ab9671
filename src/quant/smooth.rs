//! SmoothQuant (Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training Quantization for
//! Large Language Models", ICML 2023): migrate activation outliers into the weights with a
//! per-input-channel scale `s_j = max|X_j|^alpha / max_i |W_ij|^(1 - alpha)`, so that
//! `X diag(s)^-1` is easier to quantize and `diag(s) W` absorbs the scale. As in the QuantWM
//! study it smooths the LayerNorm -> qkv and LayerNorm -> fc1 pairs, with the division folded
//! into the LayerNorm (exact), and quantizes the smoothed weights with RTN's symmetric codes.
//! It is a weight + activation method: specs without activation quantization are refused.

use super::layout::{apply_fold, Layout, Producer, TensorStore};
use super::pack::PackedWeight;
use super::{CalibData, QuantContext, QuantSpec, Quantizer, Rtn, WeightSpec};
use crate::{Error, Result};

pub struct SmoothQuant {
    alpha: f32,
}

impl SmoothQuant {
    /// `alpha` is the migration strength, in (0, 1).
    pub fn new(alpha: f32) -> Result<Self> {
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(Error::Invalid(format!(
                "SmoothQuant alpha {alpha} is outside (0, 1); the study uses 0.5 \
                 (smoothquant:alpha=0.5)"
            )));
        }
        Ok(SmoothQuant { alpha })
    }

    pub fn alpha(&self) -> f32 {
        self.alpha
    }

    /// The smoothing scales of every LayerNorm-fed quantized linear, without folding them.
    pub fn scales(
        &self,
        model: &dyn TensorStore,
        layout: &Layout,
        inputs: &CalibData,
    ) -> Result<Vec<(usize, Vec<f32>)>> {
        let mut out = Vec::new();
        for f in &layout.folds {
            let lin = &layout.linears[f.linear];
            if !matches!(f.producer, Producer::Norm { .. }) || lin.spec.weight.is_none() {
                continue;
            }
            let xmax = inputs.layer(&lin.name)?.absmax();
            let (_, w) = model.tensor(&lin.name)?;
            let mut wmax = vec![0f32; lin.k];
            for row in w.chunks_exact(lin.k) {
                for (m, v) in wmax.iter_mut().zip(row) {
                    *m = m.max(v.abs());
                }
            }
            let s = xmax
                .iter()
                .zip(&wmax)
                .map(|(x, w)| {
                    (x.max(1e-5).powf(self.alpha) / w.max(1e-5).powf(1.0 - self.alpha)).max(1e-5)
                })
                .collect();
            out.push((f.linear, s));
        }
        Ok(out)
    }
}

impl Quantizer for SmoothQuant {
    fn name(&self) -> &'static str {
        "smoothquant"
    }

    fn needs_inputs(&self) -> bool {
        true
    }

    fn supports(&self, spec: &QuantSpec) -> Result<()> {
        for (m, which) in [(spec.encoder, "encoder"), (spec.predictor, "predictor")] {
            if m.weight.is_some() && m.act.is_none() {
                return Err(Error::Invalid(format!(
                    "smoothquant moves activation outliers into the weights, so it applies to \
                     weight + activation specs (w<bits>[g<group>]a<abits>[t], e.g. w8a8, \
                     w4a8); the {which} in {spec} quantizes weights only: use rtn, omse, awq, \
                     gptq or omniquant there"
                )));
            }
        }
        Ok(())
    }

    fn prepare(
        &self,
        model: &mut dyn TensorStore,
        layout: &Layout,
        inputs: Option<&mut CalibData>,
    ) -> Result<()> {
        let inputs = self.inputs(inputs)?;
        for (li, s) in self.scales(model, layout, inputs)? {
            let fold = layout.fold_for(li).ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: no fold for its scales",
                    layout.linears[li].name
                ))
            })?;
            apply_fold(model, layout, fold, &s, None)?;
            inputs
                .layer_mut(&layout.linears[li].name)?
                .transform(&s, None);
        }
        Ok(())
    }

    fn quantize(
        &self,
        w: &[f32],
        n: usize,
        k: usize,
        spec: &WeightSpec,
        cx: &QuantContext,
    ) -> Result<PackedWeight> {
        Rtn.quantize(w, n, k, spec, cx)
    }
}
