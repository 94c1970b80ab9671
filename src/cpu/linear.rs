//! The CPU linear layers on tensors: float weights on `qlinear`'s f32 tiles (candle's matmul
//! in autodiff graphs), packed weights on the packed kernels, and what may follow a linear in
//! the same tasks ([`Then`]: GELU, residual add).

use candle_core::{Device, Tensor};

use super::{add, gelu, qlinear, to_vec, with_f32};
use crate::{Error, Result};

/// What follows a linear inside its kernel (`qlinear::Post`): the GELU of [`gelu`], or a
/// residual `r + y` (the order of [`add`]`(r, y)`; the same bits either way).
#[derive(Clone, Copy)]
pub enum Then<'a> {
    Gelu,
    Add(&'a Tensor),
}

/// `then` applied as separate ops (autodiff graphs, the fake-quant reference).
pub fn then_composed(y: Tensor, then: Option<Then<'_>>) -> Result<Tensor> {
    match then {
        None => Ok(y),
        Some(Then::Gelu) => gelu(&y),
        Some(Then::Add(r)) => add(r, &y),
    }
}

/// Calls `f` with the `qlinear::Post` of `then` for an output of shape `dims` (a residual's
/// values borrowed, not copied).
fn with_post<R>(
    then: Option<Then<'_>>,
    dims: &[usize],
    f: impl FnOnce(qlinear::Post<'_>) -> R,
) -> Result<R> {
    match then {
        None => Ok(f(qlinear::Post::None)),
        Some(Then::Gelu) => Ok(f(qlinear::Post::Gelu)),
        Some(Then::Add(r)) if r.dims() != dims => Err(Error::Shape(format!(
            "add: shapes {:?} and {dims:?} differ",
            r.dims()
        ))),
        Some(Then::Add(r)) => with_f32(r, |rs| f(qlinear::Post::Residual(rs))),
    }
}

/// `Y[.., N] = X[.., K] W^T + b` on a packed weight (`qlinear`), activations quantized per
/// `act`.
pub fn packed_linear(
    x: &Tensor,
    w: &crate::quant::PackedWeight,
    b: Option<&Tensor>,
    act: Option<qlinear::ActQuant<'_>>,
) -> Result<Tensor> {
    packed_linear_then(x, w, None, b, act, None)
}

/// [`packed_linear`] followed by `then`, fused into the kernel's tasks; on `panels` when they
/// are `w`'s for this CPU (else decoded per call).
pub fn packed_linear_then(
    x: &Tensor,
    w: &crate::quant::PackedWeight,
    panels: Option<&qlinear::Panels>,
    b: Option<&Tensor>,
    act: Option<qlinear::ActQuant<'_>>,
    then: Option<Then<'_>>,
) -> Result<Tensor> {
    let b = b.map(to_vec).transpose()?;
    let mut dims = x.dims().to_vec();
    if let Some(l) = dims.last_mut() {
        *l = w.n;
    }
    let y = with_post(then, &dims, |post| {
        with_f32(x, |xs| {
            let isa = qlinear::Isa::detect();
            qlinear::qlinear_with(xs, w, panels, b.as_deref(), act, post, isa)
        })
    })???;
    Ok(Tensor::from_vec(y, dims, &Device::Cpu)?)
}

/// Whether inference linears run on `qlinear`'s f32 tiles (default) or on candle's matmul
/// (`QWM_CPU_LINEAR=candle`, for side-by-side benchmarks).
fn tiles_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("QWM_CPU_LINEAR").as_deref() != Ok("candle"))
}

/// `Y[.., N] = X[.., K] W^T + b` with `W[N, K]`: inference on `qlinear`'s f32 tiles (bias in
/// the epilogue, work split over tokens); autodiff graphs keep candle's [`matmul`].
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    linear_then(x, w, b, None)
}

/// [`linear`] followed by `then`, fused into the tiles' tasks (composed ops in autodiff
/// graphs and on candle's matmul).
pub fn linear_then(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    then: Option<Then<'_>>,
) -> Result<Tensor> {
    let tracked = x.track_op()
        || w.track_op()
        || b.is_some_and(|b| b.track_op())
        || matches!(then, Some(Then::Add(r)) if r.track_op());
    if tracked || !tiles_enabled() {
        return then_composed(matmul(x, w, b)?, then);
    }
    let (n, k) = w.dims2()?;
    let mut dims = x.dims().to_vec();
    if dims.last() != Some(&k) {
        return Err(Error::Shape(format!(
            "linear: input {dims:?} does not end in K = {k} of weight [{n}, {k}]"
        )));
    }
    let b = b.map(to_vec).transpose()?;
    if let Some(l) = dims.last_mut() {
        *l = n;
    }
    let y = with_post(then, &dims, |post| {
        with_f32(w, |ws| {
            with_f32(x, |xs| {
                let isa = qlinear::Isa::detect();
                qlinear::linear_f32_post(xs, ws, n, b.as_deref(), post, isa)
            })
        })
    })????;
    Ok(Tensor::from_vec(y, dims, &Device::Cpu)?)
}

/// `Y[.., N] = X[.., K] W^T + b` with `W[N, K]`.
pub fn matmul(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = *dims
        .last()
        .ok_or_else(|| Error::Shape("matmul input is a scalar".into()))?;
    let (n, wk) = w.dims2()?;
    if wk != k {
        return Err(Error::Shape(format!(
            "matmul: input {dims:?} has K = {k} but weight [{n}, {wk}] has K = {wk}"
        )));
    }
    let m = x.elem_count() / k.max(1);
    let y = x.reshape((m, k))?.matmul(&w.t()?)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut out = dims;
    if let Some(l) = out.last_mut() {
        *l = n;
    }
    Ok(y.reshape(out)?)
}
