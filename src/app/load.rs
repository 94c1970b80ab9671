//! Opening a model for planning: a shipped model, a file, a preset or an untrained one; a
//! quantized file as it is; a float model quantized on load, after calibrating its static
//! activation ranges with the float planner when the spec asks for them.

use std::path::{Path, PathBuf};

use super::events::Event;
use super::settings::PlanSettings;
use crate::env::Env;
use crate::model::quantized::{self, quantize_model_owned, QuantizedModel};
use crate::model::{self, ModelConfig, Weights};
use crate::plan::calibrate::{default_inputs_path, load_or_capture_inputs};
use crate::quant::QuantSpec;
use crate::{Error, Result};

/// Where the model comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// `assets/<env>.safetensors`.
    Shipped,
    /// A float or quantized model file.
    File(String),
    /// An untrained tiny model built in memory (exercises the pipeline; not expected to
    /// succeed).
    Random,
    /// A named config preset with random weights (`ModelConfig::preset`: tiny, dinowm), for
    /// benchmarks.
    Preset(String),
}

impl ModelSource {
    /// The `--model` flag of `plan`/`eval`/`quantize`: absent = shipped, `random`, or a path.
    pub fn from_flag(flag: Option<&str>) -> Self {
        match flag {
            None => ModelSource::Shipped,
            Some("random") => ModelSource::Random,
            Some(p) => ModelSource::File(p.to_string()),
        }
    }

    /// The `--model` flag of the benchmarks: a preset name or a path.
    pub fn preset_or_file(s: &str) -> Self {
        match ModelConfig::preset(s) {
            Some(_) => ModelSource::Preset(s.to_string()),
            None => ModelSource::File(s.to_string()),
        }
    }
}

/// What to load and how to quantize it.
#[derive(Clone, Debug)]
pub struct ModelRequest {
    pub source: ModelSource,
    /// Quantization spec (docs/QUANT.md), `fp` for none.
    pub quant: String,
    /// Quantization method (`quant::METHODS`).
    pub method: String,
    /// Calibration episodes (static activation ranges, and the inputs of the calibrated
    /// methods).
    pub calib_episodes: usize,
    /// Sampled input rows kept per linear in the calibration inputs.
    pub calib_tokens: usize,
    /// Calibration inputs file (read if it exists, else captured and written); `None`: next
    /// to the model file, none for in-memory models.
    pub calib: Option<PathBuf>,
}

impl Default for ModelRequest {
    fn default() -> Self {
        ModelRequest {
            source: ModelSource::Shipped,
            quant: "fp".into(),
            method: "rtn".into(),
            calib_episodes: 8,
            calib_tokens: crate::quant::calib_data::DEFAULT_TOKENS,
            calib: None,
        }
    }
}

/// A float model, or a quantized one (packed weights on both backends; a quantized linear has
/// no f32 copy in memory).
pub struct LoadedModel {
    held: Held,
    /// Where the float model a spec was applied to on load came from (divergence measures
    /// reload it rather than keep a second model in memory); `None` otherwise.
    pub float_source: Option<ModelSource>,
    /// Display name: the file (or a description) and the quantization.
    pub name: String,
    /// The file the model came from (`None` for in-memory models).
    pub file: Option<String>,
    /// Seconds the quantization method took on load (its calibration cost given the captured
    /// inputs); `None` unless a float model was quantized on load.
    pub quantize_seconds: Option<f64>,
}

/// The model's tensors: all in f32, or a quantized model (packed linears, the rest in f32).
enum Held {
    Float(Weights),
    Quantized(QuantizedModel),
}

impl LoadedModel {
    fn float(weights: Weights, name: String, file: Option<String>) -> Self {
        LoadedModel {
            held: Held::Float(weights),
            float_source: None,
            name,
            file,
            quantize_seconds: None,
        }
    }

    fn quantized(q: QuantizedModel, name: String, file: Option<String>) -> Self {
        LoadedModel {
            held: Held::Quantized(q),
            float_source: None,
            name,
            file,
            quantize_seconds: None,
        }
    }

    /// The float weights; for a quantized model every tensor but its quantized linears (which
    /// are in [`LoadedModel::quant`]), with the config and normalization.
    pub fn weights(&self) -> &Weights {
        match &self.held {
            Held::Float(w) => w,
            Held::Quantized(q) => &q.weights,
        }
    }

    /// The quantized model, `None` for float models.
    pub fn quant(&self) -> Option<&QuantizedModel> {
        match &self.held {
            Held::Float(_) => None,
            Held::Quantized(q) => Some(q),
        }
    }

    /// Bytes of f32 data held for quantized linears' weights (0: packed only).
    pub fn quantized_f32_bytes(&self) -> usize {
        self.quant().map_or(0, |q| q.quantized_f32_bytes())
    }

    /// The float model a spec was applied to on load, read again from its source (`None`
    /// for models not quantized on load).
    pub fn float_original(&self, env: &dyn Env) -> Result<Option<Weights>> {
        self.float_source
            .as_ref()
            .map(|s| load_float(s, env).map(|(w, _, _)| w))
            .transpose()
    }

    /// The quantization spec, `fp` for float models.
    pub fn spec(&self) -> String {
        self.quant()
            .map_or("fp".to_string(), |q| q.spec.to_string())
    }

    /// Numbers per planner step: frameskip x action_dim.
    pub fn step_dim(&self) -> usize {
        self.weights().config.frameskip * self.weights().config.action_dim
    }

    /// A model for benchmarks: a preset with random weights or a float file, no environment.
    pub fn for_bench(source: &ModelSource) -> Result<Self> {
        let (weights, file) = match source {
            ModelSource::Preset(p) => {
                let cfg = ModelConfig::preset(p).ok_or_else(|| {
                    Error::Invalid(format!("unknown model preset {p:?}; presets: tiny, dinowm"))
                })?;
                (Weights::random(&cfg, 0)?, None)
            }
            ModelSource::File(p) => (model::format::load(p)?, Some(p.clone())),
            other => {
                return Err(Error::Invalid(format!(
                    "benchmarks take a preset or a model file, not {other:?}"
                )))
            }
        };
        let name = weights.config.name.clone();
        Ok(LoadedModel::float(weights, name, file))
    }

    /// This bench model quantized with `spec` (RTN; dynamic activation specs only, since
    /// benchmarks have no environment to calibrate static ranges in). `fp` leaves it float.
    pub fn quantized_for_bench(self, spec: &str) -> Result<Self> {
        let spec: QuantSpec = spec.parse()?;
        if spec == QuantSpec::default() {
            return Ok(self);
        }
        if [spec.encoder, spec.predictor]
            .iter()
            .any(|m| m.act.is_some_and(|a| !a.dynamic))
        {
            return Err(Error::Invalid(format!(
                "--quant {spec}: static activation ranges need calibration; benchmark a \
                 dynamic spec (add `t`, e.g. w8a8t) or a quantized model file"
            )));
        }
        let Held::Float(w) = self.held else {
            return Err(Error::Invalid(format!(
                "--quant {spec}: {} is already quantized",
                self.name
            )));
        };
        let (q, _) = quantized::quantize_model_owned(w, &spec, "rtn", None, None)?;
        release_freed_memory();
        Ok(LoadedModel::quantized(
            q,
            format!("{} ({spec} rtn)", self.name),
            self.file,
        ))
    }

    /// Load the model for planning in `env` (quantizing it when asked; calibration runs the
    /// float planner with `settings`) and check that it fits the environment.
    pub fn open(
        req: &ModelRequest,
        env: &dyn Env,
        settings: &PlanSettings,
        observer: &mut dyn FnMut(&Event),
    ) -> Result<Self> {
        let spec: QuantSpec = req.quant.parse()?;
        crate::quant::method(&req.method)?;
        if let ModelSource::File(p) = &req.source {
            if Path::new(p).exists() && quantized::is_quantized_file(p)? {
                if spec != QuantSpec::default() {
                    return Err(Error::Invalid(format!(
                        "{p} is already quantized; drop --quant {spec}"
                    )));
                }
                let q = quantized::load(p)?;
                check_fits(&q.weights, p, env)?;
                let name = format!("{p} ({})", q.spec);
                return Ok(LoadedModel::quantized(q, name, Some(p.to_string())));
            }
        }
        let (w, name, file) = load_float(&req.source, env)?;
        check_fits(&w, &name, env)?;
        if spec == QuantSpec::default() {
            return Ok(LoadedModel::float(w, name, file));
        }
        let method = crate::quant::method(&req.method)?;
        method.supports(&spec)?;
        let needs_calib = method.needs_inputs()
            || [spec.encoder, spec.predictor]
                .iter()
                .any(|m| m.act.is_some_and(|a| !a.dynamic));
        if needs_calib && req.calib_episodes == 0 {
            return Err(Error::Invalid(format!(
                "--calib-episodes 0: {} with {spec} calibrates on at least 1 episode; give \
                 --calib-episodes 1 or more (default 8), or a dynamic spec such as w8a8t with \
                 rtn or omse, which need none",
                req.method
            )));
        }
        let inputs = if needs_calib {
            let path = req
                .calib
                .clone()
                .or_else(|| file.as_deref().map(|f| default_inputs_path(Path::new(f))));
            observer(&Event::Notice(format!(
                "calibrating {spec} ({}): inputs from {}",
                req.method,
                path.as_ref()
                    .map_or("a fresh capture (not kept)".into(), |p| {
                        format!("{} (captured first if missing)", p.display())
                    })
            )));
            let step = w.config.frameskip * w.config.action_dim;
            let (pc, _) = settings.configs(env.spec(), step, 0);
            Some(load_or_capture_inputs(
                &w,
                path.as_deref(),
                env.spec().name,
                req.calib_episodes,
                &pc,
                env.spec().alpha,
                req.calib_tokens,
            )?)
        } else {
            None
        };
        let t = std::time::Instant::now();
        let (q, _) = quantize_model_owned(w, &spec, &req.method, None, inputs.as_ref())?;
        release_freed_memory();
        let quantize_seconds = t.elapsed().as_secs_f64();
        observer(&Event::Notice(format!(
            "{} took {quantize_seconds:.1} s",
            req.method
        )));
        let (qb, fb) = q.linear_bytes();
        observer(&Event::Notice(format!(
            "quantized {spec} with {}: linear layers {:.2} MB ({:.3} of f32)",
            q.method,
            qb as f64 / 1e6,
            qb as f64 / fb.max(1) as f64
        )));
        let name = format!("{name} ({spec} {})", q.method);
        Ok(LoadedModel {
            float_source: Some(req.source.clone()),
            quantize_seconds: Some(quantize_seconds),
            ..LoadedModel::quantized(q, name, file)
        })
    }
}

/// Hand the float weights freed by quantization back to the OS: glibc keeps freed heap pages
/// resident otherwise, and a quantized model would then take the float model's memory.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn check_fits(w: &Weights, name: &str, env: &dyn Env) -> Result<()> {
    let c = &w.config;
    let s = env.spec();
    if c.action_dim != s.action_dim || c.proprio_dim != s.proprio_dim {
        return Err(Error::Invalid(format!(
            "model {name} plans {}-D actions with {}-D proprio but {} has {}-D actions and \
             {}-D proprio",
            c.action_dim, c.proprio_dim, s.name, s.action_dim, s.proprio_dim
        )));
    }
    Ok(())
}

/// The float model, its display name and its file (`None` for in-memory models).
fn load_float(source: &ModelSource, env: &dyn Env) -> Result<(Weights, String, Option<String>)> {
    match source {
        ModelSource::Random => {
            let s = env.spec();
            let mut cfg = ModelConfig::tiny();
            cfg.action_dim = s.action_dim;
            cfg.proprio_dim = s.proprio_dim;
            cfg.name = format!("random-tiny-{}", s.name);
            Ok((
                Weights::random(&cfg, 0)?,
                "random (untrained tiny model)".to_string(),
                None,
            ))
        }
        ModelSource::Preset(p) => {
            let cfg = ModelConfig::preset(p)
                .ok_or_else(|| Error::Invalid(format!("unknown model preset {p:?}")))?;
            Ok((
                Weights::random(&cfg, 0)?,
                format!("{p} (random weights)"),
                None,
            ))
        }
        ModelSource::File(p) => Ok((model::format::load(p)?, p.to_string(), Some(p.to_string()))),
        ModelSource::Shipped => {
            let p = format!("assets/{}.safetensors", env.spec().name);
            if !Path::new(&p).exists() {
                let name = env.spec().name;
                // PushT's model takes hours to retrain (docs/MODELS.md): name its script.
                let train = if name == "pusht" {
                    "train it with `tools/train_pusht.sh` (resumable, docs/MODELS.md), "
                } else {
                    ""
                };
                return Err(Error::Invalid(format!(
                    "no model shipped for {name} ({p} is missing); {train}pass --model PATH, \
                     or --model random for an untrained model that exercises the pipeline"
                )));
            }
            Ok((model::format::load(&p)?, p.clone(), Some(p)))
        }
    }
}
