//! The world model on the GPU. Weights are uploaded once; every forward records into a
//! [`Recorder`] and nothing is read back until the caller asks.

use super::quantized::QuantizedModel;
use super::{
    check_actions, check_history, objective_weights, ModelConfig, ObjectiveMode, Rollout,
    RolloutChunk, Weights, WorldModel,
};
use crate::gpu::qops::{self, GpuQuantWeight};
use crate::gpu::{ops, GpuContext, GpuTensor, Recorder};
use crate::quant::{ActParams, ActSpec};
use crate::{Error, Result};

/// A linear layer's weight on the GPU: f32 `[N, K]` (K contiguous, PyTorch layout), or packed
/// low-bit codes dequantized inside the matmul (never an f32 copy).
pub enum LinearWeight {
    F32(GpuTensor),
    Packed(GpuQuantWeight),
}

/// Every linear layer of the encoder and predictor (and the Conv1d k=1 embeddings) goes
/// through this one type, so quantization is a change of `w` and `act` here.
pub struct Linear {
    pub w: LinearWeight,
    pub b: Option<GpuTensor>,
    /// Activation quantization of the input (with the static range when not per-token).
    pub act: Option<(ActSpec, Option<ActParams>)>,
}

impl Linear {
    pub fn forward(&self, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        match (&self.w, &self.act) {
            (LinearWeight::F32(w), None) => ops::matmul(rec, x, w, self.b.as_ref()),
            (LinearWeight::Packed(q), None) => qops::qmatmul(rec, x, q, self.b.as_ref()),
            (LinearWeight::Packed(q), Some((spec, params))) => {
                let xq = qops::quant_act(rec, x, spec, params.as_ref())?;
                let mut shape = x.shape().to_vec();
                *shape.last_mut().unwrap() = q.n;
                qops::qmatmul_a8(rec, &xq, q, self.b.as_ref(), &shape, true)
            }
            (LinearWeight::F32(_), Some(_)) => Err(Error::Invalid(
                "activation quantization needs quantized weights (specs are w<bits>a<bits>)".into(),
            )),
        }
    }
    pub fn out_features(&self) -> usize {
        match &self.w {
            LinearWeight::F32(w) => w.shape()[0],
            LinearWeight::Packed(q) => q.n,
        }
    }
}

struct Norm {
    g: GpuTensor,
    b: GpuTensor,
    eps: f32,
}

impl Norm {
    fn forward(&self, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        ops::layernorm(rec, x, &self.g, &self.b, self.eps)
    }
}

struct EncBlock {
    n1: Norm,
    qkv: Linear,
    proj: Linear,
    ls1: Option<GpuTensor>,
    n2: Norm,
    fc1: Linear,
    fc2: Linear,
    ls2: Option<GpuTensor>,
}

struct PredBlock {
    n1: Norm,
    qkv: Linear,
    out: Linear,
    n2: Norm,
    fc1: Linear,
    fc2: Linear,
}

struct Conv {
    w: GpuTensor,
    b: GpuTensor,
}

struct DecStage {
    conv_in: Conv,
    res: Vec<(Conv, Conv)>,
    up1: Conv,
    up2: Conv,
}

pub struct GpuModel<'a> {
    ctx: &'a GpuContext,
    cfg: ModelConfig,
    patch_w: GpuTensor,
    patch_b: GpuTensor,
    /// CLS token + its positional embedding, `[1, D]`.
    cls: Option<GpuTensor>,
    /// Positional embedding of the patch tokens, `[1, N * D]`.
    enc_pos: GpuTensor,
    enc_blocks: Vec<EncBlock>,
    enc_norm: Norm,
    act: Linear,
    prop: Linear,
    pred_pos: GpuTensor,
    pred_blocks: Vec<PredBlock>,
    pred_norm: Norm,
    decoder: Option<Vec<DecStage>>,
    max_chunk: Option<usize>,
}

fn up(ctx: &GpuContext, w: &Weights, name: &str) -> Result<GpuTensor> {
    let t = w.get(name)?;
    ctx.upload(&t.data, &t.shape)
}

fn up_as(ctx: &GpuContext, w: &Weights, name: &str, shape: &[usize]) -> Result<GpuTensor> {
    let t = w.get(name)?;
    ctx.upload(&t.data, shape)
}

/// `v[1, L]` (or `[L]`) tiled to `[b, L]`.
fn tile_rows(rec: &mut Recorder, v: &GpuTensor, b: usize) -> Result<GpuTensor> {
    let l = v.len();
    let empty = rec.ctx().alloc(&[1, b, 0])?;
    let y = ops::concat_tile(rec, &empty, &v.reshape(&[1, l])?)?;
    y.reshape(&[b, l])
}

/// Items `start..start+len` of a batch tensor `[B, ...]`.
fn slice_batch(rec: &mut Recorder, x: &GpuTensor, start: usize, len: usize) -> Result<GpuTensor> {
    let b = x.shape()[0];
    if start == 0 && len == b {
        return Ok(x.clone());
    }
    let per = x.len() / b.max(1);
    let y = ops::slice_cols(rec, &x.reshape(&[1, b * per])?, start * per, len * per)?;
    let mut s = x.shape().to_vec();
    s[0] = len;
    y.reshape(&s)
}

/// Concatenate along the batch dimension.
fn cat_batch(rec: &mut Recorder, parts: &[GpuTensor]) -> Result<GpuTensor> {
    let mut acc = parts[0].clone();
    for p in &parts[1..] {
        let y = ops::concat_tile(
            rec,
            &acc.reshape(&[1, acc.len()])?,
            &p.reshape(&[1, p.len()])?,
        )?;
        let mut s = acc.shape().to_vec();
        s[0] += p.shape()[0];
        acc = y.reshape(&s)?;
    }
    Ok(acc)
}

/// A batch of 1 broadcast to `b`, or `b` unchanged.
fn broadcast_batch(rec: &mut Recorder, x: &GpuTensor, b: usize, what: &str) -> Result<GpuTensor> {
    let xb = x.shape()[0];
    if xb == b {
        Ok(x.clone())
    } else if xb == 1 {
        let y = tile_rows(rec, x, b)?;
        let mut s = x.shape().to_vec();
        s[0] = b;
        y.reshape(&s)
    } else {
        Err(Error::Shape(format!(
            "{what} has batch {xb}; expected 1 or the actions' batch {b}"
        )))
    }
}

impl<'a> GpuModel<'a> {
    /// Validate and upload the weights (once).
    pub fn new(ctx: &'a GpuContext, w: &Weights) -> Result<Self> {
        Self::build(ctx, w, None)
    }

    /// A quantized model: the quantized linears hold only their packed codes on the GPU.
    pub fn new_quantized(ctx: &'a GpuContext, q: &QuantizedModel) -> Result<Self> {
        Self::build(ctx, &q.weights, Some(q))
    }

    fn build(ctx: &'a GpuContext, w: &Weights, quant: Option<&QuantizedModel>) -> Result<Self> {
        w.validate()?;
        let cfg = w.config.clone();
        let e = &cfg.encoder;
        let d = e.width;
        let n = cfg.patches();
        let lin = |wn: &str, bn: Option<&str>| -> Result<Linear> {
            let packed = quant.and_then(|q| q.packed.get(wn).map(|p| (q, p)));
            Ok(Linear {
                w: match packed {
                    Some((_, p)) => LinearWeight::Packed(GpuQuantWeight::upload(ctx, p)?),
                    None => LinearWeight::F32(up(ctx, w, wn)?),
                },
                b: match bn {
                    Some(b) => Some(up(ctx, w, b)?),
                    None => None,
                },
                act: match packed {
                    Some((q, _)) => q.act_for(wn).map(|a| (a, q.act.get(wn).copied())),
                    None => None,
                },
            })
        };
        let norm = |p: &str, eps: f32| -> Result<Norm> {
            Ok(Norm {
                g: up(ctx, w, &format!("{p}.weight"))?,
                b: up(ctx, w, &format!("{p}.bias"))?,
                eps,
            })
        };
        let pos = &w.get("encoder.pos_embed")?.data;
        let (cls, enc_pos) = if e.cls_token {
            let c = &w.get("encoder.cls_token")?.data;
            let row: Vec<f32> = c.iter().zip(&pos[..d]).map(|(a, b)| a + b).collect();
            (
                Some(ctx.upload(&row, &[1, d])?),
                ctx.upload(&pos[d..], &[1, n * d])?,
            )
        } else {
            (None, ctx.upload(pos, &[1, n * d])?)
        };
        let mut enc_blocks = Vec::new();
        for i in 0..e.depth {
            let p = format!("encoder.blocks.{i}");
            let ls = |k: &str| -> Result<Option<GpuTensor>> {
                if e.layerscale {
                    Ok(Some(up(ctx, w, &format!("{p}.{k}.gamma"))?))
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
        let act = Linear {
            w: LinearWeight::F32(up_as(
                ctx,
                w,
                "action_encoder.patch_embed.weight",
                &[cfg.action_emb, cfg.action_in()],
            )?),
            b: Some(up(ctx, w, "action_encoder.patch_embed.bias")?),
            act: None,
        };
        let prop = Linear {
            w: LinearWeight::F32(up_as(
                ctx,
                w,
                "proprio_encoder.patch_embed.weight",
                &[cfg.proprio_emb, cfg.proprio_dim],
            )?),
            b: Some(up(ctx, w, "proprio_encoder.patch_embed.bias")?),
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
        let pp = w.get("predictor.pos_embedding")?;
        let pred_pos = ctx.upload(&pp.data, &[1, pp.data.len()])?;
        let decoder = match &cfg.decoder {
            None => None,
            Some(dc) => {
                let conv = |p: &str| -> Result<Conv> {
                    Ok(Conv {
                        w: up(ctx, w, &format!("{p}.weight"))?,
                        b: up(ctx, w, &format!("{p}.bias"))?,
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
        Ok(GpuModel {
            ctx,
            patch_w: up(ctx, w, "encoder.patch_embed.proj.weight")?,
            patch_b: up(ctx, w, "encoder.patch_embed.proj.bias")?,
            cls,
            enc_pos,
            enc_blocks,
            enc_norm: norm("encoder.norm", e.eps)?,
            act,
            prop,
            pred_pos,
            pred_blocks,
            pred_norm: norm("predictor.transformer.norm", pe)?,
            decoder,
            max_chunk: None,
            cfg,
        })
    }

    pub fn ctx(&self) -> &'a GpuContext {
        self.ctx
    }

    /// Cap the batch chunk size (tests of the splitting path; `None` = from device limits).
    pub fn set_max_chunk(&mut self, n: Option<usize>) {
        self.max_chunk = n.map(|n| n.max(1));
    }

    fn cap(&self, fit: usize) -> usize {
        let fit = fit.max(1);
        match self.max_chunk {
            Some(m) => fit.min(m),
            None => fit,
        }
    }

    /// Samples per encoder chunk: the largest per-sample activation (qkv or MLP hidden)
    /// must fit one storage binding.
    pub fn encoder_chunk(&self) -> usize {
        let e = &self.cfg.encoder;
        let t = self.cfg.enc_tokens();
        let s = e.resize;
        let per = [
            t * 3 * e.width,
            t * e.mlp,
            3 * s * s,
            self.cfg.patches() * 3 * e.patch * e.patch,
        ]
        .into_iter()
        .max()
        .unwrap() as u64
            * 4;
        self.cap((self.ctx.max_binding_bytes() / per) as usize)
    }

    /// Samples per predictor/rollout chunk, from the largest per-sample activation at a full
    /// history (qkv, MLP hidden, the history tokens).
    pub fn predictor_chunk(&self) -> usize {
        let t = self.cfg.num_hist * self.cfg.patches();
        let per = [
            t * 3 * self.cfg.pred_inner(),
            t * self.cfg.predictor.mlp,
            t * self.cfg.latent_dim(),
        ]
        .into_iter()
        .max()
        .unwrap() as u64
            * 4;
        self.cap((self.ctx.max_binding_bytes() / per) as usize)
    }

    fn encode_chunk(&self, rec: &mut Recorder, img: &GpuTensor) -> Result<GpuTensor> {
        let b = img.shape()[0];
        let d = self.cfg.encoder.width;
        let n = self.cfg.patches();
        let heads = self.cfg.encoder.heads;
        let x = ops::patch_embed(rec, img, &self.patch_w, Some(&self.patch_b))?;
        let pos = tile_rows(rec, &self.enc_pos, b)?.reshape(&[b, n, d])?;
        let mut x = ops::add(rec, &x, &pos)?;
        let t = self.cfg.enc_tokens();
        if let Some(cls) = &self.cls {
            let c = tile_rows(rec, cls, b)?;
            x = ops::concat_tile(rec, &c, &x.reshape(&[b, n * d])?)?.reshape(&[b, t, d])?;
        }
        for blk in &self.enc_blocks {
            let h = blk.n1.forward(rec, &x)?;
            let qkv = blk.qkv.forward(rec, &h)?;
            let a = ops::attention(rec, &qkv, heads, None)?;
            let o = blk.proj.forward(rec, &a)?;
            x = match &blk.ls1 {
                Some(g) => ops::add_scaled(rec, &x, &o, g)?,
                None => ops::add(rec, &x, &o)?,
            };
            let h = blk.n2.forward(rec, &x)?;
            let h = blk.fc1.forward(rec, &h)?;
            let h = ops::gelu(rec, &h)?;
            let o = blk.fc2.forward(rec, &h)?;
            x = match &blk.ls2 {
                Some(g) => ops::add_scaled(rec, &x, &o, g)?,
                None => ops::add(rec, &x, &o)?,
            };
        }
        let x = self.enc_norm.forward(rec, &x)?;
        if self.cls.is_some() {
            ops::slice_cols(rec, &x.reshape(&[b, t * d])?, d, n * d)?.reshape(&[b, n, d])
        } else {
            Ok(x)
        }
    }

    /// Predictor on tokens `[b, k * N, W]`.
    fn predict_tokens(&self, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        let (b, t, w) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let n = self.cfg.patches();
        let pos = if t * w == self.pred_pos.len() {
            self.pred_pos.clone()
        } else {
            ops::slice_cols(rec, &self.pred_pos, 0, t * w)?
        };
        let pos = tile_rows(rec, &pos, b)?.reshape(&[b, t, w])?;
        let mut x = ops::add(rec, x, &pos)?;
        for blk in &self.pred_blocks {
            let h = blk.n1.forward(rec, &x)?;
            let qkv = blk.qkv.forward(rec, &h)?;
            let a = ops::attention(rec, &qkv, self.cfg.predictor.heads, Some(n))?;
            let o = blk.out.forward(rec, &a)?;
            x = ops::add(rec, &x, &o)?;
            let h = blk.n2.forward(rec, &x)?;
            let h = blk.fc1.forward(rec, &h)?;
            let h = ops::gelu(rec, &h)?;
            let o = blk.fc2.forward(rec, &h)?;
            x = ops::add(rec, &x, &o)?;
        }
        self.pred_norm.forward(rec, &x)
    }

    /// Frames `[b, N, W]` concatenated along tokens: `[b, k * N, W]`.
    fn cat_frames(&self, rec: &mut Recorder, frames: &[GpuTensor]) -> Result<GpuTensor> {
        let (n, w) = (self.cfg.patches(), self.cfg.latent_dim());
        let b = frames[0].shape()[0];
        let mut acc = frames[0].reshape(&[b, n * w])?;
        for f in &frames[1..] {
            acc = ops::concat_tile(rec, &acc, &f.reshape(&[b, n * w])?)?;
        }
        acc.reshape(&[b, frames.len() * n, w])
    }

    fn rollout_chunk(
        &self,
        rec: &mut Recorder,
        z0: &GpuTensor,
        p0: &GpuTensor,
        actions: &GpuTensor,
    ) -> Result<Vec<GpuTensor>> {
        let cfg = &self.cfg;
        let (b, steps) = (actions.shape()[0], actions.shape()[1]);
        let (n, w, de) = (cfg.patches(), cfg.latent_dim(), cfg.visual_dim());
        let (ea, ep) = (cfg.action_emb, cfg.proprio_emb);
        let pe = self.prop.forward(rec, p0)?;
        let ae = self
            .act
            .forward(rec, &actions.reshape(&[b * steps, cfg.action_in()])?)?
            .reshape(&[b, steps * ea])?;
        let act_t = |rec: &mut Recorder, t: usize| -> Result<GpuTensor> {
            if steps == 1 {
                ae.reshape(&[b, ea])
            } else {
                ops::slice_cols(rec, &ae, t * ea, ea)
            }
        };
        let a0 = act_t(rec, 0)?;
        let f0 = ops::concat_tile(rec, z0, &pe)?;
        let f0 = ops::concat_tile(rec, &f0, &a0)?;
        let mut frames = vec![f0];
        for t in 1..=steps {
            let k = frames.len().min(cfg.num_hist);
            let hist = self.cat_frames(rec, &frames[frames.len() - k..])?;
            let out = self.predict_tokens(rec, &hist)?;
            let last = if k == 1 {
                out.reshape(&[b, n, w])?
            } else {
                ops::slice_cols(rec, &out.reshape(&[b, k * n * w])?, (k - 1) * n * w, n * w)?
                    .reshape(&[b, n, w])?
            };
            let next = if t < steps {
                let vis = ops::slice_cols(rec, &last, 0, de + ep)?;
                let a = act_t(rec, t)?;
                ops::concat_tile(rec, &vis, &a)?
            } else {
                last
            };
            frames.push(next);
        }
        Ok(frames)
    }

    fn decode_item(&self, rec: &mut Recorder, x: &GpuTensor, eye: &GpuTensor) -> Result<GpuTensor> {
        let g = self.cfg.grid();
        let de = self.cfg.visual_dim();
        let stages = self.decoder.as_ref().unwrap();
        // [N, De] -> [De, N] as I[De, De] x^T (matmul computes X W^T).
        let mut h = ops::matmul(rec, eye, x, None)?.reshape(&[1, de, g, g])?;
        for st in stages {
            h = ops::conv2d(rec, &h, &st.conv_in.w, Some(&st.conv_in.b), 1, 1)?;
            for (c1, c2) in &st.res {
                let r = ops::relu(rec, &h)?;
                let r = ops::conv2d(rec, &r, &c1.w, Some(&c1.b), 1, 1)?;
                let r = ops::relu(rec, &r)?;
                let r = ops::conv2d(rec, &r, &c2.w, Some(&c2.b), 1, 0)?;
                h = ops::add(rec, &h, &r)?;
            }
            h = ops::relu(rec, &h)?;
            h = ops::conv_transpose2d(rec, &h, &st.up1.w, Some(&st.up1.b), 2, 1)?;
            h = ops::relu(rec, &h)?;
            h = ops::conv_transpose2d(rec, &h, &st.up2.w, Some(&st.up2.b), 2, 1)?;
        }
        Ok(h)
    }
}

impl WorldModel for GpuModel<'_> {
    type Tensor = GpuTensor;

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<GpuTensor> {
        self.ctx.upload(data, shape)
    }

    fn download(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        self.ctx.read(t)
    }

    fn dims(t: &GpuTensor) -> Vec<usize> {
        t.shape().to_vec()
    }

    fn encode_pixels(&self, px: &GpuTensor) -> Result<GpuTensor> {
        let s = self.cfg.encoder.resize;
        let b = match px.shape() {
            [b, 3, h, w] if *h == s && *w == s => *b,
            other => {
                return Err(Error::Shape(format!(
                    "encoder input must be [B, 3, {s}, {s}], got {other:?}"
                )))
            }
        };
        let chunk = self.encoder_chunk();
        let mut rec = Recorder::new(self.ctx);
        let mut outs = Vec::new();
        let mut start = 0;
        while start < b {
            let len = chunk.min(b - start);
            let x = slice_batch(&mut rec, px, start, len)?;
            outs.push(self.encode_chunk(&mut rec, &x)?);
            start += len;
        }
        let out = if outs.is_empty() {
            self.ctx
                .alloc(&[0, self.cfg.patches(), self.cfg.visual_dim()])?
        } else {
            cat_batch(&mut rec, &outs)?
        };
        rec.submit()?;
        Ok(out)
    }

    fn embed_action(&self, a: &GpuTensor) -> Result<GpuTensor> {
        if a.shape().last() != Some(&self.cfg.action_in()) {
            return Err(Error::Shape(format!(
                "actions have {:?} values per step, the model expects frameskip {} x action_dim {} = {}",
                a.shape().last(),
                self.cfg.frameskip,
                self.cfg.action_dim,
                self.cfg.action_in()
            )));
        }
        let mut rec = Recorder::new(self.ctx);
        let y = self.act.forward(&mut rec, a)?;
        rec.submit()?;
        Ok(y)
    }

    fn embed_proprio(&self, p: &GpuTensor) -> Result<GpuTensor> {
        if p.shape().last() != Some(&self.cfg.proprio_dim) {
            return Err(Error::Shape(format!(
                "proprio has {:?} values, the model expects proprio_dim = {}",
                p.shape().last(),
                self.cfg.proprio_dim
            )));
        }
        let mut rec = Recorder::new(self.ctx);
        let y = self.prop.forward(&mut rec, p)?;
        rec.submit()?;
        Ok(y)
    }

    fn predict(&self, history: &GpuTensor) -> Result<GpuTensor> {
        let (b, k) = check_history(&self.cfg, history.shape())?;
        let (n, w) = (self.cfg.patches(), self.cfg.latent_dim());
        let mut rec = Recorder::new(self.ctx);
        let y = self.predict_tokens(&mut rec, &history.reshape(&[b, k * n, w])?)?;
        rec.submit()?;
        y.reshape(&[b, k, n, w])
    }

    fn rollout(
        &self,
        z0: &GpuTensor,
        proprio0: &GpuTensor,
        actions: &GpuTensor,
    ) -> Result<Rollout<GpuTensor>> {
        let cfg = &self.cfg;
        let (b, _) = check_actions(cfg, actions.shape())?;
        let (n, de) = (cfg.patches(), cfg.visual_dim());
        match z0.shape() {
            [_, zn, zd] if *zn == n && *zd == de => {}
            s => {
                return Err(Error::Shape(format!(
                    "z0 must be [B or 1, {n}, {de}] (patches, encoder width), got {s:?}"
                )))
            }
        }
        match proprio0.shape() {
            [_, p] if *p == cfg.proprio_dim => {}
            s => {
                return Err(Error::Shape(format!(
                    "proprio0 must be [B or 1, {}], got {s:?}",
                    cfg.proprio_dim
                )))
            }
        }
        let chunk = self.predictor_chunk();
        let mut chunks = Vec::new();
        let mut start = 0;
        while start < b {
            let len = chunk.min(b - start);
            let mut rec = Recorder::new(self.ctx);
            let a = slice_batch(&mut rec, actions, start, len)?;
            let z = if z0.shape()[0] == b {
                slice_batch(&mut rec, z0, start, len)?
            } else {
                broadcast_batch(&mut rec, z0, len, "z0")?
            };
            let p = if proprio0.shape()[0] == b {
                slice_batch(&mut rec, proprio0, start, len)?
            } else {
                broadcast_batch(&mut rec, proprio0, len, "proprio0")?
            };
            let frames = self.rollout_chunk(&mut rec, &z, &p, &a)?;
            rec.submit()?;
            chunks.push(RolloutChunk { start, len, frames });
            start += len;
        }
        Ok(Rollout { batch: b, chunks })
    }

    fn objective(
        &self,
        r: &Rollout<GpuTensor>,
        goal_visual: &GpuTensor,
        goal_proprio: &GpuTensor,
        mode: ObjectiveMode,
        alpha: f32,
    ) -> Result<GpuTensor> {
        let cfg = &self.cfg;
        let (n, w, de, ep) = (
            cfg.patches(),
            cfg.latent_dim(),
            cfg.visual_dim(),
            cfg.proprio_emb,
        );
        if goal_visual.len() != n * de {
            return Err(Error::Shape(format!(
                "goal visual latent must be [{n}, {de}] or [1, {n}, {de}], got {:?}",
                goal_visual.shape()
            )));
        }
        if goal_proprio.len() != ep {
            return Err(Error::Shape(format!(
                "goal proprio embedding must be [{ep}] or [1, {ep}], got {:?}",
                goal_proprio.shape()
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
        let gv = goal_visual.reshape(&[1, n, de])?;
        let gp = goal_proprio.reshape(&[1, ep])?;
        // Uploads are queue writes that land before the whole recording runs: upload every
        // small constant first and keep it alive until the submit, so that no pooled buffer
        // is recycled and overwritten while recorded work still reads it.
        let alpha_t = self.ctx.upload(&[alpha], &[1])?;
        let coef_t: Vec<GpuTensor> = coeffs
            .iter()
            .map(|c| self.ctx.upload(&[*c], &[1]))
            .collect::<Result<_>>()?;
        let zeros: Vec<GpuTensor> = r
            .chunks
            .iter()
            .map(|c| self.ctx.upload(&vec![0.0; c.len], &[c.len, 1]))
            .collect::<Result<_>>()?;
        let mut rec = Recorder::new(self.ctx);
        let mut costs = Vec::new();
        for (ci, c) in r.chunks.iter().enumerate() {
            let b = c.len;
            let frames: Vec<(&GpuTensor, &GpuTensor)> = match mode {
                ObjectiveMode::Last => vec![(c.frames.last().unwrap(), &coef_t[0])],
                ObjectiveMode::All { .. } => c.frames.iter().zip(coef_t.iter()).collect(),
            };
            let mut acc: Option<GpuTensor> = None;
            for (f, coef) in frames {
                let vis = ops::slice_cols(&mut rec, f, 0, de)?;
                let mv = ops::mse_per_item(&mut rec, &vis, &gv)?.reshape(&[b, 1])?;
                let pr = ops::slice_cols(&mut rec, &f.reshape(&[b, n * w])?, de, ep)?;
                let mp = ops::mse_per_item(&mut rec, &pr, &gp)?.reshape(&[b, 1])?;
                let term = ops::add_scaled(&mut rec, &mv, &mp, &alpha_t)?;
                acc = Some(match (acc, mode) {
                    (None, ObjectiveMode::Last) => term,
                    (prev, _) => {
                        let base = prev.unwrap_or_else(|| zeros[ci].clone());
                        ops::add_scaled(&mut rec, &base, &term, coef)?
                    }
                });
            }
            costs.push(acc.unwrap().reshape(&[b])?);
        }
        let out = cat_batch(&mut rec, &costs)?;
        rec.submit()?;
        drop((alpha_t, coef_t, zeros));
        Ok(out)
    }

    fn decode(&self, latents: &GpuTensor) -> Result<GpuTensor> {
        let cfg = &self.cfg;
        if self.decoder.is_none() {
            return Err(Error::Invalid(format!(
                "the model '{}' has no decoder",
                cfg.name
            )));
        }
        let (n, de, w) = (cfg.patches(), cfg.visual_dim(), cfg.latent_dim());
        let b = match latents.shape() {
            [b, ln, ld] if *ln == n && (*ld == de || *ld == w) => *b,
            s => {
                return Err(Error::Shape(format!(
                    "decoder input must be [B, {n}, {de}] or [B, {n}, {w}], got {s:?}"
                )))
            }
        };
        let mut rec = Recorder::new(self.ctx);
        let vis = if latents.shape()[2] == de {
            latents.clone()
        } else {
            ops::slice_cols(&mut rec, latents, 0, de)?
        };
        let mut eye = vec![0f32; de * de];
        for i in 0..de {
            eye[i * de + i] = 1.0;
        }
        let eye = self.ctx.upload(&eye, &[de, de])?;
        let mut outs = Vec::new();
        for i in 0..b {
            let x = slice_batch(&mut rec, &vis, i, 1)?.reshape(&[n, de])?;
            outs.push(self.decode_item(&mut rec, &x, &eye)?);
        }
        let out = cat_batch(&mut rec, &outs)?;
        rec.submit()?;
        Ok(out)
    }
}
