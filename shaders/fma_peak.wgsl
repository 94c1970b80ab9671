// FMA peak probe: how many fused multiply-adds per second the adapter issues when nothing else
// limits it. Each lane runs 8 independent vec4 chains (32 scalar FMAs per iteration, enough to
// hide FMA latency on GPUs and to fill 256-bit SIMD on CPU drivers) of `a = a * b + c`, with
// `b`, `c` and the trip count from a uniform so that the compiler can neither fold nor shorten
// the loop, and stores one sum per lane so that no chain is dead code. With b < 1 the chains
// converge to c / (1 - b) and stay finite for any trip count.

struct Params {
    lanes: u32,      // lanes that do work (the grid may be larger)
    iters: u32,      // loop trips per lane
    row_stride: u32, // lanes per dispatch row (workgroups.x * WG), for 2-D dispatches
    _p0: u32,
    b: f32,
    c: f32,
    _p1: f32,
    _p2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn fma_peak(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.row_stride + gid.x;
    if (i >= p.lanes) {
        return;
    }
    let x = f32(i % 1024u) * (1.0 / 1024.0);
    var a0 = vec4<f32>(x, x + 0.125, x + 0.25, x + 0.375);
    var a1 = a0 + vec4<f32>(0.5);
    var a2 = a0 + vec4<f32>(1.0);
    var a3 = a0 + vec4<f32>(1.5);
    var a4 = a0 - vec4<f32>(0.5);
    var a5 = a0 - vec4<f32>(1.0);
    var a6 = a0 - vec4<f32>(1.5);
    var a7 = a0 - vec4<f32>(2.0);
    let b = vec4<f32>(p.b);
    let c = vec4<f32>(p.c);
    for (var k = 0u; k < p.iters; k++) {
        a0 = fma(a0, b, c);
        a1 = fma(a1, b, c);
        a2 = fma(a2, b, c);
        a3 = fma(a3, b, c);
        a4 = fma(a4, b, c);
        a5 = fma(a5, b, c);
        a6 = fma(a6, b, c);
        a7 = fma(a7, b, c);
    }
    let s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
    out[i] = (s.x + s.y) + (s.z + s.w);
}
