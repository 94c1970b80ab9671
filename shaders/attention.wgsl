// Multi-head scaled dot-product attention over a packed qkv tensor, with an optional
// frame-block-causal mask (DINO-WM's predictor): token i sees token j when
// frame(j) <= frame(i), frame(t) = t / frame_tokens. frame_tokens = 0 means no mask.
//
//   qkv: [B, T, 3 * H * D]  (q | k | v, head h at columns h*D .. h*D + D of each part)
//   out: [B, T, H * D]
//
// One lane per query, online softmax over the keys (never materializes the T x T scores).
// The lanes of a workgroup are consecutive queries of one (item, head) and walk the keys in
// lockstep up to a bound that is uniform across the workgroup, so key and value loads are
// uniform: one load broadcast to every lane. Lanes mask the keys past their own frame.

struct Params {
    batch: u32,
    tokens: u32,
    heads: u32,
    head_dim4: u32,   // D / 4
    frame_tokens: u32,
    scale: f32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;

override WG: u32 = 32u;
const MAX_D4: u32 = 16u; // head dim up to 64

fn key_limit(i: u32) -> u32 {
    if (p.frame_tokens == 0u) {
        return p.tokens;
    }
    return min((i / p.frame_tokens + 1u) * p.frame_tokens, p.tokens);
}

@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let h = wid.y;
    let b = wid.z;
    let i0 = wid.x * WG;
    let i = i0 + lid.x;
    let iq = min(i, p.tokens - 1u);
    let d4 = p.head_dim4;
    let hd4 = p.heads * d4;        // vec4s per row of one of q/k/v
    let row4 = 3u * hd4;           // vec4s per qkv row
    let item = b * p.tokens;
    let qoff = (item + iq) * row4 + h * d4;

    var q: array<vec4<f32>, MAX_D4>;
    var acc: array<vec4<f32>, MAX_D4>;
    for (var d = 0u; d < d4; d++) {
        q[d] = qkv[qoff + d] * p.scale;
        acc[d] = vec4<f32>(0.0);
    }
    let own_limit = key_limit(iq);
    // Uniform bound: the last query of this workgroup sees the most keys.
    let wg_limit = key_limit(min(i0 + WG - 1u, p.tokens - 1u));
    var m = -3.4028235e38;
    var l = 0.0;
    for (var j = 0u; j < wg_limit; j++) {
        let koff = (item + j) * row4 + hd4 + h * d4;
        var s4 = vec4<f32>(0.0);
        for (var d = 0u; d < d4; d++) {
            s4 = fma(q[d], qkv[koff + d], s4);
        }
        let s = s4.x + s4.y + s4.z + s4.w;
        if (j < own_limit) {
            let m_new = max(m, s);
            let corr = exp(m - m_new);
            let e = exp(s - m_new);
            l = l * corr + e;
            let voff = koff + hd4;
            for (var d = 0u; d < d4; d++) {
                acc[d] = fma(acc[d], vec4<f32>(corr), qkv[voff + d] * e);
            }
            m = m_new;
        }
    }
    if (i >= p.tokens) {
        return;
    }
    let inv = 1.0 / l;
    let ooff = (item + i) * hd4 + h * d4;
    for (var d = 0u; d < d4; d++) {
        out[ooff + d] = acc[d] * inv;
    }
}
