// LayerNorm over the last dimension: y = (x - mean) / sqrt(var + eps) * gamma + beta.
// One workgroup per row. Lanes stride over the row; partial sums meet in workgroup memory and
// lane 0 adds them up, so each reduction costs two barriers (barriers are slow on CPU drivers).

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    groups_x: u32, // workgroups per dispatch row: row = wid.y * groups_x + wid.x
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, WG>;
var<workgroup> total: f32;

fn workgroup_sum(v: f32, lane: u32) -> f32 {
    partial[lane] = v;
    workgroupBarrier();
    if (lane == 0u) {
        var s = 0.0;
        for (var i = 0u; i < WG; i++) {
            s += partial[i];
        }
        total = s;
    }
    workgroupBarrier();
    let t = total;
    // Keep the next reduction from overwriting `total` before every lane has read it.
    workgroupBarrier();
    return t;
}

@compute @workgroup_size(WG)
fn layernorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wid.y * p.groups_x + wid.x;
    let lane = lid.x;
    // Uniform per workgroup, so every lane reaches the barriers below.
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    var s = 0.0;
    for (var c = lane; c < p.cols; c += WG) {
        s += x[base + c];
    }
    let mean = workgroup_sum(s, lane) / f32(p.cols);
    var v = 0.0;
    for (var c = lane; c < p.cols; c += WG) {
        let d = x[base + c] - mean;
        v += d * d;
    }
    let var_ = workgroup_sum(v, lane) / f32(p.cols);
    let inv = 1.0 / sqrt(var_ + p.eps);
    for (var c = lane; c < p.cols; c += WG) {
        y[base + c] = (x[base + c] - mean) * inv * gamma[c] + beta[c];
    }
}
