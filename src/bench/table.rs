//! The text table every `qwm bench` subcommand prints: the run's identity (adapter, driver,
//! commit, timing), its yardsticks, then one line per record with the ratios that make numbers
//! from different machines readable (to copy bandwidth, to the FMA peak, to the same run's
//! reference row).

use std::fmt::Write as _;

use super::compare::sig3;
use super::record::BenchFile;

pub fn table(f: &BenchFile) -> String {
    let mut s = String::new();
    match &f.adapter {
        Some(a) => {
            let _ = writeln!(
                s,
                "adapter: {} ({}, {}, vendor {:#06x} device {:#06x}, driver {} {})",
                a.name, a.backend, a.device_type, a.vendor, a.device, a.driver, a.driver_info
            );
        }
        None => s += "adapter: none (CPU rows only)\n",
    }
    let _ = writeln!(
        s,
        "qwm {} @ {} ({})   {}   cpu: {} ({} threads)",
        f.build.qwm_version,
        f.build.git_commit,
        f.build.profile,
        f.system.date,
        f.system.cpu_model,
        f.system.rayon_threads
    );
    let _ = writeln!(
        s,
        "timing: gpu {}, cpu {}; {} warm-up + {} samples per row (median shown){}",
        f.timing.gpu,
        f.timing.cpu,
        f.timing.warmup,
        f.timing.reps,
        if f.overrides.is_empty() {
            String::new()
        } else {
            format!(
                "; overrides: {}",
                f.overrides
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    );
    if let (Some(c), Some(p)) = (f.yardsticks.copy_gbps, f.yardsticks.fma_peak_gflops) {
        let _ = writeln!(s, "yardsticks: copy {c:.2} GB/s, FMA peak {p:.2} GFLOP/s");
    }
    let _ = writeln!(
        s,
        "{:<10} {:<28} {:<22} {:<4} {:>10} {:>7} {:>10} {:>9} {:>12} {:>7} {:>7} {:>7}",
        "family",
        "name",
        "shape",
        "dev",
        "median ms",
        "sd %",
        "GFLOP/s",
        "GB/s",
        "rate",
        "x copy",
        "x peak",
        "x ref"
    );
    let o = |v: Option<f64>| v.map(sig3).unwrap_or_default();
    for r in &f.results {
        let name = format!(
            "{}{}",
            r.name,
            if r.default_kernel == Some(true) {
                "*"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "{:<10} {:<28} {:<22} {:<4} {:>10} {:>7} {:>10} {:>9} {:>12} {:>7} {:>7} {:>7}",
            r.family,
            name,
            r.shape,
            r.device,
            sig3(r.median_s * 1e3),
            o(r.stddev_s.map(|d| 100.0 * d / r.median_s)),
            o(r.gflops),
            o(r.gbps),
            r.rate
                .map(|x| format!("{} {}", sig3(x), r.rate_unit.as_deref().unwrap_or("")))
                .unwrap_or_default(),
            o(r.x_copy),
            o(r.x_peak),
            o(r.x_reference),
        );
    }
    s += "* qwm's own kernel choice on this adapter; x ref: speed over the row's reference in \
          the same run (GPU over CPU, quantized over f32)\n";
    for n in &f.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}
