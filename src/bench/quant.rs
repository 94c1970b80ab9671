//! `qwm bench quant`: the dequantize-on-the-fly kernels for every bit-width and granularity,
//! as a mat-vec (batch 1-8, weight-bytes GB/s) and as a token batch at a DINO-WM shape
//! (GFLOP/s), next to the f32 kernel and the copy kernel measured in the same run.

use serde::Serialize;

use super::kernels::{time_gpu, AdapterId};
use crate::gpu::qops::{self, GpuQuantWeight, QKernel};
use crate::gpu::{ops, GpuContext, GpuTensor};
use crate::quant::{self, QuantContext, WeightSpec};
use crate::tensor::randn;
use crate::Result;

pub struct Options {
    pub reps: usize,
    pub quick: bool,
}

#[derive(Serialize, Clone, Debug)]
pub struct QuantResult {
    pub name: String,
    /// 32 for the f32 kernel, null for the copy kernel.
    pub bits: Option<u8>,
    pub group: Option<usize>,
    pub batch: usize,
    /// The weight's [N, K] (the copy kernel: [elements, 1]).
    pub shape: [usize; 2],
    /// The kernel: "copy", "f32" (ops::matmul's register tiles), "f32 tiled" (the quantized
    /// kernels' workgroup tiling with f32 weights) or a [`QKernel`] name.
    pub kernel: String,
    /// Whether the planner's matmul takes this kernel on this adapter for this shape.
    pub default: bool,
    pub seconds_median: f64,
    /// Weight bytes streamed per second (mat-vec), or read + written bytes (copy).
    pub gbps: Option<f64>,
    pub gflops: Option<f64>,
}

#[derive(Serialize, Clone, Debug)]
pub struct QuantReport {
    pub adapter: AdapterId,
    pub date: String,
    pub matvec_shapes: Vec<[usize; 2]>,
    pub token_shape: [usize; 3],
    pub copy_gbps: f64,
    pub results: Vec<QuantResult>,
}

impl QuantReport {
    pub fn table(&self) -> String {
        let mut s = format!(
            "adapter: {} ({}, {})   date: {}   copy: {:.2} GB/s (read + write)\n\
             mat-vec weights [N, K] = {:?}; token batch [M, K] x [N, K]^T = {:?}\n",
            self.adapter.name,
            self.adapter.backend,
            self.adapter.device_type,
            self.date,
            self.copy_gbps,
            self.matvec_shapes,
            self.token_shape
        );
        s += &format!(
            "{:<8} {:<11} {:<10} {:>5} {:>10} {:>12} {:>10} {:>10} {:>9}\n",
            "weights",
            "[N, K]",
            "kernel",
            "batch",
            "median ms",
            "weight GB/s",
            "x copy",
            "GFLOP/s",
            "x f32"
        );
        // "x f32": the f32 weight's time over this kernel's at the same shape and batch (a
        // speed-up); token batches compare under the same tiling (register tiles for "lanes",
        // workgroup tiles for "tiled").
        let f32_of = |q: &QuantResult| {
            self.results
                .iter()
                .find(|r| {
                    r.bits == Some(32)
                        && r.batch == q.batch
                        && r.shape == q.shape
                        && (q.batch <= 8
                            || r.kernel.ends_with("tiled") == q.kernel.ends_with("tiled"))
                })
                .and_then(|r| r.gflops)
        };
        for r in &self.results {
            let f = f32_of(r).filter(|_| r.bits.is_some());
            s += &format!(
                "{:<8} {:<11} {:<10} {:>5} {:>10.3} {:>12} {:>10} {:>10} {:>9}\n",
                r.name,
                if r.bits.is_some() {
                    format!("{}x{}", r.shape[0], r.shape[1])
                } else {
                    String::new()
                },
                format!("{}{}", r.kernel, if r.default { "*" } else { "" }),
                r.batch,
                r.seconds_median * 1e3,
                r.gbps.map(|g| format!("{g:.2}")).unwrap_or_default(),
                r.gbps
                    .filter(|_| r.bits.is_some())
                    .map(|g| format!("{:.2}", g / self.copy_gbps))
                    .unwrap_or_default(),
                r.gflops.map(|g| format!("{g:.2}")).unwrap_or_default(),
                match (r.gflops, f) {
                    (Some(g), Some(f)) => format!("{:.2}", g / f),
                    _ => String::new(),
                },
            );
        }
        s + "* the kernel the planner takes on this adapter\n"
    }
}

pub fn run(opts: &Options) -> Result<QuantReport> {
    let ctx = GpuContext::new()?;
    let reps = opts.reps;
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
    let mut results = Vec::new();

    // Copy yardstick.
    let cn = 16 << 20;
    let src = ctx.upload(&vec![1.0f32; cn], &[cn])?;
    let copy_s = time_gpu(&ctx, reps, |rec| {
        crate::gpu::probe::copy(rec, &src).map(|_| ())
    })?
    .0;
    let copy_gbps = 2.0 * (cn * 4) as f64 / copy_s / 1e9;
    drop(src);
    results.push(QuantResult {
        name: "copy".into(),
        bits: None,
        group: None,
        batch: 0,
        shape: [cn, 1],
        kernel: "copy".into(),
        default: true,
        seconds_median: copy_s,
        gbps: Some(copy_gbps),
        gflops: None,
    });

    let wms: Vec<Vec<f32>> = mv_shapes
        .iter()
        .enumerate()
        .map(|(i, &[n, k])| randn(n * k, 0.02, 1 + 10 * i as u64))
        .collect();
    let wt = randn(tn * tk, 0.02, 2);
    let xt = ctx.upload(&randn(tm * tk, 1.0, 3), &[tm, tk])?;

    // f32 baseline.
    for (&[mn, mk], wm) in mv_shapes.iter().zip(&wms) {
        let gw = ctx.upload(wm, &[mn, mk])?;
        for &b in batches {
            let x = ctx.upload(&randn(b * mk, 1.0, 4), &[b, mk])?;
            let s = time_gpu(&ctx, reps, |rec| {
                ops::matmul(rec, &x, &gw, None).map(|_| ())
            })?
            .0;
            results.push(QuantResult {
                name: "f32".into(),
                bits: Some(32),
                group: None,
                batch: b,
                shape: [mn, mk],
                kernel: "f32".into(),
                default: true,
                seconds_median: s,
                gbps: Some((mn * mk * 4) as f64 / s / 1e9),
                gflops: Some(2.0 * (b * mn * mk) as f64 / s / 1e9),
            });
        }
    }
    {
        let gwt = ctx.upload(&wt, &[tn, tk])?;
        for tiled in [false, true] {
            let s = time_gpu(&ctx, reps, |rec| {
                if tiled {
                    ops::matmul_tiled(rec, &xt, &gwt, None).map(|_| ())
                } else {
                    ops::matmul(rec, &xt, &gwt, None).map(|_| ())
                }
            })?
            .0;
            results.push(QuantResult {
                name: "f32".into(),
                bits: Some(32),
                group: None,
                batch: tm,
                shape: [tn, tk],
                kernel: if tiled { "f32 tiled" } else { "f32" }.into(),
                default: tiled == (crate::gpu::tuning("QWM_MATMUL") == Some("tiled")),
                seconds_median: s,
                gbps: None,
                gflops: Some(2.0 * (tm * tn * tk) as f64 / s / 1e9),
            });
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
                let gm = GpuQuantWeight::upload(&ctx, &pm)?;
                for &b in batches {
                    let x = ctx.upload(&randn(b * mk, 1.0, 4), &[b, mk])?;
                    let chosen = QKernel::choose(&ctx, b, mn);
                    for kernel in [QKernel::Lanes, QKernel::Split] {
                        results.push(time_kernel(
                            &ctx,
                            reps,
                            (&label, &spec),
                            &x,
                            &gm,
                            kernel,
                            chosen,
                        )?);
                    }
                }
            }
            let pt = q.quantize(&wt, tn, tk, &spec, &QuantContext::default())?;
            let gt = GpuQuantWeight::upload(&ctx, &pt)?;
            let chosen = QKernel::choose(&ctx, tm, tn);
            for kernel in [QKernel::Lanes, QKernel::Tiled] {
                results.push(time_kernel(
                    &ctx,
                    reps,
                    (&label, &spec),
                    &xt,
                    &gt,
                    kernel,
                    chosen,
                )?);
            }
        }
    }
    Ok(QuantReport {
        adapter: AdapterId::of(&ctx),
        date: super::kernels::today(),
        matvec_shapes: mv_shapes.to_vec(),
        token_shape: [tm, tk, tn],
        copy_gbps,
        results,
    })
}

/// One quantized kernel timed on `x [B, K]`: its result row (weight bytes streamed per second
/// for mat-vecs, B <= 8).
fn time_kernel(
    ctx: &GpuContext,
    reps: usize,
    (label, spec): (&str, &WeightSpec),
    x: &GpuTensor,
    w: &GpuQuantWeight,
    kernel: QKernel,
    chosen: QKernel,
) -> Result<QuantResult> {
    let s = time_gpu(ctx, reps, |rec| {
        qops::qmatmul_with(rec, x, w, None, kernel).map(|_| ())
    })?
    .0;
    let b = x.shape()[0];
    Ok(QuantResult {
        name: label.into(),
        bits: Some(spec.bits),
        group: spec.group,
        batch: b,
        shape: [w.n, w.k],
        kernel: kernel.name().into(),
        default: kernel == chosen,
        seconds_median: s,
        gbps: (b <= 8).then(|| w.bytes() as f64 / s / 1e9),
        gflops: Some(2.0 * (b * w.n * w.k) as f64 / s / 1e9),
    })
}
