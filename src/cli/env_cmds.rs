//! `qwm data`, `qwm env render`, `qwm bench env`.

use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct DataArgs {}

#[derive(Subcommand, Debug)]
pub enum EnvCommand {}

#[derive(Args, Debug)]
pub struct BenchEnvArgs {}

pub fn run_data(_a: DataArgs) -> anyhow::Result<()> {
    anyhow::bail!("qwm data is not implemented yet")
}

pub fn run_env(c: EnvCommand) -> anyhow::Result<()> {
    match c {}
}

pub fn run_bench_env(_a: BenchEnvArgs) -> anyhow::Result<()> {
    anyhow::bail!("qwm bench env is not implemented yet")
}
