//! The packed CPU linears (`cpu::qlinear`) against the fake-quant reference (dequantized
//! weights, quantize-dequantize activations, candle f32 matmul): decoded weights bit for bit,
//! outputs within 1e-3 relative, on shapes that are not multiples of any block, every
//! bit-width, per-channel and grouped, symmetric and asymmetric, weight-only and A8/A6
//! (dynamic and static); and the AVX2 kernels against the portable ones.

use qwm::cpu::{self, qlinear};
use qwm::quant::{self, act, ActParams, ActSpec, PackedWeight, QuantContext, WeightSpec};
use qwm::tensor::{randn, rel_error};

const Q_TOL: f64 = 1e-3;

fn quantize(
    asym: bool,
    w: &[f32],
    n: usize,
    k: usize,
    bits: u8,
    group: Option<usize>,
) -> PackedWeight {
    let spec = WeightSpec { bits, group };
    if asym {
        quant::rtn_asymmetric(w, n, k, &spec).unwrap()
    } else {
        quant::method("rtn")
            .unwrap()
            .quantize(w, n, k, &spec, &QuantContext::default())
            .unwrap()
    }
}

/// The fake-quant reference: what `CpuLinear` computed before packed kernels.
fn reference(
    x: &[f32],
    pw: &PackedWeight,
    b: &[f32],
    act_q: Option<(&ActSpec, Option<&ActParams>)>,
) -> Vec<f32> {
    let mut xv = x.to_vec();
    if let Some((spec, p)) = act_q {
        act::fake_quant(&mut xv, pw.k, spec, p).unwrap();
    }
    let m = x.len() / pw.k;
    let xt = cpu::tensor(&xv, &[m, pw.k]).unwrap();
    let wt = cpu::tensor(&pw.dequantize(), &[pw.n, pw.k]).unwrap();
    let bt = cpu::tensor(b, &[pw.n]).unwrap();
    cpu::to_vec(&cpu::matmul(&xt, &wt, Some(&bt)).unwrap()).unwrap()
}

fn bits_eq(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits())
}

/// Every kernel set this CPU runs (portable, AVX2, AVX-512 VNNI), portable first.
fn isas() -> Vec<qlinear::Isa> {
    qlinear::Isa::available()
}

#[test]
fn decoded_rows_match_dequantize_bit_for_bit() {
    let (n, k) = (5, 403);
    let w = randn(n * k, 0.05, 11);
    for bits in [2u8, 3, 4, 6, 8] {
        for group in [None, Some(32), Some(128)] {
            for asym in [false, true] {
                let pw = quantize(asym, &w, n, k, bits, group);
                let dq = pw.dequantize();
                let kp = pw.k_pad();
                let mut codes = vec![0u32; kp];
                for r in 0..n {
                    let mut row = vec![0f32; kp];
                    qlinear::decode_row_f32(&pw, r, &mut codes, &mut row);
                    for kk in 0..k {
                        assert_eq!(
                            row[kk].to_bits(),
                            dq[r * k + kk].to_bits(),
                            "bits {bits} group {group:?} asym {asym} at ({r}, {kk})"
                        );
                    }
                    assert!(row[k..].iter().all(|v| *v == 0.0), "padding decodes to 0");
                }
            }
        }
    }
}

#[test]
fn packed_linears_match_the_fake_quant_reference() {
    let mut seed = 100;
    // (M, N, K): not multiples of the 8-token tile, the 16/32-row panels or 32 codes; one
    // long enough for several token chunks.
    for (m, n, k) in [
        (1, 3, 5),
        (37, 13, 403),
        (301, 9, 97),
        (3, 70, 33),
        (1203, 45, 64),
    ] {
        seed += 1;
        let x = randn(m * k, 1.0, seed);
        let w = randn(n * k, 0.05, seed + 1000);
        let b = randn(n, 0.1, seed + 2000);
        let stat = act::ActStats {
            min: -2.5,
            max: 3.0,
            count: 1,
        }
        .params(8, "x")
        .unwrap();
        for bits in [2u8, 3, 4, 6, 8] {
            for group in [None, Some(32), Some(64)] {
                if group.is_some_and(|g| g > k) {
                    continue;
                }
                for asym in [false, true] {
                    let pw = quantize(asym, &w, n, k, bits, group);
                    let dyn8 = ActSpec {
                        bits: 8,
                        dynamic: true,
                    };
                    let st8 = ActSpec {
                        bits: 8,
                        dynamic: false,
                    };
                    let dyn6 = ActSpec {
                        bits: 6,
                        dynamic: true,
                    };
                    let acts: [Option<(&ActSpec, Option<&ActParams>)>; 4] = [
                        None,
                        Some((&dyn8, None)),
                        Some((&st8, Some(&stat))),
                        Some((&dyn6, None)),
                    ];
                    for a in acts {
                        let want = reference(&x, &pw, &b, a);
                        let mut outs = Vec::new();
                        for isa in isas() {
                            let got = qlinear::qlinear(&x, &pw, Some(&b), a, isa).unwrap();
                            let e = rel_error(&got, &want);
                            assert!(
                                e <= Q_TOL,
                                "[{m}, {n}, {k}] bits {bits} group {group:?} asym {asym} \
                                 act {a:?} {isa:?}: rel error {e}"
                            );
                            // Panels laid out once (as `CpuModel` holds them: int for A8
                            // and A6, nibbles for 4-bit weight-only) give the bits of
                            // panels decoded per call; another ISA's panels do not fit and
                            // are decoded again.
                            let mut panels =
                                qlinear::Panels::new(&pw, isa, a.is_some(), Default::default())
                                    .unwrap();
                            let held = if a.is_some() { bits == 8 } else { bits == 4 };
                            assert_eq!(panels.is_some(), held);
                            if a.is_some() {
                                // Int panels of every bit-width (held only for 8 bits).
                                panels = Some(qlinear::Panels::Int(
                                    qlinear::IntPanels::new(&pw, isa).unwrap(),
                                ));
                            }
                            for other in isas() {
                                let y = qlinear::qlinear_with(
                                    &x,
                                    &pw,
                                    panels.as_ref(),
                                    Some(&b),
                                    a,
                                    qlinear::Post::None,
                                    other,
                                )
                                .unwrap();
                                let per_call = qlinear::qlinear(&x, &pw, Some(&b), a, other);
                                assert!(
                                    bits_eq(&y, &per_call.unwrap()),
                                    "[{m}, {n}, {k}] bits {bits} group {group:?} act {a:?}: \
                                     {isa:?} panels on {other:?}"
                                );
                            }
                            outs.push(got);
                        }
                        // Integer sums are exact and the f32 path makes one FMA per input in
                        // the same order on every ISA: all kernels agree bit for bit.
                        for (o, isa) in outs.iter().zip(isas()).skip(1) {
                            assert!(
                                o.iter()
                                    .zip(&outs[0])
                                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                                "[{m}, {n}, {k}] bits {bits} group {group:?} asym {asym} act \
                                 {a:?}: {isa:?} differs from the portable kernels"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let pw = quantize(false, &randn(4 * 40, 0.05, 1), 4, 40, 4, Some(32));
    let isa = qlinear::Isa::detect();
    let e = qlinear::qlinear(&[0.0; 41], &pw, None, None, isa).unwrap_err();
    assert!(e.to_string().contains("not rows of 40"), "{e}");
    let e = qlinear::qlinear(&[0.0; 40], &pw, Some(&[0.0; 3]), None, isa).unwrap_err();
    assert!(e.to_string().contains("bias"), "{e}");
    let st = ActSpec {
        bits: 8,
        dynamic: false,
    };
    let e = qlinear::qlinear(&[0.0; 40], &pw, None, Some((&st, None)), isa).unwrap_err();
    assert!(e.to_string().contains("calibrated"), "{e}");
    // A zero point that is not a whole code (a hand-edited file) cannot run on integers.
    let mut bad = quantize(true, &randn(4 * 40, 0.05, 1), 4, 40, 8, None);
    let half = half::f16::from_f32(3.5).to_bits() as u32;
    bad.zeros.as_mut().unwrap()[0] = half | (half << 16);
    let dy = ActSpec {
        bits: 8,
        dynamic: true,
    };
    let e = qlinear::qlinear(&[0.0; 40], &bad, None, Some((&dy, None)), isa).unwrap_err();
    assert!(e.to_string().contains("zero point 3.5"), "{e}");
}

/// Whole models: planning costs of the packed CPU model against the fake-quant reference
/// model, with the tolerances the GPU-vs-CPU test uses (activation codes may flip by one
/// step where float rounding moves an input across a rounding boundary).
#[test]
fn packed_cpu_models_plan_like_the_fake_quant_reference() {
    use qwm::model::quantized::quantize_model;
    use qwm::model::{CpuModel, ModelConfig, Weights};
    use qwm::plan::world::WorldPlanModel;
    use qwm::plan::{PlanConfig, PlanModel};

    let w = Weights::random(&ModelConfig::tiny(), 5).unwrap();
    let pc = PlanConfig {
        horizon: 3,
        step_dim: 10,
        samples: 16,
        topk: 4,
        opt_steps: 2,
        ..PlanConfig::default()
    };
    let stats = qwm::plan::calibrate::calibrate(&w, "wall", 1, &pc, 1.0).unwrap();
    let n = 6;
    let acts = randn(n * 30, 1.0, 8);
    let env = qwm::env::make("wall").unwrap();
    let (s, g) = env.sample_start_goal(2);
    let size = w.config.image_size;
    let costs = |m: &CpuModel| {
        let mut pm = WorldPlanModel::new(m, w.norm.clone(), 3, 1.0);
        pm.set_problem(
            &env.render_state(&s, size).unwrap(),
            &env.proprio_of(&s),
            &env.render_state(&g, size).unwrap(),
            &env.proprio_of(&g),
        )
        .unwrap();
        pm.costs(&acts, n).unwrap()
    };
    for (spec, tol) in [
        ("w8", 1e-3),
        ("w4g32", 1e-3),
        ("w3", 1e-3),
        ("w8a8t", 5e-3),
        ("enc=w8a8,pred=w4g32a8", 5e-3),
    ] {
        let q = quantize_model(&w, &spec.parse().unwrap(), "rtn", Some(&stats)).unwrap();
        let packed = costs(&CpuModel::new_quantized(&q).unwrap());
        let reference = costs(&CpuModel::new_quantized_reference(&q).unwrap());
        let e = rel_error(&packed, &reference);
        assert!(e <= tol, "{spec}: packed vs fake-quant costs rel error {e}");
    }
}

/// The fused epilogues (`Post`: GELU, residual add) give the bits of the separate ops, on every
/// kernel set, for the packed (weight-only and int8) and the f32 tiles, and through the tensor
/// API that the model's `linear_then` calls.
#[test]
fn fused_epilogues_match_the_separate_ops_bit_for_bit() {
    use qlinear::Post;
    let dyn8 = ActSpec {
        bits: 8,
        dynamic: true,
    };
    // The last shape spans several of the integer path's token blocks per chunk.
    for (m, n, k) in [(1, 3, 5), (301, 45, 97), (1203, 70, 64), (1203, 300, 40)] {
        let x = randn(m * k, 1.0, 7);
        let w = randn(n * k, 0.2, 8);
        let b = randn(n, 0.1, 9);
        let r = randn(m * n, 1.0, 10);
        let pw = quantize(false, &w, n, k, 4, None);
        let pw8 = quantize(false, &w, n, k, 8, None);
        let gelu = |y: &[f32]| {
            let t = cpu::tensor(y, &[m, n]).unwrap();
            cpu::to_vec(&cpu::gelu(&t).unwrap()).unwrap()
        };
        let add = |y: &[f32]| r.iter().zip(y).map(|(r, y)| r + y).collect::<Vec<_>>();
        for isa in isas() {
            type Lin<'a> = Box<dyn Fn(Post<'_>) -> Vec<f32> + 'a>;
            let lins: [(&str, Lin); 4] = [
                (
                    "f32",
                    Box::new(|p| qlinear::linear_f32_post(&x, &w, n, Some(&b), p, isa).unwrap()),
                ),
                (
                    "w4",
                    Box::new(|p| qlinear::qlinear_post(&x, &pw, Some(&b), None, p, isa).unwrap()),
                ),
                (
                    "w4a8",
                    Box::new(|p| {
                        let a = Some((&dyn8, None));
                        qlinear::qlinear_post(&x, &pw, Some(&b), a, p, isa).unwrap()
                    }),
                ),
                (
                    "w8a8",
                    Box::new(|p| {
                        let a = Some((&dyn8, None));
                        qlinear::qlinear_post(&x, &pw8, Some(&b), a, p, isa).unwrap()
                    }),
                ),
            ];
            for (what, lin) in &lins {
                let y = lin(Post::None);
                let tag = format!("{what} [{m}, {n}, {k}] {isa:?}");
                assert!(bits_eq(&lin(Post::Gelu), &gelu(&y)), "{tag}: GELU");
                assert!(
                    bits_eq(&lin(Post::Residual(&r)), &add(&y)),
                    "{tag}: residual"
                );
            }
        }
        // The tensor API: fused against composed (candle's add, the GELU pass).
        let (xt, wt, bt) = (
            cpu::tensor(&x, &[m, k]).unwrap(),
            cpu::tensor(&w, &[n, k]).unwrap(),
            cpu::tensor(&b, &[n]).unwrap(),
        );
        let rt = cpu::tensor(&r, &[m, n]).unwrap();
        let y = cpu::linear(&xt, &wt, Some(&bt)).unwrap();
        for then in [cpu::Then::Gelu, cpu::Then::Add(&rt)] {
            let fused = cpu::linear_then(&xt, &wt, Some(&bt), Some(then)).unwrap();
            let composed = cpu::then_composed(y.clone(), Some(then)).unwrap();
            let (f, c) = (
                cpu::to_vec(&fused).unwrap(),
                cpu::to_vec(&composed).unwrap(),
            );
            assert!(bits_eq(&f, &c), "tensor linear_then [{m}, {n}, {k}]");
            let pf = cpu::packed_linear_then(&xt, &pw, None, Some(&bt), None, Some(then)).unwrap();
            let py = cpu::packed_linear(&xt, &pw, Some(&bt), None).unwrap();
            let pc = cpu::then_composed(py, Some(then)).unwrap();
            let (f, c) = (cpu::to_vec(&pf).unwrap(), cpu::to_vec(&pc).unwrap());
            assert!(bits_eq(&f, &c), "tensor packed_linear_then [{m}, {n}, {k}]");
        }
        // A residual of the wrong shape is an error, not a wrong answer.
        let bad = cpu::tensor(&r[..n], &[1, n]).unwrap();
        assert!(
            m == 1 || cpu::linear_then(&xt, &wt, Some(&bt), Some(cpu::Then::Add(&bad))).is_err()
        );
    }
}

/// Rollouts split into spans that run on parallel threads give the same costs, bit for bit,
/// at any thread count (the spans differ; per-sample math does not depend on them), float
/// and packed.
#[test]
fn cpu_rollout_costs_are_the_same_bits_at_any_thread_count() {
    use qwm::model::quantized::quantize_model;
    use qwm::model::{CpuModel, ModelConfig, ObjectiveMode, Weights, WorldModel};
    let w = Weights::random(&ModelConfig::tiny(), 5).unwrap();
    let q = quantize_model(&w, &"w8a8t".parse().unwrap(), "rtn", None).unwrap();
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
        (r.chunks.len(), m.download(&c).unwrap())
    };
    for model in [
        CpuModel::new(&w).unwrap(),
        CpuModel::new_quantized(&q).unwrap(),
    ] {
        let runs: Vec<(usize, Vec<f32>)> = [1, 2, 3]
            .iter()
            .map(|&t| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap();
                pool.install(|| costs(&model))
            })
            .collect();
        assert!(runs[2].0 >= 3, "3 threads rolled out {} spans", runs[2].0);
        for (spans, c) in &runs[1..] {
            assert!(
                c.iter()
                    .zip(&runs[0].1)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{spans} spans gave other costs than {}",
                runs[0].0
            );
        }
    }
}

/// The float tiles (`linear_f32`, run over K itself, no padding) against candle's matmul:
/// within 1e-4 relative, and the same bits on every kernel set, on shapes that are not tile
/// multiples (a partial last tile of tokens, K not a multiple of 32).
#[test]
fn f32_tiles_match_candle_matmul_and_agree_across_isas() {
    for (m, n, k) in [(1, 3, 5), (13, 45, 80), (301, 70, 97), (9, 33, 403)] {
        let x = randn(m * k, 1.0, 21);
        let w = randn(n * k, 0.2, 22);
        let b = randn(n, 0.1, 23);
        let want = {
            let xt = cpu::tensor(&x, &[m, k]).unwrap();
            let wt = cpu::tensor(&w, &[n, k]).unwrap();
            let bt = cpu::tensor(&b, &[n]).unwrap();
            cpu::to_vec(&cpu::matmul(&xt, &wt, Some(&bt)).unwrap()).unwrap()
        };
        let outs: Vec<Vec<f32>> = isas()
            .into_iter()
            .map(|isa| qlinear::linear_f32(&x, &w, n, Some(&b), isa).unwrap())
            .collect();
        for (o, isa) in outs.iter().zip(isas()) {
            let e = rel_error(o, &want);
            assert!(e <= 1e-4, "[{m}, {n}, {k}] {isa:?}: rel error {e}");
            let same = o
                .iter()
                .zip(&outs[0])
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "[{m}, {n}, {k}] {isa:?} differs from the portable tiles"
            );
        }
    }
}
