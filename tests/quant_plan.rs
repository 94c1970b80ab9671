//! Quantized world models plan on both backends with the same numerics: the GPU runs packed
//! weights (and int8 activations), the CPU quantize-dequantize; their costs agree.

mod common;

use common::{assert_close, gpu};
use qwm::model::quantized::quantize_model;
use qwm::model::{CpuModel, GpuModel, ModelConfig, Weights};
use qwm::plan::calibrate::calibrate;
use qwm::plan::world::WorldPlanModel;
use qwm::plan::{PlanConfig, PlanModel};

fn costs<M: qwm::model::WorldModel>(m: &M, w: &Weights, acts: &[f32], n: usize) -> Vec<f32> {
    let env = qwm::env::make("wall").unwrap();
    let (s, g) = env.sample_start_goal(2);
    let size = w.config.image_size;
    let mut pm = WorldPlanModel::new(m, w.norm.clone(), 3, 1.0);
    pm.set_problem(
        &env.render_state(&s, size).unwrap(),
        &env.proprio_of(&s),
        &env.render_state(&g, size).unwrap(),
        &env.proprio_of(&g),
    )
    .unwrap();
    pm.costs(acts, n).unwrap()
}

#[test]
fn quantized_models_agree_across_backends_and_differ_from_float() {
    let Some(ctx) = gpu() else { return };
    let w = Weights::random(&ModelConfig::tiny(), 5).unwrap();
    let pc = PlanConfig {
        horizon: 3,
        step_dim: 10,
        samples: 16,
        topk: 4,
        opt_steps: 2,
        ..PlanConfig::default()
    };
    let stats = calibrate(&w, "wall", 1, &pc, 1.0).unwrap();
    assert!(stats.len() >= 8, "calibration saw {} linears", stats.len());
    assert!(stats.values().all(|s| s.count > 0 && s.min <= s.max));
    let n = 6;
    let acts = qwm::tensor::randn(n * 30, 1.0, 8);
    let fp = costs(&CpuModel::new(&w).unwrap(), &w, &acts, n);
    for (spec, tol) in [
        ("w8", 1e-3),
        ("w4g32", 1e-3),
        ("w8a8t", 5e-3),
        ("enc=w8a8,pred=w4g32a8", 5e-3),
    ] {
        let q = quantize_model(&w, &spec.parse().unwrap(), "rtn", Some(&stats)).unwrap();
        let g = costs(
            &GpuModel::new_quantized(ctx, &q).unwrap(),
            &q.weights,
            &acts,
            n,
        );
        let c = costs(&CpuModel::new_quantized(&q).unwrap(), &q.weights, &acts, n);
        assert_close(&g, &c, tol, &format!("{spec}: gpu vs cpu costs"));
        assert_ne!(c, fp, "{spec}: quantization changed nothing");
    }
}
