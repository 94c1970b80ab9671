//! Which backend runs the world model, and the one place that builds the model on it: the GPU
//! (packed weights when quantized) or the CPU reference (fake quant when quantized).

use std::sync::Arc;

use super::events::Event;
use super::load::LoadedModel;
use crate::cpu::qlinear::WeightOnly;
use crate::gpu::GpuContext;
use crate::model::{CpuModel, GpuModel};
use crate::plan::world::{WorldPlan, WorldPlanModel};
use crate::Result;

/// What the user asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// A hardware GPU when there is one; on software rasterizers (lavapipe) the CPU backend,
    /// which is several times faster there.
    #[default]
    Auto,
    /// Any adapter, software ones included; the CPU backend when there is none.
    Gpu,
    Cpu,
}

/// An opened backend.
pub enum Backend {
    /// Shared: a context is large, and the viewer's planner shares the window's device (one
    /// context for both compared runs and every re-run).
    Gpu(Arc<GpuContext>),
    Cpu,
}

impl Backend {
    /// Open the backend for `choice`. Never fails for want of an adapter: it falls back to the
    /// CPU and says so through `observer`.
    pub fn open(choice: BackendChoice, observer: &mut dyn FnMut(&Event)) -> Backend {
        let mut say = |m: String| observer(&Event::Notice(m));
        let gpu = |c: GpuContext, say: &mut dyn FnMut(String)| {
            say(format!(
                "backend: gpu ({}, {})",
                c.report.name, c.report.backend
            ));
            Backend::Gpu(Arc::new(c))
        };
        match choice {
            BackendChoice::Cpu => Backend::Cpu,
            BackendChoice::Auto => match GpuContext::new() {
                Ok(c) if !c.report.kind.is_software() => gpu(c, &mut say),
                Ok(c) => {
                    say(format!(
                        "backend: cpu (the only adapter, {}, is a software rasterizer; \
                         --backend gpu uses it anyway)",
                        c.report.name
                    ));
                    Backend::Cpu
                }
                Err(e) => {
                    say(format!("backend: cpu ({e}); continuing on the CPU backend"));
                    Backend::Cpu
                }
            },
            BackendChoice::Gpu => match GpuContext::new() {
                Ok(c) => gpu(c, &mut say),
                Err(e) => {
                    say(format!("backend: cpu ({e}); continuing on the CPU backend"));
                    Backend::Cpu
                }
            },
        }
    }

    /// The GPU backend on a context opened elsewhere (the viewer window's device), said
    /// through `observer`.
    pub fn shared(ctx: Arc<GpuContext>, observer: &mut dyn FnMut(&Event)) -> Backend {
        observer(&Event::Notice(format!(
            "backend: gpu ({}, {}), the device shared with the window",
            ctx.report.name, ctx.report.backend
        )));
        Backend::Gpu(ctx)
    }

    /// "gpu" or "cpu", as reports record it.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Gpu(_) => "gpu",
            Backend::Cpu => "cpu",
        }
    }

    /// [`Backend::name`] for `model`, with " (weight-only on int8 inputs)" where
    /// `QWM_CPU_WEIGHT_ONLY=int8` changes how the CPU runs its linears: evaluation reports
    /// record it, so a report is never resumed or compared across the two numerics unawares.
    pub fn label(&self, model: &LoadedModel) -> Result<String> {
        let mut s = self.name().to_string();
        if matches!(self, Backend::Cpu) && Self::int8_weight_only(model)? {
            s.push_str(" (weight-only on int8 inputs)");
        }
        Ok(s)
    }

    pub fn gpu(&self) -> Option<&GpuContext> {
        match self {
            Backend::Gpu(c) => Some(c),
            Backend::Cpu => None,
        }
    }

    /// Whether the CPU runs some of `model`'s linears as weight-only specs on int8 inputs
    /// (`QWM_CPU_WEIGHT_ONLY=int8` and a module whose codes have at most 7 bits and no
    /// activation quantization); an invalid variable is an error.
    pub fn int8_weight_only(model: &LoadedModel) -> Result<bool> {
        let Some(q) = model.quant() else {
            return Ok(false);
        };
        let weight_only = [q.spec.encoder, q.spec.predictor]
            .iter()
            .any(|m| m.weight.is_some_and(|w| w.bits <= 7) && m.act.is_none());
        Ok(weight_only && WeightOnly::from_env()? == WeightOnly::Int8)
    }

    /// Build `model` on this backend and hand `f` a planning view of it (objective weight
    /// `alpha`, `horizon` model steps). The model lives for the call.
    pub fn with_plan_model<R>(
        &self,
        model: &LoadedModel,
        horizon: usize,
        alpha: f32,
        f: impl FnOnce(&mut dyn WorldPlan) -> Result<R>,
    ) -> Result<R> {
        let norm = model.weights().norm.clone();
        match self {
            Backend::Gpu(ctx) => {
                let m = match model.quant() {
                    Some(q) => GpuModel::new_quantized(ctx, q)?,
                    None => GpuModel::new(ctx, model.weights())?,
                };
                f(&mut WorldPlanModel::new(&m, norm, horizon, alpha))
            }
            Backend::Cpu => {
                let m = match model.quant() {
                    Some(q) => CpuModel::new_quantized_with(q, WeightOnly::from_env()?)?,
                    None => CpuModel::new(model.weights())?,
                };
                f(&mut WorldPlanModel::new(&m, norm, horizon, alpha))
            }
        }
    }
}
