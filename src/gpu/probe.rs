//! Launchers that only tests, benchmarks and examples run: the copy kernel (the bandwidth
//! yardstick), softmax (attention fuses its own), a matmul entry point with explicit tiles,
//! and a packed weight dequantized to f32 (real forwards never materialize it).

use bytemuck::{Pod, Zeroable};

use super::matmul::MatmulParams;
use super::ops::{grid_1d, grid_rows, params, pipeline, rows_cols, u, RowParams};
use super::qops::GpuQuantWeight;
use super::{GpuTensor, Recorder};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct CopyParams {
    n4: u32,
    row_stride: u32,
    _p: [u32; 2],
}

/// Copy `src` into a new tensor with a plain vec4 copy kernel (the bandwidth yardstick).
pub fn copy(rec: &mut Recorder, src: &GpuTensor) -> Result<GpuTensor> {
    let dst = rec.ctx().alloc(src.shape())?;
    let n4 = src.len().div_ceil(4);
    let wg = 256;
    let (groups, stride) = grid_1d(rec.ctx(), n4, wg);
    let pl = pipeline(rec, "copy", "copy", &[("WG", wg as f64)])?;
    let p = CopyParams {
        n4: u(n4, "copy length")?,
        row_stride: stride,
        _p: [0; 2],
    };
    rec.dispatch(
        "copy",
        &pl,
        Some(params(&p)),
        &[src.buffer(), dst.buffer()],
        groups,
    )?;
    Ok(dst)
}

/// Softmax over the last dimension.
pub fn softmax(rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
    let (rows, cols) = rows_cols(x.shape(), "softmax input")?;
    let y = rec.ctx().alloc(x.shape())?;
    if rows == 0 || cols == 0 {
        return Ok(y);
    }
    let (groups, gx) = grid_rows(rec.ctx(), rows);
    let p = RowParams {
        rows: u(rows, "rows")?,
        cols: u(cols, "cols")?,
        eps: 0.0,
        groups_x: gx,
    };
    let pl = pipeline(rec, "softmax", "softmax", &[])?;
    rec.dispatch(
        "softmax",
        &pl,
        Some(params(&p)),
        &[x.buffer(), y.buffer()],
        groups,
    )?;
    Ok(y)
}

/// Development probe: run one matmul entry point with explicit tile sizes.
pub fn matmul_probe(
    rec: &mut Recorder,
    x: &GpuTensor,
    w: &GpuTensor,
    entry: &'static str,
    rows_per_group: usize,
    cols_per_group: usize,
    vec4: bool,
) -> Result<GpuTensor> {
    let (m, k) = rows_cols(x.shape(), "x")?;
    let n = w.shape()[0];
    let y = rec.ctx().alloc(&[m, n])?;
    let p = MatmulParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        has_bias: 0,
    };
    let wg = rec.ctx().lanes_per_workgroup();
    let (consts, cols_per_group): (Vec<(&str, f64)>, usize) = if entry == "matmul_nk4_u" {
        (vec![("WG_U", wg as f64)], wg * 4)
    } else {
        (vec![], cols_per_group)
    };
    let pl = pipeline(rec, "matmul", entry, &consts)?;
    let groups = [
        n.div_ceil(cols_per_group) as u32,
        m.div_ceil(rows_per_group) as u32,
        1,
    ];
    let bufs: Vec<(u32, &wgpu::Buffer)> = if vec4 {
        vec![
            (5, x.buffer()),
            (6, w.buffer()),
            (3, w.buffer()),
            (4, y.buffer()),
        ]
    } else {
        vec![
            (1, x.buffer()),
            (2, w.buffer()),
            (3, w.buffer()),
            (4, y.buffer()),
        ]
    };
    rec.dispatch_at(entry, &pl, Some(params(&p)), &bufs, groups)?;
    Ok(y)
}

/// The dequantized weight `[N, K]` (tests only: real forwards never materialize it).
pub fn dequant(rec: &mut Recorder, w: &GpuQuantWeight) -> Result<GpuTensor> {
    let y = rec.ctx().alloc(&[w.n, w.k])?;
    let lanes = w.n * (w.k_pad / 8);
    let groups = lanes.div_ceil(64);
    let (gx, gy) = if groups <= 65535 {
        (groups, 1)
    } else {
        (65535, groups.div_ceil(65535))
    };
    let ctx = rec.ctx();
    let pl = ctx.pipelines.get(
        &ctx.device,
        "qmatmul",
        "dequant",
        &[("BITS", w.bits as f64)],
    )?;
    let p = w.params(0, false);
    let zeros = w.zeros.as_ref().unwrap_or(&w.scales);
    rec.dispatch_at(
        "dequant",
        &pl,
        Some(bytemuck::bytes_of(&p)),
        &[
            (2, w.codes.buffer()),
            (3, w.scales.buffer()),
            (4, zeros.buffer()),
            (6, y.buffer()),
        ],
        [gx as u32, gy as u32, 1],
    )?;
    Ok(y)
}
