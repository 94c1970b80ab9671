//! The models shipped in assets/: they load, their configs are the ones docs/MODELS.md
//! states, and the Wall model plans better than a random policy on the CPU backend.

use qwm::env::{self, Env};
use qwm::model::{format, CpuModel, ModelConfig};
use qwm::plan::eval::{run_eval, EvalConfig};
use qwm::plan::world::WorldPlanModel;
use qwm::plan::{MpcConfig, PlanConfig};
use rand::Rng;

const SHIPPED: [&str; 3] = ["wall", "pointmaze", "pusht"];

/// The JSON block after `<!-- config:NAME -->` in docs/MODELS.md.
fn documented_config(name: &str) -> ModelConfig {
    let doc = std::fs::read_to_string("docs/MODELS.md").expect("docs/MODELS.md");
    let marker = format!("<!-- config:{name} -->");
    let at = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/MODELS.md has no {marker}"));
    let rest = &doc[at..];
    let start = rest
        .find("```json")
        .expect("a ```json block after the marker")
        + 7;
    let end = start + rest[start..].find("```").expect("closing ```");
    serde_json::from_str(&rest[start..end]).expect("the documented config parses")
}

#[test]
fn shipped_models_load_and_match_the_model_card() {
    for name in SHIPPED {
        let path = format!("assets/{name}.safetensors");
        let size = std::fs::metadata(&path).expect(&path).len();
        assert!(size <= 10 << 20, "{path} is {size} bytes, over 10 MB");
        let w = format::load(&path).unwrap();
        assert_eq!(w.config, documented_config(name), "{path}");
        let spec = env::spec(name).unwrap();
        assert_eq!(w.config.action_dim, spec.action_dim);
        assert_eq!(w.config.proprio_dim, spec.proprio_dim);
        assert_eq!(w.config.image_size, spec.default_data_size);
    }
}

/// Successes of a random policy (data-scale Gaussian actions) with the same step budget and
/// the same success checks as MPC (after every executed plan).
fn random_policy_successes(
    env: &mut dyn Env,
    seeds: &[u64],
    plans: usize,
    steps_per_plan: usize,
) -> usize {
    let mut ok = 0;
    for &s in seeds {
        let (start, goal) = env.sample_start_goal(s);
        env.reset_to(&start).unwrap();
        let mut rng = env::rng(s ^ 0x5eed);
        let scale = env.spec().action_scale;
        'ep: for _ in 0..plans {
            for _ in 0..steps_per_plan {
                let a: Vec<f32> = (0..env.action_dim())
                    .map(|_| rng.random_range(-1.0f32..1.0) * 2.0 * scale)
                    .collect();
                env.step(&a).unwrap();
            }
            if env.is_success(&env.state(), &goal) {
                ok += 1;
                break 'ep;
            }
        }
    }
    ok
}

#[test]
fn the_shipped_wall_model_plans_better_than_a_random_policy_on_the_cpu() {
    let w = format::load("assets/wall.safetensors").unwrap();
    let m = CpuModel::new(&w).unwrap();
    let spec = env::spec("wall").unwrap();
    let episodes = 4;
    // DINO-WM's Wall planner (CEM 300 x 30, horizon 5, 10 steps); fewer MPC iterations
    // than the 50 of a full evaluation, to fit CI.
    let pc = PlanConfig {
        horizon: 5,
        step_dim: w.config.frameskip * w.config.action_dim,
        samples: 300,
        topk: 30,
        opt_steps: 10,
        ..PlanConfig::default()
    };
    let mpc = MpcConfig {
        max_iters: 6,
        n_taken: 5,
        ..Default::default()
    };
    let cfg = EvalConfig {
        env: "wall".into(),
        episodes,
        planner: "cem".into(),
        plan: (&pc).into(),
        mpc: (&mpc).into(),
        model: "assets/wall.safetensors".into(),
        model_crc32: None,
        model_planning_crc32: None,
        quant: "fp".into(),
        backend: "cpu".into(),
    };
    let mut pm = WorldPlanModel::new(&m, w.norm.clone(), pc.horizon, spec.alpha);
    let r = run_eval(
        &cfg,
        &pc,
        &mpc,
        &mut pm,
        None,
        &mut |_, _| {},
        &mut |_, _| {},
    )
    .unwrap();
    let planned = r.episodes.iter().filter(|e| e.success).count();
    let seeds: Vec<u64> = r.episodes.iter().map(|e| e.seed).collect();
    let mut env = env::make("wall").unwrap();
    let random = random_policy_successes(
        env.as_mut(),
        &seeds,
        mpc.max_iters,
        mpc.n_taken * w.config.frameskip,
    );
    assert!(
        planned > random && planned * 2 >= episodes,
        "planned {planned}/{episodes} successes, random policy {random}/{episodes}"
    );
}
