//! Model predictive path integral control: sample around the mean with fixed noise and move
//! the mean to the exponentially weighted average of the samples (weights exp(-cost / T)).

use super::{check_costs, step_stat, CostFn, PlanConfig, PlanResult, Planner, Sampler};
use crate::Result;

pub struct Mppi {
    cfg: PlanConfig,
    sampler: Sampler,
}

impl Mppi {
    pub fn new(cfg: PlanConfig) -> Self {
        let sampler = Sampler::new(cfg.seed);
        Mppi { cfg, sampler }
    }
}

impl Planner for Mppi {
    fn name(&self) -> &'static str {
        "mppi"
    }

    fn plan(&mut self, cost: &mut CostFn, init: Option<&[f32]>) -> Result<PlanResult> {
        let c = &self.cfg;
        let d = c.seq_len();
        let mut mean = init.map_or_else(|| vec![0.0; d], |m| m.to_vec());
        let std = vec![c.var_scale; d];
        let mut steps = Vec::with_capacity(c.opt_steps);
        let mut mean_cost = f32::INFINITY;
        for _ in 0..c.opt_steps {
            let samples = self.sampler.around(&mean, &std, c.samples);
            let costs = cost(&samples, c.samples)?;
            check_costs(&costs, c.samples)?;
            mean_cost = costs[0];
            steps.push(step_stat(&costs));
            // Normalize by the cost spread so the temperature is scale-free.
            let lo = costs.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = costs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let spread = (hi - lo).max(1e-12);
            let w: Vec<f64> = costs
                .iter()
                .map(|&x| (-((x - lo) / spread) as f64 / c.temperature as f64).exp())
                .collect();
            let total: f64 = w.iter().sum();
            for (j, m) in mean.iter_mut().enumerate() {
                let s: f64 = w
                    .iter()
                    .enumerate()
                    .map(|(i, wi)| wi * samples[i * d + j] as f64)
                    .sum();
                *m = (s / total) as f32;
            }
        }
        Ok(PlanResult {
            actions: mean,
            cost: mean_cost,
            steps,
        })
    }
}
