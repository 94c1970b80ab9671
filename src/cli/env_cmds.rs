//! `qwm data`, `qwm env render|strip|list`.

use crate::env::{self, dataset, policy, Frame};
use crate::limits;
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
    /// Frame size in pixels (default: 64, the shipped models' input).
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

/// `--size` of a picture of `frames` frames side by side, bounded before anything renders.
fn picture_size(size: usize, frames: usize) -> crate::Result<()> {
    limits::check_range("--size", size, 1, limits::MAX_IMAGE)?;
    let bytes = limits::product("--size x --size x --frames", &[size, size, 3, frames])?;
    limits::check_range(
        "the picture's bytes (--size x --size x 3 x frames)",
        bytes,
        1,
        limits::MAX_PICTURE_BYTES,
    )?;
    Ok(())
}

pub fn run_env(c: EnvCommand) -> anyhow::Result<()> {
    match c {
        EnvCommand::Render(a) => {
            picture_size(a.size, 2)?;
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
            limits::check_range("--frames", a.frames, 1, limits::MAX_STRIP_FRAMES)?;
            limits::check_range("--every", a.every, 1, limits::MAX_STEPS)?;
            picture_size(a.size, a.frames)?;
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
