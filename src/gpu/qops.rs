//! Launchers for the quantized kernels (`shaders/qmatmul.wgsl`, `shaders/quant_act.wgsl`).
//! A [`GpuQuantWeight`] holds only the packed planes, scales and zero points; the matmuls
//! dequantize inside the kernel and never materialize an f32 weight.

use bytemuck::{Pod, Zeroable};

use super::{GpuContext, GpuTensor, Recorder};
use crate::quant::{ActParams, ActSpec, PackedWeight};
use crate::{Error, Result};

/// A packed weight on the GPU.
pub struct GpuQuantWeight {
    pub n: usize,
    pub k: usize,
    pub bits: u8,
    pub group: usize,
    pub groups: usize,
    pub k_pad: usize,
    plane1_off: usize,
    pub codes: GpuTensor,
    pub scales: GpuTensor,
    pub zeros: Option<GpuTensor>,
}

impl GpuQuantWeight {
    pub fn upload(ctx: &GpuContext, w: &PackedWeight) -> Result<Self> {
        w.validate("upload")?;
        let layout = w.plane_layout();
        Ok(GpuQuantWeight {
            n: w.n,
            k: w.k,
            bits: w.bits,
            group: w.group,
            groups: w.groups_per_row(),
            k_pad: w.k_pad(),
            plane1_off: layout.get(1).map_or(0, |l| l.2),
            codes: ctx.upload_u32(&w.codes, &[w.codes.len()])?,
            scales: ctx.upload_u32(&w.scales, &[w.scales.len()])?,
            zeros: match &w.zeros {
                Some(z) => Some(ctx.upload_u32(z, &[z.len()])?),
                None => None,
            },
        })
    }

    /// GPU bytes held: codes, scales, zero points.
    pub fn bytes(&self) -> u64 {
        self.codes.bytes() + self.scales.bytes() + self.zeros.as_ref().map_or(0, |z| z.bytes())
    }

    pub(super) fn params(&self, m: usize, has_bias: bool) -> QParams {
        QParams {
            m: m as u32,
            n: self.n as u32,
            k: self.k as u32,
            k_pad: self.k_pad as u32,
            group: self.group as u32,
            groups: self.groups as u32,
            has_bias: has_bias as u32,
            asym: self.zeros.is_some() as u32,
            plane1_off: self.plane1_off as u32,
            _p: [0; 3],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(super) struct QParams {
    pub(super) m: u32,
    pub(super) n: u32,
    pub(super) k: u32,
    pub(super) k_pad: u32,
    pub(super) group: u32,
    pub(super) groups: u32,
    pub(super) has_bias: u32,
    pub(super) asym: u32,
    pub(super) plane1_off: u32,
    pub(super) _p: [u32; 3],
}

/// Tile shape: (rows of X per workgroup, output columns per lane). Up to 8 rows runs as a
/// mat-vec with one column per lane; token batches use 8 x 4 register tiles.
fn tile(ctx: &GpuContext, m: usize) -> (u32, u32) {
    // Mat-vec shapes: one output column per lane keeps GPUs busy; CPU drivers gain more from
    // amortizing each activation load over 4 columns (QWM_QCOLS overrides, for tuning).
    let cols = super::tuning::current()
        .ok()
        .and_then(|t| t.qcols)
        .unwrap_or(if ctx.report.kind.is_software() { 4 } else { 1 });
    match m {
        0..=1 => (1, cols),
        2 => (2, cols),
        3..=4 => (4, cols),
        5..=8 => (8, cols),
        _ => (8, 4),
    }
}

fn check_bias(w: &GpuQuantWeight, b: Option<&GpuTensor>) -> Result<()> {
    match b {
        Some(b) if b.shape() != [w.n] => Err(Error::Shape(format!(
            "quantized matmul bias must be [{}], got {:?}",
            w.n,
            b.shape()
        ))),
        _ => Ok(()),
    }
}

fn check_x(
    w: &GpuQuantWeight,
    x: &GpuTensor,
    b: Option<&GpuTensor>,
) -> Result<(usize, Vec<usize>)> {
    let k = *x.shape().last().unwrap_or(&0);
    if k != w.k {
        return Err(Error::Shape(format!(
            "quantized matmul: input {:?} has K = {k} but the weight is [{}, {}]",
            x.shape(),
            w.n,
            w.k
        )));
    }
    check_bias(w, b)?;
    let m = x.len() / k.max(1);
    let mut out = x.shape().to_vec();
    if let Some(l) = out.last_mut() {
        *l = w.n;
    }
    Ok((m, out))
}

/// The override constants of qmatmul.wgsl, each set by name; `flag` is the entry point's
/// own switch: `("INT_DOT", ..)` for the int8-activation kernels, `("X_VEC4", ..)` for the
/// f32-activation ones.
pub(super) fn constants(
    bits: u8,
    rows: u32,
    cols: u32,
    flag: (&'static str, bool),
    wg: usize,
) -> [(&'static str, f64); 5] {
    [
        ("BITS", bits as f64),
        ("ROWS", rows as f64),
        ("COLS", cols as f64),
        (flag.0, flag.1 as u32 as f64),
        ("WG", wg as f64),
    ]
}

/// Whether a mat-vec (M <= 8) takes the split-K kernel: on GPUs, where one lane per output
/// column reads rows K apart and cannot coalesce; CPU drivers keep the register-tiled path.
/// `QWM_QMATVEC=split|lanes` overrides (for tuning).
fn split_k(ctx: &GpuContext, m: usize, n: usize) -> bool {
    if m > 8 || n > ctx.limits.max_compute_workgroups_per_dimension as usize {
        return false;
    }
    match super::tuning("QWM_QMATVEC") {
        Some("split") => true,
        Some("lanes") => false,
        _ => !ctx.report.kind.is_software(),
    }
}

/// Record the split-K mat-vec on checked inputs (`1 <= m <= 8`).
fn record_split(
    rec: &mut Recorder,
    x: &GpuTensor,
    w: &GpuQuantWeight,
    b: Option<&GpuTensor>,
    (m, out_shape): (usize, &[usize]),
) -> Result<GpuTensor> {
    // A power of two <= 64 (the reduction and the workgroup array assume it).
    let wg = rec
        .ctx()
        .lanes_per_workgroup()
        .next_power_of_two()
        .clamp(8, 64);
    let grid = [w.n as u32, 1, 1];
    record_f32(
        rec,
        x,
        w,
        b,
        (m, out_shape),
        "qmatvec",
        (m as u32, 1),
        wg,
        grid,
    )
}

/// Whether the tiled kernel (`qmatmul_tiled`: workgroup memory, 256 lanes) can run here for M
/// rows of X. It needs 256 lanes per workgroup and 16 KiB of workgroup memory (the WebGPU
/// defaults) and at most the grid limit of 64-row tiles.
pub(super) fn tiled_fits(ctx: &GpuContext, m: usize) -> bool {
    let l = &ctx.limits;
    l.max_compute_invocations_per_workgroup >= 256
        && l.max_compute_workgroup_storage_size >= 16384
        && m.div_ceil(64) <= l.max_compute_workgroups_per_dimension as usize
}

/// Whether a token batch (M > 8) takes the tiled kernel: on GPUs, where workgroup memory is
/// cheap and the per-lane decode of the register-tiled kernel is the bottleneck; CPU drivers,
/// where barriers are expensive, keep the register-tiled path. `QWM_QTOKENS=tiled|lanes`
/// overrides (for tuning).
fn use_tiled(ctx: &GpuContext, m: usize) -> bool {
    if m <= 8 || !tiled_fits(ctx, m) {
        return false;
    }
    match super::tuning("QWM_QTOKENS") {
        Some("tiled") => true,
        Some("lanes") => false,
        _ => !ctx.report.kind.is_software(),
    }
}

pub(super) fn tiled_grid(m: usize, n: usize) -> [u32; 3] {
    [n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1]
}

/// The kernel behind a quantized matmul with f32 activations (all in qmatmul.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QKernel {
    /// `qmatmul`: per-lane register tiles with uniform activation loads (CPU drivers; any M).
    Lanes,
    /// `qmatvec`: split-K mat-vec, one workgroup per output column (GPUs; M <= 8).
    Split,
    /// `qmatmul_tiled`: 64 x 64 tiles staged in workgroup memory (GPUs; token batches).
    Tiled,
}

impl QKernel {
    pub fn name(self) -> &'static str {
        match self {
            QKernel::Lanes => "lanes",
            QKernel::Split => "split",
            QKernel::Tiled => "tiled",
        }
    }

    /// The kernel [`qmatmul`] takes on this adapter for M rows of X and N outputs.
    pub fn choose(ctx: &GpuContext, m: usize, n: usize) -> QKernel {
        if split_k(ctx, m, n) {
            QKernel::Split
        } else if use_tiled(ctx, m) {
            QKernel::Tiled
        } else {
            QKernel::Lanes
        }
    }
}

/// `Y = X W^T + b` with f32 activations and the packed weight dequantized on the fly, by the
/// kernel that suits this adapter and shape ([`QKernel::choose`]).
pub fn qmatmul(
    rec: &mut Recorder,
    x: &GpuTensor,
    w: &GpuQuantWeight,
    b: Option<&GpuTensor>,
) -> Result<GpuTensor> {
    let m = x.len() / w.k.max(1);
    let kernel = QKernel::choose(rec.ctx(), m, w.n);
    qmatmul_with(rec, x, w, b, kernel)
}

/// [`qmatmul`] through a given kernel (tests and benchmarks run every kernel on any adapter).
/// Errors where the kernel cannot take the shape or the adapter.
pub fn qmatmul_with(
    rec: &mut Recorder,
    x: &GpuTensor,
    w: &GpuQuantWeight,
    b: Option<&GpuTensor>,
    kernel: QKernel,
) -> Result<GpuTensor> {
    let (m, out_shape) = check_x(w, x, b)?;
    if m == 0 || w.n == 0 {
        return rec.ctx().alloc(&out_shape);
    }
    let shape = (m, out_shape.as_slice());
    match kernel {
        QKernel::Split => {
            if m > 8 || w.n > rec.ctx().limits.max_compute_workgroups_per_dimension as usize {
                return Err(Error::Shape(format!(
                    "the split-K mat-vec takes at most 8 rows and one workgroup per output \
                     column; got M = {m}, N = {}",
                    w.n
                )));
            }
            record_split(rec, x, w, b, shape)
        }
        QKernel::Tiled => {
            if !tiled_fits(rec.ctx(), m) {
                return Err(Error::Gpu(format!(
                    "the tiled matmul needs 256 lanes and 16 KiB of workgroup memory per \
                     workgroup and at most {} tiles of 64 rows; this adapter or M = {m} does \
                     not fit (use the lanes kernel)",
                    rec.ctx().limits.max_compute_workgroups_per_dimension
                )));
            }
            let grid = tiled_grid(m, w.n);
            record_f32(rec, x, w, b, shape, "qmatmul_tiled", (1, 1), 256, grid)
        }
        QKernel::Lanes => {
            let (rows, cols) = tile(rec.ctx(), m);
            let wg = rec.ctx().lanes_per_workgroup();
            let grid = [
                w.n.div_ceil(wg * cols as usize) as u32,
                m.div_ceil(rows as usize) as u32,
                1,
            ];
            record_f32(rec, x, w, b, shape, "qmatmul", (rows, cols), wg, grid)
        }
    }
}

/// Record one f32-activation entry point of qmatmul.wgsl (`qmatmul` or `qmatvec`) into a new
/// Y of `shape`; `tile` is (ROWS, COLS).
#[allow(clippy::too_many_arguments)]
fn record_f32(
    rec: &mut Recorder,
    x: &GpuTensor,
    w: &GpuQuantWeight,
    b: Option<&GpuTensor>,
    (m, shape): (usize, &[usize]),
    entry: &'static str,
    (rows, cols): (u32, u32),
    wg: usize,
    grid: [u32; 3],
) -> Result<GpuTensor> {
    let y = rec.ctx().alloc(shape)?;
    let ctx = rec.ctx();
    let consts = constants(w.bits, rows, cols, ("X_VEC4", w.k.is_multiple_of(4)), wg);
    let pl = ctx.pipelines.get(&ctx.device, "qmatmul", entry, &consts)?;
    let p = w.params(m, b.is_some());
    let zeros = w.zeros.as_ref().unwrap_or(&w.scales);
    let bias = b.unwrap_or(x);
    // Both views of x are in the layout (the override picks one at compile time).
    let bufs = [
        (1, x.buffer()),
        (9, x.buffer()),
        (2, w.codes.buffer()),
        (3, w.scales.buffer()),
        (4, zeros.buffer()),
        (5, bias.buffer()),
        (6, y.buffer()),
    ];
    rec.dispatch_at(entry, &pl, Some(bytemuck::bytes_of(&p)), &bufs, grid)?;
    Ok(y)
}

/// Activations quantized to u8 codes `[M, k_pad / 4]` plus per-row `(scale, zero)`.
pub struct GpuQuantAct {
    pub codes: GpuTensor,
    pub params: GpuTensor,
    pub m: usize,
    pub k: usize,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ActKernelParams {
    m: u32,
    k: u32,
    k_pad: u32,
    dynamic: u32,
    scale: f32,
    inv_scale: f32,
    zero: f32,
    groups_x: u32,
}

/// Quantize `x[.., K]` per token (dynamic) or with calibrated static params.
pub fn quant_act(
    rec: &mut Recorder,
    x: &GpuTensor,
    spec: &ActSpec,
    stat: Option<&ActParams>,
) -> Result<GpuQuantAct> {
    let k = *x.shape().last().unwrap_or(&0);
    let m = x.len() / k.max(1);
    let k_pad = crate::quant::pack::k_pad(k);
    let codes = rec.ctx().alloc(&[m, k_pad / 4])?;
    let params = rec.ctx().alloc(&[m, 2])?;
    let sp = if spec.dynamic {
        None
    } else {
        Some(stat.ok_or_else(|| {
            Error::Invalid("static activation quantization needs calibrated params".into())
        })?)
    };
    if m == 0 {
        return Ok(GpuQuantAct {
            codes,
            params,
            m,
            k,
        });
    }
    let max = rec.ctx().limits.max_compute_workgroups_per_dimension as usize;
    let gy = m.div_ceil(max);
    let gx = m.div_ceil(gy);
    let p = ActKernelParams {
        m: m as u32,
        k: k as u32,
        k_pad: k_pad as u32,
        dynamic: spec.dynamic as u32,
        scale: sp.map_or(0.0, |s| s.scale),
        inv_scale: sp.map_or(0.0, |s| s.inv_scale),
        zero: sp.map_or(0.0, |s| s.zero),
        groups_x: gx as u32,
    };
    let ctx = rec.ctx();
    let pl = ctx.pipelines.get(
        &ctx.device,
        "quant_act",
        "quant_act",
        &[("BITS", spec.bits as f64)],
    )?;
    rec.dispatch_at(
        "quant_act",
        &pl,
        Some(bytemuck::bytes_of(&p)),
        &[(1, x.buffer()), (2, codes.buffer()), (3, params.buffer())],
        [gx as u32, gy as u32, 1],
    )?;
    Ok(GpuQuantAct {
        codes,
        params,
        m,
        k,
    })
}

/// `Y = dequant(Xq) dequant(W)^T + b` with integer dot products per group.
/// `int_dot` selects `dot4U8Packed`; `false` runs the shift-and-mask fallback.
pub fn qmatmul_a8(
    rec: &mut Recorder,
    xq: &GpuQuantAct,
    w: &GpuQuantWeight,
    b: Option<&GpuTensor>,
    out_shape: &[usize],
    int_dot: bool,
) -> Result<GpuTensor> {
    if xq.k != w.k {
        return Err(Error::Shape(format!(
            "quantized matmul: activations have K = {} but the weight is [{}, {}]",
            xq.k, w.n, w.k
        )));
    }
    let m = xq.m;
    if out_shape.iter().product::<usize>() != m * w.n || out_shape.last() != Some(&w.n) {
        return Err(Error::Shape(format!(
            "quantized matmul: output shape {out_shape:?} is not [.., {}] with {m} rows",
            w.n
        )));
    }
    check_bias(w, b)?;
    let y = rec.ctx().alloc(out_shape)?;
    if m == 0 || w.n == 0 {
        return Ok(y);
    }
    let (rows, cols) = tile(rec.ctx(), m);
    let ctx = rec.ctx();
    let wg = ctx.lanes_per_workgroup();
    let consts = constants(w.bits, rows, cols, ("INT_DOT", int_dot), wg);
    let pl = ctx
        .pipelines
        .get(&ctx.device, "qmatmul", "qmatmul_a8", &consts)?;
    let p = w.params(m, b.is_some());
    let zeros = w.zeros.as_ref().unwrap_or(&w.scales);
    let bias = b.unwrap_or(&xq.params);
    rec.dispatch_at(
        "qmatmul_a8",
        &pl,
        Some(bytemuck::bytes_of(&p)),
        &[
            (2, w.codes.buffer()),
            (3, w.scales.buffer()),
            (4, zeros.buffer()),
            (5, bias.buffer()),
            (6, y.buffer()),
            (7, xq.codes.buffer()),
            (8, xq.params.buffer()),
        ],
        [
            w.n.div_ceil(wg * cols as usize) as u32,
            m.div_ceil(rows as usize) as u32,
            1,
        ],
    )?;
    Ok(y)
}
