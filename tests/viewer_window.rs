//! The real viewer window: `qwm view TRACE --screenshot` under xvfb-run (Xvfb, wgpu on
//! lavapipe) writes a PNG that shows the scene; without a display the command says what to
//! do in one line; `--gif` exports the episode without a window.

use std::path::PathBuf;
use std::process::Command;

mod common;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trace-wall")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn out(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("qwm-view-test-{}-{name}", std::process::id()))
}

#[test]
fn screenshot_under_xvfb_shows_the_scene() {
    if Command::new("xvfb-run").arg("--help").output().is_err() {
        assert!(
            !in_ci(),
            "CI=true but xvfb-run is missing (.ci/install-deps.sh installs it)"
        );
        eprintln!("SKIPPED: xvfb-run is not installed");
        return;
    }
    let png = out("shot.png");
    let _ = std::fs::remove_file(&png);
    let o = Command::new("xvfb-run")
        .args(["-a", "-s", "-screen 0 1600x1000x24"])
        .arg(env!("CARGO_BIN_EXE_qwm"))
        .arg("view")
        .arg(fixture())
        .arg("--screenshot")
        .arg(&png)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "qwm view --screenshot failed: {err}");
    let img = image::open(&png).expect("a PNG was written").to_rgb8();
    assert!(
        img.width() >= 800 && img.height() >= 600,
        "{}x{}",
        img.width(),
        img.height()
    );
    // Not blank: the pixel values vary.
    let n = (img.width() * img.height()) as f64;
    let mean = img.pixels().map(|p| p[1] as f64).sum::<f64>() / n;
    let var = img
        .pixels()
        .map(|p| (p[1] as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    assert!(
        var.sqrt() > 20.0,
        "the screenshot is nearly uniform (std {})",
        var.sqrt()
    );
    // The scene: the Wall render's white floor and black walls (the dark UI theme has
    // neither), and run 0's path colour drawn over it.
    let count = |f: &dyn Fn(&image::Rgb<u8>) -> bool| img.pixels().filter(|p| f(p)).count();
    let white = count(&|p| p[0] == 255 && p[1] == 255 && p[2] == 255);
    let black = count(&|p| p[0] < 8 && p[1] < 8 && p[2] < 8);
    let path = count(&|p| {
        (p[0] as i32 - 31).abs() < 12
            && (p[1] as i32 - 119).abs() < 12
            && (p[2] as i32 - 180).abs() < 12
    });
    assert!(white > 40_000, "too little of the white floor: {white} px");
    assert!(black > 4_000, "too little of the black walls: {black} px");
    assert!(path > 50, "run 0's path is not drawn: {path} px");
    let _ = std::fs::remove_file(&png);
}

fn have_xvfb() -> bool {
    if Command::new("xvfb-run").arg("--help").output().is_err() {
        assert!(
            !in_ci(),
            "CI=true but xvfb-run is missing (.ci/install-deps.sh installs it)"
        );
        eprintln!("SKIPPED: xvfb-run is not installed");
        return false;
    }
    true
}

/// A live `qwm view --env wall --backend B --screenshot` under Xvfb: its stderr.
fn live_screenshot(backend: &str) -> String {
    let png = out(&format!("live-{backend}.png"));
    let _ = std::fs::remove_file(&png);
    let o = Command::new("xvfb-run")
        .args(["-a", "-s", "-screen 0 1600x1000x24"])
        .arg(env!("CARGO_BIN_EXE_qwm"))
        .args(["view", "--env", "wall", "--backend", backend])
        .args(["--samples", "16", "--opt-steps", "2", "--max-iter", "1"])
        .arg("--screenshot")
        .arg(&png)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        o.status.success(),
        "live qwm view --screenshot failed: {err}"
    );
    assert!(png.exists(), "no screenshot: {err}");
    let _ = std::fs::remove_file(&png);
    err
}

/// Live planning on the GPU backend shares the window's device (lavapipe presents to Xvfb);
/// on the CPU backend there is nothing to share, and the viewer says so.
#[test]
fn live_gpu_planning_shares_the_window_device() {
    if !have_xvfb() || common::gpu().is_none() {
        return;
    }
    let err = live_screenshot("gpu");
    assert!(
        err.contains("qwm view: planning device: device shared with the window"),
        "{err}"
    );
    assert!(err.contains("the device shared with the window"), "{err}");
    let err = live_screenshot("cpu");
    assert!(
        err.contains("qwm view: planning device: CPU backend, no device to share"),
        "{err}"
    );
}

#[test]
fn without_a_display_it_says_what_to_do() {
    let o = Command::new(env!("CARGO_BIN_EXE_qwm"))
        .arg("view")
        .arg(fixture())
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("xvfb-run") && err.contains("qwm plan --trace"),
        "{err}"
    );
}

#[test]
fn gif_export_without_a_window() {
    let gif = out("episode.gif");
    let o = Command::new(env!("CARGO_BIN_EXE_qwm"))
        .arg("view")
        .arg(fixture())
        .arg("--gif")
        .arg(&gif)
        .env_remove("DISPLAY")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    use image::AnimationDecoder;
    let f = std::io::BufReader::new(std::fs::File::open(&gif).unwrap());
    let frames = image::codecs::gif::GifDecoder::new(f)
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap();
    let t = qwm::trace::load(&fixture()).unwrap();
    assert_eq!(frames.len(), t.max_iters(), "one frame per MPC iteration");
    assert!(frames[0].buffer().width() > 300);
    let _ = std::fs::remove_file(&gif);
}

#[test]
fn missing_trace_is_a_clear_error() {
    let o = Command::new(env!("CARGO_BIN_EXE_qwm"))
        .args(["view", "/nonexistent/trace-dir", "--gif", "/tmp/x.gif"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("/nonexistent/trace-dir") && err.contains("--trace"),
        "{err}"
    );
}
