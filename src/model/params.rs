//! The parameter tree of a DINO-WM model and the one walk over its tensor names.
//!
//! [`Params::load`] visits every tensor the config implies, in file order, through a
//! [`ParamSource`] and a name prefix ([`Vb`], after candle-nn's `VarBuilder::pp`). The same
//! walk uploads a model to the GPU, wraps CPU (or training `Var`) tensors, lists the layout
//! for random initialisation and validation, and lists the linears the quantizer packs, so
//! a tensor name is written in exactly one place.

use std::fmt::Display;

use serde::{Deserialize, Serialize};

use super::ModelConfig;
use crate::Result;

/// How a tensor is initialised randomly.
#[derive(Clone, Copy, Debug)]
pub enum Init {
    Ones,
    Zeros,
    Const(f32),
    /// Truncated normal (clipped at 2 std).
    Normal(f32),
}

/// The module a quantizable linear belongs to (the QuantWM study quantizes the encoder's and
/// the predictor's attention and MLP linears).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Module {
    Encoder,
    Predictor,
}

/// One linear layer as the walk meets it.
pub struct LinearDesc<'a> {
    /// Full weight and bias names.
    pub weight: &'a str,
    pub bias: Option<&'a str>,
    /// `[out, inp]` as the forward uses it; the file may store more axes (Conv1d k=1).
    pub out: usize,
    pub inp: usize,
    pub stored: &'a [usize],
    pub init: Init,
    /// `Some` for the layers quantization applies to.
    pub module: Option<Module>,
}

/// What a walk produces for each tensor and each linear layer.
pub trait ParamSource {
    type T;
    type Linear;
    /// The tensor `name` of shape `shape` (as stored in the file).
    fn tensor(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Self::T>;
    fn linear(&mut self, l: &LinearDesc) -> Result<Self::Linear>;
}

/// A source and a name prefix: `vb.pp("blocks").pp(3).tensor("gamma", ..)` is the tensor
/// `blocks.3.gamma`.
pub struct Vb<'s, S> {
    src: &'s mut S,
    prefix: String,
}

impl<'s, S: ParamSource> Vb<'s, S> {
    pub fn root(src: &'s mut S) -> Self {
        Vb {
            src,
            prefix: String::new(),
        }
    }

    /// The builder for the sub-tree `name`.
    pub fn pp(&mut self, name: impl Display) -> Vb<'_, S> {
        let prefix = self.name(&name.to_string());
        Vb {
            src: &mut *self.src,
            prefix,
        }
    }

    pub fn name(&self, leaf: &str) -> String {
        if self.prefix.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{leaf}", self.prefix)
        }
    }

    pub fn tensor(&mut self, leaf: &str, shape: &[usize], init: Init) -> Result<S::T> {
        let name = self.name(leaf);
        self.src.tensor(&name, shape, init)
    }

    /// `weight` `[out, inp]` and, with `bias`, `bias` `[out]`.
    pub fn linear(
        &mut self,
        out: usize,
        inp: usize,
        bias: bool,
        init: Init,
        module: Option<Module>,
    ) -> Result<S::Linear> {
        self.linear_stored(&[out, inp], out, inp, bias, init, module)
    }

    fn linear_stored(
        &mut self,
        stored: &[usize],
        out: usize,
        inp: usize,
        bias: bool,
        init: Init,
        module: Option<Module>,
    ) -> Result<S::Linear> {
        let (w, b) = (self.name("weight"), self.name("bias"));
        self.src.linear(&LinearDesc {
            weight: &w,
            bias: bias.then_some(b.as_str()),
            out,
            inp,
            stored,
            init,
            module,
        })
    }

    /// LayerNorm `weight` and `bias`, `[dim]`.
    fn norm(&mut self, dim: usize, eps: f32) -> Result<Norm<S::T>> {
        Ok(Norm {
            g: self.tensor("weight", &[dim], Init::Ones)?,
            b: self.tensor("bias", &[dim], Init::Zeros)?,
            eps,
        })
    }

    /// Conv `weight` `[co, ci, k, k]` (ConvTranspose2d: `[ci, co, k, k]`) and `bias`.
    fn conv(&mut self, shape: [usize; 4], bias: usize, std: f32) -> Result<Conv<S::T>> {
        Ok(Conv {
            w: self.tensor("weight", &shape, Init::Normal(std))?,
            b: self.tensor("bias", &[bias], Init::Zeros)?,
        })
    }
}

pub struct Norm<T> {
    pub g: T,
    pub b: T,
    pub eps: f32,
}

pub struct EncBlock<T, L> {
    pub n1: Norm<T>,
    pub qkv: L,
    pub proj: L,
    pub ls1: Option<T>,
    pub n2: Norm<T>,
    pub fc1: L,
    pub fc2: L,
    pub ls2: Option<T>,
}

pub struct PredBlock<T, L> {
    pub n1: Norm<T>,
    pub qkv: L,
    pub out: L,
    pub n2: Norm<T>,
    pub fc1: L,
    pub fc2: L,
}

pub struct Conv<T> {
    pub w: T,
    pub b: T,
}

pub struct DecStage<T> {
    pub conv_in: Conv<T>,
    pub res: Vec<(Conv<T>, Conv<T>)>,
    pub up1: Conv<T>,
    pub up2: Conv<T>,
}

/// Every parameter, as the forward uses it. Field order is file order.
pub struct Params<T, L> {
    pub patch_w: T,
    pub patch_b: T,
    /// `[1, 1, D]`.
    pub cls: Option<T>,
    /// `[1, tokens, D]` (CLS position first when there is a CLS token).
    pub pos: T,
    pub enc_blocks: Vec<EncBlock<T, L>>,
    pub enc_norm: Norm<T>,
    pub act: L,
    pub prop: L,
    /// `[1, num_hist * N, W]`.
    pub pred_pos: T,
    pub pred_blocks: Vec<PredBlock<T, L>>,
    pub pred_norm: Norm<T>,
    pub decoder: Option<Vec<DecStage<T>>>,
}

const LIN_STD: f32 = 0.02;

impl<T, L> Params<T, L> {
    /// Walk every tensor `cfg` implies (DINOv2 encoder, DINO-WM action/proprio encoders and
    /// ViT predictor, VQ-VAE decoder names) through `src`.
    pub fn load<S: ParamSource<T = T, Linear = L>>(cfg: &ModelConfig, src: &mut S) -> Result<Self> {
        let mut root = Vb::root(src);
        let e = &cfg.encoder;
        let d = e.width;
        let mut enc = root.pp("encoder");
        let mut pe = enc.pp("patch_embed.proj");
        let patch_w = pe.tensor(
            "weight",
            &[d, 3, e.patch, e.patch],
            Init::Normal((1.0 / (3 * e.patch * e.patch) as f32).sqrt()),
        )?;
        let patch_b = pe.tensor("bias", &[d], Init::Zeros)?;
        let cls = match e.cls_token {
            true => Some(enc.tensor("cls_token", &[1, 1, d], Init::Normal(0.02))?),
            false => None,
        };
        let pos = enc.tensor("pos_embed", &[1, cfg.enc_tokens(), d], Init::Normal(0.02))?;
        let mut enc_blocks = Vec::new();
        for i in 0..e.depth {
            let mut b = enc.pp(format!("blocks.{i}"));
            let ls = |b: &mut Vb<S>, k: &str| match e.layerscale {
                true => b.pp(k).tensor("gamma", &[d], Init::Const(0.1)).map(Some),
                false => Ok(None),
            };
            let enc_lin = Some(Module::Encoder);
            enc_blocks.push(EncBlock {
                n1: b.pp("norm1").norm(d, e.eps)?,
                qkv: b
                    .pp("attn.qkv")
                    .linear(3 * d, d, true, Init::Normal(LIN_STD), enc_lin)?,
                proj: b
                    .pp("attn.proj")
                    .linear(d, d, true, Init::Normal(LIN_STD), enc_lin)?,
                ls1: ls(&mut b, "ls1")?,
                n2: b.pp("norm2").norm(d, e.eps)?,
                fc1: b
                    .pp("mlp.fc1")
                    .linear(e.mlp, d, true, Init::Normal(LIN_STD), enc_lin)?,
                fc2: b
                    .pp("mlp.fc2")
                    .linear(d, e.mlp, true, Init::Normal(LIN_STD), enc_lin)?,
                ls2: ls(&mut b, "ls2")?,
            });
        }
        let enc_norm = enc.pp("norm").norm(d, e.eps)?;
        // Action and proprio encoders are Conv1d with kernel 1: linears stored `[out, in, 1]`.
        let (ai, pd) = (cfg.action_in(), cfg.proprio_dim);
        let act = root.pp("action_encoder.patch_embed").linear_stored(
            &[cfg.action_emb, ai, 1],
            cfg.action_emb,
            ai,
            true,
            Init::Normal((1.0 / ai as f32).sqrt()),
            None,
        )?;
        let prop = root.pp("proprio_encoder.patch_embed").linear_stored(
            &[cfg.proprio_emb, pd, 1],
            cfg.proprio_emb,
            pd,
            true,
            Init::Normal((1.0 / pd as f32).sqrt()),
            None,
        )?;
        let (w, inner, pm) = (cfg.latent_dim(), cfg.pred_inner(), cfg.predictor.mlp);
        let eps = cfg.predictor.eps;
        let mut pred = root.pp("predictor");
        let pred_pos = pred.tensor(
            "pos_embedding",
            &[1, cfg.num_hist * cfg.patches(), w],
            Init::Normal(0.02),
        )?;
        let mut tf = pred.pp("transformer");
        let mut pred_blocks = Vec::new();
        let pred_lin = Some(Module::Predictor);
        for i in 0..cfg.predictor.depth {
            let mut l = tf.pp(format!("layers.{i}"));
            pred_blocks.push(PredBlock {
                n1: l.pp("0.norm").norm(w, eps)?,
                qkv: l.pp("0.to_qkv").linear(
                    3 * inner,
                    w,
                    false,
                    Init::Normal(LIN_STD),
                    pred_lin,
                )?,
                out: l
                    .pp("0.to_out.0")
                    .linear(w, inner, true, Init::Normal(LIN_STD), pred_lin)?,
                n2: l.pp("1.net.0").norm(w, eps)?,
                fc1: l
                    .pp("1.net.1")
                    .linear(pm, w, true, Init::Normal(LIN_STD), pred_lin)?,
                fc2: l
                    .pp("1.net.4")
                    .linear(w, pm, true, Init::Normal(LIN_STD), pred_lin)?,
            });
        }
        let pred_norm = tf.pp("norm").norm(w, eps)?;
        let decoder = match &cfg.decoder {
            None => None,
            Some(dc) => {
                let c = dc.channel;
                let std = |ci: usize, k: usize| (1.0 / (ci * k * k) as f32).sqrt();
                let mut stages = Vec::new();
                // DINO-WM's VQ-VAE: upsample_b then dec, each a stride-4 decoder.
                for (stage, cin, cout) in [("upsample_b", d, d), ("dec", d, 3)] {
                    let mut s = root.pp(format!("decoder.{stage}.blocks"));
                    let conv_in = s.pp(0).conv([c, cin, 3, 3], c, std(cin, 3))?;
                    let mut res = Vec::new();
                    for r in 0..dc.res_blocks {
                        let (rc, mut j) = (dc.res_channel, s.pp(r + 1));
                        res.push((
                            j.pp("conv.1").conv([rc, c, 3, 3], rc, std(c, 3))?,
                            j.pp("conv.3").conv([c, rc, 1, 1], c, std(rc, 1))?,
                        ));
                    }
                    // ConvTranspose2d weights are [CI, CO, K, K].
                    let up1 = s.pp(dc.res_blocks + 2).conv(
                        [c, c / 2, 4, 4],
                        c / 2,
                        (1.0 / (c * 4) as f32).sqrt(),
                    )?;
                    let up2 = s.pp(dc.res_blocks + 4).conv(
                        [c / 2, cout, 4, 4],
                        cout,
                        (1.0 / (c / 2 * 4) as f32).sqrt(),
                    )?;
                    stages.push(DecStage {
                        conv_in,
                        res,
                        up1,
                        up2,
                    });
                }
                Some(stages)
            }
        };
        Ok(Params {
            patch_w,
            patch_b,
            cls,
            pos,
            enc_blocks,
            enc_norm,
            act,
            prop,
            pred_pos,
            pred_blocks,
            pred_norm,
            decoder,
        })
    }
}

/// A source that records the walk: every tensor's name, shape and init in file order, and
/// the quantizable linears.
#[derive(Default)]
pub struct Layout {
    pub tensors: Vec<(String, Vec<usize>, Init)>,
    pub linears: Vec<(String, Module)>,
}

impl Layout {
    pub fn of(cfg: &ModelConfig) -> Self {
        let mut l = Layout::default();
        // Recording only pushes names and shapes; it has no error path.
        #[allow(clippy::expect_used)]
        Params::load(cfg, &mut l).expect("recording a layout cannot fail");
        l
    }
}

impl ParamSource for Layout {
    type T = ();
    type Linear = ();

    fn tensor(&mut self, name: &str, shape: &[usize], init: Init) -> Result<()> {
        self.tensors.push((name.to_string(), shape.to_vec(), init));
        Ok(())
    }

    fn linear(&mut self, l: &LinearDesc) -> Result<()> {
        self.tensor(l.weight, l.stored, l.init)?;
        if let Some(b) = l.bias {
            self.tensor(b, &[l.out], Init::Zeros)?;
        }
        if let Some(m) = l.module {
            self.linears.push((l.weight.to_string(), m));
        }
        Ok(())
    }
}
