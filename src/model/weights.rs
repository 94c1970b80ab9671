//! Named host tensors (f32) and the tensor layout a config implies.

use std::collections::BTreeMap;

use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::config::{ModelConfig, Normalization};
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

/// How a tensor is initialised randomly.
#[derive(Clone, Copy, Debug)]
enum Init {
    Ones,
    Zeros,
    Const(f32),
    /// Truncated normal (clipped at 2 std).
    Normal(f32),
}

/// Every tensor name and shape the config implies, in a stable order, with its random init.
fn layout(cfg: &ModelConfig) -> Vec<(String, Vec<usize>, Init)> {
    let mut v: Vec<(String, Vec<usize>, Init)> = Vec::new();
    let mut push = |n: String, s: Vec<usize>, i: Init| v.push((n, s, i));
    let e = &cfg.encoder;
    let d = e.width;
    let lin_std = 0.02;
    // encoder (DINOv2 names, prefixed "encoder.")
    push(
        "encoder.patch_embed.proj.weight".into(),
        vec![d, 3, e.patch, e.patch],
        Init::Normal((1.0 / (3 * e.patch * e.patch) as f32).sqrt()),
    );
    push("encoder.patch_embed.proj.bias".into(), vec![d], Init::Zeros);
    if e.cls_token {
        push(
            "encoder.cls_token".into(),
            vec![1, 1, d],
            Init::Normal(0.02),
        );
    }
    push(
        "encoder.pos_embed".into(),
        vec![1, cfg.enc_tokens(), d],
        Init::Normal(0.02),
    );
    for i in 0..e.depth {
        let p = format!("encoder.blocks.{i}");
        push(format!("{p}.norm1.weight"), vec![d], Init::Ones);
        push(format!("{p}.norm1.bias"), vec![d], Init::Zeros);
        push(
            format!("{p}.attn.qkv.weight"),
            vec![3 * d, d],
            Init::Normal(lin_std),
        );
        push(format!("{p}.attn.qkv.bias"), vec![3 * d], Init::Zeros);
        push(
            format!("{p}.attn.proj.weight"),
            vec![d, d],
            Init::Normal(lin_std),
        );
        push(format!("{p}.attn.proj.bias"), vec![d], Init::Zeros);
        if e.layerscale {
            push(format!("{p}.ls1.gamma"), vec![d], Init::Const(0.1));
        }
        push(format!("{p}.norm2.weight"), vec![d], Init::Ones);
        push(format!("{p}.norm2.bias"), vec![d], Init::Zeros);
        push(
            format!("{p}.mlp.fc1.weight"),
            vec![e.mlp, d],
            Init::Normal(lin_std),
        );
        push(format!("{p}.mlp.fc1.bias"), vec![e.mlp], Init::Zeros);
        push(
            format!("{p}.mlp.fc2.weight"),
            vec![d, e.mlp],
            Init::Normal(lin_std),
        );
        push(format!("{p}.mlp.fc2.bias"), vec![d], Init::Zeros);
        if e.layerscale {
            push(format!("{p}.ls2.gamma"), vec![d], Init::Const(0.1));
        }
    }
    push("encoder.norm.weight".into(), vec![d], Init::Ones);
    push("encoder.norm.bias".into(), vec![d], Init::Zeros);
    // action / proprio encoders (Conv1d, kernel 1)
    let ai = cfg.action_in();
    push(
        "action_encoder.patch_embed.weight".into(),
        vec![cfg.action_emb, ai, 1],
        Init::Normal((1.0 / ai as f32).sqrt()),
    );
    push(
        "action_encoder.patch_embed.bias".into(),
        vec![cfg.action_emb],
        Init::Zeros,
    );
    push(
        "proprio_encoder.patch_embed.weight".into(),
        vec![cfg.proprio_emb, cfg.proprio_dim, 1],
        Init::Normal((1.0 / cfg.proprio_dim as f32).sqrt()),
    );
    push(
        "proprio_encoder.patch_embed.bias".into(),
        vec![cfg.proprio_emb],
        Init::Zeros,
    );
    // predictor (DINO-WM ViTPredictor names)
    let w = cfg.latent_dim();
    let inner = cfg.pred_inner();
    let pm = cfg.predictor.mlp;
    push(
        "predictor.pos_embedding".into(),
        vec![1, cfg.num_hist * cfg.patches(), w],
        Init::Normal(0.02),
    );
    for i in 0..cfg.predictor.depth {
        let p = format!("predictor.transformer.layers.{i}");
        push(format!("{p}.0.norm.weight"), vec![w], Init::Ones);
        push(format!("{p}.0.norm.bias"), vec![w], Init::Zeros);
        push(
            format!("{p}.0.to_qkv.weight"),
            vec![3 * inner, w],
            Init::Normal(lin_std),
        );
        push(
            format!("{p}.0.to_out.0.weight"),
            vec![w, inner],
            Init::Normal(lin_std),
        );
        push(format!("{p}.0.to_out.0.bias"), vec![w], Init::Zeros);
        push(format!("{p}.1.net.0.weight"), vec![w], Init::Ones);
        push(format!("{p}.1.net.0.bias"), vec![w], Init::Zeros);
        push(
            format!("{p}.1.net.1.weight"),
            vec![pm, w],
            Init::Normal(lin_std),
        );
        push(format!("{p}.1.net.1.bias"), vec![pm], Init::Zeros);
        push(
            format!("{p}.1.net.4.weight"),
            vec![w, pm],
            Init::Normal(lin_std),
        );
        push(format!("{p}.1.net.4.bias"), vec![w], Init::Zeros);
    }
    push(
        "predictor.transformer.norm.weight".into(),
        vec![w],
        Init::Ones,
    );
    push(
        "predictor.transformer.norm.bias".into(),
        vec![w],
        Init::Zeros,
    );
    // decoder (DINO-WM VQVAE: upsample_b then dec, each a stride-4 Decoder)
    if let Some(dc) = &cfg.decoder {
        let conv = |co: usize, ci: usize, k: usize| {
            (
                vec![co, ci, k, k],
                Init::Normal((1.0 / (ci * k * k) as f32).sqrt()),
            )
        };
        for (stage, cin, cout) in [("upsample_b", d, d), ("dec", d, 3)] {
            let p = format!("decoder.{stage}.blocks");
            let c = dc.channel;
            let (s, i) = conv(c, cin, 3);
            push(format!("{p}.0.weight"), s, i);
            push(format!("{p}.0.bias"), vec![c], Init::Zeros);
            for r in 0..dc.res_blocks {
                let j = r + 1;
                let (s, i) = conv(dc.res_channel, c, 3);
                push(format!("{p}.{j}.conv.1.weight"), s, i);
                push(
                    format!("{p}.{j}.conv.1.bias"),
                    vec![dc.res_channel],
                    Init::Zeros,
                );
                let (s, i) = conv(c, dc.res_channel, 1);
                push(format!("{p}.{j}.conv.3.weight"), s, i);
                push(format!("{p}.{j}.conv.3.bias"), vec![c], Init::Zeros);
            }
            let t1 = dc.res_blocks + 2;
            let t2 = dc.res_blocks + 4;
            // ConvTranspose2d weights are [CI, CO, K, K].
            push(
                format!("{p}.{t1}.weight"),
                vec![c, c / 2, 4, 4],
                Init::Normal((1.0 / (c * 4) as f32).sqrt()),
            );
            push(format!("{p}.{t1}.bias"), vec![c / 2], Init::Zeros);
            push(
                format!("{p}.{t2}.weight"),
                vec![c / 2, cout, 4, 4],
                Init::Normal((1.0 / (c / 2 * 4) as f32).sqrt()),
            );
            push(format!("{p}.{t2}.bias"), vec![cout], Init::Zeros);
        }
    }
    v
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
        self.config.validate()?;
        self.norm.validate(&self.config)?;
        let exp = expected_tensors(&self.config);
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

    /// CRC-32 (hex) of every tensor's name, shape and values in name order: identifies a
    /// model's content wherever its file lives (calibration data is stamped with it).
    pub fn crc32(&self) -> String {
        let mut h = crc32fast::Hasher::new();
        for (name, t) in &self.tensors {
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
