//! `qwm info`, `qwm bench kernels`.

use clap::Args;

#[derive(Args, Debug)]
pub struct InfoArgs {}

#[derive(Args, Debug)]
pub struct BenchKernelsArgs {}

pub fn run_info(_a: InfoArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

pub fn run_bench_kernels(_a: BenchKernelsArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
