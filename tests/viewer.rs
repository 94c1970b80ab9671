//! The viewer rendered headless with egui_kittest on wgpu (lavapipe in CI), on the small
//! committed trace `tests/fixtures/trace-wall` (Wall, fp and w4, 2 MPC iterations, horizon 3;
//! regenerate with the command in tests/fixtures/README.md): every panel renders (snapshot
//! images compared with a tolerance), and play, scrubbing and the compare toggle work.

use std::path::PathBuf;

use egui_kittest::kittest::Queryable;
use egui_kittest::{Harness, SnapshotOptions};
use qwm::viewer::ViewerApp;

mod common;

const SIZE: [f32; 2] = [1400.0, 900.0];

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trace-wall")
}

fn app() -> ViewerApp {
    let dir = fixture();
    let t = qwm::trace::load(&dir).expect("the committed trace loads");
    // A relative name in the top bar keeps the snapshots independent of the checkout's path.
    ViewerApp::replay(t, PathBuf::from("tests/fixtures/trace-wall"))
}

fn harness(app: ViewerApp) -> Option<Harness<'static, ViewerApp>> {
    // The same adapter rule as the GPU tests: skip visibly outside CI, fail in CI.
    common::gpu()?;
    let mut h = Harness::builder()
        .with_size(SIZE)
        .wgpu()
        .build_ui_state(|ui, app: &mut ViewerApp| app.ui(ui), app);
    h.run_steps(4);
    Some(h)
}

fn snap_options() -> SnapshotOptions {
    // Text antialiasing differs slightly between drivers; a few hundred pixels may move.
    SnapshotOptions::new().threshold(2.0).max_failed_pixels(600)
}

#[test]
fn every_panel_renders() {
    let Some(mut h) = harness(app()) else { return };
    for label in [
        "Info",
        "Plots",
        "Play",
        "compare",
        "PNG",
        "GIF",
        "MPC iteration",
        "objective per optimization step (iteration 1)",
        "distance to goal per MPC iteration",
        "imagination error per horizon step (iteration 1)",
        "latent divergence of the compared model per MPC iteration",
        "scene: start (green), goal (red), executed path, elites (thin), plan (thick)",
        "imagination: real (top) vs decoded imagined (bottom) per horizon step",
        "run 0: fp (cpu)",
        "run 1: w4 (cpu)",
    ] {
        assert!(
            h.query_all_by_label_contains(label).next().is_some(),
            "no widget labelled {label:?}"
        );
    }
    assert_eq!(h.state().columns(), 2);
    h.snapshot_options("viewer_replay", &snap_options());
}

#[test]
fn play_advances_scrubbing_selects_and_compare_adds_a_column() {
    let Some(mut h) = harness(app()) else { return };
    // Starts at the first iteration's first step.
    h.state_mut().cursor = qwm::viewer::Cursor::default();
    h.run_steps(2);
    let before = h.state().cursor;
    h.get_by_label("Play").click();
    h.run_steps(20);
    let after = h.state().cursor;
    assert!(h.state().playing);
    assert_ne!(before, after, "play did not advance the frame");
    h.get_by_label("Pause").click();
    h.run_steps(2);
    assert!(!h.state().playing);

    // Keyboard scrubbing: Home, then Right selects the second iteration.
    h.key_press(egui::Key::Home);
    h.run_steps(2);
    assert_eq!(h.state().cursor.iter, 0);
    h.key_press(egui::Key::ArrowRight);
    h.run_steps(2);
    assert_eq!(h.state().cursor.iter, 1);

    // Mouse scrubbing: a click on the left quarter of the iteration strip (the bottom row of
    // the timeline, full width) selects the first of the two iterations.
    let y = SIZE[1] - 21.0;
    h.drag_at(egui::pos2(SIZE[0] * 0.2, y));
    h.run_steps(1);
    h.drop_at(egui::pos2(SIZE[0] * 0.2, y));
    h.run_steps(2);
    assert_eq!(
        h.state().cursor.iter,
        0,
        "the click did not select iteration 1"
    );
    h.drag_at(egui::pos2(SIZE[0] * 0.8, y));
    h.run_steps(1);
    h.drop_at(egui::pos2(SIZE[0] * 0.8, y));
    h.run_steps(2);
    assert_eq!(
        h.state().cursor.iter,
        1,
        "the click did not select iteration 2"
    );

    // The compare toggle: off -> one column, on -> two.
    h.get_by_label("compare").click();
    h.run_steps(2);
    assert_eq!(h.state().columns(), 1);
    // Neither its column nor its Info entry ("run 1: w4") stays.
    assert!(h.query_all_by_label_contains("run 1: w4").next().is_none());
    h.snapshot_options("viewer_single_column", &snap_options());
    h.get_by_label("compare").click();
    h.run_steps(2);
    assert_eq!(h.state().columns(), 2);
    assert!(h
        .query_all_by_label_contains("run 1: w4 (cpu)")
        .next()
        .is_some());
}

#[test]
fn plot_legends_leave_the_curves_uncovered() {
    let Some(h) = harness(app()) else { return };
    let plots = h.state().plot_rects().to_vec();
    let ids: Vec<&str> = plots.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, ["objective", "distance", "imagination", "divergence"]);
    for (id, r) in &plots {
        assert!(r.width() > 200.0 && r.height() > 100.0, "{id}: {r:?}");
    }
    // Every legend entry of the two-run fixture: found, and outside every plot's area.
    let mut n = 0;
    for name in [
        "fp best",
        "fp elite mean",
        "fp elite max",
        "w4 best",
        "w4 elite mean",
        "w4 elite max",
        "step",
        "fp",
        "w4",
        "iteration",
        "fp vs other",
        "w4 vs other",
    ] {
        let nodes: Vec<_> = h.query_all_by_label(name).collect();
        assert!(!nodes.is_empty(), "no legend entry {name:?}");
        for node in nodes {
            n += 1;
            let r = node.rect();
            if let Some((id, p)) = plots.iter().find(|(_, p)| p.intersects(r)) {
                panic!("legend entry {name:?} at {r:?} covers the {id} plot at {p:?}");
            }
        }
    }
    assert!(n >= 15, "{n} legend entries");
}

// Which device live planning runs on (`qwm view --env E`): the window's, when the planning
// adapter can present to it, else its own or the CPU backend.
mod plan_device {
    use qwm::gpu::{missing_for_planning, AdapterKind, GpuContext};
    use qwm::viewer::device::{decide, AdapterFacts, Decision, PlanBackend};

    fn facts(kind: AdapterKind, can_present: bool) -> AdapterFacts {
        AdapterFacts {
            name: "test adapter".into(),
            kind,
            can_present,
        }
    }

    #[test]
    fn shares_only_an_adapter_that_presents_and_plans() {
        let soft = facts(AdapterKind::Cpu, true);
        let hw = facts(AdapterKind::Discrete, true);
        let hw_blind = facts(AdapterKind::Discrete, false);
        assert_eq!(decide(PlanBackend::Gpu, Ok(&soft)), Decision::Share);
        assert_eq!(decide(PlanBackend::Auto, Ok(&hw)), Decision::Share);
        assert_eq!(decide(PlanBackend::Gpu, Ok(&hw)), Decision::Share);
        // It cannot present: planning keeps a device of its own.
        match decide(PlanBackend::Gpu, Ok(&hw_blind)) {
            Decision::Own(why) => assert!(why.contains("cannot present"), "{why}"),
            d => panic!("{d:?}"),
        }
        assert!(matches!(
            decide(
                PlanBackend::Auto,
                Ok(&facts(AdapterKind::Integrated, false))
            ),
            Decision::Own(_)
        ));
        // The CPU backend has nothing to share.
        assert!(matches!(
            decide(PlanBackend::Cpu, Ok(&hw)),
            Decision::Cpu(_)
        ));
        match decide(PlanBackend::Auto, Ok(&soft)) {
            Decision::Cpu(why) => assert!(why.contains("software rasterizer"), "{why}"),
            d => panic!("{d:?}"),
        }
        assert!(matches!(
            decide(PlanBackend::Gpu, Err("none".into())),
            Decision::Cpu(_)
        ));
    }

    #[test]
    fn missing_features_and_limits_are_named() {
        let want = wgpu::Limits {
            max_storage_buffer_binding_size: 1 << 30,
            ..Default::default()
        };
        let f16 = wgpu::Features::SHADER_F16;
        assert!(missing_for_planning(f16, &want, f16, &want).is_empty());
        let m = missing_for_planning(f16, &want, wgpu::Features::empty(), &Default::default());
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].contains("SHADER_F16"), "{m:?}");
        assert!(m[1].contains("max_storage_buffer_binding_size"), "{m:?}");
    }

    /// A device opened without planning's features and limits is refused (the planner then
    /// opens its own); one opened with them gives a context equal to planning's own.
    #[test]
    fn existing_device_is_checked() {
        let Some(own) = super::common::gpu() else {
            return;
        };
        let adapter = own.adapter.clone();
        let want = GpuContext::device_descriptor(&adapter, None);
        let open = |d: &wgpu::DeviceDescriptor| {
            pollster::block_on(adapter.request_device(d)).expect("the device opens")
        };
        let plain = wgpu::DeviceDescriptor::default();
        let short = !want.required_features.is_empty()
            || !want.required_limits.check_limits(&plain.required_limits);
        if short {
            let (d, q) = open(&plain);
            let e = GpuContext::from_existing(adapter.clone(), d, q)
                .err()
                .expect("a device with the default limits is refused");
            let msg = e.to_string();
            assert!(msg.contains("lacks what planning asks"), "{msg}");
            assert!(msg.contains("limit ") || msg.contains("feature "), "{msg}");
        } else {
            eprintln!("this adapter offers no more than the defaults: the refusal is not tested");
        }
        let (d, q) = open(&want);
        let shared = GpuContext::from_existing(adapter.clone(), d, q).expect("accepted");
        assert_eq!(
            format!("{:?}", shared.features),
            format!("{:?}", own.features)
        );
        assert_eq!(shared.limits, own.limits);
        assert_eq!(shared.lanes_per_workgroup(), own.lanes_per_workgroup());
    }
}
