//! Shared helpers of the tests that run the `qwm` binary and check its refusals
//! (tests/reliability.rs, tests/reliability_limits.rs).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh temporary directory for one test (`qwm-PREFIX-NAME-PID`).
pub fn dir(prefix: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qwm-{prefix}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run the binary with extra environment variables: (exit code, stdout, stderr).
pub fn qwm_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qwm"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run qwm");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run the binary: (exit code, stdout, stderr).
pub fn qwm(args: &[&str]) -> (i32, String, String) {
    qwm_env(args, &[])
}

/// A refusal: exit code 1 (an error), never 101 (a panic) or a signal, and stderr names every
/// needle.
#[track_caller]
pub fn refused(r: &(i32, String, String), needles: &[&str]) {
    assert_eq!(r.0, 1, "expected a clean error, got exit {}: {}", r.0, r.2);
    for n in needles {
        assert!(r.2.contains(n), "stderr lacks {n:?}: {}", r.2);
    }
}

/// Make a FIFO at `p`; false where `mkfifo` is unavailable.
pub fn mkfifo(p: &Path) -> bool {
    Command::new("mkfifo")
        .arg(p)
        .status()
        .is_ok_and(|s| s.success())
}
