// Convolutions, NCHW, one lane per output element:
//   patchify:         image [B, C, H, W] -> patches [B, (H/P)*(W/P), C*P*P], (c, ky, kx) order,
//                     so patch embedding = patchify + matmul with the [D, C*P*P] conv weight
//   conv2d:           w [CO, CI, K, K], stride, padding
//   conv_transpose2d: w [CI, CO, K, K] (PyTorch ConvTranspose2d layout), stride, padding,
//                     output size (H - 1) * stride - 2 * padding + K

struct Params {
    n: u32,          // output elements
    row_stride: u32, // lanes per dispatch row
    batch: u32,
    cin: u32,
    cout: u32,
    h: u32,          // input height
    w: u32,          // input width
    ho: u32,         // output height (patchify: grid height)
    wo: u32,         // output width  (patchify: grid width)
    k: u32,          // kernel size (patchify: patch size)
    stride: u32,
    pad: u32,
    has_bias: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn patchify(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.row_stride + gid.x;
    if (i >= p.n) {
        return;
    }
    let kk = p.k * p.k;
    let cols = p.cin * kk;
    let c_all = i % cols;
    let row = i / cols;               // b * (ho * wo) + patch
    let pi = row % (p.ho * p.wo);
    let b = row / (p.ho * p.wo);
    let c = c_all / kk;
    let r = c_all % kk;
    let iy = (pi / p.wo) * p.k + r / p.k;
    let ix = (pi % p.wo) * p.k + r % p.k;
    y[i] = x[((b * p.cin + c) * p.h + iy) * p.w + ix];
}

@compute @workgroup_size(WG)
fn conv2d(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.row_stride + gid.x;
    if (i >= p.n) {
        return;
    }
    let ox = i % p.wo;
    let oy = (i / p.wo) % p.ho;
    let co = (i / (p.wo * p.ho)) % p.cout;
    let b = i / (p.wo * p.ho * p.cout);
    var acc = 0.0;
    if (p.has_bias != 0u) {
        acc = bias[co];
    }
    for (var ci = 0u; ci < p.cin; ci++) {
        let xbase = (b * p.cin + ci) * p.h;
        let wbase = (co * p.cin + ci) * p.k;
        for (var ky = 0u; ky < p.k; ky++) {
            let iy = i32(oy * p.stride + ky) - i32(p.pad);
            if (iy < 0 || iy >= i32(p.h)) {
                continue;
            }
            for (var kx = 0u; kx < p.k; kx++) {
                let ix = i32(ox * p.stride + kx) - i32(p.pad);
                if (ix < 0 || ix >= i32(p.w)) {
                    continue;
                }
                acc = fma(x[(xbase + u32(iy)) * p.w + u32(ix)], wt[(wbase + ky) * p.k + kx], acc);
            }
        }
    }
    y[i] = acc;
}

@compute @workgroup_size(WG)
fn conv_transpose2d(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.row_stride + gid.x;
    if (i >= p.n) {
        return;
    }
    let ox = i % p.wo;
    let oy = (i / p.wo) % p.ho;
    let co = (i / (p.wo * p.ho)) % p.cout;
    let b = i / (p.wo * p.ho * p.cout);
    var acc = 0.0;
    if (p.has_bias != 0u) {
        acc = bias[co];
    }
    let s = i32(p.stride);
    for (var ci = 0u; ci < p.cin; ci++) {
        let xbase = (b * p.cin + ci) * p.h;
        let wbase = (ci * p.cout + co) * p.k;
        for (var ky = 0u; ky < p.k; ky++) {
            // input row iy contributes to oy = iy * stride - pad + ky
            let ty = i32(oy) + i32(p.pad) - i32(ky);
            if (ty < 0 || ty % s != 0 || ty / s >= i32(p.h)) {
                continue;
            }
            let iy = u32(ty / s);
            for (var kx = 0u; kx < p.k; kx++) {
                let tx = i32(ox) + i32(p.pad) - i32(kx);
                if (tx < 0 || tx % s != 0 || tx / s >= i32(p.w)) {
                    continue;
                }
                let ix = u32(tx / s);
                acc = fma(x[(xbase + iy) * p.w + ix], wt[(wbase + ky) * p.k + kx], acc);
            }
        }
    }
    y[i] = acc;
}
