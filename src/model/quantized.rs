//! Quantizing a whole world model, and the quantized model (its file is read and written in
//! `quantized_file`). It lives with the model (not in `quant`) so that `quant` stays a leaf:
//! per-tensor methods and formats that know nothing of the model's tensor names.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::{HostTensor, ModelConfig, Weights};
use crate::quant::layout::{Fold, Layout, Producer, QLinear, TensorStore};
use crate::quant::{
    method, ActParams, ActSpec, ActStats, CalibData, ModuleQuant, PackedWeight, QuantContext,
    QuantSpec,
};
use crate::{Error, Result};

pub use super::params::Module;
pub use super::quant_error::layer_output_errors;
pub use super::quantized_file::{is_quantized_file, load, save};

/// The weight names of every quantized linear (attention qkv and output projection, both MLP
/// linears) in the encoder and the predictor, as in the QuantWM study.
pub fn quantized_linears(cfg: &ModelConfig) -> Vec<(String, Module)> {
    super::params::Layout::of(cfg).linears
}

impl TensorStore for Weights {
    fn tensor(&self, name: &str) -> Result<(Vec<usize>, &[f32])> {
        let t = self.get(name)?;
        Ok((t.shape.clone(), &t.data))
    }

    fn tensor_mut(&mut self, name: &str) -> Result<&mut [f32]> {
        self.tensors
            .get_mut(name)
            .map(|t| t.data.as_mut_slice())
            .ok_or_else(|| Error::Invalid(format!("missing tensor {name}")))
    }
}

/// The quantized linears of `w` under `spec`, with the exact folds of their input scales
/// (LayerNorm -> qkv, LayerNorm -> fc1, attention values -> output projection) and the MLPs.
pub fn layout(w: &Weights, spec: &QuantSpec) -> Result<Layout> {
    let mut l = Layout::default();
    let mut push =
        |name: String, bias: Option<String>, m: ModuleQuant, qk: usize| -> Result<usize> {
            let t = w.get(&name)?;
            let (n, k) = match t.shape[..] {
                [n, k] => (n, k),
                _ => return Err(Error::Shape(format!("{name} is not a 2-D linear weight"))),
            };
            l.linears.push(QLinear {
                name,
                bias: bias.filter(|b| w.tensors.contains_key(b)),
                n,
                k,
                spec: m,
                qk_rows: qk,
            });
            Ok(l.linears.len() - 1)
        };
    let mut folds = Vec::new();
    let mut mlps = Vec::new();
    let blocks = (0..w.config.encoder.depth)
        .map(|i| {
            let p = format!("encoder.blocks.{i}");
            (
                spec.encoder,
                [
                    format!("{p}.attn.qkv"),
                    format!("{p}.attn.proj"),
                    format!("{p}.mlp.fc1"),
                    format!("{p}.mlp.fc2"),
                ],
                [format!("{p}.norm1"), format!("{p}.norm2")],
            )
        })
        .chain((0..w.config.predictor.depth).map(|i| {
            let p = format!("predictor.transformer.layers.{i}");
            (
                spec.predictor,
                [
                    format!("{p}.0.to_qkv"),
                    format!("{p}.0.to_out.0"),
                    format!("{p}.1.net.1"),
                    format!("{p}.1.net.4"),
                ],
                [format!("{p}.0.norm"), format!("{p}.1.net.0")],
            )
        }))
        .collect::<Vec<_>>();
    for (m, [qkv, proj, fc1, fc2], [n1, n2]) in blocks {
        let inner = w.get(&format!("{proj}.weight"))?.shape[1];
        let iq = push(
            format!("{qkv}.weight"),
            Some(format!("{qkv}.bias")),
            m,
            2 * inner,
        )?;
        let ip = push(format!("{proj}.weight"), Some(format!("{proj}.bias")), m, 0)?;
        let i1 = push(format!("{fc1}.weight"), Some(format!("{fc1}.bias")), m, 0)?;
        let i2 = push(format!("{fc2}.weight"), Some(format!("{fc2}.bias")), m, 0)?;
        let norm = |p: &str| Producer::Norm {
            weight: format!("{p}.weight"),
            bias: format!("{p}.bias"),
        };
        folds.push(Fold {
            linear: iq,
            producer: norm(&n1),
        });
        folds.push(Fold {
            linear: ip,
            producer: Producer::ValueRows {
                weight: format!("{qkv}.weight"),
                bias: l_bias(w, &format!("{qkv}.bias")),
                start: 2 * inner,
            },
        });
        folds.push(Fold {
            linear: i1,
            producer: norm(&n2),
        });
        mlps.push((i1, i2));
    }
    l.folds = folds;
    l.mlps = mlps;
    Ok(l)
}

fn dequantized_tensor(p: &PackedWeight) -> HostTensor {
    HostTensor {
        shape: vec![p.n, p.k],
        data: p.dequantize(),
    }
}

fn l_bias(w: &Weights, name: &str) -> Option<String> {
    w.tensors.contains_key(name).then(|| name.to_string())
}

/// A quantized model: the quantized linears as packed codes only (shared with the CPU model
/// built from it), every other tensor in f32 in `weights`. No f32 copy of a quantized weight is
/// held: [`QuantizedModel::dequantized`] builds the full f32 model on demand (the fake-quant
/// reference, divergence measures).
#[derive(Clone, Debug)]
pub struct QuantizedModel {
    /// Every tensor but the quantized linears' weights.
    pub weights: Weights,
    pub spec: QuantSpec,
    pub method: String,
    pub packed: BTreeMap<String, Arc<PackedWeight>>,
    /// Static activation ranges per quantized linear (keyed by its weight name).
    pub act: BTreeMap<String, ActParams>,
}

impl QuantizedModel {
    pub fn module_spec(&self, m: Module) -> ModuleQuant {
        match m {
            Module::Encoder => self.spec.encoder,
            Module::Predictor => self.spec.predictor,
        }
    }

    /// The activation quantization of the linear whose weight is `name`.
    pub fn act_for(&self, name: &str) -> Option<ActSpec> {
        let m = quantized_linears(&self.weights.config)
            .into_iter()
            .find(|(n, _)| n == name)?
            .1;
        self.module_spec(m).act
    }

    /// Check the float tensors against the config and each packed layer's shape against the
    /// weight it stands for.
    pub fn validate(&self) -> Result<()> {
        self.weights
            .validate_except(&|n| self.packed.contains_key(n))?;
        let shapes: HashMap<String, Vec<usize>> = super::expected_tensors(&self.weights.config)
            .into_iter()
            .collect();
        for (name, p) in &self.packed {
            if shapes.get(name).map(|s| s.as_slice()) != Some(&[p.n, p.k][..]) {
                return Err(Error::Shape(format!(
                    "packed layer {name} is [{}, {}], the config implies {:?}",
                    p.n,
                    p.k,
                    shapes.get(name)
                )));
            }
        }
        Ok(())
    }

    /// The whole model in f32, quantized weights dequantized: the fake-quant reference the
    /// packed kernels are tested against, and the quantized model for divergence measures.
    /// Built on demand; planning on packed weights never holds it.
    pub fn dequantized(&self) -> Result<Weights> {
        let mut w = self.weights.clone();
        for (name, p) in &self.packed {
            w.tensors.insert(name.clone(), dequantized_tensor(p));
        }
        w.validate()?;
        Ok(w)
    }

    /// Bytes of f32 data this model holds for its quantized linears' weights (0: they are held
    /// packed only).
    pub fn quantized_f32_bytes(&self) -> usize {
        self.packed
            .keys()
            .filter_map(|n| self.weights.tensors.get(n))
            .map(|t| t.data.len() * 4)
            .sum()
    }

    /// GPU bytes of the quantized linears (codes, scales, zero points) and their f32 size.
    pub fn linear_bytes(&self) -> (usize, usize) {
        let q = self.packed.values().map(|p| p.bytes()).sum();
        let f = self.packed.values().map(|p| p.n * p.k * 4).sum();
        (q, f)
    }
}

/// Quantize `w` per `spec` with the named method. Static activation quantization needs the
/// calibration statistics of every quantized linear's inputs (keyed by weight name).
pub fn quantize_model(
    w: &Weights,
    spec: &QuantSpec,
    method_name: &str,
    calib: Option<&BTreeMap<String, ActStats>>,
) -> Result<QuantizedModel> {
    Ok(quantize_model_with(w, spec, method_name, calib, None)?.0)
}

/// [`quantize_model`] with calibration inputs for the methods that need them (AWQ,
/// SmoothQuant, OmniQuant, GPTQ): static activation ranges then come from `inputs` (after the
/// method's equivalence transforms) unless `calib` is given. Also returns the inputs as the
/// quantized model's linears see them (for reconstruction-error measures).
pub fn quantize_model_with(
    w: &Weights,
    spec: &QuantSpec,
    method_name: &str,
    calib: Option<&BTreeMap<String, ActStats>>,
    inputs: Option<&CalibData>,
) -> Result<(QuantizedModel, Option<CalibData>)> {
    quantize_model_owned(w.clone(), spec, method_name, calib, inputs)
}

/// [`quantize_model_with`] consuming the float weights: each quantized weight's f32 data is
/// freed once packed, so quantizing on load never holds two f32 copies of the model.
pub fn quantize_model_owned(
    mut weights: Weights,
    spec: &QuantSpec,
    method_name: &str,
    calib: Option<&BTreeMap<String, ActStats>>,
    inputs: Option<&CalibData>,
) -> Result<(QuantizedModel, Option<CalibData>)> {
    let w = &weights;
    let q = method(method_name)?;
    q.supports(spec)?;
    let layout = layout(w, spec)?;
    let mut inputs = inputs.cloned();
    if let Some(c) = &inputs {
        let widths: Vec<(String, usize)> = layout
            .quantized()
            .map(|(_, l)| (l.name.clone(), l.k))
            .collect();
        c.check(&w.crc32(), &widths, "calibration inputs")?;
    } else if q.needs_inputs() {
        return Err(Error::Invalid(format!(
            "method {method_name} needs calibration inputs of every quantized linear: `qwm \
             quantize` and `--quant` runs capture them with the float planner (--calib-episodes)"
        )));
    }
    let config = w.config.clone();
    q.prepare(&mut weights, &layout, inputs.as_mut())?;
    let derived = inputs.as_ref().map(|c| c.act_stats());
    let calib = calib.or(derived.as_ref());
    let mut packed = BTreeMap::new();
    let mut act = BTreeMap::new();
    for (name, module) in quantized_linears(&config) {
        let mq = match module {
            Module::Encoder => spec.encoder,
            Module::Predictor => spec.predictor,
        };
        let stats = calib.and_then(|c| c.get(&name));
        if let Some(a) = mq.act {
            if !a.dynamic {
                let s = stats.ok_or_else(|| {
                    Error::Invalid(format!(
                        "static activation quantization ({spec}) needs calibration statistics \
                         for {name}; `qwm quantize` gathers them by running the float planner"
                    ))
                })?;
                act.insert(name.clone(), s.params(a.bits, &name)?);
            }
        }
        let Some(ws) = mq.weight else { continue };
        let t = weights.get(&name)?;
        let (n, k) = match t.shape[..] {
            [n, k] => (n, k),
            _ => {
                return Err(Error::Shape(format!(
                    "{name} should be a 2-D linear weight, got {:?}",
                    t.shape
                )))
            }
        };
        let cx = QuantContext {
            input_stats: stats,
            inputs: inputs.as_ref().and_then(|c| c.layers.get(&name)),
        };
        let pw = q
            .quantize(&t.data, n, k, &ws, &cx)
            .map_err(|e| Error::Invalid(format!("{name}: {e}")))?;
        weights.tensors.remove(&name);
        packed.insert(name, Arc::new(pw));
    }
    Ok((
        QuantizedModel {
            weights,
            spec: *spec,
            method: method_name.trim().to_ascii_lowercase(),
            packed,
            act,
        },
        inputs,
    ))
}
