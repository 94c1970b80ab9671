//! The cluster files `qwm study slurm` and `qwm study k8s` write, and the `smoke` study as a
//! real Slurm job array of 2 (that script, submitted with `sbatch --wait`), checked against a
//! local run: the merged cell reports must be the same JSON apart from timing fields.
//!
//! The array test needs a running Slurm: `.ci/run` starts a one-node cluster with
//! `.ci/slurm-up.sh` and runs it with `--ignored`; by hand: `bash .ci/slurm-up.sh && cargo test
//! --release --test study_slurm -- --ignored`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

#[path = "common/study.rs"]
mod study_common;
use study_common::{fails, ok, qwm, run};

#[test]
fn cluster_files_run_the_study_by_array_index() {
    let o = ok(&run(&[
        "study",
        "slurm",
        "smoke",
        "--out",
        "/shared/st",
        "--tasks",
        "4",
        "--cpus",
        "2",
        "--workdir",
        "/repo",
        "--time",
        "1:00:00",
    ]));
    assert!(o.contains("#SBATCH --array=0-3"), "{o}");
    assert!(o.contains("#SBATCH --cpus-per-task=2"), "{o}");
    assert!(o.contains("#SBATCH --chdir=/repo"), "{o}");
    assert!(
        o.contains("study run smoke --out /shared/st --shard auto --jobs 2"),
        "{o}"
    );
    let k = ok(&run(&[
        "study",
        "k8s",
        "smoke",
        "--out",
        "/work/st",
        "--tasks",
        "3",
        "--image",
        "reg/qwm:1",
    ]));
    assert!(
        k.contains("completionMode: Indexed") && k.contains("completions: 3"),
        "{k}"
    );
    assert!(
        k.contains("name: JOB_COMPLETIONS") && k.contains("value: \"3\""),
        "{k}"
    );
    assert!(k.contains("\"--shard\", \"auto\""), "{k}");
    // --shard auto inside such a job: each index is one shard of the stated count.
    let err = fails(
        &qwm()
            .args([
                "study",
                "run",
                "smoke",
                "--out",
                "/nonexistent/x",
                "--shard",
                "auto",
            ])
            .env("JOB_COMPLETION_INDEX", "3")
            .env("JOB_COMPLETIONS", "3")
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("shard index 3 is out of range for 3 shards"),
        "{err}"
    );
}

#[test]
#[ignore = "needs a running Slurm (bash .ci/slurm-up.sh); .ci/run runs it"]
fn smoke_study_as_a_slurm_array_of_two_matches_a_local_run() {
    let qwm = env!("CARGO_BIN_EXE_qwm");
    let root = env!("CARGO_MANIFEST_DIR");
    let base: PathBuf = std::env::temp_dir().join(format!("qwm-slurm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let (local, cluster) = (base.join("local"), base.join("cluster"));

    let script = base.join("smoke.sbatch");
    let o = Command::new(qwm)
        .args([
            "study",
            "slurm",
            "smoke",
            "--tasks",
            "2",
            "--cpus",
            "1",
            "--backend",
            "cpu",
        ])
        .args(["--qwm", qwm, "--workdir", root, "--time", "30:00"])
        .arg("--out")
        .arg(&cluster)
        .arg("--file")
        .arg(&script)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let t0 = std::time::Instant::now();
    let s = Command::new("sbatch")
        .arg("--wait")
        .arg(&script)
        .output()
        .expect("sbatch (is Slurm installed? bash .ci/slurm-up.sh)");
    let logs: String = std::fs::read_dir(cluster.join("logs"))
        .map(|rd| {
            rd.flatten()
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        s.status.success(),
        "sbatch --wait failed: {}{}\ntask logs:\n{logs}",
        String::from_utf8_lossy(&s.stdout),
        String::from_utf8_lossy(&s.stderr)
    );
    eprintln!("Slurm array of 2: {:.0} s", t0.elapsed().as_secs_f64());
    // Both tasks ran, each its own shard.
    assert!(logs.matches("episode").count() >= 48, "{logs}");

    let t1 = std::time::Instant::now();
    let l = Command::new(qwm)
        .args([
            "study",
            "run",
            "smoke",
            "--jobs",
            "1",
            "--backend",
            "cpu",
            "--out",
        ])
        .arg(&local)
        .current_dir(root)
        .output()
        .unwrap();
    assert!(l.status.success(), "{}", String::from_utf8_lossy(&l.stderr));
    eprintln!("local run: {:.0} s", t1.elapsed().as_secs_f64());

    study_common::assert_same_reports(&local, &cluster);
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(cluster.join("study.json")).unwrap())
            .unwrap();
    assert!(m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["state"] == "done"));
}
