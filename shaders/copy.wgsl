// Plain copy, the bandwidth yardstick for the benchmarks: each lane moves one vec4.

struct Params {
    n4: u32,        // number of vec4 elements
    row_stride: u32, // lanes per dispatch row (workgroups.x * WG), for 2-D dispatches
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.row_stride + gid.x;
    if (i < p.n4) {
        dst[i] = src[i];
    }
}
