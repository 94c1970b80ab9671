//! Shader sources and the compute-pipeline cache.
//!
//! Shaders are plain `.wgsl` files under `shaders/`, embedded at build time and specialized
//! only through WGSL `override` constants, so each file reads on its own. A pipeline is
//! compiled once per (shader, entry point, constants) and reused.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::{Error, Result};

/// Every shader file, by name.
pub const SHADERS: &[(&str, &str)] = &[
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    ("layernorm", include_str!("../../shaders/layernorm.wgsl")),
    (
        "elementwise",
        include_str!("../../shaders/elementwise.wgsl"),
    ),
    ("softmax", include_str!("../../shaders/softmax.wgsl")),
    ("concat", include_str!("../../shaders/concat.wgsl")),
    ("attention", include_str!("../../shaders/attention.wgsl")),
    ("conv", include_str!("../../shaders/conv.wgsl")),
    ("reduce", include_str!("../../shaders/reduce.wgsl")),
    ("copy", include_str!("../../shaders/copy.wgsl")),
    ("qmatmul", include_str!("../../shaders/qmatmul.wgsl")),
    ("quant_act", include_str!("../../shaders/quant_act.wgsl")),
    ("fma_peak", include_str!("../../shaders/fma_peak.wgsl")),
    ("resize", include_str!("../../shaders/resize.wgsl")),
];

pub fn shader_source(name: &str) -> Option<&'static str> {
    SHADERS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// A compiled pipeline: (shader, entry point, constants sorted by name).
pub type CompiledPipeline = (&'static str, &'static str, Vec<(&'static str, f64)>);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PipelineKey {
    shader: &'static str,
    entry: &'static str,
    /// Override constants, sorted by name; values stored as f64 bits so the key is hashable.
    constants: Vec<(&'static str, u64)>,
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
}

impl PipelineCache {
    pub fn get(
        &self,
        device: &wgpu::Device,
        shader: &'static str,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<wgpu::ComputePipeline> {
        let mut sorted: Vec<(&'static str, f64)> = constants.to_vec();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let key = PipelineKey {
            shader,
            entry,
            constants: sorted.iter().map(|(k, v)| (*k, v.to_bits())).collect(),
        };
        if let Some(p) = self
            .pipelines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return Ok(p.clone());
        }
        let module = {
            let mut modules = self
                .modules
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match modules.get(shader) {
                Some(m) => m.clone(),
                None => {
                    let src = shader_source(shader).ok_or_else(|| {
                        Error::Gpu(format!("unknown shader {shader:?} (not in SHADERS)"))
                    })?;
                    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
                    let m = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(shader),
                        source: wgpu::ShaderSource::Wgsl(src.into()),
                    });
                    if let Some(e) = pollster::block_on(scope.pop()) {
                        return Err(Error::Gpu(format!("shader {shader}.wgsl: {e}")));
                    }
                    modules.insert(shader, m.clone());
                    m
                }
            }
        };
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &sorted,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!(
                "pipeline {shader}.wgsl:{entry} {sorted:?}: {e}"
            )));
        }
        self.pipelines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }

    pub fn len(&self) -> usize {
        self.pipelines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Every compiled pipeline as (shader, entry point, constants sorted by name).
    pub fn compiled(&self) -> Vec<CompiledPipeline> {
        self.pipelines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .map(|k| {
                let c = k.constants.iter().map(|(n, v)| (*n, f64::from_bits(*v)));
                (k.shader, k.entry, c.collect())
            })
            .collect()
    }
}
