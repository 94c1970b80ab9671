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
//! Usage: `cargo run --release --example wall_oracle -- [euclidean|geodesic|saturating|sided]
//! [EPISODES] [SCALE]` (saturating: length scale in px, sided: the step; 8 by default)
use anyhow::bail;
use qwm::env::{self, wall, Env, Frame};
use qwm::model::{format, Normalization};
use qwm::plan::eval::{run_eval, EvalConfig};
use qwm::plan::{MpcConfig, PlanConfig, PlanModel};

#[derive(Clone, Copy, PartialEq)]
enum Cost {
    Euclidean,
    Geodesic,
    Saturating,
    Sided,
}

struct Oracle {
    env: Box<dyn Env>,
    norm: Normalization,
    cost: Cost,
    /// Length scale of the saturating cost, px.
    scale: f32,
    start: Vec<f32>,
    goal: Vec<f32>,
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
        Ok(())
    }
    fn costs(&mut self, actions: &[f32], n: usize) -> qwm::Result<Vec<f32>> {
        let d = actions.len() / n;
        (0..n)
            .map(|i| {
                self.env.reset_to(&self.start)?;
                for a in self.denormalize(&actions[i * d..(i + 1) * d]).chunks(2) {
                    self.env.step(a)?;
                }
                Ok(self.cost(&self.env.state()))
            })
            .collect()
    }
    fn denormalize(&self, actions: &[f32]) -> Vec<f32> {
        self.norm.denormalize_actions(actions)
    }
    fn image_size(&self) -> usize {
        // The oracle never looks at frames; keep them small.
        16
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cost, name) = match args.first().map(String::as_str) {
        None | Some("euclidean") => (Cost::Euclidean, "euclidean"),
        Some("geodesic") => (Cost::Geodesic, "geodesic"),
        Some("saturating") => (Cost::Saturating, "saturating"),
        Some("sided") => (Cost::Sided, "sided"),
        Some(other) => bail!("cost {other:?}: use euclidean, geodesic, saturating or sided"),
    };
    let episodes: usize = args.get(1).map_or(Ok(50), |s| s.parse())?;
    let scale: f32 = args.get(2).map_or(Ok(8.0), |s| s.parse())?;
    let (_, norm) = format::read_config("assets/wall.safetensors")?;
    let mut model = Oracle {
        env: env::make("wall")?,
        norm,
        cost,
        scale,
        start: vec![],
        goal: vec![],
    };
    let pc = PlanConfig {
        opt_steps: 10,
        ..PlanConfig::default()
    };
    let mpc = MpcConfig {
        max_iters: 50,
        n_taken: 5,
    };
    let cfg = EvalConfig {
        env: "wall".into(),
        episodes,
        planner: "cem".into(),
        plan: (&pc).into(),
        mpc: (&mpc).into(),
        model: if cost == Cost::Saturating || cost == Cost::Sided {
            format!("oracle ({name}, scale {scale})")
        } else {
            format!("oracle ({name})")
        },
        model_crc32: None,
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
