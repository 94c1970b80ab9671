//! What a Wall model imagines along scripted paths: for a start and a goal, drive the dot
//! along a few waypoint paths (straight at the goal, to the door, through the door to the
//! goal), then print where the environment really ends, where the model's rollout believes
//! the dot is after every model step (its predicted proprio tokens mapped back to pixels by
//! least squares through the proprio encoder), and the planning cost split into its visual
//! and proprio parts. It is how the Wall failures in docs/MODELS.md were diagnosed.
//!
//! Usage: `cargo run --release --example wall_imagination -- START_X START_Y GOAL_X GOAL_Y
//! [MODEL] [SPEED]` (MODEL: assets/wall.safetensors; SPEED: largest action norm, 1.8 as the
//! data's bound).
use anyhow::{bail, Context};
use qwm::env::{self, wall, Env};
use qwm::model::{format, CpuModel, Weights};
use qwm::plan::world::WorldPlanModel;
use qwm::plan::PlanModel;

/// Actions of `steps` env steps that follow `waypoints` at up to `speed` per step, and the
/// state the environment really ends in.
fn follow(
    e: &dyn Env,
    start: &[f32],
    waypoints: &[[f32; 2]],
    steps: usize,
    speed: f32,
) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
    let (mut s, mut acts, mut w) = (start.to_vec(), Vec::new(), 0);
    for _ in 0..steps {
        let dist = |w: usize| (waypoints[w][0] - s[0]).hypot(waypoints[w][1] - s[1]);
        while w + 1 < waypoints.len() && dist(w) < 1.0 {
            w += 1;
        }
        let (dx, dy) = (waypoints[w][0] - s[0], waypoints[w][1] - s[1]);
        let d = dx.hypot(dy).max(1e-6);
        // The dot moves 2 px per unit of action.
        let m = (d / 2.0).min(speed);
        let a = [dx / d * m, dy / d * m];
        acts.extend_from_slice(&a);
        s = e.step_state(&s, &a)?;
    }
    Ok((acts, s))
}

/// Pixel position encoded in one frame's proprio tokens (least squares through the linear
/// proprio encoder, then un-normalized).
fn decode_proprio(w: &Weights, frame: &[f32]) -> anyhow::Result<[f32; 2]> {
    let c = &w.config;
    let wt = &w.tensors["proprio_encoder.patch_embed.weight"].data; // [E, 2, 1]
    let bt = &w.tensors["proprio_encoder.patch_embed.bias"].data;
    let off = c.visual_dim();
    let (mut a11, mut a12, mut a22, mut r1, mut r2) = (0f32, 0f32, 0f32, 0f32, 0f32);
    for i in 0..c.proprio_emb {
        let (x, y, t) = (wt[i * 2], wt[i * 2 + 1], frame[off + i] - bt[i]);
        a11 += x * x;
        a12 += x * y;
        a22 += y * y;
        r1 += x * t;
        r2 += y * t;
    }
    let det = a11 * a22 - a12 * a12;
    let (u, v) = ((a22 * r1 - a12 * r2) / det, (a11 * r2 - a12 * r1) / det);
    let n = &w.norm;
    Ok([
        u * n.proprio_std[0] + n.proprio_mean[0],
        v * n.proprio_std[1] + n.proprio_mean[1],
    ])
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        bail!("usage: wall_imagination START_X START_Y GOAL_X GOAL_Y [MODEL] [SPEED]");
    }
    let num = |i: usize| -> anyhow::Result<f32> {
        args[i]
            .parse()
            .with_context(|| format!("argument {} ({}) is not a number", i + 1, args[i]))
    };
    let (start, goal) = (vec![num(0)?, num(1)?], vec![num(2)?, num(3)?]);
    let path = args
        .get(4)
        .map_or("assets/wall.safetensors", |s| s.as_str());
    let speed = if args.len() > 5 { num(5)? } else { 1.8 };
    let w = format::load(path)?;
    let c = &w.config;
    if c.proprio_dim != 2 {
        bail!(
            "{path} is not a Wall model (proprio is {}-D)",
            c.proprio_dim
        );
    }
    let m = CpuModel::new(&w)?;
    let e = env::make("wall")?;
    let (obs, g) = (
        e.render_state(&start, c.image_size)?,
        e.render_state(&goal, c.image_size)?,
    );
    let horizon = 5;
    let mut vis = WorldPlanModel::new(&m, w.norm.clone(), horizon, 0.0);
    let mut all = WorldPlanModel::new(&m, w.norm.clone(), horizon, e.spec().alpha);
    vis.set_problem(&obs, &start, &g, &goal)?;
    all.set_problem(&obs, &start, &g, &goal)?;
    // Waypoints just outside the wall on the start's side and the other side, at the door.
    let gap = wall::WALL_HALF + 2.0;
    let (near, far) = if start[0] < wall::WALL_X {
        (wall::WALL_X - gap, wall::WALL_X + gap)
    } else {
        (wall::WALL_X + gap, wall::WALL_X - gap)
    };
    let door = wall::DOOR_Y;
    let paths: [(&str, Vec<[f32; 2]>); 4] = [
        ("stay", vec![[start[0], start[1]]]),
        ("straight", vec![[goal[0], goal[1]]]),
        ("to door", vec![[near, door], [wall::WALL_X, door]]),
        (
            "door, goal",
            vec![[near, door], [far, door], [goal[0], goal[1]]],
        ),
    ];
    let steps = horizon * c.frameskip;
    println!("model {path}; start ({:.1}, {:.1}), goal ({:.1}, {:.1}); {steps} env steps, speed <= {speed}",
        start[0], start[1], goal[0], goal[1]);
    for (name, wps) in paths {
        let (raw, end) = follow(e.as_ref(), &start, &wps, steps, speed)?;
        let norm = w.norm.normalize_actions(&raw);
        let cv = vis.costs(&norm, 1)?[0];
        let ca = all.costs(&norm, 1)?[0];
        let imagined: Vec<String> = all
            .imagine(&norm)?
            .iter()
            .map(|f| decode_proprio(&w, f).map(|p| format!("({:.0},{:.0})", p[0], p[1])))
            .collect::<anyhow::Result<_>>()?;
        let dist = (end[0] - goal[0]).hypot(end[1] - goal[1]);
        println!(
            "{name:10} env ends ({:4.1},{:4.1}) {dist:4.1} px from goal | cost {ca:.4} = visual {cv:.4} + proprio {:.4} | imagined {}",
            end[0],
            end[1],
            ca - cv,
            imagined.join(" ")
        );
    }
    Ok(())
}
