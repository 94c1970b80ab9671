//! Quantization: the spec language, packing, RTN/OMSE, and the GPU kernels against the CPU
//! (dequantized weights bit for bit; matmuls within 1e-3 relative of the fake-quant reference).

mod common;

use common::{assert_close, gpu};
use qwm::cpu;
use qwm::gpu::qops::{self, GpuQuantWeight, QKernel};
use qwm::gpu::Recorder;
use qwm::quant::{
    self, act, ActParams, ActSpec, PackedWeight, QuantContext, QuantSpec, WeightSpec,
};
use qwm::tensor::randn;

const Q_TOL: f64 = 1e-3;

fn quantize(
    method: &str,
    w: &[f32],
    n: usize,
    k: usize,
    bits: u8,
    group: Option<usize>,
) -> PackedWeight {
    quant::method(method)
        .unwrap()
        .quantize(
            w,
            n,
            k,
            &WeightSpec { bits, group },
            &QuantContext::default(),
        )
        .unwrap()
}

#[test]
fn spec_language_parses_and_prints() {
    for (s, canon) in [
        ("fp", "fp"),
        ("w8", "w8"),
        ("w4g128", "w4g128"),
        ("w4g32a8", "w4g32a8"),
        ("w8a8t", "w8a8t"),
        ("W3G64A6T", "w3g64a6t"),
        ("enc=w8,pred=w4g32", "enc=w8,pred=w4g32"),
        ("pred=w2", "enc=fp,pred=w2"),
        ("enc=w6, pred=w6", "w6"),
    ] {
        let q: QuantSpec = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(q.to_string(), canon, "{s}");
        assert_eq!(q.to_string().parse::<QuantSpec>().unwrap(), q);
    }
    let q: QuantSpec = "enc=w8,pred=w4g32a8t".parse().unwrap();
    assert_eq!(
        q.encoder.weight,
        Some(WeightSpec {
            bits: 8,
            group: None
        })
    );
    assert_eq!(
        q.predictor.act,
        Some(ActSpec {
            bits: 8,
            dynamic: true
        })
    );
    for bad in [
        "w5",
        "w4g48",
        "w4a3",
        "w16",
        "x8",
        "w4g",
        "w8a8x",
        "enc=w8,enc=w4",
        "dec=w8",
        "",
    ] {
        let e = bad.parse::<QuantSpec>().unwrap_err().to_string();
        assert!(e.contains("valid specs"), "{bad}: {e}");
    }
}

#[test]
fn packing_roundtrips_codes_and_bounds_the_error() {
    let (n, k) = (7, 404); // ragged last group for g128 (404 = 3 x 128 + 20)
    let w = randn(n * k, 0.05, 1);
    for bits in [2u8, 3, 4, 6, 8] {
        for group in [None, Some(32), Some(64), Some(128)] {
            let pw = quantize("rtn", &w, n, k, bits, group);
            pw.validate("w").unwrap();
            let dq = pw.dequantize();
            let qmax = (1u32 << (bits - 1)) - 1;
            for r in 0..n {
                for kk in 0..k {
                    let c = pw.code(r, kk);
                    let z = 1u32 << (bits - 1);
                    assert!(
                        c >= z - qmax && c <= z + qmax,
                        "code {c} out of range at {bits} bits"
                    );
                    let g = kk / pw.group;
                    let s = pw.scale(r, g);
                    let err = (dq[r * k + kk] - w[r * k + kk]).abs();
                    assert!(
                        err <= s * 0.5 + 1e-6,
                        "bits {bits} group {group:?}: err {err} > s/2 {s}"
                    );
                }
                // padded codes hold the zero point
                for kk in k..pw.k_pad() {
                    assert_eq!(pw.code(r, kk), 1 << (bits - 1));
                }
            }
            let expect_groups = k.div_ceil(group.unwrap_or(pw.k_pad()));
            assert_eq!(pw.groups_per_row(), expect_groups);
        }
    }
}

#[test]
fn asymmetric_codes_use_the_zero_point() {
    let (n, k) = (5, 96);
    let mut w = randn(n * k, 0.05, 2);
    for v in w.iter_mut() {
        *v += 0.08; // shifted: asymmetric ranges matter
    }
    let pw = quant::rtn_asymmetric(
        &w,
        n,
        k,
        &WeightSpec {
            bits: 4,
            group: Some(32),
        },
    )
    .unwrap();
    assert!(!pw.symmetric());
    let dq = pw.dequantize();
    let sym = quantize("rtn", &w, n, k, 4, Some(32)).dequantize();
    let err = |d: &[f32]| {
        d.iter()
            .zip(&w)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
    };
    assert!(
        err(&dq) < err(&sym),
        "asymmetric should fit a shifted range better"
    );
}

#[test]
fn omse_never_loses_to_rtn() {
    let (n, k) = (16, 256);
    let mut w = randn(n * k, 0.05, 3);
    w[5] = 1.0; // an outlier makes clipping worthwhile
    for bits in [2u8, 3, 4] {
        let e = |pw: &PackedWeight| {
            pw.dequantize()
                .iter()
                .zip(&w)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
        };
        let rtn = e(&quantize("rtn", &w, n, k, bits, Some(32)));
        let omse = e(&quantize("omse", &w, n, k, bits, Some(32)));
        assert!(omse <= rtn, "bits {bits}: omse {omse} > rtn {rtn}");
        assert!(
            omse < rtn * 0.99,
            "bits {bits}: omse found no better clip ({omse} vs {rtn})"
        );
    }
}

#[test]
fn bad_weights_and_groups_are_clear_errors() {
    let mut w = randn(4 * 40, 0.1, 4);
    let q = quant::method("rtn").unwrap();
    let cx = QuantContext::default();
    let e = q
        .quantize(
            &w,
            4,
            40,
            &WeightSpec {
                bits: 4,
                group: Some(64),
            },
            &cx,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("larger than the input width 40"), "{e}");
    let e = q
        .quantize(
            &w,
            4,
            40,
            &WeightSpec {
                bits: 5,
                group: None,
            },
            &cx,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("bit-width 5"), "{e}");
    w[17] = f32::NAN;
    let e = q
        .quantize(
            &w,
            4,
            40,
            &WeightSpec {
                bits: 4,
                group: None,
            },
            &cx,
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("non-finite") && e.contains("row 0, column 17"),
        "{e}"
    );
    let e = quant::method("gptq").err().unwrap().to_string();
    assert!(e.contains("rtn, omse"), "{e}");
    let mut bad = quantize("rtn", &randn(4 * 64, 0.1, 5), 4, 64, 4, None);
    bad.codes.pop();
    let e = bad.validate("blocks.0.fc1").unwrap_err().to_string();
    assert!(e.contains("blocks.0.fc1") && e.contains("codes"), "{e}");
    let mut s = qwm::quant::ActStats::default();
    s.observe(&[1.0, f32::NAN]);
    let e = s.params(8, "blocks.0.qkv").unwrap_err().to_string();
    assert!(
        e.contains("not finite") && e.contains("blocks.0.qkv"),
        "{e}"
    );
}

#[test]
fn gpu_dequant_is_bit_identical_to_cpu() {
    let Some(ctx) = gpu() else { return };
    for (i, &(n, k)) in [(5, 404), (3, 37), (9, 96)].iter().enumerate() {
        let w = randn(n * k, 0.05, 10 + i as u64);
        for bits in [2u8, 3, 4, 6, 8] {
            for group in [None, Some(32), Some(64), Some(128)] {
                if group.is_some_and(|g| g > k) {
                    continue;
                }
                for asym in [false, true] {
                    let spec = WeightSpec { bits, group };
                    let pw = if asym {
                        quant::rtn_asymmetric(&w, n, k, &spec).unwrap()
                    } else {
                        quantize("rtn", &w, n, k, bits, group)
                    };
                    let g = GpuQuantWeight::upload(ctx, &pw).unwrap();
                    let mut rec = Recorder::new(ctx);
                    let d = qwm::gpu::probe::dequant(&mut rec, &g).unwrap();
                    rec.submit().unwrap();
                    let got = ctx.read(&d).unwrap();
                    let want = pw.dequantize();
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "[{n},{k}] bits {bits} group {group:?} asym {asym}: dequant differs"
                    );
                }
            }
        }
    }
}

fn cpu_ref(x: &[f32], m: usize, pw: &PackedWeight, b: Option<&[f32]>) -> Vec<f32> {
    let cx = cpu::tensor(x, &[m, pw.k]).unwrap();
    let cw = cpu::tensor(&pw.dequantize(), &[pw.n, pw.k]).unwrap();
    let cb = b.map(|b| cpu::tensor(b, &[pw.n]).unwrap());
    cpu::to_vec(&cpu::matmul(&cx, &cw, cb.as_ref()).unwrap()).unwrap()
}

#[test]
fn gpu_qmatmul_matches_cpu_fake_quant() {
    let Some(ctx) = gpu() else { return };
    // K = 404: vec4 activation loads and a ragged last unit; K = 70: scalar loads.
    for (n, k, groups) in [
        (37usize, 404usize, vec![None, Some(32), Some(128)]),
        (11, 70, vec![None, Some(64)]),
    ] {
        let w = randn(n * k, 0.05, 20);
        let b = randn(n, 0.1, 21);
        let gb = ctx.upload(&b, &[n]).unwrap();
        for bits in [2u8, 3, 4, 6, 8] {
            for &group in &groups {
                let pw = quantize("omse", &w, n, k, bits, group);
                let g = GpuQuantWeight::upload(ctx, &pw).unwrap();
                for m in [1usize, 3, 8, 13, 70] {
                    let x = randn(m * k, 1.0, 30 + m as u64);
                    let gx = ctx.upload(&x, &[m, k]).unwrap();
                    let mut rec = Recorder::new(ctx);
                    let y =
                        qops::qmatmul_with(&mut rec, &gx, &g, Some(&gb), QKernel::Lanes).unwrap();
                    // The split-K mat-vec that GPUs take for M <= 8, on this adapter too.
                    let ys = (m <= 8).then(|| {
                        qops::qmatmul_with(&mut rec, &gx, &g, Some(&gb), QKernel::Split).unwrap()
                    });
                    rec.submit().unwrap();
                    let want = cpu_ref(&x, m, &pw, Some(&b));
                    for (path, y) in [("lanes", Some(&y)), ("split", ys.as_ref())] {
                        let Some(y) = y else { continue };
                        assert_close(
                            &ctx.read(y).unwrap(),
                            &want,
                            Q_TOL,
                            &format!("{path} K={k} w{bits} g{group:?} M={m}"),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn gpu_tiled_qmatmul_matches_cpu_fake_quant() {
    // The workgroup-memory kernel GPUs take for token batches, on this adapter too: N = 97 (a
    // full and a partial 64-column tile), M = 130 (three row tiles), K = 404 (the last 32-wide
    // step passes K), K = 70 (scalar activation loads, a group of 64 cut by K).
    let Some(ctx) = gpu() else { return };
    for (n, k, groups) in [
        (97usize, 404usize, vec![None, Some(32), Some(128)]),
        (37, 70, vec![None, Some(64)]),
    ] {
        let w = randn(n * k, 0.05, 22);
        let b = randn(n, 0.1, 23);
        let gb = ctx.upload(&b, &[n]).unwrap();
        for bits in [2u8, 3, 4, 6, 8] {
            for &group in &groups {
                for asym in [false, true] {
                    let pw = if asym {
                        quant::rtn_asymmetric(&w, n, k, &WeightSpec { bits, group }).unwrap()
                    } else {
                        quantize("omse", &w, n, k, bits, group)
                    };
                    let g = GpuQuantWeight::upload(ctx, &pw).unwrap();
                    for m in [1usize, 13, 70, 130] {
                        let x = randn(m * k, 1.0, 50 + m as u64);
                        let gx = ctx.upload(&x, &[m, k]).unwrap();
                        let mut rec = Recorder::new(ctx);
                        let y = qops::qmatmul_with(&mut rec, &gx, &g, Some(&gb), QKernel::Tiled)
                            .unwrap();
                        rec.submit().unwrap();
                        assert_close(
                            &ctx.read(&y).unwrap(),
                            &cpu_ref(&x, m, &pw, Some(&b)),
                            Q_TOL,
                            &format!("qmatmul_tiled K={k} w{bits} g{group:?} asym {asym} M={m}"),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn gpu_int_activation_path_matches_cpu_fake_quant() {
    let Some(ctx) = gpu() else { return };
    let (n, k) = (29, 404);
    let w = randn(n * k, 0.05, 40);
    for (bits, group) in [
        (8u8, None),
        (4, Some(32)),
        (4, Some(128)),
        (3, Some(64)),
        (6, None),
    ] {
        let pw = quantize("rtn", &w, n, k, bits, group);
        let g = GpuQuantWeight::upload(ctx, &pw).unwrap();
        for (abits, dynamic) in [(8u8, false), (8, true), (6, true), (4, false)] {
            let spec = ActSpec {
                bits: abits,
                dynamic,
            };
            for m in [1usize, 5, 21] {
                let x = randn(m * k, 1.0, 50 + m as u64);
                let stat = ActParams::from_range(-2.5, 3.0, abits);
                let mut xf = x.clone();
                act::fake_quant(&mut xf, k, &spec, Some(&stat)).unwrap();
                let want = cpu_ref(&xf, m, &pw, None);
                for int_dot in [true, false] {
                    let gx = ctx.upload(&x, &[m, k]).unwrap();
                    let mut rec = Recorder::new(ctx);
                    let xq = qops::quant_act(&mut rec, &gx, &spec, Some(&stat)).unwrap();
                    let y = qops::qmatmul_a8(&mut rec, &xq, &g, None, &[m, n], int_dot).unwrap();
                    rec.submit().unwrap();
                    let got = ctx.read(&y).unwrap();
                    assert_close(
                        &got,
                        &want,
                        Q_TOL,
                        &format!("w{bits} g{group:?} a{abits} dyn {dynamic} M={m} dot4 {int_dot}"),
                    );
                }
            }
        }
    }
}

/// DINO-WM's quantized linears: encoder ViT-S (12 blocks, width 384, MLP 1536) and predictor
/// (6 blocks, width 404, inner 1024, qkv 3072, MLP 2048).
fn dinowm_linears() -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    for _ in 0..12 {
        v.extend([(1152, 384), (384, 384), (1536, 384), (384, 1536)]);
    }
    for _ in 0..6 {
        v.extend([(3072, 404), (404, 1024), (2048, 404), (404, 2048)]);
    }
    v
}

#[test]
fn dinowm_linear_bytes_meet_the_memory_targets() {
    // Measured on the packed tensors as uploaded (codes + scales + zero points).
    let layers = dinowm_linears();
    let f32_bytes: usize = layers.iter().map(|(n, k)| n * k * 4).sum();
    for (bits, group, target) in [
        (8u8, None, 0.26),
        (4, Some(128), 0.135),
        (4, Some(32), 0.16),
    ] {
        let mut bytes = 0;
        for (i, &(n, k)) in layers.iter().enumerate() {
            let w = randn(n * k, 0.02, 100 + i as u64);
            bytes += quantize("rtn", &w, n, k, bits, group).bytes();
        }
        let ratio = bytes as f64 / f32_bytes as f64;
        eprintln!("w{bits} g{group:?}: {bytes} bytes / {f32_bytes} f32 bytes = {ratio:.4}");
        assert!(
            ratio <= target,
            "w{bits} g{group:?}: ratio {ratio:.4} > {target}"
        );
    }
}
