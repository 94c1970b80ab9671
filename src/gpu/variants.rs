//! Every pipeline qwm can compile: (shader, entry point, override constants), derived from the
//! rules the launchers use to pick constants. tests/shader_portability.rs translates each
//! through naga's MSL, HLSL, SPIR-V and GLSL backends, so a kernel that Metal, DX12 or GL
//! would reject fails CI on a machine that has only Vulkan. When a launcher starts passing a
//! new constant value, add it here; the test also checks, on the local adapter, that every
//! pipeline compiled by a representative workload is in this list.

use crate::quant::spec::{ACT_BITS, WEIGHT_BITS};

/// One pipeline: shader name (as in [`super::SHADERS`]), entry point, constants.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    pub shader: &'static str,
    pub entry: &'static str,
    pub constants: Vec<(&'static str, f64)>,
}

/// Lanes per workgroup that [`super::GpuContext::lanes_per_workgroup`] returns without
/// `QWM_WG`: 64 on GPUs, the subgroup size clamped to 4..=64 on CPU drivers.
pub const LANES: [usize; 5] = [4, 8, 16, 32, 64];

fn v(shader: &'static str, entry: &'static str, c: &[(&'static str, f64)]) -> Variant {
    Variant {
        shader,
        entry,
        constants: c.to_vec(),
    }
}

/// Tiles of `qops::tile`: (rows, cols) for M <= 8 with 1 (GPUs) or 4 (CPU drivers) columns
/// per lane; the token-batch tile (8, 4) is among them.
fn q_tiles() -> Vec<(u32, u32)> {
    [1u32, 2, 4, 8]
        .iter()
        .flat_map(|&r| [(r, 1), (r, 4)])
        .collect()
}

pub fn all() -> Vec<Variant> {
    let mut out = Vec::new();
    let wg256 = [("WG", 256.0)];
    for &wg in &LANES {
        let w = wg as f64;
        out.push(v("matmul", "matmul_nk4_u", &[("WG_U", w)]));
        out.push(v("attention", "attention", &[("WG", w)]));
        out.push(v("fma_peak", "fma_peak", &[("WG", w)]));
    }
    out.push(v("matmul", "matmul_nk", &[]));
    out.push(v("matmul", "matmul_nk4", &[]));
    out.push(v("copy", "copy", &wg256));
    for e in ["gelu", "relu", "add", "add_scaled"] {
        out.push(v("elementwise", e, &wg256));
    }
    for e in ["concat_tile", "slice_cols"] {
        out.push(v("concat", e, &wg256));
    }
    for e in ["patchify", "conv2d", "conv_transpose2d"] {
        out.push(v("conv", e, &wg256));
    }
    for aa in [0.0, 1.0] {
        out.push(v(
            "resize",
            "preprocess",
            &[("ANTIALIAS", aa), ("WG", 256.0)],
        ));
    }
    out.push(v("layernorm", "layernorm", &[]));
    out.push(v("softmax", "softmax", &[]));
    out.push(v("reduce", "mse_rows", &[]));
    for &b in &ACT_BITS {
        out.push(v("quant_act", "quant_act", &[("BITS", b as f64)]));
    }
    for &bits in &WEIGHT_BITS {
        let b = bits as f64;
        out.push(v("qmatmul", "dequant", &[("BITS", b)]));
        for x4 in [0.0, 1.0] {
            // Register-tiled f32-activation kernel (qmatmul): any tile, the adapter's lanes.
            for (r, c) in q_tiles() {
                for &wg in &LANES {
                    out.push(v(
                        "qmatmul",
                        "qmatmul",
                        &[
                            ("BITS", b),
                            ("ROWS", r as f64),
                            ("COLS", c as f64),
                            ("X_VEC4", x4),
                            ("WG", wg as f64),
                        ],
                    ));
                }
            }
            // Split-K mat-vec: one row per activation row (1..=8), 8..=64 lanes.
            for m in 1..=8 {
                for wg in [8.0, 16.0, 32.0, 64.0] {
                    out.push(v(
                        "qmatmul",
                        "qmatvec",
                        &[
                            ("BITS", b),
                            ("ROWS", m as f64),
                            ("COLS", 1.0),
                            ("X_VEC4", x4),
                            ("WG", wg),
                        ],
                    ));
                }
            }
        }
        // Int8-activation kernel: INT_DOT on or off, same tiles and lanes.
        for int_dot in [0.0, 1.0] {
            for (r, c) in q_tiles() {
                for &wg in &LANES {
                    out.push(v(
                        "qmatmul",
                        "qmatmul_a8",
                        &[
                            ("BITS", b),
                            ("ROWS", r as f64),
                            ("COLS", c as f64),
                            ("INT_DOT", int_dot),
                            ("WG", wg as f64),
                        ],
                    ));
                }
            }
        }
    }
    // Workgroup-tiled kernel, quantized weights and the f32 twin (BITS = 32).
    for bits in WEIGHT_BITS.iter().map(|&b| b as f64).chain([32.0]) {
        for x4 in [0.0, 1.0] {
            out.push(v(
                "qmatmul",
                "qmatmul_tiled",
                &[
                    ("BITS", bits),
                    ("ROWS", 1.0),
                    ("COLS", 1.0),
                    ("X_VEC4", x4),
                    ("WG", 256.0),
                ],
            ));
        }
    }
    for c in out.iter_mut() {
        c.constants.sort_by(|a, b| a.0.cmp(b.0));
    }
    out
}
