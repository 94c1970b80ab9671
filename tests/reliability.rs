//! The probe suite of docs/RELIABILITY.md: each test reproduces one case of a class of
//! failure that qwm had (issue 19: panics, memory exhaustion, lost work, silent CPU/GPU
//! disagreement, accepted nonsense, late or unclear errors, unstable bytes) and asserts the
//! behaviour that replaced it. Names start with the class.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use qwm::model::quantized as qm;
use qwm::model::{format, ModelConfig, Weights};
use qwm::plan::eval::{read_report, run_eval, write_report, EvalConfig, EvalReport, ReportFile};
use qwm::plan::{EpisodeRecord, MpcConfig, PlanConfig};
use qwm::quant::{ActStats, QuantSpec};
use serde_json::Value;

#[path = "common/cli.rs"]
mod cli;
use cli::{qwm_env as qwm, refused};

fn dir(name: &str) -> PathBuf {
    cli::dir("probe", name)
}

fn tiny() -> Weights {
    Weights::random(&ModelConfig::tiny(), 3).unwrap()
}

/// A quantized tiny model file for `spec` (static activation ranges from made-up statistics).
fn quant_file(d: &Path, spec: &str) -> PathBuf {
    let w = tiny();
    let stats: BTreeMap<String, ActStats> = qm::quantized_linears(&w.config)
        .into_iter()
        .map(|(n, _)| {
            let s = ActStats {
                min: -1.0,
                max: 1.0,
                count: 4,
            };
            (n, s)
        })
        .collect();
    let q = qm::quantize_model(&w, &spec.parse().unwrap(), "rtn", Some(&stats)).unwrap();
    let p = d.join(format!("{spec}.safetensors"));
    qm::save(&q, &p).unwrap();
    p
}

/// Rewrite the JSON in a safetensors file's metadata entry `key` and write the file to `out`.
fn edit_meta(src: &Path, out: &Path, key: &str, f: impl FnOnce(&mut Value)) {
    let b = std::fs::read(src).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let mut h: Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let mut q: Value = serde_json::from_str(h["__metadata__"][key].as_str().unwrap()).unwrap();
    f(&mut q);
    h["__metadata__"][key] = Value::String(q.to_string());
    let mut text = serde_json::to_vec(&h).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut o = (text.len() as u64).to_le_bytes().to_vec();
    o.extend_from_slice(&text);
    o.extend_from_slice(&b[8 + n..]);
    std::fs::write(out, o).unwrap();
}

fn edit_quant_meta(src: &Path, out: &Path, f: impl FnOnce(&mut Value)) {
    edit_meta(src, out, "qwm_quant", f)
}

fn first_layer(q: &Value) -> String {
    q["layers"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone()
}

#[track_caller]
fn quant_refused(p: &Path, needles: &[&str]) {
    let e = qm::load(p).unwrap_err().to_string();
    assert!(e.contains(&p.display().to_string()), "{e}");
    for n in needles {
        assert!(e.contains(n), "{e} lacks {n:?}");
    }
}

// ---- 1. panics ----

#[test]
fn panic_quantized_group_zero_is_refused() {
    let d = dir("group0");
    let src = quant_file(&d, "w4g32");
    let p = d.join("g0.safetensors");
    edit_quant_meta(&src, &p, |q| {
        let l = first_layer(q);
        q["layers"][&l]["group"] = 0.into();
    });
    quant_refused(&p, &["group"]);
}

#[test]
fn panic_quantized_huge_width_is_refused() {
    let d = dir("hugek");
    let src = quant_file(&d, "w4");
    for k in [u64::MAX, 1 << 62, u32::MAX as u64 + 1] {
        let p = d.join("k.safetensors");
        edit_quant_meta(&src, &p, |q| {
            let l = first_layer(q);
            q["layers"][&l]["k"] = k.into();
        });
        quant_refused(&p, &["in the config"]);
    }
}

#[test]
fn panic_zero_lanes_per_workgroup_is_an_error() {
    // Before: QWM_WG=0 divided by zero in the matmul launcher (on a GPU backend).
    let d = dir("wg0");
    let out = d.join("plan");
    let r = qwm(
        &[
            "plan",
            "--env",
            "wall",
            "--model",
            "random",
            "--backend",
            "gpu",
            "--max-iter",
            "1",
            "--opt-steps",
            "1",
            "--samples",
            "4",
            "--topk",
            "2",
            "--out",
            out.to_str().unwrap(),
        ],
        &[("QWM_WG", "0")],
    );
    refused(&r, &["QWM_WG=\"0\"", "power of two"]);
}

#[test]
fn panic_absurd_data_steps_are_refused() {
    let d = dir("steps");
    for steps in ["18446744073709551615", "10000000"] {
        let r = qwm(
            &[
                "data",
                "--env",
                "wall",
                "--episodes",
                "1",
                "--steps",
                steps,
                "--out",
                d.join("data").to_str().unwrap(),
            ],
            &[],
        );
        refused(&r, &["--steps"]);
    }
}

// ---- 2. memory exhaustion ----

#[test]
fn memory_absurd_config_is_refused_before_allocation() {
    let d = dir("depth");
    let w = tiny();
    let good = d.join("good.safetensors");
    format::save(&w, &good).unwrap();
    for (field, value) in [
        ("/encoder/depth", 1u64 << 40),
        ("/image_size", 1 << 30),
        ("/predictor/mlp", 1 << 40),
        ("/num_hist", 1 << 20),
    ] {
        let p = d.join("absurd.safetensors");
        edit_meta(&good, &p, "config", |c| {
            *c.pointer_mut(field).unwrap() = value.into()
        });
        let t = std::time::Instant::now();
        let e = format::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("absurd.safetensors") && e.contains("supports"),
            "{e}"
        );
        assert!(t.elapsed().as_secs() < 5, "{field}: took {:?}", t.elapsed());
    }
    // The same bound applies to a --config file.
    let mut cfg = ModelConfig::tiny();
    cfg.image_size = 1 << 30;
    let cj = d.join("cfg.json");
    std::fs::write(&cj, serde_json::to_string(&cfg).unwrap()).unwrap();
    let r = qwm(
        &[
            "model",
            "random",
            "--config",
            cj.to_str().unwrap(),
            "--out",
            d.join("m.safetensors").to_str().unwrap(),
        ],
        &[],
    );
    refused(&r, &["--config", "image_size"]);
}

#[test]
fn memory_special_files_are_not_read() {
    // Before: a character device as input was read forever.
    let dev = Path::new("/dev/zero");
    for e in [
        format::load(dev).map(|_| ()).unwrap_err(),
        qm::is_quantized_file(dev).map(|_| ()).unwrap_err(),
        qm::load(dev).map(|_| ()).unwrap_err(),
        read_report(dev).map(|_| ()).unwrap_err(),
    ] {
        let e = e.to_string();
        assert!(
            e.contains("/dev/zero") && e.contains("character device"),
            "{e}"
        );
    }
    let r = qwm(&["model", "info", "/dev/zero"], &[]);
    refused(&r, &["character device"]);
    // A FIFO is refused without opening it (opening would block until a writer appears).
    let d = dir("fifo-in");
    let fifo = d.join("model.safetensors");
    if cli::mkfifo(&fifo) {
        let e = format::load(&fifo).unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
    }
}

// ---- 3. lost work ----

/// A model whose every plan costs the same: episodes run in microseconds.
struct Flat;

impl qwm::plan::PlanModel for Flat {
    fn action_dim(&self) -> usize {
        2
    }
    fn frameskip(&self) -> usize {
        5
    }
    fn set_problem(
        &mut self,
        _: &qwm::env::Frame,
        _: &[f32],
        _: &qwm::env::Frame,
        _: &[f32],
    ) -> qwm::Result<()> {
        Ok(())
    }
    fn costs(&mut self, _: &[f32], n: usize) -> qwm::Result<Vec<f32>> {
        Ok(vec![1.0; n])
    }
    fn denormalize(&self, a: &[f32]) -> Vec<f32> {
        a.to_vec()
    }
    fn image_size(&self) -> usize {
        8
    }
}

fn eval_setup(episodes: usize) -> (EvalConfig, PlanConfig, MpcConfig) {
    let pc = PlanConfig {
        horizon: 2,
        step_dim: 10,
        samples: 4,
        topk: 2,
        opt_steps: 1,
        ..PlanConfig::default()
    };
    let mpc = MpcConfig {
        max_iters: 1,
        n_taken: 1,
        ..Default::default()
    };
    let cfg = EvalConfig {
        env: "wall".into(),
        episodes,
        planner: "cem".into(),
        plan: (&pc).into(),
        mpc: (&mpc).into(),
        model: "flat".into(),
        model_crc32: None,
        model_planning_crc32: None,
        quant: "fp".into(),
        backend: "cpu".into(),
    };
    (cfg, pc, mpc)
}

fn eval(
    cfg: &EvalConfig,
    pc: &PlanConfig,
    mpc: &MpcConfig,
    json: &Path,
) -> qwm::Result<EvalReport> {
    run_eval(
        cfg,
        pc,
        mpc,
        &mut Flat,
        Some(json),
        &mut |_, _| {},
        &mut |_, _| {},
    )
}

#[test]
fn loss_nan_statistics_round_trip() {
    // Before: NaN was written as null and the report could not be read back.
    let d = dir("nan");
    let (cfg, _, _) = eval_setup(3);
    let empty = EvalReport::summarize(cfg.clone(), vec![], None);
    assert!(empty.mean_state_dist.is_nan());
    let rec = EpisodeRecord {
        seed: 1,
        success: true,
        iterations: 0,
        final_state_distance: f32::INFINITY,
        final_objective: f32::NAN,
        plan_seconds: vec![f64::NAN],
        start: vec![0.0, 1.0],
        goal: vec![f32::NAN, 1.0],
        final_state: vec![0.0, 1.0],
    };
    let one = EvalReport::summarize(cfg, vec![rec], None);
    for (i, r) in [empty, one].iter().enumerate() {
        let p = d.join(format!("r{i}.json"));
        write_report(&p, r).unwrap();
        let back = read_report(&p).unwrap();
        // Non-finite values read back as NaN (JSON has no infinities either).
        assert!(back.mean_state_dist.is_nan() && !r.mean_state_dist.is_finite());
        assert_eq!(back.finished, r.finished);
        if let Some(e) = back.episodes.first() {
            assert!(e.final_objective.is_nan() && e.final_state_distance.is_nan());
            assert!(e.plan_seconds[0].is_nan() && e.goal[0].is_nan() && e.goal[1] == 1.0);
        }
    }
}

#[test]
fn loss_fewer_episodes_keep_the_finished_ones() {
    // Before: rerunning with fewer --episodes rewrote the report without the others.
    let d = dir("fewer");
    let json = d.join("r.json");
    let (cfg3, pc, mpc) = eval_setup(3);
    let r3 = eval(&cfg3, &pc, &mpc, &json).unwrap();
    assert_eq!(r3.finished, 3);
    let before = std::fs::read(&json).unwrap();
    let (cfg1, _, _) = eval_setup(1);
    let r1 = eval(&cfg1, &pc, &mpc, &json).unwrap();
    assert_eq!(r1.finished, 1);
    assert_eq!(r1.episodes[0].final_state, r3.episodes[0].final_state);
    assert_eq!(
        std::fs::read(&json).unwrap(),
        before,
        "the report must stay as it was"
    );
    assert_eq!(read_report(&json).unwrap().finished, 3);
}

#[test]
fn loss_concurrent_writers_are_refused() {
    // Before: two processes evaluating into one report both claimed success (or one failed on
    // the shared temporary name) and episodes vanished.
    let d = dir("lock");
    let json = d.join("r.json");
    let (cfg, pc, mpc) = eval_setup(2);
    let held = ReportFile::open(&json, "--json").unwrap();
    let e = ReportFile::open(&json, "--json").unwrap_err().to_string();
    assert!(e.contains("another qwm process"), "{e}");
    let e = eval(&cfg, &pc, &mpc, &json).unwrap_err().to_string();
    assert!(e.contains("another qwm process"), "{e}");
    // Another process is refused too, before it loads anything.
    let r = qwm(
        &[
            "eval",
            "--env",
            "wall",
            "--model",
            "random",
            "--backend",
            "cpu",
            "--episodes",
            "1",
            "--json",
            json.to_str().unwrap(),
        ],
        &[],
    );
    refused(&r, &["another qwm process"]);
    assert!(
        !json.exists(),
        "nothing may be written while the lock is held"
    );
    drop(held);
    assert_eq!(eval(&cfg, &pc, &mpc, &json).unwrap().finished, 2);
    // Writes leave no temporary behind.
    let names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn loss_special_outputs_are_not_replaced() {
    // Before: an output naming a device node or FIFO was replaced by a regular file (or the
    // write blocked on the FIFO).
    let d = dir("fifo-out");
    let fifo = d.join("out.fifo");
    assert!(cli::mkfifo(&fifo));
    let f = fifo.to_str().unwrap();
    for args in [
        vec!["model", "random", "--out", f],
        vec!["env", "render", "--env", "wall", "--out", f],
        vec![
            "eval",
            "--env",
            "wall",
            "--model",
            "random",
            "--episodes",
            "1",
            "--json",
            f,
        ],
    ] {
        let r = qwm(&args, &[]);
        refused(&r, &["FIFO"]);
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    // As root, a character device node of our own (the same device as /dev/null).
    let node = d.join("null");
    if Command::new("mknod")
        .args([node.to_str().unwrap(), "c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success())
    {
        let r = qwm(&["model", "random", "--out", node.to_str().unwrap()], &[]);
        refused(&r, &["character device"]);
        assert!(std::fs::symlink_metadata(&node)
            .unwrap()
            .file_type()
            .is_char_device());
    }
}

// ---- 4. silent CPU/GPU disagreement ----

#[test]
fn disagreement_float_and_packed_copies_of_a_layer_are_refused() {
    // Before: the CPU backend used the float weight and the GPU the packed codes.
    let d = dir("both");
    let src = quant_file(&d, "w4");
    let q = qm::load(&src).unwrap();
    let (name, pw) = q.packed.iter().next().unwrap();
    let mut raw: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let st_bytes = std::fs::read(&src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
    for (n, v) in st.tensors() {
        raw.push((n.clone(), v.dtype(), v.shape().to_vec(), v.data().to_vec()));
    }
    raw.push((
        name.clone(),
        safetensors::Dtype::F32,
        vec![pw.n, pw.k],
        vec![0u8; pw.n * pw.k * 4],
    ));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&st_bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = raw
        .iter()
        .map(|(n, dt, s, b)| {
            let v = safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap();
            (n.clone(), v)
        })
        .collect();
    let p = d.join("both.safetensors");
    let bytes = safetensors::serialize(views, meta.metadata().clone()).unwrap();
    std::fs::write(&p, bytes).unwrap();
    quant_refused(&p, &["both a float weight and packed codes", name]);
}

// ---- 5. accepted nonsense ----

#[test]
fn nonsense_spec_label_disagreeing_with_the_layers_is_refused() {
    let d = dir("label");
    let src = quant_file(&d, "w4");
    let p = d.join("label.safetensors");
    edit_quant_meta(&src, &p, |q| q["spec"] = "w8".into());
    quant_refused(&p, &["spec label says w8", "4-bit codes"]);
}

#[test]
fn nonsense_activation_parameters_and_methods_are_refused() {
    let d = dir("act");
    let src = quant_file(&d, "w8a8");
    type Edit = fn(&mut Value, &str);
    let cases: [(&str, Edit); 5] = [
        ("scale", |q, l| q["act"][l]["scale"] = 0.0.into()),
        ("40 bits", |q, l| q["act"][l]["bits"] = 40.into()),
        ("zero point", |q, l| q["act"][l]["zero"] = 1e9.into()),
        ("no activation ranges", |q, l| {
            q["act"].as_object_mut().unwrap().remove(l);
        }),
        ("method", |q, _| q["method"] = "bogus".into()),
    ];
    for (needle, f) in cases {
        let p = d.join("act.safetensors");
        edit_quant_meta(&src, &p, |q| {
            let l = first_layer(q);
            f(q, &l);
        });
        quant_refused(&p, &[needle]);
    }
}

#[test]
fn nonsense_environment_overrides_are_errors() {
    let r = qwm(&["info"], &[("QWM_BACKEND", "bogus")]);
    refused(&r, &["QWM_BACKEND", "bogus", "unknown"]);
    for (k, v) in [
        ("QWM_QCOLS", "9"),
        ("QWM_MATMUL", "tilde"),
        ("QWM_QMATVEC", "x"),
        ("QWM_WG", "48"),
    ] {
        let r = qwm(&["env", "list"], &[(k, v)]);
        refused(&r, &[k, v]);
    }
}

// ---- 6. late or unclear errors ----

#[test]
fn late_missing_report_directory_fails_before_any_work() {
    // Before: the missing directory was found after the first episode.
    let d = dir("nodir");
    let json = d.join("missing").join("r.json");
    let r = qwm(
        &[
            "eval",
            "--env",
            "wall",
            "--model",
            "random",
            "--backend",
            "cpu",
            "--episodes",
            "2",
            "--json",
            json.to_str().unwrap(),
        ],
        &[],
    );
    refused(&r, &["--json", "does not exist"]);
    assert!(
        !r.2.contains("backend:"),
        "the model was set up first: {}",
        r.2
    );
}

#[test]
fn unclear_io_errors_state_their_cause_once() {
    let r = qwm(
        &["model", "info", "/nonexistent/qwm-probe.safetensors"],
        &[],
    );
    refused(&r, &["/nonexistent/qwm-probe.safetensors"]);
    assert_eq!(r.2.matches("No such file").count(), 1, "{}", r.2);
}

#[test]
fn unclear_oversized_bit_width_is_called_unsupported() {
    for s in [
        "w99999999999999999999999",
        "w4g99999999999999999999999",
        "w8a99999999999999999999",
    ] {
        let e = s.parse::<QuantSpec>().unwrap_err().to_string();
        assert!(
            e.contains("unsupported") && e.contains("99999999999999999999"),
            "{e}"
        );
        assert!(!e.contains("missing"), "{e}");
    }
}

#[test]
fn unclear_calibration_count_names_its_flag() {
    // Before: `--calib-episodes 0` ended in "`qwm quantize` gathers them", the command run.
    let d = dir("calib0");
    let r = qwm(
        &[
            "quantize",
            "--env",
            "wall",
            "--model",
            "random",
            "--quant",
            "w8a8",
            "--calib-episodes",
            "0",
            "--out",
            d.join("q.safetensors").to_str().unwrap(),
        ],
        &[],
    );
    refused(&r, &["--calib-episodes 0"]);
    assert!(!r.2.contains("gathers them"), "{}", r.2);
}

// ---- 7. reproducible bytes ----

#[test]
fn bytes_the_same_model_is_written_the_same() {
    // Before: metadata in HashMap order gave different bytes (and CRCs) for the same model.
    let d = dir("bytes");
    let mut files = Vec::new();
    for i in 0..3 {
        let p = d.join(format!("m{i}.safetensors"));
        let r = qwm(
            &[
                "model",
                "random",
                "--config",
                "tiny",
                "--out",
                p.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(r.0, 0, "{}", r.2);
        files.push(std::fs::read(&p).unwrap());
    }
    assert!(files.windows(2).all(|w| w[0] == w[1]));
    let q: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            let p = quant_file(&d, "w4g32");
            let b = std::fs::read(&p).unwrap();
            std::fs::rename(&p, d.join(format!("q{i}"))).unwrap();
            b
        })
        .collect();
    assert!(q.windows(2).all(|w| w[0] == w[1]));
    // And they still load.
    format::load(d.join("m0.safetensors")).unwrap();
}
