//! Activation quantization: unsigned codes with a zero point on the inputs of the quantized
//! linears, static per-tensor (range from calibration) or dynamic per-token.

use serde::{Deserialize, Serialize};

use super::spec::ActSpec;
use crate::{Error, Result};

/// Running min/max of one linear's inputs during calibration.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActStats {
    pub min: f32,
    pub max: f32,
    pub count: u64,
}

impl Default for ActStats {
    fn default() -> Self {
        ActStats {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            count: 0,
        }
    }
}

impl ActStats {
    pub fn observe(&mut self, x: &[f32]) {
        for &v in x {
            // NaN is kept (min/max ignore it) but flagged by `params`.
            if v.is_nan() {
                self.min = f32::NAN;
            }
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count += x.len() as u64;
    }

    /// Quantization parameters for this range.
    pub fn params(&self, bits: u8, name: &str) -> Result<ActParams> {
        if self.count == 0 {
            return Err(Error::Invalid(format!(
                "no calibration statistics for {name}: run calibration before static \
                 activation quantization"
            )));
        }
        if !self.min.is_finite() || !self.max.is_finite() {
            return Err(Error::Invalid(format!(
                "calibration statistics of {name} are not finite (min {}, max {}): the float \
                 model produced NaN or infinite activations",
                self.min, self.max
            )));
        }
        Ok(ActParams::from_range(self.min, self.max, bits))
    }
}

/// Input statistics of every linear of one model, keyed by weight name, gathered while that
/// model runs (calibration). The model being calibrated owns it, so no other forward in the
/// process can add to it; a mutex because forwards take `&self`.
#[derive(Default)]
pub struct ActObserver {
    stats: std::sync::Mutex<std::collections::BTreeMap<String, ActStats>>,
    /// Sampled input rows for the calibrated methods (`None`: statistics only).
    sampler: std::sync::Mutex<Option<super::InputSampler>>,
}

impl std::fmt::Debug for ActObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActObserver").finish_non_exhaustive()
    }
}

impl ActObserver {
    /// An observer that also samples input rows into `s` ([`ActObserver::take_sampler`]).
    pub fn sampling(s: super::InputSampler) -> Self {
        ActObserver {
            sampler: std::sync::Mutex::new(Some(s)),
            ..Default::default()
        }
    }

    pub fn take_sampler(&self) -> Option<super::InputSampler> {
        self.sampler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub fn observe(&self, name: &str, x: &[f32]) {
        if let Some(s) = self
            .sampler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            s.observe(name, x);
        }
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .observe(x);
    }

    /// The statistics gathered so far (the observer is left empty).
    pub fn take(&self) -> std::collections::BTreeMap<String, ActStats> {
        std::mem::take(&mut *self.stats.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// `code = clamp(round(x * inv_scale) + zero, 0, 2^bits - 1)`, `x' = (code - zero) * scale`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActParams {
    pub scale: f32,
    pub inv_scale: f32,
    pub zero: f32,
    pub bits: u8,
}

impl ActParams {
    /// The same arithmetic as `shaders/quant_act.wgsl` (the range always includes 0).
    pub fn from_range(lo: f32, hi: f32, bits: u8) -> Self {
        let levels = ((1u32 << bits) - 1) as f32;
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let mut scale = (hi - lo) * (1.0 / levels);
        if scale <= 0.0 {
            scale = 1.0;
        }
        let inv_scale = 1.0 / scale;
        let zero = (-lo * inv_scale).round_ties_even().clamp(0.0, levels);
        ActParams {
            scale,
            inv_scale,
            zero,
            bits,
        }
    }

    /// Check parameters read from a file: supported bits, a positive finite scale with its
    /// inverse, an integral zero point within the code range.
    pub fn validate(&self) -> Result<()> {
        if !super::spec::ACT_BITS.contains(&self.bits) {
            return Err(Error::Invalid(format!(
                "{} activation bits unsupported; use one of {:?}",
                self.bits,
                super::spec::ACT_BITS
            )));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::Invalid(format!(
                "scale {} must be positive and finite",
                self.scale
            )));
        }
        if !(self.inv_scale.is_finite() && (self.inv_scale * self.scale - 1.0).abs() <= 1e-5) {
            return Err(Error::Invalid(format!(
                "inv_scale {} is not 1 / scale (scale {})",
                self.inv_scale, self.scale
            )));
        }
        let levels = ((1u32 << self.bits) - 1) as f32;
        if !(self.zero >= 0.0 && self.zero <= levels && self.zero.fract() == 0.0) {
            return Err(Error::Invalid(format!(
                "zero point {} is not an integer in 0..={levels}",
                self.zero
            )));
        }
        Ok(())
    }

    pub fn code(&self, v: f32) -> u32 {
        let levels = ((1u32 << self.bits) - 1) as f32;
        ((v * self.inv_scale).round_ties_even() + self.zero).clamp(0.0, levels) as u32
    }

    pub fn fake(&self, v: f32) -> f32 {
        (self.code(v) as f32 - self.zero) * self.scale
    }
}

/// Quantize-dequantize `x[rows, k]` in place (the CPU reference of the activation path).
pub fn fake_quant(x: &mut [f32], k: usize, spec: &ActSpec, stat: Option<&ActParams>) -> Result<()> {
    if k == 0 || !x.len().is_multiple_of(k) {
        return Err(Error::Shape(format!(
            "activation of {} values is not rows of {k}",
            x.len()
        )));
    }
    for row in x.chunks_mut(k) {
        let p = if spec.dynamic {
            let lo = row.iter().fold(0f32, |m, v| m.min(*v));
            let hi = row.iter().fold(0f32, |m, v| m.max(*v));
            ActParams::from_range(lo, hi, spec.bits)
        } else {
            *stat.ok_or_else(|| {
                Error::Invalid("static activation quantization needs calibrated params".into())
            })?
        };
        for v in row.iter_mut() {
            *v = p.fake(*v);
        }
    }
    Ok(())
}
