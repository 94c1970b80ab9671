// Dense f32 matmul: Y[M, N] = X[M, K] * W^T + b with the weight stored [N, K] (K contiguous,
// the PyTorch Linear layout).
//
// Why these tilings: on CPU Vulkan drivers (lavapipe) an invocation is one SIMD lane, loads that
// differ per lane are gathers, and workgroup barriers are expensive. So the kernels use no shared
// memory and keep a register tile per lane: every loaded value feeds several FMAs. In
// `matmul_nk4_u` the rows depend only on the workgroup id, so X loads are uniform (one load
// broadcast to every lane) and only the weight loads are gathers; on GPUs the same pattern is an
// L1 broadcast plus per-lane weight rows. `matmul_nk` is the scalar fallback for K % 4 != 0.

struct Params {
    M: u32,
    N: u32,
    K: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;



// y[m, n] = v + bias[n], skipping the tile's lanes past the edges of Y.
fn store_out(m: u32, n: u32, v: f32) {
    if (m < p.M && n < p.N) {
        var b = 0.0;
        if (p.has_bias != 0u) {
            b = bias[n];
        }
        y[m * p.N + n] = v + b;
    }
}

// Weight [N, K]. Lane = 4 rows x 4 columns register tile.
@compute @workgroup_size(8, 8)
fn matmul_nk(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n0 = gid.x * 4u;
    let m0 = gid.y * 4u;
    var acc: array<vec4<f32>, 4>;
    var xr: array<u32, 4>;
    var wr: array<u32, 4>;
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<f32>(0.0);
        xr[i] = min(m0 + i, p.M - 1u) * p.K;
        wr[i] = min(n0 + i, p.N - 1u) * p.K;
    }
    for (var k = 0u; k < p.K; k++) {
        let wv = vec4<f32>(w[wr[0] + k], w[wr[1] + k], w[wr[2] + k], w[wr[3] + k]);
        for (var i = 0u; i < 4u; i++) {
            acc[i] = fma(vec4<f32>(x[xr[i] + k]), wv, acc[i]);
        }
    }
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            store_out(m0 + i, n0 + j, acc[i][j]);
        }
    }
}

// Vec4 views of x and w, for K % 4 == 0.
@group(0) @binding(5) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> w4: array<vec4<f32>>;

// Lanes per workgroup of matmul_nk4_u (each owns 4 output columns).
override WG_U: u32 = 64u;

// Weight [N, K], K % 4 == 0. Lane = 4 rows x 4 columns, vec4 loads along K.
@compute @workgroup_size(8, 8)
fn matmul_nk4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n0 = gid.x * 4u;
    let m0 = gid.y * 4u;
    let k4 = p.K / 4u;
    var acc: array<vec4<f32>, 4>;
    var xr: array<u32, 4>;
    var wr: array<u32, 4>;
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<f32>(0.0);
        xr[i] = min(m0 + i, p.M - 1u) * k4;
        wr[i] = min(n0 + i, p.N - 1u) * k4;
    }
    for (var k = 0u; k < k4; k++) {
        let w0 = w4[wr[0] + k];
        let w1 = w4[wr[1] + k];
        let w2 = w4[wr[2] + k];
        let w3 = w4[wr[3] + k];
        for (var i = 0u; i < 4u; i++) {
            let xv = x4[xr[i] + k];
            acc[i] += vec4<f32>(dot(xv, w0), dot(xv, w1), dot(xv, w2), dot(xv, w3));
        }
    }
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            store_out(m0 + i, n0 + j, acc[i][j]);
        }
    }
}

// Weight [N, K], K % 4 == 0. Rows from the workgroup id (uniform loads), lane = 8 rows x 4 cols.
@compute @workgroup_size(WG_U)
fn matmul_nk4_u(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n0 = (wid.x * WG_U + lid.x) * 4u;
    let m0 = wid.y * 8u;
    let k4 = p.K / 4u;
    var acc: array<vec4<f32>, 8>;
    var wr: array<u32, 4>;
    for (var i = 0u; i < 8u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    for (var j = 0u; j < 4u; j++) {
        wr[j] = min(n0 + j, p.N - 1u) * k4;
    }
    let mlast = p.M - 1u;
    for (var k = 0u; k < k4; k++) {
        let w0 = w4[wr[0] + k];
        let w1 = w4[wr[1] + k];
        let w2 = w4[wr[2] + k];
        let w3 = w4[wr[3] + k];
        for (var i = 0u; i < 8u; i++) {
            let xv = x4[min(m0 + i, mlast) * k4 + k];
            acc[i] += vec4<f32>(dot(xv, w0), dot(xv, w1), dot(xv, w2), dot(xv, w3));
        }
    }
    for (var i = 0u; i < 8u; i++) {
        for (var j = 0u; j < 4u; j++) {
            store_out(m0 + i, n0 + j, acc[i][j]);
        }
    }
}

