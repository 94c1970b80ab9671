//! Reads the result files qwm wrote before the `qwm-bench` schema (no `schema` field) and
//! converts them, so old measurements (the H200 runs in docs/results/h200) stay comparable.
//! docs/BENCHMARKS.md ("Older result files") documents the mapping. What the old formats did
//! not record stays unknown rather than guessed: no raw samples (`samples_s` empty, min / max /
//! stddev null), commit "unknown", repetitions 0; each converted file says so in `notes`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::record::{
    AdapterRecord, BenchFile, BenchRecord, BuildInfo, SystemInfo, TimingInfo, Yardsticks, SCHEMA,
    SCHEMA_VERSION,
};

type R<T> = std::result::Result<T, String>;

/// Convert a pre-schema result (any `qwm bench` subcommand's old JSON) to the current schema.
pub fn convert(v: &Value) -> R<BenchFile> {
    let has = |k: &str| v.get(k).is_some();
    let (suite, mut f) = if has("copy_gbps") && (has("matvec_shape") || has("matvec_shapes")) {
        ("quant", quant(v)?)
    } else if has("matmul_1024_gpu_over_cpu") {
        ("kernels", kernels(v)?)
    } else if has("forward") && has("rollouts") {
        ("model", model(v)?)
    } else if has("gpu_seconds_per_cem_step") || has("cpu_seconds_per_cem_step") {
        ("plan", plan(v)?)
    } else if v
        .as_array()
        .is_some_and(|a| a.iter().all(|r| r.get("step_per_s").is_some()))
    {
        ("env", env(v)?)
    } else {
        return Err(format!(
            "not a qwm benchmark result: no `schema` field, and not one of the pre-schema \
             formats (bench kernels, quant, model, plan or env JSON); expected `\"schema\": \
             \"{SCHEMA}\"`"
        ));
    };
    f.suite = suite.into();
    f.notes.insert(
        0,
        format!(
            "converted from the pre-schema `qwm bench {suite}` JSON: medians only (no raw \
             samples, so min / max / stddev are null), commit, repetitions, system details, \
             adapter ids, features and limits were not recorded"
        ),
    );
    Ok(f)
}

fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string()
}

fn f(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(|x| x.as_f64())
}

fn n(v: &Value, k: &str) -> Option<usize> {
    v.get(k).and_then(|x| x.as_u64()).map(|x| x as usize)
}

fn need(v: &Value, k: &str, what: &str) -> R<f64> {
    f(v, k).ok_or_else(|| format!("{what}: field `{k}` missing or not a number"))
}

/// An empty file of the current schema with what every old format had.
fn base(v: &Value) -> BenchFile {
    let adapter = v.get("adapter").filter(|a| a.is_object()).map(|a| {
        // Old files joined driver and driver info into `driver`.
        AdapterRecord {
            name: s(a, "name"),
            vendor: 0,
            device: 0,
            device_type: s(a, "device_type"),
            driver: s(a, "driver"),
            driver_info: String::new(),
            backend: s(a, "backend"),
            subgroup_min_size: 0,
            subgroup_max_size: 0,
            features: Vec::new(),
            limits: BTreeMap::new(),
        }
    });
    BenchFile {
        schema: SCHEMA.into(),
        schema_version: SCHEMA_VERSION,
        suite: String::new(),
        command: "unknown (pre-schema file)".into(),
        build: BuildInfo {
            qwm_version: "unknown".into(),
            git_commit: "unknown".into(),
            profile: "unknown".into(),
            target: "unknown".into(),
        },
        system: SystemInfo {
            date: s(v, "date"),
            os: "unknown".into(),
            arch: "unknown".into(),
            cpu_model: "unknown".into(),
            cpu_threads: n(v, "cpu_threads").unwrap_or(0),
            rayon_threads: n(v, "cpu_threads").unwrap_or(0),
        },
        adapter,
        timing: TimingInfo {
            gpu: "unrecorded".into(),
            cpu: "cpu-wall".into(),
            warmup: 1,
            reps: 0,
        },
        overrides: BTreeMap::new(),
        yardsticks: Yardsticks::default(),
        results: Vec::new(),
        context: BTreeMap::new(),
        notes: Vec::new(),
    }
}

/// A converted record: the median only.
fn rec(
    family: &str,
    name: &str,
    shape: &str,
    device: &str,
    timing: &str,
    median: f64,
) -> BenchRecord {
    let mut r = BenchRecord::new(family, name, shape, device, timing);
    r.median_s = median;
    r
}

fn quant(v: &Value) -> R<BenchFile> {
    let mut out = base(v);
    let copy = need(v, "copy_gbps", "quant result")?;
    out.yardsticks.copy_gbps = Some(copy);
    let tok = v
        .get("token_shape")
        .and_then(|t| serde_json::from_value::<[usize; 3]>(t.clone()).ok())
        .ok_or("quant result: `token_shape` is not [M, K, N]")?;
    // The first format (one mat-vec shape, names "w4 matvec" / "w4 tokens") predates the
    // split-K and tiled kernels: its rows ran the register-tiled kernel ("lanes").
    let first = v
        .get("matvec_shape")
        .and_then(|t| serde_json::from_value::<[usize; 2]>(t.clone()).ok());
    let results = v
        .get("results")
        .and_then(|r| r.as_array())
        .ok_or("quant result: `results` is not a list")?;
    for r in results {
        let name = s(r, "name");
        let med = need(r, "seconds_median", &format!("quant row {name:?}"))?;
        let batch = n(r, "batch").unwrap_or(0);
        let bits = n(r, "bits");
        if name == "copy" {
            let mut c = rec("yardstick", "copy", "64 MiB", "gpu", "unrecorded", med);
            c.kernel = Some("copy".into());
            c.gbps = f(r, "gbps");
            out.results.push(c);
            continue;
        }
        let (label, kernel, nk) = match first {
            Some(mv) => {
                let (label, kind) = name.rsplit_once(' ').ok_or_else(|| {
                    format!("quant row {name:?}: expected `<weights> matvec|tokens`")
                })?;
                let nk = if kind == "tokens" {
                    [tok[2], tok[1]]
                } else {
                    mv
                };
                let kernel = if bits == Some(32) { "f32" } else { "lanes" };
                (label.to_string(), kernel.to_string(), nk)
            }
            None => {
                let nk = r
                    .get("shape")
                    .and_then(|t| serde_json::from_value::<[usize; 2]>(t.clone()).ok())
                    .ok_or_else(|| format!("quant row {name:?}: `shape` is not [N, K]"))?;
                (name.clone(), s(r, "kernel"), nk)
            }
        };
        let row_name = if bits == Some(32) {
            kernel.clone()
        } else {
            format!("{label} {kernel}")
        };
        let shape = format!("B={batch} [{}x{}]", nk[0], nk[1]);
        let mut c = rec("quant", &row_name, &shape, "gpu", "unrecorded", med);
        c.quant = Some(if bits == Some(32) {
            "f32".into()
        } else {
            label
        });
        c.kernel = Some(kernel);
        c.default_kernel = r.get("default").and_then(|d| d.as_bool());
        c.gbps = f(r, "gbps");
        c.gflops = f(r, "gflops");
        c.x_copy = c.gbps.map(|g| g / copy);
        out.results.push(c);
    }
    Ok(out)
}

fn kernels(v: &Value) -> R<BenchFile> {
    let mut out = base(v);
    let results = v
        .get("results")
        .and_then(|r| r.as_array())
        .ok_or("kernels result: `results` is not a list")?;
    for r in results {
        let full = s(r, "name");
        let (device, name) = full
            .split_once(' ')
            .filter(|(d, _)| *d == "gpu" || *d == "cpu")
            .ok_or_else(|| format!("kernels row {full:?}: expected `gpu|cpu <kernel>`"))?;
        let med = need(r, "seconds_median", &format!("kernels row {full:?}"))?;
        let timing = s(r, "timing");
        let mut c = if name == "copy" {
            rec("yardstick", "copy", &s(r, "shape"), device, &timing, med)
        } else {
            rec("kernels", name, &s(r, "shape"), device, &timing, med)
        };
        c.gflops = f(r, "gflops");
        c.gbps = f(r, "gbps");
        if name == "copy" {
            out.yardsticks.copy_gbps = c.gbps;
        }
        out.results.push(c);
    }
    if let Some(c) = out.yardsticks.copy_gbps {
        for r in out
            .results
            .iter_mut()
            .filter(|r| r.device == "gpu" && r.family != "yardstick")
        {
            r.x_copy = r.gbps.map(|g| g / c);
        }
    }
    Ok(out)
}

fn model(v: &Value) -> R<BenchFile> {
    let mut out = base(v);
    let cfg = s(v, "config");
    for (k, key) in [
        ("params", "params"),
        ("gpu_peak_buffer_bytes", "gpu_peak_buffer_bytes"),
        ("gpu_weight_bytes", "gpu_weight_bytes"),
        ("encoder_chunk", "encoder_chunk"),
        ("predictor_chunk", "predictor_chunk"),
    ] {
        if let Some(x) = v.get(k) {
            out.context.insert(format!("model.{cfg}.{key}"), x.clone());
        }
    }
    let timing = |b: &str| if b == "gpu" { "gpu-wall" } else { "cpu-wall" };
    for r in v["forward"]
        .as_array()
        .ok_or("model result: `forward` is not a list")?
    {
        let (b, m) = (s(r, "backend"), s(r, "module"));
        let batch = n(r, "batch").unwrap_or(0);
        let med = need(r, "seconds_median", "model forward row")?;
        let mut c = rec(
            "model",
            &format!("{cfg} {m}"),
            &format!("B={batch}"),
            &b,
            timing(&b),
            med,
        );
        c.rate = Some(batch as f64 / med);
        c.rate_unit = Some("samples/s".into());
        out.results.push(c);
    }
    for r in v["rollouts"]
        .as_array()
        .ok_or("model result: `rollouts` is not a list")?
    {
        let b = s(r, "backend");
        let (sa, h) = (n(r, "samples").unwrap_or(0), n(r, "horizon").unwrap_or(0));
        let med = need(r, "seconds", "model rollout row")?;
        let mut c = rec(
            "model",
            &format!("{cfg} rollout"),
            &format!("{sa}x{h}"),
            &b,
            timing(&b),
            med,
        );
        c.rate = Some(sa as f64 / med);
        c.rate_unit = Some("samples/s".into());
        out.results.push(c);
    }
    Ok(out)
}

fn plan(v: &Value) -> R<BenchFile> {
    let mut out = base(v);
    let shape = format!(
        "{}x{}",
        n(v, "samples").unwrap_or(0),
        n(v, "horizon").unwrap_or(0)
    );
    let name = format!("cem step {}", s(v, "model"));
    for (k, dev) in [
        ("gpu_seconds_per_cem_step", "gpu"),
        ("cpu_seconds_per_cem_step", "cpu"),
    ] {
        if let Some(t) = f(v, k) {
            let timing = if dev == "gpu" { "gpu-wall" } else { "cpu-wall" };
            let mut c = rec("plan", &name, &shape, dev, timing, t);
            c.rate = Some(1.0 / t);
            c.rate_unit = Some("CEM steps/s".into());
            out.results.push(c);
        }
    }
    Ok(out)
}

fn env(v: &Value) -> R<BenchFile> {
    let mut out = base(v);
    for r in v.as_array().into_iter().flatten() {
        let name = s(r, "env");
        let steps = n(r, "steps").unwrap_or(0) as f64;
        let shape = format!("{} px", n(r, "size").unwrap_or(0));
        for (k, what) in [
            ("step_per_s", "step"),
            ("render_per_s", "render"),
            ("step_render_per_s", "step+render"),
        ] {
            let rate = need(r, k, &format!("env row {name:?}"))?;
            let mut c = rec(
                "env",
                &format!("{name} {what}"),
                &shape,
                "cpu",
                "cpu-wall",
                steps / rate,
            );
            c.rate = Some(rate);
            c.rate_unit = Some("steps/s".into());
            out.results.push(c);
        }
    }
    Ok(out)
}
