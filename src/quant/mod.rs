//! Post-training quantization: the spec language, the packed weight format, the methods
//! behind one [`Quantizer`] trait, and activation quantization. This is a leaf module: it works
//! on plain slices and knows nothing of the model (quantizing a whole model and its file are
//! `model::quantized`). A new method is one new file
//! implementing [`Quantizer`] plus one line in [`method`].

pub mod act;
mod awq;
pub mod calib_data;
mod gptq;
pub mod layout;
mod omni;
mod omse;
pub mod pack;
mod rtn;
mod smooth;
pub mod spec;

pub use act::{ActObserver, ActParams, ActStats};
pub use awq::Awq;
pub use calib_data::{CalibData, InputSampler, LayerInputs};
pub use gptq::Gptq;
pub use layout::{Layout, TensorStore};
pub use omni::OmniQuant;
pub use omse::Omse;
pub use pack::PackedWeight;
pub use rtn::{rtn_asymmetric, Rtn};
pub use smooth::SmoothQuant;
pub use spec::{ActSpec, ModuleQuant, QuantSpec, WeightSpec};

use crate::{Error, Result};

/// Everything a method may use besides the weight itself.
#[derive(Clone, Copy, Default)]
pub struct QuantContext<'a> {
    /// Statistics of this linear's inputs gathered during calibration (AWQ/SmoothQuant-style
    /// methods need them; RTN and OMSE ignore them).
    pub input_stats: Option<&'a ActStats>,
    /// Sampled calibration inputs of this linear, as the linear sees them after
    /// [`Quantizer::prepare`] (GPTQ's Hessian).
    pub inputs: Option<&'a LayerInputs>,
}

/// A weight quantization method.
pub trait Quantizer: Send + Sync {
    fn name(&self) -> &'static str;

    /// Whether the method needs calibration inputs ([`CalibData`]) of every quantized linear.
    fn needs_inputs(&self) -> bool {
        false
    }

    /// Refuse a spec the method does not apply to, saying which ones it does.
    fn supports(&self, _spec: &QuantSpec) -> Result<()> {
        Ok(())
    }

    /// Model-level step before any layer is quantized: equivalence transforms folded into the
    /// model (exact in float) and weight clipping learned on the calibration inputs, which it
    /// updates to what the transformed linears see. The default does nothing.
    fn prepare(
        &self,
        _model: &mut dyn TensorStore,
        _layout: &Layout,
        _inputs: Option<&mut CalibData>,
    ) -> Result<()> {
        Ok(())
    }

    /// The calibration inputs a method that [`needs_inputs`](Self::needs_inputs) was given,
    /// or an error naming the method.
    fn inputs<'a>(&self, inputs: Option<&'a mut CalibData>) -> Result<&'a mut CalibData> {
        inputs.ok_or_else(|| {
            Error::Invalid(format!(
                "{} needs calibration inputs of every quantized linear",
                self.name()
            ))
        })
    }

    /// Quantize `w[n, k]` (row-major, K contiguous) to packed codes.
    fn quantize(
        &self,
        w: &[f32],
        n: usize,
        k: usize,
        spec: &WeightSpec,
        cx: &QuantContext,
    ) -> Result<PackedWeight>;
}

pub const METHODS: [&str; 7] = [
    "rtn",
    "omse",
    "awq",
    "smoothquant[:alpha=A]",
    "omniquant",
    "gptq",
    "gptq:act-order",
];

/// The method registered under `name`: a method name, optionally followed by `:` and its
/// options (`smoothquant:alpha=0.7`, `gptq:act-order`).
pub fn method(name: &str) -> Result<Box<dyn Quantizer>> {
    let lower = name.trim().to_ascii_lowercase();
    let (base, opts) = lower.split_once(':').unwrap_or((&lower, ""));
    let unknown_opt = || {
        Err(Error::Invalid(format!(
            "method {name:?}: unknown option {opts:?}; available methods: {}",
            METHODS.join(", ")
        )))
    };
    match (base, opts) {
        ("rtn", "") => Ok(Box::new(Rtn)),
        ("omse", "") => Ok(Box::new(Omse::default())),
        ("awq", "") => Ok(Box::new(Awq::default())),
        ("omniquant", "") => Ok(Box::new(OmniQuant::default())),
        ("gptq", "") => Ok(Box::new(Gptq::default())),
        ("gptq", "act-order") => Ok(Box::new(Gptq {
            act_order: true,
            ..Gptq::default()
        })),
        ("smoothquant", "") => Ok(Box::new(SmoothQuant::new(0.5)?)),
        ("smoothquant", o) => match o.strip_prefix("alpha=").map(str::parse::<f32>) {
            Some(Ok(a)) => Ok(Box::new(SmoothQuant::new(a)?)),
            Some(Err(_)) => Err(Error::Invalid(format!(
                "method {name:?}: alpha must be a number in (0, 1), e.g. smoothquant:alpha=0.5"
            ))),
            None => unknown_opt(),
        },
        ("rtn" | "omse" | "awq" | "omniquant" | "gptq", _) => unknown_opt(),
        _ => Err(Error::Invalid(format!(
            "unknown quantization method {name:?}; available: {}",
            METHODS.join(", ")
        ))),
    }
}

/// Symmetric scale for a slice at clip `ratio`: `ratio * max|w| / qmax`.
pub(crate) fn sym_scale(w: &[f32], bits: u8, ratio: f32) -> f32 {
    let qmax = ((1u32 << (bits - 1)) - 1) as f32;
    let amax = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    ratio * amax / qmax
}

/// Iterate the (row, group) slices of `w[n, k]` for group size `g` (ragged last group).
pub(crate) fn for_each_group<F: FnMut(&[f32])>(w: &[f32], n: usize, k: usize, g: usize, mut f: F) {
    for r in 0..n {
        let row = &w[r * k..(r + 1) * k];
        for start in (0..k).step_by(g) {
            f(&row[start..(start + g).min(k)]);
        }
    }
}
