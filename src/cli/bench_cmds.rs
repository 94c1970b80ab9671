//! `qwm bench ...`: every subcommand writes the same result schema (`--json PATH`) and prints
//! the same table; `bench compare` puts result files side by side.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::app::{LoadedModel, ModelSource};
use crate::bench::{self, GpuUse, Session};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Everything a new GPU should be measured on, into one result file (send it back!).
    All(BenchAllArgs),
    /// The WGSL kernels (matmul, attention) against the CPU reference at DINO-WM shapes.
    Kernels(BenchKernelsArgs),
    /// Quantized matmul kernels: every bit-width and granularity vs f32 and copy.
    Quant(BenchQuantArgs),
    /// Encoder/predictor forward and CEM-sized rollouts, GPU and CPU backends.
    Model(BenchModelArgs),
    /// One CEM step (300 samples, horizon 5) on the GPU and CPU backends.
    Plan(BenchPlanArgs),
    /// Environment steps per second with rendering.
    Env(BenchEnvArgs),
    /// Tables (markdown, CSV) and charts (PNG) of result files side by side.
    Compare(BenchCompareArgs),
    /// Rewrite a result file (including the pre-schema formats) in the current schema.
    Convert(BenchConvertArgs),
}

/// Flags every measuring subcommand takes.
#[derive(Args, Debug)]
pub struct Common {
    /// Write the results (qwm-bench schema, docs/BENCHMARKS.md) as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Replace the --json file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Timed samples per measurement (after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
}

#[derive(Args, Debug)]
pub struct BenchAllArgs {
    #[command(flatten)]
    pub common: Common,
    /// A subset of every family at the same shapes (about a minute on a GPU).
    #[arg(long)]
    pub quick: bool,
    /// Skip the CPU-reference rows and the environment benchmarks (e.g. for a second adapter
    /// on a machine already measured).
    #[arg(long)]
    pub no_cpu: bool,
    /// Only the CPU rows, no GPU adapter.
    #[arg(long)]
    pub no_gpu: bool,
}

#[derive(Args, Debug)]
pub struct BenchKernelsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Only the 1024^3 matmul, one predictor shape and attention (quick check).
    #[arg(long)]
    pub quick: bool,
    /// Skip the CPU reference.
    #[arg(long)]
    pub no_cpu: bool,
}

#[derive(Args, Debug)]
pub struct BenchQuantArgs {
    #[command(flatten)]
    pub common: Common,
    /// Only w8 and w4 at batch 1 and 8.
    #[arg(long)]
    pub quick: bool,
}

#[derive(Args, Debug)]
pub struct BenchModelArgs {
    #[command(flatten)]
    pub common: Common,
    /// `dinowm`, `tiny`, or a model file.
    #[arg(long, default_value = "tiny")]
    pub config: String,
    /// Batch sizes for the encoder and predictor forward timings.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,300")]
    pub batches: Vec<usize>,
    /// Batch sizes for the CPU backend (default: the same as --batches).
    #[arg(long, value_delimiter = ',')]
    pub cpu_batches: Option<Vec<usize>>,
    /// Samples of the CEM-sized rollout (0 skips it).
    #[arg(long, default_value_t = 300)]
    pub rollout_samples: usize,
    /// Actions per rollout (DINO-WM's CEM horizon).
    #[arg(long, default_value_t = 5)]
    pub horizon: usize,
    /// Skip the CPU backend.
    #[arg(long)]
    pub no_cpu: bool,
    /// Skip the CPU rollout (it can take minutes at full size).
    #[arg(long)]
    pub no_cpu_rollout: bool,
    /// Skip the GPU (CPU rows only, e.g. peak resident memory of the CPU backend).
    #[arg(long)]
    pub no_gpu: bool,
    /// Quantize the model first (RTN, dynamic activations only, as in `bench plan`): both
    /// backends then run the packed linears.
    #[arg(long, default_value = "fp")]
    pub quant: String,
}

#[derive(Args, Debug)]
pub struct BenchPlanArgs {
    #[command(flatten)]
    pub common: Common,
    /// Model file, or a preset: tiny, dinowm (random weights).
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Quantize the model first (RTN, docs/QUANT.md spec; dynamic activations only), e.g.
    /// w8a8t or w4g32: the CPU backend then runs the packed kernels (weight-only specs on int8
    /// inputs with `QWM_CPU_WEIGHT_ONLY=int8`, a row of its own).
    #[arg(long, default_value = "fp")]
    pub quant: String,
    /// The JSON `tools/bench_plan_torch.py` printed for the same model, samples and horizon:
    /// the CPU row then carries PyTorch's time and qwm's speed relative to it (`x_torch`).
    #[arg(long)]
    pub torch_json: Option<PathBuf>,
    #[arg(long, default_value_t = 300)]
    pub samples: usize,
    #[arg(long, default_value_t = 5)]
    pub horizon: usize,
    /// Skip the CPU backend.
    #[arg(long)]
    pub skip_cpu: bool,
    /// Skip the GPU backend (on a software adapter it takes minutes for large models).
    #[arg(long)]
    pub skip_gpu: bool,
}

#[derive(Args, Debug)]
pub struct BenchEnvArgs {
    #[command(flatten)]
    pub common: Common,
    /// Environments to time (default: all).
    #[arg(long)]
    pub env: Vec<String>,
    /// Steps per environment and sample.
    #[arg(long, default_value_t = 500)]
    pub steps: usize,
    /// Frame size (default: each environment's dataset size).
    #[arg(long)]
    pub size: Option<usize>,
}

#[derive(Args, Debug)]
pub struct BenchCompareArgs {
    /// Result files (any qwm bench JSON, including the pre-schema formats).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The column the ratios are relative to: a column id (A, B, ...), a file name (its first
    /// column) or a label substring. Default: the first column.
    #[arg(long)]
    pub baseline: Option<String>,
    /// Output folder for compare.md, compare.csv and compare_<family>.png.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct BenchConvertArgs {
    pub file: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

/// A preset (random weights, seed 0) or a model file, float or quantized.
fn model(arg: &str) -> anyhow::Result<LoadedModel> {
    Ok(LoadedModel::for_bench(&ModelSource::preset_or_file(arg))?)
}

/// Print the table and write the JSON of a finished session.
fn finish(s: Session, suite: &str, c: &Common) -> anyhow::Result<()> {
    let f = s.finish(suite);
    print!("{}", bench::table::table(&f));
    if let Some(p) = &c.json {
        f.write(p, c.force)?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// Refuse an existing --json file before minutes of measuring, not after.
fn check_out(c: &Common) -> anyhow::Result<()> {
    match &c.json {
        Some(p) if p.exists() && !c.force => anyhow::bail!(
            "--json {}: the file exists; pass --force to replace it or pick another path",
            p.display()
        ),
        _ => Ok(()),
    }
}

/// Every count of a bench command against its bound (`crate::limits`), before anything is
/// loaded or allocated.
fn check_counts(cmd: &BenchCommand) -> crate::Result<()> {
    use crate::limits::{check_range, product, MAX_IMAGE, MAX_PLAN_STEPS, MAX_SAMPLES, MAX_STEPS};
    // Rollouts and plans hold samples x horizon latents or actions; the planner's bound.
    let plan = |samples: usize, horizon: usize| -> crate::Result<()> {
        check_range("--horizon", horizon, 1, MAX_PLAN_STEPS)?;
        let n = product("samples x --horizon", &[samples, horizon])?;
        check_range("samples x --horizon", n, 1, 1 << 24).map(|_| ())
    };
    let reps = |c: &Common| check_range("--reps", c.reps, 1, crate::limits::MAX_REPS).map(|_| ());
    match cmd {
        BenchCommand::All(a) => reps(&a.common),
        BenchCommand::Kernels(a) => reps(&a.common),
        BenchCommand::Quant(a) => reps(&a.common),
        BenchCommand::Model(a) => {
            reps(&a.common)?;
            let cpu = a.cpu_batches.iter().flatten();
            for &b in a.batches.iter().chain(cpu) {
                check_range("--batches (each)", b, 1, MAX_SAMPLES)?;
            }
            check_range("--rollout-samples", a.rollout_samples, 1, MAX_SAMPLES)?;
            plan(a.rollout_samples, a.horizon)
        }
        BenchCommand::Plan(a) => {
            reps(&a.common)?;
            check_range("--samples", a.samples, 2, MAX_SAMPLES)?;
            plan(a.samples, a.horizon)
        }
        BenchCommand::Env(a) => {
            reps(&a.common)?;
            check_range("--steps", a.steps, 1, MAX_STEPS)?;
            if let Some(s) = a.size {
                check_range("--size", s, 1, MAX_IMAGE)?;
            }
            Ok(())
        }
        BenchCommand::Compare(_) | BenchCommand::Convert(_) => Ok(()),
    }
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    check_counts(&cmd)?;
    match cmd {
        BenchCommand::All(a) => {
            check_out(&a.common)?;
            anyhow::ensure!(
                !(a.no_cpu && a.no_gpu),
                "--no-cpu and --no-gpu together leave nothing to measure"
            );
            let gpu = if a.no_gpu {
                GpuUse::Off
            } else {
                GpuUse::Required
            };
            let mut s = Session::new(gpu, a.common.reps, !a.no_cpu)?;
            let t0 = std::time::Instant::now();
            bench::all::run(
                &mut s,
                &bench::all::Options { quick: a.quick },
                &mut |what| eprintln!("[{:6.1} s] {what}", t0.elapsed().as_secs_f64()),
            )?;
            finish(s, "all", &a.common)?;
            if a.common.json.is_some() {
                println!(
                    "attach that file to an issue or message to add this adapter to \
                     docs/BENCHMARKS.md (it names the adapter, driver, OS and CPU, nothing else)"
                );
            }
            Ok(())
        }
        BenchCommand::Kernels(a) => {
            check_out(&a.common)?;
            let mut s = Session::new(GpuUse::Required, a.common.reps, !a.no_cpu)?;
            bench::kernels::run(&mut s, &bench::kernels::Options { quick: a.quick })?;
            finish(s, "kernels", &a.common)
        }
        BenchCommand::Quant(a) => {
            check_out(&a.common)?;
            let mut s = Session::new(GpuUse::Required, a.common.reps, false)?;
            bench::quant::run(&mut s, &bench::quant::Options { quick: a.quick })?;
            finish(s, "quant", &a.common)
        }
        BenchCommand::Model(a) => {
            check_out(&a.common)?;
            anyhow::ensure!(
                !(a.no_cpu && a.no_gpu),
                "--no-cpu and --no-gpu together leave nothing to measure"
            );
            let m = model(&a.config)?.quantized_for_bench(&a.quant)?;
            let gpu = if a.no_gpu {
                GpuUse::Off
            } else {
                GpuUse::Required
            };
            let mut s = Session::new(gpu, a.common.reps, !a.no_cpu)?;
            let opts = bench::model::Options {
                cpu_batches: a.cpu_batches.clone().unwrap_or_else(|| a.batches.clone()),
                batches: a.batches,
                rollout_samples: a.rollout_samples,
                horizon: a.horizon,
                cpu_rollout: !a.no_cpu_rollout,
            };
            bench::model::run(&mut s, &m, &opts)?;
            finish(s, "model", &a.common)
        }
        BenchCommand::Plan(a) => {
            check_out(&a.common)?;
            anyhow::ensure!(
                !(a.skip_cpu && a.skip_gpu),
                "--skip-cpu and --skip-gpu together leave nothing to measure"
            );
            let torch = match &a.torch_json {
                Some(p) => {
                    let text = std::fs::read_to_string(p).map_err(|e| {
                        anyhow::anyhow!("--torch-json {}: cannot read it ({e})", p.display())
                    })?;
                    let f = p.display().to_string();
                    Some(bench::plan::TorchPeer::from_json(
                        &text, &f, a.samples, a.horizon,
                    )?)
                }
                None => None,
            };
            let m = model(&a.model)?.quantized_for_bench(&a.quant)?;
            let gpu = if a.skip_gpu {
                GpuUse::Off
            } else {
                GpuUse::Optional
            };
            let mut s = Session::new(gpu, a.common.reps, !a.skip_cpu)?;
            let o = bench::plan::Options {
                samples: a.samples,
                horizon: a.horizon,
                torch,
            };
            bench::plan::run(&mut s, &m, &a.model, &o)?;
            if let Some(x) = s.context.get("x_torch").and_then(|v| v.as_f64()) {
                println!("qwm cpu backend speed relative to PyTorch eager: {x:.2}x");
            }
            finish(s, "plan", &a.common)
        }
        BenchCommand::Env(a) => {
            check_out(&a.common)?;
            let mut s = Session::new(GpuUse::Off, a.common.reps, true)?;
            let o = bench::env::Options {
                envs: a.env,
                steps: a.steps,
                size: a.size,
            };
            bench::env::run(&mut s, &o)?;
            finish(s, "env", &a.common)
        }
        BenchCommand::Compare(a) => {
            let md = bench::compare::run(&a.files, a.baseline.as_deref(), &a.out)?;
            print!("{md}");
            println!(
                "wrote {}/compare.md, compare.csv and the charts",
                a.out.display()
            );
            Ok(())
        }
        BenchCommand::Convert(a) => {
            let f = bench::record::BenchFile::load(&a.file)?;
            f.write(&a.out, a.force)?;
            println!(
                "wrote {} ({} results, schema v{})",
                a.out.display(),
                f.results.len(),
                f.schema_version
            );
            Ok(())
        }
    }
}
