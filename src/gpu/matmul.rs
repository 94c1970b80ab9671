//! The f32 matmul `Y = X W^T + b` (weights `[N, K]`, PyTorch's Linear layout) and the choice
//! of its kernel ([`MatmulKernel`], like the quantized matmuls' `QKernel`): the vec4 tile
//! when K is a multiple of 4, the scalar tile otherwise, and opt-in (`QWM_MATMUL=tiled`) the
//! quantized kernels' workgroup-memory tiling run with f32 weights.

use bytemuck::{Pod, Zeroable};

use super::ops::{params, pipeline, rows_cols, u};
use super::qops::{constants, tiled_fits, tiled_grid, QParams};
use super::{GpuContext, GpuTensor, Recorder};
use crate::{Error, Result};

/// The kernel behind an f32 matmul (matmul.wgsl, or qmatmul.wgsl's tiled entry point).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKernel {
    /// `matmul_nk4_u`: vec4 loads along K (K % 4 == 0, every DINO-WM width).
    Vec4,
    /// `matmul_nk`: 32 x 32 scalar tiles (any K).
    Scalar,
    /// `qmatmul_tiled` with BITS = 32: 64 x 64 tiles in workgroup memory (opt-in until
    /// measured on GPUs; token batches on adapters with 256 lanes and 16 KiB of workgroup
    /// memory).
    Tiled,
}

impl MatmulKernel {
    pub fn name(self) -> &'static str {
        match self {
            MatmulKernel::Vec4 => "vec4",
            MatmulKernel::Scalar => "scalar",
            MatmulKernel::Tiled => "tiled",
        }
    }

    /// The kernel [`matmul`] takes on this adapter for M rows of X and a K-wide input.
    pub fn choose(ctx: &GpuContext, m: usize, k: usize) -> MatmulKernel {
        if m > 8 && super::tuning("QWM_MATMUL") == Some("tiled") && tiled_fits(ctx, m) {
            MatmulKernel::Tiled
        } else if k.is_multiple_of(4) {
            MatmulKernel::Vec4
        } else {
            MatmulKernel::Scalar
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(super) struct MatmulParams {
    pub(super) m: u32,
    pub(super) n: u32,
    pub(super) k: u32,
    pub(super) has_bias: u32,
}

/// Checked shapes of `X[.., K] W^T + b`: (M, N, K) and the output shape.
fn matmul_shapes(
    x: &GpuTensor,
    w: &GpuTensor,
    b: Option<&GpuTensor>,
) -> Result<(usize, usize, usize, Vec<usize>)> {
    let (m, k) = rows_cols(x.shape(), "matmul input")?;
    let (n, wk) = match w.shape() {
        &[n, k] => (n, k),
        s => {
            return Err(Error::Shape(format!(
                "matmul weight must be 2-D [N, K], got {s:?}"
            )))
        }
    };
    if wk != k {
        return Err(Error::Shape(format!(
            "matmul: input {:?} has K = {k} but weight {:?} has K = {wk}",
            x.shape(),
            w.shape()
        )));
    }
    if let Some(b) = b {
        if b.shape() != [n] {
            return Err(Error::Shape(format!(
                "matmul bias must be [{n}], got {:?}",
                b.shape()
            )));
        }
    }
    let mut out_shape = x.shape().to_vec();
    if let Some(l) = out_shape.last_mut() {
        *l = n;
    }
    Ok((m, n, k, out_shape))
}

/// The same product through the tiled kernel of the quantized matmuls with an f32 weight
/// (`qmatmul_tiled`, BITS = 32): the float baseline of that tiling. `matmul` takes it when
/// `QWM_MATMUL=tiled` (opt-in until measured on GPUs); public for tests and benchmarks. Errors
/// where the adapter cannot run it (256 lanes, 16 KiB of workgroup memory).
pub fn matmul_tiled(
    rec: &mut Recorder,
    x: &GpuTensor,
    w: &GpuTensor,
    b: Option<&GpuTensor>,
) -> Result<GpuTensor> {
    let (m, n, k, out_shape) = matmul_shapes(x, w, b)?;
    let y = rec.ctx().alloc(&out_shape)?;
    if m == 0 || n == 0 || matmul_tiled_f32(rec, x, w, b, (m, n, k), &y)? {
        return Ok(y);
    }
    Err(Error::Gpu(
        "the tiled matmul needs 256 lanes and 16 KiB of workgroup memory per workgroup; \
         this adapter has less (use matmul)"
            .into(),
    ))
}

/// `Y[.., N] = X[.., K] W^T + b` with `W` stored `[N, K]` (K contiguous, as PyTorch's Linear).
pub fn matmul(
    rec: &mut Recorder,
    x: &GpuTensor,
    w: &GpuTensor,
    b: Option<&GpuTensor>,
) -> Result<GpuTensor> {
    let (m, n, k, out_shape) = matmul_shapes(x, w, b)?;
    let y = rec.ctx().alloc(&out_shape)?;
    if m == 0 || n == 0 {
        return Ok(y);
    }
    let kernel = MatmulKernel::choose(rec.ctx(), m, k);
    if kernel == MatmulKernel::Tiled && matmul_tiled_f32(rec, x, w, b, (m, n, k), &y)? {
        return Ok(y);
    }
    let p = MatmulParams {
        m: u(m, "M")?,
        n: u(n, "N")?,
        k: u(k, "K")?,
        has_bias: b.is_some() as u32,
    };
    let bias = b.unwrap_or(w);
    // Vec4 loads along K need K % 4 == 0 (true for every DINO-WM width); else the scalar tile.
    let wg = rec.ctx().lanes_per_workgroup();
    let (entry, xb, wb, groups, consts) = match kernel {
        MatmulKernel::Vec4 => {
            let c = vec![("WG_U", wg as f64)];
            ("matmul_nk4_u", 5, 6, [n.div_ceil(4 * wg), m.div_ceil(8)], c)
        }
        MatmulKernel::Scalar | MatmulKernel::Tiled => {
            ("matmul_nk", 1, 2, [n.div_ceil(32), m.div_ceil(32)], vec![])
        }
    };
    let pl = pipeline(rec, "matmul", entry, &consts)?;
    rec.dispatch_at(
        entry,
        &pl,
        Some(params(&p)),
        &[
            (xb, x.buffer()),
            (wb, w.buffer()),
            (3, bias.buffer()),
            (4, y.buffer()),
        ],
        [u(groups[0], "workgroups")?, u(groups[1], "workgroups")?, 1],
    )?;
    Ok(y)
}

/// `Y = X W^T + b` for an f32 weight `[N, K]` through the tiled kernel (`qmatmul_tiled` with
/// BITS = 32): the float baseline with the quantized kernel's tiling. [`matmul`] calls it when
/// `QWM_MATMUL=tiled`; it needs `tiled_fits` and checked shapes.
fn matmul_tiled_f32(
    rec: &mut Recorder,
    x: &GpuTensor,
    w: &GpuTensor,
    b: Option<&GpuTensor>,
    (m, n, k): (usize, usize, usize),
    y: &GpuTensor,
) -> Result<bool> {
    if !tiled_fits(rec.ctx(), m) {
        return Ok(false);
    }
    let ctx = rec.ctx();
    let consts = constants(32, 1, 1, ("X_VEC4", k.is_multiple_of(4)), 256);
    let pl = ctx
        .pipelines
        .get(&ctx.device, "qmatmul", "qmatmul_tiled", &consts)?;
    let p = QParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        k_pad: k as u32,
        group: k as u32,
        groups: 1,
        has_bias: b.is_some() as u32,
        asym: 0,
        plane1_off: 0,
        _p: [0; 3],
    };
    let bias = b.unwrap_or(x);
    let bufs = [
        (1, x.buffer()),
        (9, x.buffer()),
        (2, w.buffer()),
        (3, w.buffer()),
        (4, w.buffer()),
        (5, bias.buffer()),
        (6, y.buffer()),
    ];
    rec.dispatch_at(
        "qmatmul_tiled",
        &pl,
        Some(bytemuck::bytes_of(&p)),
        &bufs,
        tiled_grid(m, n),
    )?;
    Ok(true)
}
