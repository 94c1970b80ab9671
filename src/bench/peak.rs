//! The FMA peak probe as a benchmark (`yardstick/fma peak`): its size grows until one sample
//! takes [`TARGET_SECS`], so a CPU driver and a datacenter GPU both get a measurable run, then
//! the session's repetitions are timed. Also the probe's CPU reference, the exact arithmetic of
//! `shaders/fma_peak.wgsl` on the CPU, for the parity test.

use super::record::BenchRecord;
use super::Session;
use crate::gpu::peak::{fma_peak, FMAS_PER_ITER};
use crate::Result;

/// The probe's multiplier and addend: chains converge to c / (1 - b) = 1.
pub const B: f32 = 0.999;
pub const C: f32 = 0.001;
/// Wanted duration of one sample.
pub const TARGET_SECS: f64 = 0.02;

/// What lane `i` of the probe stores after `iters` trips (fused multiply-adds, the same
/// summation order as the shader).
pub fn fma_peak_reference(lanes: usize, iters: usize, b: f32, c: f32) -> Vec<f32> {
    (0..lanes)
        .map(|i| {
            let x = (i % 1024) as f32 * (1.0 / 1024.0);
            let a0 = [x, x + 0.125, x + 0.25, x + 0.375];
            let off = [0.0, 0.5, 1.0, 1.5, -0.5, -1.0, -1.5, -2.0];
            let mut a = [[0f32; 4]; 8];
            for (ch, o) in a.iter_mut().zip(off) {
                for (v, s) in ch.iter_mut().zip(a0) {
                    *v = s + o;
                }
            }
            for _ in 0..iters {
                for ch in a.iter_mut() {
                    for v in ch.iter_mut() {
                        *v = v.mul_add(b, c);
                    }
                }
            }
            let s: [f32; 4] = std::array::from_fn(|j| {
                ((a[0][j] + a[1][j]) + (a[2][j] + a[3][j]))
                    + ((a[4][j] + a[5][j]) + (a[6][j] + a[7][j]))
            });
            (s[0] + s[1]) + (s[2] + s[3])
        })
        .collect()
}

/// Calibrate the probe's size on the session's adapter and time it.
pub fn measure(s: &Session) -> Result<BenchRecord> {
    let ctx = s.ctx("the FMA peak probe")?;
    let (mut lanes, mut iters) = (4096usize, 64usize);
    let one = |lanes: usize, iters: usize| {
        super::time_recording(ctx, &mut |rec: &mut crate::gpu::Recorder| {
            fma_peak(rec, lanes, iters, B, C).map(|_| ())
        })
    };
    one(lanes, iters)?; // compiles the pipeline
    loop {
        let t = one(lanes, iters)?;
        if t >= TARGET_SECS || iters >= 1 << 16 {
            break;
        }
        // Grow by up to 4x per step, lanes first (more parallelism), then the trip count.
        let f = (TARGET_SECS / t.max(1e-7)).clamp(1.5, 4.0);
        if lanes < 1 << 20 {
            lanes = (lanes as f64 * f) as usize;
        } else {
            iters = (iters as f64 * f) as usize;
        }
    }
    let samples = s.time_gpu(|rec| fma_peak(rec, lanes, iters, B, C).map(|_| ()))?;
    let flops = 2.0 * (lanes * iters * FMAS_PER_ITER) as f64;
    // One wall-clock sample (submit to completion) beside the timestamps: a driver whose
    // timestamps are off shows as a large gap between the two.
    let wall_s = super::wall(|| {
        let mut rec = crate::gpu::Recorder::new(ctx);
        fma_peak(&mut rec, lanes, iters, B, C)?;
        rec.submit()?;
        ctx.wait()
    })?;
    Ok(BenchRecord::new(
        "yardstick",
        "fma peak",
        "8 vec4 FMA chains per lane",
        "gpu",
        s.gpu_timing(),
    )
    .kernel("fma_peak", None)
    .samples(samples)
    .flops(flops)
    .extra("lanes", lanes)
    .extra("iters", iters)
    .extra("wall_s", wall_s))
}
