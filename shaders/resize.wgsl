// Frame preprocessing on the GPU: u8 RGB HWC frames (packed 4 per u32, little-endian) ->
// f32 [B, 3, S, S] in [-1, 1] (x / 255 * 2 - 1), resized with half-pixel centres. The taps of
// each output index are computed here exactly as src/model/preprocess.rs computes them:
//   ANTIALIAS = false: bilinear, two taps (PyTorch F.interpolate, antialias=False);
//   ANTIALIAS = true:  triangle filter stretched by the scale when shrinking, normalized
//                      (PyTorch's antialiased bilinear, torchvision Resize).
// Rows are interpolated first, then between rows, as the CPU reference does.

struct Params {
    n: u32,          // output elements B * 3 * S * S
    h: u32,
    w: u32,
    s: u32,
    row_stride: u32, // lanes per dispatch row
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> frames: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

override WG: u32 = 256u;
override ANTIALIAS: bool = false;

fn pixel(b: u32, row: u32, col: u32, c: u32) -> f32 {
    let i = ((b * p.h + row) * p.w + col) * 3u + c;
    let v = (frames[i >> 2u] >> ((i & 3u) * 8u)) & 255u;
    return f32(v) / 255.0 * 2.0 - 1.0;
}

// Taps of output index o along an axis of n_in source pixels: first source index, count, and
// what the weight of tap k needs.
struct Taps {
    first: u32,
    count: u32,
    center: f32,
    inv: f32,
    norm: f32,
    frac: f32,
    last: u32,
}

fn taps(o: u32, n_in: u32) -> Taps {
    var t: Taps;
    let scale = f32(n_in) / f32(p.s);
    if (ANTIALIAS) {
        var support = 1.0;
        var inv = 1.0;
        if (scale >= 1.0) {
            support = scale;
            inv = 1.0 / scale;
        }
        let center = scale * (f32(o) + 0.5);
        // i32() truncates toward zero, like the C++ cast in PyTorch.
        let lo = u32(max(i32(center - support + 0.5), 0));
        let hi = u32(min(i32(center + support + 0.5), i32(n_in)));
        var total = 0.0;
        for (var j = lo; j < hi; j++) {
            total += max(0.0, 1.0 - abs((f32(j) - center + 0.5) * inv));
        }
        t.first = lo;
        t.count = hi - lo;
        t.center = center;
        t.inv = inv;
        t.norm = select(0.0, 1.0 / total, total != 0.0);
    } else {
        let src = max((f32(o) + 0.5) * scale - 0.5, 0.0);
        let i0 = min(u32(floor(src)), n_in - 1u);
        t.first = i0;
        t.count = 2u;
        t.frac = src - f32(i0);
        t.last = min(i0 + 1u, n_in - 1u);
    }
    return t;
}

fn tap_index(t: Taps, k: u32) -> u32 {
    if (ANTIALIAS) {
        return t.first + k;
    }
    return select(t.last, t.first, k == 0u);
}

fn tap_weight(t: Taps, k: u32) -> f32 {
    if (ANTIALIAS) {
        return max(0.0, 1.0 - abs((f32(t.first + k) - t.center + 0.5) * t.inv)) * t.norm;
    }
    return select(t.frac, 1.0 - t.frac, k == 0u);
}

@compute @workgroup_size(WG)
fn preprocess(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.row_stride + gid.x;
    if (i >= p.n) {
        return;
    }
    let ss = p.s * p.s;
    let plane = i / ss; // b * 3 + c
    let b = plane / 3u;
    let c = plane - b * 3u;
    let r = i - plane * ss;
    let oy = r / p.s;
    let ox = r - oy * p.s;
    let ty = taps(oy, p.h);
    let tx = taps(ox, p.w);
    var acc = 0.0;
    for (var ky = 0u; ky < ty.count; ky++) {
        let row = tap_index(ty, ky);
        var racc = 0.0;
        for (var kx = 0u; kx < tx.count; kx++) {
            racc += pixel(b, row, tap_index(tx, kx), c) * tap_weight(tx, kx);
        }
        acc += racc * tap_weight(ty, ky);
    }
    y[i] = acc;
}
