// Per-batch-item mean squared error: out[b] = mean_l (a[b, l] - g[b, l])^2, where the target g
// is either per item (g_stride = L) or one shared goal broadcast to all items (g_stride = 0).
// One workgroup per item.

struct Params {
    items: u32,
    len: u32,
    g_stride: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn mse_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let item = wid.x + wid.y * 65535u;
    if (item >= p.items) {
        return;
    }
    let lane = lid.x;
    let abase = item * p.len;
    let gbase = item * p.g_stride;
    var s = 0.0;
    for (var l = lane; l < p.len; l += WG) {
        let d = a[abase + l] - g[gbase + l];
        s = fma(d, d, s);
    }
    partial[lane] = s;
    workgroupBarrier();
    if (lane == 0u) {
        var t = 0.0;
        for (var i = 0u; i < WG; i++) {
            t += partial[i];
        }
        out[item] = t / f32(p.len);
    }
}
