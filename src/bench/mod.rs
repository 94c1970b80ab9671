//! Benchmarks behind `qwm bench ...` and `cargo bench`. Every subcommand fills one
//! [`Session`] and writes one [`record::BenchFile`] (the `qwm-bench` schema), so results from
//! any adapter, driver or commit can be put side by side by `qwm bench compare`. Every GPU
//! figure sits next to yardsticks measured in the same run (the copy kernel's bandwidth, the
//! FMA probe's rate, the CPU reference), because absolute times on a shared machine are noise.

pub mod all;
pub mod chart;
pub mod compare;
pub mod env;
pub mod kernels;
pub mod legacy;
pub mod model;
pub mod peak;
pub mod plan;
pub mod quant;
pub mod record;
pub mod table;

use std::collections::BTreeMap;
use std::time::Instant;

use crate::gpu::{probe, GpuContext, Recorder};
use crate::Result;
use record::{AdapterRecord, BenchFile, BenchRecord, BuildInfo, SystemInfo, TimingInfo};

/// Untimed calls before the samples of every measurement.
pub const WARMUP: usize = 1;

/// Whether a session opens a GPU adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuUse {
    /// Fail without an adapter.
    Required,
    /// Use one when present; CPU rows only otherwise (said in the notes).
    Optional,
    /// CPU rows only.
    Off,
}

/// One benchmark run: the adapter, the settings, the yardsticks and the records so far.
pub struct Session {
    pub gpu: Option<GpuContext>,
    pub reps: usize,
    /// Also time the CPU reference / CPU backend rows.
    pub cpu: bool,
    pub yardsticks: record::Yardsticks,
    pub records: Vec<BenchRecord>,
    pub context: BTreeMap<String, serde_json::Value>,
    pub notes: Vec<String>,
    system: SystemInfo,
}

impl Session {
    pub fn new(gpu: GpuUse, reps: usize, cpu: bool) -> Result<Self> {
        let system = SystemInfo::current();
        let mut notes = Vec::new();
        let gpu = match gpu {
            GpuUse::Off => None,
            GpuUse::Required => Some(GpuContext::new()?),
            GpuUse::Optional => match GpuContext::new() {
                Ok(c) => Some(c),
                Err(e) => {
                    let msg = format!("no GPU adapter ({e}); CPU rows only");
                    eprintln!("{msg}");
                    notes.push(msg);
                    None
                }
            },
        };
        Ok(Session {
            gpu,
            reps: reps.max(1),
            cpu,
            yardsticks: Default::default(),
            records: Vec::new(),
            context: BTreeMap::new(),
            notes,
            system,
        })
    }

    /// The GPU context, or an error naming what needed it.
    pub fn ctx(&self, what: &str) -> Result<&GpuContext> {
        self.gpu.as_ref().ok_or_else(|| {
            crate::Error::NoAdapter(format!("{what} needs a GPU adapter and none is open"))
        })
    }

    /// How GPU rows are timed on this adapter.
    pub fn gpu_timing(&self) -> &'static str {
        match &self.gpu {
            Some(c) if c.features.timestamp_query => "gpu-timestamp",
            Some(_) => "gpu-wall",
            None => "none",
        }
    }

    /// Raw samples of one recording: GPU timestamps summed over its dispatches when the adapter
    /// has them, otherwise wall clock around submit + wait. [`WARMUP`] untimed calls first.
    pub fn time_gpu<F>(&self, mut record: F) -> Result<Vec<f64>>
    where
        F: FnMut(&mut Recorder) -> Result<()>,
    {
        let ctx = self.ctx("a GPU benchmark")?;
        samples(WARMUP, self.reps, || time_recording(ctx, &mut record))
    }

    /// Raw wall-clock samples of `f`, after [`WARMUP`] untimed calls.
    pub fn time_cpu<F: FnMut() -> Result<()>>(&self, mut f: F) -> Result<Vec<f64>> {
        samples(WARMUP, self.reps, || wall(&mut f))
    }

    /// Measure the copy bandwidth and the FMA peak once (GPU sessions only).
    pub fn measure_yardsticks(&mut self) -> Result<()> {
        if self.gpu.is_none() || self.yardsticks.copy_gbps.is_some() {
            return Ok(());
        }
        let timing = self.gpu_timing();
        // Copy: 64 MiB read + 64 MiB written.
        let n = 16 << 20;
        let ctx = self.ctx("the copy yardstick")?;
        let src = ctx.upload(&vec![1.0f32; n], &[n])?;
        let s = self.time_gpu(|rec| probe::copy(rec, &src).map(|_| ()))?;
        drop(src);
        let r = BenchRecord::new("yardstick", "copy", "64 MiB", "gpu", timing)
            .kernel("copy", None)
            .samples(s)
            .bytes(2.0 * (n * 4) as f64);
        self.yardsticks.copy_gbps = r.gbps;
        self.records.push(r);
        let r = peak::measure(self)?;
        self.yardsticks.fma_peak_gflops = r.gflops;
        self.records.push(r);
        Ok(())
    }

    pub fn push(&mut self, r: BenchRecord) {
        self.records.push(r);
    }

    /// The result file: ratios to the yardsticks filled in for GPU rows.
    pub fn finish(self, suite: &str) -> BenchFile {
        let y = self.yardsticks.clone();
        let results = self
            .records
            .into_iter()
            .map(|mut r| {
                if r.device == "gpu" && r.family != "yardstick" {
                    r.x_copy = r.gbps.zip(y.copy_gbps).map(|(g, c)| g / c);
                    r.x_peak = r.gflops.zip(y.fma_peak_gflops).map(|(g, p)| g / p);
                }
                r
            })
            .collect();
        BenchFile {
            schema: record::SCHEMA.into(),
            schema_version: record::SCHEMA_VERSION,
            suite: suite.into(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            build: BuildInfo::current(),
            system: self.system,
            adapter: self.gpu.as_ref().map(AdapterRecord::of),
            timing: TimingInfo {
                gpu: match &self.gpu {
                    Some(c) if c.features.timestamp_query => "gpu-timestamp",
                    Some(_) => "gpu-wall",
                    None => "none",
                }
                .into(),
                cpu: "cpu-wall".into(),
                warmup: WARMUP,
                reps: self.reps,
            },
            overrides: record::overrides(),
            yardsticks: y,
            results,
            context: self.context,
            notes: self.notes,
        }
    }
}

/// `reps` results of `f` after `warmup` discarded calls.
pub fn samples<F: FnMut() -> Result<f64>>(
    warmup: usize,
    reps: usize,
    mut f: F,
) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    (0..reps.max(1)).map(|_| f()).collect()
}

/// One timed recording (see [`Session::time_gpu`]).
pub fn time_recording<F>(ctx: &GpuContext, record: &mut F) -> Result<f64>
where
    F: FnMut(&mut Recorder) -> Result<()>,
{
    if ctx.features.timestamp_query {
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
}

/// Wall-clock seconds of `f`.
pub fn wall<F: FnOnce() -> Result<()>>(f: F) -> Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}
