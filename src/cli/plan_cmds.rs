//! `qwm plan` (one MPC episode with a progress display, a PNG strip and a JSON log) and
//! `qwm eval` (many episodes, resumable JSON report).

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::env::{self, Env, Frame};
use crate::gpu::GpuContext;
use crate::model::{self, CpuModel, GpuModel, ModelConfig, Weights, WorldModel};
use crate::plan::calibrate::calibrate;
use crate::plan::eval::{run_eval, EvalConfig};
use crate::plan::mpc::MpcIter;
use crate::plan::world::WorldPlanModel;
use crate::plan::{self, run_episode, MpcConfig, PlanConfig};
use crate::quant::model::{quantize_model, QuantizedModel};
use crate::quant::QuantSpec;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The GPU when a hardware adapter exists; on software rasterizers (lavapipe) the CPU
    /// backend, which is several times faster there.
    Auto,
    Gpu,
    Cpu,
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
    /// Static activation specs are calibrated first. A quantized model file needs none.
    #[arg(long, default_value = "fp")]
    pub quant: String,
    /// Quantization method for --quant: rtn or omse.
    #[arg(long, default_value = "rtn")]
    pub method: String,
    /// Calibration episodes for static activation quantization.
    #[arg(long, default_value_t = 8)]
    pub calib_episodes: usize,
    /// Planner: cem or mppi.
    #[arg(long, default_value = "cem")]
    pub planner: String,
    /// auto: a hardware GPU if there is one, else the CPU backend (faster than a software
    /// Vulkan driver); gpu: any adapter, lavapipe included; cpu: the candle reference.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: Backend,
    /// Planning horizon (model steps).
    #[arg(long, default_value_t = 5)]
    pub horizon: usize,
    #[arg(long, default_value_t = 300)]
    pub samples: usize,
    #[arg(long, default_value_t = 30)]
    pub topk: usize,
    /// CEM/MPPI optimization steps per plan (DINO-WM: 10 for Wall and PointMaze, 30 PushT).
    #[arg(long)]
    pub opt_steps: Option<usize>,
    /// Maximum MPC iterations (DINO-WM: 50 for Wall and PointMaze, 30 PushT).
    #[arg(long)]
    pub max_iter: Option<usize>,
    /// Model steps executed per plan.
    #[arg(long, default_value_t = 5)]
    pub n_taken: usize,
    #[arg(long, default_value_t = 1.0)]
    pub var_scale: f32,
    #[arg(long, default_value_t = 0.5)]
    pub temperature: f32,
}

fn env_defaults(env: &str) -> (usize, usize) {
    // (opt steps, max MPC iterations) as in DINO-WM's plan configs.
    if env == "pusht" {
        (30, 30)
    } else {
        (10, 50)
    }
}

impl PlanOpts {
    fn configs(&self, step_dim: usize, seed: u64) -> (PlanConfig, MpcConfig) {
        let (os, mi) = env_defaults(&self.env);
        (
            PlanConfig {
                horizon: self.horizon,
                step_dim,
                samples: self.samples,
                topk: self.topk,
                opt_steps: self.opt_steps.unwrap_or(os),
                var_scale: self.var_scale,
                temperature: self.temperature,
                seed,
            },
            MpcConfig {
                max_iters: self.max_iter.unwrap_or(mi),
                n_taken: self.n_taken,
            },
        )
    }
}

/// A float model, or a quantized one (packed weights on the GPU, fake quant on the CPU).
pub struct Loaded {
    pub weights: Weights,
    /// The float model a `--quant` spec was applied to (for divergence measures).
    pub float: Option<Weights>,
    pub quant: Option<QuantizedModel>,
    pub name: String,
    /// The file the model came from (`None` for `--model random`).
    pub file: Option<String>,
}

impl Loaded {
    pub fn spec(&self) -> String {
        self.quant
            .as_ref()
            .map_or("fp".to_string(), |q| q.spec.to_string())
    }
}

/// Load the model (quantizing it when asked) and check it fits the environment.
fn load_model(opts: &PlanOpts, env: &dyn Env) -> anyhow::Result<Loaded> {
    let spec: QuantSpec = opts.quant.parse()?;
    crate::quant::method(&opts.method)?;
    if let Some(p) = opts.model.as_deref() {
        if p != "random" && Path::new(p).exists() && crate::quant::model::is_quantized_file(p)? {
            if spec != QuantSpec::default() {
                anyhow::bail!("{p} is already quantized; drop --quant {spec}");
            }
            let q = crate::quant::model::load(p)?;
            check_fits(&q.weights, p, env)?;
            return Ok(Loaded {
                weights: q.weights.clone(),
                float: None,
                name: format!("{p} ({})", q.spec),
                quant: Some(q),
                file: Some(p.to_string()),
            });
        }
    }
    let (w, name, file) = load_float(opts, env)?;
    check_fits(&w, &name, env)?;
    if spec == QuantSpec::default() {
        return Ok(Loaded {
            weights: w,
            float: None,
            quant: None,
            name,
            file,
        });
    }
    let needs_calib = [spec.encoder, spec.predictor]
        .iter()
        .any(|m| m.act.is_some_and(|a| !a.dynamic));
    let stats = if needs_calib {
        eprintln!(
            "calibrating {spec}: float planner on {} calibration episodes",
            opts.calib_episodes
        );
        let step = w.config.frameskip * w.config.action_dim;
        let (pc, _) = opts.configs(step, 0);
        Some(calibrate(
            &w,
            env.spec().name,
            opts.calib_episodes,
            &pc,
            env.spec().alpha,
        )?)
    } else {
        None
    };
    let q = quantize_model(&w, &spec, &opts.method, stats.as_ref())?;
    let (qb, fb) = q.linear_bytes();
    eprintln!(
        "quantized {spec} with {}: linear layers {:.2} MB ({:.3} of f32)",
        q.method,
        qb as f64 / 1e6,
        qb as f64 / fb.max(1) as f64
    );
    Ok(Loaded {
        weights: q.weights.clone(),
        float: Some(w),
        name: format!("{name} ({spec} {})", q.method),
        quant: Some(q),
        file,
    })
}

fn check_fits(w: &Weights, name: &str, env: &dyn Env) -> anyhow::Result<()> {
    let c = &w.config;
    let s = env.spec();
    if c.action_dim != s.action_dim || c.proprio_dim != s.proprio_dim {
        anyhow::bail!(
            "model {name} plans {}-D actions with {}-D proprio but {} has {}-D actions and \
             {}-D proprio",
            c.action_dim,
            c.proprio_dim,
            s.name,
            s.action_dim,
            s.proprio_dim
        );
    }
    Ok(())
}

/// The float model, its display name and its file (`None` for `--model random`).
fn load_float(opts: &PlanOpts, env: &dyn Env) -> anyhow::Result<(Weights, String, Option<String>)> {
    match opts.model.as_deref() {
        Some("random") => {
            let s = env.spec();
            let mut cfg = ModelConfig::tiny();
            cfg.action_dim = s.action_dim;
            cfg.proprio_dim = s.proprio_dim;
            cfg.name = format!("random-tiny-{}", s.name);
            Ok((
                Weights::random(&cfg, 0)?,
                "random (untrained tiny model)".to_string(),
                None,
            ))
        }
        Some(p) => Ok((model::format::load(p)?, p.to_string(), Some(p.to_string()))),
        None => {
            let p = format!("assets/{}.safetensors", env.spec().name);
            if !Path::new(&p).exists() {
                let name = env.spec().name;
                // PushT's model trains for hours (docs/MODELS.md); the others ship.
                let train = if name == "pusht" {
                    "train it with `tools/train_pusht.sh` (resumable, docs/MODELS.md), "
                } else {
                    ""
                };
                anyhow::bail!(
                    "no model shipped for {name} ({p} is missing); {train}pass --model PATH, \
                     or --model random for an untrained model that exercises the pipeline"
                );
            }
            Ok((model::format::load(&p)?, p.clone(), Some(p)))
        }
    }
}

/// The GPU context, or `None` with a one-time notice when `--backend gpu` finds no adapter.
fn open_backend(b: Backend) -> anyhow::Result<Option<GpuContext>> {
    match b {
        Backend::Cpu => Ok(None),
        Backend::Auto => match GpuContext::new() {
            Ok(c) if c.report.device_type != "cpu" => {
                eprintln!("backend: gpu ({}, {})", c.report.name, c.report.backend);
                Ok(Some(c))
            }
            Ok(c) => {
                eprintln!(
                    "backend: cpu (the only adapter, {}, is a software rasterizer; \
                     --backend gpu uses it anyway)",
                    c.report.name
                );
                Ok(None)
            }
            Err(e) => {
                eprintln!("backend: cpu ({e}); continuing on the CPU backend");
                Ok(None)
            }
        },
        Backend::Gpu => match GpuContext::new() {
            Ok(c) => {
                eprintln!("backend: gpu ({}, {})", c.report.name, c.report.backend);
                Ok(Some(c))
            }
            Err(e) => {
                eprintln!("backend: cpu ({e}); continuing on the CPU backend");
                Ok(None)
            }
        },
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
}

pub fn run_plan(a: PlanArgs) -> anyhow::Result<()> {
    let env = env::make(&a.opts.env)?;
    let step_of = |w: &Weights| w.config.frameskip * w.config.action_dim;
    // Validate the planner settings before loading or calibrating anything.
    plan::make(&a.opts.planner, a.opts.configs(10, a.seed).0)?;
    let l = load_model(&a.opts, env.as_ref())?;
    let w = &l.weights;
    let (pc, mpc) = a.opts.configs(step_of(w), a.seed);
    std::fs::create_dir_all(&a.out).map_err(|e| crate::Error::io(&a.out, e))?;
    eprintln!("model: {} ({})", l.name, w.config.name);
    match open_backend(a.opts.backend)? {
        Some(ctx) => {
            let m = match &l.quant {
                Some(q) => GpuModel::new_quantized(&ctx, q)?,
                None => GpuModel::new(&ctx, w)?,
            };
            plan_with(&m, w, &a, env, pc, mpc, "gpu")
        }
        None => {
            let m = match &l.quant {
                Some(q) => CpuModel::new_quantized(q)?,
                None => CpuModel::new(w)?,
            };
            plan_with(&m, w, &a, env, pc, mpc, "cpu")
        }
    }
}

fn vstack(rows: &[Frame], gap: usize) -> Frame {
    let w = rows.iter().map(|f| f.width).max().unwrap_or(0);
    let h = rows.iter().map(|f| f.height).sum::<usize>() + gap * rows.len().saturating_sub(1);
    let mut out = Frame::new(w, h, [255, 255, 255]);
    let mut y0 = 0;
    for f in rows {
        for y in 0..f.height {
            let dst = ((y0 + y) * w) * 3;
            out.data[dst..dst + f.width * 3]
                .copy_from_slice(&f.data[y * f.width * 3..(y + 1) * f.width * 3]);
        }
        y0 += f.height + gap;
    }
    out
}

fn plan_with<M: WorldModel>(
    m: &M,
    w: &Weights,
    a: &PlanArgs,
    mut env: Box<dyn Env>,
    pc: PlanConfig,
    mpc: MpcConfig,
    backend: &str,
) -> anyhow::Result<()> {
    let alpha = env.spec().alpha;
    let mut pm = WorldPlanModel::new(m, w.norm.clone(), pc.horizon, alpha);
    let mut planner = plan::make(&a.opts.planner, pc.clone())?;
    let (start, goal) = env.sample_start_goal(a.seed);
    let mut states = vec![start.clone()];
    let mut plans: Vec<Vec<f32>> = Vec::new();
    let mut iters: Vec<serde_json::Value> = Vec::new();
    eprintln!(
        "planning {} seed {} with {} ({} samples, top {}, {} opt steps, horizon {}), up to {} MPC iterations",
        env.spec().name, a.seed, a.opts.planner, pc.samples, pc.topk, pc.opt_steps, pc.horizon, mpc.max_iters
    );
    let rec = run_episode(
        env.as_mut(),
        &mut pm,
        planner.as_mut(),
        &mpc,
        crate::plan::Task {
            seed: a.seed,
            start: &start,
            goal: &goal,
        },
        &mut |it: &MpcIter, e: &dyn Env| {
            eprintln!(
                "  MPC iteration {:>3}: best cost {:>10.5}  distance to goal {:>8.3}  plan {:.2} s",
                plans.len() + 1,
                it.best_cost,
                it.state_distance,
                it.plan_seconds
            );
            plans.push(it.plan.actions.clone());
            states.push(e.state());
            iters.push(serde_json::json!({
                "best_cost": it.best_cost,
                "state_distance": it.state_distance,
                "plan_seconds": it.plan_seconds,
                "opt_steps": it.plan.steps,
            }));
        },
    )?;
    eprintln!(
        "{} after {} MPC iterations; final distance {:.3} (success below {})",
        if rec.success {
            "SUCCESS"
        } else {
            "not reached"
        },
        rec.iterations,
        rec.final_state_distance,
        env.spec().success_threshold
    );
    // Strip: each row is the real observation a plan started from, then the decoded imagined
    // frames of that plan; the last row is the final real frame next to the goal.
    let size = 64;
    let goal_frame = env.render_state(&goal, m.config().image_size)?;
    let mut rows = Vec::new();
    for (i, actions) in plans.iter().enumerate() {
        let obs = env.render_state(&states[i], m.config().image_size)?;
        let mut row = vec![obs.resize(size, size)];
        if m.config().decoder.is_some() {
            use crate::plan::PlanModel;
            pm.set_problem(
                &obs,
                &env.proprio_of(&states[i]),
                &goal_frame,
                &env.proprio_of(&goal),
            )?;
            for f in pm.decode_rollout(actions)? {
                row.push(f.resize(size, size));
            }
        }
        rows.push(Frame::hstack(&row, 2, [255, 255, 255]));
    }
    let last = env.render_state(states.last().unwrap(), size)?;
    rows.push(Frame::hstack(
        &[last, goal_frame.resize(size, size)],
        2,
        [255, 255, 255],
    ));
    let strip = a.out.join("strip.png");
    vstack(&rows, 2).save_png(&strip)?;
    let log = serde_json::json!({
        "env": env.spec().name,
        "seed": a.seed,
        "model": w.config.name,
        "backend": backend,
        "planner": a.opts.planner,
        "plan_config": pc,
        "mpc_config": mpc,
        "episode": rec,
        "iterations": iters,
    });
    let json = a.out.join("plan.json");
    std::fs::write(&json, serde_json::to_string_pretty(&log)?)
        .map_err(|e| crate::Error::io(&json, e))?;
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
}

pub fn run_eval_cmd(a: EvalArgs) -> anyhow::Result<()> {
    let env = env::make(&a.opts.env)?;
    plan::make(&a.opts.planner, a.opts.configs(10, 0).0)?;
    let l = load_model(&a.opts, env.as_ref())?;
    let w = &l.weights;
    let step = w.config.frameskip * w.config.action_dim;
    let (pc, mpc) = a.opts.configs(step, 0);
    let name = l.name.clone();
    let backend = open_backend(a.opts.backend)?;
    let cfg = EvalConfig {
        env: env.spec().name.to_string(),
        episodes: a.episodes,
        planner: a.opts.planner.clone(),
        plan: (&pc).into(),
        mpc: (&mpc).into(),
        model: name,
        model_crc32: l
            .file
            .as_deref()
            .map(|p| crate::plan::eval::file_crc32(Path::new(p)))
            .transpose()?,
        quant: l.spec(),
        backend: if backend.is_some() { "gpu" } else { "cpu" }.into(),
    };
    let alpha = env.spec().alpha;
    let report = match &backend {
        Some(ctx) => {
            let m = match &l.quant {
                Some(q) => GpuModel::new_quantized(ctx, q)?,
                None => GpuModel::new(ctx, w)?,
            };
            let mut pm = WorldPlanModel::new(&m, w.norm.clone(), pc.horizon, alpha);
            eval_loop(&cfg, &pc, &mpc, &mut pm, &a.json)?
        }
        None => {
            let m = match &l.quant {
                Some(q) => CpuModel::new_quantized(q)?,
                None => CpuModel::new(w)?,
            };
            let mut pm = WorldPlanModel::new(&m, w.norm.clone(), pc.horizon, alpha);
            eval_loop(&cfg, &pc, &mpc, &mut pm, &a.json)?
        }
    };
    let mut report = report;
    if let (Some(q), Some(fw)) = (&l.quant, &l.float) {
        // Same numerics on either backend; the CPU keeps the GPU free of a second model.
        let fm = CpuModel::new(fw)?;
        let qm = CpuModel::new_quantized(q)?;
        let mut fp = WorldPlanModel::new(&fm, fw.norm.clone(), pc.horizon, alpha);
        let mut qp = WorldPlanModel::new(&qm, w.norm.clone(), pc.horizon, alpha);
        let mut env = env::make(&cfg.env)?;
        let size = w.config.image_size;
        let mut divs = Vec::new();
        for e in report.episodes.iter().take(10) {
            env.reset_to(&e.start)?;
            let obs = env.render(size);
            let goal = env.render_state(&e.goal, size)?;
            let (p, gp) = (env.proprio(), env.proprio_of(&e.goal));
            use crate::plan::PlanModel;
            fp.set_problem(&obs, &p, &goal, &gp)?;
            qp.set_problem(&obs, &p, &goal, &gp)?;
            divs.push(crate::plan::world::latent_divergence(
                &mut fp, &mut qp, 8, e.seed,
            )?);
        }
        if !divs.is_empty() {
            report.latent_divergence = Some(divs.iter().sum::<f64>() / divs.len() as f64);
        }
    }
    if let Some(q) = &l.quant {
        let (qb, fb) = q.linear_bytes();
        report.linear_bytes = Some([qb, fb]);
    }
    if report.latent_divergence.is_some() || report.linear_bytes.is_some() {
        std::fs::write(&a.json, serde_json::to_string_pretty(&report)?)
            .map_err(|e| crate::Error::io(&a.json, e))?;
    }
    println!(
        "{}: success {:.3} (95% CI {:.3}-{:.3}) over {} episodes; mean final distance {:.3}; \
         median plan time {:.3} s; Spearman(objective, distance) {}",
        cfg.env,
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
    println!("wrote {}", a.json.display());
    Ok(())
}

fn eval_loop(
    cfg: &EvalConfig,
    pc: &PlanConfig,
    mpc: &MpcConfig,
    pm: &mut dyn plan::PlanModel,
    json: &Path,
) -> anyhow::Result<plan::eval::EvalReport> {
    let bar = indicatif::ProgressBar::new(cfg.episodes as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} episodes {msg} [{elapsed} < {eta}]",
        )
        .expect("valid template"),
    );
    let mut ok = 0;
    let r = run_eval(
        cfg,
        pc,
        mpc,
        pm,
        Some(json),
        &mut |e, i| {
            ok += e.success as usize;
            bar.set_position(i as u64 + 1);
            bar.set_message(format!("{ok} successes"));
        },
        &mut |_, _| {},
    )?;
    bar.finish();
    Ok(r)
}

#[derive(Args, Debug)]
pub struct BenchPlanArgs {
    /// Model file, or a preset: tiny, dinowm (random weights).
    #[arg(long, default_value = "tiny")]
    pub model: String,
    #[arg(long, default_value_t = 300)]
    pub samples: usize,
    #[arg(long, default_value_t = 5)]
    pub horizon: usize,
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Skip the CPU backend.
    #[arg(long)]
    pub skip_cpu: bool,
    /// Skip the GPU backend (on a software adapter it takes minutes for large models).
    #[arg(long)]
    pub skip_gpu: bool,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run_bench_plan(a: BenchPlanArgs) -> anyhow::Result<()> {
    let w = match ModelConfig::preset(&a.model) {
        Some(cfg) => Weights::random(&cfg, 0)?,
        None => model::format::load(&a.model)?,
    };
    let r = crate::bench::plan::run(
        &w,
        &a.model,
        &crate::bench::plan::Options {
            samples: a.samples,
            horizon: a.horizon,
            reps: a.reps.max(1),
            skip_cpu: a.skip_cpu,
            skip_gpu: a.skip_gpu,
        },
    )?;
    println!(
        "model {} | CEM step: {} samples, horizon {} | adapter {}",
        r.model,
        r.samples,
        r.horizon,
        r.adapter
            .as_ref()
            .map_or("none".to_string(), |a| a.name.clone())
    );
    if let Some(g) = r.gpu_seconds_per_cem_step {
        println!(
            "gpu backend: {g:.4} s per CEM step (peak GPU buffers {} MiB)",
            r.gpu_peak_bytes.unwrap_or(0) >> 20
        );
    }
    if let Some(c) = r.cpu_seconds_per_cem_step {
        println!("cpu backend: {c:.4} s per CEM step");
    }
    if let (Some(g), Some(c)) = (r.gpu_seconds_per_cem_step, r.cpu_seconds_per_cem_step) {
        println!("gpu / cpu speed: {:.2}x", c / g);
    }
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&r)?)
            .map_err(|e| crate::Error::io(&p, e))?;
        println!("wrote {}", p.display());
    }
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
    let env = env::make(&a.opts.env)?;
    let l = load_model(&a.opts, env.as_ref())?;
    let q = l.quant.as_ref().expect("a non-fp spec quantizes");
    crate::quant::model::save(q, &a.out)?;
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
