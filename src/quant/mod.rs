//! Post-training quantization: the spec language, the packed weight format, the methods
//! behind one [`Quantizer`] trait, and activation quantization. This is a leaf module: it works
//! on plain slices and knows nothing of the model (quantizing a whole model and its file are
//! `model::quantized`). A new method is one new file
//! implementing [`Quantizer`] plus one line in [`method`].

pub mod act;
mod omse;
pub mod pack;
mod rtn;
pub mod spec;

pub use act::{ActObserver, ActParams, ActStats};
pub use omse::Omse;
pub use pack::PackedWeight;
pub use rtn::{rtn_asymmetric, Rtn};
pub use spec::{ActSpec, ModuleQuant, QuantSpec, WeightSpec};

use crate::{Error, Result};

/// Everything a method may use besides the weight itself.
#[derive(Clone, Copy, Default)]
pub struct QuantContext<'a> {
    /// Statistics of this linear's inputs gathered during calibration (AWQ/SmoothQuant-style
    /// methods need them; RTN and OMSE ignore them).
    pub input_stats: Option<&'a ActStats>,
}

/// A weight quantization method.
pub trait Quantizer: Send + Sync {
    fn name(&self) -> &'static str;

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

pub const METHODS: [&str; 2] = ["rtn", "omse"];

/// The method registered under `name`.
pub fn method(name: &str) -> Result<Box<dyn Quantizer>> {
    match name.to_ascii_lowercase().as_str() {
        "rtn" => Ok(Box::new(Rtn)),
        "omse" => Ok(Box::new(Omse::default())),
        other => Err(Error::Invalid(format!(
            "unknown quantization method {other:?}; available: {}",
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
