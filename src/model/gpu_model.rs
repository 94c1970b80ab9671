//! The world model on the GPU: the [`Ops`] over the recorder (one command buffer per unit of
//! work, submitted by [`Backend::finish`]), chunks sized to the device's binding limit, and
//! linear layers that run packed low-bit weights inside the matmul. Weights are uploaded
//! once; nothing is read back until the caller asks.

use super::backend::{Backend, Ops};
use super::forward::Model;
use super::params::{Init, LinearDesc, Norm, ParamSource};
use super::preprocess::check_frames;
use super::quantized::QuantizedModel;
use super::{Frames, ModelConfig, ResizeFilter, Weights};
use crate::gpu::qops::{self, GpuQuantWeight};
use crate::gpu::{ops, resize, GpuContext, GpuTensor, Recorder};
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
                if let Some(last) = shape.last_mut() {
                    *last = q.n;
                }
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

/// The GPU backend: a context and an optional cap on the batch chunk (tests).
pub struct Gpu<'a> {
    ctx: &'a GpuContext,
    max_chunk: Option<usize>,
}

impl Gpu<'_> {
    fn cap(&self, fit: usize) -> usize {
        let fit = fit.max(1);
        self.max_chunk.map_or(fit, |m| fit.min(m))
    }

    fn fit(&self, per_sample_values: usize) -> usize {
        self.cap((self.ctx.max_binding_bytes() / (per_sample_values as u64 * 4).max(1)) as usize)
    }
}

impl<'a> Backend for Gpu<'a> {
    type T = GpuTensor;
    type Linear = Linear;
    type Ops<'s>
        = GpuOps<'a>
    where
        Self: 's;

    fn ops(&self) -> GpuOps<'a> {
        GpuOps {
            rec: Recorder::new(self.ctx),
            keep: Vec::new(),
            eye: None,
        }
    }

    fn finish(&self, o: GpuOps<'a>) -> Result<()> {
        o.rec.submit()?;
        // Uploaded constants stay alive until their users are submitted.
        drop(o.keep);
        Ok(())
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

    /// `shaders/resize.wgsl` on the packed u8 frames (parity with [`super::preprocess`]:
    /// tests/resize.rs); an empty batch takes the host path.
    fn pixels(&self, frames: &Frames, cfg: &ModelConfig) -> Result<GpuTensor> {
        check_frames(frames, cfg)?;
        if frames.batch == 0 {
            return self.upload(&[], &[0, 3, cfg.encoder.resize, cfg.encoder.resize]);
        }
        let up = resize::upload_frames(self.ctx, frames.data)?;
        let mut rec = Recorder::new(self.ctx);
        let y = resize::preprocess(
            &mut rec,
            &up,
            frames.batch,
            frames.height,
            frames.width,
            cfg.encoder.resize,
            cfg.encoder.resize_filter == ResizeFilter::BilinearAntialias,
        )?;
        rec.submit()?;
        Ok(y)
    }

    /// The largest per-sample activation (qkv or MLP hidden, the image, its patches) must fit
    /// one storage binding.
    fn encoder_chunk(&self, cfg: &ModelConfig) -> usize {
        let e = &cfg.encoder;
        let (t, s) = (cfg.enc_tokens(), e.resize);
        let per = [
            t * 3 * e.width,
            t * e.mlp,
            3 * s * s,
            cfg.patches() * 3 * e.patch * e.patch,
        ];
        self.fit(per.into_iter().max().unwrap_or(1))
    }

    /// From the largest per-sample activation at a full history (qkv, MLP hidden, tokens).
    fn predictor_chunk(&self, cfg: &ModelConfig) -> usize {
        let t = cfg.num_hist * cfg.patches();
        let per = [
            t * 3 * cfg.pred_inner(),
            t * cfg.predictor.mlp,
            t * cfg.latent_dim(),
        ];
        self.fit(per.into_iter().max().unwrap_or(1))
    }

    fn decoder_chunk(&self, _b: usize) -> usize {
        1
    }
}

/// A recording in progress.
pub struct GpuOps<'a> {
    rec: Recorder<'a>,
    /// Constants uploaded for this recording.
    keep: Vec<GpuTensor>,
    /// `I[C, C]` for [`Ops::tokens_to_image`] (a matmul computes `X W^T`).
    eye: Option<GpuTensor>,
}

impl GpuOps<'_> {
    fn constant(&mut self, data: &[f32], shape: &[usize]) -> Result<GpuTensor> {
        let t = self.rec.ctx().upload(data, shape)?;
        self.keep.push(t.clone());
        Ok(t)
    }

    /// `v[1, L]` (or `[L]`) tiled to `[b, L]`.
    fn tile_rows(&mut self, v: &GpuTensor, b: usize) -> Result<GpuTensor> {
        let l = v.len();
        let empty = self.rec.ctx().alloc(&[1, b, 0])?;
        let y = ops::concat_tile(&mut self.rec, &empty, &v.reshape(&[1, l])?)?;
        y.reshape(&[b, l])
    }
}

impl Ops for GpuOps<'_> {
    type T = GpuTensor;
    type Linear = Linear;

    fn reshape(&mut self, x: &GpuTensor, shape: &[usize]) -> Result<GpuTensor> {
        x.reshape(shape)
    }

    fn linear(&mut self, l: &Linear, x: &GpuTensor) -> Result<GpuTensor> {
        l.forward(&mut self.rec, x)
    }

    fn layernorm(&mut self, x: &GpuTensor, n: &Norm<GpuTensor>) -> Result<GpuTensor> {
        ops::layernorm(&mut self.rec, x, &n.g, &n.b, n.eps)
    }

    fn attention(&mut self, qkv: &GpuTensor, heads: usize, fr: Option<usize>) -> Result<GpuTensor> {
        ops::attention(&mut self.rec, qkv, heads, fr)
    }

    fn gelu(&mut self, x: &GpuTensor) -> Result<GpuTensor> {
        ops::gelu(&mut self.rec, x)
    }

    fn relu(&mut self, x: &GpuTensor) -> Result<GpuTensor> {
        ops::relu(&mut self.rec, x)
    }

    fn add(&mut self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        ops::add(&mut self.rec, a, b)
    }

    fn add_scaled(&mut self, a: &GpuTensor, b: &GpuTensor, s: &GpuTensor) -> Result<GpuTensor> {
        ops::add_scaled(&mut self.rec, a, b, s)
    }

    fn concat_tile(&mut self, x: &GpuTensor, v: &GpuTensor) -> Result<GpuTensor> {
        ops::concat_tile(&mut self.rec, x, v)
    }

    fn slice_cols(&mut self, x: &GpuTensor, col0: usize, width: usize) -> Result<GpuTensor> {
        ops::slice_cols(&mut self.rec, x, col0, width)
    }

    fn slice_tokens(&mut self, x: &GpuTensor, t0: usize, len: usize) -> Result<GpuTensor> {
        let (b, t, w) = dims3(x)?;
        if t0 == 0 && len == t {
            return Ok(x.clone());
        }
        let y = ops::slice_cols(&mut self.rec, &x.reshape(&[b, t * w])?, t0 * w, len * w)?;
        y.reshape(&[b, len, w])
    }

    fn cat_tokens(&mut self, parts: &[GpuTensor]) -> Result<GpuTensor> {
        let (b, mut t, w) = dims3(&parts[0])?;
        let mut acc = parts[0].reshape(&[b, t * w])?;
        for p in &parts[1..] {
            let (_, tp, _) = dims3(p)?;
            acc = ops::concat_tile(&mut self.rec, &acc, &p.reshape(&[b, tp * w])?)?;
            t += tp;
        }
        acc.reshape(&[b, t, w])
    }

    fn slice_batch(&mut self, x: &GpuTensor, start: usize, len: usize) -> Result<GpuTensor> {
        let b = x.shape()[0];
        if start == 0 && len == b {
            return Ok(x.clone());
        }
        let per = x.len() / b.max(1);
        let flat = x.reshape(&[1, b * per])?;
        let y = ops::slice_cols(&mut self.rec, &flat, start * per, len * per)?;
        let mut s = x.shape().to_vec();
        s[0] = len;
        y.reshape(&s)
    }

    fn cat_batch(&mut self, parts: &[GpuTensor]) -> Result<GpuTensor> {
        let mut acc = parts[0].clone();
        for p in &parts[1..] {
            let (a, q) = (acc.reshape(&[1, acc.len()])?, p.reshape(&[1, p.len()])?);
            let y = ops::concat_tile(&mut self.rec, &a, &q)?;
            let mut s = acc.shape().to_vec();
            s[0] += p.shape()[0];
            acc = y.reshape(&s)?;
        }
        Ok(acc)
    }

    fn broadcast_batch(&mut self, x: &GpuTensor, b: usize) -> Result<GpuTensor> {
        let y = self.tile_rows(x, b)?;
        let mut s = x.shape().to_vec();
        s[0] = b;
        y.reshape(&s)
    }

    fn add_positions(&mut self, x: &GpuTensor, pos: &GpuTensor) -> Result<GpuTensor> {
        let (b, t, w) = dims3(x)?;
        let flat = pos.reshape(&[1, pos.len()])?;
        let pos = match t * w == pos.len() {
            true => flat,
            false => ops::slice_cols(&mut self.rec, &flat, 0, t * w)?,
        };
        let pos = self.tile_rows(&pos, b)?.reshape(&[b, t, w])?;
        ops::add(&mut self.rec, x, &pos)
    }

    fn prepend_token(&mut self, x: &GpuTensor, tok: &GpuTensor) -> Result<GpuTensor> {
        let (b, t, w) = dims3(x)?;
        let c = self.tile_rows(tok, b)?;
        let y = ops::concat_tile(&mut self.rec, &c, &x.reshape(&[b, t * w])?)?;
        y.reshape(&[b, t + 1, w])
    }

    fn patch_embed(&mut self, img: &GpuTensor, w: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        ops::patch_embed(&mut self.rec, img, w, Some(b))
    }

    fn tokens_to_image(&mut self, x: &GpuTensor, g: usize) -> Result<GpuTensor> {
        let (b, n, c) = dims3(x)?;
        let eye = match &self.eye {
            Some(e) if e.shape()[0] == c => e.clone(),
            _ => {
                let mut eye = vec![0f32; c * c];
                for i in 0..c {
                    eye[i * c + i] = 1.0;
                }
                let e = self.constant(&eye, &[c, c])?;
                self.eye = Some(e.clone());
                e
            }
        };
        let mut outs = Vec::new();
        for i in 0..b {
            // [N, C] -> [C, N] as I[C, C] x^T.
            let xi = self.slice_batch(x, i, 1)?.reshape(&[n, c])?;
            outs.push(ops::matmul(&mut self.rec, &eye, &xi, None)?.reshape(&[1, c, g, g])?);
        }
        self.cat_batch(&outs)
    }

    fn conv2d(
        &mut self,
        x: &GpuTensor,
        w: &GpuTensor,
        b: &GpuTensor,
        stride: usize,
        pad: usize,
    ) -> Result<GpuTensor> {
        ops::conv2d(&mut self.rec, x, w, Some(b), stride, pad)
    }

    fn conv_transpose2d(
        &mut self,
        x: &GpuTensor,
        w: &GpuTensor,
        b: &GpuTensor,
        stride: usize,
        pad: usize,
    ) -> Result<GpuTensor> {
        ops::conv_transpose2d(&mut self.rec, x, w, Some(b), stride, pad)
    }

    fn mse_per_item(&mut self, a: &GpuTensor, target: &GpuTensor) -> Result<GpuTensor> {
        ops::mse_per_item(&mut self.rec, a, target)
    }

    fn scalar(&mut self, v: f32) -> Result<GpuTensor> {
        self.constant(&[v], &[1])
    }

    fn zeros(&mut self, shape: &[usize]) -> Result<GpuTensor> {
        self.constant(&vec![0.0; shape.iter().product()], shape)
    }
}

fn dims3(x: &GpuTensor) -> Result<(usize, usize, usize)> {
    match x.shape() {
        [b, t, w] => Ok((*b, *t, *w)),
        s => Err(Error::Shape(format!("expected [B, T, W], got {s:?}"))),
    }
}

/// Uploads each tensor of a model (packed codes for quantized linears).
struct Upload<'a, 'w> {
    ctx: &'a GpuContext,
    w: &'w Weights,
    quant: Option<&'w QuantizedModel>,
}

impl Upload<'_, '_> {
    fn up(&self, name: &str, shape: &[usize]) -> Result<GpuTensor> {
        self.ctx.upload(&self.w.get(name)?.data, shape)
    }
}

impl ParamSource for Upload<'_, '_> {
    type T = GpuTensor;
    type Linear = Linear;

    fn tensor(&mut self, name: &str, shape: &[usize], _: Init) -> Result<GpuTensor> {
        self.up(name, shape)
    }

    fn linear(&mut self, l: &LinearDesc) -> Result<Linear> {
        let packed = self
            .quant
            .and_then(|q| q.packed.get(l.weight).map(|p| (q, p)));
        Ok(Linear {
            w: match packed {
                Some((_, p)) => LinearWeight::Packed(GpuQuantWeight::upload(self.ctx, p)?),
                None => LinearWeight::F32(self.up(l.weight, &[l.out, l.inp])?),
            },
            b: l.bias.map(|b| self.up(b, &[l.out])).transpose()?,
            act: packed.and_then(|(q, _)| {
                q.act_for(l.weight)
                    .map(|a| (a, q.act.get(l.weight).copied()))
            }),
        })
    }
}

/// The world model on the GPU.
pub type GpuModel<'a> = Model<Gpu<'a>>;

impl<'a> Model<Gpu<'a>> {
    /// Validate and upload the weights (once).
    pub fn new(ctx: &'a GpuContext, w: &Weights) -> Result<Self> {
        Self::build_gpu(ctx, w, None)
    }

    /// A quantized model: the quantized linears hold only their packed codes on the GPU.
    pub fn new_quantized(ctx: &'a GpuContext, q: &QuantizedModel) -> Result<Self> {
        Self::build_gpu(ctx, &q.weights, Some(q))
    }

    fn build_gpu(ctx: &'a GpuContext, w: &Weights, quant: Option<&QuantizedModel>) -> Result<Self> {
        match quant {
            Some(q) => q.validate()?,
            None => w.validate()?,
        }
        let mut src = Upload { ctx, w, quant };
        let gpu = Gpu {
            ctx,
            max_chunk: None,
        };
        Model::build(w.config.clone(), &mut src, gpu)
    }

    pub fn ctx(&self) -> &'a GpuContext {
        self.backend.ctx
    }

    /// Cap the batch chunk size (tests of the splitting path; `None` = from device limits).
    pub fn set_max_chunk(&mut self, n: Option<usize>) {
        self.backend.max_chunk = n.map(|n| n.max(1));
    }

    /// Samples per encoder chunk.
    pub fn encoder_chunk(&self) -> usize {
        self.backend.encoder_chunk(&self.cfg)
    }

    /// Samples per predictor/rollout chunk.
    pub fn predictor_chunk(&self) -> usize {
        self.backend.predictor_chunk(&self.cfg)
    }
}
