//! `ModelConfig`: every size of a DINO-WM style world model, from the real one to test toys.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The frozen ViT encoder (DINOv2 style: pre-LN blocks, qkv with bias, optional LayerScale,
/// optional CLS token that is dropped at the output, final LayerNorm).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EncoderConfig {
    /// Side of the square image the ViT sees (after resizing); a multiple of `patch`.
    pub resize: usize,
    pub patch: usize,
    pub width: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp: usize,
    pub layerscale: bool,
    pub cls_token: bool,
    pub eps: f32,
    /// How frames are resized to `resize` (absent in files written before it existed, which
    /// all used `bilinear`). Written only when it is not `bilinear`, so a qwm model's metadata
    /// stays byte for byte what it was (a decoder-only retraining keeps the file's metadata).
    #[serde(default, skip_serializing_if = "ResizeFilter::is_bilinear")]
    pub resize_filter: ResizeFilter,
}

/// The resize a model was trained with (src/model/preprocess.rs).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ResizeFilter {
    /// Bilinear with half-pixel centres, no antialiasing (PyTorch `F.interpolate(...,
    /// mode="bilinear", align_corners=False, antialias=False)`): qwm's own models.
    #[default]
    Bilinear,
    /// Bilinear with antialiasing when shrinking (torchvision `Resize`, PyTorch
    /// `F.interpolate(..., antialias=True)`): DINO-WM's models (torchvision >= 0.17).
    BilinearAntialias,
}

impl ResizeFilter {
    fn is_bilinear(&self) -> bool {
        *self == ResizeFilter::Bilinear
    }

    pub fn name(self) -> &'static str {
        match self {
            ResizeFilter::Bilinear => "bilinear",
            ResizeFilter::BilinearAntialias => "bilinear_antialias",
        }
    }
}

/// The frame-causal ViT predictor (DINO-WM `ViTPredictor`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PredictorConfig {
    pub depth: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub mlp: usize,
    pub eps: f32,
}

/// The visualization decoder (DINO-WM's VQ-VAE decoder with the codebook disabled): two
/// stages, each a 3x3 conv, `res_blocks` residual blocks, ReLU and two stride-2 transposed
/// convs (x4 per stage).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DecoderConfig {
    pub channel: usize,
    pub res_blocks: usize,
    pub res_channel: usize,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub name: String,
    /// Side of the square RGB frames the model is fed (u8, HWC).
    pub image_size: usize,
    pub encoder: EncoderConfig,
    pub predictor: PredictorConfig,
    pub decoder: Option<DecoderConfig>,
    /// Raw action size per environment step; the model sees `frameskip * action_dim`.
    pub action_dim: usize,
    pub frameskip: usize,
    pub action_emb: usize,
    pub proprio_dim: usize,
    pub proprio_emb: usize,
    pub num_hist: usize,
    /// Provenance of a converted checkpoint (tools/convert_dinowm.py writes the DINO-WM run's
    /// settings here); informational, shown by `qwm model info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ModelConfig {
    /// The real DINO-WM: DINOv2 ViT-S/14 encoder on 224 px frames resized to 196 px (14 x 14
    /// patches, torchvision's antialiased resize), predictor depth 6 x 16 heads of 64, MLP
    /// 2048, width 384 + 10 + 10 = 404.
    pub fn dinowm() -> Self {
        ModelConfig {
            name: "dinowm".into(),
            image_size: 224,
            encoder: EncoderConfig {
                resize: 196,
                patch: 14,
                width: 384,
                depth: 12,
                heads: 6,
                mlp: 1536,
                layerscale: true,
                cls_token: true,
                eps: 1e-6,
                resize_filter: ResizeFilter::BilinearAntialias,
            },
            predictor: PredictorConfig {
                depth: 6,
                heads: 16,
                head_dim: 64,
                mlp: 2048,
                eps: 1e-5,
            },
            decoder: Some(DecoderConfig {
                channel: 384,
                res_blocks: 4,
                res_channel: 128,
            }),
            action_dim: 2,
            frameskip: 5,
            action_emb: 10,
            proprio_dim: 4,
            proprio_emb: 10,
            num_hist: 3,
            source: None,
        }
    }

    /// A toy of the same structure for tests and quick benchmarks: 32 px frames resized to
    /// 24 px, patch 8 (3 x 3 grid), widths 32/40.
    pub fn tiny() -> Self {
        ModelConfig {
            name: "tiny".into(),
            image_size: 32,
            encoder: EncoderConfig {
                resize: 24,
                patch: 8,
                width: 32,
                depth: 2,
                heads: 2,
                mlp: 64,
                layerscale: true,
                cls_token: true,
                eps: 1e-6,
                resize_filter: ResizeFilter::Bilinear,
            },
            predictor: PredictorConfig {
                depth: 2,
                heads: 2,
                head_dim: 16,
                mlp: 64,
                eps: 1e-5,
            },
            decoder: Some(DecoderConfig {
                channel: 8,
                res_blocks: 1,
                res_channel: 4,
            }),
            action_dim: 2,
            frameskip: 5,
            action_emb: 4,
            proprio_dim: 2,
            proprio_emb: 4,
            num_hist: 3,
            source: None,
        }
    }

    /// The size qwm trains and ships (docs/MODELS.md): 64 px frames resized to 32 px, 8 px
    /// patches (4 x 4 = 16 patches), encoder 64 wide x 3 blocks, predictor 3 blocks of 4 heads
    /// x 16, width 64 + 8 + 8 = 80. One CEM step (300 x 5) stays well under 2 s on two CPU
    /// cores. Action and proprio sizes are the environment's (set by the trainer).
    pub fn small() -> Self {
        ModelConfig {
            name: "small".into(),
            image_size: 64,
            encoder: EncoderConfig {
                resize: 32,
                patch: 8,
                width: 64,
                depth: 3,
                heads: 4,
                mlp: 128,
                layerscale: true,
                cls_token: true,
                eps: 1e-6,
                resize_filter: ResizeFilter::Bilinear,
            },
            predictor: PredictorConfig {
                depth: 3,
                heads: 4,
                head_dim: 16,
                mlp: 192,
                eps: 1e-5,
            },
            decoder: Some(DecoderConfig {
                channel: 32,
                res_blocks: 1,
                res_channel: 16,
            }),
            action_dim: 2,
            frameskip: 5,
            action_emb: 8,
            proprio_dim: 2,
            proprio_emb: 8,
            num_hist: 3,
            source: None,
        }
    }

    /// `dinowm`, `small`, `tiny`, or `None`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "dinowm" => Some(Self::dinowm()),
            "small" => Some(Self::small()),
            "tiny" => Some(Self::tiny()),
            _ => None,
        }
    }

    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.encoder.resize / self.encoder.patch
    }
    /// Patch tokens per frame.
    pub fn patches(&self) -> usize {
        self.grid() * self.grid()
    }
    /// Encoder tokens (patches plus the CLS token if any).
    pub fn enc_tokens(&self) -> usize {
        self.patches() + self.encoder.cls_token as usize
    }
    /// Visual latent width (encoder width).
    pub fn visual_dim(&self) -> usize {
        self.encoder.width
    }
    /// Input of the action encoder: `frameskip * action_dim`.
    pub fn action_in(&self) -> usize {
        self.frameskip * self.action_dim
    }
    /// Predictor token width: visual + proprio embedding + action embedding.
    pub fn latent_dim(&self) -> usize {
        self.encoder.width + self.proprio_emb + self.action_emb
    }
    /// Predictor attention inner width (heads x head dim).
    pub fn pred_inner(&self) -> usize {
        self.predictor.heads * self.predictor.head_dim
    }

    /// Check the numbers fit together; errors name the offending field and value.
    pub fn validate(&self) -> Result<()> {
        let e = &self.encoder;
        let p = &self.predictor;
        let pos = |v: usize, what: &str| -> Result<()> {
            if v == 0 {
                Err(Error::Invalid(format!("config: {what} must be > 0, got 0")))
            } else {
                Ok(())
            }
        };
        use crate::limits::*;
        // Upper bounds first: nothing below (layout, parameter count) may overflow or loop
        // over a size a corrupt file made up.
        for (v, w, max) in [
            (self.image_size, "image_size", MAX_IMAGE),
            (e.resize, "encoder.resize", MAX_IMAGE),
            (e.patch, "encoder.patch", MAX_IMAGE),
            (e.width, "encoder.width", MAX_WIDTH),
            (e.depth, "encoder.depth", MAX_DEPTH),
            (e.heads, "encoder.heads", MAX_HEADS),
            (e.mlp, "encoder.mlp", MAX_WIDTH),
            (p.depth, "predictor.depth", MAX_DEPTH),
            (p.heads, "predictor.heads", MAX_HEADS),
            (p.head_dim, "predictor.head_dim", MAX_WIDTH),
            (p.mlp, "predictor.mlp", MAX_WIDTH),
            (self.action_dim, "action_dim", MAX_SMALL_DIM),
            (self.frameskip, "frameskip", MAX_SMALL_DIM),
            (self.action_emb, "action_emb", MAX_WIDTH),
            (self.proprio_dim, "proprio_dim", MAX_SMALL_DIM),
            (self.proprio_emb, "proprio_emb", MAX_WIDTH),
            (self.num_hist, "num_hist", MAX_HIST),
        ] {
            pos(v, w)?;
            if v > max {
                return Err(Error::Invalid(format!(
                    "config: {w} is {v}, more than the {max} qwm supports"
                )));
            }
        }
        if let Some(d) = &self.decoder {
            for (v, w, max) in [
                (d.channel, "decoder.channel", MAX_WIDTH),
                (d.res_blocks, "decoder.res_blocks", MAX_RES_BLOCKS),
                (d.res_channel, "decoder.res_channel", MAX_WIDTH),
            ] {
                if v > max {
                    return Err(Error::Invalid(format!(
                        "config: {w} is {v}, more than the {max} qwm supports"
                    )));
                }
            }
        }
        if !e.resize.is_multiple_of(e.patch) {
            return Err(Error::Invalid(format!(
                "config: encoder.resize {} is not a multiple of encoder.patch {}",
                e.resize, e.patch
            )));
        }
        if self.patches() > MAX_TOKENS {
            return Err(Error::Invalid(format!(
                "config: encoder.resize {} / encoder.patch {} gives {} patches per frame, more \
                 than the {MAX_TOKENS} qwm supports",
                e.resize,
                e.patch,
                self.patches()
            )));
        }
        if !e.width.is_multiple_of(e.heads) {
            return Err(Error::Invalid(format!(
                "config: encoder.width {} is not divisible by encoder.heads {}",
                e.width, e.heads
            )));
        }
        let ehd = e.width / e.heads;
        for (d, w) in [
            (ehd, "encoder head dim"),
            (p.head_dim, "predictor.head_dim"),
        ] {
            if d % 4 != 0 || d > 64 {
                return Err(Error::Invalid(format!(
                    "config: {w} is {d}; the attention kernel needs a multiple of 4 up to 64"
                )));
            }
        }
        for (v, w) in [(e.eps, "encoder.eps"), (p.eps, "predictor.eps")] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::Invalid(format!("config: {w} must be > 0, got {v}")));
            }
        }
        if let Some(d) = &self.decoder {
            if d.channel < 2 || d.res_channel == 0 {
                return Err(Error::Invalid(format!(
                    "config: decoder.channel must be >= 2 and res_channel > 0, got {} and {}",
                    d.channel, d.res_channel
                )));
            }
        }
        // The whole model's size, in checked arithmetic, before anyone allocates it.
        let params = super::weights::param_count(self)
            .ok_or_else(|| Error::Invalid("config: the parameter count overflows".to_string()))?;
        if params > MAX_PARAMS {
            return Err(Error::Invalid(format!(
                "config: {params} parameters, more than the {MAX_PARAMS} qwm supports"
            )));
        }
        Ok(())
    }
}

/// Dataset statistics: actions and proprio are z-normalized as `(x - mean) / std` before the
/// embeddings. Action statistics are per raw action dimension (`action_dim`) and apply to
/// each of the `frameskip` concatenated steps.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Normalization {
    pub action_mean: Vec<f32>,
    pub action_std: Vec<f32>,
    pub proprio_mean: Vec<f32>,
    pub proprio_std: Vec<f32>,
}

impl Normalization {
    /// Zero mean, unit std.
    pub fn identity(cfg: &ModelConfig) -> Self {
        Normalization {
            action_mean: vec![0.0; cfg.action_dim],
            action_std: vec![1.0; cfg.action_dim],
            proprio_mean: vec![0.0; cfg.proprio_dim],
            proprio_std: vec![1.0; cfg.proprio_dim],
        }
    }

    pub fn validate(&self, cfg: &ModelConfig) -> Result<()> {
        for (v, n, w) in [
            (&self.action_mean, cfg.action_dim, "action_mean"),
            (&self.action_std, cfg.action_dim, "action_std"),
            (&self.proprio_mean, cfg.proprio_dim, "proprio_mean"),
            (&self.proprio_std, cfg.proprio_dim, "proprio_std"),
        ] {
            if v.len() != n {
                return Err(Error::Invalid(format!(
                    "normalization: {w} has {} values, expected {n}",
                    v.len()
                )));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::Invalid(format!(
                    "normalization: {w} has a non-finite value"
                )));
            }
        }
        for (v, w) in [
            (&self.action_std, "action_std"),
            (&self.proprio_std, "proprio_std"),
        ] {
            if let Some(x) = v.iter().find(|x| **x <= 0.0) {
                return Err(Error::Invalid(format!(
                    "normalization: {w} must be > 0, found {x}"
                )));
            }
        }
        Ok(())
    }

    /// Normalize raw actions laid out `[.., frameskip * action_dim]` (or `[.., action_dim]`).
    pub fn normalize_actions(&self, raw: &[f32]) -> Vec<f32> {
        let d = self.action_mean.len().max(1);
        raw.iter()
            .enumerate()
            .map(|(i, x)| (x - self.action_mean[i % d]) / self.action_std[i % d])
            .collect()
    }

    /// Inverse of [`Self::normalize_actions`].
    pub fn denormalize_actions(&self, norm: &[f32]) -> Vec<f32> {
        let d = self.action_mean.len().max(1);
        norm.iter()
            .enumerate()
            .map(|(i, x)| x * self.action_std[i % d] + self.action_mean[i % d])
            .collect()
    }

    pub fn normalize_proprio(&self, raw: &[f32]) -> Vec<f32> {
        let d = self.proprio_mean.len().max(1);
        raw.iter()
            .enumerate()
            .map(|(i, x)| (x - self.proprio_mean[i % d]) / self.proprio_std[i % d])
            .collect()
    }
}
