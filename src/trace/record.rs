//! Recording a traced MPC episode. The episode is the ordinary [`run_episode`] loop; the
//! recorder only wraps the world model ([`PlanModel`]) to see every optimization step's
//! samples and costs, and analyses each finished plan in `run_episode`'s per-iteration hook:
//! the plan's imagined latents and decoded frames, the real frames, states and latents the same
//! actions reach in the simulator, and the states the top-k elites reach. Everything is sent
//! to a sink as [`Event`]s as it happens (the live viewer draws them, `qwm plan --trace`
//! writes them), and a [`Control`] can pause, single-step or stop the episode between
//! optimization steps.

use std::cell::RefCell;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Instant;

use super::{opt_stat, IterMeta, IterTrace, OptStat};
use crate::env::{Env, Frame};
use crate::plan::mpc::{MpcIter, PlanModel};
use crate::plan::world::WorldPlan;
use crate::plan::{run_episode, EpisodeRecord, MpcConfig, Planner, Task};
use crate::{Error, Result};

/// Whether an error is the one [`Control::stop`] causes.
pub fn is_stopped(e: &Error) -> bool {
    matches!(e, Error::Cancelled)
}

/// What a recording reports as it goes.
#[derive(Clone, Debug)]
pub enum Event {
    /// One optimization step of MPC iteration `iter` finished.
    OptStep {
        run: usize,
        iter: usize,
        stat: OptStat,
    },
    /// MPC iteration `iter.meta.index` finished and was analysed.
    Iter { run: usize, iter: Box<IterTrace> },
}

/// Pause / single-step / stop, shared between a planning thread and the UI.
#[derive(Default)]
pub struct Control {
    state: Mutex<Ctl>,
    cv: Condvar,
}

#[derive(Default)]
struct Ctl {
    paused: bool,
    stop: bool,
    in_iteration: bool,
    /// Iterations still allowed to start before pausing again (single-stepping).
    iters_left: Option<usize>,
}

impl Control {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn pause(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .paused = true;
    }

    pub fn resume(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.paused = false;
        s.iters_left = None;
        self.cv.notify_all();
    }

    /// Run until the next MPC iteration ends, then pause.
    pub fn step_iteration(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.iters_left = Some(if s.in_iteration { 0 } else { 1 });
        s.paused = false;
        self.cv.notify_all();
    }

    pub fn stop(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.stop = true;
        self.cv.notify_all();
    }

    pub fn is_paused(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .paused
    }

    fn wait<'g>(
        &'g self,
        mut s: std::sync::MutexGuard<'g, Ctl>,
    ) -> Result<std::sync::MutexGuard<'g, Ctl>> {
        while s.paused && !s.stop {
            s = self.cv.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        if s.stop {
            return Err(Error::Cancelled);
        }
        Ok(s)
    }

    fn at_iteration_start(&self) -> Result<()> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.iters_left == Some(0) {
            s.paused = true;
            s.iters_left = None;
        }
        let mut s = self.wait(s)?;
        if let Some(n) = s.iters_left {
            s.iters_left = Some(n.saturating_sub(1));
        }
        s.in_iteration = true;
        Ok(())
    }

    fn at_opt_step(&self) -> Result<()> {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.wait(s).map(|_| ())
    }

    fn at_iteration_end(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .in_iteration = false;
    }
}

/// Everything an episode needs besides the models.
pub struct EpisodeSetup<'a> {
    pub run: usize,
    pub mpc: &'a MpcConfig,
    pub task: Task<'a>,
    pub topk: usize,
    pub horizon: usize,
}

struct Shared<'p> {
    pm: &'p mut dyn WorldPlan,
    obs: Option<(Frame, Vec<f32>)>,
    steps: Vec<OptStat>,
    last: (Vec<f32>, Vec<f32>),
    plan_end: Instant,
    iter: usize,
    error: Option<Error>,
}

type Sink<'s> = RefCell<&'s mut dyn FnMut(Event) -> Result<()>>;

fn emit(sink: &Sink<'_>, e: Event) -> Result<()> {
    let mut f = sink.borrow_mut();
    (*f)(e)
}

struct Hooked<'a, 's, 'p> {
    sh: &'a RefCell<Shared<'p>>,
    sink: &'a Sink<'s>,
    control: Option<&'a Control>,
    run: usize,
    topk: usize,
}

impl Hooked<'_, '_, '_> {
    fn failed(&self) -> Result<()> {
        match self.sh.borrow_mut().error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl PlanModel for Hooked<'_, '_, '_> {
    fn action_dim(&self) -> usize {
        self.sh.borrow().pm.action_dim()
    }
    fn frameskip(&self) -> usize {
        self.sh.borrow().pm.frameskip()
    }
    fn image_size(&self) -> usize {
        self.sh.borrow().pm.image_size()
    }
    fn denormalize(&self, actions: &[f32]) -> Vec<f32> {
        self.sh.borrow().pm.denormalize(actions)
    }

    fn set_problem(
        &mut self,
        obs: &Frame,
        proprio: &[f32],
        goal: &Frame,
        goal_proprio: &[f32],
    ) -> Result<()> {
        self.failed()?;
        if let Some(c) = self.control {
            c.at_iteration_start()?;
        }
        let mut s = self.sh.borrow_mut();
        s.obs = Some((obs.clone(), proprio.to_vec()));
        s.steps.clear();
        s.pm.set_problem(obs, proprio, goal, goal_proprio)
    }

    fn costs(&mut self, actions: &[f32], n: usize) -> Result<Vec<f32>> {
        self.failed()?;
        if let Some(c) = self.control {
            c.at_opt_step()?;
        }
        let (stat, iter, costs) = {
            let mut s = self.sh.borrow_mut();
            let costs = s.pm.costs(actions, n)?;
            let stat = opt_stat(actions, &costs, self.topk);
            s.steps.push(stat);
            s.last = (actions.to_vec(), costs.clone());
            s.plan_end = Instant::now();
            (stat, s.iter, costs)
        };
        emit(
            self.sink,
            Event::OptStep {
                run: self.run,
                iter,
                stat,
            },
        )?;
        Ok(costs)
    }
}

/// Run one traced MPC episode with `pm`, sending every optimization step and analysed
/// iteration to `sink`; `other` (a second model, e.g. another quantization) imagines each
/// plan too, for [`IterMeta::divergence`]. Ends with the episode's record, or the error that
/// stopped it ([`is_stopped`] when the control stopped it).
pub fn record_episode<'d>(
    env: &mut dyn Env,
    pm: &mut dyn WorldPlan,
    mut other: Option<&mut (dyn WorldPlan + 'd)>,
    planner: &mut dyn Planner,
    setup: &EpisodeSetup<'_>,
    control: Option<&Control>,
    sink: &mut dyn FnMut(Event) -> Result<()>,
) -> Result<EpisodeRecord> {
    let cfg = pm.model_config().clone();
    let goal = setup.task.goal.to_vec();
    let size = cfg.image_size;
    let goal_frame = env.render_state(&goal, size)?;
    let goal_proprio = env.proprio_of(&goal);
    let sh = RefCell::new(Shared {
        pm,
        obs: None,
        steps: Vec::new(),
        last: (Vec::new(), Vec::new()),
        plan_end: Instant::now(),
        iter: 0,
        error: None,
    });
    let sink: Sink = RefCell::new(sink);
    let mut hooked = Hooked {
        sh: &sh,
        sink: &sink,
        control,
        run: setup.run,
        topk: setup.topk,
    };
    let mut before = setup.task.start.to_vec();
    let mut on_iter = |it: &MpcIter, e: &dyn Env| {
        let res = analyse(
            &mut sh.borrow_mut(),
            other.as_deref_mut(),
            it,
            e,
            &before,
            &goal,
            (&goal_frame, &goal_proprio),
            setup,
        )
        .and_then(|t| {
            before = e.state();
            emit(
                &sink,
                Event::Iter {
                    run: setup.run,
                    iter: Box::new(t),
                },
            )
        });
        if let Some(c) = control {
            c.at_iteration_end();
        }
        let mut s = sh.borrow_mut();
        s.iter += 1;
        if let Err(err) = res {
            s.error = Some(err);
        }
    };
    let rec = run_episode(
        env,
        &mut hooked,
        planner,
        setup.mpc,
        setup.task,
        &mut on_iter,
    )?;
    let failed = sh.borrow_mut().error.take();
    match failed {
        Some(e) => Err(e),
        None => Ok(rec),
    }
}

/// States a raw action sequence reaches from `from`: every environment step (stopping at
/// success when `goal` is given) and the states at model-step boundaries.
/// A list of states or actions.
type Rows = Vec<Vec<f32>>;

fn simulate(
    env: &dyn Env,
    from: &[f32],
    raw: &[f32],
    fs: usize,
    steps: usize,
    goal: Option<&[f32]>,
) -> Result<(Rows, Rows, Rows)> {
    let a = env.action_dim();
    let mut e = env.box_clone();
    e.reset_to(from)?;
    let (mut every, mut acts, mut bounds) = (vec![from.to_vec()], Vec::new(), vec![from.to_vec()]);
    'outer: for s in 0..steps {
        for f in 0..fs {
            let off = (s * fs + f) * a;
            e.step(&raw[off..off + a])?;
            every.push(e.state());
            acts.push(raw[off..off + a].to_vec());
            if goal.is_some_and(|g| e.is_success(&e.state(), g)) {
                break 'outer;
            }
        }
        bounds.push(e.state());
    }
    Ok((every, acts, bounds))
}

/// The visual part `[N * De]` of predictor tokens `[N * W]`.
fn visual(tokens: &[f32], n: usize, de: usize) -> Vec<f32> {
    let w = tokens.len() / n.max(1);
    (0..n)
        .flat_map(|i| tokens[i * w..i * w + de].iter().copied())
        .collect()
}

fn mse(a: &[f32], b: &[f32]) -> f32 {
    let s: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    (s / a.len().max(1) as f64) as f32
}

#[allow(clippy::too_many_arguments)]
fn analyse<'d>(
    s: &mut Shared<'_>,
    other: Option<&mut (dyn WorldPlan + 'd)>,
    it: &MpcIter,
    env: &dyn Env,
    before: &[f32],
    goal: &[f32],
    (goal_frame, goal_proprio): (&Frame, &[f32]),
    setup: &EpisodeSetup<'_>,
) -> Result<IterTrace> {
    let env_seconds = s.plan_end.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let cfg = s.pm.model_config().clone();
    let (n, de, fs, h) = (
        cfg.patches(),
        cfg.visual_dim(),
        cfg.frameskip,
        setup.horizon,
    );
    let (obs, proprio) = s
        .obs
        .clone()
        .ok_or_else(|| Error::Invalid("trace: an iteration ended before it started".into()))?;
    let actions = &it.plan.actions;
    let raw = s.pm.denormalize(actions);
    let (executed_states, executed_actions, _) =
        simulate(env, before, &raw, fs, setup.mpc.n_taken.min(h), Some(goal))?;
    let (_, _, real_states) = simulate(env, before, &raw, fs, h, None)?;
    let real: Vec<Frame> = real_states
        .iter()
        .map(|st| env.render_state(st, cfg.image_size))
        .collect::<Result<_>>()?;
    let mut real_latent = Vec::with_capacity(real.len());
    for f in &real {
        real_latent.push(s.pm.encode_latent(f)?);
    }
    let pred_latent: Vec<Vec<f32>> =
        s.pm.imagine(actions)?
            .iter()
            .map(|t| visual(t, n, de))
            .collect();
    let latent_err = pred_latent
        .iter()
        .zip(&real_latent)
        .map(|(p, r)| mse(p, r))
        .collect();
    let imagined = if cfg.decoder.is_some() {
        s.pm.decode_rollout(actions)?
    } else {
        Vec::new()
    };
    let divergence = match other {
        Some(o) => {
            o.set_problem(&obs, &proprio, goal_frame, goal_proprio)?;
            let zo = o.imagine(actions)?;
            pred_latent
                .iter()
                .zip(&zo)
                .map(|(p, q)| {
                    let q = visual(q, n, de);
                    let den: f64 = p.iter().map(|x| (*x as f64).powi(2)).sum();
                    mse(p, &q) as f64 * p.len() as f64 / den.max(1e-30)
                })
                .map(|v| v as f32)
                .collect()
        }
        None => Vec::new(),
    };
    // The last step's best samples, best first (stable for ties, as CEM sorts them).
    let (samples, costs) = &s.last;
    let d = actions.len();
    let mut idx: Vec<usize> = (0..costs.len()).collect();
    idx.sort_by(|&a, &b| costs[a].total_cmp(&costs[b]).then(a.cmp(&b)));
    idx.truncate(setup.topk.min(costs.len()));
    let mut elite_actions = Vec::new();
    let mut elite_states = Vec::new();
    for &i in &idx {
        let seq = samples[i * d..(i + 1) * d].to_vec();
        let (_, _, b) = simulate(env, before, &s.pm.denormalize(&seq), fs, h, None)?;
        elite_actions.push(seq);
        elite_states.push(b);
    }
    let meta = IterMeta {
        index: s.iter,
        opt_steps: s.steps.clone(),
        plan_cost: it.plan.cost,
        distance: it.state_distance,
        executed_steps: executed_actions.len(),
        latent_err,
        divergence,
        plan_seconds: it.plan_seconds,
        env_seconds,
        record_seconds: t0.elapsed().as_secs_f64(),
    };
    Ok(IterTrace {
        meta,
        obs,
        imagined,
        real,
        pred_latent,
        real_latent,
        real_states,
        plan_actions: actions.clone(),
        executed_actions,
        executed_states,
        elite_actions,
        elite_states,
    })
}
