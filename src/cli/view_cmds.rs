//! `qwm view` (replay a trace, plan live, export a GIF) and the traced planning behind
//! `qwm plan --trace DIR`, `qwm eval --trace DIR` and the live viewer: load the model (and a
//! compared quantization of it), then record each run's episode with
//! [`crate::trace::record`], sending [`Msg`]s to a writer or to the viewer.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;

use super::plan_cmds::{load_model, open_backend, Backend, Loaded, PlanOpts};
use crate::env::{self, Env};
use crate::model::{CpuModel, GpuModel, WorldModel};
use crate::plan;
use crate::trace::record::{is_stopped, record_episode, Control, EpisodeSetup, Event, RunModels};
use crate::trace::{RunMeta, TraceMeta, TraceWriter, FORMAT_NAME, FORMAT_VERSION};
use crate::viewer::live::{JobFn, LiveRequest, Msg};
use crate::viewer::{self, ViewerApp, WindowOptions};

#[derive(Args, Debug)]
pub struct ViewArgs {
    /// A trace directory written by `qwm plan --trace DIR` (replay). Without it, --env plans live.
    pub trace: Option<PathBuf>,
    /// Plan live in this environment (wall, pointmaze, pusht).
    #[arg(long)]
    pub env: Option<String>,
    /// Model file (default: assets/<env>.safetensors).
    #[arg(long)]
    pub model: Option<String>,
    /// Quantization of the live model (docs/QUANT.md).
    #[arg(long, default_value = "fp")]
    pub quant: String,
    /// A second quantization of the same model planning the same episode and seed, shown in
    /// its own column with the divergence between the two.
    #[arg(long)]
    pub compare: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: Backend,
    /// CEM samples per optimization step (live).
    #[arg(long, default_value_t = 300)]
    pub samples: usize,
    #[arg(long)]
    pub opt_steps: Option<usize>,
    #[arg(long)]
    pub max_iter: Option<usize>,
    /// Write a PNG of the laid-out window and exit (needs a display; CI uses xvfb-run).
    #[arg(long)]
    pub screenshot: Option<PathBuf>,
    /// Write the trace's episode as an animated GIF and exit, without a window.
    #[arg(long)]
    pub gif: Option<PathBuf>,
    /// Frame-time benchmark: measure this many frames while the live plan runs, print, exit.
    #[arg(long)]
    pub bench_frames: Option<usize>,
}

impl ViewArgs {
    fn plan_opts(&self, env: &str) -> PlanOpts {
        PlanOpts {
            env: env.to_string(),
            model: self.model.clone(),
            quant: self.quant.clone(),
            method: "rtn".into(),
            calib_episodes: 8,
            planner: "cem".into(),
            backend: self.backend,
            horizon: 5,
            samples: self.samples,
            topk: 30.min(self.samples),
            opt_steps: self.opt_steps,
            max_iter: self.max_iter,
            n_taken: 5,
            var_scale: 1.0,
            temperature: 0.5,
        }
    }
}

pub fn run_view(a: ViewArgs) -> anyhow::Result<()> {
    let win = WindowOptions {
        screenshot: a.screenshot.clone(),
        bench_frames: a.bench_frames,
        size: None,
    };
    if let Some(dir) = &a.trace {
        if a.env.is_some() {
            anyhow::bail!("pass either a trace directory (replay) or --env (live), not both");
        }
        let trace = crate::trace::load(dir)?;
        if let Some(gif) = &a.gif {
            viewer::export::episode_gif(&trace, gif)?;
            eprintln!("wrote {} ({} MPC iterations)", gif.display(), trace.max_iters());
            return Ok(());
        }
        let dir = dir.clone();
        viewer::run_window(win, Box::new(move |_| ViewerApp::replay(trace, dir)))?;
        return Ok(());
    }
    let Some(env_name) = a.env.clone() else {
        anyhow::bail!(
            "pass a trace directory (`qwm view DIR`, recorded with `qwm plan --trace DIR`) or \
             --env ENV to plan live"
        );
    };
    if a.gif.is_some() {
        anyhow::bail!("--gif exports a recorded trace: `qwm view DIR --gif OUT.gif`");
    }
    env::make(&env_name)?;
    let opts = a.plan_opts(&env_name);
    plan::make(&opts.planner, opts.configs(10, a.seed).0)?;
    let job: JobFn = Arc::new(move |req: LiveRequest, control: Arc<Control>, tx: Sender<Msg>| {
        let mut o = opts.clone();
        o.quant = req.quant.clone();
        o.model = req.model.clone();
        let r = record_trace(&o, req.seed, req.compare.as_deref(), Some(&*control), &mut |m| {
            tx.send(m).map_err(|_| anyhow::anyhow!("the viewer closed"))
        });
        if let Err(e) = r {
            // Before any run started (model loading): report it as run 0's end.
            let _ = tx.send(Msg::Done(0, Err(format!("{e:#}"))));
        }
    });
    let req = LiveRequest {
        env: env_name,
        model: a.model.clone(),
        quant: a.quant.clone(),
        compare: a.compare.clone(),
        seed: a.seed,
    };
    viewer::run_window(win, Box::new(move |wake| ViewerApp::live(job, req, wake)))?;
    Ok(())
}

/// `qwm plan --trace DIR`: record the episode (and the compared model's) into `dir`.
pub fn plan_trace(opts: &PlanOpts, seed: u64, compare: Option<&str>, dir: &Path) -> anyhow::Result<()> {
    let mut writer: Option<(TraceWriter, TraceMeta)> = None;
    let t0 = Instant::now();
    record_trace(opts, seed, compare, None, &mut |m| {
        match m {
            Msg::Meta(meta, goal) => {
                let w = TraceWriter::create(dir, &goal)?;
                w.write_meta(&meta)?;
                writer = Some((w, *meta));
            }
            Msg::Run(r, rm) => {
                let (w, meta) = writer.as_mut().expect("meta first");
                meta.runs[r] = *rm;
                w.write_meta(meta)?;
            }
            Msg::Event(Event::Iter { run, iter }) => {
                let (w, meta) = writer.as_mut().expect("meta first");
                w.write_iter(run, &iter)?;
                let m = &iter.meta;
                eprintln!(
                    "  run {run} MPC iteration {:>3}: plan objective {:>9.4}  distance {:>8.3}  plan {:.2} s  trace {:.2} s",
                    m.index + 1,
                    m.plan_cost,
                    m.distance,
                    m.plan_seconds,
                    m.record_seconds
                );
                meta.runs[run].iterations.push(iter.meta);
                w.write_meta(meta)?;
            }
            Msg::Event(Event::OptStep { .. }) => {}
            Msg::Done(r, res) => {
                let (w, meta) = writer.as_mut().expect("meta first");
                let ok = res.map_err(anyhow::Error::msg)?;
                meta.runs[r].finished = true;
                meta.runs[r].success = ok;
                w.write_meta(meta)?;
                eprintln!(
                    "run {r} ({}): {} after {} MPC iterations",
                    meta.runs[r].label,
                    if ok { "SUCCESS" } else { "not reached" },
                    meta.runs[r].iterations.len()
                );
            }
        }
        Ok(())
    })?;
    eprintln!("wrote trace {} in {:.1} s; view it with `qwm view {}`", dir.display(), t0.elapsed().as_secs_f64(), dir.display());
    Ok(())
}

fn run_meta(l: &Loaded, label: &str, backend: &str, adapter: &str, secs: f64) -> RunMeta {
    let c = &l.weights.config;
    RunMeta {
        label: label.to_string(),
        model: l.name.clone(),
        quant: l.spec(),
        backend: backend.to_string(),
        adapter: adapter.to_string(),
        linear_bytes: l.quant.as_ref().map(|q| {
            let (a, b) = q.linear_bytes();
            (a as u64, b as u64)
        }),
        load_seconds: secs,
        decoded_size: if c.decoder.is_some() { 16 * c.grid() } else { 0 },
        latent_shape: (c.patches(), c.visual_dim()),
        ..Default::default()
    }
}

/// Load the model(s), then record each run's episode, sending everything to `out`.
pub fn record_trace(
    opts: &PlanOpts,
    seed: u64,
    compare: Option<&str>,
    control: Option<&Control>,
    out: &mut dyn FnMut(Msg) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut env = env::make(&opts.env)?;
    let mut specs = vec![opts.quant.clone()];
    specs.extend(compare.map(str::to_string));
    let mut loaded = Vec::new();
    for s in &specs {
        let t = Instant::now();
        let o = PlanOpts {
            quant: s.clone(),
            ..opts.clone()
        };
        let l = load_model(&o, env.as_ref())?;
        loaded.push((l, t.elapsed().as_secs_f64()));
    }
    if loaded.len() == 2 && loaded[0].0.weights.config != loaded[1].0.weights.config {
        anyhow::bail!("--compare needs two quantizations of one model");
    }
    let w = &loaded[0].0.weights;
    let step = w.config.frameskip * w.config.action_dim;
    let (pc, mpc) = opts.configs(step, seed);
    let (start, goal) = env.sample_start_goal(seed);
    let size = w.config.image_size;
    let ctx = open_backend(opts.backend)?;
    let (backend, adapter) = match &ctx {
        Some(c) => ("gpu", c.report.name.clone()),
        None => ("cpu", String::new()),
    };
    let meta = TraceMeta {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        env: env.spec().name.to_string(),
        seed,
        planner: opts.planner.clone(),
        plan: pc.clone(),
        mpc: mpc.clone(),
        image_size: size,
        start: start.clone(),
        goal: goal.clone(),
        runs: loaded
            .iter()
            .zip(&specs)
            .map(|((l, s), spec)| run_meta(l, spec, backend, &adapter, *s))
            .collect(),
    };
    out(Msg::Meta(Box::new(meta.clone()), env.render_state(&goal, size)?))?;
    let task = plan::Task {
        seed,
        start: &start,
        goal: &goal,
    };
    match &ctx {
        Some(c) => {
            let models = loaded
                .iter()
                .map(|(l, _)| match &l.quant {
                    Some(q) => GpuModel::new_quantized(c, q),
                    None => GpuModel::new(c, &l.weights),
                })
                .collect::<crate::Result<Vec<_>>>()?;
            record_runs(&models, &loaded, &meta, env.as_mut(), opts, task, control, out)
        }
        None => {
            let models = loaded
                .iter()
                .map(|(l, _)| match &l.quant {
                    Some(q) => CpuModel::new_quantized(q),
                    None => CpuModel::new(&l.weights),
                })
                .collect::<crate::Result<Vec<_>>>()?;
            record_runs(&models, &loaded, &meta, env.as_mut(), opts, task, control, out)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn record_runs<M: WorldModel>(
    models: &[M],
    loaded: &[(Loaded, f64)],
    meta: &TraceMeta,
    env: &mut dyn Env,
    opts: &PlanOpts,
    task: plan::Task,
    control: Option<&Control>,
    out: &mut dyn FnMut(Msg) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let alpha = env.spec().alpha;
    for (r, m) in models.iter().enumerate() {
        out(Msg::Run(r, Box::new(meta.runs[r].clone())))?;
        let other = (models.len() == 2).then(|| (&models[1 - r], loaded[1 - r].0.weights.norm.clone()));
        let rm = RunModels {
            model: m,
            norm: loaded[r].0.weights.norm.clone(),
            other,
        };
        let setup = EpisodeSetup {
            run: r,
            mpc: &meta.mpc,
            task,
            topk: meta.plan.topk,
            horizon: meta.plan.horizon,
            alpha,
        };
        let mut planner = plan::make(&opts.planner, meta.plan.clone())?;
        let mut sink_err = None;
        let res = record_episode(env, &rm, planner.as_mut(), &setup, control, &mut |e| {
            out(Msg::Event(e)).map_err(|err| {
                let msg = format!("{err:#}");
                sink_err = Some(err);
                crate::Error::Invalid(msg)
            })
        });
        if let Some(e) = sink_err {
            return Err(e);
        }
        let stopped = matches!(&res, Err(e) if is_stopped(e));
        out(Msg::Done(
            r,
            res.map(|rec| rec.success).map_err(|e| {
                if is_stopped(&e) {
                    "stopped".to_string()
                } else {
                    e.to_string()
                }
            }),
        ))?;
        if stopped {
            break;
        }
    }
    Ok(())
}
