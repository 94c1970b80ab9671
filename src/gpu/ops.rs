//! Op launchers: shape checks, parameter structs and dispatch sizes for every WGSL kernel the
//! model uses. Each op records into a [`Recorder`] and returns a new pooled tensor; nothing is
//! read back. The f32 matmul lives in [`super::matmul`] (re-exported here), the launchers only
//! tests and benchmarks use in [`super::probe`].

use bytemuck::{Pod, Zeroable};

use super::{GpuContext, GpuTensor, Recorder};
use crate::{Error, Result};

pub use super::matmul::{matmul, matmul_tiled, MatmulKernel};

pub(super) fn params<T: Pod>(p: &T) -> &[u8] {
    bytemuck::bytes_of(p)
}

pub(super) fn pipeline(
    rec: &Recorder,
    shader: &'static str,
    entry: &'static str,
    constants: &[(&'static str, f64)],
) -> Result<wgpu::ComputePipeline> {
    let ctx = rec.ctx();
    ctx.pipelines.get(&ctx.device, shader, entry, constants)
}

/// Workgroups for `n` lanes of workgroup size `wg`, folded into 2-D when one dimension would
/// exceed the adapter's limit. Returns (workgroups, lanes per dispatch row).
pub(crate) fn grid_1d(ctx: &GpuContext, n: usize, wg: u32) -> ([u32; 3], u32) {
    let groups = (n as u64).div_ceil(wg as u64).max(1);
    let max = ctx.limits.max_compute_workgroups_per_dimension as u64;
    if groups <= max {
        ([groups as u32, 1, 1], groups as u32 * wg)
    } else {
        let y = groups.div_ceil(max);
        let x = groups.div_ceil(y);
        ([x as u32, y as u32, 1], x as u32 * wg)
    }
}

/// Split a shape into (rows, last dim).
pub(super) fn rows_cols(shape: &[usize], what: &str) -> Result<(usize, usize)> {
    match shape.split_last() {
        Some((&c, rest)) => Ok((rest.iter().product(), c)),
        None => Err(Error::Shape(format!(
            "{what}: expected at least 1 dimension, got a scalar"
        ))),
    }
}

pub(super) fn u(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Limit(format!("{what} = {v} does not fit in 32 bits")))
}

// ---------------------------------------------------------------------------------------------
// row-wise: layernorm, softmax

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(super) struct RowParams {
    pub(super) rows: u32,
    pub(super) cols: u32,
    pub(super) eps: f32,
    pub(super) groups_x: u32,
}

/// Workgroups for one workgroup per row, folded into 2-D past the per-dimension limit.
pub(super) fn grid_rows(ctx: &GpuContext, rows: usize) -> ([u32; 3], u32) {
    let max = ctx.limits.max_compute_workgroups_per_dimension as usize;
    if rows <= max {
        ([rows.max(1) as u32, 1, 1], rows.max(1) as u32)
    } else {
        let y = rows.div_ceil(max);
        let x = rows.div_ceil(y);
        ([x as u32, y as u32, 1], x as u32)
    }
}

/// LayerNorm over the last dimension with affine `gamma`, `beta` (both `[cols]`).
pub fn layernorm(
    rec: &mut Recorder,
    x: &GpuTensor,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    eps: f32,
) -> Result<GpuTensor> {
    let (rows, cols) = rows_cols(x.shape(), "layernorm input")?;
    for (name, t) in [("gamma", gamma), ("beta", beta)] {
        if t.shape() != [cols] {
            return Err(Error::Shape(format!(
                "layernorm {name} must be [{cols}] for input {:?}, got {:?}",
                x.shape(),
                t.shape()
            )));
        }
    }
    if !(eps > 0.0 && eps.is_finite()) {
        return Err(Error::Invalid(format!(
            "layernorm eps must be > 0, got {eps}"
        )));
    }
    let y = rec.ctx().alloc(x.shape())?;
    if rows == 0 || cols == 0 {
        return Ok(y);
    }
    let (groups, gx) = grid_rows(rec.ctx(), rows);
    let p = RowParams {
        rows: u(rows, "rows")?,
        cols: u(cols, "cols")?,
        eps,
        groups_x: gx,
    };
    let pl = pipeline(rec, "layernorm", "layernorm", &[])?;
    rec.dispatch(
        "layernorm",
        &pl,
        Some(params(&p)),
        &[x.buffer(), gamma.buffer(), beta.buffer(), y.buffer()],
        groups,
    )?;
    Ok(y)
}

// ---------------------------------------------------------------------------------------------
// elementwise

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct EltParams {
    n: u32,
    cols: u32,
    row_stride: u32,
    _pad: u32,
}

fn eltwise(
    rec: &mut Recorder,
    entry: &'static str,
    a: &GpuTensor,
    b: Option<&GpuTensor>,
    scale: Option<&GpuTensor>,
) -> Result<GpuTensor> {
    let y = rec.ctx().alloc(a.shape())?;
    let n = a.len();
    if n == 0 {
        return Ok(y);
    }
    let cols = *a.shape().last().unwrap_or(&1);
    let wg = 256;
    let (groups, stride) = grid_1d(rec.ctx(), n, wg);
    let p = EltParams {
        n: u(n, "elements")?,
        cols: u(cols, "cols")?,
        row_stride: stride,
        _pad: 0,
    };
    let pl = pipeline(rec, "elementwise", entry, &[("WG", wg as f64)])?;
    // Bindings are numbered as in the shader: a=1, b=2, scale=3, y=4. Auto layouts drop the
    // unused ones, so pass exactly the used buffers at their binding numbers.
    let missing = || Error::Shape(format!("{entry}: a second operand is missing"));
    let used: Vec<(u32, &wgpu::Buffer)> = match entry {
        "gelu" | "relu" => vec![(1, a.buffer()), (4, y.buffer())],
        "add" => vec![
            (1, a.buffer()),
            (2, b.ok_or_else(missing)?.buffer()),
            (4, y.buffer()),
        ],
        _ => vec![
            (1, a.buffer()),
            (2, b.ok_or_else(missing)?.buffer()),
            (3, scale.ok_or_else(missing)?.buffer()),
            (4, y.buffer()),
        ],
    };
    rec.dispatch_at(entry, &pl, Some(params(&p)), &used, groups)?;
    Ok(y)
}

/// GELU, exact erf form (PyTorch's default `nn.GELU()`).
pub fn gelu(rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
    eltwise(rec, "gelu", x, None, None)
}

pub fn relu(rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
    eltwise(rec, "relu", x, None, None)
}

fn same_shape(a: &GpuTensor, b: &GpuTensor, what: &str) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::Shape(format!(
            "{what}: shapes {:?} and {:?} differ",
            a.shape(),
            b.shape()
        )));
    }
    Ok(())
}

/// Residual add `a + b`.
pub fn add(rec: &mut Recorder, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
    same_shape(a, b, "add")?;
    eltwise(rec, "add", a, Some(b), None)
}

/// `a + scale * b` with a per-feature `scale` over the last dimension (LayerScale residual).
pub fn add_scaled(
    rec: &mut Recorder,
    a: &GpuTensor,
    b: &GpuTensor,
    scale: &GpuTensor,
) -> Result<GpuTensor> {
    same_shape(a, b, "add_scaled")?;
    let cols = *a.shape().last().unwrap_or(&1);
    if scale.shape() != [cols] {
        return Err(Error::Shape(format!(
            "add_scaled: scale must be [{cols}] for {:?}, got {:?}",
            a.shape(),
            scale.shape()
        )));
    }
    eltwise(rec, "add_scaled", a, Some(b), Some(scale))
}

// ---------------------------------------------------------------------------------------------
// concat / slice

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ConcatParams {
    n: u32,
    tokens: u32,
    dx: u32,
    dt: u32,
    row_stride: u32,
    col0: u32,
    in_cols: u32,
    _pad: u32,
}

/// Concatenate along features, tiling `v[R, DT]` over the tokens of `x[R, T, DX]`:
/// `y[r, t] = [x[r, t], v[r]]`. With `x` of shape `[R, DX]` this is a plain concat.
pub fn concat_tile(rec: &mut Recorder, x: &GpuTensor, v: &GpuTensor) -> Result<GpuTensor> {
    let xs = x.shape();
    let (r, t, dx) = match xs {
        [r, dx] => (*r, 1, *dx),
        [r, t, dx] => (*r, *t, *dx),
        _ => {
            return Err(Error::Shape(format!(
                "concat_tile: x must be [R, D] or [R, T, D], got {xs:?}"
            )))
        }
    };
    let (vr, dt) = match v.shape() {
        [vr, dt] => (*vr, *dt),
        s => {
            return Err(Error::Shape(format!(
                "concat_tile: v must be [R, D], got {s:?}"
            )))
        }
    };
    if vr != r {
        return Err(Error::Shape(format!(
            "concat_tile: x {xs:?} has R = {r} but v {:?} has R = {vr}",
            v.shape()
        )));
    }
    let mut out_shape = xs.to_vec();
    if let Some(l) = out_shape.last_mut() {
        *l = dx + dt;
    }
    let y = rec.ctx().alloc(&out_shape)?;
    let n = y.len();
    if n == 0 {
        return Ok(y);
    }
    let wg = 256;
    let (groups, stride) = grid_1d(rec.ctx(), n, wg);
    let p = ConcatParams {
        n: u(n, "elements")?,
        tokens: u(t, "tokens")?,
        dx: u(dx, "dx")?,
        dt: u(dt, "dt")?,
        row_stride: stride,
        col0: 0,
        in_cols: 0,
        _pad: 0,
    };
    let pl = pipeline(rec, "concat", "concat_tile", &[("WG", wg as f64)])?;
    rec.dispatch_at(
        "concat_tile",
        &pl,
        Some(params(&p)),
        &[(1, x.buffer()), (2, v.buffer()), (3, y.buffer())],
        groups,
    )?;
    Ok(y)
}

/// Columns `[col0, col0 + width)` of the last dimension.
pub fn slice_cols(
    rec: &mut Recorder,
    x: &GpuTensor,
    col0: usize,
    width: usize,
) -> Result<GpuTensor> {
    let (_, cols) = rows_cols(x.shape(), "slice_cols input")?;
    if col0 + width > cols {
        return Err(Error::Shape(format!(
            "slice_cols: columns {col0}..{} out of range for {:?}",
            col0 + width,
            x.shape()
        )));
    }
    let mut out_shape = x.shape().to_vec();
    if let Some(l) = out_shape.last_mut() {
        *l = width;
    }
    let y = rec.ctx().alloc(&out_shape)?;
    let n = y.len();
    if n == 0 {
        return Ok(y);
    }
    let wg = 256;
    let (groups, stride) = grid_1d(rec.ctx(), n, wg);
    let p = ConcatParams {
        n: u(n, "elements")?,
        tokens: 1,
        dx: u(width, "width")?,
        dt: 0,
        row_stride: stride,
        col0: u(col0, "col0")?,
        in_cols: u(cols, "cols")?,
        _pad: 0,
    };
    let pl = pipeline(rec, "concat", "slice_cols", &[("WG", wg as f64)])?;
    rec.dispatch_at(
        "slice_cols",
        &pl,
        Some(params(&p)),
        &[(1, x.buffer()), (3, y.buffer())],
        groups,
    )?;
    Ok(y)
}

// ---------------------------------------------------------------------------------------------
// attention

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AttnParams {
    batch: u32,
    tokens: u32,
    heads: u32,
    head_dim4: u32,
    frame_tokens: u32,
    scale: f32,
    _p: [u32; 2],
}

/// Multi-head attention over packed `qkv[B, T, 3*H*D]` -> `[B, T, H*D]`, scale `1/sqrt(D)`.
/// `frame_tokens = Some(P)` applies the frame-block-causal mask (token i sees token j when
/// `j / P <= i / P`).
pub fn attention(
    rec: &mut Recorder,
    qkv: &GpuTensor,
    heads: usize,
    frame_tokens: Option<usize>,
) -> Result<GpuTensor> {
    let (b, t, w) = match qkv.shape() {
        [b, t, w] => (*b, *t, *w),
        s => {
            return Err(Error::Shape(format!(
                "attention: qkv must be [B, T, 3*H*D], got {s:?}"
            )))
        }
    };
    if heads == 0 || w % (3 * heads) != 0 {
        return Err(Error::Shape(format!(
            "attention: qkv width {w} is not 3 * heads ({heads}) * head_dim"
        )));
    }
    let d = w / (3 * heads);
    if !(4..=64).contains(&d) || !d.is_multiple_of(4) {
        return Err(Error::Shape(format!(
            "attention: head dim {d} unsupported; it must be a multiple of 4 from 4 to 64"
        )));
    }
    if frame_tokens == Some(0) {
        return Err(Error::Invalid("attention: frame_tokens must be > 0".into()));
    }
    let y = rec.ctx().alloc(&[b, t, heads * d])?;
    if b == 0 || t == 0 {
        return Ok(y);
    }
    let wg = rec.ctx().lanes_per_workgroup();
    let p = AttnParams {
        batch: u(b, "batch")?,
        tokens: u(t, "tokens")?,
        heads: u(heads, "heads")?,
        head_dim4: (d / 4) as u32,
        frame_tokens: u(frame_tokens.unwrap_or(0), "frame_tokens")?,
        scale: 1.0 / (d as f32).sqrt(),
        _p: [0; 2],
    };
    let pl = pipeline(rec, "attention", "attention", &[("WG", wg as f64)])?;
    rec.dispatch(
        "attention",
        &pl,
        Some(params(&p)),
        &[qkv.buffer(), y.buffer()],
        [t.div_ceil(wg) as u32, heads as u32, b as u32],
    )?;
    Ok(y)
}

// ---------------------------------------------------------------------------------------------
// convolutions

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct ConvParams {
    n: u32,
    row_stride: u32,
    batch: u32,
    cin: u32,
    cout: u32,
    h: u32,
    w: u32,
    ho: u32,
    wo: u32,
    k: u32,
    stride: u32,
    pad: u32,
    has_bias: u32,
    _p: [u32; 3],
}

fn nchw(t: &GpuTensor, what: &str) -> Result<(usize, usize, usize, usize)> {
    match t.shape() {
        [b, c, h, w] => Ok((*b, *c, *h, *w)),
        s => Err(Error::Shape(format!(
            "{what}: expected [B, C, H, W], got {s:?}"
        ))),
    }
}

/// Patch embedding: conv with stride = kernel = `patch`. `img[B, C, H, W]`, `w[D, C, P, P]`,
/// `b[D]` -> tokens `[B, (H/P)*(W/P), D]` in row-major patch order.
pub fn patch_embed(
    rec: &mut Recorder,
    img: &GpuTensor,
    w: &GpuTensor,
    b: Option<&GpuTensor>,
) -> Result<GpuTensor> {
    let (bn, c, h, wd) = nchw(img, "patch_embed image")?;
    let (d, wc, ph, pw) = match w.shape() {
        [d, c, ph, pw] => (*d, *c, *ph, *pw),
        s => {
            return Err(Error::Shape(format!(
                "patch_embed weight must be [D, C, P, P], got {s:?}"
            )))
        }
    };
    if wc != c || ph != pw || ph == 0 {
        return Err(Error::Shape(format!(
            "patch_embed: weight {:?} does not fit image {:?} (need [D, {c}, P, P])",
            w.shape(),
            img.shape()
        )));
    }
    if h % ph != 0 || wd % ph != 0 {
        return Err(Error::Shape(format!(
            "patch_embed: image {h}x{wd} is not a multiple of the patch size {ph}"
        )));
    }
    let (gh, gw) = (h / ph, wd / ph);
    let cols = c * ph * ph;
    let patches = rec.ctx().alloc(&[bn, gh * gw, cols])?;
    let n = patches.len();
    let wg = 256;
    let (groups, stride) = grid_1d(rec.ctx(), n, wg);
    let p = ConvParams {
        n: u(n, "elements")?,
        row_stride: stride,
        batch: bn as u32,
        cin: c as u32,
        cout: 0,
        h: h as u32,
        w: wd as u32,
        ho: gh as u32,
        wo: gw as u32,
        k: ph as u32,
        ..Default::default()
    };
    let pl = pipeline(rec, "conv", "patchify", &[("WG", wg as f64)])?;
    rec.dispatch_at(
        "patchify",
        &pl,
        Some(params(&p)),
        &[(1, img.buffer()), (4, patches.buffer())],
        groups,
    )?;
    let w2 = w.reshape(&[d, cols])?;
    matmul(rec, &patches, &w2, b)
}

/// 2-D convolution, `x[B, CI, H, W]`, `w[CO, CI, K, K]`, optional `b[CO]`.
pub fn conv2d(
    rec: &mut Recorder,
    x: &GpuTensor,
    w: &GpuTensor,
    b: Option<&GpuTensor>,
    stride: usize,
    pad: usize,
) -> Result<GpuTensor> {
    conv_common(rec, x, w, b, stride, pad, false)
}

/// Transposed 2-D convolution, `x[B, CI, H, W]`, `w[CI, CO, K, K]` (PyTorch layout), optional
/// `b[CO]`; output side `(H - 1) * stride - 2 * pad + K`.
pub fn conv_transpose2d(
    rec: &mut Recorder,
    x: &GpuTensor,
    w: &GpuTensor,
    b: Option<&GpuTensor>,
    stride: usize,
    pad: usize,
) -> Result<GpuTensor> {
    conv_common(rec, x, w, b, stride, pad, true)
}

fn conv_common(
    rec: &mut Recorder,
    x: &GpuTensor,
    w: &GpuTensor,
    b: Option<&GpuTensor>,
    stride: usize,
    pad: usize,
    transposed: bool,
) -> Result<GpuTensor> {
    let what = if transposed {
        "conv_transpose2d"
    } else {
        "conv2d"
    };
    let (bn, ci, h, wd) = nchw(x, what)?;
    let (w0, w1, kh, kw) = match w.shape() {
        [a, b, c, d] => (*a, *b, *c, *d),
        s => {
            return Err(Error::Shape(format!(
                "{what} weight must be 4-D, got {s:?}"
            )))
        }
    };
    let (wci, co) = if transposed { (w0, w1) } else { (w1, w0) };
    if wci != ci || kh != kw || kh == 0 || stride == 0 {
        return Err(Error::Shape(format!(
            "{what}: weight {:?} does not fit input {:?} (stride {stride})",
            w.shape(),
            x.shape()
        )));
    }
    let k = kh;
    let (ho, wo) = if transposed {
        let o = |s: usize| (s as isize - 1) * stride as isize - 2 * pad as isize + k as isize;
        (o(h), o(wd))
    } else {
        let o = |s: usize| (s as isize + 2 * pad as isize - k as isize) / stride as isize + 1;
        (o(h), o(wd))
    };
    if ho <= 0 || wo <= 0 {
        return Err(Error::Shape(format!(
            "{what}: input {:?} with kernel {k}, stride {stride}, padding {pad} gives an empty output",
            x.shape()
        )));
    }
    let (ho, wo) = (ho as usize, wo as usize);
    if let Some(b) = b {
        if b.shape() != [co] {
            return Err(Error::Shape(format!(
                "{what}: bias must be [{co}], got {:?}",
                b.shape()
            )));
        }
    }
    let y = rec.ctx().alloc(&[bn, co, ho, wo])?;
    let n = y.len();
    if n == 0 {
        return Ok(y);
    }
    let wg = 256;
    let (groups, rs) = grid_1d(rec.ctx(), n, wg);
    let p = ConvParams {
        n: u(n, "elements")?,
        row_stride: rs,
        batch: bn as u32,
        cin: ci as u32,
        cout: co as u32,
        h: h as u32,
        w: wd as u32,
        ho: ho as u32,
        wo: wo as u32,
        k: k as u32,
        stride: stride as u32,
        pad: pad as u32,
        has_bias: b.is_some() as u32,
        _p: [0; 3],
    };
    let entry = if transposed {
        "conv_transpose2d"
    } else {
        "conv2d"
    };
    let pl = pipeline(rec, "conv", entry, &[("WG", wg as f64)])?;
    let bias = b.unwrap_or(w);
    rec.dispatch_at(
        entry,
        &pl,
        Some(params(&p)),
        &[
            (1, x.buffer()),
            (2, w.buffer()),
            (3, bias.buffer()),
            (4, y.buffer()),
        ],
        groups,
    )?;
    Ok(y)
}

// ---------------------------------------------------------------------------------------------
// reductions

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MseParams {
    items: u32,
    len: u32,
    g_stride: u32,
    _pad: u32,
}

/// Per-item mean squared error: `a[B, ...]` against `target` of the same shape or of one
/// item's shape (broadcast goal). Returns `[B]`.
pub fn mse_per_item(rec: &mut Recorder, a: &GpuTensor, target: &GpuTensor) -> Result<GpuTensor> {
    let items = *a
        .shape()
        .first()
        .ok_or_else(|| Error::Shape("mse_per_item: input must have a batch dimension".into()))?;
    let len = a.len() / items.max(1);
    let g_stride = if target.shape() == a.shape() {
        len
    } else if target.len() == len
        && (target.shape() == &a.shape()[1..] || target.shape().first() == Some(&1))
    {
        0
    } else {
        return Err(Error::Shape(format!(
            "mse_per_item: target {:?} must equal input {:?} or one item {:?}",
            target.shape(),
            a.shape(),
            &a.shape()[1..]
        )));
    };
    let y = rec.ctx().alloc(&[items])?;
    if items == 0 || len == 0 {
        return Ok(y);
    }
    let p = MseParams {
        items: u(items, "items")?,
        len: u(len, "len")?,
        g_stride: g_stride as u32,
        _pad: 0,
    };
    let gx = items.min(65535);
    let gy = items.div_ceil(65535);
    let pl = pipeline(rec, "reduce", "mse_rows", &[])?;
    rec.dispatch(
        "mse_rows",
        &pl,
        Some(params(&p)),
        &[a.buffer(), target.buffer(), y.buffer()],
        [gx as u32, gy as u32, 1],
    )?;
    Ok(y)
}
