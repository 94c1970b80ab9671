//! Environment tests: dynamics invariants, success criteria on hand-built states,
//! determinism, pixel content of renders, input validation, datasets.

use qwm::env::dataset::{self, CollectConfig, Dataset};
use qwm::env::{self, pointmaze, pusht, wall, Env};
use rand::Rng;

fn rng(seed: u64) -> rand::rngs::StdRng {
    env::rng(seed)
}

fn invalid_msg(r: qwm::Result<()>) -> String {
    match r {
        Err(qwm::Error::Invalid(m)) => m,
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
}

#[test]
fn factory_names_and_specs() {
    for n in env::ENV_NAMES {
        let e = env::make(n).unwrap();
        assert_eq!(e.spec().name, n);
        assert_eq!(e.state().len(), e.state_dim());
        assert_eq!(e.proprio().len(), e.proprio_dim());
    }
    assert_eq!(env::make("PushT").unwrap().spec().name, "pusht");
    assert_eq!(env::make("point_maze").unwrap().spec().name, "pointmaze");
    let err = env::make("cartpole").err().unwrap().to_string();
    assert!(err.contains("wall, pointmaze, pusht"), "{err}");
    assert_eq!(env::spec("wall").unwrap().alpha, 1.0);
    assert_eq!(env::spec("pointmaze").unwrap().alpha, 0.0);
    assert_eq!(env::spec("pusht").unwrap().alpha, 1.0);
}

#[test]
fn wall_blocks_outside_door_and_passes_through_door() {
    // Head-on into the wall below the door: stopped 0.5 px before the face at x = 29.
    let q = wall::Wall::transition([25.0, 10.0], [5.0, 0.0]);
    assert!(
        (q[0] - 28.5).abs() < 1e-4 && (q[1] - 10.0).abs() < 1e-4,
        "{q:?}"
    );
    // From the right side.
    let q = wall::Wall::transition([40.0, 50.0], [-5.0, 0.0]);
    assert!((q[0] - 35.5).abs() < 1e-4, "{q:?}");
    // Through the door.
    let q = wall::Wall::transition([25.0, 30.0], [5.0, 0.0]);
    assert_eq!(q, [35.0, 30.0]);
    // Border.
    let q = wall::Wall::transition([8.0, 30.0], [-5.0, 0.0]);
    assert!((q[0] - 4.5).abs() < 1e-4, "{q:?}");
    // Plain move: position += 2 x action.
    let q = wall::Wall::transition([10.0, 10.0], [1.0, -0.5]);
    assert_eq!(q, [12.0, 9.0]);
}

#[test]
fn wall_dot_never_crosses_except_through_door() {
    let mut r = rng(1);
    let mut e = wall::Wall::new();
    for ep in 0..200 {
        let p = wall::random_free_position(&mut r);
        e.reset_to(&p).unwrap();
        for _ in 0..50 {
            let s = e.state();
            let a = [r.random_range(-6.0..6.0f32), r.random_range(-6.0..6.0f32)];
            e.step(&a).unwrap();
            let q = e.state();
            assert!(
                wall::is_free(q[0], q[1]),
                "episode {ep}: {s:?} -> {q:?} in a wall"
            );
            let crossed = (s[0] < 32.0) != (q[0] < 32.0);
            if crossed {
                // The move was unobstructed: it must pass x = 32 inside the door rows.
                let t = (32.0 - s[0]) / (q[0] - s[0]);
                let y = s[1] + t * (q[1] - s[1]);
                assert!(
                    (26.0..=34.0).contains(&y),
                    "crossed at y = {y}: {s:?} -> {q:?}"
                );
            }
        }
    }
}

#[test]
fn wall_success_distance_and_start_goal() {
    let e = wall::Wall::new();
    assert!(e.is_success(&[10.0, 10.0], &[13.0, 13.0])); // 4.24 px
    assert!(!e.is_success(&[10.0, 10.0], &[14.0, 13.0])); // 5 px
    assert!((e.state_distance(&[10.0, 10.0], &[13.0, 14.0]) - 5.0).abs() < 1e-6);
    let mut swapped = 0;
    for seed in 0..100 {
        let (s, g) = e.sample_start_goal(seed);
        assert!(wall::is_free(s[0], s[1]) && wall::is_free(g[0], g[1]));
        assert!(
            (s[0] < 29.0) != (g[0] < 29.0),
            "start and goal on the same side: {s:?} {g:?}"
        );
        if s[0] > 32.0 {
            swapped += 1;
        }
        assert_eq!(e.sample_start_goal(seed), (s, g));
    }
    assert!((30..70).contains(&swapped), "swapped {swapped} of 100");
}

#[test]
fn wall_render_pixels() {
    let e = wall::Wall::new();
    let f = e.render_state(&[16.0, 40.0], 65).unwrap();
    assert_eq!((f.width, f.height, f.data.len()), (65, 65, 65 * 65 * 3));
    assert_eq!(f.pixel(16, 40), [255, 0, 0], "dot centre is red");
    assert_eq!(f.pixel(32, 10), [0, 0, 0], "wall is black");
    assert_eq!(f.pixel(32, 30), [255, 255, 255], "door is open floor");
    assert_eq!(f.pixel(50, 50), [255, 255, 255], "floor is white");
    assert_eq!(f.pixel(4, 20), [0, 0, 0], "border line");
    let g = f.pixel(18, 40); // 2 px away: exp(-4 / 5.78) = 0.5
    assert!(g[0] == 255 && (100..160).contains(&g[1]), "{g:?}");
    // Any size: the reddest pixel sits where the dot is.
    for size in [64, 224, 17] {
        let f = e.render_state(&[16.0, 40.0], size).unwrap();
        assert_eq!(f.data.len(), size * size * 3);
        let (mut best, mut at) = (0i32, (0, 0));
        for y in 0..size {
            for x in 0..size {
                let p = f.pixel(x, y);
                let redness = p[0] as i32 - p[1] as i32;
                if redness > best {
                    best = redness;
                    at = (x, y);
                }
            }
        }
        let k = size as f32 / 65.0;
        let (ex, ey) = (16.5 * k, 40.5 * k);
        assert!(
            (at.0 as f32 + 0.5 - ex).abs() <= k.max(1.0) + 0.5
                && (at.1 as f32 + 0.5 - ey).abs() <= k.max(1.0) + 0.5,
            "size {size}: dot at {at:?}, expected near ({ex}, {ey})"
        );
    }
}

#[test]
fn pointmaze_ball_stays_in_free_space() {
    let mut e = pointmaze::PointMaze::new();
    let mut r = rng(2);
    for ep in 0..20 {
        let s = pointmaze::sample_state(&mut r);
        e.reset_to(&s).unwrap();
        for t in 0..200 {
            // Bang-bang actions hit the walls hard.
            let a = [
                if r.random::<bool>() { 1.0 } else { -1.0 },
                r.random_range(-3.0..3.0f32),
            ];
            e.step(&a).unwrap();
            let q = e.state();
            assert!(
                e.is_free(q[0], q[1]),
                "episode {ep} step {t}: {q:?} overlaps a wall"
            );
            assert!((0.4 - 1e-3..=3.2 + 1e-3).contains(&q[0]), "{q:?}");
            assert!((0.4 - 1e-3..=3.2 + 1e-3).contains(&q[1]), "{q:?}");
            // The middle wall block (x in (1.2, 2.4), y < 2.4 away from its rounded corners)
            // is never entered.
            assert!(
                !(q[0] > 1.2 + 1e-3 && q[0] < 2.4 - 1e-3 && q[1] < 2.3),
                "{q:?}"
            );
        }
    }
}

#[test]
fn pointmaze_dynamics_and_success() {
    let mut e = pointmaze::PointMaze::new();
    e.reset_to(&[0.8, 1.5, 0.0, 0.0]).unwrap();
    e.step(&[0.0, 1.0]).unwrap();
    let s = e.state();
    assert!(
        s[3] > 0.5 && s[1] > 1.5 && (s[0] - 0.8).abs() < 1e-6,
        "force pushes along +y: {s:?}"
    );
    // Actions are clipped to [-1, 1].
    let mut e2 = pointmaze::PointMaze::new();
    e2.reset_to(&[0.8, 1.5, 0.0, 0.0]).unwrap();
    e2.step(&[0.0, 7.0]).unwrap();
    assert_eq!(e2.state(), s);
    // Damping slows a free ball.
    e.reset_to(&[0.8, 1.5, 0.0, 2.0]).unwrap();
    e.step(&[0.0, 0.0]).unwrap();
    assert!(e.state()[3] < 2.0 && e.state()[3] > 1.9);
    assert!(e.is_success(&[1.0, 1.0, 3.0, 3.0], &[1.3, 1.3, -3.0, 0.0]));
    assert!(!e.is_success(&[1.0, 1.0, 0.0, 0.0], &[1.3, 1.45, 0.0, 0.0]));
    for seed in 0..50 {
        let (s, g) = e.sample_start_goal(seed);
        assert!(e.is_free(s[0], s[1]) && e.is_free(g[0], g[1]));
    }
}

#[test]
fn pointmaze_render_pixels() {
    let e = pointmaze::PointMaze::new();
    let size = 224;
    let f = e.render_state(&[0.8, 0.8, 0.0, 0.0], size).unwrap();
    // View: joint coordinates [1.8 - 4.142, 1.8 + 4.142] on both axes.
    let px = |v: f32| ((v - (1.8 - 4.142_136)) / (2.0 * 4.142_136) * size as f32) as usize;
    assert_eq!(f.pixel(px(0.8), px(0.8)), [76, 153, 76], "green ball");
    assert_eq!(
        f.pixel(px(1.8), px(0.8)),
        [178, 127, 76],
        "wall in the middle of the U"
    );
    let floor = f.pixel(px(1.0), px(2.0));
    assert!(
        floor == [51, 76, 102] || floor == [25, 51, 76],
        "floor {floor:?}"
    );
    assert_eq!(f.pixel(px(-0.2), px(1.8)), [178, 127, 76], "outer wall");
}

#[test]
fn pusht_pushes_block_and_stays_in_workspace() {
    let mut e = pusht::PushT::new();
    // Agent below the stem tip, moving up pushes the block up.
    e.reset_to(&[256.0, 440.0, 256.0, 300.0, 0.0, 0.0, 0.0])
        .unwrap();
    for _ in 0..5 {
        e.step(&[0.0, -0.5]).unwrap();
    }
    let s = e.state();
    assert!(s[3] < 290.0, "block pushed up: {s:?}");
    assert!((s[2] - 256.0).abs() < 5.0, "straight push keeps x: {s:?}");
    // Without contact the block does not move and the agent tracks its target.
    e.reset_to(&[100.0, 100.0, 300.0, 300.0, 1.0, 0.0, 0.0])
        .unwrap();
    e.step(&[0.3, 0.0]).unwrap();
    let s = e.state();
    assert_eq!(&s[2..5], &[300.0, 300.0, 1.0]);
    // Critically damped PD (k_p 100, k_v 20) from rest covers 1 - 2/e of the way in 0.1 s.
    let expect = 100.0 + 30.0 * (1.0 - 2.0 * (-1.0f32).exp());
    assert!(
        (s[0] - expect).abs() < 1.5 && (s[1] - 100.0).abs() < 1e-3,
        "{s:?}"
    );
    assert!(s[5] > 50.0, "agent still moving: {s:?}");
    // Random large actions never leave the workspace.
    let mut r = rng(3);
    for ep in 0..4 {
        let s0 = pusht::sample_state(&mut r);
        e.reset_to(&s0).unwrap();
        for t in 0..60 {
            let a = [r.random_range(-3.0..3.0f32), r.random_range(-3.0..3.0f32)];
            e.step(&a).unwrap();
            let s = e.state();
            assert!(s.iter().all(|v| v.is_finite()), "{s:?}");
            for k in 0..4 {
                assert!(
                    (0.0..=512.0).contains(&s[k]),
                    "episode {ep} step {t}: {s:?}"
                );
            }
            assert!((15.0..=497.0).contains(&s[0]) && (15.0..=497.0).contains(&s[1]));
            assert!((0.0..std::f32::consts::TAU).contains(&s[4]));
            e.reset_to(&s)
                .expect("every reached state is a valid state");
        }
    }
}

#[test]
fn pusht_success_criterion() {
    let e = pusht::PushT::new();
    let g = [200.0, 200.0, 300.0, 300.0, 0.05, 0.0, 0.0];
    assert!(e.is_success(&[210.0, 205.0, 305.0, 300.0, 6.2, 50.0, 50.0], &g)); // angle wraps
    assert!(!e.is_success(&[215.0, 210.0, 310.0, 300.0, 0.05, 0.0, 0.0], &g)); // 20.6 px
    assert!(!e.is_success(&g, &[200.0, 200.0, 300.0, 300.0, 0.05 + 0.36, 0.0, 0.0])); // > pi/9
    assert!(e.is_success(&g, &[200.0, 200.0, 300.0, 300.0, 0.05 + 0.34, 0.0, 0.0]));
    assert!(e.state_distance(&g, &g) == 0.0);
}

#[test]
fn pusht_render_pixels() {
    let e = pusht::PushT::new();
    let size = 224;
    let k = size as f32 / 512.0;
    let s = [100.0, 420.0, 380.0, 100.0, 0.0, 0.0, 0.0];
    let f = e.render_state(&s, size).unwrap();
    let at = |x: f32, y: f32| f.pixel((x * k) as usize, (y * k) as usize);
    assert_eq!(at(100.0, 420.0), [78, 126, 255], "agent centre is blue");
    assert_eq!(at(380.0, 115.0), [142, 163, 183], "block bar is grey");
    assert_eq!(
        at(380.0, 180.0),
        [142, 163, 183],
        "block stem (below the bar at angle 0) is grey"
    );
    assert_eq!(
        at(330.0, 180.0),
        [255, 255, 255],
        "beside the stem is background"
    );
    assert_eq!(
        at(203.0, 309.0),
        [144, 238, 144],
        "goal T stem (rotated pi/4) is light green"
    );
    assert_eq!(at(60.0, 60.0), [255, 255, 255], "background is white");
    let w = at(5.0, 300.0);
    assert!(
        w[0] < 240 && w[0] == w[1] && w[1] == w[2],
        "wall is light grey: {w:?}"
    );
}

fn run(name: &str, seed: u64, steps: usize) -> (Vec<Vec<f32>>, Vec<u8>) {
    let mut e = env::make(name).unwrap();
    let mut pol = env::policy::for_env(name).unwrap();
    let mut r = env::rng(seed);
    e.reset_to(&pol.start_state(&mut r)).unwrap();
    let mut states = vec![e.state()];
    for _ in 0..steps {
        let a = pol.act(&e.state(), &mut r);
        e.step(&a).unwrap();
        states.push(e.state());
    }
    (states, e.render(64).data)
}

#[test]
fn deterministic_for_a_seed() {
    for n in env::ENV_NAMES {
        let (a, fa) = run(n, 7, 30);
        let (b, fb) = run(n, 7, 30);
        assert_eq!(a, b, "{n}: same seed, different trajectory");
        assert_eq!(fa, fb);
        let (c, _) = run(n, 8, 30);
        assert_ne!(a, c, "{n}: different seeds gave the same trajectory");
        let e = env::make(n).unwrap();
        assert_eq!(e.sample_start_goal(99), e.sample_start_goal(99));
        assert_ne!(e.sample_start_goal(99), e.sample_start_goal(100));
    }
}

#[test]
fn stepping_is_a_function_of_state_and_action() {
    // Resetting to an observed state and stepping gives the continuing trajectory.
    for n in env::ENV_NAMES {
        let mut e = env::make(n).unwrap();
        let mut pol = env::policy::for_env(n).unwrap();
        let mut r = env::rng(5);
        e.reset_to(&pol.start_state(&mut r)).unwrap();
        for _ in 0..10 {
            let a = pol.act(&e.state(), &mut r);
            e.step(&a).unwrap();
        }
        let s = e.state();
        let a = pol.act(&s, &mut r);
        e.step(&a).unwrap();
        let mut f = env::make(n).unwrap();
        f.reset_to(&s).unwrap();
        f.step(&a).unwrap();
        assert_eq!(e.state(), f.state(), "{n}");
        assert_eq!(f.step_state(&s, &a).unwrap(), e.state(), "{n}");
    }
}

#[test]
fn batched_step_matches_sequential() {
    for n in env::ENV_NAMES {
        let proto = env::make(n).unwrap();
        let mut envs: Vec<Box<dyn Env>> = (0..6)
            .map(|i| {
                let mut e = proto.clone();
                e.reset_to(&proto.sample_start_goal(i).0).unwrap();
                e
            })
            .collect();
        let mut seq = envs.clone();
        let actions: Vec<Vec<f32>> = (0..6).map(|i| vec![0.1 * i as f32, -0.2]).collect();
        env::step_batch(&mut envs, &actions).unwrap();
        for (e, a) in seq.iter_mut().zip(&actions) {
            e.step(a).unwrap();
        }
        for (a, b) in envs.iter().zip(&seq) {
            assert_eq!(a.state(), b.state());
        }
        let frames = env::render_batch(&envs, 32);
        assert_eq!(frames.len(), 6);
        // A NaN anywhere rejects the whole batch before anything moves.
        let before: Vec<_> = envs.iter().map(|e| e.state()).collect();
        let mut bad = actions.clone();
        bad[4][1] = f32::NAN;
        let msg = env::step_batch(&mut envs, &bad).err().unwrap().to_string();
        assert!(msg.contains("batch item 4"), "{msg}");
        assert_eq!(envs.iter().map(|e| e.state()).collect::<Vec<_>>(), before);
    }
}

#[test]
fn invalid_actions_and_states_are_rejected() {
    for n in env::ENV_NAMES {
        let mut e = env::make(n).unwrap();
        let s0 = e.state();
        let m = invalid_msg(e.step(&[f32::NAN, 0.0]));
        assert!(m.contains("action[0]") && m.contains("NaN"), "{m}");
        let m = invalid_msg(e.step(&[0.0, f32::INFINITY]));
        assert!(m.contains("action[1]") && m.contains("inf"), "{m}");
        let m = invalid_msg(e.step(&[0.0]));
        assert!(m.contains("expected 2"), "{m}");
        assert_eq!(e.state(), s0, "a rejected action must not move the env");
        let mut bad = s0.clone();
        bad[1] = f32::NAN;
        assert!(invalid_msg(e.reset_to(&bad)).contains("state[1]"));
        let mut far = s0.clone();
        far[0] = 1.0e4;
        let m = invalid_msg(e.reset_to(&far));
        assert!(
            m.contains("outside the workspace") && m.contains("valid range"),
            "{m}"
        );
        assert!(invalid_msg(e.reset_to(&s0[..1])).contains("expected"));
        assert!(e.render_state(&far, 64).is_err());
        assert_eq!(e.state(), s0);
    }
    let mut w = wall::Wall::new();
    let m = invalid_msg(w.reset_to(&[32.0, 10.0]));
    assert!(m.contains("inside the wall"), "{m}");
    w.reset_to(&[32.0, 30.0]).unwrap(); // in the door
    let mut p = pointmaze::PointMaze::new();
    let m = invalid_msg(p.reset_to(&[1.8, 1.0, 0.0, 0.0]));
    assert!(m.contains("overlaps a wall"), "{m}");
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("qwm-env-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn dataset_roundtrip_resume_and_mismatch() {
    let dir = temp_dir("ds");
    let cfg = CollectConfig {
        env: "wall".into(),
        episodes: 5,
        steps: 6,
        seed: 11,
        size: Some(32),
        shard_episodes: Some(2),
    };
    let mut calls = 0;
    let rep = dataset::collect(&cfg, &dir, |_, _| calls += 1).unwrap();
    assert!(calls >= 3);
    let m = &rep.manifest;
    assert!(m.complete);
    assert_eq!((m.num_shards, m.shards.len()), (3, 3));
    assert!(dir.join("shard_00002.safetensors").exists());
    let ds = Dataset::open(&dir).unwrap();
    assert_eq!(ds.len(), 5);
    let eps = ds.episodes().unwrap();
    let e = wall::Wall::new();
    for (i, ep) in eps.iter().enumerate() {
        assert_eq!(ep.index, i);
        assert_eq!(ep.frames.len(), 7 * 32 * 32 * 3);
        assert_eq!(ep.actions.len(), 6 * 2);
        assert_eq!(ep.states.len(), 7 * 2);
        assert_eq!(ep.proprio, ep.states);
        // Frames are the renders of the stored states; states follow the actions.
        for t in 0..7 {
            let s = &ep.states[t * 2..t * 2 + 2];
            assert_eq!(ep.frame(t), e.render_state(s, 32).unwrap());
            if t < 6 {
                let a = [ep.actions[t * 2], ep.actions[t * 2 + 1]];
                assert_eq!(
                    wall::Wall::transition([s[0], s[1]], a).to_vec(),
                    ep.states[t * 2 + 2..t * 2 + 4]
                );
            }
        }
    }
    assert_eq!(ds.episode(3).unwrap(), eps[3]);
    // Statistics over all actions.
    let all: Vec<f32> = eps
        .iter()
        .flat_map(|e| e.actions.iter().step_by(2).copied())
        .collect();
    let mean = all.iter().sum::<f32>() / all.len() as f32;
    assert!((m.action_mean[0] - mean).abs() < 1e-4);
    assert!(m.action_std[0] > 0.1);
    let (s, g) = ds.sample_start_goal(0, 3).unwrap();
    assert_eq!((s.len(), g.len()), (2, 2));

    // Interrupt: forget the last shard and corrupt the second one; a rerun regenerates them
    // and produces identical data.
    let mut mm = dataset::read_manifest(&dir).unwrap();
    mm.shards.truncate(2);
    mm.complete = false;
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string(&mm).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("shard_00001.safetensors"), b"garbage").unwrap();
    let rep2 = dataset::collect(&cfg, &dir, |_, _| {}).unwrap();
    assert_eq!(rep2.resumed_shards, 1);
    assert_eq!(rep2.manifest, rep.manifest);
    assert_eq!(Dataset::open(&dir).unwrap().episodes().unwrap(), eps);
    // Byte for byte what an uninterrupted run writes.
    let dir3 = temp_dir("ds3");
    dataset::collect(&cfg, &dir3, |_, _| {}).unwrap();
    for f in [
        "manifest.json",
        "shard_00000.safetensors",
        "shard_00001.safetensors",
        "shard_00002.safetensors",
    ] {
        let (a, b) = (
            std::fs::read(dir.join(f)).unwrap(),
            std::fs::read(dir3.join(f)).unwrap(),
        );
        assert!(a == b, "{f} differs between a resumed and a fresh run");
    }
    let _ = std::fs::remove_dir_all(&dir3);

    // A different configuration in the same directory is refused.
    let other = CollectConfig {
        seed: 12,
        ..cfg.clone()
    };
    let err = dataset::collect(&other, &dir, |_, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("pick another --out or delete it"), "{err}");

    // The same episodes with another shard size: identical data (episode i depends on
    // (seed, i) only).
    let dir2 = temp_dir("ds2");
    let cfg2 = CollectConfig {
        shard_episodes: Some(5),
        ..cfg
    };
    dataset::collect(&cfg2, &dir2, |_, _| {}).unwrap();
    assert_eq!(Dataset::open(&dir2).unwrap().episodes().unwrap(), eps);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dir2);
}

#[test]
fn datasets_for_pointmaze_and_pusht() {
    for (n, size) in [("pointmaze", 64usize), ("pusht", 64)] {
        let dir = temp_dir(n);
        let cfg = CollectConfig {
            env: n.into(),
            episodes: 2,
            steps: 4,
            seed: 3,
            size: None,
            shard_episodes: None,
        };
        let rep = dataset::collect(&cfg, &dir, |_, _| {}).unwrap();
        assert_eq!(rep.manifest.image_size, size);
        let ds = Dataset::open(&dir).unwrap();
        let ep = ds.episode(1).unwrap();
        let spec = env::spec(n).unwrap();
        assert_eq!(ep.frames.len(), 5 * size * size * 3);
        assert_eq!(ep.proprio.len(), 5 * spec.proprio_dim);
        assert_eq!(ep.states.len(), 5 * spec.state_dim);
        assert_eq!(rep.manifest.proprio_mean.len(), spec.proprio_dim);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
