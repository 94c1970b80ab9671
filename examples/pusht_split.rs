//! Model error or search failure? For each PushT evaluation episode the goal is, by
//! construction, reached by the 25 actions the data policy took (`pusht::eval_segment`). This
//! scores those known actions with the world model's planning objective, next to doing nothing
//! and next to the first CEM plan of the evaluation (the same seed, settings and model as
//! `qwm eval`/the study's `pusht/fp` cell, so its plan is the cell's first plan), and executes
//! the CEM plan in the real environment:
//! * CEM cost above the known actions' cost: the model ranks the solution better than what CEM
//!   found, so the search failed;
//! * CEM cost below it while the real outcome misses the goal: the model scores a wrong plan
//!   better than the solution, so the model (its prediction or its objective) failed.
//!
//! Usage: `cargo run --release --example pusht_split -- [EPISODES] [FIRST] [MODEL]` (defaults
//! 10, 0 and the shipped PushT model).
use qwm::env::{self, pusht};
use qwm::model::{format, CpuModel};
use qwm::plan::eval::eval_seed;
use qwm::plan::world::WorldPlanModel;
use qwm::plan::{self, PlanConfig, PlanModel};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let episodes: usize = args.first().map_or(Ok(10), |s| s.parse())?;
    let first: usize = args.get(1).map_or(Ok(0), |s| s.parse())?;
    let path = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "assets/pusht.safetensors".into());
    let w = format::load(&path)?;
    let model = CpuModel::new(&w)?;
    let mut env = env::make("pusht")?;
    let cfg = PlanConfig::default(); // DINO-WM's PushT CEM: 300 x top 30, horizon 5, 30 steps
    let mut wm = WorldPlanModel::new(&model, w.norm.clone(), cfg.horizon, env.spec().alpha);
    let size = wm.image_size();
    let (fs, a) = (wm.frameskip(), wm.action_dim());
    println!(
        "episode  cost(known)  cost(zero)  cost(CEM)  CEM real: block err, angle err, success"
    );
    let (mut search, mut model_err, mut solved) = (0, 0, 0);
    for i in first..first + episodes {
        let seed = eval_seed(i);
        let (start, goal, known) = pusht::eval_segment(seed);
        env.reset_to(&start)?;
        let goal_frame = env.render_state(&goal, size)?;
        wm.set_problem(
            &env.render(size),
            &env.proprio(),
            &goal_frame,
            &env.proprio_of(&goal),
        )?;
        let known_n = w.norm.normalize_actions(&known);
        let zero_n = w.norm.normalize_actions(&vec![0.0; known.len()]);
        let c = wm.costs(&[known_n, zero_n].concat(), 2)?;
        let mut pc = cfg.clone();
        pc.seed = cfg.seed ^ seed;
        let mut planner = plan::make("cem", pc)?;
        let p = planner.plan(&mut |s, n| wm.costs(s, n), None)?;
        let raw = wm.denormalize(&p.actions);
        let mut ok = false;
        'exec: for s in 0..raw.len() / (fs * a) {
            for f in 0..fs {
                let off = (s * fs + f) * a;
                env.step(&raw[off..off + a])?;
                if env.is_success(&env.state(), &goal) {
                    ok = true;
                    break 'exec;
                }
            }
        }
        let s = env.state();
        let block = (s[2] - goal[2]).hypot(s[3] - goal[3]);
        let angle = pusht::angle_diff(s[4], goal[4]);
        println!(
            "{i:7}  {:11.4}  {:10.4}  {:9.4}  {block:6.1} px, {angle:5.2} rad, {}",
            c[0],
            c[1],
            p.cost,
            if ok { "success" } else { "failure" }
        );
        if ok {
            solved += 1;
        } else if p.cost > c[0] {
            search += 1;
        } else {
            model_err += 1;
        }
    }
    println!(
        "{episodes} episodes: first plan solved {solved}; of the misses, CEM cost above the known \
         solution's (search failed) {search}, at or below it (the model preferred a wrong plan) \
         {model_err}"
    );
    Ok(())
}
