//! `qwm study compare A B` on the two committed quantwm runs (every-step and after-plan
//! success rules): cells pair by name, episodes by seed, start and goal; the counts match
//! the cell reports; a directory against itself differs nowhere; bad input names the path.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn qwm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qwm"))
        .args(args)
        .output()
        .expect("run qwm")
}

/// `qwm study compare ARGS...`.
fn compare(args: &[&str]) -> Output {
    let mut a = vec!["study", "compare"];
    a.extend_from_slice(args);
    qwm(&a)
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "qwm failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn results(name: &str) -> String {
    format!("{}/docs/results/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qwm-compare-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn episodes(dir: &str, cell: &str) -> Vec<Value> {
    let p = format!("{dir}/cells/{cell}.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["episodes"].as_array().unwrap().clone()
}

/// Lost and gained by seed, straight from the two cell reports.
fn lost_gained(cell: &str) -> (usize, usize) {
    let a = episodes(&results("quantwm-every-step"), cell);
    let b = episodes(&results("quantwm"), cell);
    let (mut lost, mut gained) = (0, 0);
    for ea in &a {
        let Some(eb) = b.iter().find(|e| e["seed"] == ea["seed"]) else {
            continue;
        };
        let (sa, sb) = (ea["success"] == true, eb["success"] == true);
        lost += (sa && !sb) as usize;
        gained += (!sa && sb) as usize;
    }
    (lost, gained)
}

#[test]
fn the_two_committed_success_rules_pair_episode_by_episode() {
    // Complete in both directories, so these rows no longer change as the study runs on.
    let cells = [
        "wall/w4",
        "wall/w4.omniquant",
        "pointmaze/w4",
        "pointmaze/w2g32",
    ];
    let md = ok(&compare(&[
        &results("quantwm-every-step"),
        &results("quantwm"),
        "--only",
        &cells.join(","),
    ]));
    for row in [
        "| wall/w4 | 36/50 | 18/50 | 18 | 0 | < 0.001 | 836 -> 1727 |",
        "| wall/w4.omniquant | 47/50 | 35/50 | 13 | 1 | 0.002 | 253 -> 875 |",
        "| pointmaze/w4 | 47/50 | 36/50 | 11 | 0 | < 0.001 | 269 -> 847 |",
        // The every-step cell stopped after 5 episodes: only those pair.
        "| pointmaze/w2g32 | 5/5 | 1/5 (11/50 in all) | 4 | 0 | 0.125 | 3 -> 201 |",
        "| **all 4 cells** | 135/155 | 90/155 | 46 | 1 | < 0.001 | 1361 -> 3650 |",
    ] {
        assert!(md.contains(row), "missing {row}:\n{md}");
    }
    // The same counts from the reports by seed alone.
    for c in cells {
        let (lost, gained) = lost_gained(c);
        let row = md
            .lines()
            .find(|l| l.starts_with(&format!("| {c} |")))
            .unwrap();
        let cols: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(
            (cols[4], cols[5]),
            (&*lost.to_string(), &*gained.to_string()),
            "{row}"
        );
    }
    assert!(
        md.contains("- `mpc.success_check`: every-step -> after-plan (all 4)"),
        "{md}"
    );
    assert!(
        md.contains("solved without a plan (the start already met the goal): pointmaze/w4 2, pointmaze/w2g32 2."),
        "{md}"
    );
    // Rows group by environment: Wall's before PointMaze's.
    let at = |s: &str| md.find(&format!("| {s} |")).unwrap();
    assert!(at("wall/w4.omniquant") < at("pointmaze/w4"));
}

#[test]
fn a_run_against_its_own_copy_differs_nowhere_and_out_writes_the_same_text() {
    let a = results("quantwm");
    let out = tmp("self").with_extension("md");
    let printed = ok(&compare(&[&a, &a, "--only", "wall/fp,pointmaze/*"]));
    assert!(printed.contains("The compared cells' settings are identical."));
    for l in printed
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| cell"))
    {
        let cols: Vec<&str> = l.split('|').map(str::trim).collect();
        assert_eq!((cols[4], cols[5], cols[6]), ("0", "0", "1.000"), "{l}");
        assert_eq!(cols[2].split(' ').next(), cols[3].split(' ').next(), "{l}");
    }
    let said = ok(&compare(&[
        &a,
        &a,
        "--only",
        "wall/fp,pointmaze/*",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(said.contains("cells compared"), "{said}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), printed);
    // A comparison replaces its own earlier output, never another file.
    ok(&compare(&[
        &a,
        &a,
        "--only",
        "wall/fp",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("**all 1 cells**"));
    let other = out.with_extension("json");
    std::fs::write(&other, "{}").unwrap();
    let o = compare(&[&a, &a, "--out", other.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--out") && err.contains(other.to_str().unwrap()),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "{}");
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&other);
}

#[test]
fn an_episode_with_another_start_does_not_pair() {
    let d = tmp("moved");
    let cp = Command::new("cp")
        .args(["-r", &results("quantwm"), d.to_str().unwrap()])
        .status();
    assert!(cp.unwrap().success());
    let p = d.join("cells/wall/fp.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let x = v["episodes"][0]["start"][0].as_f64().unwrap();
    v["episodes"][0]["start"][0] = (x + 1.0).into();
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
    let md = ok(&compare(&[
        &results("quantwm"),
        d.to_str().unwrap(),
        "--only",
        "wall/fp",
    ]));
    let k = episodes(&results("quantwm"), "wall/fp")
        .iter()
        .filter(|e| e["success"] == true)
        .count();
    let first = episodes(&results("quantwm"), "wall/fp")[0]["success"] == true;
    let paired_k = k - first as usize;
    let row =
        format!("| wall/fp | {paired_k}/49 ({k}/50 in all) | {paired_k}/49 ({k}/50 in all) |");
    assert!(md.contains(&row), "missing {row}:\n{md}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_directories_and_disjoint_cells_are_refused_by_name() {
    let nowhere = tmp("nowhere");
    let o = compare(&[nowhere.to_str().unwrap(), &results("quantwm")]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(nowhere.to_str().unwrap()) && err.contains("study.json"),
        "{err}"
    );
    // Cells that only one directory has episodes in: nothing to pair.
    let o = compare(&[
        &results("quantwm-every-step"),
        &results("quantwm"),
        "--only",
        "wall/w6a6",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no episodes in common") && err.contains("--only \"wall/w6a6\""),
        "{err}"
    );
    assert!(Path::new(&results("quantwm")).join("study.json").exists());
}

#[test]
fn the_exact_mcnemar_test_matches_the_binomial_sign_test() {
    use qwm::plan::stats::mcnemar_exact;
    assert_eq!(mcnemar_exact(0, 0), 1.0);
    assert_eq!(mcnemar_exact(1, 1), 1.0);
    // 2 * P(X <= 0), X ~ Bin(3, 1/2) = 2/8.
    assert!((mcnemar_exact(3, 0) - 0.25).abs() < 1e-12);
    assert_eq!(mcnemar_exact(3, 0), mcnemar_exact(0, 3));
    // 2 * (1 + 14) / 2^14.
    assert!((mcnemar_exact(13, 1) - 30.0 / 16384.0).abs() < 1e-12);
    // Far past 2^-1074 the sum stays finite: z = 100 / sqrt(2100) gives about 0.03.
    let p = mcnemar_exact(1100, 1000);
    assert!(p > 0.02 && p < 0.04, "{p}");
    assert!(mcnemar_exact(3000, 0) >= 0.0 && mcnemar_exact(3000, 0) < 1e-300);
}

#[test]
fn the_committed_success_rule_comparison_is_current() {
    // docs/results/every-step-vs-after-plan.md is `qwm study compare`'s output on the two
    // committed directories; regenerate it with each study commit (docs/STUDY.md).
    let root = env!("CARGO_MANIFEST_DIR");
    let o = Command::new(env!("CARGO_BIN_EXE_qwm"))
        .current_dir(root)
        .args([
            "study",
            "compare",
            "docs/results/quantwm-every-step",
            "docs/results/quantwm",
        ])
        .output()
        .unwrap();
    let now = ok(&o);
    let committed =
        std::fs::read_to_string(format!("{root}/docs/results/every-step-vs-after-plan.md"))
            .unwrap();
    assert!(
        committed == now,
        "docs/results/every-step-vs-after-plan.md is stale: run `qwm study compare \
         docs/results/quantwm-every-step docs/results/quantwm --out \
         docs/results/every-step-vs-after-plan.md`"
    );
}
