// Softmax over the last dimension, one workgroup per row (max-subtracted for stability).

struct Params {
    rows: u32,
    cols: u32,
    groups_x: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, WG>;
var<workgroup> total: f32;

// Reduce with max (is_max) or sum; two barriers, lane 0 combines.
fn workgroup_reduce(v: f32, lane: u32, is_max: bool) -> f32 {
    partial[lane] = v;
    workgroupBarrier();
    if (lane == 0u) {
        var s = partial[0];
        for (var i = 1u; i < WG; i++) {
            if (is_max) {
                s = max(s, partial[i]);
            } else {
                s += partial[i];
            }
        }
        total = s;
    }
    workgroupBarrier();
    let t = total;
    workgroupBarrier();
    return t;
}

@compute @workgroup_size(WG)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wid.y * p.groups_x + wid.x;
    let lane = lid.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    var m = -3.4028235e38;
    for (var c = lane; c < p.cols; c += WG) {
        m = max(m, x[base + c]);
    }
    let rmax = workgroup_reduce(m, lane, true);
    var s = 0.0;
    for (var c = lane; c < p.cols; c += WG) {
        s += exp(x[base + c] - rmax);
    }
    let inv = 1.0 / workgroup_reduce(s, lane, false);
    for (var c = lane; c < p.cols; c += WG) {
        y[base + c] = exp(x[base + c] - rmax) * inv;
    }
}
