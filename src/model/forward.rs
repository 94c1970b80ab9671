//! The DINO-WM forward, written once over a [`Backend`]: encode, predict, rollout, the
//! planning objective and decode. [`super::GpuModel`] and [`super::CpuModel`] are this model
//! on the two backends; what differs between them lives in their backend files.

use super::backend::{Backend, Ops, Then};
use super::params::{ParamSource, Params};
use super::{
    check_actions, check_history, objective_weights, Frames, ModelConfig, ObjectiveMode, Rollout,
    RolloutChunk, WorldModel,
};
use crate::{Error, Result};

/// A DINO-WM world model on backend `B`.
pub struct Model<B: Backend> {
    pub(crate) cfg: ModelConfig,
    pub(crate) p: Params<B::T, B::Linear>,
    /// CLS token plus its positional embedding `[1, 1, D]`.
    cls: Option<B::T>,
    /// Positional embedding of the patch tokens `[1, N, D]`.
    enc_pos: B::T,
    pub(crate) backend: B,
}

type T<B> = <B as Backend>::T;

impl<B: Backend> Model<B> {
    /// Walk the parameters through `src` and put the model together on `backend`.
    pub(crate) fn build<S>(cfg: ModelConfig, src: &mut S, backend: B) -> Result<Self>
    where
        S: ParamSource<T = B::T, Linear = B::Linear>,
    {
        let p = Params::load(&cfg, src)?;
        let n = cfg.patches();
        let mut o = backend.ops();
        let (cls, enc_pos) = match &p.cls {
            Some(c) => {
                let first = o.slice_tokens(&p.pos, 0, 1)?;
                (Some(o.add(c, &first)?), o.slice_tokens(&p.pos, 1, n)?)
            }
            None => (None, p.pos.clone()),
        };
        backend.finish(o)?;
        Ok(Model {
            cfg,
            p,
            cls,
            enc_pos,
            backend,
        })
    }

    /// Encoder forward on preprocessed pixels `[B, 3, S, S]` (one chunk): `[B, N, De]`.
    pub(crate) fn encode_with(&self, o: &mut B::Ops<'_>, img: &T<B>) -> Result<T<B>> {
        let (p, e) = (&self.p, &self.cfg.encoder);
        let x = o.patch_embed(img, &p.patch_w, &p.patch_b)?;
        let mut x = o.add_positions(&x, &self.enc_pos)?;
        if let Some(cls) = &self.cls {
            x = o.prepend_token(&x, cls)?;
        }
        for blk in &p.enc_blocks {
            let h = o.layernorm(&x, &blk.n1)?;
            let qkv = o.linear(&blk.qkv, &h)?;
            let a = o.attention(&qkv, e.heads, None)?;
            x = residual(o, &x, &blk.proj, &a, blk.ls1.as_ref())?;
            let h = o.layernorm(&x, &blk.n2)?;
            let h = o.linear_then(&blk.fc1, &h, Then::Gelu)?;
            x = residual(o, &x, &blk.fc2, &h, blk.ls2.as_ref())?;
        }
        let x = o.layernorm(&x, &p.enc_norm)?;
        match self.cls {
            Some(_) => o.slice_tokens(&x, 1, self.cfg.patches()),
            None => Ok(x),
        }
    }

    /// Predictor forward on tokens `[B, k * N, W]` (positional embedding added here).
    pub(crate) fn predict_with(&self, o: &mut B::Ops<'_>, x: &T<B>) -> Result<T<B>> {
        let (p, n) = (&self.p, self.cfg.patches());
        let mut x = o.add_positions(x, &p.pred_pos)?;
        for blk in &p.pred_blocks {
            let h = o.layernorm(&x, &blk.n1)?;
            let qkv = o.linear(&blk.qkv, &h)?;
            let a = o.attention(&qkv, self.cfg.predictor.heads, Some(n))?;
            x = o.linear_then(&blk.out, &a, Then::Add(&x))?;
            let h = o.layernorm(&x, &blk.n2)?;
            let h = o.linear_then(&blk.fc1, &h, Then::Gelu)?;
            x = o.linear_then(&blk.fc2, &h, Then::Add(&x))?;
        }
        o.layernorm(&x, &p.pred_norm)
    }

    /// Frames `0..=steps` of one rollout chunk from `z0 [B, N, De]`, `p0 [B, Pd]` and
    /// normalized `actions [B, steps, frameskip * action_dim]`; also the training rollout
    /// loss, so it stays differentiable on the CPU.
    pub(crate) fn rollout_with(
        &self,
        o: &mut B::Ops<'_>,
        z0: &T<B>,
        p0: &T<B>,
        actions: &T<B>,
    ) -> Result<Vec<T<B>>> {
        let cfg = &self.cfg;
        let ad = B::dims(actions);
        let (b, steps) = (ad[0], ad[1]);
        let (n, de, ep, ea) = (
            cfg.patches(),
            cfg.visual_dim(),
            cfg.proprio_emb,
            cfg.action_emb,
        );
        let pe = o.linear(&self.p.prop, p0)?;
        let a2 = o.reshape(actions, &[b * steps, cfg.action_in()])?;
        let ae = o.linear(&self.p.act, &a2)?;
        let ae = o.reshape(&ae, &[b, steps * ea])?;
        let act_t = |o: &mut B::Ops<'_>, t: usize| match steps {
            1 => o.reshape(&ae, &[b, ea]),
            _ => o.slice_cols(&ae, t * ea, ea),
        };
        let f0 = o.concat_tile(z0, &pe)?;
        let a0 = act_t(o, 0)?;
        let mut frames = vec![o.concat_tile(&f0, &a0)?];
        for t in 1..=steps {
            let k = frames.len().min(cfg.num_hist);
            let hist = o.cat_tokens(&frames[frames.len() - k..])?;
            let out = self.predict_with(o, &hist)?;
            let last = o.slice_tokens(&out, (k - 1) * n, n)?;
            let next = if t < steps {
                let vis = o.slice_cols(&last, 0, de + ep)?;
                let a = act_t(o, t)?;
                o.concat_tile(&vis, &a)?
            } else {
                last
            };
            frames.push(next);
        }
        Ok(frames)
    }

    fn check_last(&self, x: &T<B>, want: usize, what: &str) -> Result<()> {
        let d = B::dims(x);
        if d.last() != Some(&want) {
            let c = &self.cfg;
            return Err(Error::Shape(match what {
                "actions" => format!(
                    "actions have {:?} values per step, the model expects frameskip {} x \
                     action_dim {} = {}",
                    d.last(),
                    c.frameskip,
                    c.action_dim,
                    c.action_in()
                ),
                _ => format!(
                    "proprio has {:?} values, the model expects proprio_dim = {}",
                    d.last(),
                    c.proprio_dim
                ),
            }));
        }
        Ok(())
    }

    pub(crate) fn run<R>(&self, f: impl FnOnce(&mut B::Ops<'_>) -> Result<R>) -> Result<R> {
        let mut o = self.backend.ops();
        let r = f(&mut o)?;
        self.backend.finish(o)?;
        Ok(r)
    }
}

/// `x + l(h)` or, with a LayerScale `g`, `x + g * l(h)`.
fn residual<O: Ops>(
    o: &mut O,
    x: &O::T,
    l: &O::Linear,
    h: &O::T,
    g: Option<&O::T>,
) -> Result<O::T> {
    match g {
        Some(g) => {
            let y = o.linear(l, h)?;
            o.add_scaled(x, &y, g)
        }
        None => o.linear_then(l, h, Then::Add(x)),
    }
}

impl<B: Backend> WorldModel for Model<B> {
    type Tensor = B::T;

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<B::T> {
        self.backend.upload(data, shape)
    }

    fn download(&self, t: &B::T) -> Result<Vec<f32>> {
        self.backend.download(t)
    }

    fn dims(t: &B::T) -> Vec<usize> {
        B::dims(t)
    }

    fn encode(&self, frames: &Frames) -> Result<B::T> {
        let px = self.backend.pixels(frames, &self.cfg)?;
        self.encode_pixels(&px)
    }

    fn encode_pixels(&self, px: &B::T) -> Result<B::T> {
        let s = self.cfg.encoder.resize;
        let b = match B::dims(px)[..] {
            [b, 3, h, w] if h == s && w == s => b,
            ref other => {
                return Err(Error::Shape(format!(
                    "encoder input must be [B, 3, {s}, {s}], got {other:?}"
                )))
            }
        };
        if b == 0 {
            let (n, de) = (self.cfg.patches(), self.cfg.visual_dim());
            return self.run(|o| o.zeros(&[0, n, de]));
        }
        let chunk = self.backend.encoder_chunk(&self.cfg);
        self.run(|o| {
            let mut outs = Vec::new();
            for start in (0..b).step_by(chunk) {
                let x = o.slice_batch(px, start, chunk.min(b - start))?;
                outs.push(self.encode_with(o, &x)?);
            }
            o.cat_batch(&outs)
        })
    }

    fn embed_action(&self, a: &B::T) -> Result<B::T> {
        self.check_last(a, self.cfg.action_in(), "actions")?;
        self.run(|o| o.linear(&self.p.act, a))
    }

    fn embed_proprio(&self, p: &B::T) -> Result<B::T> {
        self.check_last(p, self.cfg.proprio_dim, "proprio")?;
        self.run(|o| o.linear(&self.p.prop, p))
    }

    fn predict(&self, history: &B::T) -> Result<B::T> {
        let (b, k) = check_history(&self.cfg, &B::dims(history))?;
        let (n, w) = (self.cfg.patches(), self.cfg.latent_dim());
        self.run(|o| {
            let x = o.reshape(history, &[b, k * n, w])?;
            let y = self.predict_with(o, &x)?;
            o.reshape(&y, &[b, k, n, w])
        })
    }

    fn rollout(&self, z0: &B::T, proprio0: &B::T, actions: &B::T) -> Result<Rollout<B::T>> {
        let cfg = &self.cfg;
        let (b, _) = check_actions(cfg, &B::dims(actions))?;
        let (n, de) = (cfg.patches(), cfg.visual_dim());
        match B::dims(z0)[..] {
            [_, zn, zd] if zn == n && zd == de => {}
            ref s => {
                return Err(Error::Shape(format!(
                    "z0 must be [B or 1, {n}, {de}] (patches, encoder width), got {s:?}"
                )))
            }
        }
        match B::dims(proprio0)[..] {
            [_, p] if p == cfg.proprio_dim => {}
            ref s => {
                return Err(Error::Shape(format!(
                    "proprio0 must be [B or 1, {}], got {s:?}",
                    cfg.proprio_dim
                )))
            }
        }
        // A batch of 1 is shared by every sample; any other batch must match the actions'.
        let per_sample = |o: &mut B::Ops<'_>, x: &B::T, what: &str, start, len| match B::dims(x)[0]
        {
            xb if xb == b => o.slice_batch(x, start, len),
            1 => o.broadcast_batch(x, len),
            xb => Err(Error::Shape(format!(
                "{what} has batch {xb}; expected 1 or the actions' batch {b}"
            ))),
        };
        let spans = self.backend.spans(b, self.backend.predictor_chunk(cfg));
        let chunks = self.backend.map_spans(&spans, &|start, len| {
            let frames = self.run(|o| {
                let a = o.slice_batch(actions, start, len)?;
                let z = per_sample(o, z0, "z0", start, len)?;
                let p = per_sample(o, proprio0, "proprio0", start, len)?;
                self.rollout_with(o, &z, &p, &a)
            })?;
            Ok(RolloutChunk { start, len, frames })
        })?;
        Ok(Rollout { batch: b, chunks })
    }

    fn objective(
        &self,
        r: &Rollout<B::T>,
        goal_visual: &B::T,
        goal_proprio: &B::T,
        mode: ObjectiveMode,
        alpha: f32,
    ) -> Result<B::T> {
        let cfg = &self.cfg;
        let (n, w, de, ep) = (
            cfg.patches(),
            cfg.latent_dim(),
            cfg.visual_dim(),
            cfg.proprio_emb,
        );
        let count = |t: &B::T| B::dims(t).iter().product::<usize>();
        if count(goal_visual) != n * de {
            return Err(Error::Shape(format!(
                "goal visual latent must be [{n}, {de}] or [1, {n}, {de}], got {:?}",
                B::dims(goal_visual)
            )));
        }
        if count(goal_proprio) != ep {
            return Err(Error::Shape(format!(
                "goal proprio embedding must be [{ep}] or [1, {ep}], got {:?}",
                B::dims(goal_proprio)
            )));
        }
        if !alpha.is_finite() {
            return Err(Error::Invalid(format!("alpha must be finite, got {alpha}")));
        }
        let steps = r.steps();
        if steps == 0 {
            return Err(Error::Invalid("objective of an empty rollout".into()));
        }
        let coeffs = objective_weights(mode, steps)?;
        self.run(|o| {
            let gv = o.reshape(goal_visual, &[1, n, de])?;
            let gp = o.reshape(goal_proprio, &[1, ep])?;
            // Every constant first (GPU uploads land before the recording runs).
            let alpha_t = o.scalar(alpha)?;
            let coef_t = coeffs
                .iter()
                .map(|c| o.scalar(*c))
                .collect::<Result<Vec<_>>>()?;
            let zeros = r
                .chunks
                .iter()
                .map(|c| o.zeros(&[c.len, 1]))
                .collect::<Result<Vec<_>>>()?;
            let mut costs = Vec::new();
            for (c, zero) in r.chunks.iter().zip(zeros) {
                let b = c.len;
                let frames: Vec<(&B::T, &B::T)> = match mode {
                    ObjectiveMode::Last => c
                        .frames
                        .last()
                        .map(|f| (f, &coef_t[0]))
                        .into_iter()
                        .collect(),
                    ObjectiveMode::All { .. } => c.frames.iter().zip(coef_t.iter()).collect(),
                };
                let mut acc: Option<B::T> = None;
                for (f, coef) in frames {
                    let vis = o.slice_cols(f, 0, de)?;
                    let mv = o.mse_per_item(&vis, &gv)?;
                    let mv = o.reshape(&mv, &[b, 1])?;
                    // The proprio embedding of patch 0: columns de..de+ep of the flat frame.
                    let flat = o.reshape(f, &[b, n * w])?;
                    let pr = o.slice_cols(&flat, de, ep)?;
                    let mp = o.mse_per_item(&pr, &gp)?;
                    let mp = o.reshape(&mp, &[b, 1])?;
                    let term = o.add_scaled(&mv, &mp, &alpha_t)?;
                    acc = Some(match (acc, mode) {
                        (None, ObjectiveMode::Last) => term,
                        (prev, _) => {
                            let base = prev.unwrap_or_else(|| zero.clone());
                            o.add_scaled(&base, &term, coef)?
                        }
                    });
                }
                let acc = acc.ok_or_else(|| {
                    Error::Invalid("a rollout chunk without frames has no objective".into())
                })?;
                costs.push(o.reshape(&acc, &[b])?);
            }
            o.cat_batch(&costs)
        })
    }

    fn decode(&self, latents: &B::T) -> Result<B::T> {
        let cfg = &self.cfg;
        let stages =
            self.p.decoder.as_ref().ok_or_else(|| {
                Error::Invalid(format!("the model '{}' has no decoder", cfg.name))
            })?;
        let (n, de, w, g) = (
            cfg.patches(),
            cfg.visual_dim(),
            cfg.latent_dim(),
            cfg.grid(),
        );
        let b = match B::dims(latents)[..] {
            [b, ln, ld] if ln == n && (ld == de || ld == w) => b,
            ref s => {
                return Err(Error::Shape(format!(
                    "decoder input must be [B, {n}, {de}] or [B, {n}, {w}], got {s:?}"
                )))
            }
        };
        let chunk = self.backend.decoder_chunk(b).max(1);
        self.run(|o| {
            let vis = o.slice_cols(latents, 0, de)?;
            let mut outs = Vec::new();
            for start in (0..b).step_by(chunk) {
                let x = o.slice_batch(&vis, start, chunk.min(b - start))?;
                let mut h = o.tokens_to_image(&x, g)?;
                for st in stages {
                    h = o.conv2d(&h, &st.conv_in.w, &st.conv_in.b, 1, 1)?;
                    for (c1, c2) in &st.res {
                        let r = o.relu(&h)?;
                        let r = o.conv2d(&r, &c1.w, &c1.b, 1, 1)?;
                        let r = o.relu(&r)?;
                        let r = o.conv2d(&r, &c2.w, &c2.b, 1, 0)?;
                        h = o.add(&h, &r)?;
                    }
                    h = o.relu(&h)?;
                    h = o.conv_transpose2d(&h, &st.up1.w, &st.up1.b, 2, 1)?;
                    h = o.relu(&h)?;
                    h = o.conv_transpose2d(&h, &st.up2.w, &st.up2.b, 2, 1)?;
                }
                outs.push(h);
            }
            match outs.is_empty() {
                true => o.zeros(&[0, 3, 16 * g, 16 * g]),
                false => o.cat_batch(&outs),
            }
        })
    }
}
