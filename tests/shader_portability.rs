//! Portability without the hardware: every shader entry point, with every override-constant
//! combination qwm uses (`qwm::gpu::variants`), goes through naga's MSL (Metal), HLSL (DX12),
//! SPIR-V (Vulkan) and GLSL (GL 4.3 core and GLES 3.1) backends, validated first against each
//! backend's capabilities. The SPIR-V is checked by Khronos' `spirv-val` and the GLSL by
//! `glslangValidator` (both from Debian, installed by .ci/install-deps.sh; required under
//! CI=true). MSL and HLSL are only translated: no Metal or DXC compiler runs here. Also checks
//! what each kernel needs (invocations, workgroup memory, storage buffers) against wgpu's
//! default limits, and that a workload's compiled pipelines are all in the variant list.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use naga::back::{glsl, hlsl, msl, spv, PipelineConstants};
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use naga::{AddressSpace, Module, ShaderStage};
use qwm::gpu::variants::{self, Variant};
use qwm::gpu::SHADERS;

fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// The external validator `tool`, or None (a visible notice; a failure under CI).
fn tool(name: &str) -> Option<&'static str> {
    let found = Command::new(name).arg("--version").output().is_ok();
    if found {
        return Some(Box::leak(name.to_string().into_boxed_str()));
    }
    assert!(
        !in_ci(),
        "CI=true but `{name}` is missing; .ci/install-deps.sh installs it (spirv-tools, glslang-tools)"
    );
    eprintln!("NOTICE: `{name}` not installed; its validation is not run (apt-get install spirv-tools glslang-tools)");
    None
}

fn validate(module: &Module, caps: Capabilities, what: &str) -> ModuleInfo {
    Validator::new(ValidationFlags::all(), caps)
        .validate(module)
        .unwrap_or_else(|e| panic!("{what}: naga validation failed: {e:?}"))
}

fn tmpdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("qwm_portability_{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run_tool(cmd: &str, args: &[&str], what: &str) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {cmd} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn constants(v: &Variant) -> PipelineConstants {
    let mut c = PipelineConstants::default();
    for (k, x) in &v.constants {
        c.insert(k.to_string(), *x);
    }
    c
}

fn label(v: &Variant) -> String {
    format!("{}.wgsl:{} {:?}", v.shader, v.entry, v.constants)
}

/// Resources an entry point uses after specialization.
#[derive(Debug, Default, Clone, Copy)]
struct Needs {
    invocations: u32,
    size: [u32; 3],
    workgroup_bytes: u32,
    storage_buffers: u32,
    uniform_buffers: u32,
}

fn needs(module: &Module, info: &ModuleInfo, entry: &str) -> Needs {
    let (i, ep) = module
        .entry_points
        .iter()
        .enumerate()
        .find(|(_, e)| e.name == entry)
        .unwrap();
    let fi = info.get_entry_point(i);
    let mut n = Needs {
        size: ep.workgroup_size,
        invocations: ep.workgroup_size.iter().product(),
        ..Default::default()
    };
    for (h, g) in module.global_variables.iter() {
        if fi[h].is_empty() {
            continue;
        }
        match g.space {
            AddressSpace::WorkGroup => {
                n.workgroup_bytes += module.types[g.ty].inner.size(module.to_ctx());
            }
            AddressSpace::Storage { .. } => n.storage_buffers += 1,
            AddressSpace::Uniform => n.uniform_buffers += 1,
            _ => {}
        }
    }
    n
}

#[test]
fn every_shader_variant_translates_for_metal_dx12_vulkan_and_gl() {
    let spirv_val = tool("spirv-val");
    let glslang = tool("glslangValidator");
    let dir = tmpdir();
    let all = variants::all();
    let defaults = wgpu::Limits::default();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut report: Vec<String> = Vec::new();
    // Files for the external validators, run in parallel batches at the end.
    let mut spv_files: Vec<(std::path::PathBuf, String)> = Vec::new();
    let mut glsl_files: Vec<(std::path::PathBuf, String)> = Vec::new();
    for (shader, src) in SHADERS {
        let module = naga::front::wgsl::parse_str(src)
            .unwrap_or_else(|e| panic!("{shader}.wgsl: {}", e.emit_to_string(src)));
        // Every entry point is in the variant list (a new kernel must be added there).
        let mine: Vec<&Variant> = all.iter().filter(|v| v.shader == *shader).collect();
        for ep in &module.entry_points {
            assert!(
                mine.iter().any(|v| v.entry == ep.name),
                "{shader}.wgsl:{} has no entry in qwm::gpu::variants::all()",
                ep.name
            );
        }
        assert!(
            !mine.is_empty(),
            "{shader}.wgsl is in SHADERS but has no variants"
        );
        // Validated once per backend capability set, as wgpu does for each backend.
        let infos = [
            (
                "msl",
                validate(&module, msl::supported_capabilities(), shader),
            ),
            (
                "hlsl",
                validate(&module, hlsl::supported_capabilities(), shader),
            ),
            (
                "spv",
                validate(&module, spv::supported_capabilities(), shader),
            ),
            (
                "glsl",
                validate(&module, glsl::supported_capabilities(), shader),
            ),
        ];
        for v in mine {
            let what = label(v);
            let consts = constants(v);
            for (backend, info) in &infos {
                let (m, i) = naga::back::pipeline_constants::process_overrides(
                    &module,
                    info,
                    Some((ShaderStage::Compute, v.entry)),
                    &consts,
                )
                .unwrap_or_else(|e| panic!("{what}: overrides: {e:?}"));
                match *backend {
                    "msl" => {
                        let opts = msl::Options {
                            lang_version: (2, 1),
                            ..Default::default()
                        };
                        let popts = msl::PipelineOptions {
                            entry_point: Some((ShaderStage::Compute, v.entry.to_string())),
                            ..Default::default()
                        };
                        msl::write_string(&m, &i, &opts, &popts)
                            .unwrap_or_else(|e| panic!("{what}: MSL: {e:?}"));
                    }
                    "hlsl" => {
                        // Shader model 5.1 is the FXC floor; 6.0 what DXC builds target.
                        for sm in [hlsl::ShaderModel::V5_1, hlsl::ShaderModel::V6_0] {
                            let opts = hlsl::Options {
                                shader_model: sm,
                                ..Default::default()
                            };
                            let popts = hlsl::PipelineOptions {
                                entry_point: Some((ShaderStage::Compute, v.entry.to_string())),
                            };
                            let mut out = String::new();
                            hlsl::Writer::new(&mut out, &opts, &popts)
                                .write(&m, &i, None)
                                .unwrap_or_else(|e| panic!("{what}: HLSL {sm:?}: {e:?}"));
                        }
                    }
                    "spv" => {
                        let popts = spv::PipelineOptions {
                            shader_stage: ShaderStage::Compute,
                            entry_point: v.entry.to_string(),
                        };
                        let words = spv::write_vec(&m, &i, &spv::Options::default(), Some(&popts))
                            .unwrap_or_else(|e| panic!("{what}: SPIR-V: {e:?}"));
                        if spirv_val.is_some() {
                            let p = dir.join(format!("k{}.spv", spv_files.len()));
                            std::fs::write(&p, bytemuck::cast_slice::<u32, u8>(&words)).unwrap();
                            spv_files.push((p, format!("{what} (SPIR-V)")));
                        }
                    }
                    _ => {
                        let mut bindings = glsl::BindingMap::default();
                        for (_, g) in m.global_variables.iter() {
                            if let Some(b) = &g.binding {
                                bindings.insert(*b, b.binding as u8);
                            }
                        }
                        for version in [glsl::Version::Desktop(430), glsl::Version::new_gles(310)] {
                            let opts = glsl::Options {
                                version,
                                binding_map: bindings.clone(),
                                ..Default::default()
                            };
                            let popts = glsl::PipelineOptions {
                                shader_stage: ShaderStage::Compute,
                                entry_point: v.entry.to_string(),
                                multiview: None,
                            };
                            let mut out = String::new();
                            glsl::Writer::new(
                                &mut out,
                                &m,
                                &i,
                                &opts,
                                &popts,
                                naga::proc::BoundsCheckPolicies::default(),
                            )
                            .and_then(|mut w| w.write())
                            .unwrap_or_else(|e| panic!("{what}: GLSL {version:?}: {e:?}"));
                            if glslang.is_some() {
                                let p = dir.join(format!("k{}.comp", glsl_files.len()));
                                std::fs::write(&p, &out).unwrap();
                                glsl_files.push((p, format!("{what} (GLSL {version:?})")));
                            }
                        }
                    }
                }
                *counts.entry(backend).or_default() += 1;
            }
            // What the kernel needs, against wgpu's defaults ("guaranteed to work on all
            // modern backends").
            let (m, i) = naga::back::pipeline_constants::process_overrides(
                &module,
                &infos[2].1,
                Some((ShaderStage::Compute, v.entry)),
                &consts,
            )
            .unwrap();
            let n = needs(&m, &i, v.entry);
            assert!(
                n.invocations <= defaults.max_compute_invocations_per_workgroup
                    && n.size[0] <= defaults.max_compute_workgroup_size_x
                    && n.size[1] <= defaults.max_compute_workgroup_size_y
                    && n.size[2] <= defaults.max_compute_workgroup_size_z
                    && n.workgroup_bytes <= defaults.max_compute_workgroup_storage_size
                    && n.storage_buffers <= defaults.max_storage_buffers_per_shader_stage
                    && n.uniform_buffers <= defaults.max_uniform_buffers_per_shader_stage,
                "{what} needs {n:?}, over wgpu's default limits"
            );
            report.push(format!(
                "{:<40} invocations {:>4} workgroup bytes {:>6} storage buffers {} uniform {}",
                format!("{}:{}", v.shader, v.entry),
                n.invocations,
                n.workgroup_bytes,
                n.storage_buffers,
                n.uniform_buffers
            ));
        }
    }
    // spirv-val takes one module per call; glslangValidator compiles many files per call.
    use rayon::prelude::*;
    if let Some(t) = spirv_val {
        spv_files.par_iter().for_each(|(p, what)| {
            run_tool(t, &["--target-env", "vulkan1.0", p.to_str().unwrap()], what)
        });
    }
    if let Some(t) = glslang {
        glsl_files.par_chunks(64).for_each(|chunk| {
            let args: Vec<&str> = chunk.iter().map(|(p, _)| p.to_str().unwrap()).collect();
            let names: Vec<String> = chunk
                .iter()
                .map(|(p, what)| format!("{}: {what}", p.display()))
                .collect();
            run_tool(t, &args, &format!("GLSL batch\n{}", names.join("\n")));
        });
    }
    eprintln!(
        "validated {} SPIR-V modules (spirv-val) and {} GLSL shaders (glslangValidator)",
        spv_files.len(),
        glsl_files.len()
    );
    report.sort();
    report.dedup();
    eprintln!("{}", report.join("\n"));
    eprintln!("translated (variant x backend): {counts:?}");
    assert_eq!(counts["msl"], all.len());
    std::fs::remove_dir_all(&dir).ok();
}

/// The variant list covers what the launchers compile: a workload through every op family on
/// the local adapter (here lavapipe) leaves only listed pipelines in the cache.
#[test]
fn compiled_pipelines_are_listed_variants() {
    let Some(ctx) = common::gpu() else { return };
    use qwm::gpu::{ops, qops, Recorder};
    use qwm::quant::{self, QuantContext, WeightSpec};
    use qwm::tensor::randn;
    let mut rec = Recorder::new(ctx);
    let x = ctx.upload(&randn(9 * 64, 1.0, 1), &[9, 64]).unwrap();
    let x3 = ctx.upload(&randn(3 * 66, 1.0, 1), &[3, 66]).unwrap();
    let w = ctx.upload(&randn(40 * 64, 0.1, 2), &[40, 64]).unwrap();
    let w3 = ctx.upload(&randn(40 * 66, 0.1, 2), &[40, 66]).unwrap();
    ops::matmul(&mut rec, &x, &w, None).unwrap();
    ops::matmul(&mut rec, &x3, &w3, None).unwrap();
    ops::matmul_tiled(&mut rec, &x, &w, None).unwrap();
    qwm::gpu::probe::copy(&mut rec, &x).unwrap();
    qwm::gpu::peak::fma_peak(&mut rec, 100, 3, 0.9, 0.1).unwrap();
    let qkv = ctx
        .upload(&randn(6 * 3 * 2 * 8, 1.0, 3), &[1, 6, 3 * 2 * 8])
        .unwrap();
    ops::attention(&mut rec, &qkv, 2, Some(3)).unwrap();
    let wf = randn(40 * 64, 0.1, 4);
    for bits in [2u8, 3, 4, 6, 8] {
        for group in [None, Some(32)] {
            let spec = WeightSpec { bits, group };
            let p = quant::method("rtn")
                .unwrap()
                .quantize(&wf, 40, 64, &spec, &QuantContext::default())
                .unwrap();
            let g = qops::GpuQuantWeight::upload(ctx, &p).unwrap();
            for k in [
                qops::QKernel::Lanes,
                qops::QKernel::Split,
                qops::QKernel::Tiled,
            ] {
                for m in [1usize, 3, 9] {
                    let xm = ctx.upload(&randn(m * 64, 1.0, 5), &[m, 64]).unwrap();
                    if k == qops::QKernel::Split && m > 8 {
                        continue;
                    }
                    qops::qmatmul_with(&mut rec, &xm, &g, None, k).unwrap();
                }
            }
            qwm::gpu::probe::dequant(&mut rec, &g).unwrap();
        }
    }
    rec.submit().unwrap();
    let listed = variants::all();
    let mut seen = BTreeSet::new();
    for (shader, entry, consts) in ctx.compiled_pipelines() {
        let v = Variant {
            shader,
            entry,
            constants: consts,
        };
        assert!(
            listed.contains(&v),
            "compiled but not in variants::all(): {}",
            label(&v)
        );
        seen.insert(format!("{shader}:{entry}"));
    }
    assert!(
        seen.len() >= 8,
        "workload compiled too few pipelines: {seen:?}"
    );
}
