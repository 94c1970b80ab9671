//! Work items (a cell's episodes in ranges of `chunk`), shards, and the loop that runs them.
//!
//! The item list depends only on the study, so every process given the same study computes
//! the same list; shard `i/N` takes items `i, i + N, i + 2N, ...` (cells alternate between
//! shards, which balances cheap and expensive cells). Within a shard, a process takes each
//! item's lock before running it and skips items another process holds, so `--jobs` workers
//! and a second run started by mistake share the work instead of duplicating it.

use std::path::Path;

use super::exec::{self, CellModel, Engine};
use super::spec::{Cell, Study};
use super::store::{self, Final, Part, PartEpisode, Store};
use crate::plan::eval::{eval_seed, EvalConfig, EvalReport};
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    pub cell: usize,
    pub range: [usize; 2],
}

/// Which part of the item list a process owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// `i/N` (0-based), or `auto`: Slurm array (`SLURM_ARRAY_TASK_ID` - `SLURM_ARRAY_TASK_MIN`
    /// of `SLURM_ARRAY_TASK_COUNT`) or Kubernetes Indexed Job (`JOB_COMPLETION_INDEX` of
    /// `JOB_COMPLETIONS`, which the manifest of `qwm study k8s` sets).
    pub fn parse(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Shard> {
        let bad = |m: String| Err(Error::Invalid(format!("--shard {s}: {m}")));
        if s == "auto" {
            let num = |k: &str| -> Result<Option<usize>> {
                env(k)
                    .map(|v| {
                        v.trim().parse::<usize>().map_err(|_| {
                            Error::Invalid(format!(
                                "--shard auto: {k}={v:?} is not a non-negative integer"
                            ))
                        })
                    })
                    .transpose()
            };
            if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
                let Some(count) = num("SLURM_ARRAY_TASK_COUNT")? else {
                    return bad("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not (Slurm >= 18.08 sets both)".into());
                };
                let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
                let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1);
                if step != 1 || id < min {
                    return bad(format!(
                        "the Slurm array must be a contiguous range such as --array=0-{} (task \
                         {id}, min {min}, step {step})",
                        count.saturating_sub(1)
                    ));
                }
                return Shard::checked(id - min, count, s);
            }
            if let Some(id) = num("JOB_COMPLETION_INDEX")? {
                let Some(count) = num("JOB_COMPLETIONS")? else {
                    return bad(
                        "JOB_COMPLETION_INDEX is set but JOB_COMPLETIONS is not; set it \
                                to the Job's .spec.completions (qwm study k8s does)"
                            .into(),
                    );
                };
                return Shard::checked(id, count, s);
            }
            return bad(
                "neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX is set; give \
                        --shard i/N, or run inside a Slurm array or Kubernetes Indexed Job"
                    .into(),
            );
        }
        let Some((i, n)) = s.split_once('/') else {
            return bad("expected i/N (0-based shard i of N) or auto".into());
        };
        match (i.trim().parse::<usize>(), n.trim().parse::<usize>()) {
            (Ok(i), Ok(n)) => Shard::checked(i, n, s),
            _ => bad("expected i/N with whole numbers, e.g. 0/4".into()),
        }
    }

    fn checked(index: usize, count: usize, s: &str) -> Result<Shard> {
        if count == 0 || index >= count {
            return Err(Error::Invalid(format!(
                "--shard {s}: shard index {index} is out of range for {count} shards (use 0 to \
                 {})",
                count.saturating_sub(1)
            )));
        }
        Ok(Shard { index, count })
    }
}

/// `*` matches any run of characters; patterns are comma-separated.
pub fn matches(patterns: &str, name: &str) -> bool {
    fn one(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|k| one(rest, &s[k..])),
            Some((c, rest)) => s.first() == Some(c) && one(rest, &s[1..]),
        }
    }
    patterns
        .split(',')
        .any(|p| one(p.trim().as_bytes(), name.as_bytes()))
}

/// The index of the first comma-separated pattern that matches `name`.
fn priority(patterns: &str, name: &str) -> Option<usize> {
    patterns.split(',').position(|p| matches(p, name))
}

/// Every work item of the study (cells in study order, ranges ascending; with `only`, the
/// cells matching its first pattern first, then the second's, ...), then this shard's.
pub fn items(study: &Study, only: Option<&str>, shard: Shard) -> Vec<Item> {
    let mut cells: Vec<(usize, usize)> = Vec::new();
    for (ci, c) in study.cells.iter().enumerate() {
        match only {
            None => cells.push((0, ci)),
            Some(p) => {
                if let Some(k) = priority(p, &c.name) {
                    cells.push((k, ci));
                }
            }
        }
    }
    cells.sort(); // stable in study order within one pattern
    let mut all = Vec::new();
    for (_, ci) in cells {
        let c = &study.cells[ci];
        let mut a = 0;
        while a < c.episodes {
            let b = (a + study.chunk).min(c.episodes);
            all.push(Item {
                cell: ci,
                range: [a, b],
            });
            a = b;
        }
    }
    all.into_iter()
        .enumerate()
        .filter(|(k, _)| k % shard.count == shard.index)
        .map(|(_, it)| it)
        .collect()
}

/// One process's run over a list of items.
pub struct Runner<'a> {
    pub study: &'a Study,
    pub store: Store,
    pub engine: Engine,
    /// The model of the cell last run (items of a cell usually follow each other).
    loaded: Option<(usize, CellModel)>,
    /// Printed before each progress line (`[job 2]`).
    pub tag: String,
}

impl<'a> Runner<'a> {
    pub fn new(study: &'a Study, dir: &Path, engine: Engine, tag: String) -> Runner<'a> {
        Runner {
            study,
            store: Store::new(dir),
            engine,
            loaded: None,
            tag,
        }
    }

    /// Load (and quantize) cell `ci`'s model unless it is the one loaded.
    fn ensure(&mut self, ci: usize) -> Result<()> {
        if self.loaded.as_ref().map(|l| l.0) != Some(ci) {
            self.loaded = None;
            let cell = &self.study.cells[ci];
            let calib = self.store.calib_path(&cell.env);
            let cm = exec::load(self.study, cell, self.engine.name(), &calib)?;
            self.loaded = Some((ci, cm));
        }
        Ok(())
    }

    /// The loaded cell's model (`ensure` loads it first).
    fn cm(&self) -> Result<&CellModel> {
        self.loaded
            .as_ref()
            .map(|l| &l.1)
            .ok_or_else(|| Error::Invalid("internal error: no cell model loaded".into()))
    }

    /// The cell's eval configuration, without quantizing (only the model file's config).
    fn config(&self, ci: usize) -> Result<EvalConfig> {
        if let Some((l, cm)) = &self.loaded {
            if *l == ci {
                return Ok(cm.config.clone());
            }
        }
        exec::config_of(self.study, &self.study.cells[ci], self.engine.name())
    }

    /// Refuse to start when any part of these cells was written with other settings or
    /// another model (finished cells included: their reports would mix two experiments).
    pub fn validate(&self, cells: &[usize]) -> Result<()> {
        for &ci in cells {
            let cell = &self.study.cells[ci];
            if self.store.parts_dir(&cell.name).exists() {
                self.store.parts(cell, Some(&self.config(ci)?))?;
            }
        }
        Ok(())
    }

    /// Run the item unless it is finished or held by another process; returns the number of
    /// episodes played.
    pub fn run_item(&mut self, it: Item) -> Result<usize> {
        let study = self.study;
        let cell: &Cell = &study.cells[it.cell];
        let Some(_lock) = store::try_lock(&self.store.item_lock(&cell.name, it.range))? else {
            return Ok(0); // another process runs it
        };
        // A cheap settings check before loading anything: the parts' configs against the
        // cell's (the model CRC included), with the planner's step size from any part.
        let have = self.store.episodes(cell, None)?;
        let missing: Vec<usize> = (it.range[0]..it.range[1])
            .filter(|i| !have.contains_key(i))
            .collect();
        if missing.is_empty() {
            return Ok(0);
        }
        let backend = self.engine.name();
        self.ensure(it.cell)?;
        let config = self.cm()?.config.clone();
        self.store.parts(cell, Some(&config))?; // refuse parts from other settings
                                                // Episodes of one part share a backend: a part started on another backend is
                                                // continued in a sibling file (`eAAA-BBB.gpu.json`).
        let own = self.store.part_path(&cell.name, it.range);
        let sibling = own.with_extension(format!("{backend}.json"));
        let mut path = own.clone();
        if own.exists() {
            let p: Part = store::read_json(&own, "qwm study part")?;
            if p.config.backend != backend {
                path = sibling;
            }
        }
        let mut part = if path.exists() {
            let p: Part = store::read_json(&path, "qwm study part")?;
            store::check_part(&path, &p, cell, &config)?;
            p
        } else {
            Part {
                cell: cell.name.clone(),
                config: config.clone(),
                range: it.range,
                source: "worker".into(),
                qwm_version: store::VERSION.into(),
                linear_bytes: None,
                quantize_seconds: None,
                episodes: Vec::new(),
            }
        };
        let cm = self.cm()?;
        part.linear_bytes = exec::linear_bytes(cm);
        // Kept from the part's first load: a resumed part's reload must not change it.
        part.quantize_seconds = part.quantize_seconds.or(cm.model.quantize_seconds);
        let tag = &self.tag;
        let total = cell.episodes;
        let mut played = 0;
        exec::run_episodes(
            &self.engine,
            cell,
            cm,
            &missing,
            &mut |i, record, seconds| {
                eprintln!(
                    "{tag}{} episode {}/{total}: {} after {} MPC iterations ({seconds:.1} s)",
                    cell.name,
                    i + 1,
                    if record.success { "success" } else { "failure" },
                    record.iterations
                );
                part.episodes.push(PartEpisode {
                    index: i,
                    seconds,
                    record,
                });
                part.episodes.sort_by_key(|e| e.index);
                played += 1;
                store::write_json(&path, &part)
            },
        )?;
        self.update_cell(it.cell)?;
        Ok(played)
    }

    /// Rebuild the cell's report; once every episode is in, add the latent divergence and the
    /// bytes (computed with the loaded model) and mark the cell done.
    fn update_cell(&mut self, ci: usize) -> Result<()> {
        let cell = &self.study.cells[ci];
        let config = self.config(ci)?;
        let Some(r) = self.store.merge(cell, Some(&config))? else {
            return Ok(());
        };
        if r.finished < cell.episodes || self.store.final_path(&cell.name).exists() {
            return Ok(());
        }
        self.ensure(ci)?;
        {
            let _l = store::lock(&self.store.cell_lock(&cell.name))?;
            if !self.store.final_path(&cell.name).exists() {
                let cm = self.cm()?;
                let fin = Final {
                    latent_divergence: exec::divergence(cell, cm, &r.episodes)?,
                    linear_bytes: exec::linear_bytes(cm),
                };
                store::write_json(&self.store.final_path(&cell.name), &fin)?;
                eprintln!("{}{}: every episode in, cell done", self.tag, cell.name);
            }
        }
        self.store.merge(cell, Some(&config))?;
        Ok(())
    }

    /// Finish cells whose episodes are all in but which have no final record yet (their last
    /// worker stopped before writing it), and rebuild every cell report of `cells`.
    pub fn finalize(&mut self, cells: &[usize]) -> Result<()> {
        for &ci in cells {
            let cell = &self.study.cells[ci];
            let st = self.store.state(cell)?;
            if st.done == 0 {
                continue;
            }
            if st.state == "complete" || !self.store.report_path(&cell.name).exists() {
                self.update_cell(ci)?;
            }
        }
        Ok(())
    }
}

/// Import an earlier `qwm eval` report as the first episodes of the study cell with the same
/// settings and model. Returns the cell's name.
pub fn import(study: &Study, store: &Store, report_path: &Path) -> Result<String> {
    let r: EvalReport = store::read_json(report_path, "qwm eval report")?;
    r.check(report_path)?;
    let show = report_path.display();
    for (k, e) in r.episodes.iter().enumerate() {
        if e.seed != eval_seed(k) {
            return Err(Error::Invalid(format!(
                "{show}: episode {k} has seed {} instead of the evaluation seed {}; only \
                 reports of `qwm eval` (episodes in order from 0) can be imported",
                e.seed,
                eval_seed(k)
            )));
        }
    }
    let mut closest: Option<(String, Vec<String>)> = None;
    for cell in &study.cells {
        if cell.env != r.config.env || cell.quant != r.config.quant {
            continue;
        }
        let want = exec::config_of(study, cell, &r.config.backend)?;
        let mut old = r.config.clone();
        old.backend = want.backend.clone();
        let diffs = crate::plan::eval::config_differences(&old, &want);
        if diffs.is_empty() {
            let n = r.episodes.len().min(cell.episodes);
            let stem = report_path
                .file_stem()
                .map_or("report".into(), |s| s.to_string_lossy().into_owned());
            let part = Part {
                cell: cell.name.clone(),
                config: r.config.clone(),
                range: [0, n],
                source: format!("import {show}"),
                qwm_version: "unknown (imported)".into(),
                linear_bytes: r.linear_bytes,
                quantize_seconds: r.quantize_seconds,
                episodes: r.episodes[..n]
                    .iter()
                    .enumerate()
                    .map(|(i, e)| PartEpisode {
                        index: i,
                        seconds: e.plan_seconds.iter().sum(),
                        record: e.clone(),
                    })
                    .collect(),
            };
            let _l = store::lock(&store.cell_lock(&cell.name))?;
            store::write_json(
                &store
                    .parts_dir(&cell.name)
                    .join(format!("import-{stem}.json")),
                &part,
            )?;
            let fp = cell.quant == "fp";
            if n == cell.episodes && (fp || r.latent_divergence.is_some()) {
                store::write_json(
                    &store.final_path(&cell.name),
                    &Final {
                        latent_divergence: r.latent_divergence,
                        linear_bytes: r.linear_bytes,
                    },
                )?;
            }
            drop(_l);
            store.merge(cell, Some(&want))?;
            return Ok(cell.name.clone());
        }
        if closest.as_ref().is_none_or(|c| diffs.len() < c.1.len()) {
            closest = Some((cell.name.clone(), diffs));
        }
    }
    Err(Error::Invalid(match closest {
        Some((name, diffs)) => format!(
            "{show} matches no cell of study {}: the nearest, {name}, differs in {}",
            study.name,
            diffs.join("; ")
        ),
        None => format!(
            "{show} ({} {}) matches no cell of study {} (no cell has that environment and spec)",
            r.config.env, r.config.quant, study.name
        ),
    }))
}
