//! The losses of the three phases, computed over the `Var`s of a [`LossContext`]: the
//! encoder's pixel reconstruction, position probes and temporal-distance term, the
//! predictor's teacher-forced and open-loop rollout latent MSE, the decoder's pixel MSE.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var, D};

use super::config::TrainConfig;
use super::data::{batch_pixels, Data, Latents, Split};
use crate::env::dataset::Episode;
use crate::model::{CpuModel, WorldModel};
use crate::Result;

fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok((a - b)?.sqr()?.mean_all()?)
}

/// Latents, proprio and actions of a batch of frames, flattened in gather order.
#[derive(Default)]
pub(crate) struct Gathered {
    z: Vec<f32>,
    p: Vec<f32>,
    a: Vec<f32>,
}

/// What every loss reads: the settings, the parameters (for the encoder's auxiliary heads)
/// and the data.
pub(crate) struct LossContext<'a> {
    pub(crate) cfg: &'a TrainConfig,
    pub(crate) vars: &'a BTreeMap<String, Var>,
    pub(crate) data: &'a Data,
    /// Mean training frame at the decoder's output size `[1, 3, S, S]`, for the decoder's
    /// foreground weight (only when `decoder_fg_weight > 0`).
    pub(crate) mean_frame: Option<Tensor>,
}

/// The decoder's pixel loss: plain MSE with `k = 0` or no `mean_frame`; otherwise each pixel's
/// squared error (per colour channel) is weighted by `w = 1 + k * |target - mean_frame|` (the
/// absolute difference averaged over the colour channels) and the weighted sum divided by
/// `3 * sum(w)`, so a constant error costs the same as under MSE. `img` and `target` are
/// `[B, 3, S, S]`, `mean_frame` `[1, 3, S, S]`.
pub fn decoder_pixel_loss(
    img: &Tensor,
    target: &Tensor,
    mean_frame: Option<&Tensor>,
    k: f64,
) -> Result<Tensor> {
    match mean_frame {
        Some(bg) if k > 0.0 => {
            let w = ((target.broadcast_sub(bg)?.abs()?.mean_keepdim(1)? * k)? + 1.0)?;
            let err = (img - target)?.sqr()?.broadcast_mul(&w)?.sum_all()?;
            let norm = w.sum_all()?.to_scalar::<f32>()? as f64 * 3.0;
            Ok((err / norm)?)
        }
        _ => mse(img, target),
    }
}

impl LossContext<'_> {
    pub(crate) fn encoder_loss(
        &self,
        model: &CpuModel,
        eps: &[Episode],
        items: &[(usize, usize)],
    ) -> Result<Tensor> {
        let mc = &self.cfg.model;
        let px = batch_pixels(eps, items, mc, None)?;
        let z = model.encode_chunk(&px)?; // [B, N, D]
        let b = items.len();
        let (g, p) = (mc.grid(), mc.encoder.resize / mc.grid());
        let target = px
            .reshape((b, 3, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b, g * g, 3 * p * p))?;
        let v = |n: &str| self.vars[n].as_tensor().clone();
        let rec = crate::cpu::matmul(
            &z,
            &v("aux.pixel_head.weight"),
            Some(&v("aux.pixel_head.bias")),
        )?;
        // Normalized position (the first two proprio dimensions) of every frame.
        let here: Vec<Vec<f32>> = items
            .iter()
            .map(|&(e, t)| self.position(eps, e, t))
            .collect();
        let npos = here[0].len();
        let pos = Tensor::from_vec(here.concat(), (b, npos), &Device::Cpu)?;
        let pred = crate::cpu::matmul(
            &z.mean(1)?,
            &v("aux.probe.weight"),
            Some(&v("aux.probe.bias")),
        )?;
        let mut l = (mse(&rec, &target)? + (mse(&pred, &pos)? * self.cfg.probe_weight)?)?;
        if self.cfg.flat_probe_weight > 0.0 {
            let flat = crate::cpu::matmul(
                &z.flatten_from(1)?,
                &v("aux.flat_probe.weight"),
                Some(&v("aux.flat_probe.bias")),
            )?;
            l = (l + (mse(&flat, &pos)? * self.cfg.flat_probe_weight)?)?;
        }
        if self.cfg.td_weight > 0.0 {
            l = (l + (self.td_loss(model, eps, items, &here, &z)? * self.cfg.td_weight)?)?;
        }
        Ok(l)
    }

    /// Temporal-distance term on the planner's own visual distance `d(a, b)` = root mean
    /// square over tokens and channels (so `d^2` is the objective's visual MSE). Consecutive
    /// frames may be at most `td_scale` x the normalized distance the agent moved apart
    /// (a squared penalty); random pairs are pushed apart (a hinge at `TD_MAX`). The largest
    /// spread that keeps every observed step short is the shortest-path metric of the data's
    /// transitions (METRA / temporal-distance representations use the same constraint):
    /// states that no short sequence of observed steps connects, such as the two sides of a
    /// wall, are pushed far apart, and the planner's cost then says which side the agent is on.
    fn td_loss(
        &self,
        model: &CpuModel,
        eps: &[Episode],
        items: &[(usize, usize)],
        here: &[Vec<f32>],
        z: &Tensor,
    ) -> Result<Tensor> {
        // In units of td_scale x normalized proprio: past the largest shortest path of the
        // built-in tasks (normalized arenas are a few units across), so every pair is pushed.
        const TD_MAX: f64 = 10.0;
        // A soft constraint: on the shipped Wall encoder consecutive frames end up 1.36x
        // their allowance on average (docs/MODELS.md), close enough that the distance still
        // grows with the path between states.
        const TD_PENALTY: f64 = 100.0;
        let mc = &self.cfg.model;
        let b = items.len();
        let next: Vec<(usize, usize)> = items
            .iter()
            .map(|&(e, t)| (e, if t < eps[e].steps { t + 1 } else { t - 1 }))
            .collect();
        let z2 = model.encode_chunk(&batch_pixels(eps, &next, mc, None)?)?;
        let dist = |a: &Tensor, b: &Tensor| -> Result<Tensor> {
            Ok(((a - b)?.sqr()?.flatten_from(1)?.mean(1)? + 1e-8)?.sqrt()?)
        };
        let dist2 =
            |a: &[f32], c: &[f32]| -> f32 { a.iter().zip(c).map(|(x, y)| (x - y).powi(2)).sum() };
        let moved: Vec<f32> = here
            .iter()
            .zip(&next)
            .map(|(a, &(e, u))| {
                dist2(a, &self.position(eps, e, u)).sqrt() * self.cfg.td_scale as f32
            })
            .collect();
        let moved = Tensor::from_vec(moved, b, &Device::Cpu)?;
        let excess = (dist(z, &z2)? - &moved)?.relu()?;
        let step = (excess.sqr()?.mean_all()? * TD_PENALTY)?;
        // Two sets of pairs are pushed apart: each frame against the next item of the
        // (shuffled) batch, which spreads the latents globally, and against the batch item
        // nearest to it in position, which spends the latent's room where it matters to a
        // planner: nearby states that no short path joins (the other side of a wall) end up
        // far apart, nearby states on the same side stay held together by their steps.
        let near: Vec<u32> = (0..b)
            .map(|i| {
                let d2 = |j: usize| dist2(&here[i], &here[j]);
                (0..b)
                    .filter(|&j| j != i)
                    .min_by(|&j, &k| d2(j).total_cmp(&d2(k)))
                    .unwrap_or(i) as u32
            })
            .collect();
        let next_item: Vec<u32> = (0..b as u32).map(|i| (i + 1) % b as u32).collect();
        let hinge = |idx: Vec<u32>| -> Result<Tensor> {
            let other = z.index_select(&Tensor::from_vec(idx, b, &Device::Cpu)?, 0)?;
            Ok((dist(z, &other)? * -1.0)?
                .affine(1.0, TD_MAX * self.cfg.td_scale)?
                .relu()?
                .mean_all()?)
        };
        let spread = (hinge(next_item)? + hinge(near)?)?;
        Ok((step + spread)?)
    }

    /// The probe target of frame `t`: the normalized position part (first two dimensions)
    /// of its proprio, or the `probe_state` dimensions of its state.
    fn position(&self, eps: &[Episode], e: usize, t: usize) -> Vec<f32> {
        if !self.data.probe.is_empty() {
            let sd = eps[e].states.len() / (eps[e].steps + 1);
            let s = &eps[e].states[t * sd..(t + 1) * sd];
            let mut out = Vec::new();
            for &(i, mean, std, angle) in &self.data.probe {
                if angle {
                    out.extend([s[i].cos(), s[i].sin()]);
                } else {
                    out.push((s[i] - mean) / std);
                }
            }
            return out;
        }
        let pd = self.cfg.model.proprio_dim;
        let pr = &eps[e].proprio[t * pd..(t + 1) * pd];
        let mut p = self.data.norm.normalize_proprio(pr);
        p.truncate(pd.min(2));
        p
    }

    /// Append frame `u` of episode `e`: its latent tokens, its normalized proprio and, with
    /// `action`, the normalized actions of the `frameskip` steps that follow it.
    fn gather(
        &self,
        lat: &Latents,
        eps: &[Episode],
        split: Split,
        (e, u): (usize, usize),
        out: &mut Gathered,
        action: bool,
    ) {
        let mc = &self.cfg.model;
        let (fs, nd) = (mc.frameskip, mc.patches() * mc.visual_dim());
        let (pd, ad) = (mc.proprio_dim, mc.action_dim);
        let (ep, norm) = (&eps[e], &self.data.norm);
        out.z
            .extend_from_slice(&lat.episodes(split)[e][u * nd..(u + 1) * nd]);
        out.p
            .extend(norm.normalize_proprio(&ep.proprio[u * pd..(u + 1) * pd]));
        if action {
            out.a
                .extend(norm.normalize_actions(&ep.actions[u * ad..(u + fs) * ad]));
        }
    }

    pub(crate) fn predictor_loss(
        &self,
        model: &CpuModel,
        lat: &Latents,
        eps: &[Episode],
        split: Split,
        items: &[(usize, usize)],
    ) -> Result<Tensor> {
        let mc = &self.cfg.model;
        let (h, fs, n, de) = (mc.num_hist, mc.frameskip, mc.patches(), mc.visual_dim());
        let (pd, ad) = (mc.proprio_dim, mc.action_dim);
        let b = items.len();
        let (mut src, mut tgt) = (Gathered::default(), Gathered::default());
        for &(e, t0) in items {
            for i in 0..h {
                self.gather(lat, eps, split, (e, t0 + i * fs), &mut src, true);
                self.gather(lat, eps, split, (e, t0 + (i + 1) * fs), &mut tgt, false);
            }
        }
        let (z, p, a, zt, pt) = (src.z, src.p, src.a, tgt.z, tgt.p);
        let dev = &Device::Cpu;
        let z = Tensor::from_vec(z, (b, h, n, de), dev)?;
        let zt = Tensor::from_vec(zt, (b, h, n, de), dev)?;
        let p = Tensor::from_vec(p, (b, h, pd), dev)?;
        let pt = Tensor::from_vec(pt, (b, h, pd), dev)?;
        let a = Tensor::from_vec(a, (b, h, fs * ad), dev)?;
        let tile = |x: Tensor| -> Result<Tensor> {
            let k = x.dim(D::Minus1)?;
            Ok(x.unsqueeze(2)?.broadcast_as((b, h, n, k))?)
        };
        let pe = tile(model.embed_proprio(&p)?)?;
        let pet = tile(model.embed_proprio(&pt)?)?;
        let ae = tile(model.embed_action(&a)?)?;
        let x = Tensor::cat(&[&z, &pe, &ae], 3)?.reshape((b, h * n, mc.latent_dim()))?;
        let y = model
            .predict_tokens(&x)?
            .reshape((b, h, n, mc.latent_dim()))?;
        let pred = y.narrow(3, 0, de + mc.proprio_emb)?;
        let target = Tensor::cat(&[&zt, &pet], 3)?;
        mse(&pred, &target)
    }

    /// Mean latent MSE of an open-loop rollout from each window's first frame, made by the
    /// planner's own rollout (`CpuModel::rollout_chunk`): each step's predicted visual and
    /// proprio tokens, with the true action of that step, are the next input frame.
    pub(crate) fn rollout_loss(
        &self,
        model: &CpuModel,
        lat: &Latents,
        eps: &[Episode],
        split: Split,
        items: &[(usize, usize)],
    ) -> Result<Tensor> {
        let mc = &self.cfg.model;
        let steps = self.cfg.rollout_steps;
        let (fs, n, de) = (mc.frameskip, mc.patches(), mc.visual_dim());
        let (pd, ad, ep) = (mc.proprio_dim, mc.action_dim, mc.proprio_emb);
        let b = items.len();
        let mut g = Gathered::default();
        for &(e, t0) in items {
            for i in 0..=steps {
                self.gather(lat, eps, split, (e, t0 + i * fs), &mut g, i < steps);
            }
        }
        let dev = &Device::Cpu;
        let z = Tensor::from_vec(g.z, (b, steps + 1, n, de), dev)?;
        let p = Tensor::from_vec(g.p, (b, steps + 1, pd), dev)?;
        let a = Tensor::from_vec(g.a, (b, steps, fs * ad), dev)?;
        let frames = model.rollout_chunk(
            &z.narrow(1, 0, 1)?.squeeze(1)?,
            &p.narrow(1, 0, 1)?.squeeze(1)?,
            &a,
        )?;
        let pe = model.embed_proprio(&p)?;
        let mut total = Tensor::zeros((), DType::F32, dev)?;
        for (t, frame) in frames.iter().enumerate().skip(1) {
            let pred = frame.narrow(2, 0, de + ep)?;
            let pe_t = pe.narrow(1, t, 1)?.broadcast_as((b, n, ep))?;
            let target = Tensor::cat(&[&z.narrow(1, t, 1)?.squeeze(1)?, &pe_t], 2)?;
            total = (total + mse(&pred, &target)?)?;
        }
        Ok((total / steps as f64)?)
    }

    pub(crate) fn decoder_loss(
        &self,
        model: &CpuModel,
        lat: &Latents,
        eps: &[Episode],
        split: Split,
        items: &[(usize, usize)],
    ) -> Result<Tensor> {
        let mc = &self.cfg.model;
        let (n, de) = (mc.patches(), mc.visual_dim());
        let mut z = Vec::with_capacity(items.len() * n * de);
        for &(e, t) in items {
            z.extend_from_slice(&lat.episodes(split)[e][t * n * de..(t + 1) * n * de]);
        }
        let z = Tensor::from_vec(z, (items.len(), n, de), &Device::Cpu)?;
        let img = model.decode(&z)?;
        let target = batch_pixels(eps, items, mc, Some(16 * mc.grid()))?;
        decoder_pixel_loss(
            &img,
            &target,
            self.mean_frame.as_ref(),
            self.cfg.decoder_fg_weight,
        )
    }
}
