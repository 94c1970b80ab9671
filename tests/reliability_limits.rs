//! More of the probe suite of docs/RELIABILITY.md (tests/reliability.rs has the first part):
//! cases of issue 19's classes in the files and commands that joined later (plan traces,
//! study files and directories, `qwm train`, `qwm bench`). Each reproduces what the code did
//! before (noted per test) and asserts the behaviour that replaced it. Names start with the
//! class.

use std::path::{Path, PathBuf};

use qwm::study::{Store, Study};

#[path = "common/cli.rs"]
mod cli;
use cli::{mkfifo, qwm, refused};

fn dir(name: &str) -> PathBuf {
    cli::dir("probe2", name)
}

// ---- 1, 2. panics and memory: unbounded counts ----

#[test]
fn memory_absurd_train_counts_are_refused_before_the_data_is_read() {
    // Before: `--batch`, the epoch counts and `--rollout-steps` had no upper bound (a huge
    // rollout overflowed the window length, a huge epoch count overflowed the batch seed);
    // the data directory was read first. Now each is refused by name before anything is read
    // (the data directory here does not even exist).
    let d = dir("train");
    let out = d.join("m.safetensors");
    let data = d.join("no-such-data");
    let huge = "18446744073709551615";
    for (flag, value) in [
        ("--batch", huge),
        ("--batch", "0"),
        ("--encoder-epochs", huge),
        ("--predictor-epochs", "100000000"),
        ("--rollout-steps", huge),
        ("--max-steps-per-epoch", "0"),
        ("--max-episodes", "1"),
    ] {
        let r = qwm(&[
            "train",
            "--env",
            "wall",
            "--config",
            "tiny",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            flag,
            value,
        ]);
        refused(&r, &[flag, "must be between"]);
    }
    let mut c = qwm::train::TrainConfig::new(qwm::model::ModelConfig::tiny());
    c.td_weight = f64::NAN;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("--td-weight"), "{e}");
}

#[test]
fn panic_absurd_render_bench_and_study_counts_are_refused() {
    // Before (binary of main at fedd8f2): `env render --size` huge panicked (101) or aborted
    // on allocation (134), `env strip --frames`/`--every` huge ran until killed, every
    // `bench` count below panicked on a capacity overflow or ran forever (`--reps`), and
    // `study slurm --cpus` wrote the number into the job file.
    let d = dir("counts");
    let png = d.join("x.png");
    let png = png.to_str().unwrap();
    let huge = "18446744073709551615";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "env", "render", "--env", "wall", "--size", huge, "--out", png,
            ],
            "--size",
        ),
        (
            vec![
                "env", "render", "--env", "wall", "--size", "100000", "--out", png,
            ],
            "--size",
        ),
        (
            vec![
                "env", "strip", "--env", "wall", "--frames", huge, "--out", png,
            ],
            "--frames",
        ),
        (
            vec![
                "env", "strip", "--env", "wall", "--every", huge, "--out", png,
            ],
            "--every",
        ),
        (
            vec![
                "env", "strip", "--env", "wall", "--frames", "1000", "--size", "4096", "--out", png,
            ],
            "picture's bytes",
        ),
        (
            vec!["bench", "env", "--env", "wall", "--steps", huge],
            "--steps",
        ),
        (
            vec!["bench", "env", "--env", "wall", "--size", "100000"],
            "--size",
        ),
        (vec!["bench", "plan", "--samples", huge], "--samples"),
        (vec!["bench", "plan", "--horizon", huge], "--horizon"),
        (vec!["bench", "model", "--batches", huge], "--batches"),
        (
            vec!["bench", "model", "--rollout-samples", huge],
            "--rollout-samples",
        ),
        (vec!["bench", "model", "--reps", huge], "--reps"),
        (
            vec![
                "study", "slurm", "smoke", "--tasks", "2", "--cpus", huge, "--out", "x",
            ],
            "--cpus",
        ),
        (
            vec!["study", "run", "smoke", "--out", "x", "--jobs", huge],
            "--jobs",
        ),
    ];
    for (args, flag) in cases {
        let r = qwm(&args);
        refused(&r, &[flag]);
    }
    assert!(!Path::new(png).exists());
}

#[test]
fn memory_study_grid_and_counts_are_bounded() {
    // Before: a 300-byte study file could ask for a billion cells (quant x methods x
    // opt_steps) or a trillion work items (episodes / chunk), expanded before anything
    // checked them.
    let d = dir("study-grid");
    let list = |n: usize| {
        (0..n)
            .map(|i| format!("\"w{}g{}\"", 2 + i % 7, 32 << (i % 2)))
            .collect::<Vec<_>>()
            .join(",")
    };
    let steps = (1..=1000)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let cases = [
        (
            format!(
                "name = \"big\"\nepisodes = 1\n[[env]]\nname = \"wall\"\n[[grid]]\nname = \"g\"\n\
                 quant = [{}]\nopt_steps = [{steps}]\n",
                list(1000)
            ),
            "cells",
        ),
        (
            "name = \"big\"\nepisodes = 1000000\nchunk = 1\n[[env]]\nname = \"wall\"\n[[grid]]\n\
             name = \"g\"\nquant = [\"fp\", \"w8\", \"w4\"]\n"
                .to_string(),
            "work items",
        ),
        (
            "name = \"big\"\nepisodes = 2000000\n[[env]]\nname = \"wall\"\n[[grid]]\n\
             name = \"g\"\nquant = [\"fp\"]\n"
                .to_string(),
            "episodes",
        ),
        (
            "name = \"big\"\nepisodes = 4\n[planner]\nsamples = 4000000\n[[env]]\nname = \
             \"wall\"\n[[grid]]\nname = \"g\"\nquant = [\"fp\"]\n"
                .to_string(),
            "samples",
        ),
    ];
    for (i, (text, what)) in cases.iter().enumerate() {
        let p = d.join(format!("study{i}.toml"));
        std::fs::write(&p, text).unwrap();
        let e = Study::load(p.to_str().unwrap()).unwrap_err().to_string();
        assert!(
            e.contains(&format!("study{i}.toml")) && e.contains(what),
            "case {i}: {e}"
        );
    }
}

#[test]
fn panic_edited_study_manifest_is_refused() {
    // Before: `qwm study status` believed the manifest's study: `chunk = 0` looped forever
    // while the list of work items grew (memory), a cell name with `..` pointed reports
    // outside the directory, and an unknown spec panicked in `Cell::spec`.
    let d = dir("manifest");
    let study = Study::load("smoke").unwrap();
    let st = Store::new(&d);
    st.write_manifest("smoke", &study).unwrap();
    let good = std::fs::read_to_string(st.manifest_path()).unwrap();
    type Edit<'a> = (&'a str, &'a dyn Fn(&mut serde_json::Value));
    let edits: [Edit; 4] = [
        ("chunk", &|m| m["study"]["chunk"] = 0.into()),
        ("episodes", &|m| {
            m["study"]["cells"][0]["episodes"] = 0.into()
        }),
        ("not ENV/SPEC", &|m| {
            m["study"]["cells"][0]["name"] = "wall/../../../etc/passwd".into()
        }),
        ("cell", &|m| m["study"]["cells"][1]["quant"] = "w99".into()),
    ];
    for (what, edit) in edits {
        let mut m: serde_json::Value = serde_json::from_str(&good).unwrap();
        edit(&mut m);
        std::fs::write(st.manifest_path(), m.to_string()).unwrap();
        let r = qwm(&["study", "status", d.to_str().unwrap()]);
        refused(&r, &["study.json", what]);
    }
}

#[test]
fn memory_special_files_are_not_read_as_traces_or_studies() {
    // Before: the trace and study readers used `read_to_string`, which reads a character
    // device forever and blocks on a FIFO.
    let d = dir("special-in");
    let study = d.join("study.toml");
    std::os::unix::fs::symlink("/dev/zero", &study).unwrap();
    let e = Study::load(study.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("character device"), "{e}");
    let t = d.join("trace");
    std::fs::create_dir_all(&t).unwrap();
    std::os::unix::fs::symlink("/dev/zero", t.join("trace.json")).unwrap();
    let e = qwm::trace::load(&t).unwrap_err().to_string();
    assert!(
        e.contains("trace.json") && e.contains("character device"),
        "{e}"
    );
    let s = d.join("studydir");
    std::fs::create_dir_all(&s).unwrap();
    if mkfifo(&s.join("study.json")) {
        let r = qwm(&["study", "status", s.to_str().unwrap()]);
        refused(&r, &["study.json", "FIFO"]);
    }
}

// ---- 3. lost work ----

#[test]
fn loss_special_outputs_of_study_and_bench_are_not_replaced() {
    // Before: `qwm study report --results R`, `qwm bench ... --json R --force` and
    // `qwm view DIR --gif R` replaced (or wrote into) whatever R was.
    let d = dir("special-out");
    let fifo = d.join("out.fifo");
    assert!(mkfifo(&fifo));
    let f = fifo.to_str().unwrap();
    let e = qwm::study::store::write_atomic(&fifo, "x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("FIFO"), "{e}");
    let r = qwm(&["view", "tests/fixtures/trace-wall", "--gif", f]);
    refused(&r, &["--gif", "FIFO"]);
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn loss_report_whose_count_disagrees_with_its_episodes_is_refused() {
    // Before: a report saying `finished: 0` over stored episodes was believed by the study
    // report (success rates above 1) and by `qwm eval`'s resume count.
    let d = dir("report-count");
    let p = d.join("r.json");
    let cfg = qwm::plan::eval::EvalConfig {
        env: "wall".into(),
        episodes: 1,
        planner: "cem".into(),
        plan: (&qwm::plan::PlanConfig::default()).into(),
        mpc: (&qwm::plan::MpcConfig::default()).into(),
        model: "m".into(),
        model_crc32: None,
        model_planning_crc32: None,
        quant: "fp".into(),
        backend: "cpu".into(),
    };
    let ep = qwm::plan::EpisodeRecord {
        seed: qwm::plan::eval::eval_seed(0),
        success: true,
        iterations: 1,
        final_state_distance: 0.5,
        final_objective: 0.5,
        plan_seconds: vec![0.1],
        start: vec![0.0; 2],
        goal: vec![0.0; 2],
        final_state: vec![0.0; 2],
    };
    let mut r = qwm::plan::eval::EvalReport::summarize(cfg, vec![ep], None);
    r.finished = 0;
    std::fs::write(&p, serde_json::to_string(&r).unwrap()).unwrap();
    let e = qwm::plan::eval::read_report(&p).unwrap_err().to_string();
    assert!(e.contains("r.json") && e.contains("finished"), "{e}");
}

// ---- 6. unclear errors ----

#[test]
fn unclear_trace_states_outside_the_environment_are_refused_naming_the_file() {
    // Before: a trace whose start (or an iteration's first state) lay outside the workspace
    // loaded, and `qwm view DIR --gif` then failed with "wall: state[0] ... is outside the
    // workspace", naming no file (found by the fuzzer's long run on iteration files).
    let d = dir("trace-state");
    let src = Path::new("tests/fixtures/trace-wall");
    for e in walk(src) {
        let to = d.join(e.strip_prefix(src).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&e, &to).unwrap();
    }
    let jp = d.join("trace.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&jp).unwrap()).unwrap();
    m["start"][0] = 1e9.into();
    std::fs::write(&jp, m.to_string()).unwrap();
    let e = qwm::trace::load(&d).unwrap_err().to_string();
    assert!(
        e.contains("trace.json") && e.contains("start") && e.contains("outside"),
        "{e}"
    );
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

// ---- 3. two writers on one run or trace ----

#[test]
fn a_second_train_on_the_same_out_and_a_trace_into_a_used_directory_are_refused() {
    // Before: two `qwm train` runs on one --out both wrote the same checkpoint and state, and
    // `--trace DIR` reused a directory holding an unfinished recording (stale iteration files
    // of the old run stayed beside the new ones).
    let d = dir("writers");
    let out = d.join("m.safetensors");
    let args = |data: &Path| {
        let mut v: Vec<String> = ["train", "--env", "wall", "--config", "tiny", "--data"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push(data.display().to_string());
        v.push("--out".into());
        v.push(out.display().to_string());
        v
    };
    let data = d.join("no-such-data");
    let a = args(&data);
    let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    // Without a competitor the run gets as far as the (missing) data.
    let free = qwm(&a);
    assert_eq!(free.0, 1, "{}", free.2);
    assert!(!free.2.contains("another qwm train"), "{}", free.2);
    // While another process holds the run, it is refused before anything is read.
    let held = qwm::io::FileLock::try_acquire(&out).unwrap().unwrap();
    refused(&qwm(&a), &["--out", "another qwm train", "m.safetensors"]);
    drop(held);

    let t = d.join("trace");
    std::fs::create_dir_all(t.join("r0")).unwrap();
    std::fs::write(t.join("goal.safetensors"), b"old").unwrap();
    let r = qwm(&[
        "plan",
        "--env",
        "wall",
        "--backend",
        "cpu",
        "--samples",
        "8",
        "--topk",
        "2",
        "--opt-steps",
        "1",
        "--max-iter",
        "1",
        "--trace",
        t.to_str().unwrap(),
    ]);
    refused(&r, &["is not empty", "--trace"]);
}
