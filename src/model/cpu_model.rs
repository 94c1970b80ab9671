//! The world model on the CPU reference backend (candle), op for op the same as the GPU path.

use candle_core::{Device, Tensor};

use super::quantized::QuantizedModel;
use super::{
    check_actions, check_history, objective_weights, ModelConfig, ObjectiveMode, Rollout,
    RolloutChunk, Weights, WorldModel,
};
use crate::cpu;
use crate::quant::{act, ActObserver, ActParams, ActSpec};
use crate::{Error, Result};

/// The CPU counterpart of [`super::Linear`]: every linear layer goes through it. Quantized
/// layers run the same numerics as the GPU as quantize-dequantize: `w` holds the dequantized
/// weights and the input is fake-quantized when `act` is set.
pub struct CpuLinear {
    /// Weight name, for calibration statistics.
    pub name: String,
    pub w: Tensor,
    pub b: Option<Tensor>,
    pub act: Option<(ActSpec, Option<ActParams>)>,
}

impl CpuLinear {
    /// `observer` (the calibrating model's, if any) sees the input before quantization.
    pub fn forward(&self, x: &Tensor, observer: Option<&ActObserver>) -> Result<Tensor> {
        if let Some(o) = observer {
            o.observe(&self.name, &cpu::to_vec(x)?);
        }
        match &self.act {
            None => cpu::matmul(x, &self.w, self.b.as_ref()),
            Some((spec, params)) => {
                let dims = x.dims().to_vec();
                let k = *dims.last().unwrap_or(&1);
                let mut v = cpu::to_vec(x)?;
                act::fake_quant(&mut v, k, spec, params.as_ref())?;
                cpu::matmul(&cpu::tensor(&v, &dims)?, &self.w, self.b.as_ref())
            }
        }
    }
}

struct Norm {
    g: Tensor,
    b: Tensor,
    eps: f32,
}

impl Norm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        cpu::layernorm(x, &self.g, &self.b, self.eps)
    }
}

struct EncBlock {
    n1: Norm,
    qkv: CpuLinear,
    proj: CpuLinear,
    ls1: Option<Tensor>,
    n2: Norm,
    fc1: CpuLinear,
    fc2: CpuLinear,
    ls2: Option<Tensor>,
}

struct PredBlock {
    n1: Norm,
    qkv: CpuLinear,
    out: CpuLinear,
    n2: Norm,
    fc1: CpuLinear,
    fc2: CpuLinear,
}

struct Conv {
    w: Tensor,
    b: Tensor,
}

struct DecStage {
    conv_in: Conv,
    res: Vec<(Conv, Conv)>,
    up1: Conv,
    up2: Conv,
}

pub struct CpuModel {
    cfg: ModelConfig,
    patch_w: Tensor,
    patch_b: Tensor,
    /// CLS + its positional embedding `[1, 1, D]`.
    cls: Option<Tensor>,
    /// Patch positional embedding `[1, N, D]`.
    enc_pos: Tensor,
    enc_blocks: Vec<EncBlock>,
    enc_norm: Norm,
    act: CpuLinear,
    prop: CpuLinear,
    /// `[1, num_hist * N, W]`.
    pred_pos: Tensor,
    pred_blocks: Vec<PredBlock>,
    pred_norm: Norm,
    decoder: Option<Vec<DecStage>>,
    chunk: usize,
    /// Set while calibrating: every linear reports its inputs here.
    observer: Option<ActObserver>,
}

fn t(w: &Weights, name: &str) -> Result<Tensor> {
    let h = w.get(name)?;
    cpu::tensor(&h.data, &h.shape)
}

fn batch_of(x: &Tensor, b: usize, what: &str) -> Result<Tensor> {
    let xb = x.dim(0)?;
    if xb == b {
        Ok(x.clone())
    } else if xb == 1 {
        let mut s = x.dims().to_vec();
        s[0] = b;
        Ok(x.broadcast_as(s)?.contiguous()?)
    } else {
        Err(Error::Shape(format!(
            "{what} has batch {xb}; expected 1 or the actions' batch {b}"
        )))
    }
}

impl CpuModel {
    pub fn new(w: &Weights) -> Result<Self> {
        Self::build(w, None)
    }

    /// A quantized model as quantize-dequantize (the GPU's numerics in f32).
    pub fn new_quantized(q: &QuantizedModel) -> Result<Self> {
        Self::build(&q.weights, Some(q))
    }

    fn build(w: &Weights, quant: Option<&QuantizedModel>) -> Result<Self> {
        w.validate()?;
        Self::build_from(w.config.clone(), &|name: &str| t(w, name), quant)
    }

    /// A model over tensors that may be candle `Var`s: the forward then records the autodiff
    /// graph (training). `tensors` must hold every name the config implies.
    pub fn from_tensors(
        cfg: ModelConfig,
        tensors: &std::collections::HashMap<String, Tensor>,
    ) -> Result<Self> {
        cfg.validate()?;
        let get = |name: &str| -> Result<Tensor> {
            tensors
                .get(name)
                .cloned()
                .ok_or_else(|| Error::Invalid(format!("missing tensor {name}")))
        };
        Self::build_from(cfg, &get, None)
    }

    fn build_from(
        cfg: ModelConfig,
        get: &dyn Fn(&str) -> Result<Tensor>,
        quant: Option<&QuantizedModel>,
    ) -> Result<Self> {
        let e = &cfg.encoder;
        let (d, n) = (e.width, cfg.patches());
        let lin = |wn: &str, bn: Option<&str>| -> Result<CpuLinear> {
            let act = quant.and_then(|q| {
                q.packed.get(wn)?;
                q.act_for(wn).map(|a| (a, q.act.get(wn).copied()))
            });
            Ok(CpuLinear {
                name: wn.to_string(),
                act,
                w: get(wn)?,
                b: match bn {
                    Some(b) => Some(get(b)?),
                    None => None,
                },
            })
        };
        let norm = |p: &str, eps: f32| -> Result<Norm> {
            Ok(Norm {
                g: get(&format!("{p}.weight"))?,
                b: get(&format!("{p}.bias"))?,
                eps,
            })
        };
        let pos = get("encoder.pos_embed")?.reshape((1, e.cls_token as usize + n, d))?;
        let (cls, enc_pos) = if e.cls_token {
            let c = get("encoder.cls_token")?.reshape((1, 1, d))?;
            (
                Some((c + pos.narrow(1, 0, 1)?)?),
                pos.narrow(1, 1, n)?.contiguous()?,
            )
        } else {
            (None, pos)
        };
        let mut enc_blocks = Vec::new();
        for i in 0..e.depth {
            let p = format!("encoder.blocks.{i}");
            let ls = |k: &str| -> Result<Option<Tensor>> {
                if e.layerscale {
                    Ok(Some(get(&format!("{p}.{k}.gamma"))?))
                } else {
                    Ok(None)
                }
            };
            enc_blocks.push(EncBlock {
                n1: norm(&format!("{p}.norm1"), e.eps)?,
                qkv: lin(
                    &format!("{p}.attn.qkv.weight"),
                    Some(&format!("{p}.attn.qkv.bias")),
                )?,
                proj: lin(
                    &format!("{p}.attn.proj.weight"),
                    Some(&format!("{p}.attn.proj.bias")),
                )?,
                ls1: ls("ls1")?,
                n2: norm(&format!("{p}.norm2"), e.eps)?,
                fc1: lin(
                    &format!("{p}.mlp.fc1.weight"),
                    Some(&format!("{p}.mlp.fc1.bias")),
                )?,
                fc2: lin(
                    &format!("{p}.mlp.fc2.weight"),
                    Some(&format!("{p}.mlp.fc2.bias")),
                )?,
                ls2: ls("ls2")?,
            });
        }
        let act = CpuLinear {
            w: get("action_encoder.patch_embed.weight")?
                .reshape((cfg.action_emb, cfg.action_in()))?,
            b: Some(get("action_encoder.patch_embed.bias")?),
            name: "action_encoder.patch_embed.weight".into(),
            act: None,
        };
        let prop = CpuLinear {
            w: get("proprio_encoder.patch_embed.weight")?
                .reshape((cfg.proprio_emb, cfg.proprio_dim))?,
            b: Some(get("proprio_encoder.patch_embed.bias")?),
            name: "proprio_encoder.patch_embed.weight".into(),
            act: None,
        };
        let pe = cfg.predictor.eps;
        let mut pred_blocks = Vec::new();
        for i in 0..cfg.predictor.depth {
            let p = format!("predictor.transformer.layers.{i}");
            pred_blocks.push(PredBlock {
                n1: norm(&format!("{p}.0.norm"), pe)?,
                qkv: lin(&format!("{p}.0.to_qkv.weight"), None)?,
                out: lin(
                    &format!("{p}.0.to_out.0.weight"),
                    Some(&format!("{p}.0.to_out.0.bias")),
                )?,
                n2: norm(&format!("{p}.1.net.0"), pe)?,
                fc1: lin(
                    &format!("{p}.1.net.1.weight"),
                    Some(&format!("{p}.1.net.1.bias")),
                )?,
                fc2: lin(
                    &format!("{p}.1.net.4.weight"),
                    Some(&format!("{p}.1.net.4.bias")),
                )?,
            });
        }
        let decoder = match &cfg.decoder {
            None => None,
            Some(dc) => {
                let conv = |p: &str| -> Result<Conv> {
                    Ok(Conv {
                        w: get(&format!("{p}.weight"))?,
                        b: get(&format!("{p}.bias"))?,
                    })
                };
                let mut stages = Vec::new();
                for stage in ["upsample_b", "dec"] {
                    let p = format!("decoder.{stage}.blocks");
                    let mut res = Vec::new();
                    for r in 0..dc.res_blocks {
                        let j = r + 1;
                        res.push((
                            conv(&format!("{p}.{j}.conv.1"))?,
                            conv(&format!("{p}.{j}.conv.3"))?,
                        ));
                    }
                    stages.push(DecStage {
                        conv_in: conv(&format!("{p}.0"))?,
                        res,
                        up1: conv(&format!("{p}.{}", dc.res_blocks + 2))?,
                        up2: conv(&format!("{p}.{}", dc.res_blocks + 4))?,
                    });
                }
                Some(stages)
            }
        };
        // Attention scores are materialised on the CPU: bound them to ~256 MB per chunk.
        let tmax = cfg.num_hist * n;
        let per = (cfg.predictor.heads * tmax * tmax * 4).max(1);
        let chunk = ((256usize << 20) / per).clamp(1, 64);
        Ok(CpuModel {
            patch_w: get("encoder.patch_embed.proj.weight")?,
            patch_b: get("encoder.patch_embed.proj.bias")?,
            cls,
            enc_pos,
            enc_blocks,
            enc_norm: norm("encoder.norm", e.eps)?,
            act,
            prop,
            pred_pos: get("predictor.pos_embedding")?,
            pred_blocks,
            pred_norm: norm("predictor.transformer.norm", pe)?,
            decoder,
            chunk,
            observer: None,
            cfg,
        })
    }

    /// This model with an observer on the inputs of every linear (calibration); read the
    /// statistics with [`CpuModel::take_observed`].
    pub fn observing(mut self) -> Self {
        self.observer = Some(ActObserver::default());
        self
    }

    /// Input statistics of every linear since the last call (empty when not observing).
    pub fn take_observed(&self) -> std::collections::BTreeMap<String, crate::quant::ActStats> {
        self.observer.as_ref().map(|o| o.take()).unwrap_or_default()
    }

    /// Samples per chunk (bounds the attention scores materialised on the CPU).
    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// Encoder forward on preprocessed pixels `[B, 3, S, S]`, without batch chunking.
    pub fn encode_chunk(&self, img: &Tensor) -> Result<Tensor> {
        let b = img.dim(0)?;
        let n = self.cfg.patches();
        let x = cpu::patch_embed(img, &self.patch_w, Some(&self.patch_b))?;
        let mut x = x.broadcast_add(&self.enc_pos)?;
        if let Some(cls) = &self.cls {
            let c = cls.broadcast_as((b, 1, self.cfg.encoder.width))?;
            x = Tensor::cat(&[&c, &x], 1)?;
        }
        for blk in &self.enc_blocks {
            let h = blk.n1.forward(&x)?;
            let a = cpu::attention(
                &blk.qkv.forward(&h, self.observer.as_ref())?,
                self.cfg.encoder.heads,
                None,
            )?;
            let o = blk.proj.forward(&a, self.observer.as_ref())?;
            x = match &blk.ls1 {
                Some(g) => cpu::add_scaled(&x, &o, g)?,
                None => cpu::add(&x, &o)?,
            };
            let h = blk.n2.forward(&x)?;
            let h = cpu::gelu(&blk.fc1.forward(&h, self.observer.as_ref())?)?;
            let o = blk.fc2.forward(&h, self.observer.as_ref())?;
            x = match &blk.ls2 {
                Some(g) => cpu::add_scaled(&x, &o, g)?,
                None => cpu::add(&x, &o)?,
            };
        }
        let x = self.enc_norm.forward(&x)?;
        if self.cls.is_some() {
            Ok(x.narrow(1, 1, n)?.contiguous()?)
        } else {
            Ok(x)
        }
    }

    /// Predictor forward on tokens `[B, k * N, W]` (positional embedding added here).
    pub fn predict_tokens(&self, x: &Tensor) -> Result<Tensor> {
        let t = x.dim(1)?;
        let n = self.cfg.patches();
        let pos = self.pred_pos.narrow(1, 0, t)?;
        let mut x = x.broadcast_add(&pos)?;
        for blk in &self.pred_blocks {
            let h = blk.n1.forward(&x)?;
            let a = cpu::attention(
                &blk.qkv.forward(&h, self.observer.as_ref())?,
                self.cfg.predictor.heads,
                Some(n),
            )?;
            x = cpu::add(&x, &blk.out.forward(&a, self.observer.as_ref())?)?;
            let h = blk.n2.forward(&x)?;
            let h = cpu::gelu(&blk.fc1.forward(&h, self.observer.as_ref())?)?;
            x = cpu::add(&x, &blk.fc2.forward(&h, self.observer.as_ref())?)?;
        }
        self.pred_norm.forward(&x)
    }

    /// Frames `0..=steps` of a rollout from `z0 [B, N, De]`, `p0 [B, Pd]` and normalized
    /// `actions [B, steps, frameskip * action_dim]`; also the training rollout loss, so it must
    /// stay differentiable.
    pub(crate) fn rollout_chunk(
        &self,
        z0: &Tensor,
        p0: &Tensor,
        actions: &Tensor,
    ) -> Result<Vec<Tensor>> {
        let cfg = &self.cfg;
        let (b, steps, _) = actions.dims3()?;
        let (n, de, ep, ea) = (
            cfg.patches(),
            cfg.visual_dim(),
            cfg.proprio_emb,
            cfg.action_emb,
        );
        let pe = self.prop.forward(p0, self.observer.as_ref())?;
        let ae = self.act.forward(actions, self.observer.as_ref())?; // [b, T, Ea]
        let act_t = |t: usize| -> Result<Tensor> { Ok(ae.narrow(1, t, 1)?.reshape((b, ea))?) };
        let f0 = cpu::concat_tile(&cpu::concat_tile(z0, &pe)?, &act_t(0)?)?;
        let mut frames = vec![f0];
        for t in 1..=steps {
            let k = frames.len().min(cfg.num_hist);
            let refs: Vec<&Tensor> = frames[frames.len() - k..].iter().collect();
            let hist = Tensor::cat(&refs, 1)?;
            let out = self.predict_tokens(&hist)?;
            let last = out.narrow(1, (k - 1) * n, n)?.contiguous()?;
            let next = if t < steps {
                let vis = cpu::slice_cols(&last, 0, de + ep)?;
                cpu::concat_tile(&vis, &act_t(t)?)?
            } else {
                last
            };
            frames.push(next);
        }
        Ok(frames)
    }
}

impl WorldModel for CpuModel {
    type Tensor = Tensor;

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        cpu::tensor(data, shape)
    }

    fn download(&self, t: &Tensor) -> Result<Vec<f32>> {
        cpu::to_vec(t)
    }

    fn dims(t: &Tensor) -> Vec<usize> {
        t.dims().to_vec()
    }

    fn encode_pixels(&self, px: &Tensor) -> Result<Tensor> {
        let s = self.cfg.encoder.resize;
        let b = match px.dims() {
            [b, 3, h, w] if *h == s && *w == s => *b,
            other => {
                return Err(Error::Shape(format!(
                    "encoder input must be [B, 3, {s}, {s}], got {other:?}"
                )))
            }
        };
        if b == 0 {
            return Ok(Tensor::zeros(
                (0, self.cfg.patches(), self.cfg.visual_dim()),
                candle_core::DType::F32,
                &Device::Cpu,
            )?);
        }
        let mut outs = Vec::new();
        let mut start = 0;
        while start < b {
            let len = self.chunk.min(b - start);
            outs.push(self.encode_chunk(&px.narrow(0, start, len)?)?);
            start += len;
        }
        Ok(Tensor::cat(&outs, 0)?)
    }

    fn embed_action(&self, a: &Tensor) -> Result<Tensor> {
        if a.dims().last() != Some(&self.cfg.action_in()) {
            return Err(Error::Shape(format!(
                "actions have {:?} values per step, the model expects frameskip {} x action_dim {} = {}",
                a.dims().last(),
                self.cfg.frameskip,
                self.cfg.action_dim,
                self.cfg.action_in()
            )));
        }
        self.act.forward(a, self.observer.as_ref())
    }

    fn embed_proprio(&self, p: &Tensor) -> Result<Tensor> {
        if p.dims().last() != Some(&self.cfg.proprio_dim) {
            return Err(Error::Shape(format!(
                "proprio has {:?} values, the model expects proprio_dim = {}",
                p.dims().last(),
                self.cfg.proprio_dim
            )));
        }
        self.prop.forward(p, self.observer.as_ref())
    }

    fn predict(&self, history: &Tensor) -> Result<Tensor> {
        let (b, k) = check_history(&self.cfg, history.dims())?;
        let (n, w) = (self.cfg.patches(), self.cfg.latent_dim());
        let y = self.predict_tokens(&history.reshape((b, k * n, w))?)?;
        Ok(y.reshape((b, k, n, w))?)
    }

    fn rollout(&self, z0: &Tensor, proprio0: &Tensor, actions: &Tensor) -> Result<Rollout<Tensor>> {
        let cfg = &self.cfg;
        let (b, _) = check_actions(cfg, actions.dims())?;
        let (n, de) = (cfg.patches(), cfg.visual_dim());
        match z0.dims() {
            [_, zn, zd] if *zn == n && *zd == de => {}
            s => {
                return Err(Error::Shape(format!(
                    "z0 must be [B or 1, {n}, {de}] (patches, encoder width), got {s:?}"
                )))
            }
        }
        match proprio0.dims() {
            [_, p] if *p == cfg.proprio_dim => {}
            s => {
                return Err(Error::Shape(format!(
                    "proprio0 must be [B or 1, {}], got {s:?}",
                    cfg.proprio_dim
                )))
            }
        }
        let z0 = batch_of(z0, b, "z0")?;
        let p0 = batch_of(proprio0, b, "proprio0")?;
        let mut chunks = Vec::new();
        let mut start = 0;
        while start < b {
            let len = self.chunk.min(b - start);
            let frames = self.rollout_chunk(
                &z0.narrow(0, start, len)?,
                &p0.narrow(0, start, len)?,
                &actions.narrow(0, start, len)?,
            )?;
            chunks.push(RolloutChunk { start, len, frames });
            start += len;
        }
        Ok(Rollout { batch: b, chunks })
    }

    fn objective(
        &self,
        r: &Rollout<Tensor>,
        goal_visual: &Tensor,
        goal_proprio: &Tensor,
        mode: ObjectiveMode,
        alpha: f32,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (n, de, ep) = (cfg.patches(), cfg.visual_dim(), cfg.proprio_emb);
        if goal_visual.elem_count() != n * de {
            return Err(Error::Shape(format!(
                "goal visual latent must be [{n}, {de}] or [1, {n}, {de}], got {:?}",
                goal_visual.dims()
            )));
        }
        if goal_proprio.elem_count() != ep {
            return Err(Error::Shape(format!(
                "goal proprio embedding must be [{ep}] or [1, {ep}], got {:?}",
                goal_proprio.dims()
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
        let gv = goal_visual.reshape((1, n, de))?;
        let gp = goal_proprio.reshape((1, ep))?;
        let mut costs = Vec::new();
        for c in &r.chunks {
            let frames: Vec<(&Tensor, f32)> = match mode {
                ObjectiveMode::Last => vec![(c.frames.last().unwrap(), 1.0)],
                ObjectiveMode::All { .. } => c.frames.iter().zip(coeffs.iter().copied()).collect(),
            };
            let mut acc: Option<Tensor> = None;
            for (f, coef) in frames {
                let mv = cpu::mse_per_item(&cpu::slice_cols(f, 0, de)?, &gv)?;
                let pr = f
                    .narrow(1, 0, 1)?
                    .narrow(2, de, ep)?
                    .squeeze(1)?
                    .contiguous()?;
                let mp = cpu::mse_per_item(&pr, &gp)?;
                let term = (mv + (mp * alpha as f64)?)?;
                acc = Some(match (acc, mode) {
                    (None, ObjectiveMode::Last) => term,
                    (None, _) => (term * coef as f64)?,
                    (Some(p), _) => (p + (term * coef as f64)?)?,
                });
            }
            costs.push(acc.unwrap());
        }
        Ok(Tensor::cat(&costs, 0)?)
    }

    fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let cfg = &self.cfg;
        let stages = self
            .decoder
            .as_ref()
            .ok_or_else(|| Error::Invalid(format!("the model '{}' has no decoder", cfg.name)))?;
        let (n, de, w, g) = (
            cfg.patches(),
            cfg.visual_dim(),
            cfg.latent_dim(),
            cfg.grid(),
        );
        let b = match latents.dims() {
            [b, ln, ld] if *ln == n && (*ld == de || *ld == w) => *b,
            s => {
                return Err(Error::Shape(format!(
                    "decoder input must be [B, {n}, {de}] or [B, {n}, {w}], got {s:?}"
                )))
            }
        };
        let vis = cpu::slice_cols(latents, 0, de)?;
        let mut h = vis.transpose(1, 2)?.contiguous()?.reshape((b, de, g, g))?;
        for st in stages {
            h = cpu::conv2d(&h, &st.conv_in.w, Some(&st.conv_in.b), 1, 1)?;
            for (c1, c2) in &st.res {
                let r = cpu::relu(&h)?;
                let r = cpu::conv2d(&r, &c1.w, Some(&c1.b), 1, 1)?;
                let r = cpu::relu(&r)?;
                let r = cpu::conv2d(&r, &c2.w, Some(&c2.b), 1, 0)?;
                h = cpu::add(&h, &r)?;
            }
            h = cpu::relu(&h)?;
            h = cpu::conv_transpose2d(&h, &st.up1.w, Some(&st.up1.b), 2, 1)?;
            h = cpu::relu(&h)?;
            h = cpu::conv_transpose2d(&h, &st.up2.w, Some(&st.up2.b), 2, 1)?;
        }
        Ok(h)
    }
}
