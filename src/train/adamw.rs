//! AdamW (decoupled weight decay) over the `Var`s of one training phase, its moments kept as
//! candle tensors so that checkpoints can hold them.

use std::collections::BTreeMap;

use candle_core::{Tensor, Var};

use super::config::Phase;
use crate::Result;

/// AdamW (decoupled weight decay) with moments as candle tensors, so they can be
/// checkpointed.
pub(crate) struct AdamW {
    lr: f64,
    wd: f64,
    pub(crate) step: usize,
    pub(crate) params: Vec<(String, Var, Tensor, Tensor)>,
}

impl AdamW {
    const B1: f64 = 0.9;
    const B2: f64 = 0.999;
    const EPS: f64 = 1e-8;

    pub(crate) fn new(
        vars: &BTreeMap<String, Var>,
        phase: Phase,
        lr: f64,
        wd: f64,
    ) -> Result<Self> {
        let mut params = Vec::new();
        for (n, v) in vars {
            if phase.prefixes().iter().any(|p| n.starts_with(p)) {
                let z = v.as_tensor().zeros_like()?;
                params.push((n.clone(), v.clone(), z.clone(), z));
            }
        }
        Ok(AdamW {
            lr,
            wd,
            step: 0,
            params,
        })
    }

    pub(crate) fn apply(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step += 1;
        let t = self.step as i32;
        let (c1, c2) = (1.0 - Self::B1.powi(t), 1.0 - Self::B2.powi(t));
        for (_, var, m, v) in self.params.iter_mut() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Detached: otherwise each step's moments hold the previous step's graph (and its
            // activations) alive, and memory grows without bound.
            let g = g.detach();
            let g = &g;
            *m = ((&*m * Self::B1)? + (g * (1.0 - Self::B1))?)?.detach();
            *v = ((&*v * Self::B2)? + (g.sqr()? * (1.0 - Self::B2))?)?.detach();
            let upd = ((&*m / c1)? / ((&*v / c2)?.sqrt()? + Self::EPS)?)?;
            let p = var.as_tensor();
            let next = ((p * (1.0 - self.lr * self.wd))? - (upd * self.lr)?)?;
            var.set(&next)?;
        }
        Ok(())
    }
}
