//! qwm against PyTorch: fixtures written by tools/make_fixtures.py (DINO-WM's modules built in
//! PyTorch with small random weights), compared on the CPU reference and on the GPU.

mod common;

use std::collections::BTreeMap;

use common::{assert_close, gpu, F32_TOL};
use qwm::model::format;
use qwm::model::{
    preprocess, CpuModel, Frames, GpuModel, HostTensor, ObjectiveMode, Weights, WorldModel,
};

fn fixture(name: &str) -> (Weights, BTreeMap<String, HostTensor>) {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.safetensors"));
    format::load_extra(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn check<M: WorldModel>(m: &M, fx: &BTreeMap<String, HostTensor>, backend: &str) {
    let cfg = m.config().clone();
    let g = |k: &str| {
        fx.get(&format!("fixture.{k}"))
            .unwrap_or_else(|| panic!("{k}"))
    };
    let up = |k: &str| {
        let t = g(k);
        m.upload(&t.data, &t.shape).unwrap()
    };
    let what = |s: &str| format!("{backend} {} {s}", cfg.name);
    // Preprocessing (host, shared) and encoder from u8 frames.
    let fr = g("frames");
    let bytes: Vec<u8> = fr.data.iter().map(|x| *x as u8).collect();
    let b = fr.shape[0];
    let f = Frames::new(&bytes, b, fr.shape[1], fr.shape[2]).unwrap();
    assert_close(
        &preprocess(&f, &cfg).unwrap(),
        &g("pixels").data,
        F32_TOL,
        &what("preprocess"),
    );
    let z = m.encode(&f).unwrap();
    assert_close(
        &m.download(&z).unwrap(),
        &g("encoded").data,
        F32_TOL,
        &what("encoder"),
    );
    let z = up("encoded");
    // Embeddings.
    let pe = m.embed_proprio(&up("proprio0")).unwrap();
    assert_close(
        &m.download(&pe).unwrap(),
        &g("proprio_emb").data,
        F32_TOL,
        &what("proprio emb"),
    );
    let ae = m.embed_action(&up("actions")).unwrap();
    assert_close(
        &m.download(&ae).unwrap(),
        &g("action_emb").data,
        F32_TOL,
        &what("action emb"),
    );
    // Predictor.
    let p = m.predict(&up("history")).unwrap();
    assert_close(
        &m.download(&p).unwrap(),
        &g("predicted").data,
        F32_TOL,
        &what("predictor"),
    );
    // Rollout: fixture.rollout is [B, T+1, N, W]; ours is frames of [B, N, W].
    let r = m.rollout(&z, &up("proprio0"), &up("actions")).unwrap();
    let frames = m.rollout_to_host(&r).unwrap();
    let want = &g("rollout");
    let steps = want.shape[1];
    assert_eq!(frames.len(), steps, "{}", what("rollout steps"));
    let per = want.data.len() / (b * steps);
    for (t, fr) in frames.iter().enumerate() {
        let w: Vec<f32> = (0..b)
            .flat_map(|i| want.data[(i * steps + t) * per..(i * steps + t + 1) * per].to_vec())
            .collect();
        assert_close(fr, &w, F32_TOL, &what(&format!("rollout frame {t}")));
    }
    // Objective, both modes.
    let alpha = g("alpha").data[0];
    let base = g("base").data[0];
    for (mode, key) in [
        (ObjectiveMode::Last, "cost_last"),
        (ObjectiveMode::All { base }, "cost_all"),
    ] {
        let c = m
            .objective(&r, &up("goal_visual"), &up("goal_proprio"), mode, alpha)
            .unwrap();
        assert_close(&m.download(&c).unwrap(), &g(key).data, F32_TOL, &what(key));
    }
    // Decoder.
    if cfg.decoder.is_some() {
        let d = m.decode(&z).unwrap();
        assert_eq!(M::dims(&d), g("decoded").shape);
        assert_close(
            &m.download(&d).unwrap(),
            &g("decoded").data,
            F32_TOL,
            &what("decoder"),
        );
    }
}

#[test]
fn pytorch_fixtures_cpu() {
    for name in ["tiny_wm", "plain_wm"] {
        let (w, fx) = fixture(name);
        check(&CpuModel::new(&w).unwrap(), &fx, "cpu");
    }
}

#[test]
fn pytorch_fixtures_gpu() {
    let Some(ctx) = gpu() else { return };
    for name in ["tiny_wm", "plain_wm"] {
        let (w, fx) = fixture(name);
        check(&GpuModel::new(ctx, &w).unwrap(), &fx, "gpu");
    }
}

#[test]
fn fixture_metadata_roundtrips() {
    let (w, _) = fixture("tiny_wm");
    assert_eq!(w.config.name, "fixture-tiny");
    assert_eq!(w.norm.action_std, vec![1.0, 1.5]);
    let raw = [1.0f32, 2.0, 3.0, 4.0];
    let n = w.norm.normalize_actions(&raw);
    assert_close(&n, &[1.0, 1.9 / 1.5, 3.0, 3.9 / 1.5], 1e-6, "normalize");
    let back = w.norm.denormalize_actions(&n);
    assert_close(&back, &raw, 1e-6, "denormalize");
}
