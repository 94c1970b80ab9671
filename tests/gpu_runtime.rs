//! The runtime around the kernels: errors instead of panics, caches, pooling, timestamps, the
//! feature-free path, and adapter selection messages.

mod common;

use common::{assert_close, gpu, F32_TOL};
use qwm::gpu::{ops, AdapterChoice, GpuContext, GpuFeatures, Recorder};
use qwm::tensor::randn;
use qwm::{cpu, Error};

#[test]
fn shape_mismatch_names_both_shapes() {
    let Some(ctx) = gpu() else { return };
    let x = ctx.upload(&[0.0; 12], &[3, 4]).unwrap();
    let w = ctx.upload(&[0.0; 10], &[2, 5]).unwrap();
    let mut rec = Recorder::new(ctx);
    let e = ops::matmul(&mut rec, &x, &w, None).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Shape(_)), "{msg}");
    assert!(msg.contains("[3, 4]") && msg.contains("[2, 5]"), "{msg}");
    let e = ops::add(&mut rec, &x, &w).unwrap_err().to_string();
    assert!(e.contains("[3, 4]") && e.contains("[2, 5]"), "{e}");
    let e = ops::attention(&mut rec, &x.reshape(&[1, 3, 4]).unwrap(), 3, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("3 * heads"), "{e}");
}

#[test]
fn tensor_over_the_binding_limit_is_refused_with_the_limit_named() {
    let Some(ctx) = gpu() else { return };
    let limit = ctx.max_binding_bytes();
    let n = (limit / 4 + 1) as usize;
    let e = ctx.alloc(&[n]).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Limit(_)), "{msg}");
    assert!(msg.contains(&limit.to_string()), "{msg}");
    assert!(msg.contains("max_storage_buffer_binding_size"), "{msg}");
}

#[test]
fn upload_with_wrong_element_count_is_an_error() {
    let Some(ctx) = gpu() else { return };
    let e = ctx
        .upload(&[1.0, 2.0, 3.0], &[2, 2])
        .unwrap_err()
        .to_string();
    assert!(e.contains("3 elements") && e.contains("[2, 2]"), "{e}");
}

#[test]
fn pipelines_are_cached_and_buffers_reused() {
    let Some(ctx) = gpu() else { return };
    // Private context so other tests' pipelines and buffers do not interfere.
    let ctx2 = GpuContext::with_choice(&AdapterChoice::from_env()).unwrap();
    let _ = ctx;
    let x = ctx2.upload(&randn(37 * 20, 1.0, 1), &[37, 20]).unwrap();
    let w = ctx2.upload(&randn(11 * 20, 1.0, 2), &[11, 20]).unwrap();
    let step = |ctx: &GpuContext| {
        let mut rec = Recorder::new(ctx);
        let y = ops::matmul(&mut rec, &x, &w, None).unwrap();
        let y = ops::gelu(&mut rec, &y).unwrap();
        drop(y);
        rec.submit().unwrap();
    };
    step(&ctx2);
    let pipelines = ctx2.pipeline_count();
    let peak = ctx2.pool_stats().peak_bytes;
    for _ in 0..5 {
        step(&ctx2);
    }
    assert_eq!(ctx2.pipeline_count(), pipelines, "pipelines recompiled");
    assert_eq!(ctx2.pool_stats().peak_bytes, peak, "buffers not reused");
}

#[test]
fn profiled_recording_times_each_dispatch() {
    let Some(ctx) = gpu() else { return };
    let x = ctx.upload(&randn(64 * 64, 1.0, 3), &[64, 64]).unwrap();
    let mut rec = Recorder::profiled(ctx);
    let y = ops::matmul(&mut rec, &x, &x, None).unwrap();
    let _z = qwm::gpu::probe::softmax(&mut rec, &y).unwrap();
    let times = rec.submit_profiled().unwrap();
    if ctx.features.timestamp_query {
        assert_eq!(times.len(), 2);
        assert_eq!(times[1].label, "softmax");
        assert!(
            times.iter().all(|t| t.seconds > 0.0 && t.seconds < 60.0),
            "{times:?}"
        );
    } else {
        assert!(times.is_empty());
    }
}

#[test]
fn kernels_run_without_optional_features() {
    let Some(_) = gpu() else { return };
    let ctx =
        GpuContext::with_options(&AdapterChoice::from_env(), Some(GpuFeatures::default())).unwrap();
    assert!(!ctx.features.shader_f16 && !ctx.features.subgroup && !ctx.features.timestamp_query);
    let (b, t, h, d) = (2, 9, 2, 8);
    let qkv = randn(b * t * 3 * h * d, 1.0, 5);
    let mut rec = Recorder::profiled(&ctx); // falls back to an unprofiled recording
    let g = ctx.upload(&qkv, &[b, t, 3 * h * d]).unwrap();
    let a = ops::attention(&mut rec, &g, h, Some(3)).unwrap();
    let w = randn(5 * h * d, 1.0, 6);
    let gw = ctx.upload(&w, &[5, h * d]).unwrap();
    let y = ops::matmul(&mut rec, &a, &gw, None).unwrap();
    assert!(rec.submit_profiled().unwrap().is_empty());
    let c = cpu::attention(&cpu::tensor(&qkv, &[b, t, 3 * h * d]).unwrap(), h, Some(3)).unwrap();
    let cy = cpu::matmul(&c, &cpu::tensor(&w, &[5, h * d]).unwrap(), None).unwrap();
    assert_close(
        &ctx.read(&y).unwrap(),
        &cpu::to_vec(&cy).unwrap(),
        F32_TOL,
        "no-feature path",
    );
}

#[test]
fn lost_device_gives_errors_not_panics() {
    let Some(_) = gpu() else { return };
    let ctx = GpuContext::new().unwrap();
    let x = ctx.upload(&[1.0; 16], &[4, 4]).unwrap();
    ctx.destroy_device();
    let _ = ctx.wait();
    let r = (|| -> qwm::Result<Vec<f32>> {
        let mut rec = Recorder::new(&ctx);
        let y = ops::matmul(&mut rec, &x, &x, None)?;
        rec.submit()?;
        ctx.read(&y)
    })();
    let e = r.expect_err("work on a destroyed device must fail");
    assert!(matches!(e, Error::Gpu(_)), "{e}");
}

#[test]
fn unknown_backend_and_adapter_are_explained() {
    let e = GpuContext::with_choice(&AdapterChoice {
        backend: Some("glide".into()),
        name_contains: None,
    })
    .err()
    .expect("bogus backend must fail")
    .to_string();
    assert!(e.contains("vulkan, metal, dx12, gl"), "{e}");
    let e = GpuContext::with_choice(&AdapterChoice {
        backend: None,
        name_contains: Some("no-such-adapter-xyz".into()),
    })
    .err()
    .expect("bogus adapter name must fail")
    .to_string();
    assert!(e.contains("no-such-adapter-xyz"), "{e}");
}

#[cfg(target_os = "linux")]
#[test]
fn missing_adapter_says_how_to_get_one() {
    // Metal does not exist on Linux: the same path as a machine with no adapter at all.
    let e = GpuContext::with_choice(&AdapterChoice {
        backend: Some("metal".into()),
        name_contains: None,
    })
    .err()
    .expect("no Metal adapter on Linux")
    .to_string();
    assert!(e.contains("mesa-vulkan-drivers"), "{e}");
    assert!(e.contains("--backend cpu"), "{e}");
}

#[test]
fn upload_during_an_open_recording_is_not_clobbered() {
    // Record an op that writes a temporary, drop the temporary (its buffer returns to the
    // pool), then upload data of the same size while the recording is still open: the upload
    // must not reuse the buffer that the pending dispatch writes.
    let Some(ctx) = gpu() else { return };
    let n = 4099;
    let a = ctx.upload(&randn(n, 1.0, 70), &[n]).unwrap();
    let mut rec = Recorder::new(ctx);
    let tmp = ops::gelu(&mut rec, &a).unwrap();
    let _keep = ops::relu(&mut rec, &tmp).unwrap();
    drop(tmp);
    let data = randn(n, 1.0, 71);
    let up = ctx.upload(&data, &[n]).unwrap();
    let copy = qwm::gpu::probe::copy(&mut rec, &up).unwrap();
    rec.submit().unwrap();
    assert_eq!(ctx.read(&copy).unwrap(), data);
    assert_eq!(ctx.read(&up).unwrap(), data);
}

#[test]
fn buffers_freed_in_one_threads_open_recording_are_not_reused_by_another_thread() {
    // Thread A drops its inputs right after recording (before submitting); thread B keeps
    // allocating and writing buffers of the same size. A's results must stay exact.
    let Some(ctx) = gpu() else { return };
    let n = 8191;
    let data = randn(n, 1.0, 90);
    let want = cpu::to_vec(&cpu::relu(&cpu::tensor(&data, &[n]).unwrap()).unwrap()).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let stop = &stop;
    std::thread::scope(|s| {
        s.spawn(move || {
            let junk = ctx.upload(&vec![-7.0f32; n], &[n]).unwrap();
            // Keep every output alive, so each new one must come from whatever the pool
            // holds: A's dropped inputs when reuse is (wrongly) allowed.
            let mut keep = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && keep.len() < 4000 {
                let mut rec = Recorder::new(ctx);
                keep.push(ops::add(&mut rec, &junk, &junk).unwrap());
                rec.submit().unwrap();
            }
        });
        for _ in 0..40 {
            let mut rec = Recorder::new(ctx);
            let y = ops::relu(&mut rec, &ctx.upload(&data, &[n]).unwrap()).unwrap();
            let _spacer = ops::gelu(&mut rec, &y).unwrap();
            // Widen the window in which the dropped input is pooled but not yet used.
            std::thread::sleep(std::time::Duration::from_millis(3));
            rec.submit().unwrap();
            assert_eq!(ctx.read(&y).unwrap(), want);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}
