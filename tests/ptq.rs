//! The study's PTQ methods (GPTQ, AWQ, SmoothQuant, OmniQuant) on the shipped Wall model's
//! linears with calibration inputs captured from float-planner rollouts: each lowers the
//! layers' output error below RTN's at the bit-widths it targets, equivalence transforms leave
//! the float model unchanged, GPTQ matches an independent textbook implementation, OmniQuant's
//! loss falls, every method's packed weights run through the GPU kernels, and bad calibration
//! data or specs are clear errors.

mod common;

use std::sync::OnceLock;

use common::{assert_close, gpu};
use qwm::gpu::qops::{self, GpuQuantWeight, QKernel};
use qwm::gpu::Recorder;
use qwm::model::quantized::{layer_output_errors, layout, quantize_model_with, QuantizedModel};
use qwm::model::{format, CpuModel, Weights, WorldModel};
use qwm::plan::calibrate::{capture_inputs, load_or_capture_inputs};
use qwm::plan::PlanConfig;
use qwm::quant::layout::{apply_fold, linear_out, sq_err};
use qwm::quant::{self, Awq, CalibData, Gptq, OmniQuant, QuantSpec, WeightSpec};
use qwm::tensor::randn;

/// The reduced CEM the calibration inputs are captured with (a capture takes seconds).
fn calib_planner() -> PlanConfig {
    PlanConfig {
        horizon: 5,
        step_dim: 10,
        samples: 48,
        topk: 8,
        opt_steps: 3,
        ..PlanConfig::default()
    }
}

/// The shipped Wall model and calibration inputs from 2 calibration episodes, captured once
/// per test binary.
fn wall() -> &'static (Weights, CalibData) {
    static W: OnceLock<(Weights, CalibData)> = OnceLock::new();
    W.get_or_init(|| {
        let w = format::load("assets/wall.safetensors").unwrap();
        let t = std::time::Instant::now();
        let c = capture_inputs(&w, "wall", 2, &calib_planner(), 1.0, 2048).unwrap();
        eprintln!(
            "captured calibration inputs in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        (w, c)
    })
}

fn layer_errors(
    rw: &Weights,
    rx: &CalibData,
    q: &QuantizedModel,
    qx: &CalibData,
) -> Vec<(String, f64)> {
    layer_output_errors(rw, rx, q, qx).unwrap()
}

fn total(e: &[(String, f64)]) -> f64 {
    e.iter().map(|(_, v)| v).sum()
}

fn quantize(method: &str, spec: &str) -> (QuantizedModel, CalibData) {
    let (w, c) = wall();
    let (q, x) = quantize_model_with(w, &spec.parse().unwrap(), method, None, Some(c)).unwrap();
    (q, x.unwrap())
}

/// Summed per-layer error of `method` and of RTN at `spec`, with the reference the method's
/// outputs are comparable to (AWQ folds value scales into qkv, so its qkv outputs are compared
/// with the scaled float model).
fn method_vs_rtn(method: &str, spec: &str) -> (f64, f64) {
    let (w, c) = wall();
    let (rq, rx) = quantize("rtn", spec);
    let rtn = total(&layer_errors(w, c, &rq, &rx));
    let (q, x) = quantize(method, spec);
    let (mut rw, mut rc) = (w.clone(), c.clone());
    if method == "awq" {
        let l = layout(w, &spec.parse().unwrap()).unwrap();
        Awq::default().scale_model(&mut rw, &l, &mut rc).unwrap();
    }
    let e = layer_errors(&rw, &rc, &q, &x);
    for (n, v) in &e {
        eprintln!("  {method} {spec} {n}: {v:.3e}");
    }
    eprintln!("{method} {spec}: total {:.4e} (rtn {rtn:.4e})", total(&e));
    (total(&e), rtn)
}

#[test]
fn gptq_awq_omniquant_beat_rtn_at_w4_and_w3() {
    for method in ["gptq", "gptq:act-order", "awq", "omniquant"] {
        for spec in ["w4", "w3", "w4g32"] {
            let (m, rtn) = method_vs_rtn(method, spec);
            assert!(
                m < rtn,
                "{method} {spec}: summed layer output error {m:.4e} not below RTN's {rtn:.4e}"
            );
        }
    }
}

#[test]
fn smoothquant_beats_rtn_with_activation_quantization() {
    for spec in ["w8a8", "w4a8", "w3a8"] {
        let (m, rtn) = method_vs_rtn("smoothquant", spec);
        assert!(
            m < rtn,
            "smoothquant {spec}: summed layer output error {m:.4e} not below RTN's {rtn:.4e}"
        );
    }
}

/// Encoder latents and a 3-step rollout of a model on fixed random inputs.
fn outputs(w: &Weights) -> Vec<f32> {
    let m = CpuModel::new(w).unwrap();
    let c = &w.config;
    let s = c.encoder.resize;
    let px = m
        .upload(&randn(2 * 3 * s * s, 0.5, 1), &[2, 3, s, s])
        .unwrap();
    let z = m.encode_pixels(&px).unwrap();
    let p0 = m
        .upload(&randn(2 * c.proprio_dim, 1.0, 2), &[2, c.proprio_dim])
        .unwrap();
    let step = c.frameskip * c.action_dim;
    let a = m
        .upload(&randn(2 * 3 * step, 1.0, 3), &[2, 3, step])
        .unwrap();
    let r = m.rollout(&z, &p0, &a).unwrap();
    let mut out = m.download(&z).unwrap();
    for ch in &r.chunks {
        for f in &ch.frames {
            out.extend(m.download(f).unwrap());
        }
    }
    out
}

#[test]
fn equivalence_transforms_leave_the_float_model_unchanged() {
    let (w, c) = wall();
    let want = outputs(w);
    let spec: QuantSpec = "w4a8".parse().unwrap();
    let l = layout(w, &spec).unwrap();
    // SmoothQuant: its prepare is the transform alone.
    let mut sw = w.clone();
    let mut sc = c.clone();
    quant::method("smoothquant")
        .unwrap()
        .prepare(&mut sw, &l, Some(&mut sc))
        .unwrap();
    assert_ne!(sw.tensors, w.tensors, "smoothquant changed nothing");
    assert_close(&outputs(&sw), &want, 1e-5, "smoothquant-folded model");
    // AWQ: the scale search and folds, before clipping.
    let (mut aw, mut ac) = (w.clone(), c.clone());
    Awq::default().scale_model(&mut aw, &l, &mut ac).unwrap();
    assert_ne!(aw.tensors, w.tensors, "awq scaled nothing");
    assert_close(&outputs(&aw), &want, 1e-5, "awq-scaled model");
    // LET: the scales and shifts OmniQuant learned, folded into a fresh copy.
    let mut ow = w.clone();
    let mut oc = c.clone();
    let parts = OmniQuant::default().fit(&mut ow, &l, &mut oc).unwrap();
    let mut lw = w.clone();
    let mut lets = 0;
    for p in &parts {
        if let Some((fi, s, d)) = &p.let_fold {
            apply_fold(&mut lw, &l, &l.folds[*fi], s, d.as_deref()).unwrap();
            lets += 1;
        }
    }
    assert_eq!(
        lets, 12,
        "one LET per LayerNorm -> qkv and LayerNorm -> fc1 pair"
    );
    assert_close(&outputs(&lw), &want, 1e-5, "LET-folded model");
}

#[test]
fn omniquant_block_loss_decreases() {
    let (w, c) = wall();
    for spec in ["w4", "w3"] {
        let l = layout(w, &spec.parse().unwrap()).unwrap();
        let parts = OmniQuant::default()
            .fit(&mut w.clone(), &l, &mut c.clone())
            .unwrap();
        assert_eq!(parts.len(), 18, "qkv, proj and MLP of 6 blocks");
        let (mut first, mut last) = (0f64, 0f64);
        for p in &parts {
            let a = p.losses[0];
            let b = p.losses[1..].iter().copied().fold(f32::INFINITY, f32::min);
            eprintln!("omniquant {spec} {:?}: {a:.3e} -> {b:.3e}", p.linears);
            assert!(b < a, "{spec} {:?}: loss {a:.3e} -> {b:.3e}", p.linears);
            first += a as f64;
            last += b as f64;
        }
        assert!(
            last < 0.9 * first,
            "{spec}: total loss {first:.3e} -> {last:.3e}"
        );
    }
}

/// Symmetric quantize-dequantize with the stored f16 scale, as the packed codes do.
fn qdq(v: f64, s: f64, qmax: f64) -> f64 {
    if s <= 0.0 {
        0.0
    } else {
        (v / s).round_ties_even().clamp(-qmax, qmax) * s
    }
}

fn f16s(amax: f64, qmax: f64) -> f64 {
    half::f16::from_f32((amax / qmax) as f32).to_f32() as f64
}

/// Textbook GPTQ/OBQ: after quantizing column `c`, update every remaining column with the
/// full inverse Hessian, then remove `c` from it (Schur complement); no Cholesky, no blocks.
fn gptq_reference(
    w: &[f32],
    n: usize,
    k: usize,
    bits: u8,
    group: Option<usize>,
    act_order: bool,
    x: &[f32],
) -> Vec<f64> {
    let qmax = ((1u32 << (bits - 1)) - 1) as f64;
    let g = group.unwrap_or(k);
    let t = x.len() / k;
    let mut h = vec![0f64; k * k];
    for r in x.chunks(k) {
        for i in 0..k {
            for j in 0..k {
                h[i * k + j] += r[i] as f64 * r[j] as f64 / t as f64;
            }
        }
    }
    let mean = (0..k).map(|i| h[i * k + i]).sum::<f64>() / k as f64;
    for i in 0..k {
        h[i * k + i] += 0.01 * mean;
    }
    // Gauss-Jordan inverse.
    let mut a = h.clone();
    let mut inv: Vec<f64> = (0..k * k).map(|i| (i / k == i % k) as u8 as f64).collect();
    for c in 0..k {
        let p = a[c * k + c];
        for j in 0..k {
            a[c * k + j] /= p;
            inv[c * k + j] /= p;
        }
        for r in 0..k {
            if r != c {
                let f = a[r * k + c];
                for j in 0..k {
                    a[r * k + j] -= f * a[c * k + j];
                    inv[r * k + j] -= f * inv[c * k + j];
                }
            }
        }
    }
    let mut wd: Vec<f64> = w.iter().map(|v| *v as f64).collect();
    let gpr = k.div_ceil(g);
    let mut scale = vec![0f64; n * gpr];
    let static_scales = act_order || group.is_none();
    let amax = |wd: &[f64], r: usize, lo: usize| {
        (lo..(lo + g).min(k)).fold(0f64, |m, c| m.max(wd[r * k + c].abs()))
    };
    if static_scales {
        for r in 0..n {
            for gi in 0..gpr {
                scale[r * gpr + gi] = f16s(amax(&wd, r, gi * g), qmax);
            }
        }
    }
    let mut order: Vec<usize> = (0..k).collect();
    if act_order {
        order.sort_by(|&a, &b| h[b * k + b].total_cmp(&h[a * k + a]).then(a.cmp(&b)));
    }
    let mut done = vec![false; k];
    let mut q = vec![0f64; n * k];
    for &c in &order {
        if !static_scales && c % g == 0 {
            for r in 0..n {
                scale[r * gpr + c / g] = f16s(amax(&wd, r, c), qmax);
            }
        }
        let d = inv[c * k + c];
        for r in 0..n {
            let v = wd[r * k + c];
            let qv = qdq(v, scale[r * gpr + c / g], qmax);
            q[r * k + c] = qv;
            let e = (v - qv) / d;
            for j in 0..k {
                if !done[j] && j != c {
                    wd[r * k + j] -= e * inv[c * k + j];
                }
            }
        }
        done[c] = true;
        let col: Vec<f64> = (0..k).map(|i| inv[i * k + c]).collect();
        for i in 0..k {
            for j in 0..k {
                inv[i * k + j] -= col[i] * col[j] / d;
            }
        }
    }
    q
}

#[test]
fn gptq_matches_a_textbook_reference() {
    let (n, k, t) = (6usize, 72usize, 300usize);
    let w = randn(n * k, 0.1, 40);
    // Correlated inputs with uneven channel scales, so compensation matters.
    let base = randn(t * 8, 1.0, 41);
    let mix = randn(8 * k, 1.0, 42);
    let noise = randn(t * k, 0.1, 43);
    let x: Vec<f32> = (0..t * k)
        .map(|i| {
            let (r, c) = (i / k, i % k);
            let v: f32 = (0..8).map(|j| base[r * 8 + j] * mix[j * k + c]).sum();
            (v + noise[i]) * (1.0 + (c % 5) as f32)
        })
        .collect();
    for bits in [3u8, 4] {
        for group in [None, Some(32)] {
            for act_order in [false, true] {
                let g = Gptq {
                    act_order,
                    block: 32,
                    ..Gptq::default()
                };
                let (got, _) = g.solve(&w, n, k, &WeightSpec { bits, group }, &x).unwrap();
                let want = gptq_reference(&w, n, k, bits, group, act_order, &x);
                let same = got
                    .iter()
                    .zip(&want)
                    .filter(|(a, b)| (**a as f64 - **b).abs() <= 1e-6 * b.abs().max(1e-3))
                    .count();
                let what = format!("w{bits} g{group:?} act_order {act_order}");
                assert_eq!(same, got.len(), "{what}: {same}/{} values equal", got.len());
                // And GPTQ beats plain rounding on these inputs.
                let rtn = quant::method("rtn")
                    .unwrap()
                    .quantize(&w, n, k, &WeightSpec { bits, group }, &Default::default())
                    .unwrap()
                    .dequantize();
                let err = |wq: &[f32]| sq_err(&linear_out(&x, wq, n, k), &linear_out(&x, &w, n, k));
                assert!(
                    err(&got) < err(&rtn),
                    "{what}: GPTQ output error not below RTN's"
                );
            }
        }
    }
}

#[test]
fn every_method_runs_through_the_gpu_kernels() {
    let Some(ctx) = gpu() else { return };
    for (method, spec) in [
        ("gptq", "w4g32"),
        ("gptq:act-order", "w3"),
        ("awq", "w4g32"),
        ("awq", "w3"),
        ("omniquant", "w4"),
        ("smoothquant", "w8a8t"),
        ("smoothquant", "w4g32a8t"),
    ] {
        let (q, x) = quantize(method, spec);
        for (name, pw) in &q.packed {
            let l = x.layer(name).unwrap();
            let m = l.rows().min(70);
            let xs = &l.x[..m * l.k];
            let g = GpuQuantWeight::upload(ctx, pw).unwrap();
            let gx = ctx.upload(xs, &[m, l.k]).unwrap();
            let mut rec = Recorder::new(ctx);
            let y = qops::qmatmul_with(&mut rec, &gx, &g, None, QKernel::Lanes).unwrap();
            rec.submit().unwrap();
            let want = linear_out(xs, &pw.dequantize(), pw.n, pw.k);
            assert_close(
                &ctx.read(&y).unwrap(),
                &want,
                1e-3,
                &format!("{method} {spec} {name}"),
            );
        }
    }
}

#[test]
fn calibration_inputs_roundtrip_and_bad_ones_are_clear_errors() {
    let (w, c) = wall();
    let dir = std::env::temp_dir().join(format!("qwm-ptq-{}", std::process::id()));
    let p = dir.join("wall.calib.safetensors");
    c.save(&p).unwrap();
    assert_eq!(&CalibData::load(&p).unwrap(), c);
    let spec: QuantSpec = "w4".parse().unwrap();
    let err = |w: &Weights, c: &CalibData, m: &str, s: &QuantSpec| {
        quantize_model_with(w, s, m, None, Some(c))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    // NaN.
    let mut bad = c.clone();
    bad.layers.values_mut().next().unwrap().x[5] = f32::NAN;
    let e = err(w, &bad, "gptq", &spec);
    assert!(e.contains("non-finite"), "{e}");
    // Another model.
    let other = Weights::random(&w.config, 3).unwrap();
    let e = err(&other, c, "awq", &spec);
    assert!(e.contains("another model"), "{e}");
    // The stamp covers what planning computes with: a retrained decoder keeps it, any other
    // tensor changes it.
    let bumped = |prefix: &str| {
        let mut m = w.clone();
        let t = m.tensors.iter_mut().find(|(n, _)| n.starts_with(prefix));
        t.unwrap().1.data[0] += 1.0;
        m.crc32()
    };
    assert_eq!(bumped("decoder."), w.crc32());
    assert_ne!(bumped("encoder."), w.crc32());
    assert_ne!(bumped("predictor."), w.crc32());
    // Another shape (same CRC stamp, wrong width).
    let mut bad = c.clone();
    let l = bad.layers.values_mut().next().unwrap();
    l.k += 1;
    l.min.push(0.0);
    l.max.push(0.0);
    let e = err(w, &bad, "gptq", &spec);
    assert!(e.contains("wide"), "{e}");
    // A method without inputs.
    let e = quantize_model_with(w, &spec, "gptq", None, None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("needs calibration inputs"), "{e}");
    // SmoothQuant on a weight-only spec, and alpha outside (0, 1).
    let e = err(w, c, "smoothquant", &spec);
    assert!(e.contains("w8a8"), "{e}");
    for a in ["0", "1", "1.5", "-0.2", "x"] {
        let e = quant::method(&format!("smoothquant:alpha={a}"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("(0, 1)"), "{a}: {e}");
    }
    assert!(quant::method("smoothquant:alpha=0.75").is_ok());
    let e = quant::method("gptq:fast").err().unwrap().to_string();
    assert!(e.contains("gptq:act-order"), "{e}");
    // A file that is not calibration data.
    let e = CalibData::load("assets/wall.safetensors")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not a calibration file"), "{e}");
    // The stored file is reused with the settings it was captured with, and refused (naming
    // the file and both settings) for another planner or environment.
    let same = load_or_capture_inputs(w, Some(&p), "wall", 2, &calib_planner(), 1.0, 2048);
    assert_eq!(&same.unwrap(), c);
    let mut other = calib_planner();
    other.samples = 300;
    for (env, pc) in [("wall", other), ("pointmaze", calib_planner())] {
        let e = load_or_capture_inputs(w, Some(&p), env, 2, &pc, 1.0, 2048)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("captured with other settings") && e.contains("wall.calib.safetensors"),
            "{env}: {e}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
