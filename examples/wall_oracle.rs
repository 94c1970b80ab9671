//! Wall with a perfect world model: the evaluation of `qwm eval --env wall` (same episodes,
//! DINO-WM's CEM and MPC settings, the shipped model's action normalization) where every
//! imagined rollout is the real environment. The cost of a rollout is either the squared
//! distance of its last position to the goal in normalized proprio units (what the proprio
//! term of DINO-WM's objective measures, alpha = 1), the path length through the door
//! (a geodesic cost), or a Gaussian-saturating distance (flat far from the goal, as
//! distances between patch features are). It separates what the objective costs from what model error costs:
//! see docs/MODELS.md, "Wall: what limits the success rate".
//!
//! A fourth cost, `sided`, adds SCALE to the Euclidean one while the dot is on the other side
//! of the wall (a latent with one "which room" feature).
//!
//! A fifth, `latent`, is the planning objective of a model file with perfect dynamics: the
//! real final frame is encoded and compared with the goal frame's latent (visual MSE) plus
//! alpha x the proprio-embedding MSE, so it measures what the model's encoder makes of the
//! task before any predictor error.
//!
//! Usage: `cargo run --release --example wall_oracle -- [euclidean|geodesic|saturating|sided]
//! [EPISODES] [SCALE]` (saturating: length scale in px, sided: the step; 8 by default), or
//! `-- latent [EPISODES] [MODEL]` (the shipped Wall model by default)
use anyhow::bail;
use candle_core::Tensor;
use qwm::env::{self, wall, Env, Frame};
use qwm::model::{
    format, CpuModel, Frames, Normalization, ObjectiveMode, Rollout, RolloutChunk, WorldModel,
};
use qwm::plan::eval::{run_eval, EvalConfig};
use qwm::plan::{MpcConfig, PlanConfig, PlanModel};

#[derive(Clone, Copy, PartialEq)]
enum Cost {
    Euclidean,
    Geodesic,
    Saturating,
    Sided,
    Latent,
}

/// The objective of a model evaluated on real frames.
struct LatentCost {
    model: CpuModel,
    /// Goal visual latent `[1, N, De]` and proprio embedding `[1, proprio_emb]`.
    goal: Option<(Tensor, Tensor)>,
}

struct Oracle {
    env: Box<dyn Env>,
    norm: Normalization,
    cost: Cost,
    /// Length scale of the saturating cost, px.
    scale: f32,
    start: Vec<f32>,
    goal: Vec<f32>,
    latent: Option<LatentCost>,
}

impl Oracle {
    fn cost(&self, p: &[f32]) -> f32 {
        let g = &self.goal;
        if self.cost == Cost::Saturating {
            // Like distances between patch features: flat once the dot is a few `scale`s
            // away, so no pull towards the wall point nearest the goal.
            let d2 = (p[0] - g[0]).powi(2) + (p[1] - g[1]).powi(2);
            return 1.0 - (-d2 / (2.0 * self.scale * self.scale)).exp();
        }
        if self.cost == Cost::Sided {
            // Euclidean plus a constant while on the other side of the wall: what a latent
            // with one "which room" feature adds to the position distance.
            let s = &self.norm.proprio_std;
            let e = (((p[0] - g[0]) / s[0]).powi(2) + ((p[1] - g[1]) / s[1]).powi(2)) / 2.0;
            let across = (p[0] - wall::WALL_X).signum() != (g[0] - wall::WALL_X).signum();
            return e + if across { self.scale } else { 0.0 };
        }
        if self.cost == Cost::Geodesic {
            let d = |a: &[f32], b: &[f32]| (a[0] - b[0]).hypot(a[1] - b[1]);
            let door = [wall::WALL_X, wall::DOOR_Y];
            let across = (p[0] - wall::WALL_X).signum() != (g[0] - wall::WALL_X).signum();
            if across {
                d(p, &door) + d(&door, g)
            } else {
                d(p, g)
            }
        } else {
            let s = &self.norm.proprio_std;
            // Mean over the two proprio dimensions, like an MSE.
            (((p[0] - g[0]) / s[0]).powi(2) + ((p[1] - g[1]) / s[1]).powi(2)) / 2.0
        }
    }
}

impl PlanModel for Oracle {
    fn action_dim(&self) -> usize {
        2
    }
    fn frameskip(&self) -> usize {
        5
    }
    fn set_problem(
        &mut self,
        _obs: &Frame,
        proprio: &[f32],
        _goal: &Frame,
        goal_proprio: &[f32],
    ) -> qwm::Result<()> {
        self.start = proprio.to_vec();
        self.goal = goal_proprio.to_vec();
        if let Some(lc) = self.latent.as_mut() {
            let size = self.env.spec().default_data_size;
            let frame = self.env.render_state(goal_proprio, size)?;
            lc.goal = Some(embed(&lc.model, &self.norm, &[frame], goal_proprio)?);
        }
        Ok(())
    }
    fn costs(&mut self, actions: &[f32], n: usize) -> qwm::Result<Vec<f32>> {
        let d = actions.len() / n;
        let mut finals = Vec::with_capacity(n);
        for i in 0..n {
            self.env.reset_to(&self.start)?;
            for a in self.denormalize(&actions[i * d..(i + 1) * d]).chunks(2) {
                self.env.step(a)?;
            }
            finals.push(self.env.state());
        }
        let Some(lc) = self.latent.as_ref() else {
            return Ok(finals.iter().map(|p| self.cost(p)).collect());
        };
        let size = self.env.spec().default_data_size;
        let frames = finals
            .iter()
            .map(|p| self.env.render_state(p, size))
            .collect::<qwm::Result<Vec<_>>>()?;
        let (v, p) = embed(&lc.model, &self.norm, &frames, &finals.concat())?;
        // The final frames as one-frame rollouts (visual, proprio and zero action channels),
        // scored by the model's own objective.
        let (n_tok, ae) = (v.dim(1)?, lc.model.config().action_emb);
        let tokens = Tensor::cat(
            &[
                &v,
                &p.unsqueeze(1)?.broadcast_as((n, n_tok, p.dim(1)?))?,
                &Tensor::zeros((n, n_tok, ae), v.dtype(), v.device())?,
            ],
            2,
        )?;
        let r = Rollout {
            batch: n,
            chunks: vec![RolloutChunk {
                start: 0,
                len: n,
                frames: vec![tokens],
            }],
        };
        let (gv, gp) = lc.goal.as_ref().expect("set_problem runs first");
        let c = lc
            .model
            .objective(&r, gv, gp, ObjectiveMode::Last, self.env.spec().alpha)?;
        lc.model.download(&c)
    }
    fn denormalize(&self, actions: &[f32]) -> Vec<f32> {
        self.norm.denormalize_actions(actions)
    }
    fn image_size(&self) -> usize {
        // The oracle never looks at frames; keep them small.
        16
    }
}

/// Visual latents and proprio embeddings of real frames and their (raw) proprio.
fn embed(
    model: &CpuModel,
    norm: &Normalization,
    frames: &[Frame],
    proprio: &[f32],
) -> qwm::Result<(Tensor, Tensor)> {
    let size = frames[0].width;
    let bytes: Vec<u8> = frames.iter().flat_map(|f| f.data.iter().copied()).collect();
    let z = model.encode(&Frames::new(&bytes, frames.len(), size, size)?)?;
    let np: Vec<f32> = proprio
        .chunks(2)
        .flat_map(|p| norm.normalize_proprio(p))
        .collect();
    let pt = model.upload(&np, &[frames.len(), 2])?;
    let p = model.embed_proprio(&pt)?;
    Ok((z, p))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cost, name) = match args.first().map(String::as_str) {
        None | Some("euclidean") => (Cost::Euclidean, "euclidean"),
        Some("geodesic") => (Cost::Geodesic, "geodesic"),
        Some("saturating") => (Cost::Saturating, "saturating"),
        Some("sided") => (Cost::Sided, "sided"),
        Some("latent") => (Cost::Latent, "latent"),
        Some(other) => {
            bail!("cost {other:?}: use euclidean, geodesic, saturating, sided or latent")
        }
    };
    let episodes: usize = args.get(1).map_or(Ok(50), |s| s.parse())?;
    let (scale, model_path) = if cost == Cost::Latent {
        let p = args
            .get(2)
            .map_or("assets/wall.safetensors", String::as_str);
        (0.0, p.to_string())
    } else {
        let scale: f32 = args.get(2).map_or(Ok(8.0), |s| s.parse())?;
        (scale, "assets/wall.safetensors".to_string())
    };
    let (_, norm) = format::read_config(&model_path)?;
    let latent = if cost == Cost::Latent {
        Some(LatentCost {
            model: CpuModel::new(&format::load(&model_path)?)?,
            goal: None,
        })
    } else {
        None
    };
    let mut model = Oracle {
        env: env::make("wall")?,
        norm,
        cost,
        scale,
        start: vec![],
        goal: vec![],
        latent,
    };
    let pc = PlanConfig {
        opt_steps: 10,
        ..PlanConfig::default()
    };
    let mpc = MpcConfig {
        max_iters: 50,
        n_taken: 5,
        ..Default::default()
    };
    let cfg = EvalConfig {
        env: "wall".into(),
        episodes,
        planner: "cem".into(),
        plan: (&pc).into(),
        mpc: (&mpc).into(),
        model: if cost == Cost::Latent {
            format!("oracle ({name} of {model_path})")
        } else if cost == Cost::Saturating || cost == Cost::Sided {
            format!("oracle ({name}, scale {scale})")
        } else {
            format!("oracle ({name})")
        },
        model_crc32: None,
        model_planning_crc32: None,
        quant: "fp".into(),
        backend: "cpu".into(),
    };
    let r = run_eval(
        &cfg,
        &pc,
        &mpc,
        &mut model,
        None,
        &mut |rec, i| {
            println!(
                "episode {i:2}: {} after {:2} iterations, {:5.1} px from the goal (start ({:.1}, {:.1}), goal ({:.1}, {:.1}))",
                if rec.success { "success" } else { "failure" },
                rec.iterations,
                rec.final_state_distance,
                rec.start[0],
                rec.start[1],
                rec.goal[0],
                rec.goal[1]
            )
        },
        &mut |_, _| {},
    )?;
    let ok = r.episodes.iter().filter(|e| e.success).count();
    println!(
        "{}: {ok}/{} = {:.2} (95% {:.2}-{:.2})",
        cfg.model,
        r.episodes.len(),
        r.success_rate,
        r.success_ci95[0],
        r.success_ci95[1]
    );
    Ok(())
}
