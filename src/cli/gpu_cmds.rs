//! `qwm info`, `qwm bench kernels`.

use std::path::PathBuf;

use clap::Args;

use crate::bench;
use crate::gpu::{self, AdapterChoice};

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Print the adapters as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run_info(a: InfoArgs) -> anyhow::Result<()> {
    let choice = AdapterChoice::from_env();
    let adapters = gpu::list_adapters(&choice)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&adapters)?);
        return Ok(());
    }
    if adapters.is_empty() {
        anyhow::bail!(
            "no GPU adapter was found. On Linux without a GPU, install Mesa's lavapipe: \
             `apt-get install mesa-vulkan-drivers` (Debian 12: from bookworm-backports for \
             Mesa >= 25). Model commands also run without a GPU with `--backend cpu`."
        );
    }
    println!(
        "qwm {} sees {} adapter(s); '*' marks the one it would use (QWM_BACKEND={}, QWM_ADAPTER={})",
        env!("CARGO_PKG_VERSION"),
        adapters.len(),
        choice.backend.as_deref().unwrap_or("-"),
        choice.name_contains.as_deref().unwrap_or("-"),
    );
    for r in &adapters {
        println!(
            "{} [{}] {} ({}) driver: {} {}",
            if r.selected { "*" } else { " " },
            r.backend,
            r.name,
            r.device_type,
            r.driver,
            r.driver_info
        );
        let f = &r.features;
        println!(
            "    features: shader-f16 {}  subgroup {} (size {}..{})  timestamp-query {}",
            yes(f.shader_f16),
            yes(f.subgroup),
            r.subgroup_min_size,
            r.subgroup_max_size,
            yes(f.timestamp_query)
        );
        println!(
            "    limits: storage binding {} MiB, buffer {} MiB, workgroup storage {} KiB, \
             {} invocations/workgroup, {} workgroups/dim",
            r.max_storage_buffer_binding_size >> 20,
            r.max_buffer_size >> 20,
            r.max_compute_workgroup_storage_size >> 10,
            r.max_compute_invocations_per_workgroup,
            r.max_compute_workgroups_per_dimension
        );
    }
    if !adapters.iter().any(|r| r.selected) {
        anyhow::bail!(
            "no adapter matches QWM_BACKEND/QWM_ADAPTER; unset them or pick one listed above"
        );
    }
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

#[derive(Args, Debug)]
pub struct BenchKernelsArgs {
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Timed repetitions per kernel (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Only the 1024^3 matmul, the copy kernel and their CPU counterparts (quick check).
    #[arg(long)]
    pub quick: bool,
}

pub fn run_bench_kernels(a: BenchKernelsArgs) -> anyhow::Result<()> {
    let report = bench::kernels::run(&bench::kernels::Options {
        reps: a.reps.max(1),
        quick: a.quick,
    })?;
    print!("{}", report.table());
    write_json(a.json.as_deref(), &report)
}

#[derive(Args, Debug)]
pub struct BenchQuantArgs {
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Timed repetitions per kernel (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Only w8 and w4 at batch 1 and 8.
    #[arg(long)]
    pub quick: bool,
}

pub fn run_bench_quant(a: BenchQuantArgs) -> anyhow::Result<()> {
    let report = bench::quant::run(&bench::quant::Options {
        reps: a.reps.max(1),
        quick: a.quick,
    })?;
    print!("{}", report.table());
    write_json(a.json.as_deref(), &report)
}

/// Write a benchmark report as pretty JSON when a path was given.
pub fn write_json<T: serde::Serialize>(
    path: Option<&std::path::Path>,
    report: &T,
) -> anyhow::Result<()> {
    if let Some(path) = path {
        crate::io::write_atomic(path, serde_json::to_string_pretty(report)?.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
