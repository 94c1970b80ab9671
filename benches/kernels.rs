//! `cargo bench --bench kernels`: the same measurements as `qwm bench kernels`.
fn main() {
    // `cargo test --all-targets` also runs bench targets (without `--bench`): no timing there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("kernel benchmark: run with `cargo bench --bench kernels`");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let run = || -> qwm::Result<qwm::bench::record::BenchFile> {
        let mut s = qwm::bench::Session::new(qwm::bench::GpuUse::Required, 5, true)?;
        qwm::bench::kernels::run(&mut s, &qwm::bench::kernels::Options { quick })?;
        Ok(s.finish("kernels"))
    };
    match run() {
        Ok(f) => print!("{}", qwm::bench::table::table(&f)),
        Err(e) => {
            eprintln!("kernel benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
