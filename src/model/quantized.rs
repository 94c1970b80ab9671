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

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use super::{format, HostTensor, ModelConfig, Weights};
use crate::quant::{
    method, ActParams, ActSpec, ActStats, ModuleQuant, PackedWeight, QuantContext, QuantSpec,
};
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Module {
    Encoder,
    Predictor,
}

/// The weight names of every quantized linear (attention qkv and output projection, both MLP
/// linears) in the encoder and the predictor, as in the QuantWM study.
pub fn quantized_linears(cfg: &ModelConfig) -> Vec<(String, Module)> {
    let mut v = Vec::new();
    for i in 0..cfg.encoder.depth {
        for l in ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"] {
            v.push((format!("encoder.blocks.{i}.{l}.weight"), Module::Encoder));
        }
    }
    for i in 0..cfg.predictor.depth {
        for l in ["0.to_qkv", "0.to_out.0", "1.net.1", "1.net.4"] {
            v.push((
                format!("predictor.transformer.layers.{i}.{l}.weight"),
                Module::Predictor,
            ));
        }
    }
    v
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

/// A quantized model: packed weights for the GPU, and the same weights dequantized in
/// `weights` for the CPU backend's fake-quant path (and for divergence measures).
#[derive(Clone, Debug)]
pub struct QuantizedModel {
    pub weights: Weights,
    pub spec: QuantSpec,
    pub method: String,
    pub packed: BTreeMap<String, PackedWeight>,
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
    let q = method(method_name)?;
    let mut weights = w.clone();
    let mut packed = BTreeMap::new();
    let mut act = BTreeMap::new();
    for (name, module) in quantized_linears(&w.config) {
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
        let t = w.get(&name)?;
        let (n, k) = match t.shape[..] {
            [n, k] => (n, k),
            _ => {
                return Err(Error::Shape(format!(
                    "{name} should be a 2-D linear weight, got {:?}",
                    t.shape
                )))
            }
        };
        let cx = QuantContext { input_stats: stats };
        let pw = q
            .quantize(&t.data, n, k, &ws, &cx)
            .map_err(|e| Error::Invalid(format!("{name}: {e}")))?;
        weights.tensors.insert(
            name.clone(),
            HostTensor {
                shape: vec![n, k],
                data: pw.dequantize(),
            },
        );
        packed.insert(name, pw);
    }
    Ok(QuantizedModel {
        weights,
        spec: *spec,
        method: q.name().to_string(),
        packed,
        act,
    })
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
    for (name, t) in &q.weights.tensors {
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
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = f.metadata().map_err(|e| Error::io(path, e))?.len();
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

/// Read a quantized model file, checking that the metadata matches the tensors.
pub fn load(path: impl AsRef<Path>) -> Result<QuantizedModel> {
    let path = path.as_ref();
    let bad = |m: String| Error::Invalid(format!("{}: {m}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
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
    let spec: QuantSpec = qm.spec.parse()?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        bad(format!(
            "not a valid safetensors file (truncated or corrupt?): {e}"
        ))
    })?;
    let u32s = |name: &str| -> Result<Vec<u32>> {
        let v = st
            .tensor(name)
            .map_err(|_| bad(format!("tensor {name} is missing")))?;
        if v.dtype() != Dtype::U32 {
            return Err(bad(format!(
                "tensor {name} is {:?}, expected U32",
                v.dtype()
            )));
        }
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
        pw.validate(name)?;
        tensors.insert(
            name.clone(),
            HostTensor {
                shape: vec![lm.n, lm.k],
                data: pw.dequantize(),
            },
        );
        packed.insert(name.clone(), pw);
    }
    for (name, v) in st.tensors() {
        if name.ends_with(".qcodes") || name.ends_with(".qscales") || name.ends_with(".qzeros") {
            continue;
        }
        if v.dtype() != Dtype::F32 {
            return Err(bad(format!(
                "tensor {name} is {:?}, expected F32",
                v.dtype()
            )));
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
    let weights = Weights {
        config,
        norm,
        tensors,
    };
    weights.validate().map_err(|e| bad(e.to_string()))?;
    // Every layer the spec quantizes must be packed, and nothing else.
    for (name, module) in quantized_linears(&weights.config) {
        let want = match module {
            Module::Encoder => spec.encoder.weight.is_some(),
            Module::Predictor => spec.predictor.weight.is_some(),
        };
        if want != packed.contains_key(&name) {
            return Err(bad(format!(
                "metadata says {spec} but layer {name} is {}quantized",
                if want { "not " } else { "" }
            )));
        }
    }
    Ok(QuantizedModel {
        weights,
        spec,
        method: qm.method,
        packed,
        act: qm.act,
    })
}
