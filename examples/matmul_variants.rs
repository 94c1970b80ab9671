//! Probe of matmul variants on the current adapter (development aid for kernel tuning).
use qwm::gpu::{ops, GpuContext, Recorder};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let ctx = GpuContext::new()?;
    println!("adapter: {}", ctx.report.name);
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (m, n, k) = if args.len() == 3 {
        (args[0], args[1], args[2])
    } else {
        (1024, 1024, 1024)
    };
    let x = ctx.upload(&qwm::tensor::randn(m * k, 1.0, 1), &[m, k])?;
    let w = ctx.upload(&qwm::tensor::randn(n * k, 1.0, 2), &[n, k])?;
    let variants: [(&str, usize, usize, bool); 4] = [
        ("matmul_nk4_u8", 8, 256, true),
        ("matmul_nk", 32, 32, false),
        ("matmul_nk4", 32, 32, true),
        ("matmul_nk4_u", 8, 256, true),
    ];
    for (entry, rg, cg, v4) in variants {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let mut rec = Recorder::new(&ctx);
            let _y = ops::matmul_probe(&mut rec, &x, &w, entry, rg, cg, v4)?;
            rec.submit()?;
            ctx.wait()?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{entry}: {:.3} s  {:.2} GFLOP/s",
            best,
            2.0 * (m * n * k) as f64 / best / 1e9
        );
    }
    Ok(())
}
