// Activation quantization to unsigned codes with a zero point, packed 4 per u32 (byte 0 first),
// rows padded to k_pad codes: code = clamp(round(x * inv_scale) + zero, 0, 2^BITS - 1).
// Static per-tensor: (scale, zero) from calibration, the same for every row. Dynamic per-token:
// each row's own range, always including 0. Each row's (scale, zero) goes to `xparams` for the
// integer matmul. One workgroup per row.

struct Params {
    M: u32,
    K: u32,
    k_pad: u32,
    dynamic: u32,
    scale: f32,     // static only
    inv_scale: f32, // static only
    zero: f32,      // static only
    groups_x: u32,  // workgroups per dispatch row
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> xq: array<u32>;
@group(0) @binding(3) var<storage, read_write> xparams: array<f32>;

override BITS: u32 = 8u;
const WG: u32 = 64u;

var<workgroup> lo_part: array<f32, WG>;
var<workgroup> hi_part: array<f32, WG>;
var<workgroup> row_scale: vec3<f32>; // scale, inv_scale, zero

@compute @workgroup_size(WG)
fn quant_act(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m = wid.y * p.groups_x + wid.x;
    if (m >= p.M) {
        return;
    }
    let lane = lid.x;
    let levels = f32((1u << BITS) - 1u);
    let base = m * p.K;
    if (p.dynamic != 0u) {
        var lo = 0.0;
        var hi = 0.0;
        for (var k = lane; k < p.K; k += WG) {
            lo = min(lo, x[base + k]);
            hi = max(hi, x[base + k]);
        }
        lo_part[lane] = lo;
        hi_part[lane] = hi;
        workgroupBarrier();
        if (lane == 0u) {
            for (var i = 1u; i < WG; i++) {
                lo = min(lo, lo_part[i]);
                hi = max(hi, hi_part[i]);
            }
            var scale = (hi - lo) * (1.0 / levels);
            if (scale <= 0.0) {
                scale = 1.0;
            }
            let inv = 1.0 / scale;
            let zero = clamp(round(-lo * inv), 0.0, levels);
            row_scale = vec3<f32>(scale, inv, zero);
        }
        workgroupBarrier();
    } else if (lane == 0u) {
        row_scale = vec3<f32>(p.scale, p.inv_scale, p.zero);
    }
    workgroupBarrier();
    let rs = row_scale;
    if (lane == 0u) {
        xparams[2u * m] = rs.x;
        xparams[2u * m + 1u] = rs.z;
    }
    let words = p.k_pad / 4u;
    for (var wi = lane; wi < words; wi += WG) {
        var packed = 0u;
        for (var t = 0u; t < 4u; t++) {
            let k = wi * 4u + t;
            var c = 0u;
            if (k < p.K) {
                c = u32(clamp(round(x[base + k] * rs.y) + rs.z, 0.0, levels));
            }
            packed |= c << (8u * t);
        }
        xq[m * words + wi] = packed;
    }
}
