//! Times each f32 matmul entry point of `shaders/matmul.wgsl` on the current adapter, to pick
//! tilings on a new GPU. Usage: `cargo run --release --example matmul_variants [M N K]`.
use qwm::gpu::{GpuContext, Recorder};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let ctx = GpuContext::new()?;
    println!("adapter: {} ({})", ctx.report.name, ctx.report.backend);
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let (m, n, k) = match args[..] {
        [m, n, k] => (m, n, k),
        _ => (1024, 1024, 1024),
    };
    anyhow::ensure!(
        k % 4 == 0,
        "K must be a multiple of 4 for the vec4 variants"
    );
    let x = ctx.upload(&qwm::tensor::randn(m * k, 1.0, 1), &[m, k])?;
    let w = ctx.upload(&qwm::tensor::randn(n * k, 1.0, 2), &[n, k])?;
    // (entry, rows per workgroup, columns per workgroup, vec4 bindings)
    let variants = [
        ("matmul_nk", 32, 32, false),
        ("matmul_nk4", 32, 32, true),
        ("matmul_nk4_u", 8, 256, true),
    ];
    for (entry, rg, cg, v4) in variants {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let mut rec = Recorder::new(&ctx);
            let _y = qwm::gpu::probe::matmul_probe(&mut rec, &x, &w, entry, rg, cg, v4)?;
            rec.submit()?;
            ctx.wait()?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        let gflops = 2.0 * (m * n * k) as f64 / best / 1e9;
        println!("{entry:<14} {:8.3} s  {gflops:7.2} GFLOP/s", best);
    }
    Ok(())
}
