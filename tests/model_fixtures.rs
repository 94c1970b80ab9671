//! qwm against PyTorch: fixtures written by tools/make_fixtures.py (DINO-WM's modules built in
//! PyTorch with small random weights), compared on the CPU reference and on the GPU; and a
//! DINO-WM run in DINO-WM's on-disk layout (tools/make_dinowm_fixture.py) converted by
//! tools/convert_dinowm.py, against the outputs of its own modules.

mod common;

use std::collections::BTreeMap;

use common::{assert_close, gpu, F32_TOL};
use qwm::model::format;
use qwm::model::{
    preprocess, CpuModel, Frames, GpuModel, HostTensor, ObjectiveMode, ResizeFilter, Weights,
    WorldModel,
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

/// The converted DINO-WM fixture and the expected outputs of the original modules.
fn dinowm_fixture() -> (Weights, BTreeMap<String, HostTensor>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let w = format::load(dir.join("dinowm_converted.safetensors")).unwrap();
    let p = dir.join("dinowm_expected.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let fx = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32, "{k}");
            let data = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let shape = v.shape().to_vec();
            (k, HostTensor { shape, data })
        })
        .collect();
    (w, fx)
}

#[test]
fn converted_dinowm_checkpoint_cpu() {
    let (w, fx) = dinowm_fixture();
    // What tools/convert_dinowm.py read from hydra.yaml and the pickled modules.
    let c = &w.config;
    assert_eq!(c.encoder.resize_filter, ResizeFilter::BilinearAntialias);
    assert_eq!((c.image_size, c.encoder.resize, c.grid()), (64, 16, 4));
    assert_eq!((c.encoder.heads, c.predictor.heads, c.num_hist), (6, 2, 3));
    let src = c.source.as_ref().expect("config.source");
    assert_eq!(src["kind"], "dinowm");
    assert_eq!(src["concat_dim"], 1);
    check(&CpuModel::new(&w).unwrap(), &fx, "cpu");
}

#[test]
fn converted_dinowm_checkpoint_gpu() {
    let Some(ctx) = gpu() else { return };
    let (w, fx) = dinowm_fixture();
    check(&GpuModel::new(ctx, &w).unwrap(), &fx, "gpu");
}

/// The encoder matched above only because the positional embedding was resized with DINOv2's
/// rule (scale_factor (G + 0.1) / M); resizing to size (G, G) gives clearly different values.
#[test]
fn converted_pos_embed_follows_dinov2_rule_not_size_rule() {
    let (w, fx) = dinowm_fixture();
    let pos = &w.tensors["encoder.pos_embed"];
    let d = w.config.encoder.width;
    let grid_part = &pos.data[d..]; // drop the CLS position
    let size_rule = &fx["fixture.pos_embed_size_rule"].data;
    let e = qwm::tensor::rel_error(grid_part, size_rule);
    assert!(
        e > 0.05,
        "pos_embed equals the size=(G, G) rule (rel diff {e:.3e})"
    );
    // ... and using the size rule's embedding moves the encoder output past the tolerance.
    let mut w2 = w.clone();
    w2.tensors.get_mut("encoder.pos_embed").unwrap().data[d..].copy_from_slice(size_rule);
    let m = CpuModel::new(&w2).unwrap();
    let fr = &fx["fixture.frames"];
    let bytes: Vec<u8> = fr.data.iter().map(|x| *x as u8).collect();
    let f = Frames::new(&bytes, fr.shape[0], fr.shape[1], fr.shape[2]).unwrap();
    let z = m.download(&m.encode(&f).unwrap()).unwrap();
    let e = qwm::tensor::rel_error(&z, &fx["fixture.encoded"].data);
    assert!(
        e > 10.0 * F32_TOL,
        "size rule encoder within {e:.3e} of DINOv2's"
    );
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
