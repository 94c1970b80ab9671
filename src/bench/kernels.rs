//! `qwm bench kernels`: matmul at 1024^3 and at DINO-WM's predictor shapes, attention at 588
//! tokens, a copy kernel for bandwidth, and the CPU reference's matmul at the same shapes.

use serde::Serialize;

use super::{median_secs, wall};
use crate::gpu::{ops, GpuContext, Recorder};
use crate::tensor::randn;
use crate::{cpu, Result};

pub struct Options {
    pub reps: usize,
    pub quick: bool,
}

#[derive(Serialize, Clone, Debug)]
pub struct AdapterId {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
}

impl AdapterId {
    pub fn of(ctx: &GpuContext) -> Self {
        let r = &ctx.report;
        AdapterId {
            name: r.name.clone(),
            backend: r.backend.clone(),
            device_type: r.device_type.clone(),
            driver: format!("{} {}", r.driver, r.driver_info).trim().to_string(),
        }
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct BenchResult {
    pub name: String,
    pub shape: String,
    pub seconds_median: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gflops: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gbps: Option<f64>,
    /// "gpu-timestamp", "gpu-wall" or "cpu-wall".
    pub timing: String,
}

#[derive(Serialize, Clone, Debug)]
pub struct KernelReport {
    pub adapter: AdapterId,
    pub date: String,
    pub cpu_threads: usize,
    pub results: Vec<BenchResult>,
    /// GPU f32 matmul GFLOP/s at 1024^3 divided by the CPU reference's in the same run.
    pub matmul_1024_gpu_over_cpu: f64,
}

impl KernelReport {
    pub fn table(&self) -> String {
        let mut s = format!(
            "adapter: {} ({}, {}, driver {})   date: {}   cpu threads: {}\n",
            self.adapter.name,
            self.adapter.backend,
            self.adapter.device_type,
            self.adapter.driver,
            self.date,
            self.cpu_threads
        );
        s += &format!(
            "{:<26} {:<24} {:>12} {:>10} {:>9}  {}\n",
            "kernel", "shape", "median ms", "GFLOP/s", "GB/s", "timing"
        );
        for r in &self.results {
            s += &format!(
                "{:<26} {:<24} {:>12.3} {:>10} {:>9}  {}\n",
                r.name,
                r.shape,
                r.seconds_median * 1e3,
                r.gflops.map(|g| format!("{g:.2}")).unwrap_or_default(),
                r.gbps.map(|g| format!("{g:.2}")).unwrap_or_default(),
                r.timing
            );
        }
        s += &format!(
            "matmul 1024^3: GPU / CPU reference = {:.3}\n",
            self.matmul_1024_gpu_over_cpu
        );
        s
    }
}

pub fn today() -> String {
    // Days since the epoch to a civil date (UTC), to avoid a date-time dependency.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let z = secs / 86400 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02}")
}

/// Time one recording: GPU timestamps summed over its dispatches when the adapter has them,
/// otherwise wall clock around submit + wait.
pub fn time_gpu<F>(ctx: &GpuContext, reps: usize, mut record: F) -> Result<(f64, &'static str)>
where
    F: FnMut(&mut Recorder) -> Result<()>,
{
    let stamped = ctx.features.timestamp_query;
    let secs = median_secs(reps, || {
        if stamped {
            let mut rec = Recorder::profiled(ctx);
            record(&mut rec)?;
            Ok(rec.submit_profiled()?.iter().map(|k| k.seconds).sum())
        } else {
            wall(|| {
                let mut rec = Recorder::new(ctx);
                record(&mut rec)?;
                rec.submit()?;
                ctx.wait()
            })
        }
    })?;
    Ok((secs, if stamped { "gpu-timestamp" } else { "gpu-wall" }))
}

struct MmShape {
    name: &'static str,
    m: usize,
    n: usize,
    k: usize,
}

pub fn run(opts: &Options) -> Result<KernelReport> {
    let ctx = GpuContext::new()?;
    let mut results = Vec::new();
    let mut shapes = vec![MmShape {
        name: "matmul 1024^3",
        m: 1024,
        n: 1024,
        k: 1024,
    }];
    if !opts.quick {
        // DINO-WM predictor, one sample = 3 frames x 196 patches = 588 tokens of width 404.
        for (name, n, k) in [
            ("matmul qkv 404->1212", 1212, 404),
            ("matmul qkv 404->3072", 3072, 404),
            ("matmul out 1024->404", 404, 1024),
            ("matmul fc1 404->2048", 2048, 404),
            ("matmul fc2 2048->404", 404, 2048),
        ] {
            shapes.push(MmShape { name, m: 588, n, k });
        }
        shapes.push(MmShape {
            name: "matmul fc1 x8 404->2048",
            m: 588 * 8,
            n: 2048,
            k: 404,
        });
    }
    let mut gpu_1024 = 0.0;
    let mut cpu_1024 = 0.0;
    for (i, s) in shapes.iter().enumerate() {
        let x = randn(s.m * s.k, 1.0, 10 + i as u64);
        let w = randn(s.n * s.k, 0.05, 20 + i as u64);
        let b = randn(s.n, 0.1, 30 + i as u64);
        let flops = 2.0 * (s.m * s.n * s.k) as f64;
        let shape = format!("{}x{} by {}", s.m, s.k, s.n);
        let gx = ctx.upload(&x, &[s.m, s.k])?;
        let gw = ctx.upload(&w, &[s.n, s.k])?;
        let gb = ctx.upload(&b, &[s.n])?;
        let (secs, timing) = time_gpu(&ctx, opts.reps, |rec| {
            ops::matmul(rec, &gx, &gw, Some(&gb)).map(|_| ())
        })?;
        results.push(BenchResult {
            name: format!("gpu {}", s.name),
            shape: shape.clone(),
            seconds_median: secs,
            gflops: Some(flops / secs / 1e9),
            gbps: None,
            timing: timing.into(),
        });
        let cx = cpu::tensor(&x, &[s.m, s.k])?;
        let cw = cpu::tensor(&w, &[s.n, s.k])?;
        let cb = cpu::tensor(&b, &[s.n])?;
        let csecs = median_secs(opts.reps, || {
            wall(|| cpu::matmul(&cx, &cw, Some(&cb)).map(|_| ()))
        })?;
        results.push(BenchResult {
            name: format!("cpu {}", s.name),
            shape,
            seconds_median: csecs,
            gflops: Some(flops / csecs / 1e9),
            gbps: None,
            timing: "cpu-wall".into(),
        });
        if i == 0 {
            gpu_1024 = flops / secs;
            cpu_1024 = flops / csecs;
        }
    }
    if !opts.quick {
        // Predictor attention: 588 tokens (3 frames of 196), 16 heads of 64, frame-causal.
        let (t, h, d, p) = (588usize, 16usize, 64usize, 196usize);
        let qkv = randn(t * 3 * h * d, 1.0, 40);
        let g = ctx.upload(&qkv, &[1, t, 3 * h * d])?;
        let (secs, timing) = time_gpu(&ctx, opts.reps, |rec| {
            ops::attention(rec, &g, h, Some(p)).map(|_| ())
        })?;
        // Unmasked would be 4 T^2 H D flops; the frame-causal mask keeps 2/3 of the pairs.
        let pairs: usize = (0..t).map(|i| (i / p + 1) * p).sum();
        let flops = 4.0 * (pairs * h * d) as f64;
        let shape = format!("T={t} H={h} D={d} frame={p}");
        results.push(BenchResult {
            name: "gpu attention".into(),
            shape: shape.clone(),
            seconds_median: secs,
            gflops: Some(flops / secs / 1e9),
            gbps: None,
            timing: timing.into(),
        });
        let c = cpu::tensor(&qkv, &[1, t, 3 * h * d])?;
        let csecs = median_secs(opts.reps, || {
            wall(|| cpu::attention(&c, h, Some(p)).map(|_| ()))
        })?;
        results.push(BenchResult {
            name: "cpu attention".into(),
            shape,
            seconds_median: csecs,
            gflops: Some(flops / csecs / 1e9),
            gbps: None,
            timing: "cpu-wall".into(),
        });
    }
    // Copy: 64 MiB read + 64 MiB written.
    let n = 16 << 20;
    let src = ctx.upload(&vec![1.0f32; n], &[n])?;
    let (secs, timing) = time_gpu(&ctx, opts.reps, |rec| {
        crate::gpu::probe::copy(rec, &src).map(|_| ())
    })?;
    results.push(BenchResult {
        name: "gpu copy".into(),
        shape: "64 MiB".into(),
        seconds_median: secs,
        gflops: None,
        gbps: Some(2.0 * (n * 4) as f64 / secs / 1e9),
        timing: timing.into(),
    });
    Ok(KernelReport {
        adapter: AdapterId::of(&ctx),
        date: today(),
        cpu_threads: rayon::current_num_threads(),
        results,
        matmul_1024_gpu_over_cpu: gpu_1024 / cpu_1024,
    })
}
