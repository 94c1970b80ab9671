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
    /// `tools/bench_plan_torch.py`'s output for the same model, samples and horizon: the CPU
    /// row then carries PyTorch's seconds and qwm's speed relative to it.
    pub torch: Option<TorchPeer>,
}

/// One PyTorch eager measurement read from `tools/bench_plan_torch.py`'s JSON.
#[derive(Clone, Debug)]
pub struct TorchPeer {
    pub peer: String,
    pub seconds_per_cem_step: f64,
    /// Process CPU seconds per step, where the script recorded them.
    pub cpu_seconds_per_cem_step: Option<f64>,
}

impl TorchPeer {
    /// Parse the script's JSON, checking that it timed the same problem.
    pub fn from_json(text: &str, file: &str, o_samples: usize, o_horizon: usize) -> Result<Self> {
        let bad = |why: String| {
            crate::Error::Invalid(format!(
                "--torch-json {file}: {why}; pass the output of tools/bench_plan_torch.py"
            ))
        };
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not JSON ({e})")))?;
        let secs = v["seconds_per_cem_step"]
            .as_f64()
            .filter(|s| s.is_finite() && *s > 0.0)
            .ok_or_else(|| bad("no positive seconds_per_cem_step".into()))?;
        for (key, want) in [("samples", o_samples), ("horizon", o_horizon)] {
            match v[key].as_u64() {
                Some(got) if got as usize == want => {}
                got => {
                    return Err(bad(format!(
                        "{key} is {got:?} but this run times {want}; rerun the script with \
                         --{key} {want}"
                    )))
                }
            }
        }
        Ok(TorchPeer {
            peer: v["peer"].as_str().unwrap_or("pytorch").to_string(),
            seconds_per_cem_step: secs,
            cpu_seconds_per_cem_step: v["process_cpu_s_per_cem_step"]
                .as_f64()
                .filter(|s| s.is_finite() && *s > 0.0),
        })
    }
}

/// The process's peak resident set from `/proc/self/status` (VmHWM, loading included; `None`
/// where absent, e.g. off Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Reset the process's peak resident set to its current size (Linux `clear_refs` 5), so that
/// [`peak_rss_bytes`] then measures what follows; false where that is not possible (the peak
/// then includes everything before).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// CPU seconds the whole process has used (all threads), where the platform says.
fn process_cpu_seconds() -> Option<f64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec through a valid pointer.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        if rc == 0 {
            return Some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9);
        }
    }
    None
}

/// Raw seconds of `reps` CEM steps (`pm.costs` on `o.samples` sequences) after one untimed
/// step (it compiles the pipelines).
/// Also returns the process CPU seconds of each step (all threads; less sensitive than wall
/// time to other processes on a shared machine, empty where unavailable).
fn time_steps(
    pm: &mut dyn PlanModel,
    w: &Weights,
    o: &Options,
    reps: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
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
    let (mut times, mut cpu) = (Vec::new(), Vec::new());
    for i in 0..=reps {
        let c0 = process_cpu_seconds();
        let t = Instant::now();
        let c = pm.costs(&acts, o.samples)?;
        let dt = t.elapsed().as_secs_f64();
        assert_eq!(c.len(), o.samples);
        if i > 0 {
            times.push(dt); // the first call compiles pipelines
            if let (Some(a), Some(b)) = (c0, process_cpu_seconds()) {
                cpu.push(b - a);
            }
        }
    }
    Ok((times, cpu))
}

fn row(name: &str, spec: &str, o: &Options, device: &str, t: Vec<f64>) -> BenchRecord {
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
    .quant(spec)
    .samples(t)
    .per_second(1.0, "CEM steps/s")
}

/// One CEM step of the model `name` on the session's GPU (if any) and on the CPU backend (if
/// the session times CPU rows), each through the application layer's backend dispatch.
pub fn run(s: &mut Session, m: &LoadedModel, name: &str, o: &Options) -> Result<()> {
    let w = m.weights();
    let spec = m.spec();
    let reps = s.reps;
    let mut gpu_row = None;
    if let Some(ctx) = s.gpu.take() {
        let gpu = Backend::Gpu(std::sync::Arc::new(ctx));
        let t = gpu
            .with_plan_model(m, o.horizon, 1.0, |pm| time_steps(pm, w, o, reps))
            .map(|t| t.0);
        let Backend::Gpu(ctx) = gpu else {
            unreachable!("built as Backend::Gpu above")
        };
        let peak = ctx.pool_stats().peak_bytes;
        // The model was dropped with the call: the context is this Arc's alone again.
        s.gpu = std::sync::Arc::into_inner(ctx);
        let r = row(name, &spec, o, "gpu", t?).extra("gpu_peak_bytes", peak);
        s.context
            .insert("gpu_seconds_per_cem_step".into(), r.median_s.into());
        gpu_row = Some(r);
    }
    if s.cpu {
        // The peak from here on: the CPU model built from the loaded one, then the steps.
        let reset = reset_peak_rss();
        let (t, cpu) =
            Backend::Cpu.with_plan_model(m, o.horizon, 1.0, |pm| time_steps(pm, w, o, reps))?;
        let mut c = row(name, &spec, o, "cpu", t);
        // Weight-only linears on int8 inputs (`QWM_CPU_WEIGHT_ONLY=int8`) are other numerics
        // than the spec's own: a row of their own, named so.
        if Backend::int8_weight_only(m)? {
            c.name.push_str(" (weight-only on int8 inputs)");
            c = c.extra("cpu_weight_only", "int8");
        }
        let cpu_median = (!cpu.is_empty()).then(|| super::record::Stats::of(&cpu).median);
        if let Some(m) = cpu_median {
            c = c.extra("process_cpu_s_median", m);
        }
        if let Some(rss) = peak_rss_bytes() {
            c = c
                .extra("peak_rss_bytes", rss)
                .extra("peak_rss_since_load", reset);
        }
        c = c.extra(
            "model_weight_bytes",
            m.weights()
                .tensors
                .values()
                .map(|t| t.data.len() * 4)
                .sum::<usize>()
                + m.quant().map_or(0, |q| q.linear_bytes().0),
        );
        s.context
            .insert("cpu_seconds_per_cem_step".into(), c.median_s.into());
        if let Some(p) = &o.torch {
            let x = p.seconds_per_cem_step / c.median_s;
            c = c
                .extra("torch_peer", p.peer.clone())
                .extra("torch_seconds_per_cem_step", p.seconds_per_cem_step)
                .extra("x_torch", x);
            s.context.insert("x_torch".into(), x.into());
            // The same ratio in process CPU seconds (less sensitive to other processes).
            if let (Some(t), Some(q)) = (p.cpu_seconds_per_cem_step, cpu_median) {
                c = c
                    .extra("torch_process_cpu_s", t)
                    .extra("x_torch_cpu", t / q);
            }
        }
        if let Some(g) = gpu_row.as_mut() {
            g.reference = Some(format!("{} (cpu)", c.key()));
            g.x_reference = Some(c.median_s / g.median_s);
        }
        s.records.extend(gpu_row.take());
        s.push(c);
    }
    s.records.extend(gpu_row);
    s.context.insert("quant".into(), spec.into());
    Ok(())
}
