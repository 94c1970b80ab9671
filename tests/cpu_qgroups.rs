//! Weight-only specs on the integer tiles (`WeightOnly::Int8`, `cpu::qgroups`): the
//! activation codes against their definition, the outputs against the same arithmetic done
//! in f64 from those codes (within 1e-3 relative after accumulation), every ISA bit for bit
//! the same, how far they are from the exact float path, NaN inputs, bad inputs, and a whole
//! model on them.

use qwm::cpu::qlinear::{self, IntPanels, Isa, Panels, Post, WeightOnly, ACT_GROUP};
use qwm::model::quantized::quantize_model;
use qwm::model::{CpuModel, ModelConfig, ObjectiveMode, Weights, WorldModel};
use qwm::quant::{self, PackedWeight, QuantContext, WeightSpec};
use qwm::tensor::{randn, rel_error};

fn quantize(asym: bool, w: &[f32], n: usize, k: usize, bits: u8, g: Option<usize>) -> PackedWeight {
    let spec = WeightSpec { bits, group: g };
    match asym {
        true => quant::rtn_asymmetric(w, n, k, &spec).unwrap(),
        false => quant::method("rtn")
            .unwrap()
            .quantize(w, n, k, &spec, &QuantContext::default())
            .unwrap(),
    }
}

fn bits_eq(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits())
}

/// `x` through the group path on `isa` (panels built for it).
fn run(x: &[f32], pw: &PackedWeight, b: Option<&[f32]>, post: Post<'_>, isa: Isa) -> Vec<f32> {
    let p = Panels::new(pw, isa, false, WeightOnly::Int8).unwrap();
    assert!(matches!(p, Some(Panels::Int(ref ip)) if ip.groups()));
    // AVX-512 holds codes of up to 4 bits two to a byte (and must agree with the byte panels
    // of the other ISAs bit for bit).
    if let Some(Panels::Int(ip)) = &p {
        let big = pw.n * pw.k >= qlinear::NIBBLE_MIN_CODES;
        assert_eq!(ip.nibbles(), isa == Isa::Avx512 && pw.bits <= 4 && big);
    }
    qlinear::qlinear_with(x, pw, p.as_ref(), b, None, post, isa).unwrap()
}

/// The same quantized inputs and weights multiplied in f64: `b + sum (s sa) (c - z) sw`.
fn reference(x: &[f32], pw: &PackedWeight, b: &[f32]) -> Vec<f32> {
    let k = pw.k;
    let (codes, scales) = qlinear::act_group_codes(x, k);
    let w = pw.dequantize();
    let groups = k.div_ceil(ACT_GROUP);
    let m = x.len() / k;
    let mut y = vec![0f32; m * pw.n];
    for t in 0..m {
        for r in 0..pw.n {
            let mut acc = b[r] as f64;
            for kk in 0..k {
                let xq = (codes[t * k + kk] as f64 - 128.0) * scales[t * groups + kk / 32] as f64;
                acc += xq * w[r * k + kk] as f64;
            }
            y[t * pw.n + r] = acc as f32;
        }
    }
    y
}

#[test]
fn activation_codes_follow_their_definition() {
    let k = 77;
    let mut x = randn(5 * k, 1.5, 3);
    // A group of zeros (scale 0, codes 128) and a group with one huge value.
    x[32..64].iter_mut().for_each(|v| *v = 0.0);
    x[k + 40] = 1e30;
    let (codes, scales) = qlinear::act_group_codes(&x, k);
    let groups = k.div_ceil(ACT_GROUP);
    assert_eq!((codes.len(), scales.len()), (5 * k, 5 * groups));
    for t in 0..5 {
        for g in 0..groups {
            let xs = &x[t * k + g * 32..t * k + ((g + 1) * 32).min(k)];
            let m = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = scales[t * groups + g];
            assert_eq!(
                s.to_bits(),
                (m * (1.0 / 127.0)).to_bits(),
                "token {t} group {g}"
            );
            for (i, v) in xs.iter().enumerate() {
                let want = match m > 0.0 {
                    true => (v * (127.0 / m)).round_ties_even().clamp(-127.0, 127.0) + 128.0,
                    false => 128.0,
                };
                assert_eq!(
                    codes[t * k + g * 32 + i] as f32,
                    want,
                    "token {t} input {i}"
                );
            }
        }
    }
    assert!(codes[32..64].iter().all(|c| *c == 128));
    assert_eq!(codes[k + 40], 255);
}

#[test]
fn group_path_matches_its_arithmetic_on_every_isa() {
    let mut seed = 40;
    // (M, N, K): not multiples of the 8-token tile, the 16/32-row panels or 32 inputs; the
    // last is large enough for nibble panels on AVX-512.
    for (m, n, k) in [
        (1, 3, 5),
        (37, 13, 403),
        (301, 9, 97),
        (3, 70, 33),
        (203, 45, 64),
        (9, 521, 517),
    ] {
        seed += 1;
        let x = randn(m * k, 1.0, seed);
        let w = randn(n * k, 0.05, seed + 1000);
        let b = randn(n, 0.1, seed + 2000);
        for bits in [2u8, 3, 4, 6] {
            for group in [None, Some(32), Some(64), Some(128)] {
                if group.is_some_and(|g| g > k) {
                    continue;
                }
                for asym in [false, true] {
                    let pw = quantize(asym, &w, n, k, bits, group);
                    let want = reference(&x, &pw, &b);
                    let mut first: Option<Vec<f32>> = None;
                    for isa in Isa::available() {
                        let got = run(&x, &pw, Some(&b), Post::None, isa);
                        let e = rel_error(&got, &want);
                        let what = format!("{m}x{n}x{k} w{bits} g{group:?} asym {asym} {isa:?}");
                        assert!(e <= 1e-3, "{what}: rel error {e:e}");
                        match &first {
                            None => first = Some(got),
                            Some(f) => assert!(bits_eq(f, &got), "{what}: differs from portable"),
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn group_path_posts_match_the_plain_output() {
    let (m, n, k) = (29, 37, 96);
    let x = randn(m * k, 1.0, 7);
    let w = randn(n * k, 0.05, 8);
    let b = randn(n, 0.1, 9);
    let r = randn(m * n, 1.0, 10);
    let pw = quantize(true, &w, n, k, 4, Some(32));
    for isa in Isa::available() {
        let plain = run(&x, &pw, Some(&b), Post::None, isa);
        let gelu = run(&x, &pw, Some(&b), Post::Gelu, isa);
        let t = qwm::cpu::tensor(&plain, &[m, n]).unwrap();
        let want = qwm::cpu::to_vec(&qwm::cpu::gelu(&t).unwrap()).unwrap();
        assert!(bits_eq(&gelu, &want), "{isa:?}: GELU after the linear");
        let res = run(&x, &pw, Some(&b), Post::Residual(&r), isa);
        let want: Vec<f32> = plain.iter().zip(&r).map(|(y, r)| r + y).collect();
        assert!(bits_eq(&res, &want), "{isa:?}: residual after the linear");
        let nob = run(&x, &pw, None, Post::None, isa);
        assert!(rel_error(&nob, &reference(&x, &pw, &vec![0.0; n])) <= 1e-3);
    }
}

/// How far the group path moves outputs from the exact float path (the spec's numerics):
/// well under the 4-bit weights' own error, and it is reported.
#[test]
fn group_path_stays_close_to_the_exact_path() {
    let (m, n, k) = (64, 96, 192);
    let x = randn(m * k, 1.0, 21);
    let w = randn(n * k, 0.05, 22);
    let b = randn(n, 0.1, 23);
    let pw = quantize(true, &w, n, k, 4, Some(32));
    let isa = Isa::detect();
    let exact = qlinear::qlinear(&x, &pw, Some(&b), None, isa).unwrap();
    let fast = run(&x, &pw, Some(&b), Post::None, isa);
    let e = rel_error(&fast, &exact);
    // The 4-bit weights' own error, for scale: the float weights against the exact path.
    let wt: Vec<f32> = (0..m)
        .flat_map(|t| {
            let (x, w, b) = (&x, &w, &b);
            (0..n).map(move |r| b[r] + (0..k).map(|i| x[t * k + i] * w[r * k + i]).sum::<f32>())
        })
        .collect();
    let e_w = rel_error(&exact, &wt);
    println!("int8 groups vs exact: {e:.2e}; 4-bit weights vs float: {e_w:.2e}");
    assert!(e > 0.0 && e < 1e-2, "int8 groups vs exact path: {e:e}");
    assert!(
        e < e_w / 5.0,
        "activation rounding {e:e} vs weight rounding {e_w:e}"
    );
}

#[test]
fn a_nan_input_makes_its_token_nan_only() {
    let (m, n, k) = (9, 20, 64);
    let mut x = randn(m * k, 1.0, 5);
    x[3 * k + 40] = f32::NAN;
    x[5 * k + 2] = f32::INFINITY;
    let pw = quantize(false, &randn(n * k, 0.05, 6), n, k, 4, Some(32));
    for isa in Isa::available() {
        let y = run(&x, &pw, None, Post::None, isa);
        for t in 0..m {
            let row = &y[t * n..(t + 1) * n];
            match t {
                3 | 5 => assert!(row.iter().all(|v| v.is_nan()), "{isa:?}: token {t}"),
                _ => assert!(row.iter().all(|v| v.is_finite()), "{isa:?}: token {t}"),
            }
        }
    }
}

#[test]
fn eight_bit_weights_and_bad_settings_are_refused_or_run_exactly() {
    let (n, k) = (5, 40);
    let pw = quantize(true, &randn(n * k, 0.05, 1), n, k, 8, Some(32));
    let e = IntPanels::for_groups(&pw, Isa::Portable)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("8-bit") && e.contains("at most 7-bit"), "{e}");
    // With int8 asked for, an 8-bit weight-only linear keeps the exact float path.
    let p = Panels::new(&pw, Isa::detect(), false, WeightOnly::Int8).unwrap();
    assert!(!matches!(p, Some(Panels::Int(_))));
    let e = "fast".parse::<WeightOnly>().err().unwrap().to_string();
    assert!(
        e.contains("QWM_CPU_WEIGHT_ONLY") && e.contains("exact"),
        "{e}"
    );
    assert_eq!("INT8".parse::<WeightOnly>().unwrap(), WeightOnly::Int8);
}

/// A whole model on the group path: deterministic, and its planning costs close to the
/// exact path's.
#[test]
fn a_model_on_the_group_path_plans_close_to_the_exact_one() {
    let w = Weights::random(&ModelConfig::tiny(), 5).unwrap();
    let q = quantize_model(&w, &"w4g32".parse().unwrap(), "rtn", None).unwrap();
    let cfg = &w.config;
    let (n, de, b, h) = (cfg.patches(), cfg.visual_dim(), 37, 3);
    let costs = |m: &CpuModel| {
        let z0 = m.upload(&randn(n * de, 1.0, 3), &[1, n, de]).unwrap();
        let p0 = m
            .upload(&randn(cfg.proprio_dim, 1.0, 4), &[1, cfg.proprio_dim])
            .unwrap();
        let a = randn(b * h * cfg.action_in(), 1.0, 5);
        let a = m.upload(&a, &[b, h, cfg.action_in()]).unwrap();
        let gv = m.upload(&randn(n * de, 1.0, 6), &[n, de]).unwrap();
        let gp = m
            .upload(&randn(cfg.proprio_emb, 1.0, 7), &[cfg.proprio_emb])
            .unwrap();
        let r = m.rollout(&z0, &p0, &a).unwrap();
        let c = m.objective(&r, &gv, &gp, ObjectiveMode::Last, 1.0).unwrap();
        m.download(&c).unwrap()
    };
    let exact = costs(&CpuModel::new_quantized(&q).unwrap());
    let fast_model = CpuModel::new_quantized_with(&q, WeightOnly::Int8).unwrap();
    let (fast, again) = (costs(&fast_model), costs(&fast_model));
    assert!(bits_eq(&fast, &again), "the group path is deterministic");
    let err = rel_error(&fast, &exact);
    println!("tiny w4g32 costs, int8 groups vs exact: {err:.2e}");
    assert!(
        err > 0.0 && err < 2e-2,
        "costs, int8 groups vs exact: {err:e}"
    );
}

#[path = "common/cli.rs"]
mod cli;

/// `plan` on the group path end to end, a bad `QWM_CPU_WEIGHT_ONLY` refused by name, an
/// evaluation report not resumed across the two numerics, `bench plan`'s own row, and the
/// study refusing to run weight-only cells on int8 inputs.
#[test]
fn the_cli_runs_the_group_path_and_refuses_bad_or_misplaced_settings() {
    let d = cli::dir("qgroups", "cli");
    // One untrained model, one short plan: what `plan` and `eval` share.
    let args = |cmd: &str, more: &[&str]| -> Vec<String> {
        let base = [
            cmd,
            "--env",
            "wall",
            "--model",
            "random",
            "--quant",
            "w4g32",
            "--backend",
            "cpu",
            "--max-iter",
            "1",
            "--opt-steps",
            "1",
            "--samples",
            "8",
            "--topk",
            "2",
        ];
        base.iter().chain(more).map(|a| a.to_string()).collect()
    };
    let run = |a: &[String], env: &[(&str, &str)]| {
        cli::qwm_env(&a.iter().map(String::as_str).collect::<Vec<_>>(), env)
    };
    let plan = args("plan", &["--out", d.join("plan").to_str().unwrap()]);
    let r = run(&plan, &[("QWM_CPU_WEIGHT_ONLY", "int8")]);
    assert_eq!(r.0, 0, "plan on int8 inputs: {}", r.2);
    assert!(!r.2.contains("not a variable qwm reads"), "{}", r.2);
    let r = run(&plan, &[("QWM_CPU_WEIGHT_ONLY", "fast")]);
    cli::refused(&r, &["QWM_CPU_WEIGHT_ONLY", "fast", "exact", "int8"]);
    // An evaluation report records the numerics: one begun on the exact path is not resumed
    // on int8 inputs.
    let json = d.join("eval.json");
    let eval = |episodes: &str| {
        args(
            "eval",
            &["--episodes", episodes, "--json", json.to_str().unwrap()],
        )
    };
    let r = run(&eval("1"), &[]);
    assert_eq!(r.0, 0, "eval on the exact path: {}", r.2);
    let r = run(&eval("2"), &[("QWM_CPU_WEIGHT_ONLY", "int8")]);
    cli::refused(
        &r,
        &[
            "eval.json",
            "\"cpu\" -> \"cpu (weight-only on int8 inputs)\"",
        ],
    );
    // `bench plan` gives such a step a row of its own.
    let bj = d.join("bench.json");
    let bench = [
        "bench",
        "plan",
        "--skip-gpu",
        "--reps",
        "1",
        "--samples",
        "16",
        "--quant",
        "w4g32",
        "--json",
        bj.to_str().unwrap(),
        "--force",
    ];
    let r = cli::qwm_env(&bench, &[("QWM_CPU_WEIGHT_ONLY", "int8")]);
    assert_eq!(r.0, 0, "bench plan on int8 inputs: {}", r.2);
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&bj).unwrap()).unwrap();
    let rows = j["results"].as_array().unwrap();
    let cpu = rows.iter().find(|r| r["device"] == "cpu").unwrap();
    assert!(cpu["name"]
        .as_str()
        .unwrap()
        .ends_with("(weight-only on int8 inputs)"));
    assert_eq!(cpu["extra"]["cpu_weight_only"], "int8");
    let study = d.join("study");
    let args = [
        "study",
        "run",
        "smoke",
        "--out",
        study.to_str().unwrap(),
        "--backend",
        "cpu",
    ];
    let r = cli::qwm_env(&args, &[("QWM_CPU_WEIGHT_ONLY", "int8")]);
    cli::refused(
        &r,
        &["QWM_CPU_WEIGHT_ONLY=int8", "float inputs", "unset it"],
    );
    let _ = std::fs::remove_dir_all(&d);
}
