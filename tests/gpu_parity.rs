//! GPU kernels vs the CPU reference on random inputs, shapes chosen to not be multiples of any
//! tile or workgroup size. Tolerance: relative error (max |gpu - cpu| / max |cpu|) <= 1e-4.

mod common;

use common::{assert_close, gpu, F32_TOL};
use qwm::cpu;
use qwm::gpu::{ops, GpuContext, GpuTensor, Recorder};
use qwm::tensor::{randn, uniform};

struct T {
    data: Vec<f32>,
    shape: Vec<usize>,
}

fn t(shape: &[usize], std: f32, seed: u64) -> T {
    T {
        data: randn(shape.iter().product(), std, seed),
        shape: shape.to_vec(),
    }
}

impl T {
    fn g(&self, ctx: &GpuContext) -> GpuTensor {
        ctx.upload(&self.data, &self.shape).unwrap()
    }
    fn c(&self) -> cpu::CpuTensor {
        cpu::tensor(&self.data, &self.shape).unwrap()
    }
}

fn run<F>(ctx: &GpuContext, f: F) -> (Vec<f32>, Vec<usize>)
where
    F: FnOnce(&mut Recorder) -> qwm::Result<GpuTensor>,
{
    let mut rec = Recorder::new(ctx);
    let y = f(&mut rec).unwrap();
    rec.submit().unwrap();
    (ctx.read(&y).unwrap(), y.shape().to_vec())
}

fn cvec(t: &cpu::CpuTensor) -> (Vec<f32>, Vec<usize>) {
    (cpu::to_vec(t).unwrap(), t.dims().to_vec())
}

fn check(got: (Vec<f32>, Vec<usize>), want: (Vec<f32>, Vec<usize>), what: &str) {
    assert_eq!(got.1, want.1, "{what}: shape");
    assert_close(&got.0, &want.0, F32_TOL, what);
}

#[test]
fn matmul_matches_cpu() {
    let Some(ctx) = gpu() else { return };
    let shapes = [
        (1, 1, 1),
        (1, 7, 3),
        (7, 13, 5),
        (33, 65, 17),
        (37, 101, 403),
        (9, 404, 1212),
        (130, 3, 2048),
    ];
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        let s = i as u64 * 10;
        let x = t(&[m, k], 1.0, s);
        let w = t(&[n, k], 0.1, s + 1);
        let b = t(&[n], 0.5, s + 2);
        for bias in [false, true] {
            let got = run(ctx, |r| {
                ops::matmul(r, &x.g(ctx), &w.g(ctx), bias.then(|| b.g(ctx)).as_ref())
            });
            let cb = b.c();
            let want = cvec(&cpu::matmul(&x.c(), &w.c(), bias.then_some(&cb)).unwrap());
            check(got, want, &format!("matmul {m}x{k} by {n} bias={bias}"));
        }
    }
}

#[test]
fn tiled_matmul_matches_cpu() {
    // The 64 x 64 workgroup tiles with f32 weights: partial row and column tiles, K past the
    // last 32-wide step, odd K (scalar loads), several tiles in each direction.
    let Some(ctx) = gpu() else { return };
    for (i, &(m, n, k)) in [
        (1, 1, 1),
        (7, 13, 5),
        (65, 64, 33),
        (130, 97, 404),
        (70, 130, 403),
    ]
    .iter()
    .enumerate()
    {
        let s = 100 + i as u64 * 10;
        let x = t(&[m, k], 1.0, s);
        let w = t(&[n, k], 0.1, s + 1);
        let b = t(&[n], 0.5, s + 2);
        for bias in [false, true] {
            let got = run(ctx, |r| {
                ops::matmul_tiled(r, &x.g(ctx), &w.g(ctx), bias.then(|| b.g(ctx)).as_ref())
            });
            let cb = b.c();
            let want = cvec(&cpu::matmul(&x.c(), &w.c(), bias.then_some(&cb)).unwrap());
            check(
                got,
                want,
                &format!("tiled matmul {m}x{k} by {n} bias={bias}"),
            );
        }
    }
}

#[test]
fn matmul_accepts_batched_input() {
    let Some(ctx) = gpu() else { return };
    let (n, k) = (45, 28);
    let x = t(&[2, 3, 19, k], 1.0, 1);
    let w = t(&[n, k], 0.2, 2);
    let got = run(ctx, |r| ops::matmul(r, &x.g(ctx), &w.g(ctx), None));
    let want = cvec(&cpu::matmul(&x.c(), &w.c(), None).unwrap());
    check(got, want, "matmul, 4-D input");
}

#[test]
fn layernorm_matches_cpu() {
    let Some(ctx) = gpu() else { return };
    for (i, &(rows, cols, eps)) in [
        (1, 1, 1e-6),
        (5, 7, 1e-5),
        (130, 404, 1e-6),
        (3, 1000, 1e-6),
        (70_001, 3, 1e-6), // more rows than workgroups per dimension: 2-D dispatch
    ]
    .iter()
    .enumerate()
    {
        let s = 100 + i as u64 * 10;
        let mut x = t(&[rows, cols], 2.0, s);
        for v in x.data.iter_mut() {
            *v += 3.0; // non-zero mean
        }
        let g = t(&[cols], 1.0, s + 1);
        let b = t(&[cols], 1.0, s + 2);
        let got = run(ctx, |r| {
            ops::layernorm(r, &x.g(ctx), &g.g(ctx), &b.g(ctx), eps)
        });
        let want = cvec(&cpu::layernorm(&x.c(), &g.c(), &b.c(), eps).unwrap());
        check(got, want, &format!("layernorm {rows}x{cols}"));
    }
}

#[test]
fn gelu_relu_match_cpu_including_tails() {
    let Some(ctx) = gpu() else { return };
    let n = 10_007;
    let x = T {
        data: uniform(n, -12.0, 12.0, 5),
        shape: vec![n],
    };
    let got = run(ctx, |r| ops::gelu(r, &x.g(ctx)));
    let want = cvec(&cpu::gelu_exact(&x.c()).unwrap());
    check(got.clone(), want.clone(), "gelu");
    // Also elementwise in the negative tail, where a poor erf would lose relative accuracy.
    for (i, (&g, &w)) in got.0.iter().zip(&want.0).enumerate() {
        let tol = 1e-4 * w.abs() + 1e-30;
        assert!(
            (g - w).abs() <= tol.max(1e-7),
            "gelu({}) = {g}, want {w}",
            x.data[i]
        );
    }
    let got = run(ctx, |r| ops::relu(r, &x.g(ctx)));
    check(got, cvec(&cpu::relu(&x.c()).unwrap()), "relu");
}

#[test]
fn add_and_layerscale_add_match_cpu() {
    let Some(ctx) = gpu() else { return };
    let a = t(&[3, 17, 29], 1.0, 7);
    let b = t(&[3, 17, 29], 1.0, 8);
    let s = t(&[29], 1.0, 9);
    let got = run(ctx, |r| ops::add(r, &a.g(ctx), &b.g(ctx)));
    check(got, cvec(&cpu::add(&a.c(), &b.c()).unwrap()), "add");
    let got = run(ctx, |r| ops::add_scaled(r, &a.g(ctx), &b.g(ctx), &s.g(ctx)));
    check(
        got,
        cvec(&cpu::add_scaled(&a.c(), &b.c(), &s.c()).unwrap()),
        "add_scaled",
    );
}

#[test]
fn softmax_matches_cpu() {
    let Some(ctx) = gpu() else { return };
    for (i, &(rows, cols, std)) in [(1, 1, 1.0), (7, 17, 3.0), (20, 588, 10.0), (3, 1000, 30.0)]
        .iter()
        .enumerate()
    {
        let x = t(&[rows, cols], std, 200 + i as u64);
        let got = run(ctx, |r| qwm::gpu::probe::softmax(r, &x.g(ctx)));
        check(
            got,
            cvec(&cpu::softmax(&x.c()).unwrap()),
            &format!("softmax {rows}x{cols}"),
        );
    }
}

#[test]
fn concat_tile_and_slice_match_cpu() {
    let Some(ctx) = gpu() else { return };
    let x = t(&[3, 5, 7], 1.0, 11);
    let v = t(&[3, 4], 1.0, 12);
    let got = run(ctx, |r| ops::concat_tile(r, &x.g(ctx), &v.g(ctx)));
    check(
        got,
        cvec(&cpu::concat_tile(&x.c(), &v.c()).unwrap()),
        "concat_tile 3-D",
    );
    let x2 = t(&[6, 7], 1.0, 13);
    let v2 = t(&[6, 3], 1.0, 14);
    let got = run(ctx, |r| ops::concat_tile(r, &x2.g(ctx), &v2.g(ctx)));
    check(
        got,
        cvec(&cpu::concat_tile(&x2.c(), &v2.c()).unwrap()),
        "concat 2-D",
    );
    let got = run(ctx, |r| ops::slice_cols(r, &x.g(ctx), 2, 4));
    check(
        got,
        cvec(&cpu::slice_cols(&x.c(), 2, 4).unwrap()),
        "slice_cols",
    );
}

#[test]
fn attention_matches_cpu_with_and_without_frame_mask() {
    let Some(ctx) = gpu() else { return };
    let cases = [
        // (B, T, H, D, frame tokens)
        (2, 13, 3, 16, None),
        (2, 13, 3, 16, Some(4)),
        (1, 70, 2, 64, Some(20)),
        (3, 33, 4, 32, Some(11)),
        (1, 37, 1, 48, None),
        (1, 1, 2, 4, Some(1)),
    ];
    for (i, &(b, tk, h, d, p)) in cases.iter().enumerate() {
        let qkv = t(&[b, tk, 3 * h * d], 1.0, 300 + i as u64);
        let got = run(ctx, |r| ops::attention(r, &qkv.g(ctx), h, p));
        let want = cvec(&cpu::attention(&qkv.c(), h, p).unwrap());
        check(
            got,
            want,
            &format!("attention B{b} T{tk} H{h} D{d} frame {p:?}"),
        );
    }
}

#[test]
fn frame_causal_mask_hides_future_frames() {
    // Changing a later frame's keys/values must not change earlier frames' outputs.
    let Some(ctx) = gpu() else { return };
    let (tk, h, d, p) = (12, 2, 8, 4);
    let a = t(&[1, tk, 3 * h * d], 1.0, 400);
    let mut b = T {
        data: a.data.clone(),
        shape: a.shape.clone(),
    };
    for v in b.data[8 * 3 * h * d..].iter_mut() {
        *v += 5.0; // perturb the last frame (tokens 8..12)
    }
    let ya = run(ctx, |r| ops::attention(r, &a.g(ctx), h, Some(p))).0;
    let yb = run(ctx, |r| ops::attention(r, &b.g(ctx), h, Some(p))).0;
    let row = h * d;
    assert_eq!(&ya[..8 * row], &yb[..8 * row], "frames 0-1 changed");
    assert_ne!(&ya[8 * row..], &yb[8 * row..], "frame 2 did not change");
}

#[test]
fn patch_embed_matches_cpu() {
    let Some(ctx) = gpu() else { return };
    for (i, &(b, c, h, w, p, d)) in [
        (2, 3, 28, 28, 14, 24),
        (1, 3, 10, 15, 5, 7),
        (1, 1, 3, 3, 1, 5),
    ]
    .iter()
    .enumerate()
    {
        let img = t(&[b, c, h, w], 1.0, 500 + i as u64);
        let wt = t(&[d, c, p, p], 0.1, 510 + i as u64);
        let bias = t(&[d], 0.1, 520 + i as u64);
        let got = run(ctx, |r| {
            ops::patch_embed(r, &img.g(ctx), &wt.g(ctx), Some(&bias.g(ctx)))
        });
        let cb = bias.c();
        let want = cvec(&cpu::patch_embed(&img.c(), &wt.c(), Some(&cb)).unwrap());
        check(got, want, &format!("patch_embed {b}x{c}x{h}x{w} p{p}"));
    }
}

#[test]
fn conv2d_3x3_matches_cpu() {
    let Some(ctx) = gpu() else { return };
    let x = t(&[2, 5, 9, 11], 1.0, 600);
    let w = t(&[7, 5, 3, 3], 0.2, 601);
    let b = t(&[7], 0.1, 602);
    for (stride, pad) in [(1, 1), (1, 0), (2, 1)] {
        let got = run(ctx, |r| {
            ops::conv2d(r, &x.g(ctx), &w.g(ctx), Some(&b.g(ctx)), stride, pad)
        });
        let cb = b.c();
        let want = cvec(&cpu::conv2d(&x.c(), &w.c(), Some(&cb), stride, pad).unwrap());
        check(got, want, &format!("conv2d 3x3 stride {stride} pad {pad}"));
    }
}

#[test]
fn conv_transpose_4x4_stride2_matches_cpu() {
    let Some(ctx) = gpu() else { return };
    let x = t(&[2, 6, 7, 5], 1.0, 700);
    let w = t(&[6, 3, 4, 4], 0.2, 701);
    let b = t(&[3], 0.1, 702);
    for bias in [true, false] {
        let got = run(ctx, |r| {
            ops::conv_transpose2d(
                r,
                &x.g(ctx),
                &w.g(ctx),
                bias.then(|| b.g(ctx)).as_ref(),
                2,
                1,
            )
        });
        assert_eq!(got.1, vec![2, 3, 14, 10]);
        let cb = b.c();
        let want = cvec(&cpu::conv_transpose2d(&x.c(), &w.c(), bias.then_some(&cb), 2, 1).unwrap());
        check(got, want, &format!("conv_transpose2d 4x4 s2 bias={bias}"));
    }
}

#[test]
fn mse_per_item_matches_cpu() {
    let Some(ctx) = gpu() else { return };
    let a = t(&[5, 37], 1.0, 800);
    let goal = t(&[37], 1.0, 801);
    let got = run(ctx, |r| ops::mse_per_item(r, &a.g(ctx), &goal.g(ctx)));
    check(
        got,
        cvec(&cpu::mse_per_item(&a.c(), &goal.c()).unwrap()),
        "mse broadcast goal",
    );
    let a = t(&[3, 11, 300], 1.0, 802);
    let b = t(&[3, 11, 300], 1.0, 803);
    let got = run(ctx, |r| ops::mse_per_item(r, &a.g(ctx), &b.g(ctx)));
    check(
        got,
        cvec(&cpu::mse_per_item(&a.c(), &b.c()).unwrap()),
        "mse per item",
    );
}

#[test]
fn copy_is_exact() {
    let Some(ctx) = gpu() else { return };
    let x = t(&[1001], 1.0, 900);
    let got = run(ctx, |r| qwm::gpu::probe::copy(r, &x.g(ctx)));
    assert_eq!(got.0, x.data);
}

#[test]
fn one_recording_chains_ops_without_readback() {
    // A small pre-LN transformer block recorded into one command buffer equals the CPU's.
    let Some(ctx) = gpu() else { return };
    let (b, tk, dm, h) = (2, 10, 24, 3);
    let x = t(&[b, tk, dm], 1.0, 1000);
    let g = t(&[dm], 1.0, 1001);
    let be = t(&[dm], 0.1, 1002);
    let wqkv = t(&[3 * dm, dm], 0.2, 1003);
    let wo = t(&[dm, dm], 0.2, 1004);
    let mut rec = Recorder::new(ctx);
    let gx = x.g(ctx);
    let n = ops::layernorm(&mut rec, &gx, &g.g(ctx), &be.g(ctx), 1e-6).unwrap();
    let qkv = ops::matmul(&mut rec, &n, &wqkv.g(ctx), None).unwrap();
    let a = ops::attention(&mut rec, &qkv, h, Some(5)).unwrap();
    let o = ops::matmul(&mut rec, &a, &wo.g(ctx), None).unwrap();
    let y = ops::add(&mut rec, &gx, &o).unwrap();
    let y = ops::gelu(&mut rec, &y).unwrap();
    assert_eq!(rec.dispatch_count(), 6);
    rec.submit().unwrap();
    let got = ctx.read(&y).unwrap();
    let cn = cpu::layernorm(&x.c(), &g.c(), &be.c(), 1e-6).unwrap();
    let cq = cpu::matmul(&cn, &wqkv.c(), None).unwrap();
    let ca = cpu::attention(&cq, h, Some(5)).unwrap();
    let co = cpu::matmul(&ca, &wo.c(), None).unwrap();
    let cy = cpu::gelu(&cpu::add(&x.c(), &co).unwrap()).unwrap();
    assert_close(&got, &cpu::to_vec(&cy).unwrap(), F32_TOL, "chained block");
}
