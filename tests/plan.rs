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

#[test]
fn wilson_interval_and_spearman() {
    use qwm::plan::stats::{median, spearman, wilson95};
    let [lo, hi] = wilson95(45, 50);
    assert!(
        (lo - 0.786).abs() < 0.005 && (hi - 0.957).abs() < 0.005,
        "{lo} {hi}"
    );
    assert_eq!(wilson95(0, 10)[0], 0.0);
    let a = [1.0, 2.0, 3.0, 4.0, 5.0];
    assert!((spearman(&a, &[10.0, 20.0, 30.0, 40.0, 50.0]).unwrap() - 1.0).abs() < 1e-12);
    assert!((spearman(&a, &[5.0, 4.0, 3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12);
    // ties averaged: x = [1,2,2,3] -> ranks [1, 2.5, 2.5, 4]
    let r = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert!((r - 0.9486832980505138).abs() < 1e-9, "{r}");
    assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
    assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
}

/// A "perfect" model of Wall: the cost is the true distance after executing the actions in a
/// copy of the environment. MPC around CEM with it must reach the goal.
struct OracleWall {
    env: Box<dyn qwm::env::Env>,
    start: Vec<f32>,
    goal: Vec<f32>,
}

impl qwm::plan::PlanModel for OracleWall {
    fn action_dim(&self) -> usize {
        2
    }
    fn frameskip(&self) -> usize {
        5
    }
    fn set_problem(
        &mut self,
        _obs: &qwm::env::Frame,
        proprio: &[f32],
        _goal: &qwm::env::Frame,
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
                // Geodesic-ish cost: through the door when the goal is across the wall (plain
                // Euclidean distance has a local minimum against the wall).
                let p = self.env.state();
                let (wx, dy) = (qwm::env::wall::WALL_X, qwm::env::wall::DOOR_Y);
                let across = (p[0] - wx).signum() != (self.goal[0] - wx).signum();
                let d =
                    |a: &[f32], b: &[f32]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
                Ok(if across {
                    d(&p, &[wx, dy]) + d(&[wx, dy], &self.goal)
                } else {
                    d(&p, &self.goal)
                })
            })
            .collect()
    }
    fn denormalize(&self, actions: &[f32]) -> Vec<f32> {
        actions.iter().map(|a| a.clamp(-1.0, 1.0)).collect()
    }
    fn image_size(&self) -> usize {
        16
    }
}

#[test]
fn mpc_with_an_oracle_model_reaches_the_wall_goal() {
    let mut env = qwm::env::make("wall").unwrap();
    let (start, goal) = env.sample_start_goal(5);
    let mut model = OracleWall {
        env: qwm::env::make("wall").unwrap(),
        start: vec![],
        goal: vec![],
    };
    let c = PlanConfig {
        horizon: 5,
        step_dim: 10,
        samples: 100,
        topk: 10,
        opt_steps: 8,
        seed: 1,
        ..PlanConfig::default()
    };
    let mut planner = plan::make("cem", c).unwrap();
    let mpc = qwm::plan::MpcConfig {
        max_iters: 10,
        n_taken: 5,
        ..Default::default()
    };
    let mut iters = 0;
    let rec = qwm::plan::run_episode(
        env.as_mut(),
        &mut model,
        planner.as_mut(),
        &mpc,
        qwm::plan::Task {
            seed: 5,
            start: &start,
            goal: &goal,
        },
        &mut |_, _| iters += 1,
    )
    .unwrap();
    assert!(rec.success, "oracle MPC failed: {rec:?}");
    assert_eq!(rec.iterations, iters);
    assert!(rec.final_state_distance < 4.5);
}

#[test]
fn eval_writes_json_per_episode_and_resumes() {
    use qwm::plan::eval::{run_eval, EvalConfig};
    let dir = std::env::temp_dir().join(format!("qwm-eval-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("eval.json");
    let _ = std::fs::remove_file(&json);
    let pc = PlanConfig {
        horizon: 5,
        step_dim: 10,
        samples: 60,
        topk: 6,
        opt_steps: 4,
        seed: 1,
        ..PlanConfig::default()
    };
    let mpc = qwm::plan::MpcConfig {
        max_iters: 3,
        n_taken: 5,
        ..Default::default()
    };
    let mut cfg = EvalConfig {
        env: "wall".into(),
        episodes: 2,
        planner: "cem".into(),
        plan: (&pc).into(),
        mpc: (&mpc).into(),
        model: "oracle".into(),
        model_crc32: None,
        model_planning_crc32: None,
        quant: "fp".into(),
        backend: "cpu".into(),
    };
    let mut model = OracleWall {
        env: qwm::env::make("wall").unwrap(),
        start: vec![],
        goal: vec![],
    };
    let mut ran = 0;
    let r = run_eval(
        &cfg,
        &pc,
        &mpc,
        &mut model,
        Some(&json),
        &mut |_, _| ran += 1,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!((ran, r.finished), (2, 2));
    let text = std::fs::read_to_string(&json).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in [
        "success_rate",
        "success_ci95",
        "mean_state_dist",
        "plan_seconds_median",
        "spearman_objective_vs_distance",
        "latent_divergence",
        "episodes",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {text}");
    }
    assert!(v["latent_divergence"].is_null());
    // Resume with one more episode: only the new one runs, the old ones are kept as they were.
    cfg.episodes = 3;
    let mut ran = 0;
    let r2 = run_eval(
        &cfg,
        &pc,
        &mpc,
        &mut model,
        Some(&json),
        &mut |_, _| ran += 1,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!((ran, r2.finished), (1, 3));
    assert_eq!(r2.episodes[0].final_state, r.episodes[0].final_state);
    // Different settings: refuse to mix.
    cfg.planner = "mppi".into();
    let e = run_eval(
        &cfg,
        &pc,
        &mpc,
        &mut model,
        Some(&json),
        &mut |_, _| {},
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("different settings"), "{e}");
    // A model file retrained at the same path: refuse too.
    cfg.planner = "cem".into();
    cfg.model_crc32 = Some("0badf00d".into());
    let e = run_eval(
        &cfg,
        &pc,
        &mpc,
        &mut model,
        Some(&json),
        &mut |_, _| {},
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("different settings"), "{e}");
    assert!(e.to_string().contains("model_crc32"), "{e}");
    // The same file (same CRC-32) under another path resumes; another method does not.
    let json2 = dir.join("moved.json");
    cfg.episodes = 1;
    cfg.model = "assets/wall.safetensors (w4 rtn)".into();
    let run = |cfg: &EvalConfig, model: &mut OracleWall, ran: &mut usize| {
        run_eval(
            cfg,
            &pc,
            &mpc,
            model,
            Some(&json2),
            &mut |_, _| *ran += 1,
            &mut |_, _| {},
        )
    };
    let mut ran = 0;
    run(&cfg, &mut model, &mut ran).unwrap();
    cfg.episodes = 2;
    cfg.model = "/elsewhere/assets/wall.safetensors (w4 rtn)".into();
    let mut ran = 0;
    let r3 = run(&cfg, &mut model, &mut ran).unwrap();
    assert_eq!((ran, r3.finished), (1, 2));
    cfg.model = "/elsewhere/assets/wall.safetensors (w4 omse)".into();
    let e = run(&cfg, &mut model, &mut ran).unwrap_err();
    assert!(e.to_string().contains("model: "), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// CEM refits its std over the top-k with divisor k - 1 (DINO-WM's `torch.std`) by default,
/// k with `CemStd::Population`: the second step's samples are `mean + std * noise` with the
/// same noise in both modes, so normalizing them by the expected std must give equal values.
#[test]
fn cem_std_divisor_is_k_minus_1_or_k() {
    use qwm::plan::CemStd;
    let target = quad_target(12);
    let mut second = Vec::new();
    for mode in [CemStd::Sample, CemStd::Population] {
        let c = PlanConfig {
            cem_std: mode,
            ..cfg(2, 5)
        };
        let (n, k) = (c.samples, c.topk);
        let mut calls: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
        let mut base = quad_cost(&target);
        let mut cost = |s: &[f32], n: usize| {
            let r = base(s, n)?;
            calls.push((s.to_vec(), r.clone()));
            Ok(r)
        };
        plan::make("cem", c.clone())
            .unwrap()
            .plan(&mut cost, None)
            .unwrap();
        let (s1, c1) = &calls[0];
        let d = target.len();
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by(|&a, &b| c1[a].total_cmp(&c1[b]).then(a.cmp(&b)));
        let div = if mode == CemStd::Sample { k - 1 } else { k } as f64;
        let mut norm = Vec::new();
        let s2 = &calls[1].0;
        for j in 0..d {
            let m = idx[..k].iter().map(|&i| s1[i * d + j] as f64).sum::<f64>() / k as f64;
            let v = idx[..k]
                .iter()
                .map(|&i| (s1[i * d + j] as f64 - m).powi(2))
                .sum::<f64>()
                / div;
            assert!(
                (s2[j] as f64 - m).abs() < 1e-5,
                "sample 0 is the refitted mean"
            );
            for i in 1..n {
                norm.push((s2[i * d + j] as f64 - m) / v.sqrt());
            }
        }
        second.push(norm);
    }
    let worst = second[0]
        .iter()
        .zip(&second[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        worst < 1e-3,
        "normalized second-step samples differ by {worst}"
    );
    // And the two modes really differ (by sqrt(k / (k - 1)) in spread).
    let c = |mode| PlanConfig {
        cem_std: mode,
        ..cfg(3, 5)
    };
    let mut q = quad_cost(&target);
    let a = plan::make("cem", c(CemStd::Sample))
        .unwrap()
        .plan(&mut q, None)
        .unwrap();
    let mut q = quad_cost(&target);
    let b = plan::make("cem", c(CemStd::Population))
        .unwrap()
        .plan(&mut q, None)
        .unwrap();
    assert_ne!(a.actions, b.actions);
}

/// A model file identifies an evaluation by what planning reads: a retrained decoder (another
/// file CRC, the same planning CRC) resumes a stored report; a changed encoder is refused and
/// the message says why. Reports without the planning CRC still compare the file CRC.
#[test]
fn a_retrained_decoder_keeps_an_evaluation_resumable_an_encoder_change_does_not() {
    use qwm::model::{format, ModelConfig, Weights};
    use qwm::plan::eval::{model_crc32s, run_eval, EvalConfig};
    let dir = std::env::temp_dir().join(format!("qwm-eval-identity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let w = Weights::random(&ModelConfig::tiny(), 3).unwrap();
    let nudge = |w: &Weights, prefix: &str, path: &std::path::Path| {
        let mut w = w.clone();
        let t = w
            .tensors
            .iter_mut()
            .find(|(n, _)| n.starts_with(prefix))
            .unwrap()
            .1;
        t.data[0] += 0.25;
        format::save(&w, path).unwrap();
    };
    let (a, b, c) = (dir.join("a.st"), dir.join("b.st"), dir.join("c.st"));
    format::save(&w, &a).unwrap();
    nudge(&w, "decoder.", &b);
    nudge(&w, "encoder.", &c);
    let (ia, ib, ic) = (
        model_crc32s(&a).unwrap(),
        model_crc32s(&b).unwrap(),
        model_crc32s(&c).unwrap(),
    );
    assert_ne!(ia.0, ib.0, "the decoder change must change the file CRC");
    assert_eq!(
        ia.1, ib.1,
        "the decoder is not part of the planning identity"
    );
    assert_ne!(ia.1, ic.1, "the encoder is part of the planning identity");
    let pc = PlanConfig {
        horizon: 5,
        step_dim: 10,
        samples: 30,
        topk: 5,
        opt_steps: 2,
        seed: 1,
        ..PlanConfig::default()
    };
    let mpc = qwm::plan::MpcConfig {
        max_iters: 2,
        n_taken: 5,
        ..Default::default()
    };
    let cfg_of =
        |id: &(Option<String>, Option<String>), path: &std::path::Path, n: usize| EvalConfig {
            env: "wall".into(),
            episodes: n,
            planner: "cem".into(),
            plan: (&pc).into(),
            mpc: (&mpc).into(),
            model: path.display().to_string(),
            model_crc32: id.0.clone(),
            model_planning_crc32: id.1.clone(),
            quant: "fp".into(),
            backend: "cpu".into(),
        };
    let mut model = OracleWall {
        env: qwm::env::make("wall").unwrap(),
        start: vec![],
        goal: vec![],
    };
    let json = dir.join("eval.json");
    let mut run = |cfg: &EvalConfig, ran: &mut usize| {
        run_eval(
            cfg,
            &pc,
            &mpc,
            &mut model,
            Some(&json),
            &mut |_, _| *ran += 1,
            &mut |_, _| {},
        )
    };
    let mut ran = 0;
    run(&cfg_of(&ia, &a, 1), &mut ran).unwrap();
    // The retrained decoder's file (renamed, too) resumes: only the new episode runs.
    let mut ran = 0;
    let r = run(&cfg_of(&ib, &b, 2), &mut ran).unwrap();
    assert_eq!((ran, r.finished), (1, 2));
    // The encoder's change is refused, naming the planning identity and what it covers.
    let e = run(&cfg_of(&ic, &c, 3), &mut ran).unwrap_err().to_string();
    assert!(
        e.contains("model_planning_crc32")
            && e.contains("encoder")
            && e.contains("different settings"),
        "{e}"
    );
    // A report written before the planning CRC existed compares the file CRC: the same file
    // resumes, the retrained decoder's file is refused (nothing proves it plans the same).
    let text = std::fs::read_to_string(&json).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["config"]
        .as_object_mut()
        .unwrap()
        .remove("model_planning_crc32");
    v["config"]["model_crc32"] = ia.0.clone().into();
    v["config"]["model"] = a.display().to_string().into();
    std::fs::write(&json, serde_json::to_string(&v).unwrap()).unwrap();
    let mut ran = 0;
    let r = run(&cfg_of(&ia, &a, 3), &mut ran).unwrap();
    assert_eq!((ran, r.finished), (1, 3));
    v["config"]
        .as_object_mut()
        .unwrap()
        .remove("model_planning_crc32");
    std::fs::write(&json, serde_json::to_string(&v).unwrap()).unwrap();
    let e = run(&cfg_of(&ib, &b, 3), &mut ran).unwrap_err().to_string();
    assert!(e.contains("model_crc32"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A planner that always returns the same actions, to pin down what MPC does with them.
struct Fixed(Vec<f32>);

impl qwm::plan::Planner for Fixed {
    fn name(&self) -> &'static str {
        "fixed"
    }
    fn plan(
        &mut self,
        _cost: &mut qwm::plan::CostFn,
        _init: Option<&[f32]>,
    ) -> qwm::Result<qwm::plan::PlanResult> {
        Ok(qwm::plan::PlanResult {
            actions: self.0.clone(),
            cost: 0.0,
            steps: Vec::new(),
        })
    }
}

fn fixed_episode(
    check: qwm::plan::SuccessCheck,
    start: [f32; 2],
    goal: [f32; 2],
    action: [f32; 2],
) -> qwm::plan::EpisodeRecord {
    let mut env = qwm::env::make("wall").unwrap();
    let mut model = OracleWall {
        env: qwm::env::make("wall").unwrap(),
        start: vec![],
        goal: vec![],
    };
    // Horizon 5 x frameskip 5 x 2-D: all 25 env steps of a plan take the same action.
    let mut planner = Fixed(action.repeat(25));
    let mpc = qwm::plan::MpcConfig {
        max_iters: 3,
        n_taken: 5,
        success_check: check,
    };
    let task = qwm::plan::Task {
        seed: 0,
        start: &start,
        goal: &goal,
    };
    qwm::plan::run_episode(
        env.as_mut(),
        &mut model,
        &mut planner,
        &mpc,
        task,
        &mut |_, _| {},
    )
    .unwrap()
}

#[test]
fn success_is_checked_every_step_or_only_after_each_plan_as_dino_wm() {
    use qwm::plan::SuccessCheck::{AfterPlan, EveryStep};
    // Moving right 2 px per env step from x = 10 comes within 4.5 px of the goal (x = 20) on
    // the third step, passes it, and ends the plan against the wall, 9 px past it.
    let (start, goal, right) = ([10.0, 20.0], [20.0, 20.0], [1.0, 0.0]);
    let every = fixed_episode(EveryStep, start, goal, right);
    assert!(every.success && every.iterations == 1, "{every:?}");
    assert!((every.final_state[0] - 16.0).abs() < 1e-4, "{every:?}");
    // DINO-WM only looks at the state after the plan's 25 steps: never within 4.5 px.
    let after = fixed_episode(AfterPlan, start, goal, right);
    assert!(!after.success && after.iterations == 3, "{after:?}");
    assert!(after.final_state[0] > 24.5, "{after:?}");
    // A start that already meets the goal: no plan at every step, one plan after-plan.
    let (near, stay) = ([21.0, 20.0], [0.0, 0.0]);
    let every = fixed_episode(EveryStep, near, goal, stay);
    assert!(every.success && every.iterations == 0, "{every:?}");
    let after = fixed_episode(AfterPlan, near, goal, stay);
    assert!(after.success && after.iterations == 1, "{after:?}");
    // The flag's names, and a clear error naming it for anything else.
    for c in [EveryStep, AfterPlan] {
        assert_eq!(qwm::plan::SuccessCheck::parse(c.name()).unwrap(), c);
    }
    let e = qwm::plan::SuccessCheck::parse("end")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--success-check") && e.contains("after-plan"),
        "{e}"
    );
}

#[test]
fn reports_from_before_the_success_check_resume_as_every_step_and_refuse_after_plan() {
    use qwm::plan::eval::{config_differences, EvalConfig};
    use qwm::plan::{MpcConfig, SuccessCheck};
    // New runs check as DINO-WM; reports without the setting were written checking every step.
    assert_eq!(MpcConfig::default().success_check, SuccessCheck::AfterPlan);
    let mpc = MpcConfig {
        success_check: SuccessCheck::EveryStep,
        ..MpcConfig::default()
    };
    let cfg = EvalConfig {
        env: "wall".into(),
        episodes: 50,
        planner: "cem".into(),
        plan: (&PlanConfig::default()).into(),
        mpc: (&mpc).into(),
        model: "m".into(),
        model_crc32: Some("00000000".into()),
        model_planning_crc32: None,
        quant: "fp".into(),
        backend: "cpu".into(),
    };
    let mut v = serde_json::to_value(&cfg).unwrap();
    assert_eq!(v["mpc"]["success_check"], "every-step");
    v["mpc"].as_object_mut().unwrap().remove("success_check");
    let old: EvalConfig = serde_json::from_value(v).unwrap();
    assert_eq!(old.mpc.success_check, SuccessCheck::EveryStep);
    assert!(config_differences(&old, &cfg).is_empty());
    let strict = EvalConfig {
        mpc: (&MpcConfig {
            success_check: SuccessCheck::AfterPlan,
            ..mpc
        })
            .into(),
        ..cfg.clone()
    };
    let d = config_differences(&old, &strict);
    assert!(d.len() == 1 && d[0].contains("after-plan"), "{d:?}");
}
