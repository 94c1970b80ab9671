//! `qwm model random`, `qwm model info`, `qwm bench model`.

use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum ModelCommand {}

#[derive(Args, Debug)]
pub struct BenchModelArgs {}

pub fn run_model(c: ModelCommand) -> anyhow::Result<()> {
    match c {}
}

pub fn run_bench_model(_a: BenchModelArgs) -> anyhow::Result<()> {
    anyhow::bail!("qwm bench model is not implemented yet")
}
