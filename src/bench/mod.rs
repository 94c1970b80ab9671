//! Benchmarks behind `qwm bench ...` and `cargo bench`. Results are medians of repeated runs,
//! and every GPU figure sits next to a yardstick measured in the same run (the CPU reference,
//! a copy kernel), because absolute times on a shared machine are noise.

pub mod kernels;
pub mod model;
pub mod plan;
pub mod quant;

use std::time::Instant;

/// Median of `reps` timings of `f` (seconds), after one untimed warm-up call.
pub fn median_secs<F: FnMut() -> crate::Result<f64>>(reps: usize, mut f: F) -> crate::Result<f64> {
    f()?;
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps {
        v.push(f()?);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(v[v.len() / 2])
}

/// Wall-clock seconds of `f`.
pub fn wall<F: FnOnce() -> crate::Result<()>>(f: F) -> crate::Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}
