//! Shared test setup: one GPU context per test binary.
#![allow(dead_code)]

use std::sync::OnceLock;

use qwm::gpu::GpuContext;

/// The shared GPU context, or `None` (with a visible notice) when no adapter exists outside
/// CI. Under `CI=true` a missing adapter fails the test instead of skipping it.
pub fn gpu() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::new() {
        Ok(c) => {
            eprintln!("GPU tests on: {} ({})", c.report.name, c.report.backend);
            Some(c)
        }
        Err(e) => {
            if std::env::var("CI")
                .map(|v| v == "true" || v == "1")
                .unwrap_or(false)
            {
                panic!("CI=true but no GPU adapter could be opened: {e}");
            }
            eprintln!("SKIPPED (no GPU adapter, not in CI): {e}");
            None
        }
    })
    .as_ref()
}

pub const F32_TOL: f64 = 1e-4;

#[track_caller]
pub fn assert_close(got: &[f32], want: &[f32], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let e = qwm::tensor::rel_error(got, want);
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.0e}");
}
