//! `qwm bench model`: encoder and predictor forward over batch sizes, one CEM-sized rollout
//! (samples x horizon, objective included), peak GPU buffer bytes, and the same on the CPU
//! backend in the same run.

use std::time::Instant;

use super::plan::{peak_rss_bytes, reset_peak_rss};
use super::record::BenchRecord;
use super::Session;
use crate::app::LoadedModel;
use crate::cpu::qlinear::WeightOnly;
use crate::model::{CpuModel, GpuModel, ObjectiveMode, WorldModel};
use crate::tensor::{randn, uniform};
use crate::Result;

pub struct Options {
    pub batches: Vec<usize>,
    pub cpu_batches: Vec<usize>,
    pub rollout_samples: usize,
    pub horizon: usize,
    pub cpu_rollout: bool,
}

fn fwd(backend: &str, what: &str, batch: usize, t: Vec<f64>) -> BenchRecord {
    let timing = if backend == "gpu" {
        "gpu-wall"
    } else {
        "cpu-wall"
    };
    BenchRecord::new("model", what, &format!("B={batch}"), backend, timing)
        .samples(t)
        .per_second(batch as f64, "samples/s")
}

/// Encoder and full-history predictor forward, then a rollout + objective, on one backend.
/// Forward rows are `reps` wall-clock samples after a warm-up (GPU rows include submit and
/// wait, no readback); the rollout is one sample (the forwards warmed the pipelines) with the
/// costs read back.
#[allow(clippy::too_many_arguments)]
fn bench_backend<M: WorldModel>(
    s: &Session,
    m: &M,
    backend: &str,
    batches: &[usize],
    chunk: usize,
    rollout: Option<(usize, usize)>,
    sync: &dyn Fn(&M::Tensor) -> Result<()>,
) -> Result<Vec<BenchRecord>> {
    let cfg = m.config().clone();
    let name = cfg.name.clone();
    let sz = cfg.encoder.resize;
    let (n, w, de) = (cfg.patches(), cfg.latent_dim(), cfg.visual_dim());
    let mut out = Vec::new();
    // CPU rows carry the process's peak resident memory over the row's calls (model and
    // inputs resident, the peak reset just before).
    let cpu = backend == "cpu";
    let rss = |r: BenchRecord, reset: bool| match peak_rss_bytes().filter(|_| cpu && reset) {
        Some(b) => r.extra("peak_rss_bytes", b),
        None => r,
    };
    for &b in batches {
        let px = m.upload(&uniform(b * 3 * sz * sz, -1.0, 1.0, 1), &[b, 3, sz, sz])?;
        let reset = reset_peak_rss();
        let t = s.time_cpu(|| {
            let z = m.encode_pixels(&px)?;
            sync(&z)
        })?;
        out.push(rss(fwd(backend, &format!("{name} encoder"), b, t), reset));
        let k = cfg.num_hist;
        // The predictor does not split batches itself: time it in chunks of `chunk`.
        let mut hists = Vec::new();
        let mut left = b;
        while left > 0 {
            let c = chunk.min(left);
            hists.push(m.upload(&randn(c * k * n * w, 1.0, 2), &[c, k, n, w])?);
            left -= c;
        }
        let reset = reset_peak_rss();
        let t = s.time_cpu(|| {
            let mut last = None;
            for h in &hists {
                last = Some(m.predict(h)?);
            }
            if let Some(l) = last {
                sync(&l)?;
            }
            Ok(())
        })?;
        let r = fwd(backend, &format!("{name} predictor"), b, t).extra("chunk", chunk);
        out.push(rss(r, reset));
    }
    if let Some((samples, horizon)) = rollout.filter(|&(a, b)| a > 0 && b > 0) {
        let z0 = m.upload(&randn(n * de, 1.0, 3), &[1, n, de])?;
        let p0 = m.upload(&randn(cfg.proprio_dim, 1.0, 4), &[1, cfg.proprio_dim])?;
        let acts = m.upload(
            &randn(samples * horizon * cfg.action_in(), 1.0, 5),
            &[samples, horizon, cfg.action_in()],
        )?;
        let gv = m.upload(&randn(n * de, 1.0, 6), &[n, de])?;
        let gp = m.upload(&randn(cfg.proprio_emb, 1.0, 7), &[cfg.proprio_emb])?;
        let t = Instant::now();
        let r = m.rollout(&z0, &p0, &acts)?;
        let costs = m.objective(&r, &gv, &gp, ObjectiveMode::Last, 1.0)?;
        let c = m.download(&costs)?;
        let secs = t.elapsed().as_secs_f64();
        if c.iter().any(|x| !x.is_finite()) {
            return Err(crate::Error::Invalid(format!(
                "{backend} rollout produced non-finite costs"
            )));
        }
        let timing = if backend == "gpu" {
            "gpu-wall"
        } else {
            "cpu-wall"
        };
        out.push(
            BenchRecord::new(
                "model",
                &format!("{name} rollout"),
                &format!("{samples}x{horizon}"),
                backend,
                timing,
            )
            .samples(vec![secs])
            .per_second(samples as f64, "samples/s")
            .extra("predictor_calls", horizon)
            .extra("chunk", chunk)
            .extra("warmup", 0),
        );
    }
    Ok(out)
}

pub fn run(s: &mut Session, model: &LoadedModel, opts: &Options) -> Result<()> {
    let weights = model.weights();
    let cfg = &weights.config.name;
    s.context
        .insert(format!("model.{cfg}.params"), weights.total_params().into());
    // Host bytes of the weights as held: f32 tensors plus packed codes of quantized linears.
    let f32_bytes: usize = weights.tensors.values().map(|t| t.data.len() * 4).sum();
    let packed = model.quant().map_or(0, |q| q.linear_bytes().0);
    s.context.insert(
        format!("model.{cfg}.host_weight_bytes"),
        (f32_bytes + packed).into(),
    );
    s.context.insert("quant".into(), model.spec().into());
    if let Some(ctx) = &s.gpu {
        let before = ctx.pool_stats().live_bytes;
        let gm = match model.quant() {
            Some(q) => GpuModel::new_quantized(ctx, q)?,
            None => GpuModel::new(ctx, weights)?,
        };
        let weight_bytes = ctx.pool_stats().live_bytes - before;
        let gchunk = gm.predictor_chunk();
        let sync_gpu = |_: &crate::gpu::GpuTensor| -> Result<()> { ctx.wait() };
        let rows = bench_backend(
            s,
            &gm,
            "gpu",
            &opts.batches,
            gchunk,
            Some((opts.rollout_samples, opts.horizon)),
            &sync_gpu,
        )?;
        let peak = ctx.pool_stats().peak_bytes;
        let c = &mut s.context;
        c.insert(format!("model.{cfg}.gpu_weight_bytes"), weight_bytes.into());
        c.insert(format!("model.{cfg}.gpu_peak_buffer_bytes"), peak.into());
        c.insert(
            format!("model.{cfg}.encoder_chunk"),
            gm.encoder_chunk().into(),
        );
        c.insert(format!("model.{cfg}.predictor_chunk"), gchunk.into());
        c.insert("max_binding_bytes".into(), ctx.max_binding_bytes().into());
        s.records.extend(rows);
    }
    if s.cpu {
        let cm = match model.quant() {
            Some(q) => CpuModel::new_quantized_with(q, WeightOnly::from_env()?)?,
            None => CpuModel::new(weights)?,
        };
        // Bytes of the codes the CPU model lays out once for its tiles (on top of the
        // packed weights counted in `host_weight_bytes`).
        let panels: usize = cm.linear_weight_bytes().iter().map(|l| l.3).sum();
        s.context
            .insert(format!("model.{cfg}.cpu_panel_bytes"), panels.into());
        let rows = bench_backend(
            s,
            &cm,
            "cpu",
            &opts.cpu_batches,
            cm.chunk(),
            opts.cpu_rollout
                .then_some((opts.rollout_samples, opts.horizon)),
            &|_| Ok(()),
        )?;
        s.records.extend(rows);
    }
    Ok(())
}
