// Dense f32 matmul: Y[M, N] = X[M, K] * W^T + b, for a weight stored either [N, K] (K
// contiguous, the PyTorch Linear layout) or transposed [K, N] (N contiguous).
//
// Why these tilings: on CPU Vulkan drivers (lavapipe) an invocation is one SIMD lane and
// workgroup barriers are expensive, so the kernels use no shared memory. Rows of X depend only
// on the workgroup id, which makes their loads uniform (one scalar load broadcast to all lanes),
// while each lane owns its own output columns; on GPUs the same pattern becomes a broadcast
// from L1 plus coalesced weight loads.

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

override WG: u32 = 64u;

const ROWS: u32 = 8u;

// Weight [K, N]. Workgroup = ROWS rows x WG columns; lane = one column, ROWS accumulators.
@compute @workgroup_size(WG)
fn matmul_kn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n = wid.x * WG + lid.x;
    let m0 = wid.y * ROWS;
    let nc = min(n, p.N - 1u);
    var acc: array<f32, 8>;
    for (var r = 0u; r < ROWS; r++) {
        acc[r] = 0.0;
    }
    var rowbase: array<u32, 8>;
    for (var r = 0u; r < ROWS; r++) {
        rowbase[r] = min(m0 + r, p.M - 1u) * p.K;
    }
    for (var k = 0u; k < p.K; k++) {
        let wv = w[k * p.N + nc];
        for (var r = 0u; r < ROWS; r++) {
            acc[r] = fma(x[rowbase[r] + k], wv, acc[r]);
        }
    }
    if (n >= p.N) {
        return;
    }
    var b = 0.0;
    if (p.has_bias != 0u) {
        b = bias[n];
    }
    for (var r = 0u; r < ROWS; r++) {
        let m = m0 + r;
        if (m < p.M) {
            y[m * p.N + n] = acc[r] + b;
        }
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
        let m = m0 + i;
        if (m >= p.M) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + j;
            if (n < p.N) {
                var b = 0.0;
                if (p.has_bias != 0u) {
                    b = bias[n];
                }
                y[m * p.N + n] = acc[i][j] + b;
            }
        }
    }
}
