//! Named host tensors (f32) and the tensor layout a config implies.

use std::collections::BTreeMap;

use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::config::{ModelConfig, Normalization};
use super::params::{Init, Layout};
use crate::{Error, Result};

/// One host tensor, row-major f32.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: &[usize], data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::Shape(format!(
                "{} values for shape {shape:?} ({n} elements)",
                data.len()
            )));
        }
        Ok(HostTensor {
            shape: shape.to_vec(),
            data,
        })
    }
}

/// A model's parameters with its config and normalization statistics.
#[derive(Clone, Debug)]
pub struct Weights {
    pub config: ModelConfig,
    pub norm: Normalization,
    pub tensors: BTreeMap<String, HostTensor>,
}

/// Which module a tensor belongs to (for parameter counts).
pub fn module_of(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// Every tensor name and shape the config implies, in file order, with its random init.
fn layout(cfg: &ModelConfig) -> Vec<(String, Vec<usize>, Init)> {
    Layout::of(cfg).tensors
}

/// The parameter count a config implies, `None` on overflow. Only for configs whose sizes are
/// already bounded (`ModelConfig::validate` calls it after its per-field bounds).
pub(crate) fn param_count(cfg: &ModelConfig) -> Option<u64> {
    layout(cfg).iter().try_fold(0u64, |acc, (_, shape, _)| {
        let n = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))?;
        acc.checked_add(n)
    })
}

/// Names and shapes of every tensor the config implies, in file order.
pub fn expected_tensors(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    layout(cfg).into_iter().map(|(n, s, _)| (n, s)).collect()
}

fn name_seed(name: &str, seed: u64) -> u64 {
    // FNV-1a, so each tensor's values depend only on (seed, name).
    let mut h: u64 = 0xcbf29ce484222325 ^ seed;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

impl Weights {
    /// Seeded random initialisation with scales that keep activations finite at full size.
    pub fn random(config: &ModelConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut tensors = BTreeMap::new();
        for (name, shape, init) in layout(config) {
            let n: usize = shape.iter().product();
            let data = match init {
                Init::Ones => vec![1.0; n],
                Init::Zeros => vec![0.0; n],
                Init::Const(c) => vec![c; n],
                Init::Normal(std) => {
                    let mut rng = StdRng::seed_from_u64(name_seed(&name, seed));
                    (0..n)
                        .map(|_| rng.sample::<f32, _>(StandardNormal).clamp(-2.0, 2.0) * std)
                        .collect()
                }
            };
            tensors.insert(name, HostTensor { shape, data });
        }
        Ok(Weights {
            norm: Normalization::identity(config),
            config: config.clone(),
            tensors,
        })
    }

    /// Check names and shapes against the config; errors name expected and given values.
    pub fn validate(&self) -> Result<()> {
        self.validate_except(&|_| false)
    }

    /// [`Weights::validate`] for weights some of whose tensors live elsewhere (a quantized
    /// model's packed linears): the names `elsewhere` accepts must be absent here.
    pub fn validate_except(&self, elsewhere: &dyn Fn(&str) -> bool) -> Result<()> {
        self.config.validate()?;
        self.norm.validate(&self.config)?;
        let mut exp = expected_tensors(&self.config);
        if let Some(n) = exp
            .iter()
            .find(|(n, _)| elsewhere(n) && self.tensors.contains_key(n))
        {
            return Err(Error::Invalid(format!(
                "tensor {} is held both as f32 and packed",
                n.0
            )));
        }
        exp.retain(|(n, _)| !elsewhere(n));
        for (name, shape) in &exp {
            let t = self.tensors.get(name).ok_or_else(|| {
                Error::Invalid(format!(
                    "missing tensor {name} (expected shape {shape:?} for config '{}')",
                    self.config.name
                ))
            })?;
            if &t.shape != shape {
                return Err(Error::Shape(format!(
                    "tensor {name}: the config '{}' implies shape {shape:?}, the file has {:?}",
                    self.config.name, t.shape
                )));
            }
            if t.data.len() != shape.iter().product::<usize>() {
                return Err(Error::Shape(format!(
                    "tensor {name}: {} values for shape {shape:?}",
                    t.data.len()
                )));
            }
            if let Some(i) = t.data.iter().position(|x| !x.is_finite()) {
                return Err(Error::Invalid(format!(
                    "tensor {name} has a non-finite value ({}) at flat index {i}",
                    t.data[i]
                )));
            }
        }
        if self.tensors.len() != exp.len() {
            let known: std::collections::HashSet<&str> =
                exp.iter().map(|(n, _)| n.as_str()).collect();
            let extra: Vec<&str> = self
                .tensors
                .keys()
                .map(|k| k.as_str())
                .filter(|k| !known.contains(k))
                .take(5)
                .collect();
            return Err(Error::Invalid(format!(
                "unexpected tensors for config '{}': {extra:?} (expected {} tensors, found {})",
                self.config.name,
                exp.len(),
                self.tensors.len()
            )));
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<&HostTensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::Invalid(format!("missing tensor {name}")))
    }

    /// Parameter count per module (encoder, action_encoder, proprio_encoder, predictor,
    /// decoder), in file order.
    pub fn param_counts(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = Vec::new();
        for (name, _) in expected_tensors(&self.config) {
            let m = module_of(&name).to_string();
            let n = self.tensors.get(&name).map(|t| t.data.len()).unwrap_or(0);
            match out.iter_mut().find(|(k, _)| *k == m) {
                Some((_, c)) => *c += n,
                None => out.push((m, n)),
            }
        }
        out
    }

    /// CRC-32 (hex) of every tensor's name, shape and values in name order, the decoder's
    /// excepted: identifies what planning computes with wherever the file lives (calibration
    /// data is stamped with it, so retraining the visualization decoder keeps it valid).
    pub fn crc32(&self) -> String {
        let mut h = crc32fast::Hasher::new();
        for (name, t) in self
            .tensors
            .iter()
            .filter(|(n, _)| !n.starts_with("decoder."))
        {
            h.update(name.as_bytes());
            for d in &t.shape {
                h.update(&(*d as u64).to_le_bytes());
            }
            for v in &t.data {
                h.update(&v.to_le_bytes());
            }
        }
        format!("{:08x}", h.finalize())
    }

    pub fn total_params(&self) -> usize {
        self.tensors.values().map(|t| t.data.len()).sum()
    }
}
