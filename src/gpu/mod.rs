//! The WebGPU runtime: adapter selection, pipeline cache, buffer pool, command recording and
//! the op launchers for every kernel in `shaders/`.

mod context;
pub mod ops;
mod pipeline;
mod pool;
pub mod qops;
mod recorder;

pub use context::{
    backend_name, device_type_name, list_adapters, AdapterChoice, AdapterReport, GpuContext,
    GpuFeatures,
};
pub use pipeline::{shader_source, SHADERS};
pub use pool::{GpuTensor, PoolStats};
pub use recorder::{KernelTime, Recorder};
