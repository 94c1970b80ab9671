//! PushT with a perfect world model: the episodes of `qwm eval --env pusht` (DINO-WM's
//! protocol, `pusht::eval_start_goal`), DINO-WM's CEM and MPC settings (300 samples, top 30,
//! horizon 5 x frameskip 5, 30 optimization steps, at most 30 plans), but every imagined
//! rollout is the real environment and the cost is a normalized squared distance of the
//! rollout's last state to the goal. It measures what the planner and the shape of the
//! objective allow before any model error (the Wall analogue is `wall_oracle`), and how long
//! an episode takes. Costs:
//! * `state`: mean of the squared [agent x, agent y, block x, block y] errors over 140 px (the
//!   data's position std) and the squared angle error (radians); a latent that encodes the
//!   whole pose linearly gives such a cost;
//! * `agent`: the agent position alone (what the proprio term of DINO-WM's objective sees
//!   when the visual term carries nothing).
//!
//! Usage: `cargo run --release --example pusht_oracle -- [state|agent] [EPISODES] [FIRST]`
//! (defaults state, 10, 0: episodes FIRST..FIRST+EPISODES of the evaluation seeds).
use qwm::env::{pusht, Env};
use qwm::plan::eval::eval_seed;
use qwm::plan::{self, PlanConfig};
use rayon::prelude::*;
use std::time::Instant;

/// The data's action statistics (std of each relative action component, mean about 0).
const ACTION_STD: f32 = 0.342;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cost_name = args.first().map_or("state", String::as_str).to_string();
    if cost_name != "state" && cost_name != "agent" {
        anyhow::bail!("cost {cost_name:?}: use state or agent");
    }
    let episodes: usize = args.get(1).map_or(Ok(10), |s| s.parse())?;
    let first: usize = args.get(2).map_or(Ok(0), |s| s.parse())?;
    let (fs, horizon, n_taken, max_iters) = (5usize, 5usize, 5usize, 30usize);
    let env = pusht::PushT::new();
    let cost = |s: &[f32], g: &[f32]| -> f32 {
        let p = |k: usize| ((s[k] - g[k]) / 140.0).powi(2);
        if cost_name == "agent" {
            (p(0) + p(1)) / 2.0
        } else {
            (p(0) + p(1) + p(2) + p(3) + pusht::angle_diff(s[4], g[4]).powi(2)) / 5.0
        }
    };
    let mut ok = 0;
    let t_all = Instant::now();
    for i in first..first + episodes {
        let t0 = Instant::now();
        let seed = eval_seed(i);
        let (start, goal) = pusht::eval_start_goal(seed);
        let mut planner = plan::make(
            "cem",
            PlanConfig {
                horizon,
                step_dim: fs * 2,
                samples: 300,
                topk: 30,
                opt_steps: 30,
                seed,
                ..PlanConfig::default()
            },
        )?;
        let mut s = start.clone();
        let (mut success, mut iters) = (false, 0);
        while !success && iters < max_iters {
            let from = s.clone();
            let plan = planner.plan(
                &mut |acts: &[f32], n: usize| {
                    let d = acts.len() / n;
                    Ok((0..n)
                        .into_par_iter()
                        .map(|k| {
                            let mut x: [f32; 7] = from.clone().try_into().unwrap();
                            for a in acts[k * d..(k + 1) * d].chunks(2) {
                                x = pusht::PushT::transition(
                                    &x,
                                    [a[0] * ACTION_STD, a[1] * ACTION_STD],
                                );
                            }
                            cost(&x, &goal)
                        })
                        .collect())
                },
                None,
            )?;
            'exec: for a in plan.actions.chunks(2).take(n_taken * fs) {
                let x: [f32; 7] = s.clone().try_into().unwrap();
                s = pusht::PushT::transition(&x, [a[0] * ACTION_STD, a[1] * ACTION_STD]).to_vec();
                if env.is_success(&s, &goal) {
                    break 'exec;
                }
            }
            iters += 1;
            success = env.is_success(&s, &goal);
        }
        ok += success as usize;
        let pos = (0..4).map(|k| (s[k] - goal[k]).powi(2)).sum::<f32>().sqrt();
        println!(
            "episode {i:2}: {} after {iters:2} plans, position error {pos:6.1}, angle error {:5.3} rad ({:.0} s); block moved {:.0} px, {:.2} rad in the goal segment",
            if success { "success" } else { "failure" },
            pusht::angle_diff(s[4], goal[4]),
            t0.elapsed().as_secs_f64(),
            (start[2] - goal[2]).hypot(start[3] - goal[3]),
            pusht::angle_diff(start[4], goal[4]),
        );
    }
    println!(
        "oracle ({cost_name}): {ok}/{episodes} in {:.0} s",
        t_all.elapsed().as_secs_f64()
    );
    Ok(())
}
