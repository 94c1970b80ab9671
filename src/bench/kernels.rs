//! `qwm bench kernels`: f32 matmul at 1024^3 and at DINO-WM's predictor shapes, attention at
//! 588 tokens, each next to the CPU reference at the same shape (same name and shape, device
//! "cpu"), plus the yardsticks (copy, FMA peak).

use super::record::BenchRecord;
use super::Session;
use crate::gpu::ops;
use crate::tensor::randn;
use crate::{cpu, Result};

pub struct Options {
    pub quick: bool,
}

struct MmShape {
    name: &'static str,
    m: usize,
    n: usize,
    k: usize,
}

fn shapes(quick: bool) -> Vec<MmShape> {
    let mut v = vec![MmShape {
        name: "matmul 1024^3",
        m: 1024,
        n: 1024,
        k: 1024,
    }];
    // DINO-WM predictor, one sample = 3 frames x 196 patches = 588 tokens of width 404.
    let predictor: &[(&str, usize, usize)] = if quick {
        &[("matmul fc1 404->2048", 2048, 404)]
    } else {
        &[
            ("matmul qkv 404->1212", 1212, 404),
            ("matmul qkv 404->3072", 3072, 404),
            ("matmul out 1024->404", 404, 1024),
            ("matmul fc1 404->2048", 2048, 404),
            ("matmul fc2 2048->404", 404, 2048),
        ]
    };
    for &(name, n, k) in predictor {
        v.push(MmShape { name, m: 588, n, k });
    }
    if !quick {
        v.push(MmShape {
            name: "matmul fc1 x8 404->2048",
            m: 588 * 8,
            n: 2048,
            k: 404,
        });
    }
    v
}

/// Link a GPU row to its CPU twin: the GPU's speed relative to the CPU reference.
fn versus(gpu: &mut BenchRecord, cpu: &BenchRecord) {
    gpu.reference = Some(format!("{} (cpu)", cpu.key()));
    gpu.x_reference = Some(cpu.median_s / gpu.median_s);
}

pub fn run(s: &mut Session, opts: &Options) -> Result<()> {
    s.measure_yardsticks()?;
    let timing = s.gpu_timing();
    for (i, sh) in shapes(opts.quick).iter().enumerate() {
        let x = randn(sh.m * sh.k, 1.0, 10 + i as u64);
        let w = randn(sh.n * sh.k, 0.05, 20 + i as u64);
        let b = randn(sh.n, 0.1, 30 + i as u64);
        let flops = 2.0 * (sh.m * sh.n * sh.k) as f64;
        let shape = format!("{}x{} by {}", sh.m, sh.k, sh.n);
        let crow = if s.cpu {
            let cx = cpu::tensor(&x, &[sh.m, sh.k])?;
            let cw = cpu::tensor(&w, &[sh.n, sh.k])?;
            let cb = cpu::tensor(&b, &[sh.n])?;
            let t = s.time_cpu(|| cpu::matmul(&cx, &cw, Some(&cb)).map(|_| ()))?;
            Some(
                BenchRecord::new("kernels", sh.name, &shape, "cpu", "cpu-wall")
                    .samples(t)
                    .flops(flops),
            )
        } else {
            None
        };
        if let Some(ctx) = &s.gpu {
            let gx = ctx.upload(&x, &[sh.m, sh.k])?;
            let gw = ctx.upload(&w, &[sh.n, sh.k])?;
            let gb = ctx.upload(&b, &[sh.n])?;
            let t = s.time_gpu(|rec| ops::matmul(rec, &gx, &gw, Some(&gb)).map(|_| ()))?;
            let mut g = BenchRecord::new("kernels", sh.name, &shape, "gpu", timing)
                .kernel("matmul", None)
                .samples(t)
                .flops(flops);
            if let Some(c) = &crow {
                versus(&mut g, c);
            }
            s.push(g);
        }
        s.records.extend(crow);
    }
    // Predictor attention: 588 tokens (3 frames of 196), 16 heads of 64, frame-causal.
    let (t, h, d, p) = (588usize, 16usize, 64usize, 196usize);
    let qkv = randn(t * 3 * h * d, 1.0, 40);
    // Unmasked would be 4 T^2 H D flops; the frame-causal mask keeps 2/3 of the pairs.
    let pairs: usize = (0..t).map(|i| (i / p + 1) * p).sum();
    let flops = 4.0 * (pairs * h * d) as f64;
    let shape = format!("T={t} H={h} D={d} frame={p}");
    let crow = if s.cpu {
        let c = cpu::tensor(&qkv, &[1, t, 3 * h * d])?;
        let ts = s.time_cpu(|| cpu::attention(&c, h, Some(p)).map(|_| ()))?;
        Some(
            BenchRecord::new("kernels", "attention", &shape, "cpu", "cpu-wall")
                .samples(ts)
                .flops(flops),
        )
    } else {
        None
    };
    if let Some(ctx) = &s.gpu {
        let g = ctx.upload(&qkv, &[1, t, 3 * h * d])?;
        let ts = s.time_gpu(|rec| ops::attention(rec, &g, h, Some(p)).map(|_| ()))?;
        let mut r = BenchRecord::new("kernels", "attention", &shape, "gpu", timing)
            .kernel("attention", None)
            .samples(ts)
            .flops(flops);
        if let Some(c) = &crow {
            versus(&mut r, c);
        }
        s.push(r);
    }
    s.records.extend(crow);
    Ok(())
}
