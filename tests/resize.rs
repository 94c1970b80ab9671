//! Frame preprocessing: the CPU reference against torchvision's `Resize` (antialiased) and
//! PyTorch's plain bilinear `F.interpolate` (tests/fixtures/resize_torchvision.safetensors,
//! written by tools/make_dinowm_fixture.py), the plain bilinear path unchanged for qwm's own
//! models, and the WGSL kernel against the CPU reference on random frames of odd sizes.

mod common;

use common::{assert_close, gpu, F32_TOL};
use qwm::gpu::{resize, Recorder};
use qwm::model::{preprocess, resize_taps, Frames, ModelConfig, ResizeFilter};

fn cfg(n_in: usize, n_out: usize, filter: ResizeFilter) -> ModelConfig {
    let mut c = ModelConfig::tiny();
    c.image_size = n_in;
    c.encoder.resize = n_out;
    c.encoder.resize_filter = filter;
    c
}

fn random_frames(batch: usize, side: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..batch * side * side * 3)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

#[test]
fn matches_torchvision_and_pytorch() {
    torchvision_cases(false);
}

#[test]
fn gpu_kernel_matches_torchvision_and_pytorch() {
    torchvision_cases(true);
}

/// Every case of the torchvision fixture, on the CPU reference or the WGSL kernel.
fn torchvision_cases(on_gpu: bool) {
    let ctx = if on_gpu {
        match gpu() {
            Some(c) => Some(c),
            None => return,
        }
    } else {
        None
    };
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/resize_torchvision.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |k: &str| -> Vec<f32> {
        st.tensor(k)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let mut cases = 0;
    for name in st.names() {
        let Some(rest) = name.strip_prefix("in_") else {
            continue;
        };
        let (a, b): (usize, usize) = {
            let mut it = rest.split('_').map(|x| x.parse().unwrap());
            (it.next().unwrap(), it.next().unwrap())
        };
        let input = st.tensor(name).unwrap();
        assert_eq!(input.dtype(), safetensors::Dtype::U8);
        let batch = input.shape()[0];
        let f = Frames::new(input.data(), batch, a, a).unwrap();
        for (filter, key) in [
            (ResizeFilter::BilinearAntialias, "aa"),
            (ResizeFilter::Bilinear, "plain"),
        ] {
            let got = match ctx {
                None => preprocess(&f, &cfg(a, b, filter)).unwrap(),
                Some(ctx) => {
                    let up = resize::upload_frames(ctx, input.data()).unwrap();
                    let mut rec = Recorder::new(ctx);
                    let anti = filter == ResizeFilter::BilinearAntialias;
                    let y = resize::preprocess(&mut rec, &up, batch, a, a, b, anti).unwrap();
                    rec.submit().unwrap();
                    ctx.read(&y).unwrap()
                }
            };
            let want = f32s(&format!("{key}_{a}_{b}"));
            let what = format!("{} {key} {a} -> {b}", if on_gpu { "gpu" } else { "cpu" });
            assert_close(&got, &want, F32_TOL, &what);
        }
        cases += 1;
    }
    assert!(cases >= 8, "only {cases} cases in {}", p.display());
}

/// Shrinking by 4 is where antialiasing matters: the two filters must differ a lot there.
#[test]
fn antialias_differs_from_plain_when_shrinking() {
    let fr = random_frames(1, 64, 3);
    let f = Frames::new(&fr, 1, 64, 64).unwrap();
    let aa = preprocess(&f, &cfg(64, 16, ResizeFilter::BilinearAntialias)).unwrap();
    let plain = preprocess(&f, &cfg(64, 16, ResizeFilter::Bilinear)).unwrap();
    let e = qwm::tensor::rel_error(&aa, &plain);
    assert!(
        e > 0.1,
        "antialiased and plain 64 -> 16 differ by only {e:.3e}"
    );
    // Enlarging, the antialiased filter is plain bilinear.
    for (a, b) in [(13, 31), (20, 20)] {
        let fr = random_frames(2, a, 4);
        let f = Frames::new(&fr, 2, a, a).unwrap();
        let aa = preprocess(&f, &cfg(a, b, ResizeFilter::BilinearAntialias)).unwrap();
        let plain = preprocess(&f, &cfg(a, b, ResizeFilter::Bilinear)).unwrap();
        assert_close(&aa, &plain, 1e-5, &format!("{a} -> {b}"));
    }
}

/// qwm's shipped models were trained with this exact formula; the shared tap loop must give
/// the same bits.
#[test]
fn plain_bilinear_is_bit_identical_to_the_original_formula() {
    for (a, b) in [(64, 32), (65, 32), (224, 196), (17, 40)] {
        let fr = random_frames(2, a, a as u64);
        let got = preprocess(
            &Frames::new(&fr, 2, a, a).unwrap(),
            &cfg(a, b, ResizeFilter::Bilinear),
        )
        .unwrap();
        let scale = a as f32 / b as f32;
        let taps: Vec<(usize, usize, f32)> = (0..b)
            .map(|o| {
                let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(a - 1);
                (i0, (i0 + 1).min(a - 1), src - i0 as f32)
            })
            .collect();
        let mut want = Vec::with_capacity(got.len());
        for bi in 0..2 {
            let px = |y: usize, x: usize, c: usize| {
                fr[((bi * a + y) * a + x) * 3 + c] as f32 / 255.0 * 2.0 - 1.0
            };
            for c in 0..3 {
                for &(y0, y1, fy) in &taps {
                    for &(x0, x1, fx) in &taps {
                        let top = px(y0, x0, c) * (1.0 - fx) + px(y0, x1, c) * fx;
                        let bot = px(y1, x0, c) * (1.0 - fx) + px(y1, x1, c) * fx;
                        want.push(top * (1.0 - fy) + bot * fy);
                    }
                }
            }
        }
        assert!(got == want, "{a} -> {b}: bits differ");
    }
}

#[test]
fn taps_are_normalized() {
    for filter in [ResizeFilter::Bilinear, ResizeFilter::BilinearAntialias] {
        for (a, b) in [(1, 1), (1, 5), (5, 1), (65, 32), (224, 196), (37, 13)] {
            for t in resize_taps(a, b, filter) {
                let s: f32 = t.iter().map(|x| x.1).sum();
                assert!((s - 1.0).abs() < 1e-5, "{filter:?} {a} -> {b}: sum {s}");
                assert!(t.iter().all(|x| x.0 < a));
            }
        }
    }
}

#[test]
fn gpu_kernel_matches_cpu() {
    let Some(ctx) = gpu() else { return };
    for filter in [ResizeFilter::Bilinear, ResizeFilter::BilinearAntialias] {
        for (batch, a, b) in [
            (1, 1, 1),
            (3, 7, 5),
            (2, 65, 32),
            (1, 37, 13),
            (2, 23, 31),
            (1, 224, 196),
            (2, 64, 16),
            (1, 9, 9),
        ] {
            let fr = random_frames(batch, a, (a * 31 + b) as u64);
            let want =
                preprocess(&Frames::new(&fr, batch, a, a).unwrap(), &cfg(a, b, filter)).unwrap();
            let up = resize::upload_frames(ctx, &fr).unwrap();
            let mut rec = Recorder::new(ctx);
            let anti = filter == ResizeFilter::BilinearAntialias;
            let y = resize::preprocess(&mut rec, &up, batch, a, a, b, anti).unwrap();
            rec.submit().unwrap();
            assert_eq!(y.shape(), &[batch, 3, b, b]);
            let got = ctx.read(&y).unwrap();
            assert_close(
                &got,
                &want,
                F32_TOL,
                &format!("gpu {filter:?} {batch}x{a} -> {b}"),
            );
        }
    }
}

#[test]
fn gpu_kernel_rejects_wrong_sizes() {
    let Some(ctx) = gpu() else { return };
    let up = resize::upload_frames(ctx, &random_frames(1, 8, 1)).unwrap();
    let mut rec = Recorder::new(ctx);
    let e = resize::preprocess(&mut rec, &up, 2, 8, 8, 4, true).unwrap_err();
    assert!(e.to_string().contains("packed words"), "{e}");
}
