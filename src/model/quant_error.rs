//! Layer-by-layer reconstruction error of a quantized model against a float reference, on
//! calibration inputs: what the PTQ methods' tests and `examples/ptq_table.rs` compare. Kept
//! apart from the quantized file format in `quantized.rs`, which it only reads.

use super::quantized::{quantized_linears, QuantizedModel};
use super::Weights;
use crate::quant::CalibData;
use crate::Result;

/// Relative output error `||Y - Yq||^2 / ||Y||^2` of every linear `q` quantizes: `Y` from the
/// `reference` weights on `ref_inputs`, `Yq` from `q` on `q_inputs` (the calibration inputs as
/// `q`'s linears see them, from [`super::quantized::quantize_model_with`]), activation quantization included.
/// The reference must be the float model the outputs are comparable to: AWQ rescales qkv's
/// value rows, so its reference is the float model with AWQ's scales folded in.
pub fn layer_output_errors(
    reference: &Weights,
    ref_inputs: &CalibData,
    q: &QuantizedModel,
    q_inputs: &CalibData,
) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for (name, _) in quantized_linears(&reference.config) {
        if !q.packed.contains_key(&name) {
            continue;
        }
        let bias = name.replace(".weight", ".bias");
        // `w`: the weight [n, k]; the bias comes from `b`.
        let fwd = |b: &Weights, w: &[f32], n: usize, x: &[f32]| -> Vec<f32> {
            let k = w.len() / n.max(1);
            let mut y = crate::quant::layout::linear_out(x, w, n, k);
            if let Ok(b) = b.get(&bias) {
                for row in y.chunks_exact_mut(n) {
                    row.iter_mut().zip(&b.data).for_each(|(v, b)| *v += b);
                }
            }
            y
        };
        let t = reference.get(&name)?;
        let y = fwd(reference, &t.data, t.shape[0], &ref_inputs.layer(&name)?.x);
        let l = q_inputs.layer(&name)?;
        let mut xq = l.x.clone();
        if let Some(a) = q.act_for(&name) {
            crate::quant::act::fake_quant(&mut xq, l.k, &a, q.act.get(&name))?;
        }
        let p = &q.packed[&name];
        let yq = fwd(&q.weights, &p.dequantize(), p.n, &xq);
        let den: f64 = y.iter().map(|v| (*v as f64).powi(2)).sum();
        out.push((name, crate::quant::layout::sq_err(&yq, &y) / den.max(1e-30)));
    }
    Ok(out)
}
