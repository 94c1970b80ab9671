// Feature-axis concatenation with tiling, for DINO-WM's action/proprio channels:
//   y[r, t, 0:DX]      = x[r, t, :]
//   y[r, t, DX:DX+DT]  = v[r, :]          (the same vector tiled over the T tokens of item r)
// A plain concat of two [R, D] tensors is the case T = 1. Also a column slice.

struct Params {
    n: u32,          // output elements
    tokens: u32,     // T
    dx: u32,
    dt: u32,
    row_stride: u32, // lanes per dispatch row
    col0: u32,       // slice: first column
    in_cols: u32,    // slice: input row width
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn concat_tile(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.row_stride + gid.x;
    if (i >= p.n) {
        return;
    }
    let width = p.dx + p.dt;
    let row = i / width; // r * T + t
    let c = i - row * width;
    if (c < p.dx) {
        y[i] = x[row * p.dx + c];
    } else {
        let r = row / p.tokens;
        y[i] = v[r * p.dt + (c - p.dx)];
    }
}

// y[r, :] = x[r, col0 : col0 + dx]   (dx = output width)
@compute @workgroup_size(WG)
fn slice_cols(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.row_stride + gid.x;
    if (i >= p.n) {
        return;
    }
    let row = i / p.dx;
    let c = i - row * p.dx;
    y[i] = x[row * p.in_cols + p.col0 + c];
}
