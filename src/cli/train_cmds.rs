//! `qwm train`: train a small world model on a `qwm data` dataset (CPU).

use std::path::PathBuf;

use clap::Args;

use crate::model::ModelConfig;
use crate::train::{self, TrainConfig};

/// The flags' defaults: [`TrainConfig::new`]'s (the model part is set from the flags).
fn defaults() -> TrainConfig {
    TrainConfig::new(ModelConfig::tiny())
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Environment the data comes from (sets the action and proprio sizes).
    #[arg(long)]
    pub env: String,
    /// Dataset directory written by `qwm data`.
    #[arg(long)]
    pub data: PathBuf,
    /// Model file to write; the run's checkpoint, state and loss curves go to <out>.train/.
    #[arg(long)]
    pub out: PathBuf,
    /// Model size preset: small (shipped), tiny, or dinowm (the real sizes; needs a big machine).
    #[arg(long, default_value = "small")]
    pub config: String,
    #[arg(long, default_value_t = defaults().seed)]
    pub seed: u64,
    #[arg(long, default_value_t = defaults().batch)]
    pub batch: usize,
    #[arg(long, default_value_t = defaults().encoder_epochs)]
    pub encoder_epochs: usize,
    #[arg(long, default_value_t = defaults().predictor_epochs)]
    pub predictor_epochs: usize,
    #[arg(long, default_value_t = defaults().decoder_epochs)]
    pub decoder_epochs: usize,
    /// Side of the image the encoder sees (overrides the preset; a multiple of --patch).
    #[arg(long)]
    pub resize: Option<usize>,
    /// Encoder patch size (overrides the preset).
    #[arg(long)]
    pub patch: Option<usize>,
    /// Weight of the probe on all encoder tokens (see docs/MODELS.md; 0 = off).
    #[arg(long, default_value_t = defaults().flat_probe_weight)]
    pub flat_probe_weight: f64,
    /// Weight of the temporal-distance term in the encoder loss (see docs/MODELS.md; 0 = off):
    /// the planner's visual distance grows like the shortest path between states in the data.
    #[arg(long, default_value_t = defaults().td_weight)]
    pub td_weight: f64,
    /// Latent distance allowed per unit of normalized proprio motion (the temporal-distance
    /// slope; 1 makes the visual cost about as steep as the proprio cost at alpha = 1).
    #[arg(long, default_value_t = defaults().td_scale)]
    pub td_scale: f64,
    /// State dimensions the encoder's probes (and --td-weight) use instead of the position
    /// part of proprio, comma-separated (e.g. PushT's agent and block pose: 0,1,2,3,4);
    /// angles enter as (cos, sin).
    #[arg(long, value_delimiter = ',')]
    pub probe_state: Vec<usize>,
    /// Use only the first N episodes of the dataset.
    #[arg(long)]
    pub max_episodes: Option<usize>,
    /// Cap the optimizer steps per epoch.
    #[arg(long)]
    pub max_steps_per_epoch: Option<usize>,
    /// Add an open-loop rollout of this many steps to the predictor loss (0 = teacher
    /// forcing only, as DINO-WM); may change between runs, like the epoch counts.
    #[arg(long, default_value_t = defaults().rollout_steps)]
    pub rollout_steps: usize,
    /// Start from this model file: its config (--config, --resize and --patch are ignored)
    /// and every weight. With --encoder-epochs 0 --predictor-epochs 0 only `decoder.*`
    /// changes, so the model plans exactly as before (planning never reads the decoder). The
    /// data must be the one the model was trained on (its normalization is checked).
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Foreground weight K of the decoder loss: each pixel's squared error weighted by
    /// 1 + K |target - mean frame| (0 = plain MSE; docs/MODELS.md).
    #[arg(long, default_value_t = defaults().decoder_fg_weight)]
    pub decoder_fg_weight: f64,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run_train(a: TrainArgs) -> anyhow::Result<()> {
    let env = crate::env::make(&a.env)?;
    let mut cfg = TrainConfig::for_env(&a.config, env.spec(), a.resize, a.patch)?;
    if let Some(p) = &a.init_from {
        let (model, _) = crate::model::format::read_config(p)?;
        let spec = env.spec();
        if model.action_dim != spec.action_dim || model.proprio_dim != spec.proprio_dim {
            anyhow::bail!(
                "--init-from {}: a model with action_dim {} / proprio_dim {}, not one of {} \
                 ({} / {}); pass the matching --env",
                p.display(),
                model.action_dim,
                model.proprio_dim,
                spec.name,
                spec.action_dim,
                spec.proprio_dim
            );
        }
        cfg.model = model;
        cfg.init_from = Some(p.display().to_string());
    }
    cfg.decoder_fg_weight = a.decoder_fg_weight;
    cfg.seed = a.seed;
    cfg.batch = a.batch;
    cfg.encoder_epochs = a.encoder_epochs;
    cfg.predictor_epochs = a.predictor_epochs;
    cfg.decoder_epochs = a.decoder_epochs;
    cfg.max_episodes = a.max_episodes;
    cfg.flat_probe_weight = a.flat_probe_weight;
    cfg.td_weight = a.td_weight;
    cfg.td_scale = a.td_scale;
    cfg.probe_state = a.probe_state;
    cfg.max_steps_per_epoch = a.max_steps_per_epoch;
    cfg.rollout_steps = a.rollout_steps;
    let opts = train::RunOptions {
        progress: !a.quiet,
        stop_after_epochs: None,
    };
    let r = train::train(&cfg, &a.data, &a.out, &opts)?;
    let params = r.weights.as_ref().map_or(0, |w| w.total_params());
    if r.resumed_epochs > 0 {
        eprintln!("resumed after {} finished epochs", r.resumed_epochs);
    }
    let last = |p: train::Phase| r.epochs.iter().rev().find(|e| e.phase == p);
    for p in [
        train::Phase::Encoder,
        train::Phase::Predictor,
        train::Phase::Decoder,
    ] {
        if let Some(e) = last(p) {
            println!(
                "{:?}: {} epochs, final train {:.4e}, validation {:.4e}",
                p, e.epoch, e.train_loss, e.val_loss
            );
        }
    }
    println!(
        "wrote {} ({} parameters) in {:.0} s; curves in {}",
        a.out.display(),
        params,
        r.seconds,
        train::run_dir(&a.out).display()
    );
    Ok(())
}
