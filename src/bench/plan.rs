//! `qwm bench plan`: one CEM optimization step (default 300 samples, horizon 5: one batched
//! rollout plus the objective, costs read back) on the GPU and CPU backends in the same run.
//! `tools/bench_plan_torch.py` times the same step in PyTorch eager as a peer.

use std::time::Instant;

use serde::Serialize;

use super::kernels::{today, AdapterId};
use crate::app::{Backend, LoadedModel};
use crate::env;
use crate::gpu::GpuContext;
use crate::model::Weights;
use crate::plan::PlanModel;
use crate::tensor::randn;
use crate::Result;

pub struct Options {
    pub samples: usize,
    pub horizon: usize,
    pub reps: usize,
    pub skip_cpu: bool,
    pub skip_gpu: bool,
}

#[derive(Serialize, Debug)]
pub struct PlanBench {
    pub model: String,
    pub adapter: Option<AdapterId>,
    pub date: String,
    pub samples: usize,
    pub horizon: usize,
    /// Median seconds of one CEM step (rollout + objective + readback of the costs).
    pub gpu_seconds_per_cem_step: Option<f64>,
    pub cpu_seconds_per_cem_step: Option<f64>,
    pub gpu_peak_bytes: Option<u64>,
}

/// Median seconds of `pm.costs` on `o.samples` sequences, after one untimed call.
fn time_steps(pm: &mut dyn PlanModel, w: &Weights, o: &Options) -> Result<f64> {
    let env = env::make(if w.config.proprio_dim == 4 {
        "pointmaze"
    } else {
        "wall"
    })
    .or_else(|_| env::make("wall"))?;
    let size = w.config.image_size;
    let (s, g) = env.sample_start_goal(1);
    let obs = env.render_state(&s, size)?;
    let goal = env.render_state(&g, size)?;
    // Proprio of the right size whatever env produced the frames.
    let pd = w.config.proprio_dim;
    let p = vec![0.1; pd];
    pm.set_problem(&obs, &p, &goal, &p)?;
    let step = w.config.frameskip * w.config.action_dim;
    let acts = randn(o.samples * o.horizon * step, 1.0, 3);
    let mut times = Vec::new();
    for i in 0..=o.reps {
        let t = Instant::now();
        let c = pm.costs(&acts, o.samples)?;
        let dt = t.elapsed().as_secs_f64();
        assert_eq!(c.len(), o.samples);
        if i > 0 {
            times.push(dt); // the first call compiles pipelines
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}

pub fn run(m: &LoadedModel, name: &str, o: &Options) -> Result<PlanBench> {
    let w = &m.weights;
    let mut out = PlanBench {
        model: name.to_string(),
        adapter: None,
        date: today(),
        samples: o.samples,
        horizon: o.horizon,
        gpu_seconds_per_cem_step: None,
        cpu_seconds_per_cem_step: None,
        gpu_peak_bytes: None,
    };
    let ctx = if o.skip_gpu {
        None
    } else {
        GpuContext::new()
            .map_err(|e| eprintln!("no GPU adapter ({e}); timing the CPU backend only"))
            .ok()
    };
    if let Some(ctx) = ctx {
        let gpu = Backend::Gpu(Box::new(ctx));
        let secs = gpu.with_plan_model(m, o.horizon, 1.0, |pm| time_steps(pm, w, o))?;
        out.gpu_seconds_per_cem_step = Some(secs);
        if let Some(ctx) = gpu.gpu() {
            out.gpu_peak_bytes = Some(ctx.pool_stats().peak_bytes);
            out.adapter = Some(AdapterId::of(ctx));
        }
    }
    if !o.skip_cpu {
        let secs = Backend::Cpu.with_plan_model(m, o.horizon, 1.0, |pm| time_steps(pm, w, o))?;
        out.cpu_seconds_per_cem_step = Some(secs);
    }
    Ok(out)
}
