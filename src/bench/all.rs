//! `qwm bench all`: the suite to run on a new GPU, one result file for `qwm bench compare`.
//! Yardsticks, kernels, quantized kernels, the tiny world model (forward, rollout) and one CEM
//! step on the adapter and the CPU backend, and the environments. `--quick` keeps a subset of
//! each family with the same names and shapes, so a quick file compares with a full one on the
//! rows they share.

use super::{env, kernels, model, plan, quant, Session};
use crate::app::{LoadedModel, ModelSource};
use crate::Result;

pub struct Options {
    pub quick: bool,
}

/// Run every family into `s` (GPU families only when the session has an adapter; CPU rows
/// only when it times the CPU).
pub fn run(s: &mut Session, o: &Options, progress: &mut dyn FnMut(&str)) -> Result<()> {
    if s.gpu.is_some() {
        progress("yardsticks (copy, FMA peak)");
        s.measure_yardsticks()?;
    }
    progress("kernels");
    kernels::run(s, &kernels::Options { quick: o.quick })?;
    if s.gpu.is_some() {
        progress("quant");
        quant::run(s, &quant::Options { quick: o.quick })?;
    }
    let m = LoadedModel::for_bench(&ModelSource::Preset("tiny".into()))?;
    progress("model (tiny)");
    let batches = if o.quick {
        vec![1, 32]
    } else {
        vec![1, 8, 32, 300]
    };
    model::run(
        s,
        &m,
        &model::Options {
            cpu_batches: batches.clone(),
            batches,
            rollout_samples: 300,
            horizon: 5,
            cpu_rollout: true,
        },
    )?;
    progress("plan (tiny)");
    plan::run(
        s,
        &m,
        "tiny",
        &plan::Options {
            samples: 300,
            horizon: 5,
            torch: None,
        },
    )?;
    if s.cpu {
        progress("env");
        env::run(
            s,
            &env::Options {
                envs: Vec::new(),
                steps: if o.quick { 100 } else { 500 },
                size: None,
            },
        )?;
    }
    Ok(())
}
