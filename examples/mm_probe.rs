//! Quick probe of matmul variants on the current adapter (development aid).
use qwm::gpu::{ops, GpuContext, Recorder};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let ctx = GpuContext::new()?;
    println!("adapter: {}", ctx.report.name);
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let (m, n, k) = if args.len() == 3 { (args[0], args[1], args[2]) } else { (1024, 1024, 1024) };
    let x = ctx.upload(&vec![0.5f32; m * k], &[m, k])?;
    let w = ctx.upload(&vec![0.25f32; n * k], &[n, k])?;
    let wt = ctx.upload(&vec![0.25f32; n * k], &[k, n])?;
    for (name, layout, wt) in [("nk", ops::WeightLayout::NK, &w), ("kn", ops::WeightLayout::KN, &wt)] {
        let mut best = f64::MAX;
        for _ in 0..4 {
            let t = Instant::now();
            let mut rec = Recorder::new(&ctx);
            let _y = ops::matmul_layout(&mut rec, &x, wt, None, layout)?;
            rec.submit()?;
            ctx.wait()?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{name}: {:.3} s  {:.2} GFLOP/s", best, 2.0 * (m * n * k) as f64 / best / 1e9);
    }
    Ok(())
}
