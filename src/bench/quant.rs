//! `qwm bench quant`: the dequantize-on-the-fly kernels for every bit-width and granularity,
//! as a mat-vec (batch 1-8, weight-bytes GB/s) and as a token batch at a DINO-WM shape
//! (GFLOP/s), next to the f32 kernel (`x_reference`: speed over f32 at the same shape, batch
//! and tiling) and the copy kernel (`x_copy`) measured in the same run.
//!
//! Rows are named `{weights} {kernel}` ("w4g32 lanes", "f32 tiled") at shape
//! `B={batch} [{N}x{K}]`. The streaming mat-vec shape fills the adapter's binding limit (up to
//! 256 MiB of f32), so adapters with different limits report different shapes there, and
//! `qwm bench compare` lists those rows as mismatched rather than pairing unequal work.

use super::record::BenchRecord;
use super::Session;
use crate::gpu::qops::{self, GpuQuantWeight, QKernel};
use crate::gpu::{ops, GpuTensor};
use crate::quant::{self, QuantContext, WeightSpec};
use crate::tensor::randn;
use crate::Result;

pub struct Options {
    pub quick: bool,
}

fn shape_of(batch: usize, n: usize, k: usize) -> String {
    format!("B={batch} [{n}x{k}]")
}

pub fn run(s: &mut Session, opts: &Options) -> Result<()> {
    s.measure_yardsticks()?;
    let ctx = s.ctx("qwm bench quant")?;
    let timing = s.gpu_timing();
    // Mat-vec shapes: [2048, 2048] (DINO-WM-sized: a few MiB, so on most adapters the launch
    // dominates), and a streaming shape whose f32 weight fills the binding limit up to 256 MiB
    // (its W4 copy is 16-32 MiB), where the time is the weight traffic. Token batch: predictor
    // fc1 (588 tokens of width 404 -> 2048).
    let big_k = 8192usize;
    let big_n =
        (ctx.limits.max_storage_buffer_binding_size as usize / (4 * big_k)).clamp(256, 8192);
    let mv_shapes = [[2048usize, 2048usize], [big_n, big_k]];
    let (tm, tn, tk) = (588usize, 2048usize, 404usize);
    let batches: &[usize] = if opts.quick { &[1, 8] } else { &[1, 2, 4, 8] };
    let mut rows: Vec<BenchRecord> = Vec::new();

    let wms: Vec<Vec<f32>> = mv_shapes
        .iter()
        .enumerate()
        .map(|(i, &[n, k])| randn(n * k, 0.02, 1 + 10 * i as u64))
        .collect();
    let wt = randn(tn * tk, 0.02, 2);
    let xt = ctx.upload(&randn(tm * tk, 1.0, 3), &[tm, tk])?;

    // f32 baselines.
    for (&[mn, mk], wm) in mv_shapes.iter().zip(&wms) {
        let gw = ctx.upload(wm, &[mn, mk])?;
        for &b in batches {
            let x = ctx.upload(&randn(b * mk, 1.0, 4), &[b, mk])?;
            let t = s.time_gpu(|rec| ops::matmul(rec, &x, &gw, None).map(|_| ()))?;
            rows.push(
                BenchRecord::new("quant", "f32", &shape_of(b, mn, mk), "gpu", timing)
                    .quant("f32")
                    .kernel("f32", Some(true))
                    .samples(t)
                    .bytes((mn * mk * 4) as f64)
                    .flops(2.0 * (b * mn * mk) as f64),
            );
        }
    }
    {
        let gwt = ctx.upload(&wt, &[tn, tk])?;
        for tiled in [false, true] {
            let t = s.time_gpu(|rec| {
                if tiled {
                    ops::matmul_tiled(rec, &xt, &gwt, None).map(|_| ())
                } else {
                    ops::matmul(rec, &xt, &gwt, None).map(|_| ())
                }
            })?;
            let kernel = if tiled { "f32 tiled" } else { "f32" };
            let default = tiled == (crate::gpu::tuning("QWM_MATMUL") == Some("tiled"));
            rows.push(
                BenchRecord::new("quant", kernel, &shape_of(tm, tn, tk), "gpu", timing)
                    .quant("f32")
                    .kernel(kernel, Some(default))
                    .samples(t)
                    .flops(2.0 * (tm * tn * tk) as f64),
            );
        }
    }

    let bit_list: &[u8] = if opts.quick {
        &[8, 4]
    } else {
        &[8, 6, 4, 3, 2]
    };
    let q = quant::method("rtn")?;
    for &bits in bit_list {
        for group in [None, Some(32), Some(128)] {
            let spec = WeightSpec { bits, group };
            let label = match group {
                None => format!("w{bits}"),
                Some(g) => format!("w{bits}g{g}"),
            };
            for (&[mn, mk], wm) in mv_shapes.iter().zip(&wms) {
                let pm = q.quantize(wm, mn, mk, &spec, &QuantContext::default())?;
                let gm = GpuQuantWeight::upload(ctx, &pm)?;
                for &b in batches {
                    let x = ctx.upload(&randn(b * mk, 1.0, 4), &[b, mk])?;
                    let chosen = QKernel::choose(ctx, b, mn);
                    for kernel in [QKernel::Lanes, QKernel::Split] {
                        rows.push(time_kernel(s, &label, &x, &gm, kernel, chosen)?);
                    }
                }
            }
            let pt = q.quantize(&wt, tn, tk, &spec, &QuantContext::default())?;
            let gt = GpuQuantWeight::upload(ctx, &pt)?;
            let chosen = QKernel::choose(ctx, tm, tn);
            for kernel in [QKernel::Lanes, QKernel::Tiled] {
                rows.push(time_kernel(s, &label, &xt, &gt, kernel, chosen)?);
            }
        }
    }
    // Speed over the f32 weight at the same shape and batch; token batches compare under the
    // same tiling (register tiles for "lanes", workgroup tiles for "tiled").
    let refs: Vec<(String, f64, String)> = rows
        .iter()
        .filter(|r| r.quant.as_deref() == Some("f32"))
        .map(|r| (r.shape.clone(), r.median_s, r.name.clone()))
        .collect();
    for r in rows
        .iter_mut()
        .filter(|r| r.quant.as_deref() != Some("f32"))
    {
        let tiled = r.kernel.as_deref() == Some("tiled");
        let want = if tiled { "f32 tiled" } else { "f32" };
        if let Some((sh, t, name)) = refs.iter().find(|(sh, _, n)| *sh == r.shape && n == want) {
            r.reference = Some(format!("quant/{name} [{sh}] (gpu)"));
            r.x_reference = Some(t / r.median_s);
        }
    }
    s.records.extend(rows);
    Ok(())
}

/// One quantized kernel timed on `x [B, K]`: weight bytes streamed per second for mat-vecs
/// (B <= 8) and GFLOP/s.
fn time_kernel(
    s: &Session,
    label: &str,
    x: &GpuTensor,
    w: &GpuQuantWeight,
    kernel: QKernel,
    chosen: QKernel,
) -> Result<BenchRecord> {
    let t = s.time_gpu(|rec| qops::qmatmul_with(rec, x, w, None, kernel).map(|_| ()))?;
    let b = x.shape()[0];
    let mut r = BenchRecord::new(
        "quant",
        &format!("{label} {}", kernel.name()),
        &shape_of(b, w.n, w.k),
        "gpu",
        s.gpu_timing(),
    )
    .quant(label)
    .kernel(kernel.name(), Some(kernel == chosen))
    .samples(t)
    .flops(2.0 * (b * w.n * w.k) as f64);
    if b <= 8 {
        r = r.bytes(w.bytes() as f64);
    }
    Ok(r)
}
