//! `qwm bench model`: encoder and predictor forward over batch sizes, one CEM-sized rollout
//! (samples x horizon, objective included), peak GPU buffer bytes, and the same on the CPU
//! backend in the same run.

use std::time::Instant;

use serde::Serialize;

use super::kernels::AdapterId;
use crate::gpu::GpuContext;
use crate::model::{CpuModel, GpuModel, ObjectiveMode, Weights, WorldModel};
use crate::tensor::{randn, uniform};
use crate::Result;

pub struct Options {
    pub batches: Vec<usize>,
    pub cpu_batches: Vec<usize>,
    pub rollout_samples: usize,
    pub horizon: usize,
    pub reps: usize,
    pub cpu: bool,
    pub cpu_rollout: bool,
}

#[derive(Serialize, Clone, Debug)]
pub struct ForwardResult {
    pub backend: String,
    pub module: String,
    pub batch: usize,
    pub seconds_median: f64,
    pub ms_per_sample: f64,
    pub samples_per_second: f64,
}

#[derive(Serialize, Clone, Debug)]
pub struct RolloutResult {
    pub backend: String,
    pub samples: usize,
    pub horizon: usize,
    pub predictor_calls: usize,
    pub seconds: f64,
    pub samples_per_second: f64,
    pub chunk: usize,
}

#[derive(Serialize, Clone, Debug)]
pub struct ModelBenchReport {
    pub adapter: AdapterId,
    pub config: String,
    pub params: usize,
    pub cpu_threads: usize,
    pub max_binding_bytes: u64,
    pub encoder_chunk: usize,
    pub predictor_chunk: usize,
    pub forward: Vec<ForwardResult>,
    pub rollouts: Vec<RolloutResult>,
    pub gpu_peak_buffer_bytes: u64,
    pub gpu_weight_bytes: u64,
}

impl ModelBenchReport {
    pub fn table(&self) -> String {
        let mut s = format!(
            "adapter: {} ({}, {}, driver {})   config: {} ({} params)   cpu threads: {}\n",
            self.adapter.name,
            self.adapter.backend,
            self.adapter.device_type,
            self.adapter.driver,
            self.config,
            self.params,
            self.cpu_threads
        );
        s += &format!(
            "max binding {} MiB; batch chunks: encoder {}, predictor {}\n",
            self.max_binding_bytes >> 20,
            self.encoder_chunk,
            self.predictor_chunk
        );
        s += &format!(
            "{:<8} {:<10} {:>6} {:>12} {:>12} {:>12}\n",
            "backend", "module", "batch", "median ms", "ms/sample", "samples/s"
        );
        for r in &self.forward {
            s += &format!(
                "{:<8} {:<10} {:>6} {:>12.2} {:>12.3} {:>12.2}\n",
                r.backend,
                r.module,
                r.batch,
                r.seconds_median * 1e3,
                r.ms_per_sample,
                r.samples_per_second
            );
        }
        for r in &self.rollouts {
            s += &format!(
                "rollout {:<4} {} samples x horizon {} ({} predictor calls, chunk {}): {:.2} s, {:.2} samples/s\n",
                r.backend, r.samples, r.horizon, r.predictor_calls, r.chunk, r.seconds, r.samples_per_second
            );
        }
        s += &format!(
            "GPU weights {:.1} MB; peak GPU buffer bytes {:.1} MB\n",
            self.gpu_weight_bytes as f64 / 1e6,
            self.gpu_peak_buffer_bytes as f64 / 1e6
        );
        s
    }
}

fn median<F: FnMut() -> Result<()>>(reps: usize, mut f: F) -> Result<f64> {
    f()?; // warm-up (pipeline compilation, pool)
    let mut v = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64());
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(v[v.len() / 2])
}

fn fwd(backend: &str, module: &str, batch: usize, secs: f64) -> ForwardResult {
    ForwardResult {
        backend: backend.into(),
        module: module.into(),
        batch,
        seconds_median: secs,
        ms_per_sample: secs * 1e3 / batch.max(1) as f64,
        samples_per_second: batch as f64 / secs.max(1e-12),
    }
}

/// Encoder and full-history predictor forward, then a rollout + objective, on one backend.
fn bench_backend<M: WorldModel>(
    m: &M,
    backend: &str,
    batches: &[usize],
    chunk: usize,
    rollout: Option<(usize, usize)>,
    reps: usize,
    sync: &dyn Fn(&M::Tensor) -> Result<()>,
) -> Result<(Vec<ForwardResult>, Option<RolloutResult>)> {
    let cfg = m.config().clone();
    let s = cfg.encoder.resize;
    let (n, w, de) = (cfg.patches(), cfg.latent_dim(), cfg.visual_dim());
    let mut out = Vec::new();
    for &b in batches {
        let px = m.upload(&uniform(b * 3 * s * s, -1.0, 1.0, 1), &[b, 3, s, s])?;
        let t = median(reps, || {
            let z = m.encode_pixels(&px)?;
            sync(&z)
        })?;
        out.push(fwd(backend, "encoder", b, t));
        let k = cfg.num_hist;
        // The predictor does not split batches itself: time it in chunks of `chunk`.
        let mut hists = Vec::new();
        let mut left = b;
        while left > 0 {
            let c = chunk.min(left);
            hists.push(m.upload(&randn(c * k * n * w, 1.0, 2), &[c, k, n, w])?);
            left -= c;
        }
        let t = median(reps, || {
            let mut last = None;
            for h in &hists {
                last = Some(m.predict(h)?);
            }
            if let Some(l) = last {
                sync(&l)?;
            }
            Ok(())
        })?;
        out.push(fwd(backend, "predictor", b, t));
    }
    let ro = match rollout {
        Some((samples, horizon)) if samples > 0 && horizon > 0 => {
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
            Some(RolloutResult {
                backend: backend.into(),
                samples,
                horizon,
                predictor_calls: horizon,
                seconds: secs,
                samples_per_second: samples as f64 / secs,
                chunk,
            })
        }
        _ => None,
    };
    Ok((out, ro))
}

pub fn run(weights: &Weights, opts: &Options) -> Result<ModelBenchReport> {
    let ctx = GpuContext::new()?;
    let before = ctx.pool_stats().live_bytes;
    let gm = GpuModel::new(&ctx, weights)?;
    let weight_bytes = ctx.pool_stats().live_bytes - before;
    let gchunk = gm.predictor_chunk();
    let sync_gpu = |t: &crate::gpu::GpuTensor| -> Result<()> {
        let _ = t;
        ctx.wait()
    };
    let (mut forward, gro) = bench_backend(
        &gm,
        "gpu",
        &opts.batches,
        gchunk,
        Some((opts.rollout_samples, opts.horizon)),
        opts.reps,
        &sync_gpu,
    )?;
    let mut rollouts: Vec<RolloutResult> = gro.into_iter().collect();
    let peak = ctx.pool_stats().peak_bytes;
    if opts.cpu {
        let cm = CpuModel::new(weights)?;
        let (f, cro) = bench_backend(
            &cm,
            "cpu",
            &opts.cpu_batches,
            cm.chunk(),
            if opts.cpu_rollout {
                Some((opts.rollout_samples, opts.horizon))
            } else {
                None
            },
            opts.reps,
            &|_| Ok(()),
        )?;
        forward.extend(f);
        rollouts.extend(cro);
    }
    let r = &ctx.report;
    Ok(ModelBenchReport {
        adapter: AdapterId {
            name: r.name.clone(),
            backend: r.backend.to_string(),
            device_type: r.device_type.to_string(),
            driver: r.driver.clone(),
        },
        config: weights.config.name.clone(),
        params: weights.total_params(),
        cpu_threads: rayon::current_num_threads(),
        max_binding_bytes: ctx.max_binding_bytes(),
        encoder_chunk: gm.encoder_chunk(),
        predictor_chunk: gchunk,
        forward,
        rollouts,
        gpu_peak_buffer_bytes: peak,
        gpu_weight_bytes: weight_bytes,
    })
}
