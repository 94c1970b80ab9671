//! `cargo bench --bench kernels`: the same measurements as `qwm bench kernels`.
fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    match qwm::bench::kernels::run(&qwm::bench::kernels::Options { reps: 5, quick }) {
        Ok(r) => print!("{}", r.table()),
        Err(e) => {
            eprintln!("kernel benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
