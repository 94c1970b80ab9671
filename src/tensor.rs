//! Small host-side helpers shared by tests, benchmarks and the CLI: seeded random data and the
//! error metric used by every parity check.

use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;

/// `n` samples of N(0, std^2) from a seeded generator.
pub fn randn(n: usize, std: f32, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal) * std)
        .collect()
}

/// `n` samples uniform in `[lo, hi)`.
pub fn uniform(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// Relative error of `got` against `want`, scaled by the reference's magnitude:
/// `max_i |got_i - want_i| / max_i |want_i|`. NaN or a length mismatch gives infinity.
/// This is the metric behind every "relative error <= 1e-4" parity claim in qwm.
pub fn rel_error(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let mut max_diff = 0f64;
    let mut max_ref = 0f64;
    for (&g, &w) in got.iter().zip(want) {
        if !g.is_finite() || !w.is_finite() {
            if g.to_bits() != w.to_bits() {
                return f64::INFINITY;
            }
            continue;
        }
        max_diff = max_diff.max((g as f64 - w as f64).abs());
        max_ref = max_ref.max((w as f64).abs());
    }
    if max_ref == 0.0 {
        max_diff
    } else {
        max_diff / max_ref
    }
}
