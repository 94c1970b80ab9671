//! World model: config, file format, bad input, GPU vs CPU parity (tiny and full size), batch
//! splitting.

mod common;

use common::{assert_close, gpu, F32_TOL};
use qwm::model::format::{self, StoreDtype};
use qwm::model::{CpuModel, Frames, GpuModel, ModelConfig, ObjectiveMode, Weights, WorldModel};
use qwm::tensor::{randn, uniform};
use qwm::Error;

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("qwm-model-tests-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn frames_u8(b: usize, s: usize, seed: u64) -> Vec<u8> {
    uniform(b * s * s * 3, 0.0, 256.0, seed)
        .into_iter()
        .map(|x| x as u8)
        .collect()
}

#[test]
fn dinowm_config_numbers() {
    let c = ModelConfig::dinowm();
    c.validate().unwrap();
    assert_eq!(c.patches(), 196);
    assert_eq!(c.latent_dim(), 404);
    assert_eq!(c.pred_inner(), 1024);
    assert_eq!(c.action_in(), 10);
    let names = qwm::model::expected_tensors(&c);
    let enc: usize = names
        .iter()
        .filter(|(n, _)| n.starts_with("encoder."))
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    // DINOv2 ViT-S/14 without mask token and with the position table at 14x14 (+cls).
    assert!(
        (21_000_000..22_500_000).contains(&enc),
        "encoder params {enc}"
    );
    let mut bad = c.clone();
    bad.encoder.resize = 200;
    assert!(matches!(bad.validate(), Err(Error::Invalid(m)) if m.contains("200")));
}

#[test]
fn format_roundtrip_all_dtypes() {
    let w = Weights::random(&ModelConfig::tiny(), 3).unwrap();
    for (dt, tol) in [
        (StoreDtype::F32, 0.0),
        (StoreDtype::F16, 1e-3),
        (StoreDtype::BF16, 1e-2),
    ] {
        let p = tmp(&format!("rt_{dt:?}.safetensors"));
        format::save_as(&w, &p, dt).unwrap();
        let r = format::load(&p).unwrap();
        assert_eq!(r.config, w.config);
        assert_eq!(r.norm, w.norm);
        assert_eq!(r.tensors.len(), w.tensors.len());
        for (k, t) in &w.tensors {
            let e = qwm::tensor::rel_error(&r.tensors[k].data, &t.data);
            assert!(e <= tol, "{dt:?} {k}: {e}");
        }
    }
}

fn load_err(bytes: &[u8], name: &str) -> String {
    let p = tmp(name);
    std::fs::write(&p, bytes).unwrap();
    format::load(&p).unwrap_err().to_string()
}

/// Write a safetensors file with the given metadata and tensors (raw f32 bytes).
fn write_raw(
    meta: std::collections::HashMap<String, String>,
    tensors: &[(String, safetensors::Dtype, Vec<usize>, Vec<u8>)],
) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, Some(meta)).unwrap()
}

fn raw_tensors(w: &Weights) -> Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> {
    w.tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                safetensors::Dtype::F32,
                t.shape.clone(),
                t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect()
}

#[test]
fn format_errors_are_specific() {
    let w = Weights::random(&ModelConfig::tiny(), 1).unwrap();
    let p = tmp("good.safetensors");
    format::save(&w, &p).unwrap();
    let good = std::fs::read(&p).unwrap();

    let e = load_err(&good[..good.len() - 100], "trunc.safetensors");
    assert!(e.contains("truncated or corrupt"), "{e}");
    let e = load_err(b"hello", "junk.safetensors");
    assert!(e.contains("truncated or corrupt"), "{e}");
    let e = format::load(tmp("missing.safetensors")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");

    let meta = format::metadata(&w).unwrap();
    // Config contradicting the tensors: a wider encoder.
    let mut m2 = meta.clone();
    let mut c2 = w.config.clone();
    c2.encoder.width = 48;
    m2.insert("config".into(), serde_json::to_string(&c2).unwrap());
    let e = load_err(&write_raw(m2, &raw_tensors(&w)), "contra.safetensors");
    assert!(e.contains("implies shape") && e.contains("48"), "{e}");
    // Wrong format version.
    let mut m3 = meta.clone();
    m3.insert("format_version".into(), "99".into());
    let e = load_err(&write_raw(m3, &raw_tensors(&w)), "ver.safetensors");
    assert!(e.contains("99") && e.contains("version 1"), "{e}");
    // Missing tensor.
    let mut ts = raw_tensors(&w);
    ts.retain(|(n, ..)| n != "encoder.norm.weight");
    let e = load_err(&write_raw(meta.clone(), &ts), "miss.safetensors");
    assert!(e.contains("missing tensor encoder.norm.weight"), "{e}");
    // Extra tensor.
    let mut ts = raw_tensors(&w);
    ts.push((
        "encoder.mask_token".into(),
        safetensors::Dtype::F32,
        vec![1],
        vec![0; 4],
    ));
    let e = load_err(&write_raw(meta.clone(), &ts), "extra.safetensors");
    assert!(e.contains("encoder.mask_token"), "{e}");
    // Non-finite value.
    let mut ts = raw_tensors(&w);
    let i = ts
        .iter()
        .position(|(n, ..)| n == "predictor.pos_embedding")
        .unwrap();
    ts[i].3[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    let e = load_err(&write_raw(meta.clone(), &ts), "nan.safetensors");
    assert!(
        e.contains("predictor.pos_embedding") && e.contains("non-finite"),
        "{e}"
    );
    // Unsupported dtype.
    let mut ts = raw_tensors(&w);
    ts[0].1 = safetensors::Dtype::I32;
    let e = load_err(&write_raw(meta.clone(), &ts), "i32.safetensors");
    assert!(e.contains("I32") && e.contains("F32, F16 or BF16"), "{e}");
    // No metadata at all.
    let e = load_err(
        &safetensors::serialize(
            raw_tensors(&w)
                .iter()
                .map(|(n, d, s, b)| {
                    (
                        n.clone(),
                        safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                    )
                })
                .collect::<Vec<_>>(),
            None,
        )
        .unwrap(),
        "nometa.safetensors",
    );
    assert!(e.contains("__metadata__"), "{e}");
}

#[test]
fn bad_input_names_expected_and_given() {
    let w = Weights::random(&ModelConfig::tiny(), 2).unwrap();
    let cpu = CpuModel::new(&w).unwrap();
    let c = ModelConfig::tiny();
    // Wrong image size.
    let px = frames_u8(1, 40, 1);
    let e = cpu
        .encode(&Frames::new(&px, 1, 40, 40).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("40x40") && e.contains("32x32"), "{e}");
    // Wrong action dimension.
    let z0 = cpu.upload(&randn(9 * 32, 1.0, 1), &[1, 9, 32]).unwrap();
    let p0 = cpu.upload(&[0.0, 0.0], &[1, 2]).unwrap();
    let a = cpu.upload(&randn(2 * 3 * 4, 1.0, 2), &[2, 3, 4]).unwrap();
    let e = cpu.rollout(&z0, &p0, &a).unwrap_err().to_string();
    assert!(e.contains("4 values per step") && e.contains("10"), "{e}");
    // History longer than num_hist.
    let h = cpu
        .upload(
            &vec![0.0; 4 * 9 * c.latent_dim()],
            &[1, 4, 9, c.latent_dim()],
        )
        .unwrap();
    let e = cpu.predict(&h).unwrap_err().to_string();
    assert!(e.contains("4 frames") && e.contains("num_hist = 3"), "{e}");
    let Some(ctx) = gpu() else { return };
    let g = GpuModel::new(ctx, &w).unwrap();
    let h = g
        .upload(
            &vec![0.0; 4 * 9 * c.latent_dim()],
            &[1, 4, 9, c.latent_dim()],
        )
        .unwrap();
    let e = g.predict(&h).unwrap_err().to_string();
    assert!(e.contains("4 frames") && e.contains("num_hist = 3"), "{e}");
    let a = g.upload(&randn(2 * 3 * 4, 1.0, 2), &[2, 3, 4]).unwrap();
    let z0 = g.upload(&randn(9 * 32, 1.0, 1), &[1, 9, 32]).unwrap();
    let p0 = g.upload(&[0.0, 0.0], &[1, 2]).unwrap();
    let e = g.rollout(&z0, &p0, &a).unwrap_err().to_string();
    assert!(e.contains("4 values per step") && e.contains("10"), "{e}");
}

/// Every public forward on GPU and CPU, same random weights.
fn parity(cfg: &ModelConfig, batch: usize, steps: usize, seed: u64, decode: bool) -> usize {
    let Some(ctx) = gpu() else { return 0 };
    let w = Weights::random(cfg, seed).unwrap();
    let g = GpuModel::new(ctx, &w).unwrap();
    let c = CpuModel::new(&w).unwrap();
    let s = cfg.image_size;
    let (n, de, wd) = (cfg.patches(), cfg.visual_dim(), cfg.latent_dim());
    let px = frames_u8(batch, s, seed + 1);
    let f = Frames::new(&px, batch, s, s).unwrap();
    let zg = g.encode(&f).unwrap();
    let zc = c.encode(&f).unwrap();
    let zc_h = c.download(&zc).unwrap();
    assert_close(&g.download(&zg).unwrap(), &zc_h, F32_TOL, "encoder");
    let p0 = randn(batch * cfg.proprio_dim, 1.0, seed + 2);
    let acts = randn(batch * steps * cfg.action_in(), 1.0, seed + 3);
    let ashape = [batch, steps, cfg.action_in()];
    let rg = g
        .rollout(
            &zg,
            &g.upload(&p0, &[batch, cfg.proprio_dim]).unwrap(),
            &g.upload(&acts, &ashape).unwrap(),
        )
        .unwrap();
    let rc = c
        .rollout(
            &zc,
            &c.upload(&p0, &[batch, cfg.proprio_dim]).unwrap(),
            &c.upload(&acts, &ashape).unwrap(),
        )
        .unwrap();
    assert_eq!(rg.steps(), steps + 1);
    let hg = g.rollout_to_host(&rg).unwrap();
    let hc = c.rollout_to_host(&rc).unwrap();
    for t in 0..=steps {
        assert_eq!(hc[t].len(), batch * n * wd);
        assert_close(&hg[t], &hc[t], F32_TOL, &format!("rollout frame {t}"));
    }
    let gv = randn(n * de, 1.0, seed + 4);
    let gp = randn(cfg.proprio_emb, 1.0, seed + 5);
    for mode in [ObjectiveMode::Last, ObjectiveMode::All { base: 2.0 }] {
        let cg = g
            .objective(
                &rg,
                &g.upload(&gv, &[n, de]).unwrap(),
                &g.upload(&gp, &[cfg.proprio_emb]).unwrap(),
                mode,
                0.5,
            )
            .unwrap();
        let cc = c
            .objective(
                &rc,
                &c.upload(&gv, &[n, de]).unwrap(),
                &c.upload(&gp, &[cfg.proprio_emb]).unwrap(),
                mode,
                0.5,
            )
            .unwrap();
        let cch = c.download(&cc).unwrap();
        assert_eq!(cch.len(), batch);
        assert_close(
            &g.download(&cg).unwrap(),
            &cch,
            F32_TOL,
            &format!("{mode:?}"),
        );
    }
    if decode {
        let dg = g.decode(&zg).unwrap();
        let dc = c.decode(&zc).unwrap();
        assert_eq!(GpuModel::dims(&dg), CpuModel::dims(&dc));
        assert_close(
            &g.download(&dg).unwrap(),
            &c.download(&dc).unwrap(),
            F32_TOL,
            "decoder",
        );
    }
    g.predictor_chunk()
}

#[test]
fn gpu_cpu_parity_tiny() {
    parity(&ModelConfig::tiny(), 3, 5, 11, true);
}

#[test]
fn gpu_cpu_parity_tiny_no_cls_no_layerscale() {
    let mut c = ModelConfig::tiny();
    c.encoder.cls_token = false;
    c.encoder.layerscale = false;
    c.num_hist = 2;
    c.decoder = None;
    parity(&c, 2, 3, 21, false);
}

#[test]
fn gpu_cpu_parity_full_dinowm_one_step() {
    // Full DINO-WM size, one sample, one rollout step (decoder left out: visualization only).
    let mut c = ModelConfig::dinowm();
    c.decoder = None;
    let chunk = parity(&c, 1, 1, 5, false);
    if gpu().is_some() {
        // A CEM batch of 300 at full size does not fit one binding: it must be split.
        assert!((1..300).contains(&chunk), "predictor chunk {chunk}");
    }
}

#[test]
fn gpu_batch_split_matches_unsplit() {
    let Some(ctx) = gpu() else { return };
    let cfg = ModelConfig::tiny();
    let w = Weights::random(&cfg, 7).unwrap();
    let mut g = GpuModel::new(ctx, &w).unwrap();
    let (n, de, b, t) = (cfg.patches(), cfg.visual_dim(), 5, 4);
    let s = cfg.encoder.resize;
    let px = g
        .upload(&uniform(b * 3 * s * s, -1.0, 1.0, 1), &[b, 3, s, s])
        .unwrap();
    let z0 = g.upload(&randn(n * de, 1.0, 2), &[1, n, de]).unwrap();
    let p0 = g.upload(&randn(cfg.proprio_dim, 1.0, 3), &[1, 2]).unwrap();
    let a = g
        .upload(
            &randn(b * t * cfg.action_in(), 1.0, 4),
            &[b, t, cfg.action_in()],
        )
        .unwrap();
    let gv = g.upload(&randn(n * de, 1.0, 5), &[n, de]).unwrap();
    let gp = g
        .upload(&randn(cfg.proprio_emb, 1.0, 6), &[cfg.proprio_emb])
        .unwrap();
    let run = |g: &GpuModel| {
        let e = g.download(&g.encode_pixels(&px).unwrap()).unwrap();
        let r = g.rollout(&z0, &p0, &a).unwrap();
        let chunks = r.chunks.len();
        let frames = g.rollout_to_host(&r).unwrap();
        let cost = g
            .download(&g.objective(&r, &gv, &gp, ObjectiveMode::Last, 1.0).unwrap())
            .unwrap();
        (e, frames, cost, chunks)
    };
    let (e1, f1, c1, n1) = run(&g);
    g.set_max_chunk(Some(2));
    assert_eq!(g.predictor_chunk(), 2);
    let (e2, f2, c2, n2) = run(&g);
    assert_eq!((n1, n2), (1, 3));
    assert_close(&e2, &e1, 1e-6, "encoder split");
    for (x, y) in f2.iter().zip(&f1) {
        assert_close(x, y, 1e-6, "rollout split");
    }
    assert_close(&c2, &c1, 1e-6, "costs split");
}

#[test]
fn cli_model_random_and_info() {
    let exe = env!("CARGO_BIN_EXE_qwm");
    let p = tmp("cli_tiny.safetensors");
    let out = std::process::Command::new(exe)
        .args([
            "model", "random", "--config", "tiny", "--dtype", "bf16", "--out",
        ])
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(exe)
        .args(["model", "info"])
        .arg(&p)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in ["config 'tiny'", "predictor", "decoder", "total", "54707"] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // A truncated file is a clear error, not a panic.
    let bytes = std::fs::read(&p).unwrap();
    let q = tmp("cli_trunc.safetensors");
    std::fs::write(&q, &bytes[..bytes.len() / 2]).unwrap();
    let out = std::process::Command::new(exe)
        .args(["model", "info"])
        .arg(&q)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("truncated or corrupt"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Frames of the wrong byte count.
    let e = Frames::new(&[0u8; 10], 1, 32, 32).unwrap_err().to_string();
    assert!(e.contains("10 bytes") && e.contains("3072"), "{e}");
}
