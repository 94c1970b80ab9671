//! Launcher of the FMA peak probe (`shaders/fma_peak.wgsl`): the arithmetic yardstick of the
//! benchmarks, as the copy kernel is the bandwidth one. `qwm bench` reports each kernel's
//! GFLOP/s as a fraction of this probe's, measured in the same run on the same adapter. Its
//! CPU reference is `bench::peak::fma_peak_reference` (tests/bench.rs compares them).

use bytemuck::{Pod, Zeroable};

use super::{GpuTensor, Recorder};
use crate::{Error, Result};

/// FMAs per lane and loop trip: 8 chains of vec4.
pub const FMAS_PER_ITER: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct PeakParams {
    lanes: u32,
    iters: u32,
    row_stride: u32,
    _p0: u32,
    b: f32,
    c: f32,
    _p1: [f32; 2],
}

/// Run `lanes` lanes of `iters` trips of `a = a * b + c` (8 vec4 chains each); returns one sum
/// per lane. `b` in (-1, 1) keeps the chains finite.
pub fn fma_peak(
    rec: &mut Recorder,
    lanes: usize,
    iters: usize,
    b: f32,
    c: f32,
) -> Result<GpuTensor> {
    let ctx = rec.ctx();
    let lanes32 = u32::try_from(lanes)
        .map_err(|_| Error::Limit(format!("fma_peak: {lanes} lanes do not fit in 32 bits")))?;
    let iters32 = u32::try_from(iters)
        .map_err(|_| Error::Limit(format!("fma_peak: {iters} trips do not fit in 32 bits")))?;
    let y = ctx.alloc(&[lanes])?;
    if lanes == 0 {
        return Ok(y);
    }
    let wg = ctx.lanes_per_workgroup();
    // Fold the grid into 2-D when one dimension would exceed the adapter's limit.
    let groups = lanes.div_ceil(wg) as u64;
    let max = ctx.limits.max_compute_workgroups_per_dimension as u64;
    let gy = groups.div_ceil(max);
    let gx = groups.div_ceil(gy);
    let p = PeakParams {
        lanes: lanes32,
        iters: iters32,
        row_stride: (gx as usize * wg) as u32,
        _p0: 0,
        b,
        c,
        _p1: [0.0; 2],
    };
    let pl = ctx
        .pipelines
        .get(&ctx.device, "fma_peak", "fma_peak", &[("WG", wg as f64)])?;
    rec.dispatch(
        "fma_peak",
        &pl,
        Some(bytemuck::bytes_of(&p)),
        &[y.buffer()],
        [gx as u32, gy as u32, 1],
    )?;
    Ok(y)
}
