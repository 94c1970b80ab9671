//! What model-level methods (SmoothQuant, AWQ, OmniQuant) see of a model: its quantized
//! linears and the places where a per-input-channel scale (and shift) of a linear's input can be
//! folded *exactly* into the op that produces that input. The model describes itself with a
//! [`Layout`] and lends its tensors through [`TensorStore`], so this module stays a leaf that
//! knows no model type.
//!
//! Folds, for `x' = (x - shift) / scale` on the consumer's input and `W' = W diag(scale)`,
//! `b' = b + W shift` on the consumer:
//! - a LayerNorm producer: `g' = g / scale`, `beta' = (beta - shift) / scale`;
//! - the value rows of a fused qkv linear feeding attention's output projection: attention
//!   output is `P V` with rows of `P` summing to 1, so dividing the value rows (and their bias)
//!   by `scale` divides the projection's input channels by `scale` (no shift: it is not used).
//!
//! The MLP's second linear is fed by GELU, which no per-channel scale commutes with; methods
//! leave its input unscaled (docs/QUANT.md).

use super::spec::ModuleQuant;
use crate::{Error, Result};

/// Named float tensors of a model, read and written in place.
pub trait TensorStore {
    /// Shape and values of tensor `name`.
    fn tensor(&self, name: &str) -> Result<(Vec<usize>, &[f32])>;
    fn tensor_mut(&mut self, name: &str) -> Result<&mut [f32]>;
}

/// A quantized linear: `y = x W^T + b`, `W [n, k]`.
#[derive(Clone, Debug)]
pub struct QLinear {
    pub name: String,
    pub bias: Option<String>,
    pub n: usize,
    pub k: usize,
    pub spec: ModuleQuant,
    /// Leading output rows that are attention queries and keys (their error is judged through
    /// the attention scores, not the linear's output, so AWQ does not clip them).
    pub qk_rows: usize,
}

/// What produces a linear's input and can absorb a per-channel scale of it.
#[derive(Clone, Debug)]
pub enum Producer {
    Norm {
        weight: String,
        bias: String,
    },
    /// Rows `start..start + k` of a fused qkv linear (the values).
    ValueRows {
        weight: String,
        bias: Option<String>,
        start: usize,
    },
}

#[derive(Clone, Debug)]
pub struct Fold {
    /// Index into [`Layout::linears`] of the consumer.
    pub linear: usize,
    pub producer: Producer,
}

impl Fold {
    /// Whether a shift of the input can be folded too (a LayerNorm producer, a consumer bias).
    pub fn can_shift(&self, layout: &Layout) -> bool {
        matches!(self.producer, Producer::Norm { .. }) && layout.linears[self.linear].bias.is_some()
    }
}

/// Quantized linears in forward order, the exact folds, and the MLPs (fc1, GELU, fc2) as
/// indices into `linears`.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    pub linears: Vec<QLinear>,
    pub folds: Vec<Fold>,
    pub mlps: Vec<(usize, usize)>,
}

impl Layout {
    pub fn fold_for(&self, linear: usize) -> Option<&Fold> {
        self.folds.iter().find(|f| f.linear == linear)
    }

    /// The linears a spec quantizes (with weights).
    pub fn quantized(&self) -> impl Iterator<Item = (usize, &QLinear)> {
        self.linears
            .iter()
            .enumerate()
            .filter(|(_, l)| l.spec.weight.is_some())
    }
}

/// Fold `x' = (x - shift) / scale` on the input of `fold.linear` into the model: the consumer
/// gets `W diag(scale)` and `b + W shift`, the producer absorbs the division. Exact in real
/// arithmetic; `scale` must be positive and finite.
pub fn apply_fold(
    store: &mut dyn TensorStore,
    layout: &Layout,
    fold: &Fold,
    scale: &[f32],
    shift: Option<&[f32]>,
) -> Result<()> {
    let lin = &layout.linears[fold.linear];
    let k = lin.k;
    if scale.len() != k || shift.is_some_and(|s| s.len() != k) {
        return Err(Error::Shape(format!(
            "{}: input scale of {} channels for a {k}-wide input",
            lin.name,
            scale.len()
        )));
    }
    if let Some(j) = scale.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(Error::Invalid(format!(
            "{}: input scale {} of channel {j} is not positive and finite",
            lin.name, scale[j]
        )));
    }
    if shift.is_some() && !fold.can_shift(layout) {
        return Err(Error::Invalid(format!(
            "{}: an input shift cannot be folded here (no bias or no LayerNorm producer)",
            lin.name
        )));
    }
    if let Some(sh) = shift {
        let w = store.tensor(&lin.name)?.1.to_vec();
        let b = store.tensor_mut(lin.bias.as_deref().unwrap_or_default())?;
        for (i, bi) in b.iter_mut().enumerate() {
            let row = &w[i * k..(i + 1) * k];
            *bi += row.iter().zip(sh).map(|(a, s)| a * s).sum::<f32>();
        }
    }
    let w = store.tensor_mut(&lin.name)?;
    for row in w.chunks_exact_mut(k) {
        for (v, s) in row.iter_mut().zip(scale) {
            *v *= s;
        }
    }
    match &fold.producer {
        Producer::Norm { weight, bias } => {
            for (g, s) in store.tensor_mut(weight)?.iter_mut().zip(scale) {
                *g /= s;
            }
            let b = store.tensor_mut(bias)?;
            for (j, (v, s)) in b.iter_mut().zip(scale).enumerate() {
                *v = (*v - shift.map_or(0.0, |sh| sh[j])) / s;
            }
        }
        Producer::ValueRows {
            weight,
            bias,
            start,
        } => {
            let (shape, _) = store.tensor(weight)?;
            let kin = shape[1];
            let wv = store.tensor_mut(weight)?;
            for (j, s) in scale.iter().enumerate() {
                for v in &mut wv[(start + j) * kin..(start + j + 1) * kin] {
                    *v /= s;
                }
            }
            if let Some(b) = bias {
                let b = store.tensor_mut(b)?;
                for (j, s) in scale.iter().enumerate() {
                    b[start + j] /= s;
                }
            }
        }
    }
    Ok(())
}

/// `y[rows, n] = x[rows, k] W[n, k]^T` (no bias), accumulated in f64.
pub fn linear_out(x: &[f32], w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let rows = x.len() / k;
    let mut y = vec![0f32; rows * n];
    for r in 0..rows {
        let xr = &x[r * k..(r + 1) * k];
        for i in 0..n {
            let wr = &w[i * k..(i + 1) * k];
            y[r * n + i] = xr
                .iter()
                .zip(wr)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>() as f32;
        }
    }
    y
}

/// Sum of squared differences.
pub fn sq_err(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum()
}
