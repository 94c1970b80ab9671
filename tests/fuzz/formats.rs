//! The formats the fuzzer mutates: one [`Format`] entry each (seed files, where a case is
//! written, how qwm loads it). Files of a directory format (a trace, a study directory) are
//! mutated one at a time inside a valid directory, so the loader reaches them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qwm::env::Frame;
use qwm::model::quantized as qmodel;
use qwm::model::{format, ModelConfig, Weights};
use qwm::plan::eval::{EvalConfig, EvalReport};
use qwm::plan::EpisodeRecord;
use qwm::quant::{ActStats, QuantSpec};
use qwm::study::store::{self, Part, PartEpisode};
use qwm::study::{Shard, Store, Study};
use qwm::trace::{IterMeta, IterTrace, OptStat, RunMeta, TraceMeta, TraceWriter};

use super::{Container, Format, Seed};

pub fn formats() -> Vec<Format> {
    vec![
        Format {
            name: "model",
            seeds: |d| {
                single(
                    d,
                    "model",
                    "safetensors",
                    Container::Safetensors,
                    model_seeds(d),
                )
            },
            load: load_model,
        },
        Format {
            name: "quantized",
            seeds: |d| {
                single(
                    d,
                    "quantized",
                    "safetensors",
                    Container::Safetensors,
                    quant_seeds(d),
                )
            },
            load: load_quant,
        },
        Format {
            name: "eval-report",
            seeds: |d| single(d, "eval-report", "json", Container::Json, report_seeds()),
            load: load_report,
        },
        Format {
            name: "trace",
            seeds: |d| trace_seeds(d, false),
            load: load_trace,
        },
        Format {
            name: "trace-arrays",
            seeds: |d| trace_seeds(d, true),
            load: load_trace,
        },
        Format {
            name: "study-spec",
            seeds: |d| single(d, "study", "toml", Container::Toml, study_spec_seeds()),
            load: load_study_spec,
        },
        Format {
            name: "study-dir",
            seeds: study_dir_seeds,
            load: load_study_dir,
        },
    ]
}

/// Seeds of a one-file format: every case is written to `fuzzcase-NAME.EXT`, a name no loader
/// would invent (so that errors are seen to name the file).
fn single(dir: &Path, name: &str, ext: &str, c: Container, seeds: Vec<Vec<u8>>) -> Vec<Seed> {
    let path = dir.join(format!("fuzzcase-{name}.{ext}"));
    seeds
        .into_iter()
        .map(|bytes| Seed {
            path: path.clone(),
            container: c,
            bytes,
        })
        .collect()
}

/// The directory above `path` that holds `marker` (a directory format's root).
fn root_of(path: &Path, marker: &str) -> PathBuf {
    path.ancestors()
        .find(|a| a.join(marker).is_file())
        .unwrap_or(path)
        .to_path_buf()
}

fn tiny(seed: u64) -> Weights {
    let mut c = ModelConfig::tiny();
    c.decoder = None; // smaller files, more mutations land in the header
    Weights::random(&c, seed).expect("tiny model")
}

fn saved(dir: &Path, name: &str, save: impl FnOnce(&Path)) -> Vec<u8> {
    let p = dir.join(name);
    save(&p);
    std::fs::read(&p).expect("seed file")
}

fn model_seeds(dir: &Path) -> Vec<Vec<u8>> {
    let w = tiny(1);
    vec![
        saved(dir, "seed-f32.safetensors", |p| {
            format::save(&w, p).unwrap()
        }),
        saved(dir, "seed-f16.safetensors", |p| {
            format::save_as(&w, p, format::StoreDtype::F16).unwrap()
        }),
    ]
}

fn load_model(path: &Path) -> qwm::Result<()> {
    format::read_config(path)?;
    let w = format::load(path)?;
    qwm::model::CpuModel::new(&w)?;
    Ok(())
}

fn quant_seeds(dir: &Path) -> Vec<Vec<u8>> {
    let w = tiny(2);
    let stats: BTreeMap<String, ActStats> = qmodel::quantized_linears(&w.config)
        .into_iter()
        .map(|(n, _)| {
            (
                n,
                ActStats {
                    min: -1.5,
                    max: 2.0,
                    count: 10,
                },
            )
        })
        .collect();
    ["w4", "enc=w8,pred=w4g32", "w8a8", "w3a8t"]
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let spec: QuantSpec = spec.parse().unwrap();
            let method = if i % 2 == 0 { "rtn" } else { "omse" };
            let q = qmodel::quantize_model(&w, &spec, method, Some(&stats)).unwrap();
            saved(dir, &format!("seed-q{i}.safetensors"), |p| {
                qmodel::save(&q, p).unwrap()
            })
        })
        .collect()
}

fn load_quant(path: &Path) -> qwm::Result<()> {
    qmodel::is_quantized_file(path)?;
    let q = qmodel::load(path)?;
    qwm::model::CpuModel::new_quantized(&q)?;
    Ok(())
}

fn episode(i: u64, objective: f32) -> EpisodeRecord {
    EpisodeRecord {
        seed: i,
        success: i.is_multiple_of(2),
        iterations: 3,
        final_state_distance: 0.5 + i as f32,
        final_objective: objective,
        plan_seconds: vec![0.25, 0.5],
        start: vec![1.0, 2.0],
        goal: vec![3.0, 4.0],
        final_state: vec![2.5, 3.5],
    }
}

fn report_seeds() -> Vec<Vec<u8>> {
    let cfg = eval_config();
    let eps = vec![episode(0, 1.5), episode(1, f32::NAN), episode(2, 0.25)];
    let mut full = EvalReport::summarize(cfg.clone(), eps, Some(0.125));
    full.linear_bytes = Some([1000, 4000]);
    let empty = EvalReport::summarize(cfg, vec![], None);
    [full, empty]
        .iter()
        .map(|r| serde_json::to_vec_pretty(r).unwrap())
        .collect()
}

fn eval_config() -> EvalConfig {
    let pc = qwm::plan::PlanConfig::default();
    EvalConfig {
        env: "wall".into(),
        episodes: 3,
        planner: "cem".into(),
        plan: (&pc).into(),
        mpc: (&qwm::plan::MpcConfig::default()).into(),
        model: "assets/wall.safetensors (w4 rtn)".into(),
        model_crc32: Some("0badf00d".into()),
        model_planning_crc32: None,
        quant: "w4".into(),
        backend: "cpu".into(),
    }
}

fn load_report(path: &Path) -> qwm::Result<()> {
    let r = qwm::plan::eval::read_report(path)?;
    // What a resume and the summary do with the stored episodes.
    EvalReport::summarize(r.config, r.episodes, r.latent_divergence);
    Ok(())
}

// ---- traces (docs/TRACE.md) ----

fn frame(size: usize, shade: u8) -> Frame {
    Frame {
        width: size,
        height: size,
        data: (0..size * size * 3)
            .map(|i| (i as u8).wrapping_mul(shade))
            .collect(),
    }
}

/// A small recorded trace of the Wall task: `runs` models, `iters` MPC iterations each, the
/// first run with decoded imagined frames.
fn write_trace(dir: &Path, runs: usize, iters: usize) {
    let env = qwm::env::make("wall").unwrap();
    let ad = env.action_dim();
    let (start, goal) = env.sample_start_goal(3);
    let (s, h, k, (n, de)) = (8, 2, 3, (4, 6));
    let plan = qwm::plan::PlanConfig {
        horizon: h,
        step_dim: 5 * ad,
        samples: 8,
        topk: k,
        opt_steps: 2,
        ..Default::default()
    };
    let w = TraceWriter::create(dir, &frame(s, 7)).unwrap();
    let rows = |r: usize, c: usize, x: f32| -> Vec<Vec<f32>> {
        (0..r)
            .map(|i| (0..c).map(|j| x + (i * c + j) as f32 * 0.01).collect())
            .collect()
    };
    let mut meta = TraceMeta {
        format: qwm::trace::FORMAT_NAME.into(),
        version: qwm::trace::FORMAT_VERSION,
        env: "wall".into(),
        seed: 3,
        planner: "cem".into(),
        plan: plan.clone(),
        mpc: qwm::plan::MpcConfig::default(),
        image_size: s,
        start: start.clone(),
        goal,
        runs: Vec::new(),
    };
    for r in 0..runs {
        let ds = if r == 0 { 16 } else { 0 };
        let mut rm = RunMeta {
            label: if r == 0 { "fp".into() } else { "w4".into() },
            model: "assets/wall.safetensors".into(),
            quant: "fp".into(),
            backend: "cpu".into(),
            decoded_size: ds,
            latent_shape: (n, de),
            linear_bytes: Some((100, 400)),
            ..Default::default()
        };
        for i in 0..iters {
            let exec = 5;
            let im = IterMeta {
                index: i,
                opt_steps: vec![OptStat::default(); 2],
                plan_cost: 0.5,
                distance: 1.0 - i as f32 * 0.1,
                executed_steps: exec,
                latent_err: vec![0.0, 0.1, 0.2],
                divergence: if runs > 1 {
                    vec![0.0, 0.01, 0.02]
                } else {
                    vec![]
                },
                ..Default::default()
            };
            let states: Vec<Vec<f32>> = (0..=h).map(|_| start.clone()).collect();
            let it = IterTrace {
                meta: im.clone(),
                obs: frame(s, 3),
                imagined: if ds > 0 {
                    (0..=h).map(|t| frame(ds, t as u8)).collect()
                } else {
                    vec![]
                },
                real: (0..=h).map(|t| frame(s, t as u8 + 1)).collect(),
                pred_latent: rows(h + 1, n * de, 0.1),
                real_latent: rows(h + 1, n * de, 0.2),
                real_states: states.clone(),
                plan_actions: rows(1, plan.seq_len(), -0.5).remove(0),
                executed_actions: rows(exec, ad, 0.3),
                executed_states: (0..=exec).map(|_| start.clone()).collect(),
                elite_actions: rows(k, plan.seq_len(), 0.4),
                elite_states: (0..k).map(|_| states.clone()).collect(),
            };
            w.write_iter(r, &it).unwrap();
            rm.iterations.push(im);
        }
        rm.finished = true;
        meta.runs.push(rm);
    }
    w.write_meta(&meta).unwrap();
}

/// `arrays`: the iteration and goal files; otherwise `trace.json`.
fn trace_seeds(dir: &Path, arrays: bool) -> Vec<Seed> {
    let a = dir.join("one-run");
    let b = dir.join("compared");
    for (d, runs, iters) in [(&a, 1, 2), (&b, 2, 1)] {
        let _ = std::fs::remove_dir_all(d);
        write_trace(d, runs, iters);
    }
    let files: Vec<(PathBuf, Container)> = if arrays {
        vec![
            (a.join("r0/iter0001.safetensors"), Container::Safetensors),
            (b.join("r1/iter0000.safetensors"), Container::Safetensors),
            (a.join("goal.safetensors"), Container::Safetensors),
            (b.join("r0/iter0000.safetensors"), Container::Safetensors),
        ]
    } else {
        vec![
            (a.join("trace.json"), Container::Json),
            (b.join("trace.json"), Container::Json),
        ]
    };
    files
        .into_iter()
        .map(|(path, container)| Seed {
            bytes: std::fs::read(&path).unwrap(),
            path,
            container,
        })
        .collect()
}

/// What `qwm view DIR` and `qwm view DIR --gif` do with a trace before drawing it.
fn load_trace(path: &Path) -> qwm::Result<()> {
    let t = qwm::trace::load(&root_of(path, "goal.safetensors"))?;
    for r in 0..t.runs.len() {
        t.path(r);
        let last = t.runs[r].iters.len().saturating_sub(1);
        qwm::viewer::export::compose(&t, r, last)?;
        for it in &t.runs[r].iters {
            qwm::viewer::live::mean_divergence(&it.meta);
        }
    }
    t.max_iters();
    Ok(())
}

// ---- study files (docs/STUDY.md) ----

const STUDY_ALL_KEYS: &str = r#"# every key a study file may hold
name = "fuzz"
description = "every key"
episodes = 3
chunk = 2
calib_episodes = 2

[planner]
name = "mppi"
samples = 20
topk = 4
horizon = 3
n_taken = 2
var_scale = 0.5
temperature = 0.25
opt_steps = 3
max_iter = 4

[[env]]
name = "wall"
model = "assets/wall.safetensors"

[[env]]
name = "pointmaze"

[[grid]]
name = "a"
envs = ["wall", "pointmaze"]
quant = ["fp", "w4g32", "enc=w8,pred=w4", "w8a8", "w4a8t"]
methods = ["rtn", "omse"]
opt_steps = [3, 5]
max_iter = 2
episodes = 3

[[grid]]
name = "b"
quant = ["w3"]
"#;

fn study_spec_seeds() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = qwm::study::spec::PRESETS
        .iter()
        .map(|(_, t)| t.as_bytes().to_vec())
        .collect();
    v.push(STUDY_ALL_KEYS.as_bytes().to_vec());
    v
}

/// What `qwm study list` (and the start of `qwm study run`) does with a study file.
fn load_study_spec(path: &Path) -> qwm::Result<()> {
    let study = Study::load(&path.to_string_lossy())?;
    qwm::study::work::items(&study, None, Shard::ALL);
    for c in &study.cells {
        c.spec()?;
        let pc = study.plan_config(c, 10);
        qwm::plan::make(&study.planner.name, pc)?;
    }
    Ok(())
}

/// A study directory of the `smoke` preset with the first cell's episodes in a part, its
/// cell report and the manifest.
fn study_dir_seeds(dir: &Path) -> Vec<Seed> {
    let root = dir.join("smoke");
    let _ = std::fs::remove_dir_all(&root);
    let study = Study::load("smoke").unwrap();
    let st = Store::new(&root);
    st.check_study(&study).unwrap();
    let cell = &study.cells[0];
    let mut config = eval_config();
    config.episodes = cell.episodes;
    let part = Part {
        cell: cell.name.clone(),
        config: config.clone(),
        range: [0, 2],
        source: "worker".into(),
        qwm_version: store::VERSION.into(),
        linear_bytes: Some([100, 400]),
        quantize_seconds: Some(1.5),
        episodes: (0..2)
            .map(|i| PartEpisode {
                index: i,
                seconds: 1.5,
                record: episode(i as u64, 0.5),
            })
            .collect(),
    };
    let pp = st.part_path(&cell.name, part.range);
    store::write_json(&pp, &part).unwrap();
    st.merge(cell, Some(&config)).unwrap();
    st.write_manifest("smoke", &study).unwrap();
    [(st.manifest_path()), st.report_path(&cell.name), pp]
        .into_iter()
        .map(|path| Seed {
            bytes: std::fs::read(&path).unwrap(),
            path,
            container: Container::Json,
        })
        .collect()
}

/// What `qwm study status` and `qwm study report` read from a study directory.
fn load_study_dir(path: &Path) -> qwm::Result<()> {
    let root = root_of(path, "study.json");
    let st = Store::new(&root);
    let Some(m) = st.manifest()? else {
        return Ok(());
    };
    for c in &m.study.cells {
        let s = st.state(c)?;
        let _ = c.episodes - s.done.min(c.episodes);
        qwm::study::work::items(&m.study, Some(&c.name), Shard::ALL);
    }
    // `qwm study report`: tables, findings and plots (into a scratch directory).
    let out = root.with_file_name("report-out");
    qwm::study::report::write(&root, &out, &out)?;
    Ok(())
}
