//! The mutation fuzzer's CI budget (tests/fuzz/mod.rs): a fixed seed and 2,000 mutated files
//! per format, none of which may panic, allocate beyond a bound set by the file's size, or fail
//! with an error that does not name the file. `cargo run --release --example fuzz_files` runs the
//! long budget recorded in docs/RELIABILITY.md.

mod fuzz;

const SEED: u64 = 0x5157_4d19;
const CASES: u64 = 2000;

#[test]
fn mutated_files_never_panic_and_errors_name_the_file() {
    fuzz::quiet_panics();
    let root = std::env::temp_dir().join(format!("qwm-fuzz-ci-{}", std::process::id()));
    let mut report = Vec::new();
    let mut failed = false;
    for f in fuzz::formats() {
        let t = std::time::Instant::now();
        let s = fuzz::run(&f, &root.join(f.name), SEED, CASES);
        report.push(format!(
            "{}: {} cases, {} loaded, {} refused, {} failures, peak {} KiB, {:.1} s",
            f.name,
            s.cases,
            s.loaded,
            s.refused,
            s.failures.len(),
            s.max_peak_bytes >> 10,
            t.elapsed().as_secs_f64()
        ));
        for (case, what, muts) in &s.failures {
            report.push(format!("  case {case}: {what}\n    mutations {muts}"));
        }
        failed |= !s.failures.is_empty();
        // Mutations must reach the checks: most files are refused, some still load.
        assert!(
            s.refused > CASES / 4,
            "{}: only {} refused",
            f.name,
            s.refused
        );
        assert!(s.loaded > 0, "{}: no mutated file loaded", f.name);
    }
    let _ = std::fs::remove_dir_all(&root);
    eprintln!("{}", report.join("\n"));
    assert!(!failed, "{}", report.join("\n"));
}
