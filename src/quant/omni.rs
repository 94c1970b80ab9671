//! OmniQuant (Shao et al., "OmniQuant: Omnidirectionally Calibrated Quantization for Large
//! Language Models", ICLR 2024): learnable weight clipping (LWC) and learnable equivalent
//! transformation (LET), trained with candle's autodiff on the calibration inputs to minimize
//! each block's output error, with asymmetric codes.
//!
//! - LWC: per (row, group) the clip range is `[sigmoid(gamma) min(w), sigmoid(beta) max(w)]`
//!   (gamma, beta start at 4, i.e. 0.98 of the range); rounding passes gradients straight
//!   through.
//! - LET: on the LayerNorm -> qkv and LayerNorm -> fc1 pairs a per-channel scale `s` and, where
//!   the linear has a bias, a shift `d`: `x' = (x - d) / s`, `W' = W diag(s)`, `b' = b + W d`,
//!   folded into the LayerNorm afterwards (exact). `s` starts at SmoothQuant's alpha = 0.5
//!   scales, `d` at the middle of each channel's range.
//! - Blocks: the loss needs inputs that are independent per token (attention mixes tokens, and
//!   the calibration file stores sampled token rows), so a transformer block is trained as its
//!   three per-token parts in forward order: LayerNorm -> qkv (qkv output error), the output
//!   projection (its output error), and the MLP LayerNorm -> fc1 -> GELU -> fc2 (the MLP
//!   branch's output error). Each part's inputs are the float model's (docs/QUANT.md).
//! - Training: AdamW, LWC lr 1e-2 and LET lr 5e-3 as in the paper, 20 epochs over mini-batches
//!   of 128 of the first `samples * 64` calibration rows (32 samples by default).

use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use super::layout::{apply_fold, Layout, TensorStore};
use super::pack::{check_weight, PackedWeight};
use super::{rtn_asymmetric, CalibData, QuantContext, Quantizer, WeightSpec};
use crate::{Error, Result};

pub struct OmniQuant {
    pub epochs: usize,
    /// Calibration samples; each is 64 token rows.
    pub samples: usize,
    pub batch: usize,
    pub lwc_lr: f64,
    pub let_lr: f64,
    pub seed: u64,
}

impl Default for OmniQuant {
    fn default() -> Self {
        OmniQuant {
            epochs: 20,
            samples: 32,
            batch: 128,
            lwc_lr: 1e-2,
            let_lr: 5e-3,
            seed: 0,
        }
    }
}

/// Loss of one trained part: full-batch mean squared output error before training and after
/// each epoch; the parameters kept are those of the lowest.
#[derive(Clone, Debug)]
pub struct PartLoss {
    pub linears: Vec<String>,
    pub losses: Vec<f32>,
    /// The learned LET, folded: index into [`Layout::folds`], scale, shift.
    pub let_fold: Option<(usize, Vec<f32>, Option<Vec<f32>>)>,
}

struct Lwc {
    w: Tensor,
    b: Option<Tensor>,
    n: usize,
    k: usize,
    g: usize,
    bits: u8,
    gamma: Var,
    beta: Var,
}

fn ste_round(x: &Tensor) -> Result<Tensor> {
    Ok((x.round()? - x)?.detach().add(x)?)
}

impl Lwc {
    fn new(w: &[f32], b: Option<&[f32]>, n: usize, k: usize, spec: &WeightSpec) -> Result<Self> {
        let g = check_weight(w, n, k, spec.group)?.min(k);
        let gpr = k.div_ceil(g);
        Ok(Lwc {
            w: Tensor::from_slice(w, (n, k), &Device::Cpu)?,
            b: b.map(|b| Tensor::from_slice(b, n, &Device::Cpu))
                .transpose()?,
            n,
            k,
            g,
            bits: spec.bits,
            gamma: Var::from_tensor(&Tensor::full(4f32, (n, gpr), &Device::Cpu)?)?,
            beta: Var::from_tensor(&Tensor::full(4f32, (n, gpr), &Device::Cpu)?)?,
        })
    }

    /// Per-group clip bounds `(lo, hi)` of weight `w [n, k]`, each `[n, 1]`, including 0 (as
    /// the packed asymmetric codes do).
    fn bounds(&self, w: &Tensor, gi: usize) -> Result<(Tensor, Tensor, Tensor)> {
        let lo = gi * self.g;
        let wg = w.narrow(1, lo, self.g.min(self.k - lo))?;
        let mx = wg.max_keepdim(1)?.maximum(0f32)?;
        let mn = wg.min_keepdim(1)?.minimum(0f32)?;
        let sb = candle_nn::ops::sigmoid(&self.beta.narrow(1, gi, 1)?)?;
        let sg = candle_nn::ops::sigmoid(&self.gamma.narrow(1, gi, 1)?)?;
        Ok((wg, (sg * mn)?, (sb * mx)?))
    }

    /// LWC quantize-dequantize of `w [n, k]` (differentiable by straight-through rounding).
    fn qdq(&self, w: &Tensor) -> Result<Tensor> {
        let levels = ((1u32 << self.bits) - 1) as f64;
        let mut parts = Vec::new();
        for gi in 0..self.k.div_ceil(self.g) {
            let (wg, lo, hi) = self.bounds(w, gi)?;
            let scale = ((hi - &lo)? / levels)?.maximum(1e-8f32)?;
            let zero = ste_round(&(lo.neg()? / &scale)?)?;
            let q = (ste_round(&wg.broadcast_div(&scale)?)?.broadcast_add(&zero))?
                .clamp(0f32, levels as f32)?;
            parts.push(q.broadcast_sub(&zero)?.broadcast_mul(&scale)?);
        }
        Ok(Tensor::cat(&parts, 1)?)
    }

    /// Clamp the (transformed) weight to the learned bounds, per (row, group).
    fn clip(&self, w: &Tensor, out: &mut [f32]) -> Result<()> {
        for gi in 0..self.k.div_ceil(self.g) {
            let (_, lo, hi) = self.bounds(w, gi)?;
            let (lo, hi) = (
                lo.flatten_all()?.to_vec1::<f32>()?,
                hi.flatten_all()?.to_vec1()?,
            );
            for r in 0..self.n {
                let s = r * self.k + gi * self.g;
                for v in &mut out[s..s + self.g.min(self.k - gi * self.g)] {
                    *v = v.clamp(lo[r], hi[r]);
                }
            }
        }
        Ok(())
    }
}

/// A LET on one linear's input.
struct Let {
    log_s: Var,
    shift: Option<Var>,
}

impl Let {
    fn scale(&self) -> Result<Tensor> {
        Ok(self.log_s.exp()?)
    }

    fn input(&self, x: &Tensor) -> Result<Tensor> {
        let x = match &self.shift {
            Some(d) => x.broadcast_sub(d.as_tensor())?,
            None => x.clone(),
        };
        Ok(x.broadcast_div(&self.scale()?)?)
    }

    /// Transformed weight and bias of the consumer.
    fn weight(&self, l: &Lwc) -> Result<(Tensor, Option<Tensor>)> {
        let w = l.w.broadcast_mul(&self.scale()?.unsqueeze(0)?)?;
        let b = match (&self.shift, &l.b) {
            (Some(d), Some(b)) => Some((b + l.w.matmul(&d.unsqueeze(1)?)?.squeeze(1)?)?),
            (_, b) => b.clone(),
        };
        Ok((w, b))
    }
}

fn affine(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let y = x.matmul(&w.t()?)?;
    Ok(match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

impl OmniQuant {
    /// Train LWC and LET part by part, fold the LETs into the model, clip the weights to the
    /// learned ranges, and update `inputs` to the transformed linears' inputs.
    pub fn fit(
        &self,
        model: &mut dyn TensorStore,
        layout: &Layout,
        inputs: &mut CalibData,
    ) -> Result<Vec<PartLoss>> {
        let mut report = Vec::new();
        let in_mlp = |i: usize| layout.mlps.iter().any(|&(a, b)| a == i || b == i);
        for (li, lin) in layout.quantized() {
            if in_mlp(li) && !layout.mlps.iter().any(|&(a, _)| a == li) {
                continue; // fc2: trained with its fc1
            }
            let mut chain = vec![li];
            if let Some(&(_, f2)) = layout.mlps.iter().find(|&&(a, _)| a == li) {
                if layout.linears[f2].spec.weight.is_some() {
                    chain.push(f2);
                }
            }
            let x = inputs.layer(&lin.name)?;
            let rows = x.rows().min(self.samples.max(1) * 64);
            let xt = Tensor::from_slice(&x.x[..rows * lin.k], (rows, lin.k), &Device::Cpu)?;
            let mut lwcs = Vec::new();
            for &c in &chain {
                let l = &layout.linears[c];
                let (_, w) = model.tensor(&l.name)?;
                let b = match &l.bias {
                    Some(b) => Some(model.tensor(b)?.1.to_vec()),
                    None => None,
                };
                let ws = l
                    .spec
                    .weight
                    .ok_or_else(|| Error::Invalid(format!("{}: not a quantized linear", l.name)))?;
                lwcs.push(Lwc::new(w, b.as_deref(), l.n, l.k, &ws)?);
            }
            let fold_index = layout.folds.iter().position(|f| {
                f.linear == li && matches!(f.producer, super::layout::Producer::Norm { .. })
            });
            let fold = fold_index.map(|i| &layout.folds[i]);
            let let_ = match fold {
                None => None,
                Some(f) => {
                    let xmax = x.absmax();
                    let mid: Vec<f32> = x
                        .min
                        .iter()
                        .zip(&x.max)
                        .map(|(a, b)| (a + b) / 2.0)
                        .collect();
                    let mut wmax = vec![0f32; lin.k];
                    for row in model.tensor(&lin.name)?.1.chunks_exact(lin.k) {
                        for (m, v) in wmax.iter_mut().zip(row) {
                            *m = m.max(v.abs());
                        }
                    }
                    let shift = f.can_shift(layout);
                    // Scales on the shifted range when a shift is learned.
                    let s: Vec<f32> = (0..lin.k)
                        .map(|j| {
                            let a = if shift {
                                (x.max[j] - mid[j]).abs()
                            } else {
                                xmax[j]
                            };
                            (a.max(1e-5).sqrt() / wmax[j].max(1e-5).sqrt())
                                .max(1e-5)
                                .ln()
                        })
                        .collect();
                    Some(Let {
                        log_s: Var::from_slice(&s, lin.k, &Device::Cpu)?,
                        shift: shift
                            .then(|| Var::from_slice(&mid, lin.k, &Device::Cpu))
                            .transpose()?,
                    })
                }
            };
            let forward = |xb: &Tensor, quant: bool| -> Result<Tensor> {
                let (w0, b0, xb) = match &let_ {
                    Some(t) if quant => {
                        let (w, b) = t.weight(&lwcs[0])?;
                        (w, b, t.input(xb)?)
                    }
                    _ => (lwcs[0].w.clone(), lwcs[0].b.clone(), xb.clone()),
                };
                let w0 = if quant { lwcs[0].qdq(&w0)? } else { w0 };
                let mut y = affine(&xb, &w0, b0.as_ref())?;
                if let Some(l2) = lwcs.get(1) {
                    let w1 = if quant { l2.qdq(&l2.w)? } else { l2.w.clone() };
                    y = affine(&y.gelu_erf()?, &w1, l2.b.as_ref())?;
                }
                Ok(y)
            };
            let target = forward(&xt, false)?.detach();
            let loss_of = |xb: &Tensor, tb: &Tensor| -> Result<Tensor> {
                Ok((forward(xb, true)? - tb)?.sqr()?.mean_all()?)
            };
            let mut lwc_vars = Vec::new();
            for l in &lwcs {
                lwc_vars.push(l.gamma.clone());
                lwc_vars.push(l.beta.clone());
            }
            let adam = |vars: Vec<Var>, lr: f64| {
                AdamW::new(
                    vars,
                    ParamsAdamW {
                        lr,
                        weight_decay: 0.0,
                        ..ParamsAdamW::default()
                    },
                )
            };
            let mut opt_lwc = adam(lwc_vars, self.lwc_lr)?;
            let mut opt_let = match &let_ {
                Some(t) => {
                    let mut v = vec![t.log_s.clone()];
                    v.extend(t.shift.clone());
                    Some(adam(v, self.let_lr)?)
                }
                None => None,
            };
            let full =
                |xt: &Tensor| -> Result<f32> { Ok(loss_of(xt, &target)?.to_scalar::<f32>()?) };
            let mut losses = vec![full(&xt)?];
            let bs = self.batch.max(1).min(rows);
            // Keep the parameters of the best epoch (Adam on straight-through rounding is not
            // monotone).
            let mut all_vars: Vec<Var> = Vec::new();
            for l in &lwcs {
                all_vars.extend([l.gamma.clone(), l.beta.clone()]);
            }
            if let Some(t) = &let_ {
                all_vars.push(t.log_s.clone());
                all_vars.extend(t.shift.clone());
            }
            let snapshot = |vs: &[Var]| -> Result<Vec<Tensor>> {
                Ok(vs
                    .iter()
                    .map(|v| v.as_tensor().copy())
                    .collect::<candle_core::Result<_>>()?)
            };
            let mut best = (losses[0], snapshot(&all_vars)?);
            for _ in 0..self.epochs {
                for start in (0..rows).step_by(bs) {
                    let len = bs.min(rows - start);
                    let loss = loss_of(&xt.narrow(0, start, len)?, &target.narrow(0, start, len)?)?;
                    let grads = loss.backward()?;
                    opt_lwc.step(&grads)?;
                    if let Some(o) = &mut opt_let {
                        o.step(&grads)?;
                    }
                }
                let l = full(&xt)?;
                losses.push(l);
                if l < best.0 {
                    best = (l, snapshot(&all_vars)?);
                }
            }
            for (v, t) in all_vars.iter().zip(&best.1) {
                v.set(t)?;
            }
            if losses.iter().any(|l| !l.is_finite()) {
                return Err(Error::Invalid(format!(
                    "omniquant: the loss of {} became non-finite",
                    lin.name
                )));
            }
            // Fold the LET into the model and the calibration inputs, then clip.
            let mut let_fold = None;
            if let (Some(t), Some(f), Some(fi)) = (&let_, fold, fold_index) {
                let s = t.scale()?.to_vec1::<f32>()?;
                let d = t
                    .shift
                    .as_ref()
                    .map(|d| d.as_tensor().to_vec1::<f32>())
                    .transpose()?;
                apply_fold(model, layout, f, &s, d.as_deref())?;
                inputs.layer_mut(&lin.name)?.transform(&s, d.as_deref());
                let_fold = Some((fi, s, d));
            }
            for (l, &c) in lwcs.iter().zip(&chain) {
                let name = &layout.linears[c].name;
                let cur = model.tensor(name)?.1.to_vec();
                let wt = Tensor::from_slice(&cur, (l.n, l.k), &Device::Cpu)?;
                let out = model.tensor_mut(name)?;
                l.clip(&wt, out)?;
            }
            report.push(PartLoss {
                linears: chain
                    .iter()
                    .map(|&c| layout.linears[c].name.clone())
                    .collect(),
                losses,
                let_fold,
            });
        }
        Ok(report)
    }
}

impl Quantizer for OmniQuant {
    fn name(&self) -> &'static str {
        "omniquant"
    }

    fn needs_inputs(&self) -> bool {
        true
    }

    fn prepare(
        &self,
        model: &mut dyn TensorStore,
        layout: &Layout,
        inputs: Option<&mut CalibData>,
    ) -> Result<()> {
        let inputs = self.inputs(inputs)?;
        self.fit(model, layout, inputs).map(|_| ())
    }

    fn quantize(
        &self,
        w: &[f32],
        n: usize,
        k: usize,
        spec: &WeightSpec,
        _cx: &QuantContext,
    ) -> Result<PackedWeight> {
        rtn_asymmetric(w, n, k, spec)
    }
}
