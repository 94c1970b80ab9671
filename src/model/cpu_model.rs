//! The world model on the CPU reference backend (candle): the [`Ops`] over `cpu::*`, one
//! chunk size that bounds the attention scores materialised in memory, and linear layers
//! that run quantized models as quantize-dequantize (the GPU's numerics in f32). Over candle
//! `Var`s ([`CpuModel::from_tensors`]) the same forward records the autodiff graph for
//! training.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::backend::{Backend, Ops, Then};
use super::forward::Model;
use super::params::{Init, LinearDesc, Norm, ParamSource};
use super::quantized::QuantizedModel;
use super::{ModelConfig, Weights};
use crate::cpu;
use crate::cpu::qlinear::WeightOnly;
use crate::quant::{act, ActObserver, ActParams, ActSpec, ActStats, PackedWeight};
use crate::{Error, Result};

/// The CPU counterpart of [`super::Linear`]: every linear layer goes through it. Quantized
/// layers run on the packed codes (`cpu::qlinear`: int8 x int8 for activation-quantized specs)
/// or, as the test reference, as quantize-dequantize: `w` holds the dequantized weights and
/// the input is fake-quantized when `act` is set.
pub struct CpuLinear {
    /// Weight name, for calibration statistics.
    pub name: String,
    pub w: CpuWeight,
    pub b: Option<Tensor>,
    pub act: Option<(ActSpec, Option<ActParams>)>,
}

/// A linear's weight on the CPU: f32 (float models and the fake-quant reference) or packed,
/// with its codes laid out once for this CPU's tiles where they have a layout
/// (`cpu::qlinear::Panels`), so that no call decodes them again.
pub enum CpuWeight {
    F32(Tensor),
    Packed(Arc<PackedWeight>, Option<cpu::qlinear::Panels>),
}

impl CpuLinear {
    /// `observer` (the calibrating model's, if any) sees the input before quantization.
    pub fn forward(&self, x: &Tensor, observer: Option<&ActObserver>) -> Result<Tensor> {
        self.forward_then(x, observer, None)
    }

    /// [`CpuLinear::forward`] then `then`: fused into the kernels except on the fake-quant
    /// reference path.
    pub fn forward_then(
        &self,
        x: &Tensor,
        observer: Option<&ActObserver>,
        then: Option<cpu::Then<'_>>,
    ) -> Result<Tensor> {
        if let Some(o) = observer {
            o.observe(&self.name, &cpu::to_vec(x)?);
        }
        let w = match &self.w {
            CpuWeight::F32(w) => w,
            CpuWeight::Packed(p, panels) => {
                let act = self.act.as_ref().map(|(s, p)| (s, p.as_ref()));
                return cpu::packed_linear_then(x, p, panels.as_ref(), self.b.as_ref(), act, then);
            }
        };
        match &self.act {
            None => cpu::linear_then(x, w, self.b.as_ref(), then),
            Some((spec, params)) => {
                let dims = x.dims().to_vec();
                let k = *dims.last().unwrap_or(&1);
                let mut v = cpu::to_vec(x)?;
                act::fake_quant(&mut v, k, spec, params.as_ref())?;
                let y = cpu::matmul(&cpu::tensor(&v, &dims)?, w, self.b.as_ref())?;
                cpu::then_composed(y, then)
            }
        }
    }
}

/// The CPU backend: the batch chunk and, while calibrating, the observer of every linear.
pub struct Cpu {
    chunk: usize,
    observer: Option<ActObserver>,
}

impl Backend for Cpu {
    type T = Tensor;
    type Linear = CpuLinear;
    type Ops<'s> = CpuOps<'s>;

    fn ops(&self) -> CpuOps<'_> {
        CpuOps {
            observer: self.observer.as_ref(),
        }
    }

    fn finish(&self, _: CpuOps<'_>) -> Result<()> {
        Ok(())
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

    fn encoder_chunk(&self, _: &ModelConfig) -> usize {
        self.chunk
    }

    fn predictor_chunk(&self, _: &ModelConfig) -> usize {
        self.chunk
    }

    fn decoder_chunk(&self, b: usize) -> usize {
        b
    }

    /// Equal spans, as many as a multiple of the threads (each thread then rolls out whole
    /// spans, most of whose ops are serial, in its own cache) and none longer than `chunk`.
    fn spans(&self, b: usize, chunk: usize) -> Vec<(usize, usize)> {
        let threads = rayon::current_num_threads().max(1);
        let n = b
            .div_ceil(chunk.max(1))
            .next_multiple_of(threads)
            .min(b.max(1));
        let (q, r) = (b / n, b % n);
        let mut start = 0;
        (0..n)
            .map(|i| {
                let len = q + usize::from(i < r);
                start += len;
                (start - len, len)
            })
            .filter(|s| s.1 > 0)
            .collect()
    }

    /// Spans on rayon's threads; one after another while observing (the calibration
    /// sampler's rows must come in a fixed order).
    fn map_spans<R: Send>(
        &self,
        spans: &[(usize, usize)],
        f: &(dyn Fn(usize, usize) -> Result<R> + Sync),
    ) -> Result<Vec<R>> {
        use rayon::prelude::*;
        if self.observer.is_some() {
            return spans.iter().map(|&(s, l)| f(s, l)).collect();
        }
        spans.par_iter().map(|&(s, l)| f(s, l)).collect()
    }
}

/// The CPU ops run at once; they only carry the observer.
pub struct CpuOps<'s> {
    observer: Option<&'s ActObserver>,
}

impl Ops for CpuOps<'_> {
    type T = Tensor;
    type Linear = CpuLinear;

    fn linear(&mut self, l: &CpuLinear, x: &Tensor) -> Result<Tensor> {
        l.forward(x, self.observer)
    }

    fn linear_then(&mut self, l: &CpuLinear, x: &Tensor, then: Then<'_, Tensor>) -> Result<Tensor> {
        let then = match then {
            Then::Gelu => cpu::Then::Gelu,
            Then::Add(r) => cpu::Then::Add(r),
        };
        l.forward_then(x, self.observer, Some(then))
    }

    fn reshape(&mut self, x: &Tensor, shape: &[usize]) -> Result<Tensor> {
        Ok(x.reshape(shape)?)
    }

    fn layernorm(&mut self, x: &Tensor, n: &Norm<Tensor>) -> Result<Tensor> {
        cpu::layernorm(x, &n.g, &n.b, n.eps)
    }

    fn attention(&mut self, qkv: &Tensor, heads: usize, fr: Option<usize>) -> Result<Tensor> {
        cpu::attention(qkv, heads, fr)
    }

    fn gelu(&mut self, x: &Tensor) -> Result<Tensor> {
        cpu::gelu(x)
    }

    fn relu(&mut self, x: &Tensor) -> Result<Tensor> {
        cpu::relu(x)
    }

    fn add(&mut self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        cpu::add(a, b)
    }

    fn add_scaled(&mut self, a: &Tensor, b: &Tensor, s: &Tensor) -> Result<Tensor> {
        cpu::add_scaled(a, b, s)
    }

    fn concat_tile(&mut self, x: &Tensor, v: &Tensor) -> Result<Tensor> {
        cpu::concat_tile(x, v)
    }

    fn slice_cols(&mut self, x: &Tensor, col0: usize, width: usize) -> Result<Tensor> {
        cpu::slice_cols(x, col0, width)
    }

    fn slice_tokens(&mut self, x: &Tensor, t0: usize, len: usize) -> Result<Tensor> {
        Ok(x.narrow(1, t0, len)?.contiguous()?)
    }

    fn cat_tokens(&mut self, parts: &[Tensor]) -> Result<Tensor> {
        cpu::cat_tokens(parts)
    }

    fn slice_batch(&mut self, x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
        Ok(x.narrow(0, start, len)?)
    }

    fn cat_batch(&mut self, parts: &[Tensor]) -> Result<Tensor> {
        Ok(Tensor::cat(parts, 0)?)
    }

    fn broadcast_batch(&mut self, x: &Tensor, b: usize) -> Result<Tensor> {
        let mut s = x.dims().to_vec();
        s[0] = b;
        Ok(x.broadcast_as(s)?.contiguous()?)
    }

    fn add_positions(&mut self, x: &Tensor, pos: &Tensor) -> Result<Tensor> {
        cpu::add_positions(x, pos)
    }

    fn prepend_token(&mut self, x: &Tensor, tok: &Tensor) -> Result<Tensor> {
        let (b, _, w) = x.dims3()?;
        let c = tok.broadcast_as((b, 1, w))?;
        Ok(Tensor::cat(&[&c, x], 1)?)
    }

    fn patch_embed(&mut self, img: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        cpu::patch_embed(img, w, Some(b))
    }

    fn tokens_to_image(&mut self, x: &Tensor, g: usize) -> Result<Tensor> {
        let (b, _, c) = x.dims3()?;
        Ok(x.transpose(1, 2)?.contiguous()?.reshape((b, c, g, g))?)
    }

    fn conv2d(&mut self, x: &Tensor, w: &Tensor, b: &Tensor, s: usize, p: usize) -> Result<Tensor> {
        cpu::conv2d(x, w, Some(b), s, p)
    }

    fn conv_transpose2d(
        &mut self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        stride: usize,
        pad: usize,
    ) -> Result<Tensor> {
        cpu::conv_transpose2d(x, w, Some(b), stride, pad)
    }

    fn mse_per_item(&mut self, a: &Tensor, target: &Tensor) -> Result<Tensor> {
        cpu::mse_per_item(a, target)
    }

    fn scalar(&mut self, v: f32) -> Result<Tensor> {
        cpu::tensor(&[v], &[1])
    }

    fn zeros(&mut self, shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::zeros(shape, DType::F32, &Device::Cpu)?)
    }
}

/// Wraps each named tensor (file tensors or training `Var`s) for the CPU.
struct Wrap<'g> {
    get: &'g dyn Fn(&str) -> Result<Tensor>,
    quant: Option<&'g QuantizedModel>,
    /// Quantized linears on packed codes (else fake-quant, the reference).
    packed: bool,
    weight_only: WeightOnly,
}

impl ParamSource for Wrap<'_> {
    type T = Tensor;
    type Linear = CpuLinear;

    fn tensor(&mut self, name: &str, _: &[usize], _: Init) -> Result<Tensor> {
        (self.get)(name)
    }

    fn linear(&mut self, l: &LinearDesc) -> Result<CpuLinear> {
        let packed = self
            .quant
            .filter(|_| self.packed)
            .and_then(|q| q.packed.get(l.weight));
        let act = self.quant.and_then(|q| {
            q.packed.get(l.weight)?;
            q.act_for(l.weight)
                .map(|a| (a, q.act.get(l.weight).copied()))
        });
        let w = match packed {
            // Shared with the quantized model: no f32 copy. The panels are a second copy of
            // the codes (a byte per code for the integer tiles, a nibble for 4-bit float).
            Some(p) => {
                let isa = cpu::qlinear::Isa::detect();
                let panels = cpu::qlinear::Panels::new(p, isa, act.is_some(), self.weight_only)?;
                CpuWeight::Packed(Arc::clone(p), panels)
            }
            None => {
                let w = (self.get)(l.weight)?;
                CpuWeight::F32(match w.dims() == [l.out, l.inp] {
                    true => w,
                    false => w.reshape((l.out, l.inp))?,
                })
            }
        };
        Ok(CpuLinear {
            name: l.weight.to_string(),
            w,
            b: l.bias.map(|b| (self.get)(b)).transpose()?,
            act,
        })
    }
}

/// The world model on the CPU.
pub type CpuModel = Model<Cpu>;

impl Model<Cpu> {
    pub fn new(w: &Weights) -> Result<Self> {
        w.validate()?;
        Self::build_cpu(
            w.config.clone(),
            &|name| tensor_of(w, name),
            None,
            WeightOnly::Exact,
        )
    }

    /// A quantized model whose quantized linears run on the packed codes (weight-only
    /// specs on float inputs, [`WeightOnly::Exact`]).
    pub fn new_quantized(q: &QuantizedModel) -> Result<Self> {
        Self::new_quantized_with(q, WeightOnly::Exact)
    }

    /// [`CpuModel::new_quantized`] running weight-only specs as `weight_only` says.
    pub fn new_quantized_with(q: &QuantizedModel, weight_only: WeightOnly) -> Result<Self> {
        q.validate()?;
        Self::build_cpu(
            q.weights.config.clone(),
            &|n| tensor_of(&q.weights, n),
            Some((q, true)),
            weight_only,
        )
    }

    /// A quantized model as quantize-dequantize (the GPU's numerics in f32): the reference
    /// the packed kernels are tested against.
    /// It holds the dequantized f32 weights (built here, for tests and divergence measures).
    pub fn new_quantized_reference(q: &QuantizedModel) -> Result<Self> {
        let w = q.dequantized()?;
        let exact = WeightOnly::Exact;
        Self::build_cpu(
            w.config.clone(),
            &|n| tensor_of(&w, n),
            Some((q, false)),
            exact,
        )
    }

    /// A model over tensors that may be candle `Var`s: the forward then records the autodiff
    /// graph (training). `tensors` must hold every name the config implies.
    pub fn from_tensors(cfg: ModelConfig, tensors: &HashMap<String, Tensor>) -> Result<Self> {
        cfg.validate()?;
        let get = |name: &str| -> Result<Tensor> {
            tensors
                .get(name)
                .cloned()
                .ok_or_else(|| Error::Invalid(format!("missing tensor {name}")))
        };
        Self::build_cpu(cfg, &get, None, WeightOnly::Exact)
    }

    fn build_cpu(
        cfg: ModelConfig,
        get: &dyn Fn(&str) -> Result<Tensor>,
        quant: Option<(&QuantizedModel, bool)>,
        weight_only: WeightOnly,
    ) -> Result<Self> {
        // Inference attention keeps no score matrix (`cpu::attention` runs query rows), so a
        // chunk's memory is its activations: bound the widest (qkv or MLP hidden) to ~2 MiB so
        // a span's working set stays in a core's cache, at least one sample.
        let tmax = cfg.num_hist * cfg.patches();
        let inner = cfg.predictor.heads * cfg.predictor.head_dim;
        let widest = (3 * inner).max(cfg.predictor.mlp).max(cfg.latent_dim());
        let enc = (cfg.patches() + 1) * (3 * cfg.encoder.width).max(cfg.encoder.mlp);
        let per = (tmax * widest).max(enc).max(1) * 4;
        let chunk = ((2usize << 20) / per).max(1);
        let backend = Cpu {
            chunk,
            observer: None,
        };
        let (quant, packed) = (quant.map(|q| q.0), quant.is_some_and(|q| q.1));
        let mut wrap = Wrap {
            get,
            quant,
            packed,
            weight_only,
        };
        Model::build(cfg, &mut wrap, backend)
    }

    /// This model with an observer on the inputs of every linear (calibration); read the
    /// statistics with [`CpuModel::take_observed`].
    pub fn observing(mut self) -> Self {
        self.backend.observer = Some(ActObserver::default());
        self
    }

    /// This model with `o` on the inputs of every linear (e.g. one that samples them).
    pub fn observing_with(mut self, o: ActObserver) -> Self {
        self.backend.observer = Some(o);
        self
    }

    /// The observer's input sampler, if it has one.
    pub fn take_inputs(&self) -> Option<crate::quant::InputSampler> {
        self.backend
            .observer
            .as_ref()
            .and_then(|o| o.take_sampler())
    }

    /// Input statistics of every linear since the last call (empty when not observing).
    pub fn take_observed(&self) -> BTreeMap<String, ActStats> {
        self.backend
            .observer
            .as_ref()
            .map(|o| o.take())
            .unwrap_or_default()
    }

    /// Every linear layer's weight name with the bytes it holds in f32, packed (codes, scales,
    /// zero points) and in panels (`cpu::qlinear::Panels`): a packed layer holds no
    /// f32 copy.
    pub fn linear_weight_bytes(&self) -> Vec<(String, usize, usize, usize)> {
        let p = &self.p;
        let enc = p
            .enc_blocks
            .iter()
            .flat_map(|b| [&b.qkv, &b.proj, &b.fc1, &b.fc2]);
        let pred = p
            .pred_blocks
            .iter()
            .flat_map(|b| [&b.qkv, &b.out, &b.fc1, &b.fc2]);
        enc.chain(pred)
            .chain([&p.act, &p.prop])
            .map(|l| {
                let (f, q, i) = match &l.w {
                    CpuWeight::F32(t) => (t.elem_count() * 4, 0, 0),
                    CpuWeight::Packed(pw, ip) => {
                        (0, pw.bytes(), ip.as_ref().map_or(0, |p| p.bytes()))
                    }
                };
                (l.name.clone(), f, q, i)
            })
            .collect()
    }

    /// Samples per chunk at most (bounds a span's activations; see `build_cpu`).
    pub fn chunk(&self) -> usize {
        self.backend.chunk
    }

    /// Encoder forward on preprocessed pixels `[B, 3, S, S]`, without batch chunking.
    pub fn encode_chunk(&self, img: &Tensor) -> Result<Tensor> {
        self.run(|o| self.encode_with(o, img))
    }

    /// Predictor forward on tokens `[B, k * N, W]` (positional embedding added here).
    pub fn predict_tokens(&self, x: &Tensor) -> Result<Tensor> {
        self.run(|o| self.predict_with(o, x))
    }

    /// Frames `0..=steps` of a rollout from `z0 [B, N, De]`, `p0 [B, Pd]` and normalized
    /// `actions [B, steps, frameskip * action_dim]`, differentiable (the training rollout
    /// loss).
    pub(crate) fn rollout_chunk(
        &self,
        z0: &Tensor,
        p0: &Tensor,
        actions: &Tensor,
    ) -> Result<Vec<Tensor>> {
        self.run(|o| self.rollout_with(o, z0, p0, actions))
    }
}

fn tensor_of(w: &Weights, name: &str) -> Result<Tensor> {
    let h = w.get(name)?;
    cpu::tensor(&h.data, &h.shape)
}
