//! A converted DINO-WM checkpoint through the `qwm` binary (model info shows the DINO-WM
//! settings, plan runs it on Wall), the CEM std option's errors, and the converter's checks
//! that need no PyTorch (tools/test_convert_dinowm.py under plain python3; the part that needs
//! PyTorch is run by hand, its output is in docs/results/convert_dinowm_test.log).

use std::process::Command;

const CONVERTED: &str = "tests/fixtures/dinowm_converted.safetensors";

fn qwm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qwm"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run qwm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn model_info_shows_the_dinowm_settings() {
    let (ok, out, err) = qwm(&["model", "info", CONVERTED]);
    assert!(ok, "{err}");
    for want in [
        "resized 16x16 (bilinear_antialias)",
        "source:",
        "kind: dinowm",
        "concat_dim: 1",
        "encoder: dinov2_vits14",
        "pos_embed: bicubic 7^2 -> 4^2, scale_factor (G+0.1)/M",
        "frameskip: 5",
    ] {
        assert!(out.contains(want), "missing '{want}' in:\n{out}");
    }
}

#[test]
fn plan_runs_a_converted_checkpoint_on_wall() {
    let dir = std::env::temp_dir().join(format!("qwm-dinowm-plan-{}", std::process::id()));
    let (ok, _out, err) = qwm(&[
        "plan",
        "--env",
        "wall",
        "--model",
        CONVERTED,
        "--backend",
        "cpu",
        "--max-iter",
        "1",
        "--opt-steps",
        "2",
        "--samples",
        "16",
        "--topk",
        "4",
        "--seed",
        "3",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let log: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json")).unwrap()).unwrap();
    assert!(
        log["iterations"].as_array().is_some_and(|a| !a.is_empty()),
        "{log}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn cem_std_option_is_checked() {
    let (ok, _, err) = qwm(&[
        "plan",
        "--env",
        "wall",
        "--model",
        "random",
        "--cem-std",
        "n",
    ]);
    assert!(
        !ok && err.contains("--cem-std") && err.contains("population"),
        "{err}"
    );
    let (ok, _, err) = qwm(&[
        "plan",
        "--env",
        "wall",
        "--model",
        "random",
        "--topk",
        "1",
        "--cem-std",
        "sample",
    ]);
    assert!(
        !ok && err.contains("top-k 1") && err.contains("--cem-std population"),
        "{err}"
    );
}

#[test]
fn converter_checks_without_torch() {
    let Ok(out) = Command::new("python3")
        .arg("tools/test_convert_dinowm.py")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
    else {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but python3 is not installed"
        );
        eprintln!("SKIPPED (no python3, not in CI)");
        return;
    };
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("all convert_dinowm tests passed"), "{text}");
    assert!(text.matches("\nok ").count() >= 12, "{text}");
}
