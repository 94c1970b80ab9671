//! qwm: quantized world models that plan on any GPU.
//!
//! Data flows one way: `env` -> encoder -> planner <-> predictor rollouts -> `env`.
//! The runtime lives in [`gpu`] (wgpu + WGSL kernels in `shaders/`), with [`cpu`] as the
//! reference implementation of every op, used both as the test oracle and as the
//! `--backend cpu` path. [`app`] puts a model, its quantization and a backend together for
//! the front ends (CLI, benchmarks); docs/ARCHITECTURE.md maps the layers.

pub mod app;
pub mod bench;
pub mod cli;
pub mod cpu;
pub mod env;
pub mod error;
pub mod gpu;
pub mod model;
pub mod plan;
pub mod quant;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
