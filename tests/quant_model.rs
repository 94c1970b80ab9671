//! Quantizing a whole model: which layers, the quantized file round trip, and bad files.

use qwm::model::quantized::{self as qm, quantized_linears, Module};
use qwm::model::{ModelConfig, Weights};
use qwm::quant::QuantSpec;

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("qwm-qmodel-{}-{name}", std::process::id()))
}

#[test]
fn quantizes_exactly_the_study_layers_and_round_trips_through_a_file() {
    let w = Weights::random(&ModelConfig::tiny(), 1).unwrap();
    let spec: QuantSpec = "enc=w8,pred=w4g32".parse().unwrap();
    let q = qm::quantize_model(&w, &spec, "omse", None).unwrap();
    let names = quantized_linears(&w.config);
    assert_eq!(q.packed.len(), names.len());
    for (n, m) in &names {
        let p = &q.packed[n];
        assert_eq!(p.bits, if *m == Module::Encoder { 8 } else { 4 }, "{n}");
        // Packed only; the f32 reference is built on demand.
        assert!(q.weights.get(n).is_err(), "{n} has an f32 copy");
        assert_eq!(
            q.dequantized().unwrap().get(n).unwrap().data,
            p.dequantize(),
            "{n}"
        );
    }
    assert_eq!(q.quantized_f32_bytes(), 0);
    // Everything else stays float and untouched.
    for (name, t) in &w.tensors {
        if !q.packed.contains_key(name) {
            assert_eq!(&q.weights.get(name).unwrap().data, &t.data, "{name}");
        }
    }
    let path = tmp("rt.safetensors");
    qm::save(&q, &path).unwrap();
    assert!(qm::is_quantized_file(&path).unwrap());
    let back = qm::load(&path).unwrap();
    assert_eq!(back.spec, spec);
    assert_eq!(back.method, "omse");
    assert_eq!(back.packed, q.packed);
    assert_eq!(back.weights.tensors, q.weights.tensors);
    let (qb, fb) = back.linear_bytes();
    assert!(qb * 3 < fb, "{qb} vs {fb}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn quantized_cpu_planning_holds_no_f32_copy_of_a_quantized_weight() {
    use qwm::app::{LoadedModel, ModelSource};
    use qwm::model::CpuModel;
    for spec in ["w8a8t", "w4g32"] {
        let m = LoadedModel::for_bench(&ModelSource::Preset("tiny".into()))
            .unwrap()
            .quantized_for_bench(spec)
            .unwrap();
        let q = m.quant().unwrap();
        assert!(!q.packed.is_empty());
        assert_eq!(m.quantized_f32_bytes(), 0, "{spec}");
        assert!(q
            .packed
            .keys()
            .all(|n| !m.weights().tensors.contains_key(n)));
        let layers = CpuModel::new_quantized(q).unwrap().linear_weight_bytes();
        let mut packed = 0;
        for (name, f32_bytes, packed_bytes, panel_bytes) in &layers {
            match q.packed.get(name) {
                Some(p) => {
                    assert_eq!(*f32_bytes, 0, "{spec}: {name} holds f32");
                    assert_eq!(*packed_bytes, p.bytes(), "{spec}: {name}");
                    // Panels: int ones a byte per code plus 12 bytes per row and group,
                    // nibble ones (4-bit weight-only) half a byte per code; rows padded to
                    // a panel.
                    let rows = p.n.next_multiple_of(32);
                    let most = match spec {
                        "w8a8t" => rows * (p.k_pad() + 12 * p.groups_per_row()),
                        _ => rows * p.k / 2,
                    };
                    assert!(*panel_bytes > 0 && *panel_bytes <= most, "{spec}: {name}");
                    packed += 1;
                }
                None => assert!(*f32_bytes > 0 && *packed_bytes == 0 && *panel_bytes == 0),
            }
        }
        assert_eq!(packed, q.packed.len(), "{spec}");
        // The fake-quant reference does hold f32 weights: the accessor can tell.
        let r = CpuModel::new_quantized_reference(q).unwrap();
        assert!(r
            .linear_weight_bytes()
            .iter()
            .all(|l| l.1 > 0 && l.2 == 0 && l.3 == 0));
    }
}

#[test]
fn module_specs_apply_independently() {
    let w = Weights::random(&ModelConfig::tiny(), 2).unwrap();
    let q = qm::quantize_model(&w, &"pred=w3".parse().unwrap(), "rtn", None).unwrap();
    assert!(q.packed.keys().all(|k| k.starts_with("predictor.")));
    assert!(!q.packed.is_empty());
}

#[test]
fn static_activations_need_calibration() {
    let w = Weights::random(&ModelConfig::tiny(), 3).unwrap();
    let e = qm::quantize_model(&w, &"w8a8".parse().unwrap(), "rtn", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("calibration"), "{e}");
    // Dynamic per-token activations need none.
    qm::quantize_model(&w, &"w8a8t".parse().unwrap(), "rtn", None).unwrap();
}

#[test]
fn truncated_or_mismatched_files_are_clear_errors() {
    let w = Weights::random(&ModelConfig::tiny(), 4).unwrap();
    let q = qm::quantize_model(&w, &"w4g32".parse().unwrap(), "rtn", None).unwrap();
    let path = tmp("bad.safetensors");
    qm::save(&q, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let e = qm::load(&path).unwrap_err().to_string();
    assert!(e.contains("truncated or corrupt"), "{e}");
    // Metadata claims the encoder is quantized but its codes are gone: rewrite with a layer
    // dropped from the packed set.
    let mut q2 = q.clone();
    let first = q2.packed.keys().next().unwrap().clone();
    q2.packed.remove(&first);
    qm::save(&q2, &path).unwrap();
    let e = qm::load(&path).unwrap_err().to_string();
    assert!(e.contains(&first) && e.contains("not quantized"), "{e}");
    std::fs::remove_file(&path).unwrap();
}
