//! The WebGPU runtime: adapter selection, pipeline cache, buffer pool, command recording and
//! the op launchers for every kernel in `shaders/`.

mod context;
pub mod ops;
mod pipeline;
mod pool;
pub mod qops;
mod recorder;

pub use context::{
    backend_name, device_type_name, list_adapters, AdapterChoice, AdapterKind, AdapterReport,
    GpuContext, GpuFeatures,
};
pub use pipeline::{shader_source, SHADERS};
pub use pool::{GpuTensor, PoolStats};
pub use recorder::{KernelTime, Recorder};

/// A kernel-selection override from the environment (`QWM_MATMUL`, `QWM_QMATVEC`, `QWM_QTOKENS`,
/// `QWM_QCOLS`), read once per process: kernels are chosen for every matmul a forward records.
pub(crate) fn tuning(name: &'static str) -> Option<&'static str> {
    use std::sync::OnceLock;
    const NAMES: [&str; 4] = ["QWM_MATMUL", "QWM_QMATVEC", "QWM_QTOKENS", "QWM_QCOLS"];
    static VALUES: OnceLock<Vec<Option<String>>> = OnceLock::new();
    let values = VALUES.get_or_init(|| NAMES.iter().map(|n| std::env::var(n).ok()).collect());
    let i = NAMES.iter().position(|n| *n == name)?;
    values[i].as_deref()
}
