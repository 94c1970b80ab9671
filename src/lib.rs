//! qwm: quantized world models that plan on any GPU.
//!
//! Data flows one way: `env` -> encoder -> planner <-> predictor rollouts -> `env`.
//! The runtime lives in [`gpu`] (wgpu + WGSL kernels in `shaders/`), with [`cpu`] as the
//! reference implementation of every op, used both as the test oracle and as the
//! `--backend cpu` path. [`app`] puts a model, its quantization and a backend together for
//! the front ends (CLI, benchmarks); docs/ARCHITECTURE.md maps the layers.

// Non-test code handles every failure as an error (docs/RELIABILITY.md); the few unwraps left
// are on values that cannot fail, each with an `#[allow]` and the reason.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
pub mod bench;
pub mod cli;
pub mod cpu;
pub mod env;
pub mod error;
pub mod gpu;
pub mod io;
pub mod limits;
pub mod model;
pub mod plan;
pub mod quant;
pub mod study;
pub mod tensor;
pub mod trace;
pub mod train;
pub mod viewer;

pub use error::{Error, Result};
