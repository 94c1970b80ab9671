// Matmul with packed low-bit weights, dequantized on the fly: Y[M, N] = X[M, K] * W^T + b with
// W[n, k] = (code - zero) * scale, one (scale, zero) per row n and group of GROUP inputs.
//
// Format (docs/QUANT.md, src/quant/pack.rs): codes are split into bit planes of 1, 2, 4 or 8
// bits (3 = 2 + 1, 6 = 4 + 2), each plane packed least-significant-first into u32 words, rows
// padded to a multiple of 32 codes; scales and zero points are f16, two per u32. Codes are
// decoded 8 at a time (a "unit"); groups are multiples of 32, so a unit never straddles one.
//
// Entry points:
//   qmatmul     f32 activations; lane = COLS output columns x ROWS rows of X (uniform loads).
//               ROWS = 8, COLS = 4 for token batches; ROWS = M (<= 8), COLS = 1 as a mat-vec.
//   qmatvec     f32 activations, M <= 8 on GPUs: one workgroup per output column; its lanes
//               split the row's 8-code units (adjacent lanes read adjacent words, so the weight
//               reads coalesce) and reduce in workgroup memory. Needs WG a power of two <= 64.
//   qmatmul_tiled  f32 activations, token batches on GPUs: a 64 x 64 tile of Y per workgroup
//               staged through workgroup memory, each weight decoded once per workgroup. With
//               BITS = 32 it reads a plain f32 weight [N, K] through `codes` (the float
//               baseline of the same tiling, used by ops::matmul on request).
//   qmatmul_a8  activations already quantized to u8 codes (quant_act.wgsl): integer dot products
//               per group, dot4U8Packed when INT_DOT, shifts and masks otherwise.
//   dequant     writes the dequantized weight (for tests: must equal the CPU bit for bit).

struct Params {
    M: u32,
    N: u32,
    K: u32,
    k_pad: u32,
    group: u32,       // inputs per group (k_pad for per-channel)
    groups: u32,      // groups per row
    has_bias: u32,
    asym: u32,        // 1: zero points stored; 0: implicit 2^(BITS-1)
    plane1_off: u32,  // word offset of the second bit plane
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> codes: array<u32>;
@group(0) @binding(3) var<storage, read> scales: array<u32>;
@group(0) @binding(4) var<storage, read> zeros: array<u32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;
@group(0) @binding(7) var<storage, read> xq: array<u32>;      // u8 activation codes
@group(0) @binding(8) var<storage, read> xparams: array<f32>; // per row: scale, zero
@group(0) @binding(9) var<storage, read> x4: array<vec4<f32>>; // x viewed as vec4 (K % 4 == 0)

override BITS: u32 = 4u;
override ROWS: u32 = 8u;   // <= 8
override COLS: u32 = 4u;   // <= 4
override INT_DOT: bool = true;
// K % 4 == 0: read X through the vec4 view, two loads per row and unit instead of eight
// (per-lane and uniform loads are what costs most on CPU drivers).
override X_VEC4: bool = false;

// Lanes per workgroup (8 on CPU drivers, 64 on GPUs; see GpuContext::lanes_per_workgroup).
override WG: u32 = 64u;


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

fn plane0_bits() -> u32 {
    return select(select(BITS, 4u, BITS == 6u), 2u, BITS == 3u);
}

struct Codes8 {
    lo: vec4<u32>,
    hi: vec4<u32>,
}

// The 8 codes of row n starting at k0 (k0 % 8 == 0).
fn decode8(n: u32, k0: u32) -> Codes8 {
    let p0 = plane0_bits();
    var out: Codes8;
    if (p0 == 8u) {
        let base = n * (p.k_pad / 4u) + k0 / 4u;
        let a = codes[base];
        let b = codes[base + 1u];
        out.lo = (vec4<u32>(a) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(255u);
        out.hi = (vec4<u32>(b) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(255u);
        return out;
    }
    // p0 in {1, 2, 4}: the unit's 8 * p0 bits sit in one word.
    let cpw0 = 32u / p0;
    let w0 = codes[n * (p.k_pad / cpw0) + k0 / cpw0] >> ((k0 % cpw0) * p0);
    let m0 = (1u << p0) - 1u;
    let s0 = vec4<u32>(0u, 1u, 2u, 3u) * p0;
    out.lo = (vec4<u32>(w0) >> s0) & vec4<u32>(m0);
    out.hi = (vec4<u32>(w0) >> (s0 + vec4<u32>(4u * p0))) & vec4<u32>(m0);
    let p1 = BITS - p0;
    if (p1 > 0u) {
        let cpw1 = 32u / p1;
        let w1 = codes[p.plane1_off + n * (p.k_pad / cpw1) + k0 / cpw1] >> ((k0 % cpw1) * p1);
        let m1 = (1u << p1) - 1u;
        let s1 = vec4<u32>(0u, 1u, 2u, 3u) * p1;
        out.lo |= ((vec4<u32>(w1) >> s1) & vec4<u32>(m1)) << vec4<u32>(p0);
        out.hi |= ((vec4<u32>(w1) >> (s1 + vec4<u32>(4u * p1))) & vec4<u32>(m1)) << vec4<u32>(p0);
    }
    return out;
}

fn f16_at(buf_is_zero: bool, i: u32) -> f32 {
    var w: u32;
    if (buf_is_zero) {
        w = zeros[i / 2u];
    } else {
        w = scales[i / 2u];
    }
    return unpack2x16float(w)[i % 2u];
}

fn zero_point(n: u32, g: u32) -> f32 {
    if (p.asym != 0u) {
        return f16_at(true, n * p.groups + g);
    }
    return f32(1u << (BITS - 1u));
}

// X[m, k0 .. k0 + 8], zero past K.
fn load_x8(m: u32, k0: u32, lo: ptr<function, vec4<f32>>, hi: ptr<function, vec4<f32>>) {
    let b = m * p.K + k0;
    if (X_VEC4) {
        *lo = x4[b / 4u];
        *hi = x4[min(b / 4u + 1u, arrayLength(&x4) - 1u)];
    } else {
        let last = m * p.K + p.K - 1u;
        *lo = vec4<f32>(x[b], x[min(b + 1u, last)], x[min(b + 2u, last)], x[min(b + 3u, last)]);
        *hi = vec4<f32>(x[min(b + 4u, last)], x[min(b + 5u, last)], x[min(b + 6u, last)],
            x[min(b + 7u, last)]);
    }
    // Only the last unit of a row can pass K; the test is uniform across the workgroup.
    if (k0 + 8u > p.K) {
        let lim = vec4<u32>(p.K - k0);
        *lo = select(vec4<f32>(0.0), *lo, vec4<u32>(0u, 1u, 2u, 3u) < lim);
        *hi = select(vec4<f32>(0.0), *hi, vec4<u32>(4u, 5u, 6u, 7u) < lim);
    }
}

@compute @workgroup_size(WG)
fn qmatmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n0 = (wid.x * WG + lid.x) * COLS;
    let m0 = wid.y * ROWS;
    var acc: array<vec4<f32>, 8>;
    for (var r = 0u; r < ROWS; r++) {
        acc[r] = vec4<f32>(0.0);
    }
    var ncl: array<u32, 4>;
    for (var j = 0u; j < COLS; j++) {
        ncl[j] = min(n0 + j, p.N - 1u);
    }
    for (var g = 0u; g < p.groups; g++) {
        var sc: array<f32, 4>;
        var zp: array<f32, 4>;
        for (var j = 0u; j < COLS; j++) {
            sc[j] = f16_at(false, ncl[j] * p.groups + g);
            zp[j] = zero_point(ncl[j], g);
        }
        let k_end = min((g + 1u) * p.group, p.K);
        for (var k0 = g * p.group; k0 < k_end; k0 += 8u) {
            var wlo: array<vec4<f32>, 4>;
            var whi: array<vec4<f32>, 4>;
            for (var j = 0u; j < COLS; j++) {
                let c = decode8(ncl[j], k0);
                wlo[j] = (vec4<f32>(c.lo) - zp[j]) * sc[j];
                whi[j] = (vec4<f32>(c.hi) - zp[j]) * sc[j];
            }
            if (COLS == 4u) {
                // Column-major: wk[i] holds input k0 + i of the 4 columns, so each product is
                // one FMA (a dot costs a multiply and an add per term, plus the reduction).
                var wk: array<vec4<f32>, 8>;
                for (var i = 0u; i < 4u; i++) {
                    wk[i] = vec4<f32>(wlo[0][i], wlo[1][i], wlo[2][i], wlo[3][i]);
                    wk[i + 4u] = vec4<f32>(whi[0][i], whi[1][i], whi[2][i], whi[3][i]);
                }
                for (var r = 0u; r < ROWS; r++) {
                    var xlo: vec4<f32>;
                    var xhi: vec4<f32>;
                    load_x8(min(m0 + r, p.M - 1u), k0, &xlo, &xhi);
                    var a = acc[r];
                    for (var i = 0u; i < 4u; i++) {
                        a = fma(vec4<f32>(xlo[i]), wk[i], a);
                        a = fma(vec4<f32>(xhi[i]), wk[i + 4u], a);
                    }
                    acc[r] = a;
                }
            } else {
                for (var r = 0u; r < ROWS; r++) {
                    var xlo: vec4<f32>;
                    var xhi: vec4<f32>;
                    load_x8(min(m0 + r, p.M - 1u), k0, &xlo, &xhi);
                    for (var j = 0u; j < COLS; j++) {
                        acc[r][j] += dot(xlo, wlo[j]) + dot(xhi, whi[j]);
                    }
                }
            }
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        for (var j = 0u; j < COLS; j++) {
            store_out(m0 + r, n0 + j, acc[r][j]);
        }
    }
}

// ROWS x WG partial sums of qmatvec (WG <= 64, ROWS <= 8).
var<workgroup> part: array<f32, 512>;

@compute @workgroup_size(WG)
fn qmatvec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let n = wid.x;
    let nc = min(n, p.N - 1u);
    var acc: array<f32, 8>;
    for (var r = 0u; r < ROWS; r++) {
        acc[r] = 0.0;
    }
    let units = (p.K + 7u) / 8u;
    for (var u = li; u < units; u += WG) {
        let k0 = u * 8u;
        let g = k0 / p.group;
        let sc = f16_at(false, nc * p.groups + g);
        let zp = zero_point(nc, g);
        let c = decode8(nc, k0);
        let wlo = (vec4<f32>(c.lo) - zp) * sc;
        let whi = (vec4<f32>(c.hi) - zp) * sc;
        for (var r = 0u; r < ROWS; r++) {
            var xlo: vec4<f32>;
            var xhi: vec4<f32>;
            load_x8(min(r, p.M - 1u), k0, &xlo, &xhi);
            acc[r] += dot(xlo, wlo) + dot(xhi, whi);
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        part[r * WG + li] = acc[r];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            for (var r = 0u; r < ROWS; r++) {
                part[r * WG + li] += part[r * WG + li + s];
            }
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        for (var r = 0u; r < ROWS; r++) {
            store_out(r, n, part[r * WG]);
        }
    }
}

// --- qmatmul_tiled ------------------------------------------------------------------------
// 256 lanes own a 64 x 64 tile of Y, 4 x 4 outputs each. Per step of 32 inputs every lane
// stages 8 activations of one X row and decodes one 8-code unit of one W row (64 rows x 4
// units = 256 units), so decoding costs one unit per lane per step whatever the tile's reuse;
// the FMAs then read both operands from workgroup memory as vec4s. Groups are multiples of 32,
// so a step never straddles two.
const TILE: u32 = 64u;
const TK: u32 = 32u;
var<workgroup> xs: array<vec4<f32>, 512>; // [TK][TILE / 4]: X transposed, 4 rows per vec4
var<workgroup> ws: array<vec4<f32>, 512>; // [TK][TILE / 4]: W transposed, 4 columns per vec4

// W[n, k0 .. k0 + 8] as f32 (k0 < K); past K the values are finite and meet zero activations.
fn weights8(n: u32, k0: u32, lo: ptr<function, vec4<f32>>, hi: ptr<function, vec4<f32>>) {
    if (BITS == 32u) {
        let last = n * p.K + p.K - 1u;
        let b = n * p.K + k0;
        for (var i = 0u; i < 4u; i++) {
            (*lo)[i] = bitcast<f32>(codes[min(b + i, last)]);
            (*hi)[i] = bitcast<f32>(codes[min(b + 4u + i, last)]);
        }
        return;
    }
    let c = decode8(n, k0);
    let g = k0 / p.group;
    let sc = f16_at(false, n * p.groups + g);
    let zp = zero_point(n, g);
    *lo = (vec4<f32>(c.lo) - zp) * sc;
    *hi = (vec4<f32>(c.hi) - zp) * sc;
}

@compute @workgroup_size(256)
fn qmatmul_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let n_base = wid.x * TILE;
    let m_base = wid.y * TILE;
    // Staging role: row sr of the tile's X and of its W, inputs su .. su + 8 of the step.
    let sr = li / 4u;
    let su = (li % 4u) * 8u;
    let xrow = min(m_base + sr, p.M - 1u);
    let wrow = min(n_base + sr, p.N - 1u);
    // Compute role: rows 4 ty .. 4 ty + 3 and columns 4 tx .. 4 tx + 3 of the tile.
    let tx = li % 16u;
    let ty = li / 16u;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    for (var kt = 0u; kt < p.K; kt += TK) {
        let k0 = kt + su;
        var xlo = vec4<f32>(0.0);
        var xhi = vec4<f32>(0.0);
        var wlo = vec4<f32>(0.0);
        var whi = vec4<f32>(0.0);
        if (k0 < p.K) {
            load_x8(xrow, k0, &xlo, &xhi);
            weights8(wrow, k0, &wlo, &whi);
        }
        for (var i = 0u; i < 4u; i++) {
            xs[(su + i) * 16u + sr / 4u][sr % 4u] = xlo[i];
            xs[(su + 4u + i) * 16u + sr / 4u][sr % 4u] = xhi[i];
            ws[(su + i) * 16u + sr / 4u][sr % 4u] = wlo[i];
            ws[(su + 4u + i) * 16u + sr / 4u][sr % 4u] = whi[i];
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a = xs[kk * 16u + ty];
            let b = ws[kk * 16u + tx];
            acc[0] = fma(vec4<f32>(a.x), b, acc[0]);
            acc[1] = fma(vec4<f32>(a.y), b, acc[1]);
            acc[2] = fma(vec4<f32>(a.z), b, acc[2]);
            acc[3] = fma(vec4<f32>(a.w), b, acc[3]);
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            store_out(m_base + ty * 4u + i, n_base + tx * 4u + j, acc[i][j]);
        }
    }
}

fn pack_bytes(c: vec4<u32>) -> u32 {
    return c.x | (c.y << 8u) | (c.z << 16u) | (c.w << 24u);
}

fn dot_u8(a: u32, b: u32) -> u32 {
    if (INT_DOT) {
        return dot4U8Packed(a, b);
    }
    let s = vec4<u32>(0u, 8u, 16u, 24u);
    let va = (vec4<u32>(a) >> s) & vec4<u32>(255u);
    let vb = (vec4<u32>(b) >> s) & vec4<u32>(255u);
    return va.x * vb.x + va.y * vb.y + va.z * vb.z + va.w * vb.w;
}

// Integer path: per group, sum_k (xq - zx)(c - zw) = Sxc - zw Sx - zx Sc + n zx zw, exact in
// 32-bit integers (at most 255 * 255 * 2048 per group), then scaled by sx * sw.
@compute @workgroup_size(WG)
fn qmatmul_a8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n0 = (wid.x * WG + lid.x) * COLS;
    let m0 = wid.y * ROWS;
    let xwords = p.k_pad / 4u;
    var acc: array<vec4<f32>, 8>;
    for (var r = 0u; r < ROWS; r++) {
        acc[r] = vec4<f32>(0.0);
    }
    var ncl: array<u32, 4>;
    for (var j = 0u; j < COLS; j++) {
        ncl[j] = min(n0 + j, p.N - 1u);
    }
    let ones = 0x01010101u;
    for (var g = 0u; g < p.groups; g++) {
        var sxc: array<vec4<u32>, 8>;
        var sx: array<u32, 8>;
        var scs: vec4<u32> = vec4<u32>(0u);
        for (var r = 0u; r < ROWS; r++) {
            sxc[r] = vec4<u32>(0u);
            sx[r] = 0u;
        }
        let k_start = g * p.group;
        // Units up to the group end within the padded row: padded codes hold the zero point,
        // so their (c - zw) terms vanish whatever the activation codes there.
        let k_end = min(k_start + p.group, p.k_pad);
        for (var k0 = k_start; k0 < k_end; k0 += 8u) {
            var cw: array<vec2<u32>, 4>;
            for (var j = 0u; j < COLS; j++) {
                let c = decode8(ncl[j], k0);
                cw[j] = vec2<u32>(pack_bytes(c.lo), pack_bytes(c.hi));
                scs[j] += dot_u8(cw[j].x, ones) + dot_u8(cw[j].y, ones);
            }
            for (var r = 0u; r < ROWS; r++) {
                let xb = min(m0 + r, p.M - 1u) * xwords + k0 / 4u;
                let xa = xq[xb];
                let xc = xq[xb + 1u];
                sx[r] += dot_u8(xa, ones) + dot_u8(xc, ones);
                for (var j = 0u; j < COLS; j++) {
                    sxc[r][j] += dot_u8(xa, cw[j].x) + dot_u8(xc, cw[j].y);
                }
            }
        }
        let cnt = i32(k_end - k_start);
        for (var j = 0u; j < COLS; j++) {
            let sw = f16_at(false, ncl[j] * p.groups + g);
            let zw = i32(zero_point(ncl[j], g));
            for (var r = 0u; r < ROWS; r++) {
                let m = min(m0 + r, p.M - 1u);
                let zx = i32(xparams[2u * m + 1u]);
                let isum = i32(sxc[r][j]) - zw * i32(sx[r]) - zx * i32(scs[j]) + cnt * zx * zw;
                acc[r][j] += xparams[2u * m] * sw * f32(isum);
            }
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        for (var j = 0u; j < COLS; j++) {
            store_out(m0 + r, n0 + j, acc[r][j]);
        }
    }
}

@compute @workgroup_size(WG)
fn dequant(@builtin(global_invocation_id) gid: vec3<u32>) {
    let units = p.k_pad / 8u;
    let i = gid.x + gid.y * 65535u * WG;
    if (i >= p.N * units) {
        return;
    }
    let n = i / units;
    let k0 = (i % units) * 8u;
    let g = k0 / p.group;
    let s = f16_at(false, n * p.groups + min(g, p.groups - 1u));
    let z = zero_point(n, min(g, p.groups - 1u));
    let c = decode8(n, k0);
    let lo = (vec4<f32>(c.lo) - z) * s;
    let hi = (vec4<f32>(c.hi) - z) * s;
    for (var t = 0u; t < 8u; t++) {
        let k = k0 + t;
        if (k < p.K) {
            var v = lo;
            if (t >= 4u) {
                v = hi;
            }
            y[n * p.K + k] = v[t % 4u];
        }
    }
}
