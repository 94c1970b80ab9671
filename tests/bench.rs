//! The benchmark result schema and `qwm bench compare`: round-trips, the golden comparison of
//! two committed result files, shape mismatches, older and newer files, and the FMA probe's
//! parity with its CPU reference.

mod common;

use std::path::{Path, PathBuf};

use qwm::bench::compare::Comparison;
use qwm::bench::record::{BenchFile, Stats, SCHEMA_VERSION};
use qwm::bench::{GpuUse, Session};
use qwm::gpu::Recorder;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bench")
        .join(name)
}

fn load(name: &str) -> (String, BenchFile) {
    (name.to_string(), BenchFile::load(&fixture(name)).unwrap())
}

#[test]
fn stats_of_samples() {
    let s = Stats::of(&[3.0, 1.0, 2.0, 10.0]);
    assert_eq!(s.median, 2.5);
    assert_eq!((s.min, s.max), (1.0, 10.0));
    assert_eq!(s.mean, 4.0);
    // Sample standard deviation: sqrt((1 + 9 + 4 + 36) / 3).
    assert!((s.stddev.unwrap() - (50.0f64 / 3.0).sqrt()).abs() < 1e-12);
    assert_eq!(Stats::of(&[5.0]).stddev, None);
    assert_eq!(Stats::of(&[5.0, 1.0, 3.0]).median, 3.0);
}

/// A CPU-only session (the environment benchmarks) written and read back is the same file.
#[test]
fn cpu_session_round_trips() {
    let mut s = Session::new(GpuUse::Off, 2, true).unwrap();
    qwm::bench::env::run(
        &mut s,
        &qwm::bench::env::Options {
            envs: vec!["wall".into()],
            steps: 5,
            size: Some(32),
        },
    )
    .unwrap();
    let f = s.finish("env");
    assert!(f.adapter.is_none());
    assert_eq!(f.results.len(), 3);
    for r in &f.results {
        assert_eq!(r.samples_s.len(), 2);
        assert!(r.rate.unwrap() > 0.0 && r.median_s > 0.0, "{r:?}");
        assert_eq!(r.device, "cpu");
    }
    let back = BenchFile::parse(&f.to_json().unwrap()).unwrap();
    assert_eq!(back, f);
    assert_eq!(back.schema_version, SCHEMA_VERSION);
    assert!(!back.build.git_commit.is_empty());
}

/// A GPU session's yardsticks and the adapter record survive the round trip too.
#[test]
fn gpu_session_round_trips() {
    if common::gpu().is_none() {
        return;
    }
    let mut s = Session::new(GpuUse::Required, 2, false).unwrap();
    s.measure_yardsticks().unwrap();
    let f = s.finish("kernels");
    let a = f.adapter.as_ref().expect("adapter recorded");
    assert!(!a.name.is_empty() && !a.backend.is_empty());
    assert!(a.limits["max_storage_buffer_binding_size"] > 0);
    assert!(f.yardsticks.copy_gbps.unwrap() > 0.0);
    assert!(f.yardsticks.fma_peak_gflops.unwrap() > 0.0);
    let back = BenchFile::parse(&f.to_json().unwrap()).unwrap();
    assert_eq!(back, f);
}

/// The FMA probe computes exactly what its CPU reference does (lane count not a multiple of
/// any workgroup size, so the bounds check is exercised).
#[test]
fn fma_peak_matches_cpu_reference() {
    let Some(ctx) = common::gpu() else { return };
    for (lanes, iters) in [(1000usize, 37usize), (77, 1), (5000, 300)] {
        let mut rec = Recorder::new(ctx);
        let y = qwm::gpu::peak::fma_peak(&mut rec, lanes, iters, 0.999, 0.001).unwrap();
        rec.submit().unwrap();
        let got = ctx.read(&y).unwrap();
        let want = qwm::bench::peak::fma_peak_reference(lanes, iters, 0.999, 0.001);
        common::assert_close(&got, &want, common::F32_TOL, "fma_peak");
    }
}

/// `compare` on the two committed files gives the committed table (regenerate with
/// `UPDATE_GOLDEN=1` after an intended change and review the diff).
#[test]
fn compare_matches_golden() {
    let files = [load("a.json"), load("b.json")];
    let cmp = Comparison::new(&files, None).unwrap();
    let md = cmp.markdown(&Default::default());
    let golden = fixture("compare_golden.md");
    if std::env::var("UPDATE_GOLDEN").is_ok() {
        std::fs::write(&golden, &md).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(md, want, "compare output changed; see {}", golden.display());
}

#[test]
fn compare_columns_ratios_and_unmatched_rows() {
    let files = [load("a.json"), load("b.json")];
    let cmp = Comparison::new(&files, Some("C")).unwrap();
    // a.json has GPU and CPU rows (columns A, B), b.json GPU rows (C).
    let ids: Vec<&str> = cmp.columns.iter().map(|c| c.device.as_str()).collect();
    assert_eq!(ids, ["gpu", "cpu", "gpu"]);
    assert_eq!(cmp.baseline, 2);
    let mm = cmp.matmul_row();
    // Baseline C: 4300 GFLOP/s; A: 4.77 GFLOP/s.
    assert!((cmp.ratio(mm, 0).unwrap() - 4.77 / 4300.0).abs() < 1e-12);
    // Rows without a throughput compare by time: none here, so check the plan row's rate.
    let plan = cmp.rows.iter().find(|r| r.family == "plan").unwrap();
    assert_eq!(cmp.ratio(plan, 2), Some(1.0));
    assert_eq!(cmp.ratio(mm, 2), Some(1.0));
    // The streaming quant shape differs: reported, not paired.
    let mism = cmp.shape_mismatches();
    assert_eq!(mism.len(), 1, "{mism:?}");
    assert_eq!(mism[0].0, "quant/w4 lanes");
    // The shared [2048x2048] row is still matched across A and C.
    let shared = cmp
        .rows
        .iter()
        .find(|r| r.key == "quant/w4 lanes [B=1 [2048x2048]]")
        .unwrap();
    assert!(shared.cells[0].is_some() && shared.cells[2].is_some());
    // Unmatched rows are kept: plan only in C, the CPU column lacks the GPU-only rows.
    assert!(cmp.rows.iter().any(|r| r.family == "plan"));
    let missing = cmp.missing();
    assert!(missing
        .iter()
        .any(|(ci, rows)| *ci == 0 && rows.iter().any(|r| r.key == "plan/cem step tiny [300x5]")));
    let md = cmp.markdown(&Default::default());
    assert!(md.contains("`quant/w4 lanes`"), "{md}");
    assert!(md.contains("- A: every row of `plan` (1)"), "{md}");
    assert!(
        md.contains("- C: `quant/w4 lanes [B=1 [4096x8192]]`"),
        "{md}"
    );
    // CSV: one line per measured cell plus the header.
    let cells: usize = cmp
        .rows
        .iter()
        .map(|r| r.cells.iter().flatten().count())
        .sum();
    assert_eq!(cmp.csv().lines().count(), cells + 1);
    // An unknown baseline names the columns.
    let e = Comparison::new(&files, Some("nope"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--baseline") && e.contains("a.json"), "{e}");
}

trait MatmulRow {
    fn matmul_row(&self) -> &qwm::bench::compare::Row;
}

impl MatmulRow for Comparison {
    fn matmul_row(&self) -> &qwm::bench::compare::Row {
        self.rows
            .iter()
            .find(|r| r.key == "kernels/matmul 1024^3 [1024x1024 by 1024]")
            .unwrap()
    }
}

/// A file from a newer qwm is refused with a message that says so; other JSON is named.
#[test]
fn other_versions_and_foreign_files_are_clear_errors() {
    let e = BenchFile::load(&fixture("future.json"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("future.json") && e.contains("newer qwm") && e.contains("99"),
        "{e}"
    );
    let e = BenchFile::parse(r#"{"hello": 1}"#).unwrap_err();
    assert!(e.contains("not a qwm benchmark result"), "{e}");
    let e = BenchFile::parse("not json").unwrap_err();
    assert!(e.contains("not valid JSON"), "{e}");
    let e = BenchFile::parse(r#"{"schema": "other"}"#).unwrap_err();
    assert!(e.contains("not a qwm benchmark result"), "{e}");
}

/// The pre-schema H200 quant file (docs/results/h200) is read by the documented conversion.
#[test]
fn pre_schema_h200_quant_file_converts() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/results/h200/bench_quant.json");
    let f = BenchFile::load(&p).unwrap();
    assert_eq!(f.suite, "quant");
    assert_eq!(f.adapter.as_ref().unwrap().name, "NVIDIA H200");
    assert!(f.notes[0].contains("pre-schema"));
    let copy = f.yardsticks.copy_gbps.unwrap();
    assert!((copy - 3708.49).abs() < 0.01);
    let r = f
        .results
        .iter()
        .find(|r| r.key() == "quant/w4 lanes [B=1 [2048x2048]]")
        .expect("w4 mat-vec row");
    assert_eq!(r.kernel.as_deref(), Some("lanes"));
    assert!(r.samples_s.is_empty() && r.stddev_s.is_none());
    assert!((r.x_copy.unwrap() - r.gbps.unwrap() / copy).abs() < 1e-12);
    assert!(f
        .results
        .iter()
        .any(|r| r.key() == "quant/f32 [B=588 [2048x404]]"));
    // The newer lavapipe quant format converts too, with its kernels.
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/results/lavapipe/bench_quant.json");
    let l = BenchFile::load(&p).unwrap();
    assert!(l
        .results
        .iter()
        .any(|r| r.key() == "quant/w4 split [B=1 [4096x8192]]"));
    // And the two compare on the shapes they share.
    let cmp = Comparison::new(&[("l".into(), l), ("h".into(), f)], None).unwrap();
    let row = cmp
        .rows
        .iter()
        .find(|r| r.key == "quant/w4 lanes [B=1 [2048x2048]]")
        .unwrap();
    assert!(row.cells.iter().all(|c| c.is_some()));
}

/// The old model and plan JSON convert as well.
#[test]
fn pre_schema_model_and_plan_files_convert() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/results/lavapipe/model_dinowm_rollout300.json");
    let f = BenchFile::load(&p).unwrap();
    assert_eq!(f.suite, "model");
    assert!(f
        .results
        .iter()
        .any(|r| r.key() == "model/dinowm rollout [300x5]" && r.device == "gpu"));
    let plan = r#"{"model": "tiny", "adapter": null, "date": "2026-11-30", "samples": 300,
        "horizon": 5, "gpu_seconds_per_cem_step": null, "cpu_seconds_per_cem_step": 0.13,
        "gpu_peak_bytes": null}"#;
    let f = BenchFile::parse(plan).unwrap();
    assert_eq!(f.results.len(), 1);
    assert_eq!(f.results[0].key(), "plan/cem step tiny [300x5]");
    assert_eq!(f.results[0].device, "cpu");
}

/// `qwm bench compare` writes the markdown, the CSV and a readable PNG per family with two or
/// more columns; `bench env --json` refuses to replace a file without --force.
#[test]
fn compare_cli_writes_table_csv_and_charts() {
    let dir = std::env::temp_dir().join(format!("qwm_bench_cmp_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qwm"))
        .args(["bench", "compare"])
        .arg(fixture("a.json"))
        .arg(fixture("b.json"))
        .args(["--baseline", "b.json", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let md = std::fs::read_to_string(dir.join("compare.md")).unwrap();
    assert!(md.contains("| C (baseline) |"), "{md}");
    assert!(md.contains("![kernels](compare_kernels.png)"), "{md}");
    let csv = std::fs::read_to_string(dir.join("compare.csv")).unwrap();
    assert!(csv.starts_with("key,family,name,shape,column"));
    let img = image::open(dir.join("compare_kernels.png"))
        .unwrap()
        .to_rgb8();
    assert!(img.width() >= 600 && img.height() >= 100);
    // Not blank: some pixels are neither white nor black (the coloured bars).
    let coloured = img
        .pixels()
        .filter(|p| {
            let [r, g, b] = p.0;
            r.max(g).max(b) - r.min(g).min(b) > 60
        })
        .count();
    assert!(coloured > 200, "chart has {coloured} coloured pixels");
    // `plan` has one column only: no chart, the table still lists it.
    assert!(!dir.join("compare_plan.png").exists());
    assert!(md.contains("## plan"));
    // --json does not overwrite.
    let j = dir.join("env.json");
    std::fs::write(&j, "keep").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qwm"))
        .args([
            "bench", "env", "--env", "wall", "--steps", "3", "--reps", "1", "--json",
        ])
        .arg(&j)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&j).unwrap(), "keep");
    std::fs::remove_dir_all(&dir).unwrap();
}
