//! Upper bounds on every untrusted number qwm allocates from: model configs, quantized-file
//! metadata, command-line counts and environment overrides (docs/RELIABILITY.md).
//!
//! Each bound is far above any real use (the real DINO-WM is noted beside it) and low enough
//! that the memory it implies is bounded before anything is allocated. Checks use checked
//! arithmetic; an error names the field or flag, the value and the allowed range.

use crate::{Error, Result};

/// Square frame side a model sees (DINO-WM: 224).
pub const MAX_IMAGE: usize = 4096;
/// Transformer depth, encoder or predictor (DINO-WM: 12 and 6).
pub const MAX_DEPTH: usize = 256;
/// Any layer width: encoder width, MLP width, embeddings, decoder channels (DINO-WM: 2048 at
/// most).
pub const MAX_WIDTH: usize = 65536;
/// Attention heads (DINO-WM: 16).
pub const MAX_HEADS: usize = 1024;
/// Action, proprio and frameskip sizes (DINO-WM: 10 at most).
pub const MAX_SMALL_DIM: usize = 1024;
/// Frames of history the predictor sees (DINO-WM: 3).
pub const MAX_HIST: usize = 64;
/// Decoder residual blocks per stage (DINO-WM: 4).
pub const MAX_RES_BLOCKS: usize = 64;
/// Patch tokens per frame (DINO-WM: 196).
pub const MAX_TOKENS: usize = 16384;
/// Parameters of a whole model: 2^32 (16 GiB in f32; DINO-WM has about 0.03 x 2^32).
pub const MAX_PARAMS: u64 = 1 << 32;

/// Evaluation, calibration and dataset episodes.
pub const MAX_EPISODES: usize = 1_000_000;
/// Environment steps per dataset episode.
pub const MAX_STEPS: usize = 100_000;
/// Planner samples per optimization step.
pub const MAX_SAMPLES: usize = 1_000_000;
/// Planning horizon, optimization steps, MPC iterations.
pub const MAX_PLAN_STEPS: usize = 100_000;
/// Bytes of frames in one dataset episode (steps x size^2 x 3): 4 GiB.
pub const MAX_EPISODE_FRAME_BYTES: u64 = 4 << 30;

/// Processes or CPUs one study command starts or asks a cluster for (`--jobs`, `--workers`,
/// `--cpus`, `--gpus`).
pub const MAX_PROCESSES: usize = 4096;
/// Repetitions of one benchmark measurement (`qwm bench --reps`; default 5).
pub const MAX_REPS: usize = 10_000;
/// Frames in one rendered strip (`qwm env strip --frames`; the docs use 8).
pub const MAX_STRIP_FRAMES: usize = 1024;
/// Bytes of one picture qwm renders or exports (frames x side^2 x 3): 1 GiB.
pub const MAX_PICTURE_BYTES: usize = 1 << 30;

/// Training epochs per phase (the shipped models: 30 at most).
pub const MAX_EPOCHS: usize = 10_000;
/// Training batch (the shipped models: 64).
pub const MAX_BATCH: usize = 65_536;
/// Open-loop rollout steps in the predictor loss (the shipped models: 0 to 5).
pub const MAX_ROLLOUT: usize = 1024;

/// Cells of one study (the `quantwm` preset: 160); also bounds the grid's expansion.
pub const MAX_STUDY_CELLS: usize = 100_000;
/// Work items of one study (cells x episodes / chunk; the `quantwm` preset: 800).
pub const MAX_STUDY_ITEMS: usize = 1_000_000;

/// `value` must lie in `min..=max`; the error names `what` (a flag or a field).
pub fn check_range(what: &str, value: usize, min: usize, max: usize) -> Result<usize> {
    if value < min || value > max {
        return Err(Error::Invalid(format!(
            "{what} is {value}; it must be between {min} and {max}"
        )));
    }
    Ok(value)
}

/// Product of sizes with overflow reported as an error naming `what`.
pub fn product(what: &str, dims: &[usize]) -> Result<usize> {
    dims.iter().try_fold(1usize, |a, &d| {
        a.checked_mul(d).ok_or_else(|| {
            Error::Invalid(format!(
                "{what}: the sizes {dims:?} overflow when multiplied"
            ))
        })
    })
}

/// An optional count: absent, or in `min..=max`.
pub fn check_opt(what: &str, value: Option<usize>, min: usize, max: usize) -> Result<()> {
    value.map_or(Ok(()), |v| check_range(what, v, min, max).map(|_| ()))
}

/// A float that must be finite and in `min..=max`.
pub fn check_f64(what: &str, value: f64, min: f64, max: f64) -> Result<f64> {
    if !value.is_finite() || value < min || value > max {
        return Err(Error::Invalid(format!(
            "{what} is {value}; it must be a number between {min} and {max}"
        )));
    }
    Ok(value)
}
