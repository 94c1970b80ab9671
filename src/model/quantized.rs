//! Quantizing a whole world model, and the quantized model file. It lives with the model
//! (not in `quant`) so that `quant` stays a leaf: per-tensor methods and formats that know
//! nothing of the model's tensor names.
//!
//! The file is a safetensors file like the float model (same metadata: format, config,
//! normalization) where each quantized linear weight `NAME` is replaced by `NAME.qcodes`,
//! `NAME.qscales` and, for asymmetric codes, `NAME.qzeros` (all U32, see docs/QUANT.md), and the
//! metadata key `qwm_quant` holds the spec, the method, each layer's packing and the static
//! activation ranges.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use super::{format, HostTensor, ModelConfig, Weights};
use crate::quant::layout::{Fold, Layout, Producer, QLinear, TensorStore};
use crate::quant::{
    method, ActParams, ActSpec, ActStats, CalibData, ModuleQuant, PackedWeight, QuantContext,
    QuantSpec, WeightSpec,
};
use crate::{Error, Result};

pub use super::params::Module;
pub use super::quant_error::layer_output_errors;

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

#[derive(Clone, Debug, Serialize, Deserialize)]
struct LayerMeta {
    n: usize,
    k: usize,
    bits: u8,
    group: usize,
    per_channel: bool,
    symmetric: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct QuantMeta {
    spec: String,
    method: String,
    layers: BTreeMap<String, LayerMeta>,
    act: BTreeMap<String, ActParams>,
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

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Write a quantized model file.
pub fn save(q: &QuantizedModel, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let mut meta: HashMap<String, String> = format::metadata(&q.weights)?;
    let qm = QuantMeta {
        spec: q.spec.to_string(),
        method: q.method.clone(),
        layers: q
            .packed
            .iter()
            .map(|(n, p)| {
                (
                    n.clone(),
                    LayerMeta {
                        n: p.n,
                        k: p.k,
                        bits: p.bits,
                        group: p.group,
                        per_channel: p.per_channel,
                        symmetric: p.symmetric(),
                    },
                )
            })
            .collect(),
        act: q.act.clone(),
    };
    meta.insert(
        "qwm_quant".into(),
        serde_json::to_string(&qm).map_err(|e| Error::Invalid(e.to_string()))?,
    );
    let mut bufs: Vec<format::RawTensor> = Vec::new();
    let names: std::collections::BTreeSet<&String> =
        q.weights.tensors.keys().chain(q.packed.keys()).collect();
    for name in names {
        if let Some(p) = q.packed.get(name) {
            bufs.push((
                format!("{name}.qcodes"),
                Dtype::U32,
                vec![p.codes.len()],
                u32_bytes(&p.codes),
            ));
            bufs.push((
                format!("{name}.qscales"),
                Dtype::U32,
                vec![p.scales.len()],
                u32_bytes(&p.scales),
            ));
            if let Some(z) = &p.zeros {
                bufs.push((
                    format!("{name}.qzeros"),
                    Dtype::U32,
                    vec![z.len()],
                    u32_bytes(z),
                ));
            }
        } else {
            let t = q.weights.get(name)?;
            bufs.push((
                name.clone(),
                Dtype::F32,
                t.shape.clone(),
                t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ));
        }
    }
    format::write_tensors(&bufs, meta, path)
}

/// Whether a model file holds a quantized model. Reads only the safetensors header (the
/// length prefix and its JSON), not the tensors.
pub fn is_quantized_file(path: impl AsRef<Path>) -> Result<bool> {
    use std::io::Read;
    let path = path.as_ref();
    let corrupt = |m: String| {
        Error::Invalid(format!(
            "{}: not a valid safetensors file (truncated or corrupt?): {m}",
            path.display()
        ))
    };
    let (mut f, file_len) = crate::io::open_regular(path)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| corrupt(format!("no header length ({e})")))?;
    let n = u64::from_le_bytes(len);
    if n > file_len.saturating_sub(8) || n > 100 << 20 {
        return Err(corrupt(format!(
            "header length {n} does not fit a {file_len}-byte file"
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| corrupt(format!("short header ({e})")))?;
    let v: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| corrupt(format!("header JSON: {e}")))?;
    Ok(v.get("__metadata__")
        .and_then(|m| m.get("qwm_quant"))
        .is_some())
}

/// What a file's tensor of the given name must be: a float weight, or one part of a layer's
/// packed codes (with its length in u32 words).
enum Slot {
    Float(Vec<usize>),
    Packed(usize),
}

/// Check one layer's metadata against the config and the spec label, and return the packed
/// lengths (codes, scales, zero points) it implies. Nothing is allocated from the metadata
/// before this passes.
fn check_layer(
    name: &str,
    lm: &LayerMeta,
    shape: Option<&Vec<usize>>,
    want: Option<WeightSpec>,
    spec: &QuantSpec,
) -> std::result::Result<(usize, usize, bool), String> {
    let Some([n, k]) = shape.map(|s| s.as_slice()) else {
        return Err(format!(
            "qwm_quant lists layer {name}, which is not a quantized linear of this config"
        ));
    };
    let Some(ws) = want else {
        return Err(format!(
            "the spec label says {spec}, which leaves layer {name} in float, but the file holds \
             it packed"
        ));
    };
    if (lm.n, lm.k) != (*n, *k) {
        return Err(format!(
            "layer {name} is [{}, {}] in qwm_quant but [{n}, {k}] in the config",
            lm.n, lm.k
        ));
    }
    if lm.bits != ws.bits {
        return Err(format!(
            "the spec label says {spec} ({}-bit weights) but layer {name} holds {}-bit codes",
            ws.bits, lm.bits
        ));
    }
    let group_ok = match ws.group {
        Some(g) => !lm.per_channel && lm.group == g,
        None => lm.per_channel && lm.group == crate::quant::pack::k_pad(*k),
    };
    if !group_ok {
        return Err(format!(
            "the spec label says {spec} but layer {name} has group {} (per_channel {})",
            lm.group, lm.per_channel
        ));
    }
    let probe = PackedWeight {
        n: *n,
        k: *k,
        bits: lm.bits,
        group: lm.group,
        per_channel: lm.per_channel,
        codes: Vec::new(),
        scales: Vec::new(),
        zeros: None,
    };
    let (codes, scales) = probe.expected_words().map_err(|e| e.to_string())?;
    Ok((codes, scales, lm.symmetric))
}

/// Check the static activation parameters against the spec: one set, with the spec's bits, for
/// every linear with static activation quantization, and nothing else.
fn check_act(
    qm: &QuantMeta,
    spec: &QuantSpec,
    linears: &[(String, Module)],
) -> std::result::Result<(), String> {
    let spec_of = |m: Module| match m {
        Module::Encoder => spec.encoder,
        Module::Predictor => spec.predictor,
    };
    for (name, module) in linears {
        if let Some(a) = spec_of(*module).act.filter(|a| !a.dynamic) {
            let p = qm.act.get(name).ok_or_else(|| {
                format!("the spec label says {spec} but there are no activation ranges for {name}")
            })?;
            if p.bits != a.bits {
                return Err(format!(
                    "activation parameters of {name} have {} bits, the spec label {spec} says {}",
                    p.bits, a.bits
                ));
            }
            p.validate()
                .map_err(|e| format!("activation parameters of {name}: {e}"))?;
        }
    }
    for name in qm.act.keys() {
        let static_act = linears
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, m)| spec_of(*m).act)
            .is_some_and(|a| !a.dynamic);
        if !static_act {
            return Err(format!(
                "activation parameters for {name}, which the spec label {spec} does not \
                 quantize statically"
            ));
        }
    }
    Ok(())
}

/// Read a quantized model file. Its metadata (layers, bits, groups, activation parameters,
/// method, spec label) is checked against the config and the tensors' headers before any tensor
/// is read; a layer stored both as a float weight and as packed codes is refused.
pub fn load(path: impl AsRef<Path>) -> Result<QuantizedModel> {
    let path = path.as_ref();
    let bad = |m: String| Error::Invalid(format!("{}: {m}", path.display()));
    let bytes = format::read_model_file(path)?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| {
        bad(format!(
            "not a valid safetensors file (truncated or corrupt?): {e}"
        ))
    })?;
    let (config, norm) = format::parse_meta(path, header.metadata())?;
    let qm: QuantMeta = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("qwm_quant"))
        .ok_or_else(|| bad("no qwm_quant metadata: not a quantized model file".into()))
        .and_then(|s| {
            serde_json::from_str(s).map_err(|e| bad(format!("qwm_quant metadata: {e}")))
        })?;
    let spec: QuantSpec = qm
        .spec
        .parse()
        .map_err(|e: Error| bad(format!("qwm_quant spec label: {e}")))?;
    let method_name = method(&qm.method)
        .map_err(|e| bad(format!("qwm_quant method: {e}")))?
        .name()
        .to_string();
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        bad(format!(
            "not a valid safetensors file (truncated or corrupt?): {e}"
        ))
    })?;
    // Every tensor the file may hold, from the config and the (checked) layer metadata.
    let linears = quantized_linears(&config);
    let shapes: HashMap<String, Vec<usize>> = crate::model::expected_tensors(&config)
        .into_iter()
        .collect();
    let mut slots: HashMap<String, Slot> = shapes
        .iter()
        .map(|(n, s)| (n.clone(), Slot::Float(s.clone())))
        .collect();
    for (name, lm) in &qm.layers {
        let module = linears.iter().find(|(n, _)| n == name).map(|(_, m)| *m);
        let want = module.and_then(|m| match m {
            Module::Encoder => spec.encoder.weight,
            Module::Predictor => spec.predictor.weight,
        });
        let shape = module.and_then(|_| shapes.get(name));
        let (codes, scales, symmetric) = check_layer(name, lm, shape, want, &spec).map_err(&bad)?;
        slots.remove(name);
        slots.insert(format!("{name}.qcodes"), Slot::Packed(codes));
        slots.insert(format!("{name}.qscales"), Slot::Packed(scales));
        if !symmetric {
            slots.insert(format!("{name}.qzeros"), Slot::Packed(scales));
        }
    }
    for (name, module) in &linears {
        let want = match module {
            Module::Encoder => spec.encoder.weight.is_some(),
            Module::Predictor => spec.predictor.weight.is_some(),
        };
        if want && !qm.layers.contains_key(name) {
            return Err(bad(format!(
                "metadata says {spec} but layer {name} is not quantized"
            )));
        }
    }
    check_act(&qm, &spec, &linears).map_err(&bad)?;
    for (name, v) in st.tensors() {
        match slots.get(&name) {
            Some(Slot::Float(shape)) => {
                if v.dtype() != Dtype::F32 || v.shape() != shape.as_slice() {
                    return Err(bad(format!(
                        "tensor {name} is {:?} {:?}, expected F32 {shape:?}",
                        v.dtype(),
                        v.shape()
                    )));
                }
            }
            Some(Slot::Packed(words)) => {
                if v.dtype() != Dtype::U32 || v.shape() != [*words] {
                    return Err(bad(format!(
                        "tensor {name} is {:?} {:?}, expected U32 [{words}]",
                        v.dtype(),
                        v.shape()
                    )));
                }
            }
            None if qm.layers.contains_key(&name) => {
                return Err(bad(format!(
                    "holds both a float weight and packed codes for layer {name}; the CPU \
                     backend would use one and the GPU the other. Re-quantize the float model"
                )))
            }
            None => return Err(bad(format!("unexpected tensor {name}"))),
        }
    }
    let present: std::collections::HashSet<&str> = st.names().into_iter().collect();
    let mut missing: Vec<&String> = slots
        .keys()
        .filter(|n| !present.contains(n.as_str()))
        .collect();
    missing.sort();
    if let Some(m) = missing.first() {
        return Err(bad(format!("tensor {m} is missing")));
    }
    let u32s = |name: &str| -> Result<Vec<u32>> {
        let v = st
            .tensor(name)
            .map_err(|_| bad(format!("tensor {name} is missing")))?;
        Ok(v.data()
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    };
    let mut tensors = BTreeMap::new();
    let mut packed = BTreeMap::new();
    for (name, lm) in &qm.layers {
        let pw = PackedWeight {
            n: lm.n,
            k: lm.k,
            bits: lm.bits,
            group: lm.group,
            per_channel: lm.per_channel,
            codes: u32s(&format!("{name}.qcodes"))?,
            scales: u32s(&format!("{name}.qscales"))?,
            zeros: if lm.symmetric {
                None
            } else {
                Some(u32s(&format!("{name}.qzeros"))?)
            },
        };
        pw.validate(name).map_err(|e| bad(e.to_string()))?;
        packed.insert(name.clone(), Arc::new(pw));
    }
    for (name, v) in st.tensors() {
        if !matches!(slots.get(&name), Some(Slot::Float(_))) {
            continue;
        }
        let data: Vec<f32> = v
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if data.iter().any(|x| !x.is_finite()) {
            return Err(bad(format!("tensor {name} holds non-finite values")));
        }
        tensors.insert(
            name.clone(),
            HostTensor {
                shape: v.shape().to_vec(),
                data,
            },
        );
    }
    let q = QuantizedModel {
        weights: Weights {
            config,
            norm,
            tensors,
        },
        spec,
        method: method_name,
        packed,
        act: qm.act,
    };
    q.validate().map_err(|e| bad(e.to_string()))?;
    Ok(q)
}
