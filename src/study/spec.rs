//! Study files (TOML, docs/STUDY.md): environments, a grid of quantization specs x PTQ
//! methods x planner settings, expanded into named cells. Each cell becomes one eval report.
//!
//! The file is parsed with serde and `deny_unknown_fields`, so a misspelt key is an error with
//! its line; the entries that name things (specs, methods, environments) keep their position
//! (`toml::Spanned`) so that a bad value is reported at its line too.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::quant::QuantSpec;
use crate::{Error, Result};

/// Built-in studies: `quantwm` (the paper's grid on our tasks) and `smoke` (a minute, tests).
pub const PRESETS: [(&str, &str); 2] = [
    ("quantwm", include_str!("presets/quantwm.toml")),
    ("smoke", include_str!("presets/smoke.toml")),
];

/// Planner settings shared by every cell (a grid may override `opt_steps` and `max_iter`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlannerFile {
    pub name: String,
    pub samples: usize,
    pub topk: usize,
    pub horizon: usize,
    pub n_taken: usize,
    pub var_scale: f32,
    pub temperature: f32,
    /// Default CEM steps; `None`: DINO-WM's per environment (10, PushT 30).
    pub opt_steps: Option<usize>,
    /// Default MPC cap; `None`: DINO-WM's per environment (50, PushT 30).
    pub max_iter: Option<usize>,
    /// When MPC checks success (`plan::SuccessCheck`): after-plan (DINO-WM, the default) or
    /// every-step (docs/results/quantwm-every-step, written before the setting existed).
    pub success_check: crate::plan::SuccessCheck,
}

impl Default for PlannerFile {
    fn default() -> Self {
        PlannerFile {
            name: "cem".into(),
            samples: 300,
            topk: 30,
            horizon: 5,
            n_taken: 5,
            var_scale: 1.0,
            temperature: 0.5,
            opt_steps: None,
            max_iter: None,
            success_check: crate::plan::SuccessCheck::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvFile {
    name: Spanned<String>,
    /// Model file; default `assets/<env>.safetensors`.
    model: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GridFile {
    name: String,
    /// Environments of this block (default: every `[[env]]`).
    envs: Option<Vec<Spanned<String>>>,
    quant: Vec<Spanned<String>>,
    methods: Option<Vec<Spanned<String>>>,
    opt_steps: Option<Vec<usize>>,
    max_iter: Option<usize>,
    episodes: Option<usize>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StudyFile {
    name: String,
    #[serde(default)]
    description: String,
    episodes: usize,
    /// Episodes per work item (the unit of sharding and locking).
    #[serde(default = "default_chunk")]
    chunk: usize,
    #[serde(default = "default_calib")]
    calib_episodes: usize,
    #[serde(default)]
    planner: PlannerFile,
    env: Vec<EnvFile>,
    grid: Vec<GridFile>,
}

fn default_chunk() -> usize {
    10
}
fn default_calib() -> usize {
    8
}

/// One evaluation of the grid: an environment, a model, a quantization and planner settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// `ENV/SPEC[.METHOD][.osN][.miN]`: the method when not RTN, CEM steps and MPC cap when
    /// not the environment's default. Also the cell's path under the study directory.
    pub name: String,
    /// The grid block that asked for it (the first one, when several did).
    pub grid: String,
    pub env: String,
    pub model: String,
    /// Canonical spec (`QuantSpec`'s display form, as in eval reports).
    pub quant: String,
    /// `rtn` for float cells (no method applies).
    pub method: String,
    pub opt_steps: usize,
    pub max_iter: usize,
    pub episodes: usize,
}

impl Cell {
    /// The cell's quantization (checked by [`Study::validate`] whenever a study is read).
    pub fn spec(&self) -> Result<QuantSpec> {
        self.quant
            .parse()
            .map_err(|e: Error| e.within(&format!("cell {}", self.name)))
    }
}

/// A parsed, validated, expanded study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Study {
    pub name: String,
    pub description: String,
    pub chunk: usize,
    pub calib_episodes: usize,
    pub planner: PlannerFile,
    pub cells: Vec<Cell>,
}

/// DINO-WM's planning defaults per environment: (CEM steps, MPC cap).
pub fn dinowm_defaults(env: &str) -> (usize, usize) {
    if env == "pusht" {
        (30, 30)
    } else {
        (10, 50)
    }
}

/// File-name form of a spec: `enc=w4,pred=fp` -> `enc-w4_pred-fp`.
pub fn spec_slug(spec: &str) -> String {
    spec.replace('=', "-").replace(',', "_")
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Study {
    /// A preset name or a TOML file.
    pub fn load(source: &str) -> Result<Study> {
        if let Some((_, text)) = PRESETS.iter().find(|(n, _)| *n == source) {
            return Study::parse(text, &format!("preset {source}"));
        }
        let path = Path::new(source);
        if !path.exists() {
            let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
            return Err(Error::Invalid(format!(
                "{source:?} is neither a study file nor a preset; presets: {} (or give the \
                 path of a TOML study file, docs/STUDY.md)",
                names.join(", ")
            )));
        }
        let text = crate::io::read_text(path)?;
        Study::parse(&text, source)
    }

    /// Parse and expand; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Study> {
        let f: StudyFile = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map_or(String::new(), |s| format!(":{}", line_of(text, s.start)));
            Error::Invalid(format!(
                "{origin}{at}: {} (docs/STUDY.md lists the keys)",
                e.message().trim()
            ))
        })?;
        let err = |span: std::ops::Range<usize>, msg: String| {
            Error::Invalid(format!("{origin}:{}: {msg}", line_of(text, span.start)))
        };
        if f.episodes == 0 || f.chunk == 0 {
            return Err(Error::Invalid(format!(
                "{origin}: episodes and chunk must be at least 1"
            )));
        }
        if f.env.is_empty() || f.grid.is_empty() {
            return Err(Error::Invalid(format!(
                "{origin}: a study needs at least one [[env]] and one [[grid]] block"
            )));
        }
        crate::plan::make(
            &f.planner.name,
            crate::plan::PlanConfig {
                horizon: f.planner.horizon,
                step_dim: 1,
                samples: f.planner.samples,
                topk: f.planner.topk,
                opt_steps: f.planner.opt_steps.unwrap_or(1),
                var_scale: f.planner.var_scale,
                temperature: f.planner.temperature,
                seed: 0,
                cem_std: crate::plan::CemStd::default(),
            },
        )
        .map_err(|e| e.within(&format!("{origin}: [planner]")))?;
        let mut envs: BTreeMap<String, String> = BTreeMap::new();
        let mut env_order = Vec::new();
        for e in &f.env {
            let env = crate::env::make(e.name.get_ref())
                .map_err(|x| err(e.name.span(), x.to_string()))?;
            let name = env.spec().name.to_string();
            let model = e
                .model
                .clone()
                .unwrap_or_else(|| format!("assets/{name}.safetensors"));
            if envs.insert(name.clone(), model).is_some() {
                return Err(err(
                    e.name.span(),
                    format!("environment {name} listed twice"),
                ));
            }
            env_order.push(name);
        }
        // The grid's expansion (every env x quant x method x opt_steps of every block) is
        // bounded before it is expanded: a small file could otherwise ask for billions.
        let mut candidates = 0usize;
        for g in &f.grid {
            let n = crate::limits::product(
                &format!("{origin}: grid {:?}", g.name),
                &[
                    g.envs.as_ref().map_or(f.env.len(), |v| v.len()),
                    g.quant.len(),
                    g.methods.as_ref().map_or(1, |v| v.len()),
                    g.opt_steps.as_ref().map_or(1, |v| v.len()),
                ],
            )?;
            candidates = candidates.saturating_add(n);
        }
        crate::limits::check_range(
            &format!("{origin}: the grid's cells (before duplicates are merged)"),
            candidates,
            1,
            crate::limits::MAX_STUDY_CELLS,
        )?;
        let mut cells: Vec<Cell> = Vec::new();
        for g in &f.grid {
            let genvs: Vec<(String, std::ops::Range<usize>)> = match &g.envs {
                None => env_order.iter().map(|e| (e.clone(), 0..0)).collect(),
                Some(v) => v.iter().map(|s| (s.get_ref().clone(), s.span())).collect(),
            };
            let methods: Vec<(String, std::ops::Range<usize>)> = match &g.methods {
                None => vec![("rtn".into(), 0..0)],
                Some(v) => v.iter().map(|s| (s.get_ref().clone(), s.span())).collect(),
            };
            for (m, span) in &methods {
                crate::quant::method(m).map_err(|e| err(span.clone(), e.to_string()))?;
            }
            if g.quant.is_empty() {
                return Err(Error::Invalid(format!(
                    "{origin}: grid {:?} has an empty quant list",
                    g.name
                )));
            }
            for (env, span) in &genvs {
                let Some(model) = envs.get(env) else {
                    return Err(err(
                        span.clone(),
                        format!(
                            "grid {:?} names environment {env:?}, which has no [[env]] block \
                             (have: {})",
                            g.name,
                            env_order.join(", ")
                        ),
                    ));
                };
                let (os_def, mi_def) = dinowm_defaults(env);
                let os_def = f.planner.opt_steps.unwrap_or(os_def);
                let mi_def = f.planner.max_iter.unwrap_or(mi_def);
                let max_iter = g.max_iter.unwrap_or(mi_def);
                let steps = g.opt_steps.clone().unwrap_or_else(|| vec![os_def]);
                for q in &g.quant {
                    let spec: QuantSpec = q
                        .get_ref()
                        .parse()
                        .map_err(|e: Error| err(q.span(), format!("grid {:?}: {e}", g.name)))?;
                    let quant = spec.to_string();
                    let ms: Vec<&str> = if spec == QuantSpec::default() {
                        vec!["rtn"] // a float cell has no method
                    } else {
                        methods.iter().map(|m| m.0.as_str()).collect()
                    };
                    for m in ms {
                        let m = m.to_ascii_lowercase();
                        for &os in &steps {
                            if os == 0 || max_iter == 0 {
                                return Err(Error::Invalid(format!(
                                    "{origin}: grid {:?}: opt_steps and max_iter must be at \
                                     least 1",
                                    g.name
                                )));
                            }
                            let mut name = format!("{env}/{}", spec_slug(&quant));
                            if m != "rtn" {
                                name += &format!(".{m}");
                            }
                            if os != os_def {
                                name += &format!(".os{os}");
                            }
                            if max_iter != mi_def {
                                name += &format!(".mi{max_iter}");
                            }
                            let cell = Cell {
                                name,
                                grid: g.name.clone(),
                                env: env.clone(),
                                model: model.clone(),
                                quant: quant.clone(),
                                method: m.clone(),
                                opt_steps: os,
                                max_iter,
                                episodes: g.episodes.unwrap_or(f.episodes),
                            };
                            match cells.iter().find(|c| c.name == cell.name) {
                                None => cells.push(cell),
                                Some(c) if c.episodes == cell.episodes => {}
                                Some(c) => {
                                    return Err(Error::Invalid(format!(
                                        "{origin}: cell {} is asked for by grids {:?} ({} \
                                         episodes) and {:?} ({} episodes); give both the same \
                                         episode count",
                                        c.name, c.grid, c.episodes, g.name, cell.episodes
                                    )))
                                }
                            }
                        }
                    }
                }
            }
        }
        let study = Study {
            name: f.name,
            description: f.description,
            chunk: f.chunk,
            calib_episodes: f.calib_episodes,
            planner: f.planner,
            cells,
        };
        study.validate(origin)?;
        Ok(study)
    }

    /// Every number and name of an expanded study against its bound, whether it was just
    /// parsed or read back from a study directory's manifest (which anyone may have edited):
    /// counts (`crate::limits`), planner settings, cell names that stay inside the study
    /// directory, known environments, specs and methods. `origin` names the file in errors.
    pub fn validate(&self, origin: &str) -> Result<()> {
        use crate::limits::{
            check_range, MAX_EPISODES, MAX_PLAN_STEPS, MAX_STUDY_CELLS, MAX_STUDY_ITEMS,
        };
        let bad = |m: String| Error::Invalid(format!("{origin}: {m}"));
        let within = |what: &str, v: usize, min: usize, max: usize| {
            check_range(what, v, min, max).map_err(|e| e.within(origin))
        };
        within("chunk", self.chunk, 1, MAX_EPISODES)?;
        within("calib_episodes", self.calib_episodes, 0, MAX_EPISODES)?;
        within("the number of cells", self.cells.len(), 1, MAX_STUDY_CELLS)?;
        let p = &self.planner;
        within("[planner] n_taken", p.n_taken, 1, MAX_PLAN_STEPS)?;
        for (what, v) in [("opt_steps", p.opt_steps), ("max_iter", p.max_iter)] {
            if let Some(v) = v {
                within(&format!("[planner] {what}"), v, 1, MAX_PLAN_STEPS)?;
            }
        }
        for (what, v) in [("var_scale", p.var_scale), ("temperature", p.temperature)] {
            if !v.is_finite() || v <= 0.0 {
                return Err(bad(format!(
                    "[planner] {what} is {v}; it must be a positive number"
                )));
            }
        }
        crate::plan::make(
            &p.name,
            crate::plan::PlanConfig {
                horizon: p.horizon,
                step_dim: 1,
                samples: p.samples,
                topk: p.topk,
                opt_steps: p.opt_steps.unwrap_or(1),
                var_scale: p.var_scale,
                temperature: p.temperature,
                seed: 0,
                cem_std: crate::plan::CemStd::default(),
            },
        )
        .map_err(|e| e.within(&format!("{origin}: [planner]")))?;
        let mut items = 0usize;
        for c in &self.cells {
            let path_safe = !c.name.is_empty()
                && c.name.split('/').all(|part| {
                    !part.is_empty() && part != "." && part != ".." && !part.contains(['\\', '\0'])
                });
            if !path_safe || !c.name.starts_with(&format!("{}/", c.env)) {
                return Err(bad(format!(
                    "cell name {:?} is not ENV/SPEC... for environment {:?}",
                    c.name, c.env
                )));
            }
            let cell = |e: Error| e.within(&format!("{origin}: cell {}", c.name));
            crate::env::make(&c.env).map_err(cell)?;
            c.quant.parse::<QuantSpec>().map_err(cell)?;
            crate::quant::method(&c.method).map_err(cell)?;
            within(
                &format!("cell {}: episodes", c.name),
                c.episodes,
                1,
                MAX_EPISODES,
            )?;
            within(
                &format!("cell {}: opt_steps", c.name),
                c.opt_steps,
                1,
                MAX_PLAN_STEPS,
            )?;
            within(
                &format!("cell {}: max_iter", c.name),
                c.max_iter,
                1,
                MAX_PLAN_STEPS,
            )?;
            items = items.saturating_add(c.episodes.div_ceil(self.chunk));
        }
        within(
            "the work items (episodes / chunk over every cell)",
            items,
            1,
            MAX_STUDY_ITEMS,
        )?;
        Ok(())
    }

    pub fn cell(&self, name: &str) -> Option<&Cell> {
        self.cells.iter().find(|c| c.name == name)
    }

    /// The planner settings of a cell (`step_dim` from the model, seed 0 as in `qwm eval`).
    pub fn plan_config(&self, cell: &Cell, step_dim: usize) -> crate::plan::PlanConfig {
        crate::plan::PlanConfig {
            horizon: self.planner.horizon,
            step_dim,
            samples: self.planner.samples,
            topk: self.planner.topk,
            opt_steps: cell.opt_steps,
            var_scale: self.planner.var_scale,
            temperature: self.planner.temperature,
            seed: 0,
            cem_std: crate::plan::CemStd::default(),
        }
    }

    pub fn mpc_config(&self, cell: &Cell) -> crate::plan::MpcConfig {
        crate::plan::MpcConfig {
            max_iters: cell.max_iter,
            n_taken: self.planner.n_taken,
            success_check: self.planner.success_check,
        }
    }
}
