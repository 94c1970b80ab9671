//! `qwm view` (replay a trace, plan live, export a GIF) and the traced planning behind
//! `qwm plan --trace DIR`, `qwm eval --trace DIR` and the live viewer: load the model (and a
//! compared quantization of it), then record each run's episode with
//! [`crate::trace::record`], sending [`Msg`]s to a writer or to the viewer.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;

use super::plan_cmds::{Backend as BackendFlag, PlanOpts};
use crate::app::{self, Backend, LoadedModel, ModelRequest};
use crate::env::{self, Env};
use crate::gpu::GpuContext;
use crate::plan;
use crate::plan::world::WorldPlan;
use crate::trace::record::{is_stopped, record_episode, Control, EpisodeSetup, Event};
use crate::trace::{RunMeta, TraceMeta, TraceWriter, FORMAT_NAME, FORMAT_VERSION};
use crate::viewer::device::{PlanBackend, PlanDevice};
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
    pub backend: BackendFlag,
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
    /// Niceness added to the live planner's threads (Linux), so that the window's drawing
    /// (on a software renderer, CPU work too) comes first: 0 plans at the UI's priority.
    #[arg(long, default_value_t = 10)]
    pub plan_nice: i32,
}

/// Lower the calling thread's scheduling priority by `by` nice levels (Linux: niceness is per
/// thread, and the threads it spawns, the planner's rayon pool included, inherit it).
fn lower_thread_priority(by: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if by > 0 {
        // SAFETY: plain system calls on the calling thread's id.
        unsafe {
            let tid = libc::gettid() as libc::id_t;
            let now = libc::getpriority(libc::PRIO_PROCESS, tid);
            libc::setpriority(libc::PRIO_PROCESS, tid, (now + by).min(19));
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = by;
}

impl ViewArgs {
    fn plan_opts(&self, env: &str) -> PlanOpts {
        PlanOpts {
            env: env.to_string(),
            model: self.model.clone(),
            quant: self.quant.clone(),
            method: "rtn".into(),
            calib_episodes: 8,
            calib_tokens: crate::quant::calib_data::DEFAULT_TOKENS,
            calib: None,
            cem_std: crate::plan::CemStd::default(),
            success_check: crate::plan::SuccessCheck::default(),
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
        planning: None,
    };
    if let Some(dir) = &a.trace {
        if a.env.is_some() {
            anyhow::bail!("pass either a trace directory (replay) or --env (live), not both");
        }
        if let Some(gif) = &a.gif {
            // A device node or FIFO is refused before the trace is read, not replaced.
            crate::io::check_output(gif, "--gif")?;
        }
        if let Some(png) = &a.screenshot {
            crate::io::check_output(png, "--screenshot")?;
        }
        let trace = crate::trace::load(dir)?;
        if let Some(gif) = &a.gif {
            viewer::export::episode_gif(&trace, gif)?;
            eprintln!(
                "wrote {} ({} MPC iterations)",
                gif.display(),
                trace.max_iters()
            );
            return Ok(());
        }
        let dir = dir.clone();
        viewer::run_window(win, Box::new(move |_, _| ViewerApp::replay(trace, dir)))?;
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
    let opts = a.plan_opts(&env_name);
    // Refuse bad settings before the window opens.
    opts.session_options()
        .plan
        .validate(env::make(&env_name)?.spec())?;
    let nice = a.plan_nice;
    if !(0..=19).contains(&nice) {
        anyhow::bail!("--plan-nice {nice}: must be between 0 and 19");
    }
    // The job is made once the window exists: it plans on the window's device when the
    // window shares it (`viewer::device`).
    let make_job = move |shared: Option<Arc<GpuContext>>| -> JobFn {
        Arc::new(
            move |req: LiveRequest, control: Arc<Control>, tx: Sender<Msg>| {
                lower_thread_priority(nice);
                // The planner's own rayon pool, spawned from this thread so its workers inherit
                // the lowered priority (the global pool may already exist at the UI's).
                let pool = match rayon::ThreadPoolBuilder::new()
                    .thread_name(|i| format!("qwm-plan-{i}"))
                    .build()
                {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Msg::Done(0, Err(format!("planner threads: {e}"))));
                        return;
                    }
                };
                let mut o = opts.clone();
                o.quant = req.quant.clone();
                o.model = req.model.clone();
                // With a compared model each run plans on its own thread, so the two columns advance
                // together instead of one after the other.
                let job = |only: usize, tx: Sender<Msg>| {
                    let r = record_trace(
                        &o,
                        req.seed,
                        req.compare.as_deref(),
                        shared.clone(),
                        Some(&*control),
                        Some(only),
                        &mut |m| tx.send(m).map_err(|_| anyhow::anyhow!("the viewer closed")),
                    );
                    if let Err(e) = r {
                        let _ = tx.send(Msg::Done(only, Err(format!("{e:#}"))));
                    }
                };
                std::thread::scope(|s| {
                    if req.compare.is_some() {
                        let tx1 = tx.clone();
                        s.spawn(|| pool.install(|| job(1, tx1)));
                    }
                    pool.install(|| job(0, tx.clone()));
                });
            },
        )
    };
    let req = LiveRequest {
        env: env_name,
        model: a.model.clone(),
        quant: a.quant.clone(),
        compare: a.compare.clone(),
        seed: a.seed,
    };
    let win = WindowOptions {
        planning: Some(match a.backend {
            BackendFlag::Auto => PlanBackend::Auto,
            BackendFlag::Gpu => PlanBackend::Gpu,
            BackendFlag::Cpu => PlanBackend::Cpu,
        }),
        ..win
    };
    viewer::run_window(
        win,
        Box::new(move |wake, dev: Option<PlanDevice>| {
            let job = make_job(dev.and_then(|d| d.shared()));
            ViewerApp::live(job, req, wake)
        }),
    )?;
    Ok(())
}

/// `qwm plan --trace DIR`: record the episode (and the compared model's) into `dir`.
pub fn plan_trace(
    opts: &PlanOpts,
    seed: u64,
    compare: Option<&str>,
    dir: &Path,
) -> anyhow::Result<()> {
    let mut writer: Option<(TraceWriter, TraceMeta)> = None;
    let t0 = Instant::now();
    record_trace(opts, seed, compare, None, None, None, &mut |m| {
        match m {
            Msg::Meta(meta, goal) => {
                let w = TraceWriter::create(dir, &goal)?;
                w.write_meta(&meta)?;
                writer = Some((w, *meta));
            }
            Msg::Run(r, rm) => {
                let (w, meta) = writer.as_mut().ok_or_else(meta_missing)?;
                meta.runs[r] = *rm;
                w.write_meta(meta)?;
            }
            Msg::Event(Event::Iter { run, iter }) => {
                let (w, meta) = writer.as_mut().ok_or_else(meta_missing)?;
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
                let (w, meta) = writer.as_mut().ok_or_else(meta_missing)?;
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
    eprintln!(
        "wrote trace {} in {:.1} s; view it with `qwm view {}`",
        dir.display(),
        t0.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(())
}

fn run_meta(l: &LoadedModel, label: &str, backend: &str, adapter: &str, secs: f64) -> RunMeta {
    let c = &l.weights().config;
    RunMeta {
        label: label.to_string(),
        model: l.name.clone(),
        quant: l.spec(),
        backend: backend.to_string(),
        adapter: adapter.to_string(),
        linear_bytes: l.quant().map(|q| {
            let (a, b) = q.linear_bytes();
            (a as u64, b as u64)
        }),
        load_seconds: secs,
        decoded_size: if c.decoder.is_some() {
            16 * c.grid()
        } else {
            0
        },
        latent_shape: (c.patches(), c.visual_dim()),
        ..Default::default()
    }
}

/// Load the model(s) through the application layer, then record each run's episode (or only
/// run `only`, for a caller that runs them on threads of its own), sending everything to
/// `out`. With `shared`, the GPU backend runs on that context (the viewer window's device)
/// instead of opening the backend `opts` asks for.
pub fn record_trace(
    opts: &PlanOpts,
    seed: u64,
    compare: Option<&str>,
    shared: Option<Arc<GpuContext>>,
    control: Option<&Control>,
    only: Option<usize>,
    out: &mut dyn FnMut(Msg) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let so = opts.session_options();
    let env = env::make(&so.env)?;
    so.plan.validate(env.spec())?;
    let mut notice = |e: &app::Event| {
        if let app::Event::Notice(m) = e {
            eprintln!("{m}");
        }
    };
    let mut specs = vec![so.model.quant.clone()];
    specs.extend(compare.map(str::to_string));
    let mut loaded = Vec::new();
    for s in &specs {
        let t = Instant::now();
        let req = ModelRequest {
            quant: s.clone(),
            ..so.model.clone()
        };
        let l = LoadedModel::open(&req, env.as_ref(), &so.plan, &mut notice)?;
        loaded.push((l, t.elapsed().as_secs_f64()));
    }
    if loaded.len() == 2 && loaded[0].0.weights().config != loaded[1].0.weights().config {
        anyhow::bail!("--compare needs two quantizations of one model");
    }
    let (pc, mpc) = so.plan.configs(env.spec(), loaded[0].0.step_dim(), seed);
    let (start, goal) = env.sample_start_goal(seed);
    let size = loaded[0].0.weights().config.image_size;
    let backend = match shared {
        Some(ctx) => Backend::shared(ctx, &mut notice),
        None => Backend::open(so.backend, &mut notice),
    };
    let adapter = backend
        .gpu()
        .map_or(String::new(), |c| c.report.name.clone());
    let meta = TraceMeta {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        env: env.spec().name.to_string(),
        seed,
        planner: so.plan.planner.clone(),
        plan: pc.clone(),
        mpc,
        image_size: size,
        start: start.clone(),
        goal: goal.clone(),
        runs: loaded
            .iter()
            .zip(&specs)
            .map(|((l, s), spec)| run_meta(l, spec, backend.name(), &adapter, *s))
            .collect(),
    };
    out(Msg::Meta(
        Box::new(meta.clone()),
        env.render_state(&goal, size)?,
    ))?;
    let task = plan::Task {
        seed,
        start: &start,
        goal: &goal,
    };
    let rec = Recording {
        meta: &meta,
        planner: &so.plan.planner,
        task,
        control,
    };
    let alpha = env.spec().alpha;
    let h = pc.horizon;
    let mut env = env;
    // The sink's own errors (a closed viewer, a full disk) pass through the backend call as
    // this slot.
    let mut failed: Option<anyhow::Error> = None;
    let mut out = |m: Msg| -> crate::Result<()> {
        out(m).map_err(|e| {
            let msg = format!("{e:#}");
            failed = Some(e);
            crate::Error::Invalid(msg)
        })
    };
    let wants = |r: usize| only.is_none_or(|o| o == r);
    let res = backend.with_plan_model(&loaded[0].0, h, alpha, |pm0| match loaded.get(1) {
        None => rec.run(0, env.as_mut(), pm0, None, &mut out).map(|_| ()),
        Some((l1, _)) => backend.with_plan_model(l1, h, alpha, |pm1| {
            let mut go = true;
            if wants(0) {
                go = rec.run(0, env.as_mut(), &mut *pm0, Some(&mut *pm1), &mut out)?;
            }
            if wants(1) && go {
                rec.run(1, env.as_mut(), &mut *pm1, Some(&mut *pm0), &mut out)?;
            }
            Ok(())
        }),
    });
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(res?)
}

/// What every run of one recording shares.
struct Recording<'a> {
    meta: &'a TraceMeta,
    planner: &'a str,
    task: plan::Task<'a>,
    control: Option<&'a Control>,
}

impl Recording<'_> {
    /// Record run `r`; false when it was stopped (no later run starts).
    fn run<'d>(
        &self,
        r: usize,
        env: &mut dyn Env,
        pm: &mut dyn WorldPlan,
        other: Option<&mut (dyn WorldPlan + 'd)>,
        out: &mut dyn FnMut(Msg) -> crate::Result<()>,
    ) -> crate::Result<bool> {
        out(Msg::Run(r, Box::new(self.meta.runs[r].clone())))?;
        let setup = EpisodeSetup {
            run: r,
            mpc: &self.meta.mpc,
            task: self.task,
            topk: self.meta.plan.topk,
            horizon: self.meta.plan.horizon,
        };
        let mut planner = plan::make(self.planner, self.meta.plan.clone())?;
        let res = record_episode(
            env,
            pm,
            other,
            planner.as_mut(),
            &setup,
            self.control,
            &mut |e| out(Msg::Event(e)),
        );
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
        Ok(!stopped)
    }
}

/// The recorder sends a trace's metadata before any run or iteration of it; an event without
/// it is a bug, reported instead of a panic.
fn meta_missing() -> anyhow::Error {
    anyhow::anyhow!("internal error: a trace event arrived before the trace's metadata")
}
