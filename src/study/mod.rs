//! `qwm study`: a whole grid of evaluations (environments x quantization specs x PTQ methods x
//! planner settings) as one resumable, shardable run, and the report that judges the QuantWM
//! findings from its results (docs/STUDY.md).
//!
//! Layers: [`spec`] reads study files and presets into cells; [`work`] splits cells into work
//! items and runs them; [`exec`] plays a cell's episodes with the library's model, quantizer
//! and planner; [`store`] owns the directory (parts, cell reports, manifest, locks);
//! [`cluster`] writes Slurm and Kubernetes job files; [`report`] and [`plots`] turn cell
//! reports into tables, PNGs and verdicts; [`compare`] pairs two directories' episodes.

pub mod cluster;
pub mod compare;
pub mod eta;
pub mod exec;
pub mod findings;
pub mod plots;
pub mod report;
mod report_extra;
pub mod spec;
pub mod store;
pub mod work;

use std::path::PathBuf;
use std::process::Command;

pub use exec::Backend;
pub use spec::{Cell, Study};
pub use store::{Manifest, Store};
pub use work::{Item, Shard};

use crate::{Error, Result};

/// What `qwm study run` was asked to do.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub out: PathBuf,
    pub shard: Shard,
    /// Worker processes; with more than one, each runs single-threaded.
    pub jobs: usize,
    pub backend: Backend,
    /// Comma-separated cell-name patterns (`*` wildcard); `None`: every cell.
    pub only: Option<String>,
    /// Progress-line prefix (`[job 1] `) for a worker.
    pub tag: String,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub items: usize,
    pub episodes_played: usize,
    pub manifest: Manifest,
}

/// Run (or resume) this shard's share of the study. With `jobs > 1`, `worker(k)` gives the
/// command of worker `k` (the same run with `--jobs 1`); the workers share the shard's items
/// through the item locks.
pub fn run(
    study: &Study,
    source: &str,
    opts: &RunOptions,
    worker: &dyn Fn(usize) -> Command,
) -> Result<RunSummary> {
    let store = Store::new(&opts.out);
    store.check_study(study)?;
    // The study measures each spec's own numerics: weight-only cells on float inputs.
    if crate::cpu::qlinear::WeightOnly::from_env()? != crate::cpu::qlinear::WeightOnly::Exact {
        return Err(Error::Invalid(
            "QWM_CPU_WEIGHT_ONLY=int8 is set: the study runs weight-only specs on float inputs \
             (their own numerics, as the GPU does); unset it for `qwm study run`"
                .into(),
        ));
    }
    if let Some(p) = &opts.only {
        if !study.cells.iter().any(|c| work::matches(p, &c.name)) {
            return Err(Error::Invalid(format!(
                "--only {p:?} matches no cell of study {} (cells are named ENV/SPEC..., e.g. {})",
                study.name,
                study.cells.first().map_or("", |c| c.name.as_str())
            )));
        }
    }
    let items = work::items(study, opts.only.as_deref(), opts.shard);
    let mut cells: Vec<usize> = items.iter().map(|i| i.cell).collect();
    cells.sort();
    cells.dedup();
    let mut played = 0;
    let mut runner = work::Runner::new(
        study,
        &opts.out,
        exec::Engine::open(opts.backend)?,
        opts.tag.clone(),
    );
    runner.validate(&cells)?;
    // Recorded before any work too: a run stopped part-way (a session's end, a job's time
    // limit) then leaves the study as it was run, e.g. a preset that gained cells, for
    // `qwm study status` and `report`.
    store.write_manifest(source, study)?;
    // Cells a stopped run left with episodes but no report (it is rebuilt after each finished
    // item) get it now, so `report` shows how far they got.
    runner.finalize(&cells)?;
    let jobs = opts.jobs.max(1).min(items.len().max(1));
    if jobs > 1 {
        let mut children = Vec::new();
        for k in 0..jobs {
            let mut cmd = worker(k);
            // One thread per worker: several single-threaded planners use the cores better
            // than one planner split across them (docs/STUDY.md, "Speed").
            cmd.env("RAYON_NUM_THREADS", "1");
            let child = cmd
                .spawn()
                .map_err(|e| Error::Invalid(format!("could not start study worker {k}: {e}")))?;
            children.push((k, child));
        }
        let mut failed = Vec::new();
        for (k, mut c) in children {
            let st = c
                .wait()
                .map_err(|e| Error::Invalid(format!("study worker {k}: {e}")))?;
            if !st.success() {
                failed.push(format!("worker {k}: {st}"));
            }
        }
        if !failed.is_empty() {
            store.write_manifest(source, study)?;
            return Err(Error::Invalid(format!(
                "study workers failed ({}); their errors are above; rerun the same command to \
                 resume",
                failed.join(", ")
            )));
        }
    } else {
        for it in &items {
            let n = runner.run_item(*it)?;
            // After each finished item, so that a run stopped part-way (a session's end, a
            // job's time limit) leaves the states counted to its last item.
            if n > 0 {
                store.write_manifest(source, study)?;
            }
            played += n;
        }
    }
    runner.finalize(&cells)?;
    let manifest = store.write_manifest(source, study)?;
    Ok(RunSummary {
        items: items.len(),
        episodes_played: played,
        manifest,
    })
}
