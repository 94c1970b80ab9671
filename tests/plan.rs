//! Planners on analytic objectives: they must find the minimum, be deterministic for a seed,
//! and refuse bad settings before any work starts.

use qwm::plan::{self, PlanConfig};

fn quad_target(d: usize) -> Vec<f32> {
    (0..d).map(|i| ((i as f32) * 0.37).sin() * 0.8).collect()
}

fn cfg(opt_steps: usize, seed: u64) -> PlanConfig {
    PlanConfig {
        horizon: 3,
        step_dim: 4,
        samples: 200,
        topk: 20,
        opt_steps,
        seed,
        ..PlanConfig::default()
    }
}

fn quad_cost(target: &[f32]) -> impl FnMut(&[f32], usize) -> qwm::Result<Vec<f32>> + '_ {
    move |s: &[f32], n: usize| {
        let d = target.len();
        Ok((0..n)
            .map(|i| {
                s[i * d..(i + 1) * d]
                    .iter()
                    .zip(target)
                    .map(|(a, b)| (a - b).powi(2))
                    .sum()
            })
            .collect())
    }
}

#[test]
fn cem_and_mppi_find_a_quadratic_minimum() {
    let c = cfg(30, 7);
    let target = quad_target(c.seq_len());
    for name in ["cem", "mppi"] {
        let mut p = plan::make(name, c.clone()).unwrap();
        let mut f = quad_cost(&target);
        let r = p.plan(&mut f, None).unwrap();
        let err: f32 = r
            .actions
            .iter()
            .zip(&target)
            .map(|(a, b)| (a - b).powi(2))
            .sum();
        let start: f32 = target.iter().map(|b| b * b).sum();
        assert!(err < start * 0.05, "{name}: error {err} vs start {start}");
        assert_eq!(r.steps.len(), 30);
        assert!(r.steps.last().unwrap().best_cost <= r.steps[0].best_cost);
    }
}

#[test]
fn more_optimization_steps_do_not_hurt_cem() {
    let target = quad_target(12);
    let run = |steps| {
        let mut p = plan::make("cem", cfg(steps, 3)).unwrap();
        let mut f = quad_cost(&target);
        p.plan(&mut f, None).unwrap().cost
    };
    assert!(run(20) <= run(2));
}

#[test]
fn planning_is_deterministic_for_a_seed() {
    let target = quad_target(12);
    for name in ["cem", "mppi"] {
        let run = |seed| {
            let mut p = plan::make(name, cfg(5, seed)).unwrap();
            let mut f = quad_cost(&target);
            p.plan(&mut f, None).unwrap().actions
        };
        assert_eq!(run(11), run(11), "{name}");
        assert_ne!(run(11), run(12), "{name}");
    }
}

#[test]
fn bad_settings_are_refused_up_front() {
    let mut c = cfg(5, 0);
    c.topk = 500;
    let e = plan::make("cem", c).err().unwrap().to_string();
    assert!(e.contains("top-k") && e.contains("200"), "{e}");
    let mut c = cfg(5, 0);
    c.horizon = 0;
    assert!(plan::make("cem", c)
        .err()
        .unwrap()
        .to_string()
        .contains("horizon"));
    let e = plan::make("gd", cfg(5, 0)).err().unwrap().to_string();
    assert!(e.contains("cem, mppi"), "{e}");
}

#[test]
fn nan_costs_are_an_error() {
    let mut p = plan::make("cem", cfg(3, 0)).unwrap();
    let mut f = |_: &[f32], n: usize| Ok(vec![f32::NAN; n]);
    let e = p.plan(&mut f, None).unwrap_err().to_string();
    assert!(e.contains("NaN"), "{e}");
}
