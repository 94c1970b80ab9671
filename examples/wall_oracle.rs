//! Wall with a perfect world model: the evaluation of `qwm eval --env wall` (same episodes,
//! DINO-WM's CEM and MPC settings, the shipped model's action normalization) where every
//! imagined rollout is the real environment. The cost of a rollout is either the squared
//! distance of its last position to the goal in normalized proprio units (what the proprio
//! term of DINO-WM's objective measures, alpha = 1) or the path length through the door
//! (a geodesic cost). It separates what the objective costs from what model error costs:
//! see docs/MODELS.md, "Wall: what limits the success rate".
//!
//! Usage: `cargo run --release --example wall_oracle -- [euclidean|geodesic] [EPISODES]`
use anyhow::bail;
use qwm::env::{self, wall, Env, Frame};
use qwm::model::{format, Normalization};
use qwm::plan::eval::{run_eval, EvalConfig};
use qwm::plan::{MpcConfig, PlanConfig, PlanModel};

struct Oracle {
    env: Box<dyn Env>,
    norm: Normalization,
    geodesic: bool,
    start: Vec<f32>,
    goal: Vec<f32>,
}

impl Oracle {
    fn cost(&self, p: &[f32]) -> f32 {
        let g = &self.goal;
        if self.geodesic {
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
    let geodesic = match args.first().map(String::as_str) {
        None | Some("euclidean") => false,
        Some("geodesic") => true,
        Some(other) => bail!("cost {other:?}: use euclidean or geodesic"),
    };
    let episodes: usize = args.get(1).map_or(Ok(50), |s| s.parse())?;
    let (_, norm) = format::read_config("assets/wall.safetensors")?;
    let mut model = Oracle {
        env: env::make("wall")?,
        norm,
        geodesic,
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
        model: format!(
            "oracle ({})",
            if geodesic { "geodesic" } else { "euclidean" }
        ),
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
