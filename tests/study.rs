//! `qwm study` end to end on the `smoke` preset (12 cells x 4 episodes of the shipped Wall
//! model, about a minute of CPU): a run completes, resumes without redoing anything after a
//! kill, two shards (and two unsharded processes) give the same reports as one process, and
//! the report and bad input behave. The cluster files and the Slurm job-array test are
//! tests/study_slurm.rs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

#[path = "common/study.rs"]
mod study_common;
use study_common::{assert_same_reports, cell_reports, fails, ok, qwm, run};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qwm-study-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn smoke(dir: &Path, extra: &[&str]) -> Output {
    let d = dir.to_str().unwrap();
    let mut a = vec!["study", "run", "smoke", "--out", d, "--backend", "cpu"];
    a.extend_from_slice(extra);
    run(&a)
}

/// `qwm study report DIR --out PNG --results RESULTS`, which must succeed; its stdout.
fn report(dir: &Path, png: &Path, results: &Path) -> String {
    ok(&run(&[
        "study",
        "report",
        dir.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
        "--results",
        results.to_str().unwrap(),
    ]))
}

/// One unsharded single-process run, shared by the tests that compare against it.
fn reference() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tmp("reference");
        ok(&smoke(&d, &["--jobs", "1"]));
        d
    })
}

#[test]
fn smoke_study_completes_and_a_rerun_plays_nothing() {
    let d = reference();
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("study.json")).unwrap()).unwrap();
    let cells = m["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 12);
    for c in cells {
        assert_eq!(c["state"], "done", "{c}");
        assert_eq!(c["done"], 4, "{c}");
    }
    assert_eq!(m["qwm_version"], env!("CARGO_PKG_VERSION"));
    // Each cell report is an eval report: 4 episodes, the study's settings, the model's CRC.
    for (name, r) in cell_reports(d) {
        assert_eq!(r["finished"], 4, "{name}");
        assert_eq!(r["config"]["plan"]["samples"], 20, "{name}");
        assert_eq!(r["config"]["mpc"]["max_iters"], 2, "{name}");
        assert!(r["config"]["model_crc32"].is_string(), "{name}");
        let quantized = r["config"]["quant"] != "fp";
        assert_eq!(r["latent_divergence"].is_f64(), quantized, "{name}");
        assert_eq!(r["linear_bytes"].is_array(), quantized, "{name}");
    }
    let before = std::fs::read_to_string(d.join("cells/wall/w4.json")).unwrap();
    let out = ok(&smoke(d, &["--jobs", "1"]));
    assert!(out.contains("0 episodes played here"), "{out}");
    let after = std::fs::read_to_string(d.join("cells/wall/w4.json")).unwrap();
    assert_eq!(before, after, "a rerun must not change a finished cell");
    // Status lists every cell with its progress.
    let st = ok(&run(&["study", "status", d.to_str().unwrap()]));
    assert!(st.contains("wall/w8a8t") && st.contains("4/4"), "{st}");
    assert!(st.contains("12 of 12 cells done"), "{st}");
}

#[test]
fn shards_and_parallel_workers_give_the_same_reports_as_one_process() {
    let reference = reference();
    // Two shards as two concurrent processes.
    let d = tmp("shards");
    let ds = d.to_str().unwrap();
    let args = |s: &'static str| {
        let mut c = qwm();
        c.args([
            "study",
            "run",
            "smoke",
            "--out",
            ds,
            "--backend",
            "cpu",
            "--jobs",
            "1",
        ])
        .args(["--shard", s]);
        c
    };
    let (mut a, mut b) = (args("0/2").spawn().unwrap(), args("1/2").spawn().unwrap());
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    assert_same_reports(reference, &d);
    // --jobs 2: two single-threaded workers sharing one shard through the item locks.
    let j = tmp("jobs");
    ok(&smoke(&j, &["--jobs", "2"]));
    assert_same_reports(reference, &j);
}

#[test]
fn two_unsharded_runs_on_one_directory_share_the_work() {
    let reference = reference();
    let d = tmp("twice");
    let start = |d: PathBuf| {
        qwm()
            .args([
                "study",
                "run",
                "smoke",
                "--backend",
                "cpu",
                "--jobs",
                "1",
                "--out",
            ])
            .arg(d)
            .output()
    };
    let d2 = d.clone();
    let t = std::thread::spawn(move || start(d2));
    let o1 = start(d.clone()).unwrap();
    let o2 = t.join().unwrap().unwrap();
    ok(&o1);
    ok(&o2);
    assert_same_reports(reference, &d);
    // Every episode was played once: the parts hold 48 episodes in all, none twice.
    let mut n = 0;
    for env in std::fs::read_dir(d.join("parts")).unwrap() {
        for cell in std::fs::read_dir(env.unwrap().path()).unwrap() {
            let mut seen = std::collections::BTreeSet::new();
            for f in std::fs::read_dir(cell.unwrap().path()).unwrap() {
                let p = f.unwrap().path();
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                if !name.starts_with('e') || !name.ends_with(".json") {
                    continue;
                }
                let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
                for e in v["episodes"].as_array().unwrap() {
                    assert!(seen.insert(e["index"].as_u64().unwrap()), "{name} twice");
                    n += 1;
                }
            }
        }
    }
    assert_eq!(n, 48);
}

#[test]
fn a_killed_run_resumes_where_it_stopped() {
    let reference = reference();
    let d = tmp("killed");
    let ds = d.to_str().unwrap();
    let mut child = qwm()
        .args([
            "study",
            "run",
            "smoke",
            "--out",
            ds,
            "--backend",
            "cpu",
            "--jobs",
            "1",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until a few cells have episodes, then kill it mid-run.
    let t0 = std::time::Instant::now();
    loop {
        let n = std::fs::read_dir(d.join("cells/wall")).map_or(0, |r| r.count());
        if n >= 3 || t0.elapsed().as_secs() > 600 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let count = |dir: &Path| -> usize {
        let mut n = 0;
        for c in walk(&dir.join("parts")) {
            let name = c.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('e') && name.ends_with(".json") {
                let v: Value = serde_json::from_str(&std::fs::read_to_string(&c).unwrap()).unwrap();
                n += v["episodes"].as_array().unwrap().len();
            }
        }
        n
    };
    let done_before = count(&d);
    assert!(done_before > 0 && done_before < 48, "{done_before}");
    // The manifest is rewritten after each finished item (2 episodes): the kill leaves it at
    // most one item behind the parts, never at the run's start.
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("study.json")).unwrap()).unwrap();
    let listed: u64 = m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["done"].as_u64().unwrap())
        .sum();
    assert!(
        listed > 0 && listed as usize + 2 >= done_before,
        "manifest lists {listed} episodes, the parts hold {done_before}"
    );
    let out = ok(&smoke(&d, &["--jobs", "1"]));
    assert!(
        out.contains(&format!("{} episodes played here", 48 - done_before)),
        "after {done_before} episodes the rerun should play the other {}: {out}",
        48 - done_before
    );
    assert_same_reports(reference, &d);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn the_report_has_tables_plots_and_a_verdict_for_every_finding() {
    let d = reference();
    let r = tmp("report");
    let results = r.join("RESULTS.md");
    let out = report(d, &r.join("png"), &results);
    for k in 1..=6 {
        assert!(out.contains(&format!("finding {k} (")), "{out}");
    }
    let md = std::fs::read_to_string(&results).unwrap();
    for needle in [
        "## The paper's findings",
        "success vs weight bits",
        "which module is quantized (rtn)",
        "activation granularity (rtn)",
        "CEM optimization steps",
        "objective vs final distance",
        "latent divergence",
        "| wall/w8a8t | w8a8t | rtn |",
        "wall: PTQ methods",
        "wall: which method keeps planning working",
        "wall: quantization cost per method",
    ] {
        assert!(md.contains(needle), "missing {needle:?}");
    }
    assert!(!md.contains("quantized (omse)"), "a table of one column");
    // The methods' standing: one row per method cell with episodes at a method spec (the
    // smoke grid has w4 under rtn and omse, w4g32 and w8a8 under rtn), each judged against
    // float by a rule word; RTN is not compared with itself.
    let standing: Vec<&str> = md
        .lines()
        .skip_while(|l| !l.contains("which method keeps planning working"))
        .take_while(|l| !l.starts_with("### wall: quantization cost"))
        .filter(|l| l.starts_with("| W"))
        .collect();
    let specs: Vec<(&str, &str)> = standing
        .iter()
        .map(|l| {
            let c: Vec<&str> = l.split('|').map(str::trim).collect();
            let word = c[4].split(' ').next().unwrap();
            assert!(
                ["above", "below", "level", "undecided"].contains(&word),
                "{l}"
            );
            assert_eq!(c[5] == "-", c[2] == "rtn", "{l}");
            (c[1], c[2])
        })
        .collect();
    for want in [
        ("W4", "rtn"),
        ("W4", "omse"),
        ("W4 g32", "rtn"),
        ("W8A8", "rtn"),
    ] {
        assert!(specs.contains(&want), "{want:?} missing from {standing:#?}");
    }
    // Every quantized cell recorded what its method cost on load.
    for m in ["rtn", "omse"] {
        let row = md
            .lines()
            .find(|l| l.starts_with(&format!("| {m} | ")) && l.ends_with(" |"))
            .unwrap_or_else(|| panic!("no cost row for {m}"));
        let cells: usize = row.split('|').nth(2).unwrap().trim().parse().unwrap();
        assert!(cells >= 1, "{row}");
    }
    let verdicts = md
        .lines()
        .filter(|l| {
            ["REPRODUCED.**", "NOT REPRODUCED.**", "INCONCLUSIVE.**"]
                .iter()
                .any(|v| l.ends_with(v))
        })
        .count();
    assert_eq!(verdicts, 6, "{md}");
    // The PNGs it links exist and decode.
    let mut linked = 0;
    for l in md.lines().filter(|l| l.starts_with("![")) {
        let rel = &l[l.find("](").unwrap() + 2..l.len() - 1];
        let img = image::open(r.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(img.width() > 100 && img.height() > 100);
        linked += 1;
    }
    assert!(linked >= 7, "{linked} plots");
    // Regenerating from the same reports gives the same text.
    report(d, &r.join("png"), &results);
    assert_eq!(md, std::fs::read_to_string(&results).unwrap());
}

/// The report takes each cell's progress from its parts, not from the manifest, which a
/// running study rewrites only at its start and end: a stale manifest (every cell pending)
/// gives the same progress line and unfinished list as the fresh one.
#[test]
fn the_report_reads_progress_from_the_parts_not_a_stale_manifest() {
    let d = tmp("stale");
    let st = Command::new("cp")
        .args(["-r", reference().to_str().unwrap(), d.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let regenerate = |dir: &Path, name: &str| {
        let results = dir.join(name);
        report(dir, &dir.join("png"), &results);
        std::fs::read_to_string(results).unwrap()
    };
    let progress = |md: &str| -> Vec<String> {
        md.lines()
            .filter(|l| {
                l.starts_with("Study `") || l.starts_with("- pending") || l.starts_with("- partial")
            })
            .map(String::from)
            .collect()
    };
    let fresh = regenerate(&d, "fresh.md");
    let fresh_progress = progress(&fresh);
    assert!(
        fresh_progress[0].contains("12 cells, 12 of them done"),
        "{fresh_progress:?}"
    );
    let mpath = d.join("study.json");
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
    for c in m["cells"].as_array_mut().unwrap() {
        c["done"] = 0.into();
        c["prefix"] = 0.into();
        c["successes"] = 0.into();
        c["state"] = "pending".into();
    }
    std::fs::write(&mpath, serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(progress(&regenerate(&d, "stale.md")), fresh_progress);
    // ...and the report recounts the manifest's states, keeping what ran the study.
    let orig: Value =
        serde_json::from_str(&std::fs::read_to_string(reference().join("study.json")).unwrap())
            .unwrap();
    let now: Value = serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
    for k in ["cells", "source", "qwm_version", "study"] {
        assert_eq!(now[k], orig[k], "manifest field {k} after the report");
    }
    // Cell reports lag the parts while a work item runs (a worker rebuilds them when the item
    // ends): with every cell report gone, the report rebuilds them from the parts alone.
    std::fs::remove_dir_all(d.join("cells")).unwrap();
    let rebuilt = regenerate(&d, "rebuilt.md");
    assert!(
        d.join("cells").exists(),
        "the cell reports were not rebuilt"
    );
    // Equal but for the generating command's --results path.
    assert_eq!(rebuilt.replace("rebuilt.md", "fresh.md"), fresh);
    // The rebuild checks every part against the first one: a later part written with other
    // settings is refused by name, never merged into the cell's rate.
    let part = d.join("parts/wall/fp/e002-004.json");
    let mut p: Value = serde_json::from_str(&std::fs::read_to_string(&part).unwrap()).unwrap();
    p["config"]["plan"]["samples"] = 22.into();
    std::fs::write(&part, serde_json::to_string(&p).unwrap()).unwrap();
    std::fs::remove_file(d.join("cells/wall/fp.json")).unwrap();
    let err = fails(&run(&[
        "study",
        "report",
        d.to_str().unwrap(),
        "--results",
        d.join("mixed.md").to_str().unwrap(),
    ]));
    assert!(
        err.contains("cell wall/fp") && err.contains("e002-004.json") && err.contains("samples"),
        "{err}"
    );
}

#[test]
fn bad_input_is_refused_with_the_file_line_or_cell() {
    let d = tmp("bad");
    std::fs::create_dir_all(&d).unwrap();
    let ds = d.to_str().unwrap();
    let err = fails(&run(&["study", "run", "smok", "--out", ds]));
    assert!(
        err.contains("neither a study file nor a preset") && err.contains("smoke"),
        "{err}"
    );

    let write = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let base = "name = \"t\"\nepisodes = 2\n[[env]]\nname = \"wall\"\n[[grid]]\nname = \"g\"\nquant = [\"fp\"]\n";
    let f = write("unknown.toml", &format!("{base}colour = 3\n"));
    let err = fails(&run(&["study", "list", &f]));
    assert!(
        err.contains("unknown.toml:8") && err.contains("colour"),
        "{err}"
    );
    let f = write("malformed.toml", "name = \"t\"\nepisodes = = 2\n");
    let err = fails(&run(&["study", "list", &f]));
    assert!(err.contains("malformed.toml:2"), "{err}");
    let f = write("spec.toml", &base.replace("[\"fp\"]", "[\"fp\",\n \"w5\"]"));
    let err = fails(&run(&["study", "list", &f]));
    assert!(err.contains("spec.toml:8") && err.contains("w5"), "{err}");
    let f = write("env.toml", &format!("{base}envs = [\"maze\"]\n"));
    let err = fails(&run(&["study", "list", &f]));
    assert!(err.contains("env.toml:8") && err.contains("maze"), "{err}");

    let err = fails(&run(&[
        "study", "run", "smoke", "--out", ds, "--shard", "2/2",
    ]));
    assert!(
        err.contains("out of range") && err.contains("0 to 1"),
        "{err}"
    );
    let err = fails(&run(&[
        "study", "run", "smoke", "--out", ds, "--shard", "auto",
    ]));
    assert!(err.contains("SLURM_ARRAY_TASK_ID"), "{err}");

    // A cell whose parts were written with other settings: same study name, other planner.
    let other = d.join("other");
    let os = other.to_str().unwrap();
    let run_into_other = |study: &str| {
        run(&[
            "study",
            "run",
            study,
            "--out",
            os,
            "--backend",
            "cpu",
            "--jobs",
            "1",
            "--only",
            "wall/fp",
        ])
    };
    ok(&run_into_other("smoke"));
    let changed =
        include_str!("../src/study/presets/smoke.toml").replace("samples = 20", "samples = 22");
    let f = write("changed.toml", &changed);
    let err = fails(&run_into_other(&f));
    // The manifest's planner refuses it before anything runs; without the manifest, the cell's
    // part does.
    assert!(
        err.contains("other planner settings") && err.contains("samples: 20 -> 22"),
        "{err}"
    );
    std::fs::rename(other.join("study.json"), d.join("study.json.kept")).unwrap();
    let err = fails(&run_into_other(&f));
    assert!(
        err.contains("cell wall/fp") && err.contains("e000-002.json") && err.contains("samples"),
        "{err}"
    );
    std::fs::rename(d.join("study.json.kept"), other.join("study.json")).unwrap();
    // The success check is a planner setting too; a value it does not know names its line.
    let smoke = include_str!("../src/study/presets/smoke.toml");
    let lenient = smoke.replace(
        "samples = 20",
        "samples = 20\nsuccess_check = \"every-step\"",
    );
    let f = write("lenient.toml", &lenient);
    let err = fails(&run_into_other(&f));
    assert!(
        err.contains("success_check: \"after-plan\" -> \"every-step\""),
        "{err}"
    );
    let f = write(
        "check.toml",
        &smoke.replace("samples = 20", "success_check = \"end\""),
    );
    let err = fails(&run(&["study", "list", &f]));
    assert!(
        err.contains("check.toml:12") && err.contains("after-plan"),
        "{err}"
    );
    // Another study into the same directory.
    let err = fails(&run(&[
        "study", "run", "quantwm", "--out", os, "--only", "wall/fp",
    ]));
    assert!(err.contains("holds study \"smoke\""), "{err}");
}

#[test]
fn earlier_eval_reports_import_as_quantwm_cells() {
    let d = tmp("import");
    let ds = d.to_str().unwrap();
    let vm = "docs/results/vm-cpu";
    // Those reports were written checking success at every step (no setting in them): they
    // are cells of the quantwm grid with that rule, not of the preset (DINO-WM's rule).
    std::fs::create_dir_all(&d).unwrap();
    let study = d.join("quantwm-every-step.toml");
    let text = include_str!("../src/study/presets/quantwm.toml").replace(
        "n_taken = 5\n",
        "n_taken = 5\nsuccess_check = \"every-step\"\n",
    );
    std::fs::write(&study, text).unwrap();
    let study = study.to_str().unwrap();
    let (w4, w8a8) = (format!("{vm}/wall_w4.json"), format!("{vm}/wall_w8a8.json"));
    let preset = d.join("preset");
    let preset = preset.to_str().unwrap();
    let err = fails(&run(&["study", "import", "quantwm", "--out", preset, &w4]));
    assert!(err.contains("\"success_check\":\"every-step\""), "{err}");
    let out = ok(&run(&["study", "import", study, "--out", ds, &w4, &w8a8]));
    assert!(
        out.contains("-> cell wall/w4") && out.contains("-> cell wall/w8a8"),
        "{out}"
    );
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("cells/wall/w4.json")).unwrap())
            .unwrap();
    let orig: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{vm}/wall_w4.json")).unwrap())
            .unwrap();
    // The imported cell is the eval report it came from (the label is the study's path).
    for k in [
        "finished",
        "success_rate",
        "success_ci95",
        "latent_divergence",
        "linear_bytes",
        "episodes",
    ] {
        assert_eq!(r[k], orig[k], "{k}");
    }
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("study.json")).unwrap()).unwrap();
    let state = |name: &str| {
        m["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(state("wall/w4")["state"], "done");
    assert_eq!(state("wall/w8a8")["state"], "partial");
    assert_eq!(state("wall/w8a8")["done"], 44);
    // The first Wall model's report is another model: refused with the differing CRC.
    let err = fails(&run(&[
        "study",
        "import",
        study,
        "--out",
        ds,
        &format!("{vm}/wall_fp_v1.json"),
    ]));
    assert!(
        err.contains("model_crc32") && err.contains("758645cf"),
        "{err}"
    );
}

#[test]
fn the_committed_quantwm_study_reports_cleanly() {
    // The shipped studies (docs/results/quantwm*) have cells missing on purpose (PushT runs only
    // a few specs) and a default of 30 CEM steps on PushT: their findings must neither compare
    // a cell with itself nor spell out comparisons between cells the study does not have.
    for name in ["quantwm", "quantwm-every-step"] {
        let d = tmp(name);
        let src = format!("{}/docs/results/{name}", env!("CARGO_MANIFEST_DIR"));
        let cp = Command::new("cp")
            .args(["-r", &src, d.to_str().unwrap()])
            .status();
        assert!(cp.unwrap().success());
        let results = d.join("RESULTS.md");
        report(&d, &d.join("png"), &results);
        let md = std::fs::read_to_string(&results).unwrap();
        let findings: Vec<&str> = md
            .lines()
            .skip_while(|l| !l.starts_with("## The paper's findings"))
            .take_while(|l| !l.starts_with("Rules ("))
            .collect();
        assert!(findings.len() > 20, "{md}");
        for l in &findings {
            if let Some(rest) = l.trim_start().strip_prefix("- (b) `") {
                let cell = rest.split('`').next().unwrap();
                assert!(
                    cell.contains(".os"),
                    "(b) must cite a cell with more steps: {l}"
                );
            }
            assert!(!l.contains("not in the study vs"), "{l}");
            assert!(!l.contains("not in the study: difference"), "{l}");
            // A line citing only cells without episodes is folded into the name lists; one that
            // still mentions such a cell cites another with episodes beside it.
            let t = l.trim_start();
            let folded =
                t.starts_with("- not run yet: `") || t.starts_with("- not in the study: `");
            if !folded && (l.contains("no episode yet") || l.contains("not in the study")) {
                assert!(l.contains(" = "), "a line with nothing measured: {l}");
            }
        }
        assert!(findings
            .iter()
            .any(|l| l.trim_start().starts_with("- not in the study: `")));
    }
}
