// Elementwise ops: exact (erf) GELU, ReLU, residual add, and add with a per-feature scale
// (LayerScale). One lane per element; 2-D dispatch when the element count needs it.

struct Params {
    n: u32,          // elements
    cols: u32,       // last dimension (for per-feature scales)
    row_stride: u32, // lanes per dispatch row
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

override WG: u32 = 256u;

// erfc with fractional error below 1.2e-7 everywhere (Numerical Recipes' erfcc), so that
// GELU keeps its relative accuracy in the negative tail where 1 + erf(x) is tiny.
fn erfc_approx(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277))))))));
    let r = t * exp(poly);
    return select(2.0 - r, r, x >= 0.0);
}

fn gelu_erf(x: f32) -> f32 {
    // 0.5 x (1 + erf(x / sqrt 2)) = 0.5 x erfc(-x / sqrt 2)
    return 0.5 * x * erfc_approx(-x * 0.70710678118654752);
}

@compute @workgroup_size(WG)
fn gelu(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.row_stride + gid.x;
    if (i < p.n) {
        y[i] = gelu_erf(a[i]);
    }
}

@compute @workgroup_size(WG)
fn relu(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.row_stride + gid.x;
    if (i < p.n) {
        y[i] = max(a[i], 0.0);
    }
}

@compute @workgroup_size(WG)
fn add(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.row_stride + gid.x;
    if (i < p.n) {
        y[i] = a[i] + b[i];
    }
}

// y = a + scale[feature] * b
@compute @workgroup_size(WG)
fn add_scaled(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.row_stride + gid.x;
    if (i < p.n) {
        y[i] = fma(scale[i % p.cols], b[i], a[i]);
    }
}
