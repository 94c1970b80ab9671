//! What `qwm model info` shows about a model file: float or quantized, and the bytes its
//! linear layers and the whole model take on the GPU (quantized linears as packed codes).

use std::path::Path;

use crate::model::quantized::{self, quantized_linears};
use crate::model::{format, Weights};
use crate::Result;

pub struct ModelFileInfo {
    /// Float weights (dequantized for a quantized file).
    pub weights: Weights,
    /// The quantization spec, `fp` for float files.
    pub quant: String,
    /// Bytes of the file on disk.
    pub file_bytes: u64,
    /// GPU bytes of the linear layers as uploaded, and what they take in f32.
    pub linear_bytes: usize,
    pub linear_bytes_f32: usize,
    /// GPU bytes of every tensor as uploaded.
    pub total_bytes: usize,
}

/// Read a float or quantized model file and account for its GPU bytes.
pub fn inspect_model_file(path: &Path) -> Result<ModelFileInfo> {
    let q = if quantized::is_quantized_file(path)? {
        Some(quantized::load(path)?)
    } else {
        None
    };
    let w = match &q {
        Some(q) => q.dequantized()?,
        None => format::load(path)?,
    };
    let file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let lin_names = quantized_linears(&w.config);
    let f32_bytes = |n: &str| w.get(n).map(|t| t.data.len() * 4).unwrap_or(0);
    let linear_bytes_f32: usize = lin_names.iter().map(|(n, _)| f32_bytes(n)).sum();
    let (linear_bytes, quant) = match &q {
        Some(q) => {
            let packed: usize = q.packed.values().map(|p| p.bytes()).sum();
            let float_lin: usize = lin_names
                .iter()
                .filter(|(n, _)| !q.packed.contains_key(n))
                .map(|(n, _)| f32_bytes(n))
                .sum();
            (packed + float_lin, q.spec.to_string())
        }
        None => (linear_bytes_f32, "fp".to_string()),
    };
    let total_f32: usize = w.tensors.values().map(|t| t.data.len() * 4).sum();
    Ok(ModelFileInfo {
        total_bytes: total_f32 - linear_bytes_f32 + linear_bytes,
        weights: w,
        quant,
        file_bytes,
        linear_bytes,
        linear_bytes_f32,
    })
}
