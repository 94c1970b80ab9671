//! Study test helpers: the `qwm` binary's runs, and cell reports compared without their timing
//! fields.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Every cell report (`cells/ENV/NAME.json`) with the timing fields removed, by path.
pub fn cell_reports(dir: &Path) -> Vec<(String, Value)> {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("plan_seconds");
                m.remove("plan_seconds_median");
                m.remove("quantize_seconds");
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
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            out.push((rel, v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The two study directories hold the same 12 smoke cells with the same JSON text apart from
/// the timing fields.
#[track_caller]
pub fn assert_same_reports(a: &Path, b: &Path) {
    let (ra, rb) = (cell_reports(a), cell_reports(b));
    assert_eq!(ra.len(), 12, "12 smoke cells in {}", a.display());
    assert_eq!(
        ra.iter().map(|r| &r.0).collect::<Vec<_>>(),
        rb.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    for ((name, x), (_, y)) in ra.iter().zip(&rb) {
        assert_eq!(
            serde_json::to_string_pretty(x).unwrap(),
            serde_json::to_string_pretty(y).unwrap(),
            "{name} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

pub fn qwm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qwm"))
}

pub fn run(args: &[&str]) -> Output {
    qwm().args(args).output().expect("run qwm")
}

/// The stdout of a run that must succeed.
pub fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "qwm failed: {err}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The stderr of a run that must fail.
pub fn fails(o: &Output) -> String {
    assert!(!o.status.success(), "qwm should have failed");
    String::from_utf8_lossy(&o.stderr).into_owned()
}
