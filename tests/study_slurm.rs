//! The `smoke` study as a real Slurm job array of 2 (the script `qwm study slurm` writes,
//! submitted with `sbatch --wait`), checked against a local run: the merged cell reports
//! must be the same JSON apart from timing fields.
//!
//! It needs a running Slurm: `.ci/run` starts a one-node cluster with `.ci/slurm-up.sh` and
//! runs this test with `--ignored`; by hand: `bash .ci/slurm-up.sh && cargo test --release
//! --test study_slurm -- --ignored`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn reports(dir: &Path) -> Vec<(String, String)> {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("plan_seconds");
                m.remove("plan_seconds_median");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for env in std::fs::read_dir(dir.join("cells")).unwrap() {
        for f in std::fs::read_dir(env.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            strip(&mut v);
            out.push((
                p.strip_prefix(dir).unwrap().display().to_string(),
                serde_json::to_string_pretty(&v).unwrap(),
            ));
        }
    }
    out.sort();
    out
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

    let (a, b) = (reports(&local), reports(&cluster));
    assert_eq!(a.len(), 12);
    assert_eq!(
        a.iter().map(|x| &x.0).collect::<Vec<_>>(),
        b.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(
            x, y,
            "{name}: the Slurm array's report differs from the local run's"
        );
    }
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(cluster.join("study.json")).unwrap())
            .unwrap();
    assert!(m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["state"] == "done"));
}
