//! What to train and how long ([`TrainConfig`], with every default written once in
//! [`TrainConfig::new`]), the phases, and what a run reports.

use serde::{Deserialize, Serialize};

use crate::env::EnvSpec;
use crate::model::{ModelConfig, Weights};
use crate::{Error, Result};

/// What to train and how long.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub seed: u64,
    pub batch: usize,
    pub encoder_epochs: usize,
    pub predictor_epochs: usize,
    pub decoder_epochs: usize,
    pub encoder_lr: f64,
    pub predictor_lr: f64,
    pub decoder_lr: f64,
    pub weight_decay: f64,
    /// Weight of the proprio-position probe on the mean-pooled tokens in the encoder loss.
    pub probe_weight: f64,
    /// Weight of a second probe on all tokens (flattened). It learns at once where the first
    /// can sit on a plateau for epochs (small objects, e.g. PointMaze's ball); 0 disables it.
    #[serde(default)]
    pub flat_probe_weight: f64,
    /// Weight of the temporal-distance term in the encoder loss (0 disables it; see
    /// `Ctx::td_loss` and docs/MODELS.md). It shapes the planner's visual cost itself: the
    /// root-mean-square distance between two frames' tokens is pushed apart for random pairs
    /// and held below `td_scale` x the (normalized) distance the agent moved for consecutive
    /// frames, so it grows like the shortest path the data can take between two states, and
    /// states on either side of an obstacle end up far apart.
    #[serde(default)]
    pub td_weight: f64,
    /// Latent distance allowed per unit of normalized proprio motion between consecutive
    /// frames (the slope of the temporal-distance metric).
    #[serde(default = "default_td_scale")]
    pub td_scale: f64,
    /// State dimensions the probes (and the temporal-distance term) see instead of the
    /// position part of proprio; empty = proprio position. Dimensions named "... angle" enter
    /// as (cos, sin), the others z-normalized over the training episodes. PushT needs the
    /// block pose here: its proprio is the agent alone.
    #[serde(default)]
    pub probe_state: Vec<usize>,
    /// Use at most this many episodes of the dataset (all when None).
    pub max_episodes: Option<usize>,
    /// Cap on optimizer steps per epoch (all batches when None).
    pub max_steps_per_epoch: Option<usize>,
    /// Fraction of episodes held out for validation (DINO-WM: 0.1).
    pub val_fraction: f64,
    /// Open-loop rollout steps added to the predictor loss (0: teacher forcing only, as
    /// DINO-WM). With `k > 0` each window is also rolled out from its first frame for `k`
    /// steps exactly as planning does (the model's own predictions fed back) and the mean
    /// latent MSE of those steps is added; this is what a planner sees, and it stops errors
    /// from compounding over the horizon. May change between runs, like the epoch counts.
    #[serde(default)]
    pub rollout_steps: usize,
    /// Start from this model file's weights instead of a seeded initialisation (its config
    /// and normalization must be the run's). With zero encoder and predictor epochs only the
    /// decoder trains: the way to give a finished model's decoder more epochs when its run
    /// directory is gone (docs/MODELS.md). Planning never reads the decoder.
    #[serde(default)]
    pub init_from: Option<String>,
    /// Foreground weight `k` of the decoder loss: each pixel's squared error is weighted by
    /// `1 + k * |target - mean frame|` (mean over the colour channels, in the [-1, 1] pixel
    /// units the decoder outputs) and the sum divided by the sum of the weights
    /// ([`decoder_pixel_loss`](super::decoder_pixel_loss)). The agent is a few pixels of a
    /// mostly static scene, so plain MSE (k = 0) learns the rooms first and the agent last.
    #[serde(default)]
    pub decoder_fg_weight: f64,
}

impl TrainConfig {
    /// Defaults for the model preset `preset` (small, tiny, dinowm) sized for `env`'s actions
    /// and proprio, named `<preset>-<env>`, with optional encoder input side and patch size.
    pub fn for_env(
        preset: &str,
        env: &EnvSpec,
        resize: Option<usize>,
        patch: Option<usize>,
    ) -> Result<Self> {
        let mut model = ModelConfig::preset(preset).ok_or_else(|| {
            Error::Invalid(format!(
                "unknown --config '{preset}'; use small, tiny or dinowm"
            ))
        })?;
        model.action_dim = env.action_dim;
        model.proprio_dim = env.proprio_dim;
        model.name = format!("{preset}-{}", env.name);
        if let Some(r) = resize {
            model.encoder.resize = r;
        }
        if let Some(p) = patch {
            model.encoder.patch = p;
        }
        Ok(TrainConfig::new(model))
    }

    /// Defaults for a model config (action/proprio sizes must already match the data).
    pub fn new(model: ModelConfig) -> Self {
        TrainConfig {
            model,
            seed: 0,
            batch: 32,
            encoder_epochs: 4,
            predictor_epochs: 12,
            decoder_epochs: 2,
            encoder_lr: 1e-3,
            predictor_lr: 5e-4,
            decoder_lr: 1e-3,
            weight_decay: 0.01,
            probe_weight: 1.0,
            flat_probe_weight: 0.0,
            td_weight: 0.0,
            td_scale: default_td_scale(),
            probe_state: Vec::new(),
            max_episodes: None,
            max_steps_per_epoch: None,
            val_fraction: 0.1,
            rollout_steps: 0,
            init_from: None,
            decoder_fg_weight: 0.0,
        }
    }

    /// Every count and weight against its bound (`crate::limits`), before any data is read or
    /// allocated; errors name the `qwm train` flag.
    pub fn validate(&self) -> Result<()> {
        use crate::limits::{
            check_f64, check_opt, check_range, MAX_BATCH, MAX_EPISODES, MAX_EPOCHS, MAX_ROLLOUT,
            MAX_SMALL_DIM, MAX_STEPS,
        };
        self.model.validate()?;
        check_range("--batch", self.batch, 1, MAX_BATCH)?;
        check_range("--encoder-epochs", self.encoder_epochs, 0, MAX_EPOCHS)?;
        check_range("--predictor-epochs", self.predictor_epochs, 0, MAX_EPOCHS)?;
        check_range("--decoder-epochs", self.decoder_epochs, 0, MAX_EPOCHS)?;
        check_range("--rollout-steps", self.rollout_steps, 0, MAX_ROLLOUT)?;
        check_opt("--max-episodes", self.max_episodes, 2, MAX_EPISODES)?;
        check_opt(
            "--max-steps-per-epoch",
            self.max_steps_per_epoch,
            1,
            MAX_STEPS,
        )?;
        check_range(
            "--probe-state (the number of dimensions)",
            self.probe_state.len(),
            0,
            MAX_SMALL_DIM,
        )?;
        for (what, v) in [
            ("--flat-probe-weight", self.flat_probe_weight),
            ("--td-weight", self.td_weight),
            ("--td-scale", self.td_scale),
            ("the probe weight", self.probe_weight),
            ("the weight decay", self.weight_decay),
        ] {
            check_f64(what, v, 0.0, 1e6)?;
        }
        for (what, v) in [
            ("the encoder learning rate", self.encoder_lr),
            ("the predictor learning rate", self.predictor_lr),
            ("the decoder learning rate", self.decoder_lr),
        ] {
            check_f64(what, v, 0.0, 1e3)?;
        }
        check_f64("the validation fraction", self.val_fraction, 0.0, 0.9)?;
        Ok(())
    }
}

pub(crate) fn default_td_scale() -> f64 {
    1.0
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Encoder,
    Predictor,
    Decoder,
}

impl Phase {
    pub(crate) const ALL: [Phase; 3] = [Phase::Encoder, Phase::Predictor, Phase::Decoder];
    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Encoder => "encoder",
            Phase::Predictor => "predictor",
            Phase::Decoder => "decoder",
        }
    }
    pub(crate) fn prefixes(self) -> &'static [&'static str] {
        match self {
            Phase::Encoder => &["encoder.", "aux."],
            Phase::Predictor => &["predictor.", "action_encoder."],
            Phase::Decoder => &["decoder."],
        }
    }
    pub(crate) fn index(self) -> u64 {
        self as u64
    }
}

/// One finished epoch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochLog {
    pub phase: Phase,
    pub epoch: usize,
    pub steps: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub seconds: f64,
}

/// How to run (not part of the settings a resumed run must match).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Progress bars and per-epoch lines on stderr.
    pub progress: bool,
    /// Stop after this many finished epochs in total (an interruption, for tests); the model
    /// file is not written then.
    pub stop_after_epochs: Option<usize>,
}

/// What a run produced.
pub struct TrainReport {
    /// None when the run stopped early ([`RunOptions::stop_after_epochs`]).
    pub weights: Option<Weights>,
    pub epochs: Vec<EpochLog>,
    pub resumed_epochs: usize,
    pub seconds: f64,
}
