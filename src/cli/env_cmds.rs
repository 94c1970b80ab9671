//! `qwm data`, `qwm env render|strip|list`, `qwm bench env`.

use crate::env::{self, dataset, policy, Frame};
use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct DataArgs {
    /// Environment: wall, pointmaze or pusht.
    #[arg(long)]
    pub env: String,
    /// Number of episodes.
    #[arg(long, default_value_t = 100)]
    pub episodes: usize,
    /// Steps per episode (each episode stores steps + 1 frames).
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Output directory (re-run with the same arguments to resume).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed; episode i depends only on (seed, i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Frame size in pixels (default: 64 for wall and pointmaze, 96 for pusht).
    #[arg(long)]
    pub size: Option<usize>,
    /// Episodes per shard (default: about 64 MiB of frames per shard).
    #[arg(long)]
    pub shard_episodes: Option<usize>,
}

#[derive(Subcommand, Debug)]
pub enum EnvCommand {
    /// Render the start state sampled from a seed (and its goal, side by side) to a PNG.
    Render(RenderArgs),
    /// Render a strip of frames of a data-policy trajectory to a PNG.
    Strip(StripArgs),
    /// List the environments and their specs.
    List,
}

#[derive(Args, Debug)]
pub struct RenderArgs {
    #[arg(long)]
    pub env: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
    /// Frame size in pixels.
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Only the start state, without the goal.
    #[arg(long)]
    pub no_goal: bool,
}

#[derive(Args, Debug)]
pub struct StripArgs {
    #[arg(long)]
    pub env: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
    /// Frames in the strip.
    #[arg(long, default_value_t = 8)]
    pub frames: usize,
    /// Env steps between frames.
    #[arg(long, default_value_t = 5)]
    pub every: usize,
    #[arg(long, default_value_t = 128)]
    pub size: usize,
}

#[derive(Args, Debug)]
pub struct BenchEnvArgs {
    /// Environments to time (default: all).
    #[arg(long)]
    pub env: Vec<String>,
    /// Steps per environment.
    #[arg(long, default_value_t = 500)]
    pub steps: usize,
    /// Frame size (default: each environment's dataset size).
    #[arg(long)]
    pub size: Option<usize>,
    /// Also write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run_data(a: DataArgs) -> anyhow::Result<()> {
    let cfg = dataset::CollectConfig {
        env: a.env.clone(),
        episodes: a.episodes,
        steps: a.steps,
        seed: a.seed,
        size: a.size,
        shard_episodes: a.shard_episodes,
    };
    let bar = ProgressBar::new(a.episodes as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} episodes ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(format!("{} seed {}", a.env, a.seed));
    let t0 = Instant::now();
    let report = dataset::collect(&cfg, &a.out, |done, _| bar.set_position(done as u64))
        .with_context(|| format!("collecting {} into {}", a.env, a.out.display()))?;
    bar.finish();
    let m = &report.manifest;
    if report.resumed_shards > 0 {
        println!("resumed: kept {} finished shards", report.resumed_shards);
    }
    println!(
        "wrote {} episodes x {} steps of {} ({} px frames, policy {}) to {} in {} shards, {:.1}s",
        m.episodes,
        m.steps,
        m.env,
        m.image_size,
        m.policy,
        a.out.display(),
        m.num_shards,
        t0.elapsed().as_secs_f64()
    );
    println!("action mean {:?} std {:?}", m.action_mean, m.action_std);
    println!("proprio mean {:?} std {:?}", m.proprio_mean, m.proprio_std);
    Ok(())
}

pub fn run_env(c: EnvCommand) -> anyhow::Result<()> {
    match c {
        EnvCommand::Render(a) => {
            let e = env::make(&a.env)?;
            let (start, goal) = e.sample_start_goal(a.seed);
            let mut frames = vec![e.render_state(&start, a.size)?];
            if !a.no_goal {
                frames.push(e.render_state(&goal, a.size)?);
            }
            Frame::hstack(&frames, 4, [128, 128, 128]).save_png(&a.out)?;
            println!("start {start:?}");
            if !a.no_goal {
                println!("goal  {goal:?} (right)");
            }
            println!("wrote {}", a.out.display());
            Ok(())
        }
        EnvCommand::Strip(a) => {
            let mut e = env::make(&a.env)?;
            let mut pol = policy::for_env(&a.env)?;
            let mut rng = env::rng(a.seed);
            e.reset_to(&pol.start_state(&mut rng))?;
            let mut frames = vec![e.render(a.size)];
            for _ in 1..a.frames.max(1) {
                for _ in 0..a.every.max(1) {
                    let act = pol.act(&e.state(), &mut rng);
                    e.step(&act)?;
                }
                frames.push(e.render(a.size));
            }
            Frame::hstack(&frames, 4, [128, 128, 128]).save_png(&a.out)?;
            println!(
                "wrote {} ({} frames, {} steps apart, policy {})",
                a.out.display(),
                frames.len(),
                a.every,
                pol.name()
            );
            Ok(())
        }
        EnvCommand::List => {
            println!(
                "{:<10} {:>5} {:>6} {:>7} {:>6} {:>9} {:>5}  state",
                "env", "state", "action", "proprio", "native", "success", "alpha"
            );
            for n in env::ENV_NAMES {
                let s = env::spec(n)?;
                println!(
                    "{:<10} {:>5} {:>6} {:>7} {:>6} {:>9} {:>5}  {}",
                    s.name,
                    s.state_dim,
                    s.action_dim,
                    s.proprio_dim,
                    s.native_size,
                    s.success_threshold,
                    s.alpha,
                    s.state_names.join(", ")
                );
            }
            Ok(())
        }
    }
}

#[derive(serde::Serialize)]
struct BenchRow {
    env: String,
    size: usize,
    steps: usize,
    step_per_s: f64,
    render_per_s: f64,
    step_render_per_s: f64,
}

pub fn run_bench_env(a: BenchEnvArgs) -> anyhow::Result<()> {
    let names: Vec<String> = if a.env.is_empty() {
        env::ENV_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        a.env.clone()
    };
    let steps = a.steps.max(1);
    let mut rows = Vec::new();
    for n in &names {
        let mut e = env::make(n)?;
        let size = a.size.unwrap_or(e.spec().default_data_size);
        let mut pol = policy::for_env(n)?;
        let mut rng = env::rng(0);
        let start = pol.start_state(&mut rng);
        // Actions are drawn up front so that only the environment is timed.
        e.reset_to(&start)?;
        let mut actions = Vec::with_capacity(steps);
        for _ in 0..steps {
            let act = pol.act(&e.state(), &mut rng);
            e.step(&act)?;
            actions.push(act);
        }
        e.reset_to(&start)?;
        let t0 = Instant::now();
        for act in &actions {
            e.step(act)?;
        }
        let t_step = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        for _ in 0..steps {
            std::hint::black_box(e.render(size));
        }
        let t_render = t0.elapsed().as_secs_f64();
        e.reset_to(&start)?;
        let t0 = Instant::now();
        for act in &actions {
            e.step(act)?;
            std::hint::black_box(e.render(size));
        }
        let t_both = t0.elapsed().as_secs_f64();
        rows.push(BenchRow {
            env: e.spec().name.to_string(),
            size,
            steps,
            step_per_s: steps as f64 / t_step,
            render_per_s: steps as f64 / t_render,
            step_render_per_s: steps as f64 / t_both,
        });
    }
    println!("single thread, {} steps per environment", steps);
    println!(
        "{:<10} {:>6} {:>14} {:>14} {:>18}",
        "env", "size", "steps/s", "renders/s", "steps/s w/ render"
    );
    for r in &rows {
        println!(
            "{:<10} {:>6} {:>14.0} {:>14.0} {:>18.0}",
            r.env, r.size, r.step_per_s, r.render_per_s, r.step_render_per_s
        );
    }
    if let Some(p) = &a.json {
        crate::io::write_atomic(p, serde_json::to_string_pretty(&rows)?.as_bytes())?;
        println!("wrote {}", p.display());
    }
    Ok(())
}
