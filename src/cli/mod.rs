//! The `qwm` command line. Each command group lives in its own file; this file only routes.

use clap::{Parser, Subcommand};

pub mod env_cmds;
pub mod gpu_cmds;
pub mod model_cmds;
pub mod plan_cmds;
pub mod train_cmds;

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
    /// Benchmarks: kernels, environments.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Write an offline dataset of trajectories from a built-in environment.
    Data(env_cmds::DataArgs),
    /// Environment tools (rendering).
    #[command(subcommand)]
    Env(env_cmds::EnvCommand),
    /// Train a small world model on a `qwm data` dataset (CPU, resumable).
    Train(train_cmds::TrainArgs),
    /// Model files: random initialisation, inspection.
    #[command(subcommand)]
    Model(model_cmds::ModelCommand),
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time the WGSL kernels against the CPU reference at DINO-WM shapes.
    Kernels(gpu_cmds::BenchKernelsArgs),
    /// Environment steps per second with rendering.
    Env(env_cmds::BenchEnvArgs),
    /// Quantized matmul kernels: every bit-width and granularity vs f32 and copy.
    Quant(gpu_cmds::BenchQuantArgs),
    /// One CEM step (300 samples, horizon 5) on the GPU and CPU backends.
    Plan(plan_cmds::BenchPlanArgs),
    /// Encoder/predictor forward and CEM-sized rollouts, GPU and CPU backends.
    Model(model_cmds::BenchModelArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    // Invalid QWM_* overrides are an error up front, never silently ignored.
    crate::gpu::tuning::check_env()?;
    match cli.command {
        Command::Plan(a) => plan_cmds::run_plan(a),
        Command::Eval(a) => plan_cmds::run_eval_cmd(a),
        Command::Quantize(a) => plan_cmds::run_quantize(a),
        Command::Info(a) => gpu_cmds::run_info(a),
        Command::Bench(BenchCommand::Kernels(a)) => gpu_cmds::run_bench_kernels(a),
        Command::Bench(BenchCommand::Env(a)) => env_cmds::run_bench_env(a),
        Command::Bench(BenchCommand::Quant(a)) => gpu_cmds::run_bench_quant(a),
        Command::Bench(BenchCommand::Plan(a)) => plan_cmds::run_bench_plan(a),
        Command::Data(a) => env_cmds::run_data(a),
        Command::Train(a) => train_cmds::run_train(a),
        Command::Env(c) => env_cmds::run_env(c),
        Command::Model(c) => model_cmds::run_model(c),
        Command::Bench(BenchCommand::Model(a)) => model_cmds::run_bench_model(a),
    }
}
