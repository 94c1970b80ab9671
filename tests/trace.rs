//! Plan traces: `qwm plan --trace` records what docs/TRACE.md says, deterministically, and
//! the reader refuses newer, truncated or missing traces with errors that name the file.

use std::path::{Path, PathBuf};
use std::process::Command;

fn qwm(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qwm"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running qwm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qwm-trace-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A small traced plan on the shipped Wall model with a w8 comparison (a few seconds).
fn record(dir: &Path) {
    let d = dir.to_str().unwrap();
    let (ok, err) = qwm(&[
        "plan",
        "--env",
        "wall",
        "--seed",
        "3",
        "--backend",
        "cpu",
        "--samples",
        "16",
        "--topk",
        "4",
        "--opt-steps",
        "2",
        "--max-iter",
        "2",
        "--horizon",
        "3",
        "--trace",
        d,
        "--compare",
        "w8",
    ]);
    assert!(ok, "qwm plan --trace failed: {err}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &p);
        } else {
            std::fs::copy(e.path(), p).unwrap();
        }
    }
}

#[test]
fn plan_trace_records_what_the_viewer_shows_deterministically() {
    let (a, b) = (tmp("a"), tmp("b"));
    record(&a);
    record(&b);
    let t = qwm::trace::load(&a).expect("reading the trace back");
    let m = &t.meta;
    assert_eq!((m.env.as_str(), m.seed, m.plan.horizon), ("wall", 3, 3));
    assert_eq!(t.runs.len(), 2, "the run and the compared run");
    assert_eq!(
        (t.runs[0].meta.label.as_str(), t.runs[1].meta.label.as_str()),
        ("fp", "w8")
    );
    assert!(t.runs[1].meta.linear_bytes.is_some());
    let env = qwm::env::make("wall").unwrap();
    for run in &t.runs {
        assert!(run.meta.finished);
        assert!(!run.iters.is_empty() && run.iters.len() <= 2);
        let mut state = m.start.clone();
        for it in &run.iters {
            let im = &it.meta;
            assert_eq!(im.opt_steps.len(), 2);
            for s in &im.opt_steps {
                assert!(s.best <= s.elite_mean && s.elite_min <= s.elite_mean);
                assert!(s.elite_mean <= s.elite_max && s.spread > 0.0);
            }
            assert_eq!(it.real.len(), 4);
            assert_eq!(it.imagined.len(), 4, "the shipped model has a decoder");
            assert_eq!(im.latent_err.len(), 4);
            // Step 0 compares the observation's encoding with itself.
            assert!(im.latent_err[0] < 1e-8, "{:?}", im.latent_err);
            assert!(im.latent_err[1..].iter().all(|e| *e > 0.0));
            assert_eq!(
                im.divergence.len(),
                4,
                "a compared model gives a divergence"
            );
            assert_eq!(it.elite_actions.len(), 4);
            assert_eq!(it.elite_states.len(), 4);
            // The path is continuous and replays in the environment.
            assert_eq!(it.executed_states[0], state);
            let mut e = env.clone();
            e.reset_to(&state).unwrap();
            for (a, s) in it.executed_actions.iter().zip(&it.executed_states[1..]) {
                e.step(a).unwrap();
                assert_eq!(&e.state(), s);
            }
            state = it.executed_states.last().unwrap().clone();
            assert!((env.state_distance(&state, &m.goal) - im.distance).abs() < 1e-5);
            // The real frames are the environment's renders of the recorded states.
            assert_eq!(
                it.real[2],
                env.render_state(&it.real_states[2], 64).unwrap()
            );
        }
    }
    // Same seed, model and backend: the same arrays.
    let tb = qwm::trace::load(&b).unwrap();
    for (ra, rb) in t.runs.iter().zip(&tb.runs) {
        for (x, y) in ra.iters.iter().zip(&rb.iters) {
            assert_eq!(x.plan_actions, y.plan_actions);
            assert_eq!(x.pred_latent, y.pred_latent);
            assert_eq!(x.imagined, y.imagined);
            assert_eq!(x.meta.opt_steps, y.meta.opt_steps);
        }
    }
    // A directory that holds a trace is not overwritten.
    let (ok, err) = qwm(&[
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
        a.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("already holds a trace"), "{err}");

    // Newer format version.
    let c = tmp("newer");
    copy_dir(&a, &c);
    let jp = c.join("trace.json");
    let js = std::fs::read_to_string(&jp).unwrap();
    std::fs::write(&jp, js.replacen("\"version\": 1", "\"version\": 7", 1)).unwrap();
    let e = qwm::trace::load(&c).unwrap_err().to_string();
    assert!(
        e.contains("version 7 is newer") && e.contains("trace.json"),
        "{e}"
    );
    // A missing iteration file.
    let c = tmp("missing");
    copy_dir(&a, &c);
    std::fs::remove_file(c.join("r1/iter0000.safetensors")).unwrap();
    let e = qwm::trace::load(&c).unwrap_err().to_string();
    assert!(
        e.contains("truncated trace") && e.contains("iter0000"),
        "{e}"
    );
    // A truncated iteration file.
    let c = tmp("cut");
    copy_dir(&a, &c);
    let p = c.join("r0/iter0000.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = qwm::trace::load(&c).unwrap_err().to_string();
    assert!(
        e.contains("iter0000.safetensors") && e.contains("truncated"),
        "{e}"
    );
    // No trace at all.
    let e = qwm::trace::load(&tmp("none")).unwrap_err().to_string();
    assert!(e.contains("qwm plan") && e.contains("--trace"), "{e}");
    for d in ["a", "b", "newer", "missing", "cut"] {
        let _ = std::fs::remove_dir_all(tmp(d));
    }
}
