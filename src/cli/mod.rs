//! The `qwm` command line. Each command group lives in its own file; this file only routes.

use clap::{Parser, Subcommand};

pub mod bench_cmds;
pub mod env_cmds;
pub mod gpu_cmds;
pub mod model_cmds;
pub mod plan_cmds;
pub mod study_cmds;
pub mod train_cmds;
pub mod view_cmds;

#[derive(Parser, Debug)]
#[command(
    name = "qwm",
    version,
    about = "Quantized world models that plan on any GPU"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Plan one episode with MPC around CEM/MPPI; writes a strip of real vs imagined frames.
    Plan(plan_cmds::PlanArgs),
    /// Evaluate planning over many episodes (success rate, CI, alignment), resumable JSON.
    Eval(plan_cmds::EvalArgs),
    /// Quantize a model (calibrating static activation ranges with the float planner).
    Quantize(plan_cmds::QuantizeArgs),
    /// List every GPU adapter and mark the one qwm would use.
    Info(gpu_cmds::InfoArgs),
    /// Benchmarks (one result schema; `qwm bench all --json FILE` on a new GPU).
    #[command(subcommand)]
    Bench(bench_cmds::BenchCommand),
    /// Write an offline dataset of trajectories from a built-in environment.
    Data(env_cmds::DataArgs),
    /// Environment tools (rendering).
    #[command(subcommand)]
    Env(env_cmds::EnvCommand),
    /// Train a small world model on a `qwm data` dataset (CPU, resumable).
    Train(train_cmds::TrainArgs),
    /// The desktop viewer: replay a trace (`qwm plan --trace DIR`) or plan live (`--env`).
    View(view_cmds::ViewArgs),
    /// Model files: random initialisation, inspection.
    #[command(subcommand)]
    Model(model_cmds::ModelCommand),
    /// A grid of evaluations as one resumable, shardable run, and its report (docs/STUDY.md).
    #[command(subcommand)]
    Study(study_cmds::StudyCommand),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    // Invalid QWM_* overrides are an error up front, never silently ignored.
    crate::gpu::tuning::check_env()?;
    match cli.command {
        Command::Plan(a) => plan_cmds::run_plan(a),
        Command::Eval(a) => plan_cmds::run_eval_cmd(a),
        Command::Quantize(a) => plan_cmds::run_quantize(a),
        Command::Info(a) => gpu_cmds::run_info(a),
        Command::Bench(c) => bench_cmds::run(c),
        Command::Data(a) => env_cmds::run_data(a),
        Command::Train(a) => train_cmds::run_train(a),
        Command::Env(c) => env_cmds::run_env(c),
        Command::Model(c) => model_cmds::run_model(c),
        Command::View(a) => view_cmds::run_view(a),
        Command::Study(c) => study_cmds::run_study(c),
    }
}
