//! Cross-entropy method (DINO-WM's planner): sample around a Gaussian, refit its mean and
//! standard deviation to the top-k samples, repeat; the plan is the final mean. The standard
//! deviation divides by k - 1 as DINO-WM's `torch.std` does, or by k ([`CemStd`]).

use super::{check_costs, step_stat, CemStd, CostFn, PlanConfig, PlanResult, Planner, Sampler};
use crate::Result;

pub struct Cem {
    cfg: PlanConfig,
    sampler: Sampler,
}

impl Cem {
    pub fn new(cfg: PlanConfig) -> Self {
        let sampler = Sampler::new(cfg.seed);
        Cem { cfg, sampler }
    }
}

impl Planner for Cem {
    fn name(&self) -> &'static str {
        "cem"
    }

    fn plan(&mut self, cost: &mut CostFn, init: Option<&[f32]>) -> Result<PlanResult> {
        let c = &self.cfg;
        let d = c.seq_len();
        let mut mean = init.map_or_else(|| vec![0.0; d], |m| m.to_vec());
        let mut std = vec![c.var_scale; d];
        let mut steps = Vec::with_capacity(c.opt_steps);
        let mut mean_cost = f32::INFINITY;
        let divisor = match c.cem_std {
            CemStd::Sample => (c.topk - 1) as f32,
            CemStd::Population => c.topk as f32,
        };
        for _ in 0..c.opt_steps {
            let samples = self.sampler.around(&mean, &std, c.samples);
            let costs = cost(&samples, c.samples)?;
            check_costs(&costs, c.samples)?;
            mean_cost = costs[0];
            steps.push(step_stat(&costs));
            let mut idx: Vec<usize> = (0..c.samples).collect();
            // Stable order for ties keeps runs deterministic.
            idx.sort_by(|&a, &b| costs[a].total_cmp(&costs[b]).then(a.cmp(&b)));
            let top = &idx[..c.topk];
            for j in 0..d {
                let m = top.iter().map(|&i| samples[i * d + j]).sum::<f32>() / c.topk as f32;
                let v = top
                    .iter()
                    .map(|&i| (samples[i * d + j] - m).powi(2))
                    .sum::<f32>()
                    / divisor;
                mean[j] = m;
                std[j] = v.sqrt();
            }
        }
        Ok(PlanResult {
            actions: mean,
            cost: mean_cost,
            steps,
        })
    }
}
