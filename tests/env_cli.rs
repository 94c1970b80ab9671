//! The `qwm data`, `qwm env` and `qwm bench env` commands end to end.

use std::process::Command;

fn qwm(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_qwm"))
        .args(args)
        .output()
        .expect("run qwm");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "qwm {args:?} failed:\n{text}");
    text
}

fn temp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("qwm-env-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn render_and_strip_write_pngs_of_the_task() {
    let dir = temp("png");
    let p = dir.join("wall.png");
    qwm(&[
        "env",
        "render",
        "--env",
        "wall",
        "--seed",
        "3",
        "--out",
        p.to_str().unwrap(),
        "--size",
        "65",
    ]);
    let img = image::open(&p).unwrap().to_rgb8();
    // start | 4 px gap | goal
    assert_eq!((img.width(), img.height()), (65 * 2 + 4, 65));
    assert_eq!(img.get_pixel(32, 10).0, [0, 0, 0], "wall");
    assert!(
        img.pixels().any(|px| px.0 == [255, 0, 0]),
        "the dot is drawn"
    );
    let s = dir.join("pusht_strip.png");
    let text = qwm(&[
        "env",
        "strip",
        "--env",
        "pusht",
        "--seed",
        "1",
        "--out",
        s.to_str().unwrap(),
        "--frames",
        "3",
        "--every",
        "2",
        "--size",
        "64",
    ]);
    assert!(text.contains("3 frames"), "{text}");
    let img = image::open(&s).unwrap().to_rgb8();
    assert_eq!((img.width(), img.height()), (64 * 3 + 8, 64));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn data_command_writes_a_readable_dataset_and_resumes() {
    let dir = temp("data");
    let out = dir.to_str().unwrap();
    let args = [
        "data",
        "--env",
        "pointmaze",
        "--episodes",
        "3",
        "--steps",
        "4",
        "--out",
        out,
        "--seed",
        "5",
        "--shard-episodes",
        "2",
    ];
    let text = qwm(&args);
    assert!(text.contains("wrote 3 episodes"), "{text}");
    let ds = qwm::env::dataset::Dataset::open(&dir).unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.manifest.image_size, 64);
    let text = qwm(&args);
    assert!(text.contains("kept 2 finished shards"), "{text}");
    let mut other = args.to_vec();
    other[10] = "6";
    let out = Command::new(env!("CARGO_BIN_EXE_qwm"))
        .args(&other)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pick another --out"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_env_prints_a_table() {
    let dir = temp("bench");
    std::fs::create_dir_all(&dir).unwrap();
    let j = dir.join("bench.json");
    let text = qwm(&[
        "bench",
        "env",
        "--steps",
        "5",
        "--json",
        j.to_str().unwrap(),
    ]);
    for n in ["wall", "pointmaze", "pusht"] {
        assert!(text.contains(n), "{text}");
    }
    // The qwm-bench schema (docs/BENCHMARKS.md): env rows (step, render) for each environment.
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
    let rows = file["results"]
        .as_array()
        .expect("a qwm-bench results array");
    assert!(rows.iter().all(|r| r["family"] == "env"), "{file}");
    for n in ["wall", "pointmaze", "pusht"] {
        assert!(
            rows.iter()
                .any(|r| r["name"].as_str().is_some_and(|s| s.contains(n))),
            "no row for {n}: {file}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
