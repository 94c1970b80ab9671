//! `qwm plan` (one MPC episode with a progress display, a PNG strip and a JSON log) and
//! `qwm eval` (many episodes, resumable JSON report).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::app::{
    BackendChoice, Event, LoadedModel, ModelRequest, ModelSource, PlanSettings, Session,
    SessionOptions,
};
use crate::plan::{CemStd, SuccessCheck};
use crate::quant::QuantSpec;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The GPU when a hardware adapter exists; on software rasterizers (lavapipe) the CPU
    /// backend, which is several times faster there.
    Auto,
    Gpu,
    Cpu,
}

impl From<Backend> for BackendChoice {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Auto => BackendChoice::Auto,
            Backend::Gpu => BackendChoice::Gpu,
            Backend::Cpu => BackendChoice::Cpu,
        }
    }
}

fn defaults() -> (PlanSettings, ModelRequest) {
    (PlanSettings::default(), ModelRequest::default())
}

/// Options shared by `plan` and `eval`.
#[derive(Args, Debug, Clone)]
pub struct PlanOpts {
    /// Environment: wall, pointmaze, pusht.
    #[arg(long)]
    pub env: String,
    /// Model file (default: assets/<env>.safetensors). `random` builds an untrained tiny model
    /// in memory: it exercises the whole pipeline, it is not expected to succeed.
    #[arg(long)]
    pub model: Option<String>,
    /// Quantization applied on load (docs/QUANT.md), e.g. w8, w4g32, w8a8t, enc=w8,pred=w4g32.
    /// Static activation specs are calibrated first. A quantized model file needs none. On the
    /// CPU, `QWM_CPU_WEIGHT_ONLY=int8` runs weight-only specs on int8 inputs (faster, not the
    /// spec's exact numerics; docs/QUANT.md).
    #[arg(long, default_value_t = defaults().1.quant)]
    pub quant: String,
    /// Quantization method for --quant: rtn, omse, awq, gptq, gptq:act-order, omniquant,
    /// smoothquant[:alpha=A] (docs/QUANT.md).
    #[arg(long, default_value_t = defaults().1.method)]
    pub method: String,
    /// Calibration episodes (static activation ranges; inputs for awq, gptq, omniquant,
    /// smoothquant).
    #[arg(long, default_value_t = defaults().1.calib_episodes)]
    pub calib_episodes: usize,
    /// Sampled input rows kept per linear in the calibration inputs.
    #[arg(long, default_value_t = defaults().1.calib_tokens)]
    pub calib_tokens: usize,
    /// Calibration inputs file, read if it exists, else captured and written (default: next
    /// to the model, NAME.calib.safetensors; none for --model random).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// Planner: cem or mppi.
    #[arg(long, default_value_t = defaults().0.planner)]
    pub planner: String,
    /// auto: a hardware GPU if there is one, else the CPU backend (faster than a software
    /// Vulkan driver); gpu: any adapter, lavapipe included; cpu: the candle reference.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: Backend,
    /// Planning horizon (model steps).
    #[arg(long, default_value_t = defaults().0.horizon)]
    pub horizon: usize,
    #[arg(long, default_value_t = defaults().0.samples)]
    pub samples: usize,
    #[arg(long, default_value_t = defaults().0.topk)]
    pub topk: usize,
    /// CEM/MPPI optimization steps per plan (DINO-WM: 10 for Wall and PointMaze, 30 PushT).
    #[arg(long)]
    pub opt_steps: Option<usize>,
    /// Maximum MPC iterations (DINO-WM: 50 for Wall and PointMaze, 30 PushT).
    #[arg(long)]
    pub max_iter: Option<usize>,
    /// Model steps executed per plan.
    #[arg(long, default_value_t = defaults().0.n_taken)]
    pub n_taken: usize,
    #[arg(long, default_value_t = defaults().0.var_scale)]
    pub var_scale: f32,
    #[arg(long, default_value_t = defaults().0.temperature)]
    pub temperature: f32,
    /// CEM's refitted std over the top-k: sample (divisor k - 1, DINO-WM's torch.std) or
    /// population (divisor k, qwm before 2026-12-02).
    #[arg(long, default_value = defaults().0.cem_std.name(), value_parser = parse_cem_std)]
    pub cem_std: CemStd,
    /// When an episode's success is checked: after-plan (DINO-WM: at least one plan, then only
    /// after each plan's executed actions) or every-step (at the start and after every env
    /// step, mid-plan included: qwm's rule before 2026-12-04, lenient to a model whose plans
    /// pass the goal without stopping on it).
    #[arg(long, default_value = defaults().0.success_check.name(), value_parser = parse_success_check)]
    pub success_check: SuccessCheck,
}

fn parse_cem_std(s: &str) -> Result<CemStd, String> {
    CemStd::parse(s).map_err(|e| e.to_string())
}

fn parse_success_check(s: &str) -> Result<SuccessCheck, String> {
    SuccessCheck::parse(s).map_err(|e| e.to_string())
}

impl PlanOpts {
    pub(crate) fn session_options(&self) -> SessionOptions {
        SessionOptions {
            env: self.env.clone(),
            model: ModelRequest {
                source: ModelSource::from_flag(self.model.as_deref()),
                quant: self.quant.clone(),
                method: self.method.clone(),
                calib_episodes: self.calib_episodes,
                calib_tokens: self.calib_tokens,
                calib: self.calib.clone(),
            },
            backend: self.backend.into(),
            plan: PlanSettings {
                planner: self.planner.clone(),
                horizon: self.horizon,
                samples: self.samples,
                topk: self.topk,
                opt_steps: self.opt_steps,
                max_iter: self.max_iter,
                n_taken: self.n_taken,
                var_scale: self.var_scale,
                temperature: self.temperature,
                cem_std: self.cem_std,
                success_check: self.success_check,
            },
        }
    }
}

/// Prints a session's notices and model line to stderr.
fn print_notices(e: &Event) {
    match e {
        Event::Notice(m) => eprintln!("{m}"),
        Event::ModelLoaded { name, config } => eprintln!("model: {name} ({})", config.name),
        _ => {}
    }
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub opts: PlanOpts,
    /// Seed of the start/goal pair and of the planner.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Directory for strip.png (real vs imagined frames) and plan.json.
    #[arg(long, default_value = "out/plan")]
    pub out: PathBuf,
    /// Record a trace for `qwm view` into this directory instead (docs/TRACE.md).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// With --trace: a second quantization of the model planning the same episode and seed.
    #[arg(long, requires = "trace")]
    pub compare: Option<String>,
}

pub fn run_plan(a: PlanArgs) -> anyhow::Result<()> {
    if let Some(dir) = &a.trace {
        return super::view_cmds::plan_trace(&a.opts, a.seed, a.compare.as_deref(), dir);
    }
    let mut session = Session::open(&a.opts.session_options(), &mut print_notices)?;
    std::fs::create_dir_all(&a.out).map_err(|e| crate::Error::io(&a.out, e))?;
    let env_name = session.env_spec().name;
    let mut n = 0;
    let run = session.plan_episode(a.seed, true, &mut |e: &Event| match e {
        Event::EpisodeStarted {
            seed,
            planner,
            plan: pc,
            mpc,
            ..
        } => eprintln!(
            "planning {} seed {seed} with {planner} ({} samples, top {}, {} opt steps, horizon {}), up to {} MPC iterations",
            env_name, pc.samples, pc.topk, pc.opt_steps, pc.horizon, mpc.max_iters
        ),
        Event::MpcIteration { iter: it, .. } => {
            n += 1;
            eprintln!(
                "  MPC iteration {n:>3}: best cost {:>10.5}  distance to goal {:>8.3}  plan {:.2} s",
                it.best_cost, it.state_distance, it.plan_seconds
            );
        }
        _ => {}
    })?;
    let rec = &run.record;
    eprintln!(
        "{} after {} MPC iterations; final distance {:.3} (success below {})",
        if rec.success {
            "SUCCESS"
        } else {
            "not reached"
        },
        rec.iterations,
        rec.final_state_distance,
        session.env_spec().success_threshold
    );
    let strip = a.out.join("strip.png");
    if let Some(s) = &run.strip {
        s.save_png(&strip)?;
    }
    let json = a.out.join("plan.json");
    crate::io::write_atomic(
        &json,
        serde_json::to_string_pretty(&run.log_json())?.as_bytes(),
    )?;
    eprintln!("wrote {} and {}", strip.display(), json.display());
    Ok(())
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub opts: PlanOpts,
    #[arg(long, default_value_t = 50)]
    pub episodes: usize,
    /// JSON report, rewritten after every episode; an existing report with the same settings
    /// is resumed.
    #[arg(long)]
    pub json: PathBuf,
    /// Record traces for `qwm view` of the episodes in --trace-episodes into DIR/episode<i>
    /// instead of evaluating (the same seeds the evaluation plans them with; docs/TRACE.md).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Comma-separated evaluation episode indices to trace (with --trace).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub trace_episodes: Vec<usize>,
}

pub fn run_eval_cmd(a: EvalArgs) -> anyhow::Result<()> {
    if let Some(dir) = &a.trace {
        for &i in &a.trace_episodes {
            crate::limits::check_range("--trace-episodes", i, 0, crate::limits::MAX_EPISODES - 1)?;
        }
        for &i in &a.trace_episodes {
            let seed = crate::plan::eval::eval_seed(i);
            super::view_cmds::plan_trace(&a.opts, seed, None, &dir.join(format!("episode{i}")))?;
        }
        return Ok(());
    }
    // A bad --episodes or --json (missing directory, device node, a report another process is
    // writing) fails now, not after loading and calibrating; evaluate() takes the lock for good.
    crate::limits::check_range("--episodes", a.episodes, 1, crate::limits::MAX_EPISODES)?;
    drop(crate::plan::eval::ReportFile::open(&a.json, "--json")?);
    // The report holds the model's name; eval prints no model line.
    let mut session = Session::open(&a.opts.session_options(), &mut |e: &Event| {
        if let Event::Notice(m) = e {
            eprintln!("{m}")
        }
    })?;
    let bar = indicatif::ProgressBar::new(a.episodes as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} episodes {msg} [{elapsed} < {eta}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut ok = 0;
    let report = session.evaluate(a.episodes, Some(&a.json), &mut |e: &Event| {
        if let Event::EpisodeFinished { index, record } = e {
            ok += record.success as usize;
            bar.set_position(*index as u64 + 1);
            bar.set_message(format!("{ok} successes"));
        }
    })?;
    bar.finish();
    println!(
        "{}: success {:.3} (95% CI {:.3}-{:.3}) over {} episodes; mean final distance {:.3}; \
         median plan time {:.3} s; Spearman(objective, distance) {}",
        report.config.env,
        report.success_rate,
        report.success_ci95[0],
        report.success_ci95[1],
        report.finished,
        report.mean_state_dist,
        report.plan_seconds_median.unwrap_or(f64::NAN),
        report
            .spearman_objective_vs_distance
            .map_or("n/a".into(), |r| format!("{r:.3}"))
    );
    if let Some(d) = report.latent_divergence {
        println!("latent divergence from the float model: {d:.4e}");
    }
    let stored = crate::plan::eval::read_report(&a.json).map_or(0, |r| r.finished);
    if stored > report.finished {
        eprintln!(
            "{} holds {stored} finished episodes; this summary covers the first {} (--episodes) \
             and the file keeps all {stored}",
            a.json.display(),
            report.finished
        );
    }
    println!("wrote {}", a.json.display());
    Ok(())
}

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// --model, --env (for calibration), --quant, --method, --calib-episodes and the planner
    /// settings used while calibrating.
    #[command(flatten)]
    pub opts: PlanOpts,
    /// Output path of the quantized model file.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run_quantize(a: QuantizeArgs) -> anyhow::Result<()> {
    if QuantSpec::default() == a.opts.quant.parse::<QuantSpec>()? {
        anyhow::bail!("--quant fp leaves nothing to quantize; give a spec such as w8 or w4g32a8");
    }
    // A path that cannot be written as a regular file fails before calibration, not after.
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    }
    crate::io::check_output(&a.out, "--out")?;
    let o = a.opts.session_options();
    let env = crate::env::make(&o.env)?;
    let l = LoadedModel::open(&o.model, env.as_ref(), &o.plan, &mut print_notices)?;
    let q = l
        .quant()
        .ok_or_else(|| anyhow::anyhow!("--quant {}: nothing was quantized", a.opts.quant))?;
    crate::model::quantized::save(q, &a.out)?;
    let (qb, fb) = q.linear_bytes();
    println!(
        "wrote {} ({}, method {}): quantized linears {} bytes = {:.4} of their f32 {} bytes",
        a.out.display(),
        q.spec,
        q.method,
        qb,
        qb as f64 / fb.max(1) as f64,
        fb
    );
    Ok(())
}
