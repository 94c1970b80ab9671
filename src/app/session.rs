//! A [`Session`]: an environment, a loaded (maybe quantized) model and an opened backend,
//! ready to plan episodes or run evaluations, reporting progress through an observer.
//!
//! A session owns everything it uses and is `Send`, so a viewer can open it and plan on a
//! background thread, forwarding [`Event`]s to its UI through a channel and stopping a run
//! with [`Session::cancel_flag`]. Each call builds the model on the backend for its duration
//! (one weight upload), so a session holds no borrowed GPU state between calls.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::backend::{Backend, BackendChoice};
use super::events::{Event, Observer};
use super::load::{LoadedModel, ModelRequest};
use super::settings::PlanSettings;
use crate::env::{self, Env, EnvSpec, Frame};
use crate::model::CpuModel;
use crate::plan::eval::{model_crc32s, run_eval_into, EvalConfig, EvalReport, ReportFile};
use crate::plan::mpc::MpcIter;
use crate::plan::world::{latent_divergence, WorldPlan, WorldPlanModel};
use crate::plan::{self, run_episode, EpisodeRecord, MpcConfig, PlanConfig, PlanModel, Task};
use crate::{Error, Result};

/// Everything needed to open a session.
#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    /// Environment name (`env::ENV_NAMES`).
    pub env: String,
    pub model: ModelRequest,
    pub backend: BackendChoice,
    pub plan: PlanSettings,
}

pub struct Session {
    env: Box<dyn Env>,
    model: LoadedModel,
    backend: Backend,
    settings: PlanSettings,
    cancel: Arc<AtomicBool>,
}

/// One planned episode, with what a log or a strip needs.
pub struct EpisodeRun {
    pub env: String,
    pub seed: u64,
    /// The model config's name.
    pub model: String,
    pub backend: &'static str,
    pub planner: String,
    pub plan: PlanConfig,
    pub mpc: MpcConfig,
    pub record: EpisodeRecord,
    /// Every MPC iteration, in order.
    pub iterations: Vec<MpcIter>,
    /// The real state each plan started from, then the final state.
    pub states: Vec<Vec<f32>>,
    /// Rows of real observation + decoded imagined frames per plan, then the final frame
    /// next to the goal (when asked for).
    pub strip: Option<Frame>,
}

impl EpisodeRun {
    /// The `plan.json` log of `qwm plan`.
    pub fn log_json(&self) -> serde_json::Value {
        let iters: Vec<serde_json::Value> = self
            .iterations
            .iter()
            .map(|it| {
                serde_json::json!({
                    "best_cost": it.best_cost,
                    "state_distance": it.state_distance,
                    "plan_seconds": it.plan_seconds,
                    "opt_steps": it.plan.steps,
                })
            })
            .collect();
        serde_json::json!({
            "env": self.env,
            "seed": self.seed,
            "model": self.model,
            "backend": self.backend,
            "planner": self.planner,
            "plan_config": self.plan,
            "mpc_config": self.mpc,
            "episode": self.record,
            "iterations": iters,
        })
    }
}

impl Session {
    /// Make the environment, check the planner settings, load (and quantize) the model, open
    /// the backend; in that order, so bad settings are refused before anything is loaded.
    pub fn open(opts: &SessionOptions, observer: &mut Observer) -> Result<Session> {
        let env = env::make(&opts.env)?;
        opts.plan.validate(env.spec())?;
        let model = LoadedModel::open(&opts.model, env.as_ref(), &opts.plan, observer)?;
        observer(&Event::ModelLoaded {
            name: model.name.clone(),
            config: model.weights().config.clone(),
        });
        let backend = Backend::open(opts.backend, observer);
        Ok(Session::from_parts(env, model, backend, opts.plan.clone()))
    }

    /// A session over parts opened elsewhere (e.g. one backend shared by several models in
    /// turn).
    pub fn from_parts(
        env: Box<dyn Env>,
        model: LoadedModel,
        backend: Backend,
        settings: PlanSettings,
    ) -> Session {
        Session {
            env,
            model,
            backend,
            settings,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn env_spec(&self) -> &EnvSpec {
        self.env.spec()
    }

    pub fn settings(&self) -> &PlanSettings {
        &self.settings
    }

    /// Change the planner settings for later calls (checked here).
    pub fn set_settings(&mut self, settings: PlanSettings) -> Result<()> {
        settings.validate(self.env.spec())?;
        self.settings = settings;
        Ok(())
    }

    /// Set this flag (from any thread) to stop the running plan or evaluation at its next
    /// optimization step; the call then returns [`Error::Cancelled`]. Each call clears it
    /// when it starts.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Planner and MPC configs of this session for a planner seed.
    pub fn configs(&self, seed: u64) -> (PlanConfig, MpcConfig) {
        self.settings
            .configs(self.env.spec(), self.model.step_dim(), seed)
    }

    /// Plan one MPC episode from the start/goal pair drawn with `seed` (which also seeds the
    /// planner). With `strip`, decode each plan's imagined frames into [`EpisodeRun::strip`].
    pub fn plan_episode(
        &mut self,
        seed: u64,
        strip: bool,
        observer: &mut Observer,
    ) -> Result<EpisodeRun> {
        self.cancel.store(false, Ordering::SeqCst);
        let (pc, mpc) = self.configs(seed);
        let mut planner = plan::make(&self.settings.planner, pc.clone())?;
        let (start, goal) = self.env.sample_start_goal(seed);
        observer(&Event::EpisodeStarted {
            index: 0,
            seed,
            planner: self.settings.planner.clone(),
            plan: pc.clone(),
            mpc: mpc.clone(),
        });
        let alpha = self.env.spec().alpha;
        let env = &mut self.env;
        let progress = Progress::new(observer, &self.cancel);
        let (record, iterations, states, strip) =
            self.backend
                .with_plan_model(&self.model, pc.horizon, alpha, |pm| {
                    let mut states = vec![start.clone()];
                    let mut iterations = Vec::new();
                    let record = run_episode(
                        env.as_mut(),
                        &mut Watched {
                            inner: pm,
                            progress: &progress,
                        },
                        planner.as_mut(),
                        &mpc,
                        Task {
                            seed,
                            start: &start,
                            goal: &goal,
                        },
                        &mut |it: &MpcIter, e: &dyn Env| {
                            states.push(e.state());
                            iterations.push(it.clone());
                            progress.iteration_done(it, e);
                        },
                    )?;
                    let strip = if strip {
                        Some(build_strip(env.as_ref(), pm, &iterations, &states, &goal)?)
                    } else {
                        None
                    };
                    Ok((record, iterations, states, strip))
                })?;
        Ok(EpisodeRun {
            env: self.env.spec().name.to_string(),
            seed,
            model: self.model.weights().config.name.clone(),
            backend: self.backend.name(),
            planner: self.settings.planner.clone(),
            plan: pc,
            mpc,
            record,
            iterations,
            states,
            strip,
        })
    }

    /// Run (or resume) an evaluation of `episodes` episodes, rewriting `json` after each one.
    /// A model quantized on load also gets its latent divergence from the float model (first
    /// 10 episodes' starts, on the CPU) and its linear-layer bytes, written atomically too.
    pub fn evaluate(
        &mut self,
        episodes: usize,
        json: Option<&Path>,
        observer: &mut Observer,
    ) -> Result<EvalReport> {
        self.cancel.store(false, Ordering::SeqCst);
        // Own the report (path checked, lock held) for the whole run: a concurrent run into the
        // same report is refused here, before any episode.
        let file = json.map(|p| ReportFile::open(p, "--json")).transpose()?;
        let (pc, mpc) = self.configs(0);
        let (model_crc32, model_planning_crc32) = match self.model.file.as_deref() {
            Some(p) => model_crc32s(Path::new(p))?,
            None => (None, None),
        };
        let cfg = EvalConfig {
            env: self.env.spec().name.to_string(),
            episodes,
            planner: self.settings.planner.clone(),
            plan: (&pc).into(),
            mpc: (&mpc).into(),
            model: self.model.name.clone(),
            model_crc32,
            model_planning_crc32,
            quant: self.model.spec(),
            backend: self.backend.label(&self.model)?,
        };
        let alpha = self.env.spec().alpha;
        let progress = Progress::new(observer, &self.cancel);
        let mut report = self
            .backend
            .with_plan_model(&self.model, pc.horizon, alpha, |pm| {
                run_eval_into(
                    &cfg,
                    &pc,
                    &mpc,
                    &mut Watched {
                        inner: pm,
                        progress: &progress,
                    },
                    file.as_ref(),
                    &mut |rec: &EpisodeRecord, i: usize| progress.episode_done(rec, i),
                    &mut |it: &MpcIter, e: &dyn Env| progress.iteration_done(it, e),
                )
            })?;
        report.latent_divergence = self.latent_divergence(&report, pc.horizon)?;
        if let Some(q) = self.model.quant() {
            let (qb, fb) = q.linear_bytes();
            report.linear_bytes = Some([qb, fb]);
        }
        report.quantize_seconds = self.model.quantize_seconds;
        if let Some(f) = &file {
            if report.latent_divergence.is_some() || report.linear_bytes.is_some() {
                // Into the stored report, which keeps any episodes beyond `episodes`.
                let (d, b) = (report.latent_divergence, report.linear_bytes);
                let qs = report.quantize_seconds;
                f.update(|r| {
                    r.latent_divergence = d;
                    r.linear_bytes = b;
                    r.quantize_seconds = qs.or(r.quantize_seconds);
                })?;
            }
        }
        Ok(report)
    }

    /// Mean latent divergence of the quantized model from its float original over the first
    /// 10 episodes' starts (`None` unless the model was quantized on load).
    fn latent_divergence(&self, report: &EvalReport, horizon: usize) -> Result<Option<f64>> {
        latent_divergence_of(&self.model, self.env.spec(), &report.episodes, horizon)
    }
}

/// Mean latent divergence of a model quantized on load from its float original over the
/// first 10 of `episodes`' starts (8 random action sequences each); `None` for other models.
/// Same numerics on either backend; the CPU keeps the GPU free of a second model. Also used
/// by the study runner, which finishes a cell's report from episodes run in pieces.
pub fn latent_divergence_of(
    model: &LoadedModel,
    spec: &EnvSpec,
    episodes: &[EpisodeRecord],
    horizon: usize,
) -> Result<Option<f64>> {
    let Some(q) = model.quant() else {
        return Ok(None);
    };
    let mut env = env::make(spec.name)?;
    let Some(fw) = model.float_original(env.as_ref())? else {
        return Ok(None);
    };
    let alpha = spec.alpha;
    let w = model.weights();
    let fm = CpuModel::new(&fw)?;
    let qm = CpuModel::new_quantized(q)?;
    let mut fp = WorldPlanModel::new(&fm, fw.norm.clone(), horizon, alpha);
    let mut qp = WorldPlanModel::new(&qm, w.norm.clone(), horizon, alpha);
    let size = w.config.image_size;
    let mut divs = Vec::new();
    for e in episodes.iter().take(10) {
        env.reset_to(&e.start)?;
        let obs = env.render(size);
        let goal = env.render_state(&e.goal, size)?;
        let (p, gp) = (env.proprio(), env.proprio_of(&e.goal));
        fp.set_problem(&obs, &p, &goal, &gp)?;
        qp.set_problem(&obs, &p, &goal, &gp)?;
        divs.push(latent_divergence(&mut fp, &mut qp, 8, e.seed)?);
    }
    Ok((!divs.is_empty()).then(|| divs.iter().sum::<f64>() / divs.len() as f64))
}

/// The observer and the cancel flag of one call, shared by the cost wrapper and the MPC
/// callbacks (hence the cells: both hold it while the episode runs).
struct Progress<'o, 'a> {
    observer: RefCell<&'o mut Observer<'a>>,
    cancel: &'o AtomicBool,
    iteration: Cell<usize>,
    step: Cell<usize>,
}

impl<'o, 'a> Progress<'o, 'a> {
    fn new(observer: &'o mut Observer<'a>, cancel: &'o AtomicBool) -> Self {
        Progress {
            observer: RefCell::new(observer),
            cancel,
            iteration: Cell::new(0),
            step: Cell::new(0),
        }
    }

    fn emit(&self, e: Event) {
        (self.observer.borrow_mut())(&e);
    }

    fn iteration_done(&self, it: &MpcIter, env: &dyn Env) {
        self.emit(Event::MpcIteration {
            iteration: self.iteration.get(),
            iter: it.clone(),
            state: env.state(),
        });
        self.iteration.set(self.iteration.get() + 1);
        self.step.set(0);
    }

    fn episode_done(&self, record: &EpisodeRecord, index: usize) {
        self.emit(Event::EpisodeFinished {
            index,
            record: record.clone(),
        });
        self.iteration.set(0);
        self.step.set(0);
    }
}

/// A plan model that reports each cost evaluation (one optimization step) and honours the
/// cancel flag; the numbers pass through untouched.
struct Watched<'p, 'o, 'a> {
    inner: &'p mut dyn WorldPlan,
    progress: &'p Progress<'o, 'a>,
}

impl PlanModel for Watched<'_, '_, '_> {
    fn action_dim(&self) -> usize {
        self.inner.action_dim()
    }

    fn frameskip(&self) -> usize {
        self.inner.frameskip()
    }

    fn set_problem(
        &mut self,
        obs: &Frame,
        proprio: &[f32],
        goal: &Frame,
        goal_proprio: &[f32],
    ) -> Result<()> {
        self.inner.set_problem(obs, proprio, goal, goal_proprio)
    }

    fn costs(&mut self, actions: &[f32], n: usize) -> Result<Vec<f32>> {
        let p = self.progress;
        if p.cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let c = self.inner.costs(actions, n)?;
        if !c.is_empty() {
            p.emit(Event::OptStep {
                iteration: p.iteration.get(),
                step: p.step.get(),
                samples: n,
                best_cost: c.iter().copied().fold(f32::INFINITY, f32::min),
                mean_cost: c.iter().sum::<f32>() / c.len() as f32,
            });
        }
        p.step.set(p.step.get() + 1);
        Ok(c)
    }

    fn denormalize(&self, actions: &[f32]) -> Vec<f32> {
        self.inner.denormalize(actions)
    }

    fn image_size(&self) -> usize {
        self.inner.image_size()
    }
}

/// Each row: the real observation a plan started from, then the decoded imagined frames of
/// that plan; the last row is the final real frame next to the goal.
fn build_strip(
    env: &dyn Env,
    pm: &mut dyn WorldPlan,
    iterations: &[MpcIter],
    states: &[Vec<f32>],
    goal: &[f32],
) -> Result<Frame> {
    const SIZE: usize = 64;
    const WHITE: [u8; 3] = [255, 255, 255];
    let image_size = pm.model_config().image_size;
    let has_decoder = pm.model_config().decoder.is_some();
    let goal_frame = env.render_state(goal, image_size)?;
    let mut rows = Vec::new();
    for (i, it) in iterations.iter().enumerate() {
        let obs = env.render_state(&states[i], image_size)?;
        let mut row = vec![obs.resize(SIZE, SIZE)];
        if has_decoder {
            pm.set_problem(
                &obs,
                &env.proprio_of(&states[i]),
                &goal_frame,
                &env.proprio_of(goal),
            )?;
            for f in pm.decode_rollout(&it.plan.actions)? {
                row.push(f.resize(SIZE, SIZE));
            }
        }
        rows.push(Frame::hstack(&row, 2, WHITE));
    }
    let last = states
        .last()
        .ok_or_else(|| Error::Invalid("an episode without states".into()))?;
    let last = env.render_state(last, SIZE)?;
    rows.push(Frame::hstack(
        &[last, goal_frame.resize(SIZE, SIZE)],
        2,
        WHITE,
    ));
    Ok(Frame::vstack(&rows, 2, WHITE))
}

#[allow(dead_code)]
fn assert_send() {
    fn send<T: Send>() {}
    send::<Session>();
}
