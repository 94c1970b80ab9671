//! The GPU and CPU backends plan the same: equal costs up to float rounding, and CEM with a
//! fixed seed picks the same first actions on both.

mod common;

use common::{assert_close, gpu};
use qwm::model::{CpuModel, GpuModel, ModelConfig, Weights};
use qwm::plan::world::WorldPlanModel;
use qwm::plan::{self, PlanConfig, PlanModel};

fn wall_model() -> Weights {
    let mut cfg = ModelConfig::tiny();
    cfg.action_dim = 2;
    cfg.proprio_dim = 2;
    Weights::random(&cfg, 3).unwrap()
}

#[test]
fn gpu_and_cpu_backends_choose_the_same_first_actions() {
    let Some(ctx) = gpu() else { return };
    let w = wall_model();
    let env = qwm::env::make("wall").unwrap();
    let (start, goal) = env.sample_start_goal(4);
    let size = w.config.image_size;
    let obs = env.render_state(&start, size).unwrap();
    let gf = env.render_state(&goal, size).unwrap();
    let gm = GpuModel::new(ctx, &w).unwrap();
    let cm = CpuModel::new(&w).unwrap();
    let mut gp = WorldPlanModel::new(&gm, w.norm.clone(), 3, 1.0);
    let mut cp = WorldPlanModel::new(&cm, w.norm.clone(), 3, 1.0);
    for m in [&mut gp as &mut dyn PlanModel, &mut cp] {
        m.set_problem(&obs, &env.proprio_of(&start), &gf, &env.proprio_of(&goal))
            .unwrap();
    }
    let c = PlanConfig {
        horizon: 3,
        step_dim: 10,
        samples: 24,
        topk: 4,
        opt_steps: 3,
        seed: 9,
        ..PlanConfig::default()
    };
    // Costs of the same samples agree.
    let acts = qwm::tensor::randn(8 * 30, 1.0, 5);
    let g = gp.costs(&acts, 8).unwrap();
    let cc = cp.costs(&acts, 8).unwrap();
    assert_close(&g, &cc, 1e-4, "costs gpu vs cpu");
    // And so do the plans.
    let pg = plan::make("cem", c.clone())
        .unwrap()
        .plan(&mut |s, n| gp.costs(s, n), None)
        .unwrap();
    let pcpu = plan::make("cem", c)
        .unwrap()
        .plan(&mut |s, n| cp.costs(s, n), None)
        .unwrap();
    assert_close(
        &pg.actions[..10],
        &pcpu.actions[..10],
        1e-3,
        "first planned actions",
    );
}
