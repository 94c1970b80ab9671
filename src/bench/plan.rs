//! `qwm bench plan`: one CEM optimization step (default 300 samples, horizon 5: one batched
//! rollout plus the objective, costs read back) on the GPU and CPU backends in the same run.
//! `tools/bench_plan_torch.py` times the same step in PyTorch eager as a peer.

use std::time::Instant;

use super::record::BenchRecord;
use super::Session;
use crate::app::{Backend, LoadedModel};
use crate::env;
use crate::model::Weights;
use crate::plan::PlanModel;
use crate::tensor::randn;
use crate::Result;

pub struct Options {
    pub samples: usize,
    pub horizon: usize,
}

/// The process's peak resident set from `/proc/self/status` (VmHWM, loading included; `None`
/// where absent, e.g. off Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Raw seconds of `reps` CEM steps (`pm.costs` on `o.samples` sequences) after one untimed
/// step (it compiles the pipelines).
fn time_steps(pm: &mut dyn PlanModel, w: &Weights, o: &Options, reps: usize) -> Result<Vec<f64>> {
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
    for i in 0..=reps {
        let t = Instant::now();
        let c = pm.costs(&acts, o.samples)?;
        let dt = t.elapsed().as_secs_f64();
        assert_eq!(c.len(), o.samples);
        if i > 0 {
            times.push(dt); // the first call compiles pipelines
        }
    }
    Ok(times)
}

fn row(name: &str, o: &Options, device: &str, t: Vec<f64>) -> BenchRecord {
    let timing = if device == "gpu" {
        "gpu-wall"
    } else {
        "cpu-wall"
    };
    BenchRecord::new(
        "plan",
        &format!("cem step {name}"),
        &format!("{}x{}", o.samples, o.horizon),
        device,
        timing,
    )
    .samples(t)
    .per_second(1.0, "CEM steps/s")
}

/// One CEM step of the model `name` on the session's GPU (if any) and on the CPU backend (if
/// the session times CPU rows), each through the application layer's backend dispatch.
pub fn run(s: &mut Session, m: &LoadedModel, name: &str, o: &Options) -> Result<()> {
    let w = &m.weights;
    let reps = s.reps;
    let mut gpu_row = None;
    if let Some(ctx) = s.gpu.take() {
        let gpu = Backend::Gpu(Box::new(ctx));
        let t = gpu.with_plan_model(m, o.horizon, 1.0, |pm| time_steps(pm, w, o, reps));
        let Backend::Gpu(ctx) = gpu else {
            unreachable!("built as Backend::Gpu above")
        };
        let peak = ctx.pool_stats().peak_bytes;
        s.gpu = Some(*ctx);
        gpu_row = Some(row(name, o, "gpu", t?).extra("gpu_peak_bytes", peak));
    }
    if s.cpu {
        let t = Backend::Cpu.with_plan_model(m, o.horizon, 1.0, |pm| time_steps(pm, w, o, reps))?;
        let mut c = row(name, o, "cpu", t);
        if let Some(rss) = peak_rss_bytes() {
            c = c.extra("peak_rss_bytes", rss);
        }
        if let Some(g) = gpu_row.as_mut() {
            g.reference = Some(format!("{} (cpu)", c.key()));
            g.x_reference = Some(c.median_s / g.median_s);
        }
        s.records.extend(gpu_row.take());
        s.push(c);
    }
    s.records.extend(gpu_row);
    Ok(())
}
