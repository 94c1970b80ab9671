//! [`PlanModel`] for any [`WorldModel`] backend: encode the observation and goal once per plan,
//! then each cost call is one batched rollout plus the objective, with only the per-sample
//! costs read back.

use super::mpc::PlanModel;
use crate::env::Frame;
use crate::model::{Frames, ModelConfig, Normalization, ObjectiveMode, WorldModel};
use crate::{Error, Result};

/// A [`PlanModel`] over a world model, with what strips and divergence measures need beyond
/// costs: object-safe, so that code above the backends (the application layer, benchmarks)
/// holds `&mut dyn WorldPlan` whatever backend built it.
pub trait WorldPlan: PlanModel {
    fn model_config(&self) -> &ModelConfig;
    /// Planning horizon in model steps.
    fn horizon(&self) -> usize;
    /// Latents of the imagined trajectory for one normalized action sequence: `horizon + 1`
    /// frames, each flattened `[N * W]`.
    fn imagine(&mut self, actions: &[f32]) -> Result<Vec<Vec<f32>>>;
    /// Decode every frame of an imagined rollout to RGB frames (needs a decoder).
    fn decode_rollout(&mut self, actions: &[f32]) -> Result<Vec<Frame>>;
}

pub struct WorldPlanModel<'m, M: WorldModel> {
    pub model: &'m M,
    pub norm: Normalization,
    pub horizon: usize,
    pub alpha: f32,
    pub mode: ObjectiveMode,
    problem: Option<Problem<M::Tensor>>,
}

struct Problem<T> {
    z0: T,
    p0: T,
    goal_z: T,
    goal_p: T,
}

impl<'m, M: WorldModel> WorldPlanModel<'m, M> {
    pub fn new(model: &'m M, norm: Normalization, horizon: usize, alpha: f32) -> Self {
        WorldPlanModel {
            model,
            norm,
            horizon,
            alpha,
            mode: ObjectiveMode::Last,
            problem: None,
        }
    }

    fn encode_frame(&self, f: &Frame) -> Result<M::Tensor> {
        self.model
            .encode(&Frames::new(&f.data, 1, f.height, f.width)?)
    }

    /// Latents of the imagined trajectory for one normalized action sequence (for strips and
    /// divergence measures): `horizon + 1` frames, each flattened `[N * W]`.
    pub fn imagine(&mut self, actions: &[f32]) -> Result<Vec<Vec<f32>>> {
        let r = self.rollout(actions, 1)?;
        self.model.rollout_to_host(&r)
    }

    fn rollout(&self, actions: &[f32], n: usize) -> Result<crate::model::Rollout<M::Tensor>> {
        let pr = self.problem.as_ref().ok_or_else(|| {
            Error::Invalid("set_problem must be called before evaluating costs".into())
        })?;
        let step = self.model.config().frameskip * self.model.config().action_dim;
        if actions.len() != n * self.horizon * step {
            return Err(Error::Shape(format!(
                "{} action values for {n} samples of horizon {} x {step}",
                actions.len(),
                self.horizon
            )));
        }
        let acts = self.model.upload(actions, &[n, self.horizon, step])?;
        self.model.rollout(&pr.z0, &pr.p0, &acts)
    }

    /// Decode every frame of an imagined rollout to RGB frames (needs a decoder).
    pub fn decode_rollout(&mut self, actions: &[f32]) -> Result<Vec<Frame>> {
        let r = self.rollout(actions, 1)?;
        let mut out = Vec::new();
        for c in &r.chunks {
            for f in &c.frames {
                let img = self.model.decode(f)?;
                let dims = M::dims(&img);
                let px = self.model.download(&img)?;
                let (h, w) = (dims[2], dims[3]);
                out.push(Frame {
                    width: w,
                    height: h,
                    data: crate::model::postprocess(&px, h, w),
                });
            }
        }
        Ok(out)
    }
}

impl<M: WorldModel> WorldPlan for WorldPlanModel<'_, M> {
    fn model_config(&self) -> &ModelConfig {
        self.model.config()
    }

    fn horizon(&self) -> usize {
        self.horizon
    }

    fn imagine(&mut self, actions: &[f32]) -> Result<Vec<Vec<f32>>> {
        WorldPlanModel::imagine(self, actions)
    }

    fn decode_rollout(&mut self, actions: &[f32]) -> Result<Vec<Frame>> {
        WorldPlanModel::decode_rollout(self, actions)
    }
}

impl<M: WorldModel> PlanModel for WorldPlanModel<'_, M> {
    fn action_dim(&self) -> usize {
        self.model.config().action_dim
    }

    fn frameskip(&self) -> usize {
        self.model.config().frameskip
    }

    fn image_size(&self) -> usize {
        self.model.config().image_size
    }

    fn set_problem(
        &mut self,
        obs: &Frame,
        proprio: &[f32],
        goal: &Frame,
        goal_proprio: &[f32],
    ) -> Result<()> {
        let pd = self.model.config().proprio_dim;
        if proprio.len() != pd || goal_proprio.len() != pd {
            return Err(Error::Shape(format!(
                "the model expects {pd}-D proprio, the environment gives {}-D",
                proprio.len()
            )));
        }
        let z0 = self.encode_frame(obs)?;
        let goal_z = self.encode_frame(goal)?;
        let p0 = self
            .model
            .upload(&self.norm.normalize_proprio(proprio), &[1, pd])?;
        let gp = self
            .model
            .upload(&self.norm.normalize_proprio(goal_proprio), &[1, pd])?;
        let goal_p = self.model.embed_proprio(&gp)?;
        self.problem = Some(Problem {
            z0,
            p0,
            goal_z,
            goal_p,
        });
        Ok(())
    }

    fn costs(&mut self, actions: &[f32], n: usize) -> Result<Vec<f32>> {
        let r = self.rollout(actions, n)?;
        let pr = self.problem.as_ref().ok_or_else(|| {
            crate::Error::Invalid("costs before set_problem: no start or goal".into())
        })?;
        let c = self
            .model
            .objective(&r, &pr.goal_z, &pr.goal_p, self.mode, self.alpha)?;
        self.model.download(&c)
    }

    fn denormalize(&self, actions: &[f32]) -> Vec<f32> {
        self.norm.denormalize_actions(actions)
    }
}

/// Divergence of a quantized model's imagined latents from the float model's on the same
/// action sequences: mean over `samples` random normalized sequences of
/// `||z_q - z_f||^2 / ||z_f||^2`, over every predicted frame, from the same observation.
pub fn latent_divergence(
    float: &mut dyn WorldPlan,
    quant: &mut dyn WorldPlan,
    samples: usize,
    seed: u64,
) -> Result<f64> {
    let step = float.model_config().frameskip * float.model_config().action_dim;
    let h = float.horizon();
    let acts = crate::tensor::randn(samples * h * step, 1.0, seed);
    let mut total = 0.0;
    for i in 0..samples {
        let a = &acts[i * h * step..(i + 1) * h * step];
        let zf = float.imagine(a)?;
        let zq = quant.imagine(a)?;
        let (mut num, mut den) = (0f64, 0f64);
        for (f, q) in zf.iter().zip(&zq).skip(1) {
            for (x, y) in f.iter().zip(q) {
                num += ((x - y) as f64).powi(2);
                den += (*x as f64).powi(2);
            }
        }
        total += num / den.max(1e-30);
    }
    Ok(total / samples as f64)
}
