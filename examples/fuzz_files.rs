//! The mutation fuzzer's long budget (docs/RELIABILITY.md records a run): the CI test's fuzzer
//! (tests/fuzz/mod.rs) with more cases and any seed.
//!
//! `cargo run --release --example fuzz_files -- [CASES_PER_FORMAT] [SEED] [FORMAT,...]`
//! (default 35,000 per format, seed 1, every format). Prints one line per format and every
//! failure (panic, error without the file's name, allocation over the bound); exits 1 if there
//! was any.

#[path = "../tests/fuzz/mod.rs"]
mod fuzz;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cases: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(35_000);
    let seed: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let only: Option<Vec<&str>> = args.get(3).map(|a| a.split(',').collect());
    fuzz::quiet_panics();
    let root = std::env::temp_dir().join(format!("qwm-fuzz-long-{}", std::process::id()));
    let mut failures = 0;
    let mut total = 0;
    for f in fuzz::formats() {
        if only.as_ref().is_some_and(|o| !o.contains(&f.name)) {
            continue;
        }
        let t = std::time::Instant::now();
        let s = fuzz::run(&f, &root.join(f.name), seed, cases);
        total += s.cases;
        failures += s.failures.len();
        println!(
            "{}: {} cases (seed {seed}), {} loaded, {} refused with an error naming the file, \
             {} failures, peak allocation {} KiB, {:.0} s",
            f.name,
            s.cases,
            s.loaded,
            s.refused,
            s.failures.len(),
            s.max_peak_bytes >> 10,
            t.elapsed().as_secs_f64()
        );
        for (case, what, muts) in &s.failures {
            println!("  case {case}: {what}\n    mutations {muts}");
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    println!("total: {total} cases, {failures} failures");
    if failures > 0 {
        std::process::exit(1);
    }
}
