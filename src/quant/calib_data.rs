//! Calibration inputs: sampled rows of every quantized linear's input, captured once per model
//! from float-planner rollouts and reused by every method (AWQ, SmoothQuant, OmniQuant, GPTQ
//! and the static activation ranges).
//!
//! Per linear it keeps a fixed budget of input rows (reservoir sampling over every row the
//! linear saw, seeded by the layer name, so a capture is deterministic), and the per-channel
//! min/max over *all* rows: an equivalence transform `x' = (x - shift) / scale` maps both
//! exactly, so activation ranges stay exact after SmoothQuant/AWQ/LET even though only a sample
//! of rows is stored. The file is safetensors (`NAME.x [rows, k]`, `NAME.min [k]`,
//! `NAME.max [k]`) with metadata `qwm_calib` stamped with the CRC-32 of the float model's
//! tensors, so activations from another model are refused.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use super::ActStats;
use crate::{Error, Result};

/// Default number of sampled input rows kept per linear.
pub const DEFAULT_TOKENS: usize = 2048;
const FORMAT_VERSION: u32 = 1;

/// The sampled inputs of one linear.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerInputs {
    pub k: usize,
    /// Sampled rows, `[rows, k]`.
    pub x: Vec<f32>,
    /// Per-channel min and max over every row seen, not only the sampled ones.
    pub min: Vec<f32>,
    pub max: Vec<f32>,
    /// Rows seen while capturing.
    pub seen: u64,
}

impl LayerInputs {
    pub fn new(k: usize) -> Self {
        LayerInputs {
            k,
            x: Vec::new(),
            min: vec![f32::INFINITY; k],
            max: vec![f32::NEG_INFINITY; k],
            seen: 0,
        }
    }

    pub fn rows(&self) -> usize {
        self.x.len() / self.k.max(1)
    }

    /// Per-tensor min/max (the static activation range).
    pub fn act_stats(&self) -> ActStats {
        let mut s = ActStats::default();
        s.observe(&self.min);
        s.observe(&self.max);
        s.count = self.seen * self.k as u64;
        s
    }

    /// `max |x_j|` per channel over every row seen.
    pub fn absmax(&self) -> Vec<f32> {
        self.min
            .iter()
            .zip(&self.max)
            .map(|(a, b)| a.abs().max(b.abs()))
            .collect()
    }

    /// `mean |x_j|` per channel over the sampled rows (AWQ's activation salience).
    pub fn mean_abs(&self) -> Vec<f32> {
        let mut m = vec![0f64; self.k];
        for row in self.x.chunks_exact(self.k) {
            for (a, v) in m.iter_mut().zip(row) {
                *a += v.abs() as f64;
            }
        }
        let r = self.rows().max(1) as f64;
        m.into_iter().map(|v| (v / r) as f32).collect()
    }

    /// Apply `x' = (x - shift) / scale` per channel, as an equivalence transform does to the
    /// linear's input (`scale > 0`, so min/max map to min/max).
    pub fn transform(&mut self, scale: &[f32], shift: Option<&[f32]>) {
        let sh = |j: usize| shift.map_or(0.0, |s| s[j]);
        for row in self.x.chunks_exact_mut(self.k) {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (*v - sh(j)) / scale[j];
            }
        }
        for (j, s) in scale.iter().enumerate() {
            self.min[j] = (self.min[j] - sh(j)) / s;
            self.max[j] = (self.max[j] - sh(j)) / s;
        }
    }

    fn check(&self, name: &str, file: &str) -> Result<()> {
        let bad = |m: String| {
            Err(Error::Invalid(format!(
                "{file}: calibration inputs of {name} {m}; delete the file to capture them again"
            )))
        };
        if self.k == 0 || !self.x.len().is_multiple_of(self.k) || self.min.len() != self.k {
            return bad(format!(
                "have {} values and {} channel ranges, not rows of {}",
                self.x.len(),
                self.min.len(),
                self.k
            ));
        }
        if self.rows() == 0 {
            return bad("hold no rows (the linear never ran during calibration)".into());
        }
        let finite = |v: &[f32]| v.iter().position(|x| !x.is_finite());
        if let Some(i) = finite(&self.x) {
            return bad(format!(
                "hold a non-finite value {} at row {}, channel {}",
                self.x[i],
                i / self.k,
                i % self.k
            ));
        }
        if finite(&self.min).or(finite(&self.max)).is_some() {
            return bad("have non-finite channel ranges".into());
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Meta {
    format_version: u32,
    model_crc32: String,
    episodes: usize,
    tokens: usize,
    /// How the inputs were captured (env and float planner settings); "" in files written
    /// before it was kept, which no run accepts.
    #[serde(default)]
    capture: String,
    seen: BTreeMap<String, u64>,
}

/// Calibration inputs of every quantized linear of one model.
#[derive(Clone, Debug, PartialEq)]
pub struct CalibData {
    /// CRC-32 (hex) of the float model's tensors ([`crate::model::Weights::crc32`]).
    pub model_crc32: String,
    pub episodes: usize,
    /// Row budget per linear.
    pub tokens: usize,
    /// The environment and float planner settings the inputs were captured with
    /// (`crate::plan::calibrate::capture_key`): a run with other settings must not reuse them.
    pub capture: String,
    pub layers: BTreeMap<String, LayerInputs>,
}

impl CalibData {
    /// The inputs of linear `name`.
    pub fn layer(&self, name: &str) -> Result<&LayerInputs> {
        self.layers.get(name).ok_or_else(|| {
            Error::Invalid(format!(
                "calibration data has no inputs for {name}; capture it again for this model"
            ))
        })
    }

    pub fn layer_mut(&mut self, name: &str) -> Result<&mut LayerInputs> {
        self.layers.get_mut(name).ok_or_else(|| {
            Error::Invalid(format!(
                "calibration data has no inputs for {name}; capture it again for this model"
            ))
        })
    }

    /// Per-tensor statistics of every linear (static activation ranges).
    pub fn act_stats(&self) -> BTreeMap<String, ActStats> {
        self.layers
            .iter()
            .map(|(n, l)| (n.clone(), l.act_stats()))
            .collect()
    }

    /// Check this data belongs to the model with CRC `crc` whose quantized linears have the
    /// given `(name, k)` input widths, and holds only finite values. `file` names the source.
    pub fn check(&self, crc: &str, linears: &[(String, usize)], file: &str) -> Result<()> {
        if self.model_crc32 != crc {
            return Err(Error::Invalid(format!(
                "{file}: calibration inputs were captured on another model (CRC-32 {}, this \
                 model {crc}); delete the file or pass another calibration path",
                self.model_crc32
            )));
        }
        for (name, k) in linears {
            let l = self.layers.get(name).ok_or_else(|| {
                Error::Invalid(format!(
                    "{file}: no calibration inputs for {name}; delete the file to capture \
                     them again"
                ))
            })?;
            if l.k != *k {
                return Err(Error::Invalid(format!(
                    "{file}: calibration inputs of {name} are {} wide, the model's linear \
                     takes {k}; delete the file to capture them again",
                    l.k
                )));
            }
            l.check(name, file)?;
        }
        Ok(())
    }

    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let mut bufs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (n, l) in &self.layers {
            bufs.push((format!("{n}.x"), vec![l.rows(), l.k], bytes(&l.x)));
            bufs.push((format!("{n}.min"), vec![l.k], bytes(&l.min)));
            bufs.push((format!("{n}.max"), vec![l.k], bytes(&l.max)));
        }
        let meta = Meta {
            format_version: FORMAT_VERSION,
            model_crc32: self.model_crc32.clone(),
            episodes: self.episodes,
            tokens: self.tokens,
            capture: self.capture.clone(),
            seen: self
                .layers
                .iter()
                .map(|(n, l)| (n.clone(), l.seen))
                .collect(),
        };
        let mut md = HashMap::new();
        md.insert(
            "qwm_calib".to_string(),
            serde_json::to_string(&meta).map_err(|e| Error::Invalid(e.to_string()))?,
        );
        let views = bufs
            .iter()
            .map(|(n, s, b)| {
                TensorView::new(Dtype::F32, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| Error::Invalid(format!("{n}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let data = safetensors::serialize(views, Some(md))
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        // Per-process temporary, then rename (an interrupted save leaves no truncated file);
        // a target that is not a regular file is refused.
        crate::io::write_atomic(path, &data)
    }

    /// Read a calibration file (its values are checked against a model by [`Self::check`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bad = |m: String| Error::Invalid(format!("{}: {m}", path.display()));
        let bytes = crate::io::read_file(path, crate::io::MAX_FILE_BYTES)?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
        let meta: Meta = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("qwm_calib"))
            .ok_or_else(|| bad("no qwm_calib metadata: not a calibration file".into()))
            .and_then(|s| serde_json::from_str(s).map_err(|e| bad(format!("qwm_calib: {e}"))))?;
        if meta.format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "calibration format version {} (this build reads {FORMAT_VERSION})",
                meta.format_version
            )));
        }
        let f32s = |name: &str, shape_len: usize| -> Result<(Vec<usize>, Vec<f32>)> {
            let v = st
                .tensor(name)
                .map_err(|_| bad(format!("tensor {name} is missing")))?;
            if v.dtype() != Dtype::F32 || v.shape().len() != shape_len {
                return Err(bad(format!(
                    "tensor {name} is {:?} {:?}, expected F32 of rank {shape_len}",
                    v.dtype(),
                    v.shape()
                )));
            }
            let d = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Ok((v.shape().to_vec(), d))
        };
        let mut layers = BTreeMap::new();
        for (name, seen) in &meta.seen {
            let (shape, x) = f32s(&format!("{name}.x"), 2)?;
            let (ms, min) = f32s(&format!("{name}.min"), 1)?;
            let (_, max) = f32s(&format!("{name}.max"), 1)?;
            if ms[0] != shape[1] || max.len() != shape[1] {
                return Err(bad(format!(
                    "{name}: channel ranges of {} and {} values for rows of {}",
                    min.len(),
                    max.len(),
                    shape[1]
                )));
            }
            let l = LayerInputs {
                k: shape[1],
                x,
                min,
                max,
                seen: *seen,
            };
            layers.insert(name.clone(), l);
        }
        Ok(CalibData {
            model_crc32: meta.model_crc32,
            episodes: meta.episodes,
            tokens: meta.tokens,
            capture: meta.capture,
            layers,
        })
    }
}

/// Gathers [`LayerInputs`] while a model runs: reservoir sampling (algorithm R) of `budget`
/// rows per linear with a generator seeded by the layer's name, plus exact channel ranges.
pub struct InputSampler {
    budget: usize,
    widths: BTreeMap<String, usize>,
    layers: BTreeMap<String, (LayerInputs, StdRng)>,
}

impl InputSampler {
    /// Sample the inputs of the linears `(name, k)`; other names are ignored.
    pub fn new(linears: &[(String, usize)], budget: usize) -> Self {
        InputSampler {
            budget: budget.max(1),
            widths: linears.iter().cloned().collect(),
            layers: BTreeMap::new(),
        }
    }

    pub fn observe(&mut self, name: &str, x: &[f32]) {
        let Some(&k) = self.widths.get(name) else {
            return;
        };
        if k == 0 || !x.len().is_multiple_of(k) {
            return;
        }
        let budget = self.budget;
        let (l, rng) = self.layers.entry(name.to_string()).or_insert_with(|| {
            let seed = crc32fast::hash(name.as_bytes()) as u64;
            (LayerInputs::new(k), StdRng::seed_from_u64(seed))
        });
        for row in x.chunks_exact(k) {
            for (j, &v) in row.iter().enumerate() {
                // NaN poisons the range so that `check` reports it.
                if v.is_nan() {
                    l.min[j] = f32::NAN;
                } else {
                    l.min[j] = l.min[j].min(v);
                    l.max[j] = l.max[j].max(v);
                }
            }
            let i = l.seen as usize;
            if i < budget {
                l.x.extend_from_slice(row);
            } else {
                let r = rng.random_range(0..=i);
                if r < budget {
                    l.x[r * k..(r + 1) * k].copy_from_slice(row);
                }
            }
            l.seen += 1;
        }
    }

    pub fn finish(self, model_crc32: String, episodes: usize, capture: String) -> CalibData {
        CalibData {
            model_crc32,
            episodes,
            tokens: self.budget,
            capture,
            layers: self.layers.into_iter().map(|(n, (l, _))| (n, l)).collect(),
        }
    }
}
