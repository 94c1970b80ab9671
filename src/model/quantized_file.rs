//! The quantized model file: a safetensors file like the float model (same metadata) where
//! each quantized linear weight `NAME` is replaced by `NAME.qcodes`, `NAME.qscales` and, for
//! asymmetric codes, `NAME.qzeros` (all U32, see docs/QUANT.md), and the metadata key
//! `qwm_quant` holds the spec, the method, each layer's packing and the static activation
//! ranges. Reading checks everything against the config before any tensor is read.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use super::quantized::{quantized_linears, Module, QuantizedModel};
use super::{format, HostTensor, Weights};
use crate::quant::{method, ActParams, PackedWeight, QuantSpec, WeightSpec};
use crate::{Error, Result};

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
    for (name, v) in format::sorted_tensors(&st) {
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
    for (name, v) in format::sorted_tensors(&st) {
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
