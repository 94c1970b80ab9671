//! `qwm bench env`: environment steps, renders, and both, per second on one thread. Actions are
//! drawn up front so that only the environment is timed. Each sample is one pass of `steps`
//! steps (seconds); the rate is steps per second. The step count is not part of the shape, so
//! rates measured at different counts (`--quick`) still compare.

use std::time::Instant;

use super::record::BenchRecord;
use super::Session;
use crate::env::{self, policy};
use crate::Result;

pub struct Options {
    /// Environments (empty: all).
    pub envs: Vec<String>,
    pub steps: usize,
    /// Frame size (default: each environment's dataset size).
    pub size: Option<usize>,
}

pub fn run(s: &mut Session, o: &Options) -> Result<()> {
    let names: Vec<String> = if o.envs.is_empty() {
        env::ENV_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        o.envs.clone()
    };
    let steps = o.steps.max(1);
    for n in &names {
        let mut e = env::make(n)?;
        let size = o.size.unwrap_or(e.spec().default_data_size);
        let mut pol = policy::for_env(n)?;
        let mut rng = env::rng(0);
        let start = pol.start_state(&mut rng);
        e.reset_to(&start)?;
        let mut actions = Vec::with_capacity(steps);
        for _ in 0..steps {
            let act = pol.act(&e.state(), &mut rng);
            e.step(&act)?;
            actions.push(act);
        }
        let name = e.spec().name.to_string();
        let shape = format!("{size} px");
        let mut pass = |render: bool, step: bool| -> Result<f64> {
            e.reset_to(&start)?;
            let t0 = Instant::now();
            for act in &actions {
                if step {
                    e.step(act)?;
                }
                if render {
                    std::hint::black_box(e.render(size));
                }
            }
            Ok(t0.elapsed().as_secs_f64())
        };
        for (what, render, step) in [
            ("step", false, true),
            ("render", true, false),
            ("step+render", true, true),
        ] {
            let t = super::samples(super::WARMUP, s.reps, || pass(render, step))?;
            s.push(
                BenchRecord::new("env", &format!("{name} {what}"), &shape, "cpu", "cpu-wall")
                    .samples(t)
                    .per_second(steps as f64, "steps/s")
                    .extra("steps", steps),
            );
        }
    }
    Ok(())
}
