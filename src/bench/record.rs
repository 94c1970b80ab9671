//! The one result schema behind every `qwm bench` subcommand (`qwm-bench`, version
//! [`SCHEMA_VERSION`]): who ran it (build, system, adapter, overrides), how it was timed, and one
//! [`BenchRecord`] per measurement with its raw samples. docs/BENCHMARKS.md documents each field.
//!
//! Records are matched across files by `family/name [shape]`, so a name says *what* ran (never
//! which device: that is `device`) and a shape says at which size; a GPU run's CPU-reference
//! rows then line up with a CPU-only run's rows, and an older file converted by
//! [`super::legacy`] lines up with a new one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::gpu::GpuContext;
use crate::{Error, Result};

/// The `schema` field of every result file.
pub const SCHEMA: &str = "qwm-bench";
/// Bumped whenever a field changes meaning or disappears; readers refuse newer versions.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BenchFile {
    pub schema: String,
    pub schema_version: u32,
    /// The subcommand: kernels, quant, model, plan, env or all.
    pub suite: String,
    /// The command line that produced the file.
    pub command: String,
    pub build: BuildInfo,
    pub system: SystemInfo,
    /// The GPU adapter, or null for a CPU-only run.
    pub adapter: Option<AdapterRecord>,
    pub timing: TimingInfo,
    /// `QWM_*` (and `RAYON_NUM_THREADS`) environment variables set during the run.
    pub overrides: BTreeMap<String, String>,
    pub yardsticks: Yardsticks,
    pub results: Vec<BenchRecord>,
    /// Run-wide facts that are not timings (model config, chunk sizes, peak buffer bytes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context: BTreeMap<String, serde_json::Value>,
    /// Free-form remarks, e.g. how a file was converted from an older format.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BuildInfo {
    pub qwm_version: String,
    /// `git rev-parse HEAD` at build time (`-dirty` when tracked files differed), or "unknown".
    pub git_commit: String,
    /// Cargo profile: release or debug.
    pub profile: String,
    pub target: String,
}

impl BuildInfo {
    pub fn current() -> Self {
        BuildInfo {
            qwm_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: env!("QWMBUILD_GIT_COMMIT").into(),
            profile: env!("QWMBUILD_BUILD_PROFILE").into(),
            target: env!("QWMBUILD_BUILD_TARGET").into(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SystemInfo {
    /// Start of the run, UTC, RFC 3339 (seconds).
    pub date: String,
    /// Operating system family, distribution and kernel where known.
    pub os: String,
    pub arch: String,
    pub cpu_model: String,
    /// Hardware threads the OS offers this process.
    pub cpu_threads: usize,
    /// Threads of the CPU backend's pool (rayon).
    pub rayon_threads: usize,
}

impl SystemInfo {
    pub fn current() -> Self {
        SystemInfo {
            date: now_utc(),
            os: os_description(),
            arch: std::env::consts::ARCH.into(),
            cpu_model: cpu_model(),
            cpu_threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            rayon_threads: rayon::current_num_threads(),
        }
    }
}

/// wgpu's `AdapterInfo` in full, the optional features qwm enabled and the limits it requested.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AdapterRecord {
    pub name: String,
    pub vendor: u32,
    pub device: u32,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub backend: String,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    /// wgpu feature names enabled on the device.
    pub features: Vec<String>,
    /// The limits qwm requested (its adapter's own), compute-relevant subset, by wgpu name.
    pub limits: BTreeMap<String, u64>,
}

impl AdapterRecord {
    pub fn of(ctx: &GpuContext) -> Self {
        let info = ctx.adapter.get_info();
        let l = &ctx.limits;
        let limits: BTreeMap<String, u64> = [
            (
                "max_storage_buffer_binding_size",
                l.max_storage_buffer_binding_size,
            ),
            ("max_buffer_size", l.max_buffer_size),
            (
                "max_uniform_buffer_binding_size",
                l.max_uniform_buffer_binding_size,
            ),
            (
                "max_compute_workgroup_storage_size",
                l.max_compute_workgroup_storage_size as u64,
            ),
            (
                "max_compute_invocations_per_workgroup",
                l.max_compute_invocations_per_workgroup as u64,
            ),
            (
                "max_compute_workgroup_size_x",
                l.max_compute_workgroup_size_x as u64,
            ),
            (
                "max_compute_workgroup_size_y",
                l.max_compute_workgroup_size_y as u64,
            ),
            (
                "max_compute_workgroup_size_z",
                l.max_compute_workgroup_size_z as u64,
            ),
            (
                "max_compute_workgroups_per_dimension",
                l.max_compute_workgroups_per_dimension as u64,
            ),
            (
                "max_storage_buffers_per_shader_stage",
                l.max_storage_buffers_per_shader_stage as u64,
            ),
            (
                "max_uniform_buffers_per_shader_stage",
                l.max_uniform_buffers_per_shader_stage as u64,
            ),
            (
                "max_bindings_per_bind_group",
                l.max_bindings_per_bind_group as u64,
            ),
            ("max_bind_groups", l.max_bind_groups as u64),
            (
                "min_storage_buffer_offset_alignment",
                l.min_storage_buffer_offset_alignment as u64,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        AdapterRecord {
            name: info.name,
            vendor: info.vendor,
            device: info.device,
            device_type: crate::gpu::device_type_name(info.device_type).into(),
            driver: info.driver,
            driver_info: info.driver_info,
            backend: crate::gpu::backend_name(info.backend).into(),
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            features: ctx
                .device
                .features()
                .iter_names()
                .map(|(n, _)| n.to_string())
                .collect(),
            limits,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TimingInfo {
    /// How GPU rows were timed: "gpu-timestamp" (timestamp queries summed over the dispatches
    /// of one recording), "gpu-wall" (wall clock around submit + wait) or "none".
    pub gpu: String,
    /// How CPU rows were timed: wall clock.
    pub cpu: String,
    /// Untimed calls before the samples (pipeline compilation, pool warm-up).
    pub warmup: usize,
    /// Timed samples per measurement (`--reps`).
    pub reps: usize,
}

/// The run's own references: what the adapter can stream and issue, measured in the same run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Yardsticks {
    /// The copy kernel's read + write bandwidth, GB/s.
    pub copy_gbps: Option<f64>,
    /// The FMA probe's rate, GFLOP/s (2 flops per FMA).
    pub fma_peak_gflops: Option<f64>,
}

/// One measurement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BenchRecord {
    /// kernels, quant, model, plan, env or yardstick.
    pub family: String,
    /// What ran (unique within a family and shape), never which device.
    pub name: String,
    /// The problem size, as text.
    pub shape: String,
    /// Weight (and activation) quantization spec, e.g. "w4g32", "f32".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quant: Option<String>,
    /// The kernel variant, where a benchmark runs several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Whether qwm's own choice on this adapter is this kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_kernel: Option<bool>,
    /// "gpu" (the adapter) or "cpu" (qwm's CPU backend / plain CPU code).
    pub device: String,
    /// "gpu-timestamp", "gpu-wall" or "cpu-wall".
    pub timing: String,
    /// Raw samples, seconds, in the order they were taken (empty in converted files).
    pub samples_s: Vec<f64>,
    pub median_s: f64,
    /// Null when the samples are unknown (converted files).
    pub min_s: Option<f64>,
    pub max_s: Option<f64>,
    /// Sample standard deviation (n - 1); null below two samples.
    pub stddev_s: Option<f64>,
    pub gflops: Option<f64>,
    pub gbps: Option<f64>,
    /// Another throughput (samples/s, CEM steps/s, steps/s) with its unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_unit: Option<String>,
    /// `gbps / yardsticks.copy_gbps` (GPU rows).
    pub x_copy: Option<f64>,
    /// `gflops / yardsticks.fma_peak_gflops` (GPU rows).
    pub x_peak: Option<f64>,
    /// The same run's reference row (`family/name [shape] device`) and this row's speed
    /// relative to it (reference time / this time): GPU vs CPU, quantized vs f32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_reference: Option<f64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl BenchRecord {
    /// A record from raw samples (seconds); throughputs are filled by the caller.
    pub fn new(family: &str, name: &str, shape: &str, device: &str, timing: &str) -> Self {
        BenchRecord {
            family: family.into(),
            name: name.into(),
            shape: shape.into(),
            quant: None,
            kernel: None,
            default_kernel: None,
            device: device.into(),
            timing: timing.into(),
            samples_s: Vec::new(),
            median_s: f64::NAN,
            min_s: None,
            max_s: None,
            stddev_s: None,
            gflops: None,
            gbps: None,
            rate: None,
            rate_unit: None,
            x_copy: None,
            x_peak: None,
            reference: None,
            x_reference: None,
            extra: BTreeMap::new(),
        }
    }

    /// Set the samples and their statistics.
    pub fn samples(mut self, s: Vec<f64>) -> Self {
        let st = Stats::of(&s);
        self.median_s = st.median;
        self.min_s = Some(st.min);
        self.max_s = Some(st.max);
        self.stddev_s = st.stddev;
        self.samples_s = s;
        self
    }

    /// GFLOP/s from the flops of one sample.
    pub fn flops(mut self, flops: f64) -> Self {
        self.gflops = Some(flops / self.median_s / 1e9);
        self
    }

    /// GB/s from the bytes moved by one sample.
    pub fn bytes(mut self, bytes: f64) -> Self {
        self.gbps = Some(bytes / self.median_s / 1e9);
        self
    }

    /// A rate from the units of work (samples, steps) of one sample.
    pub fn per_second(mut self, units: f64, unit: &str) -> Self {
        self.rate = Some(units / self.median_s);
        self.rate_unit = Some(unit.into());
        self
    }

    pub fn quant(mut self, q: &str) -> Self {
        self.quant = Some(q.into());
        self
    }

    pub fn kernel(mut self, k: &str, default: Option<bool>) -> Self {
        self.kernel = Some(k.into());
        self.default_kernel = default;
        self
    }

    pub fn extra(mut self, k: &str, v: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(k.into(), v.into());
        self
    }

    /// The matching key across files: `family/name [shape]`.
    pub fn key(&self) -> String {
        format!("{}/{} [{}]", self.family, self.name, self.shape)
    }
}

/// Summary statistics of raw samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub stddev: Option<f64>,
}

impl Stats {
    /// Median (mean of the two middle values for an even count), min, max, mean and the sample
    /// standard deviation. NaN everywhere for no samples.
    pub fn of(s: &[f64]) -> Stats {
        if s.is_empty() {
            return Stats {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
                mean: f64::NAN,
                stddev: None,
            };
        }
        let mut v = s.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        let mean = v.iter().sum::<f64>() / n as f64;
        let stddev = (n > 1)
            .then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
        Stats {
            median,
            min: v[0],
            max: v[n - 1],
            mean,
            stddev,
        }
    }
}

impl BenchFile {
    /// Read a result file: this schema, or an older qwm format converted by
    /// [`super::legacy::convert`] (the conversion is recorded in `notes`).
    pub fn load(path: &std::path::Path) -> Result<BenchFile> {
        let text = crate::io::read_text(path)?;
        Self::parse(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> std::result::Result<BenchFile, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
        match v.get("schema").and_then(|s| s.as_str()) {
            Some(SCHEMA) => {
                let ver = v.get("schema_version").and_then(|x| x.as_u64());
                match ver {
                    Some(n) if n == SCHEMA_VERSION as u64 => serde_json::from_value(v)
                        .map_err(|e| format!("a {SCHEMA} v{n} file with a bad field: {e}")),
                    Some(n) if n > SCHEMA_VERSION as u64 => Err(format!(
                        "written by a newer qwm ({SCHEMA} schema version {n}); this qwm reads \
                         versions up to {SCHEMA_VERSION}: upgrade qwm to compare it"
                    )),
                    other => Err(format!(
                        "{SCHEMA} schema version {other:?} is unknown to this qwm (it reads \
                         {SCHEMA_VERSION} and converts the pre-schema formats)"
                    )),
                }
            }
            Some(other) => Err(format!(
                "schema {other:?} is not a qwm benchmark result ({SCHEMA})"
            )),
            None => super::legacy::convert(&v),
        }
    }

    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Invalid(e.to_string()))
    }

    /// Write as pretty JSON; refuses to replace an existing file unless `overwrite`.
    pub fn write(&self, path: &std::path::Path, overwrite: bool) -> Result<()> {
        if path.exists() && !overwrite {
            return Err(Error::Invalid(format!(
                "{} exists; pass --force to replace it or pick another path",
                path.display()
            )));
        }
        crate::io::write_atomic(path, self.to_json()?.as_bytes())
    }
}

/// The `QWM_*` and `RAYON_NUM_THREADS` variables set now.
pub fn overrides() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("QWM_") || k == "RAYON_NUM_THREADS")
        .collect()
}

/// UTC now as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86400));
    let t = secs.rem_euclid(86400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// Days since 1970-01-01 to a civil (proleptic Gregorian) date; H. Hinnant's algorithm,
/// written out to avoid a date-time dependency for one line of output.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + (m <= 2) as i64, m, d)
}

fn os_description() -> String {
    let mut s = std::env::consts::OS.to_string();
    if let Ok(t) = std::fs::read_to_string("/etc/os-release") {
        if let Some(l) = t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")) {
            s += &format!(" {}", l.trim_matches('"'));
        }
    }
    if let Ok(k) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        s += &format!(" (kernel {})", k.trim());
    }
    s
}

fn cpu_model() -> String {
    if let Ok(t) = std::fs::read_to_string("/proc/cpuinfo") {
        if let Some(m) = t.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        }) {
            return m;
        }
    }
    std::env::var("PROCESSOR_IDENTIFIER").unwrap_or_else(|_| "unknown".into())
}
