//! Training small DINO-WM models on `qwm data` datasets, on the CPU with candle's autodiff.
//!
//! Three phases, as in DINO-WM's recipe (REFERENCE.md section 3), with the encoder pretrained
//! here because no DINOv2 weights can be downloaded:
//! 1. **encoder**: the ViT is trained on single frames with a masked-autoencoder-style pixel
//!    head (each patch token reconstructs its own patch) plus a linear probe from the
//!    mean-pooled tokens to the position part of proprio; both heads are dropped afterwards
//!    and the encoder is frozen (docs/MODELS.md says why).
//! 2. **predictor**: latents of every frame are computed once with the frozen encoder; the
//!    predictor and the action encoder learn with teacher forcing on windows of `num_hist`
//!    frames `frameskip` steps apart, MSE on the visual and proprio channels of the next frames
//!    (action channels excluded). The proprio encoder stays at its seeded initialisation:
//!    its output is also the target, and training it lets that target collapse.
//! 3. **decoder**: the visualization decoder on detached latents, pixel MSE.
//!
//! Every epoch ends with a validation loss, a checkpoint (all parameters and the optimizer
//! moments) and rewritten `loss.csv` / `loss.png`; an interrupted run resumes from the last
//! finished epoch with the same batches it would have drawn.

mod adamw;
mod checkpoint;
mod config;
mod data;
mod losses;
pub(crate) mod plot;

use std::path::Path;
use std::time::Instant;

use candle_core::Tensor;

use adamw::AdamW;
use checkpoint::{
    init_from_model, init_vars, load_checkpoint, model_over, save_checkpoint, weights_of, State,
};
use data::{
    batch_pixels, encode_all, epoch_batches, frame_items, load_data, val_subset, window_items,
    Latents, Split,
};
use losses::LossContext;

pub use losses::decoder_pixel_loss;

pub use checkpoint::run_dir;
pub use config::{EpochLog, Phase, RunOptions, TrainConfig, TrainReport};

use crate::{Error, Result};

/// Train (or resume) a model on the dataset in `data_dir`; writes the model to `out` and the
/// run's files to [`run_dir`]`(out)`.
pub fn train(
    cfg: &TrainConfig,
    data_dir: &Path,
    out: &Path,
    opts: &RunOptions,
) -> Result<TrainReport> {
    let progress = opts.progress;
    cfg.validate()?;
    // Two runs on one --out would interleave their checkpoints and state.
    if let Some(d) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let _lock = crate::io::FileLock::acquire_patiently(out)?.ok_or_else(|| {
        Error::Invalid(format!(
            "--out {}: another qwm train is writing this run now; wait for it to finish (a \
             rerun then resumes) or pick another --out",
            out.display()
        ))
    })?;
    let start = Instant::now();
    let data = load_data(data_dir, cfg)?;
    let dir = run_dir(out);
    let vars = init_vars(cfg, data.probe_len(&cfg.model))?;
    let data_key = data_dir.display().to_string();
    let mut state = State {
        config: cfg.clone(),
        data: data_key.clone(),
        epochs: Vec::new(),
        adam_step: 0,
        finished: false,
    };
    let state_path = dir.join("state.json");
    if state_path.exists() {
        let text = crate::io::read_text(&state_path)?;
        let old: State = serde_json::from_str(&text).map_err(|e| {
            Error::Invalid(format!(
                "{}: {e}; delete it to start over",
                state_path.display()
            ))
        })?;
        // The schedule (epoch counts, steps per epoch, rollout steps) may change between runs
        // (extend or shorten a phase, fine-tune with rollouts); nothing else.
        let same = TrainConfig {
            encoder_epochs: cfg.encoder_epochs,
            predictor_epochs: cfg.predictor_epochs,
            decoder_epochs: cfg.decoder_epochs,
            rollout_steps: cfg.rollout_steps,
            max_steps_per_epoch: cfg.max_steps_per_epoch,
            ..old.config.clone()
        } == *cfg;
        if !same || old.data != data_key {
            return Err(Error::Invalid(format!(
                "{} belongs to a run with other settings or data; delete {} to start over or pass the same settings",
                state_path.display(),
                dir.display()
            )));
        }
        state = State {
            config: cfg.clone(),
            ..old
        };
    }
    let resumed_epochs = state.epochs.len();
    let mc = &cfg.model;
    if let (Some(p), 0) = (&cfg.init_from, resumed_epochs) {
        init_from_model(&vars, p, mc, &data.norm)?;
    }
    if cfg.decoder_fg_weight < 0.0 || !cfg.decoder_fg_weight.is_finite() {
        return Err(Error::Invalid(format!(
            "--decoder-fg-weight {}: must be a finite number >= 0",
            cfg.decoder_fg_weight
        )));
    }
    let mean_frame = if cfg.decoder_fg_weight > 0.0 && mc.decoder.is_some() {
        // The background the foreground weight measures against: the mean of (up to 4096)
        // training frames, a fixed subset so a resumed run weights the same pixels.
        // Summed in chunks: 4096 frames at once would take 200 MB at 64 px.
        let items = val_subset(&frame_items(&data.train), 4096);
        let mut sum: Option<Tensor> = None;
        for chunk in items.chunks(256) {
            let px = batch_pixels(&data.train, chunk, mc, Some(16 * mc.grid()))?;
            let s = px.sum_keepdim(0)?;
            sum = Some(match sum {
                Some(acc) => (acc + s)?,
                None => s,
            });
        }
        sum.map(|s| s / items.len() as f64).transpose()?
    } else {
        None
    };
    let ctx = LossContext {
        cfg,
        vars: &vars,
        data: &data,
        mean_frame,
    };
    let mut latents: Option<Latents> = None;
    if resumed_epochs > 0 {
        load_checkpoint(&dir, &vars, None)?;
    }
    for phase in Phase::ALL {
        let (epochs, lr) = match phase {
            Phase::Encoder => (cfg.encoder_epochs, cfg.encoder_lr),
            Phase::Predictor => (cfg.predictor_epochs, cfg.predictor_lr),
            Phase::Decoder => (
                if mc.decoder.is_some() {
                    cfg.decoder_epochs
                } else {
                    0
                },
                cfg.decoder_lr,
            ),
        };
        let done = state.epochs.iter().filter(|e| e.phase == phase).count();
        if done >= epochs {
            continue;
        }
        // The predictor and decoder learn from the frozen encoder's latents, so the encoder
        // cannot change once they ran. The predictor and decoder do not depend on each other:
        // either may be extended later.
        if phase == Phase::Encoder && state.epochs.iter().any(|e| e.phase > phase) {
            return Err(Error::Invalid(format!(
                "{}: the encoder phase cannot get more epochs after later phases ran on its \
                 latents; delete the directory to start over",
                dir.display(),
            )));
        }
        let mut opt = AdamW::new(&vars, phase, lr, cfg.weight_decay)?;
        if !state.finished && state.epochs.last().map(|e| e.phase) == Some(phase) {
            // Interrupted inside this phase: the checkpoint holds its optimizer moments.
            load_checkpoint(&dir, &vars, Some(&mut opt))?;
            opt.step = state.adam_step;
        } else if done > 0 && progress {
            // Extending a phase after the run finished or moved on: its moments are gone.
            eprintln!(
                "{}: {} more epochs after epoch {done}, with a fresh optimizer",
                phase.name(),
                epochs - done
            );
        }
        let model = model_over(&vars, mc, false)?;
        let (train_items, val_items) = match phase {
            Phase::Encoder | Phase::Decoder => (frame_items(&data.train), frame_items(&data.val)),
            Phase::Predictor => (
                window_items(&data.train, mc, cfg.rollout_steps),
                window_items(&data.val, mc, cfg.rollout_steps),
            ),
        };
        if train_items.is_empty() || val_items.is_empty() {
            return Err(Error::Invalid(
                "not enough frames for a training window in train or validation episodes".into(),
            ));
        }
        let val_items = val_subset(&val_items, 2048);
        if phase != Phase::Encoder && latents.is_none() {
            latents = Some(encode_all(&model_over(&vars, mc, true)?, &data, mc)?);
        }
        let loss_of = |items: &[(usize, usize)], split: Split| -> Result<Tensor> {
            let eps = data.episodes(split);
            match phase {
                Phase::Encoder => ctx.encoder_loss(&model, eps, items),
                Phase::Predictor => {
                    let lat = latents.as_ref().ok_or_else(no_latents)?;
                    let tf = ctx.predictor_loss(&model, lat, eps, split, items)?;
                    if cfg.rollout_steps == 0 {
                        Ok(tf)
                    } else {
                        Ok((tf + ctx.rollout_loss(&model, lat, eps, split, items)?)?)
                    }
                }
                Phase::Decoder => {
                    let lat = latents.as_ref().ok_or_else(no_latents)?;
                    ctx.decoder_loss(&model, lat, eps, split, items)
                }
            }
        };
        for epoch in done..epochs {
            let t0 = Instant::now();
            let batches = epoch_batches(
                train_items.len(),
                cfg.batch,
                cfg.seed,
                phase,
                epoch,
                cfg.max_steps_per_epoch,
            );
            let bar = progress_bar(
                progress,
                batches.len(),
                &format!("{} {}/{}", phase.name(), epoch + 1, epochs),
            );
            let mut sum = 0.0;
            for (k, b) in batches.iter().enumerate() {
                let items: Vec<(usize, usize)> = b.iter().map(|&i| train_items[i]).collect();
                let loss = loss_of(&items, Split::Train)?;
                let lv = loss.to_scalar::<f32>()? as f64;
                if !lv.is_finite() {
                    return Err(Error::Invalid(format!(
                        "{} loss became {lv} at epoch {} step {k}; lower the learning rate",
                        phase.name(),
                        epoch + 1
                    )));
                }
                sum += lv;
                opt.apply(&loss)?;
                if let Some(bar) = &bar {
                    bar.set_message(format!("loss {:.4e}", sum / (k + 1) as f64));
                    bar.inc(1);
                }
            }
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            let mut vsum = 0.0;
            let mut vn = 0;
            for chunk in val_items.chunks(64) {
                let l = loss_of(chunk, Split::Validation)?
                    .detach()
                    .to_scalar::<f32>()? as f64;
                vsum += l * chunk.len() as f64;
                vn += chunk.len();
            }
            let log = EpochLog {
                phase,
                epoch: epoch + 1,
                steps: batches.len(),
                train_loss: sum / batches.len().max(1) as f64,
                val_loss: vsum / vn.max(1) as f64,
                seconds: t0.elapsed().as_secs_f64(),
            };
            if progress {
                eprintln!(
                    "{} epoch {}/{}: train {:.4e}  val {:.4e}  ({:.0} s)",
                    phase.name(),
                    epoch + 1,
                    epochs,
                    log.train_loss,
                    log.val_loss,
                    log.seconds
                );
            }
            state.epochs.push(log);
            state.finished = false;
            state.adam_step = opt.step;
            save_checkpoint(&dir, &vars, Some(&opt), &state)?;
            if opts
                .stop_after_epochs
                .is_some_and(|k| state.epochs.len() >= k)
            {
                return Ok(TrainReport {
                    weights: None,
                    epochs: state.epochs,
                    resumed_epochs,
                    seconds: start.elapsed().as_secs_f64(),
                });
            }
        }
    }
    let weights = weights_of(&vars, mc, &data.norm)?;
    crate::model::format::save(&weights, out)?;
    state.finished = true;
    save_checkpoint(&dir, &vars, None, &state)?;
    Ok(TrainReport {
        weights: Some(weights),
        epochs: state.epochs,
        resumed_epochs,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn progress_bar(on: bool, len: usize, what: &str) -> Option<indicatif::ProgressBar> {
    if !on {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    Some(bar)
}

/// The predictor and decoder phases encode the data before their loss is built; reaching a
/// loss without latents is a bug in this module, reported instead of a panic.
fn no_latents() -> Error {
    Error::Invalid("internal error: training latents were not encoded before the loss".into())
}
