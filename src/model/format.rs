//! The qwm model file: safetensors with the config and normalization in `__metadata__`.
//! See docs/MODEL_FORMAT.md.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::config::{ModelConfig, Normalization};
use super::weights::{HostTensor, Weights};
use crate::{Error, Result};

pub const FORMAT_NAME: &str = "qwm-dinowm";
pub const FORMAT_VERSION: u32 = 1;

/// Storage dtype for [`save_as`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreDtype {
    F32,
    F16,
    BF16,
}

// IEEE half and bfloat16 conversions (round to nearest even) from the `half` crate.
fn f16_to_f32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

fn f32_to_f16(f: f32) -> u16 {
    half::f16::from_f32(f).to_bits()
}

fn bf16_to_f32(h: u16) -> f32 {
    half::bf16::from_bits(h).to_f32()
}

fn f32_to_bf16(f: f32) -> u16 {
    half::bf16::from_f32(f).to_bits()
}

fn meta_err(path: &Path, msg: String) -> Error {
    Error::Invalid(format!("{}: {msg}", path.display()))
}

/// Read the config and normalization from a file's metadata without loading tensors.
pub fn read_config(path: impl AsRef<Path>) -> Result<(ModelConfig, Normalization)> {
    let path = path.as_ref();
    let bytes = read_model_file(path)?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| {
        meta_err(
            path,
            format!("not a valid safetensors file (truncated or corrupt?): {e}"),
        )
    })?;
    parse_meta(path, meta.metadata())
}

pub(crate) fn parse_meta(
    path: &Path,
    meta: &Option<HashMap<String, String>>,
) -> Result<(ModelConfig, Normalization)> {
    let meta = meta.as_ref().ok_or_else(|| {
        meta_err(
            path,
            "no __metadata__; a qwm model file stores format, format_version, config and \
             normalization there (docs/MODEL_FORMAT.md)"
                .into(),
        )
    })?;
    let get = |k: &str| {
        meta.get(k)
            .ok_or_else(|| meta_err(path, format!("__metadata__ has no \"{k}\" entry")))
    };
    let fmt = get("format")?;
    if fmt != FORMAT_NAME {
        return Err(meta_err(
            path,
            format!("format is \"{fmt}\", expected \"{FORMAT_NAME}\""),
        ));
    }
    let ver = get("format_version")?;
    if ver.trim() != FORMAT_VERSION.to_string() {
        return Err(meta_err(
            path,
            format!("format_version is \"{ver}\", this qwm reads version {FORMAT_VERSION}"),
        ));
    }
    let config: ModelConfig = serde_json::from_str(get("config")?).map_err(|e| {
        meta_err(
            path,
            format!("metadata \"config\" is not a valid config: {e}"),
        )
    })?;
    config
        .validate()
        .map_err(|e| meta_err(path, e.to_string()))?;
    let norm: Normalization = serde_json::from_str(get("normalization")?).map_err(|e| {
        meta_err(
            path,
            format!("metadata \"normalization\" is not valid: {e}"),
        )
    })?;
    norm.validate(&config)
        .map_err(|e| meta_err(path, e.to_string()))?;
    Ok((config, norm))
}

/// Tensors planning never reads: the visualization decoder (docs/MODEL_FORMAT.md).
pub const NON_PLANNING_PREFIX: &str = "decoder.";

/// The two identities of a model file, as CRC-32 hex: of the whole file, and of what
/// planning reads ([`planning_crc32`]).
pub fn identity_crc32s(path: impl AsRef<Path>) -> Result<(String, String)> {
    let path = path.as_ref();
    let bytes = read_model_file(path)?;
    Ok((
        format!("{:08x}", crc32fast::hash(&bytes)),
        planning_crc32(path, &bytes)?,
    ))
}

/// CRC-32 (hex) of a safetensors file's planning content: its metadata, then every tensor
/// except `decoder.*` in name order (name, dtype, shape, bytes; strings and lengths
/// length-prefixed). The config and normalization enter as parsed and written again, so a
/// field added later with a default (written by newer qwm versions) does not change the
/// identity. A decoder-only retraining keeps it, any change to the encoder, predictor, action
/// or proprio encoders, config or normalization changes it. `path` only names the file in
/// errors.
pub fn planning_crc32(path: &Path, bytes: &[u8]) -> Result<String> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        meta_err(
            path,
            format!("not a valid safetensors file (truncated or corrupt?): {e}"),
        )
    })?;
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| meta_err(path, format!("unreadable safetensors header: {e}")))?;
    let mut h = crc32fast::Hasher::new();
    let mut put = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    let (config, norm) = parse_meta(path, meta.metadata())?;
    let canonical = |v: serde_json::Result<String>| {
        v.map_err(|e| meta_err(path, format!("metadata does not serialize: {e}")))
    };
    let mut entries: BTreeMap<String, String> = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    entries.insert("config".into(), canonical(serde_json::to_string(&config))?);
    entries.insert(
        "normalization".into(),
        canonical(serde_json::to_string(&norm))?,
    );
    for (k, v) in &entries {
        put(k.as_bytes());
        put(v.as_bytes());
    }
    let tensors: Vec<(String, TensorView)> = sorted_tensors(&st)
        .into_iter()
        .filter(|(n, _)| !n.starts_with(NON_PLANNING_PREFIX))
        .collect();
    for (name, view) in &tensors {
        put(name.as_bytes());
        put(format!("{:?}{:?}", view.dtype(), view.shape()).as_bytes());
        put(view.data());
    }
    Ok(format!("{:08x}", h.finalize()))
}

/// Load and validate a model file (f32, f16 or bf16 tensors; f32 in memory).
pub fn load(path: impl AsRef<Path>) -> Result<Weights> {
    let path = path.as_ref();
    let bytes = read_model_file(path)?;
    load_bytes(path, &bytes)
}

/// A model file's bytes: a regular file, read no further than its declared length.
pub(crate) fn read_model_file(path: &Path) -> Result<Vec<u8>> {
    crate::io::read_file(path, crate::io::MAX_FILE_BYTES)
}

/// A file's tensors by name: safetensors lists them in hash order, so a file with several
/// faults would name a different one from run to run.
pub(crate) fn sorted_tensors<'a>(st: &SafeTensors<'a>) -> Vec<(String, TensorView<'a>)> {
    let mut t = st.tensors();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

/// Check every tensor's name, dtype and shape against what the config implies, before any
/// tensor is converted (allocated): a file whose header disagrees with its config is refused
/// here, whatever sizes either claims. `extra_ok` admits names outside the layout (fixtures).
fn check_header(path: &Path, config: &ModelConfig, st: &SafeTensors, extra_ok: bool) -> Result<()> {
    let expected: BTreeMap<String, Vec<usize>> = super::weights::expected_tensors(config)
        .into_iter()
        .collect();
    for (name, view) in sorted_tensors(st) {
        if !matches!(view.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(meta_err(
                path,
                format!(
                    "tensor {name}: dtype {:?} is not supported; expected F32, F16 or BF16",
                    view.dtype()
                ),
            ));
        }
        match expected.get(&name) {
            Some(shape) if shape.as_slice() != view.shape() => {
                return Err(Error::Shape(format!(
                    "{}: tensor {name}: the config '{}' implies shape {shape:?}, the file has {:?}",
                    path.display(),
                    config.name,
                    view.shape()
                )))
            }
            None if !extra_ok => {
                return Err(meta_err(
                    path,
                    format!(
                        "unexpected tensor {name} for config '{}' (expected {} tensors)",
                        config.name,
                        expected.len()
                    ),
                ))
            }
            _ => {}
        }
    }
    for (name, shape) in &expected {
        if st.tensor(name).is_err() {
            return Err(meta_err(
                path,
                format!(
                    "missing tensor {name} (expected shape {shape:?} for config '{}')",
                    config.name
                ),
            ));
        }
    }
    Ok(())
}

/// Load from bytes already in memory (`path` only names the source in errors).
pub fn load_bytes(path: &Path, bytes: &[u8]) -> Result<Weights> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        meta_err(
            path,
            format!(
                "not a valid safetensors file (truncated or corrupt?), {} bytes: {e}",
                bytes.len()
            ),
        )
    })?;
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| meta_err(path, format!("bad safetensors header: {e}")))?;
    let (config, norm) = parse_meta(path, meta.metadata())?;
    check_header(path, &config, &st, false)?;
    let mut tensors = BTreeMap::new();
    for (name, view) in sorted_tensors(&st) {
        let data = to_f32(&view).map_err(|m| meta_err(path, format!("tensor {name}: {m}")))?;
        tensors.insert(
            name.clone(),
            HostTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    let w = Weights {
        config,
        norm,
        tensors,
    };
    w.validate().map_err(|e| match e {
        Error::Shape(m) => Error::Shape(format!("{}: {m}", path.display())),
        Error::Invalid(m) => meta_err(path, m),
        other => other,
    })?;
    Ok(w)
}

fn to_f32(v: &TensorView) -> std::result::Result<Vec<f32>, String> {
    let d = v.data();
    let n: usize = v.shape().iter().product();
    let out: Vec<f32> = match v.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        other => {
            return Err(format!(
                "dtype {other:?} is not supported; expected F32, F16 or BF16"
            ))
        }
    };
    if out.len() != n {
        return Err(format!(
            "{} values for shape {:?} ({n} elements)",
            out.len(),
            v.shape()
        ));
    }
    Ok(out)
}

/// The metadata map written into a model file.
pub fn metadata(w: &Weights) -> Result<HashMap<String, String>> {
    let mut m = HashMap::new();
    m.insert("format".into(), FORMAT_NAME.into());
    m.insert("format_version".into(), FORMAT_VERSION.to_string());
    m.insert(
        "config".into(),
        serde_json::to_string(&w.config).map_err(|e| Error::Invalid(e.to_string()))?,
    );
    m.insert(
        "normalization".into(),
        serde_json::to_string(&w.norm).map_err(|e| Error::Invalid(e.to_string()))?,
    );
    Ok(m)
}

/// Save as f32.
pub fn save(w: &Weights, path: impl AsRef<Path>) -> Result<()> {
    save_as(w, path, StoreDtype::F32)
}

/// Save with the given storage dtype (f16/bf16 round to nearest even).
pub fn save_as(w: &Weights, path: impl AsRef<Path>, dtype: StoreDtype) -> Result<()> {
    save_with_extra(w, path, dtype, &BTreeMap::new())
}

/// Save with extra (non-model) tensors, e.g. inputs and expected outputs in test fixtures.
/// Extra tensors are not accepted by [`load`]; use [`load_extra`] for such files.
pub fn save_with_extra(
    w: &Weights,
    path: impl AsRef<Path>,
    dtype: StoreDtype,
    extra: &BTreeMap<String, HostTensor>,
) -> Result<()> {
    let path = path.as_ref();
    w.validate()?;
    let mut bufs: Vec<RawTensor> = Vec::new();
    for (name, t) in w.tensors.iter() {
        let (dt, bytes): (Dtype, Vec<u8>) = match dtype {
            StoreDtype::F32 => (
                Dtype::F32,
                t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            StoreDtype::F16 => (
                Dtype::F16,
                t.data
                    .iter()
                    .flat_map(|x| f32_to_f16(*x).to_le_bytes())
                    .collect(),
            ),
            StoreDtype::BF16 => (
                Dtype::BF16,
                t.data
                    .iter()
                    .flat_map(|x| f32_to_bf16(*x).to_le_bytes())
                    .collect(),
            ),
        };
        bufs.push((name.clone(), dt, t.shape.clone(), bytes));
    }
    for (name, t) in extra {
        bufs.push((
            name.clone(),
            Dtype::F32,
            t.shape.clone(),
            t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ));
    }
    write_tensors(&bufs, metadata(w)?, path)
}

/// A tensor ready to serialize: name, dtype, shape, little-endian bytes.
pub(crate) type RawTensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// Write raw tensors and metadata as a safetensors file (creating the parent directory),
/// atomically and with the same bytes for the same content (see [`canonical`]).
pub(crate) fn write_tensors(
    bufs: &[RawTensor],
    meta: HashMap<String, String>,
    path: &Path,
) -> Result<()> {
    let views: Vec<(String, TensorView)> = bufs
        .iter()
        .map(|(n, dt, s, b)| {
            TensorView::new(*dt, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Invalid(format!("tensor {n}: {e}")))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::Invalid(format!("writing {}: {e}", path.display())))?;
    crate::io::write_atomic(path, &canonical(&bytes)?)
}

/// The same safetensors file with its JSON header's keys (tensor names and metadata entries)
/// sorted. safetensors writes the metadata in `HashMap` order, which changes from run to run:
/// the same model would get different bytes and a different CRC, and a regenerated model could
/// not resume its evaluation. Tensor data and offsets are untouched (offsets are relative to
/// the end of the header); the header is padded with spaces to 8 bytes, as safetensors does.
pub(crate) fn canonical(bytes: &[u8]) -> Result<Vec<u8>> {
    let bad = |m: &str| Error::Invalid(format!("serializing a safetensors file: {m}"));
    let n = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| bad("no header"))?;
    let end = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_add(8))
        .filter(|e| *e <= bytes.len())
        .ok_or_else(|| bad("header length"))?;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..end]).map_err(|e| bad(&e.to_string()))?;
    // serde_json::Value may keep insertion order (feature preserve_order): sort nested maps
    // explicitly.
    let sorted: BTreeMap<String, BTreeMap<String, serde_json::Value>> = header
        .into_iter()
        .map(|(k, v)| {
            let m: BTreeMap<String, serde_json::Value> =
                serde_json::from_value(v).map_err(|e| bad(&e.to_string()))?;
            Ok((k, m))
        })
        .collect::<Result<_>>()?;
    let mut h = serde_json::to_vec(&sorted).map_err(|e| bad(&e.to_string()))?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + bytes.len() - end);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[end..]);
    Ok(out)
}

/// Load a file that holds a model plus extra tensors (names not in the model layout): returns
/// the validated model and the extra tensors.
pub fn load_extra(path: impl AsRef<Path>) -> Result<(Weights, BTreeMap<String, HostTensor>)> {
    let path = path.as_ref();
    let bytes = read_model_file(path)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        meta_err(
            path,
            format!("not a valid safetensors file (truncated or corrupt?): {e}"),
        )
    })?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| meta_err(path, format!("bad safetensors header: {e}")))?;
    let (config, norm) = parse_meta(path, meta.metadata())?;
    check_header(path, &config, &st, true)?;
    let known: std::collections::HashSet<String> = super::weights::expected_tensors(&config)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut tensors = BTreeMap::new();
    let mut extra = BTreeMap::new();
    for (name, view) in sorted_tensors(&st) {
        let data = to_f32(&view).map_err(|m| meta_err(path, format!("tensor {name}: {m}")))?;
        let t = HostTensor {
            shape: view.shape().to_vec(),
            data,
        };
        if known.contains(&name) {
            tensors.insert(name, t);
        } else {
            extra.insert(name, t);
        }
    }
    let w = Weights {
        config,
        norm,
        tensors,
    };
    w.validate()?;
    Ok((w, extra))
}

/// Write plain named f32 tensors (training checkpoints).
pub(crate) fn write_f32_tensors(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    meta: HashMap<String, String>,
    path: &Path,
) -> Result<()> {
    let raw: Vec<RawTensor> = tensors
        .iter()
        .map(|(n, s, v)| {
            (
                n.clone(),
                Dtype::F32,
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    write_tensors(&raw, meta, path)
}

/// Named f32 tensors: shape and row-major values.
pub(crate) type F32Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Read every tensor of a safetensors file of f32 tensors (training checkpoints).
pub(crate) fn read_f32_tensors(path: &Path) -> Result<F32Tensors> {
    let bytes = read_model_file(path)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        Error::Invalid(format!(
            "{}: not a readable checkpoint ({e}); delete it to start over",
            path.display()
        ))
    })?;
    let mut out = HashMap::new();
    for (name, view) in sorted_tensors(&st) {
        if view.dtype() != Dtype::F32 {
            return Err(Error::Invalid(format!(
                "{}: tensor {name} is {:?}, checkpoints hold f32",
                path.display(),
                view.dtype()
            )));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(name, (view.shape().to_vec(), data));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_roundtrip() {
        for x in [0.0f32, 1.0, -2.5, 0.1, 65504.0, 6.1e-5, 3.0e-7, -1e-3] {
            let h = f16_to_f32(f32_to_f16(x));
            assert!((h - x).abs() <= x.abs() * 1e-3 + 1e-7, "{x} -> {h}");
            let b = bf16_to_f32(f32_to_bf16(x));
            assert!((b - x).abs() <= x.abs() * 1e-2, "{x} -> {b}");
        }
        // Every finite f16 survives f16 -> f32 -> f16 exactly; bf16 likewise.
        for h in 0..=u16::MAX {
            let f = f16_to_f32(h);
            if f.is_finite() {
                assert_eq!(f32_to_f16(f), h, "f16 {h:#06x}");
            }
            let g = bf16_to_f32(h);
            if g.is_finite() {
                assert_eq!(f32_to_bf16(g), h, "bf16 {h:#06x}");
            }
        }
    }
}
