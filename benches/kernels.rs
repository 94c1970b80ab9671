//! `cargo bench --bench kernels`: the same measurements as `qwm bench kernels`.
fn main() {
    // `cargo test --all-targets` also runs bench targets (without `--bench`): no timing there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("kernel benchmark: run with `cargo bench --bench kernels`");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    match qwm::bench::kernels::run(&qwm::bench::kernels::Options { reps: 5, quick }) {
        Ok(r) => print!("{}", r.table()),
        Err(e) => {
            eprintln!("kernel benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
