//! The WebGPU runtime: adapter selection, pipeline cache, buffer pool, command recording and
//! the op launchers for every kernel in `shaders/`.

mod context;
pub mod matmul;
pub mod ops;
pub mod peak;
mod pipeline;
mod pool;
pub mod probe;
pub mod qops;
mod recorder;
pub mod resize;
pub mod tuning;
pub mod variants;

pub use context::{
    backend_name, device_type_name, list_adapters, missing_for_planning, pick_adapter,
    AdapterChoice, AdapterKind, AdapterReport, GpuContext, GpuFeatures,
};
pub use pipeline::{shader_source, SHADERS};
pub use pool::{GpuTensor, PoolStats};
pub use recorder::{KernelTime, Recorder};

/// A kernel-selection override from the environment (`QWM_MATMUL`, `QWM_QMATVEC`, `QWM_QTOKENS`),
/// read and checked once per process by [`tuning`]: kernels are chosen for every matmul a
/// forward records. An invalid value makes opening a context fail, so launchers only see valid
/// ones.
pub(crate) fn tuning(name: &'static str) -> Option<&'static str> {
    tuning::current().ok()?.value(name)
}
