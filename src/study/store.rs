//! The study directory: work-item parts, per-cell eval reports, the manifest, and the locks
//! that let any number of processes (shards, `--jobs` workers, a second run by mistake) share
//! one directory without corrupting it.
//!
//! ```text
//! DIR/study.json                     manifest: the study, qwm version, each cell's state
//! DIR/cells/ENV/NAME.json            each cell's eval report (as `qwm eval --json` writes it)
//! DIR/parts/ENV/NAME/eAAA-BBB.json   episodes AAA..BBB of a cell, written by one work item
//! DIR/parts/ENV/NAME/import-*.json   episodes imported from an earlier `qwm eval` report
//! DIR/parts/ENV/NAME/final.json      latent divergence and bytes, once every episode is in
//! ```
//!
//! Parts are the truth; cell reports and the manifest are views rebuilt from them, so any
//! process may rewrite them (atomically, under a lock) and the result does not depend on which
//! process did, or on how the episodes were split: a cell report holds the episodes
//! `0..k` that are finished without a gap, in order, exactly as one `qwm eval` run would.
//! Locks are `flock`s (std's `File::try_lock`), released by the kernel when a process dies,
//! so a killed run leaves no stale lock behind.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::{Cell, PlannerFile, Study};
use crate::plan::eval::{config_differences, EvalConfig, EvalReport};
use crate::plan::EpisodeRecord;
use crate::{Error, Result};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Episodes of one cell written by one work item (or imported).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Part {
    pub cell: String,
    pub config: EvalConfig,
    /// The episode range this part is responsible for, `[start, end)`.
    pub range: [usize; 2],
    /// `worker` or `import PATH`.
    pub source: String,
    pub qwm_version: String,
    /// Bytes of the quantized linears and their f32 size (null for float cells).
    #[serde(default)]
    pub linear_bytes: Option<[usize; 2]>,
    /// Seconds the cell's PTQ method took on this worker's load (null for float cells).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize_seconds: Option<f64>,
    pub episodes: Vec<PartEpisode>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartEpisode {
    pub index: usize,
    /// Wall-clock seconds of the episode (for ETAs; not part of any report).
    pub seconds: f64,
    pub record: EpisodeRecord,
}

/// What a finished cell adds to its episodes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Final {
    pub latent_divergence: Option<f64>,
    pub linear_bytes: Option<[usize; 2]>,
}

/// The manifest (`DIR/study.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// The preset name or study file the study was read from.
    pub source: String,
    pub qwm_version: String,
    pub study: Study,
    pub cells: Vec<CellState>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellState {
    pub name: String,
    pub episodes: usize,
    /// Distinct finished episodes (in any part).
    pub done: usize,
    /// Episodes `0..prefix` finished without a gap (what the cell report holds).
    pub prefix: usize,
    pub successes: usize,
    /// pending, partial, complete (every episode, divergence pending) or done.
    pub state: String,
    /// Mean wall-clock seconds per finished episode, if any.
    pub seconds_per_episode: Option<f64>,
    /// Backends the episodes ran on (cpu, gpu).
    pub backends: Vec<String>,
}

pub fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| Error::io(path, e))
}

/// Write through a temporary file in the same directory and rename: readers see the old or
/// the new file, never half of one. The temporary name is unique per process.
/// An existing target that is not a regular file (`--results /dev/null`) is refused, not
/// replaced (`crate::io::write_atomic`).
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    crate::io::write_atomic(path, text.as_bytes())
}

pub fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| Error::Invalid(format!("{}: cannot serialize: {e}", path.display())))?;
    write_atomic(path, &(text + "\n"))
}

/// Read a JSON file of the study directory (a regular file, size-bounded:
/// `crate::io::read_text`).
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path, what: &str) -> Result<T> {
    let text = crate::io::read_text(path)?;
    serde_json::from_str(&text).map_err(|e| {
        Error::Invalid(format!(
            "{} is not a valid {what} ({e}); delete it (it is rebuilt or recomputed) or restore it",
            path.display()
        ))
    })
}

/// An exclusive lock held until dropped.
pub struct Lock(#[allow(dead_code)] File);

fn lock_file(path: &Path) -> Result<File> {
    if let Some(d) = path.parent() {
        io(d, std::fs::create_dir_all(d))?;
    }
    io(
        path,
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path),
    )
}

/// Take the lock at `path`, or `None` when another process holds it.
pub fn try_lock(path: &Path) -> Result<Option<Lock>> {
    let f = lock_file(path)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(Lock(f))),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(path, e)),
    }
}

/// Wait for the lock at `path`.
pub fn lock(path: &Path) -> Result<Lock> {
    let f = lock_file(path)?;
    io(path, f.lock())?;
    Ok(Lock(f))
}

/// Whether some process holds the lock at `path` now.
pub fn is_locked(path: &Path) -> bool {
    path.exists() && matches!(try_lock(path), Ok(None))
}

/// One study directory.
pub struct Store {
    pub dir: PathBuf,
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    /// Calibration inputs of an environment's model, captured by the first calibrated cell
    /// with the study's planner (`DIR/calib/ENV.calib.safetensors`; regenerated when absent,
    /// so not kept in git).
    pub fn calib_path(&self, env: &str) -> PathBuf {
        self.dir
            .join("calib")
            .join(format!("{env}.calib.safetensors"))
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join("study.json")
    }

    pub fn parts_dir(&self, cell: &str) -> PathBuf {
        self.dir.join("parts").join(cell)
    }

    pub fn part_path(&self, cell: &str, range: [usize; 2]) -> PathBuf {
        self.parts_dir(cell)
            .join(format!("e{:03}-{:03}.json", range[0], range[1]))
    }

    pub fn item_lock(&self, cell: &str, range: [usize; 2]) -> PathBuf {
        self.parts_dir(cell)
            .join(format!("e{:03}-{:03}.lock", range[0], range[1]))
    }

    pub fn cell_lock(&self, cell: &str) -> PathBuf {
        self.parts_dir(cell).join("cell.lock")
    }

    pub fn final_path(&self, cell: &str) -> PathBuf {
        self.parts_dir(cell).join("final.json")
    }

    pub fn report_path(&self, cell: &str) -> PathBuf {
        self.dir.join("cells").join(format!("{cell}.json"))
    }

    /// The manifest, if the directory has one.
    pub fn manifest(&self) -> Result<Option<Manifest>> {
        let p = self.manifest_path();
        if !p.exists() {
            return Ok(None);
        }
        let m: Manifest = read_json(&p, "qwm study manifest")?;
        m.validate(&p)?;
        Ok(Some(m))
    }

    /// A cell's report, if it has one: a readable eval report that agrees with itself.
    pub fn report(&self, cell: &str) -> Result<Option<EvalReport>> {
        let p = self.report_path(cell);
        if !p.exists() {
            return Ok(None);
        }
        let r: EvalReport = read_json(&p, "qwm eval report")?;
        r.check(&p)?;
        Ok(Some(r))
    }

    /// Refuse a directory that holds another study; create it otherwise.
    pub fn check_study(&self, study: &Study) -> Result<()> {
        io(&self.dir, std::fs::create_dir_all(&self.dir))?;
        if let Some(m) = self.manifest()? {
            if m.study.name != study.name {
                return Err(Error::Invalid(format!(
                    "{} holds study {:?}, not {:?}; give another --out directory",
                    self.dir.display(),
                    m.study.name,
                    study.name
                )));
            }
            if m.study.planner != study.planner {
                return Err(Error::Invalid(format!(
                    "{} holds study {:?} run with other planner settings ({}); give another \
                     --out directory, or run a study file with the stored [planner] to continue it",
                    self.dir.display(),
                    study.name,
                    planner_differences(&m.study.planner, &study.planner)
                )));
            }
        }
        Ok(())
    }

    /// Every part of a cell, in file-name order, each checked against the cell's settings.
    pub fn parts(
        &self,
        cell: &Cell,
        expected: Option<&EvalConfig>,
    ) -> Result<Vec<(PathBuf, Part)>> {
        let dir = self.parts_dir(&cell.name);
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut files: Vec<PathBuf> = io(&dir, std::fs::read_dir(&dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && p.file_name().is_some_and(|n| n != "final.json")
            })
            .collect();
        files.sort();
        let mut out = Vec::new();
        for p in files {
            let part: Part = read_json(&p, "qwm study part")?;
            if let Some(want) = expected {
                check_part(&p, &part, cell, want)?;
            }
            out.push((p, part));
        }
        Ok(out)
    }

    /// Finished episodes of a cell by index (the first part in file-name order wins when two
    /// hold the same episode), with the backend each ran on.
    pub fn episodes(
        &self,
        cell: &Cell,
        expected: Option<&EvalConfig>,
    ) -> Result<BTreeMap<usize, (PartEpisode, String)>> {
        Ok(episodes_of(cell, &self.parts(cell, expected)?))
    }

    /// Rebuild a cell's report from its parts (under the cell lock); `None` when it has no
    /// episode `0` yet. `expected` is the cell's configuration (any backend); without it (a
    /// report, which has no model to derive it from) every part is checked against the first
    /// part's settings, the ones its worker validated.
    pub fn merge(&self, cell: &Cell, expected: Option<&EvalConfig>) -> Result<Option<EvalReport>> {
        let _l = lock(&self.cell_lock(&cell.name))?;
        // Parts are read once: the episodes, bytes and timing below all come from them.
        let parts = self.parts(cell, expected)?;
        let expected = match (expected, parts.first()) {
            (Some(e), _) => e,
            (None, None) => return Ok(None),
            (None, Some((_, first))) => {
                for (p, part) in &parts {
                    check_part(p, part, cell, &first.config)?;
                }
                &first.config
            }
        };
        let eps = episodes_of(cell, &parts);
        let mut records: Vec<EpisodeRecord> = Vec::new();
        let mut backends = BTreeSet::new();
        for i in 0..cell.episodes {
            match eps.get(&i) {
                Some((e, b)) => {
                    records.push(e.record.clone());
                    backends.insert(b.clone());
                }
                None => break,
            }
        }
        if records.is_empty() {
            return Ok(None);
        }
        let complete = records.len() == cell.episodes;
        let fin: Option<Final> = if complete && self.final_path(&cell.name).exists() {
            Some(read_json(
                &self.final_path(&cell.name),
                "qwm study final record",
            )?)
        } else {
            None
        };
        let mut config = expected.clone();
        config.episodes = cell.episodes;
        config.backend = backends.into_iter().collect::<Vec<_>>().join("+");
        let mut report = EvalReport::summarize(
            config,
            records,
            fin.as_ref().and_then(|f| f.latent_divergence),
        );
        report.linear_bytes = match &fin {
            Some(f) => f.linear_bytes,
            None => parts.iter().find_map(|(_, p)| p.linear_bytes),
        };
        // The first worker's timing (in file-name order), so the report does not depend on
        // which shard finished last.
        report.quantize_seconds = parts.iter().find_map(|(_, p)| p.quantize_seconds);
        write_json(&self.report_path(&cell.name), &report)?;
        Ok(Some(report))
    }

    /// Progress of a cell, from its parts alone.
    pub fn state(&self, cell: &Cell) -> Result<CellState> {
        let eps = self.episodes(cell, None)?;
        let prefix = (0..cell.episodes)
            .take_while(|i| eps.contains_key(i))
            .count();
        let done = eps.len();
        let secs: Vec<f64> = eps.values().map(|(e, _)| e.seconds).collect();
        let backends: BTreeSet<String> = eps.values().map(|(_, b)| b.clone()).collect();
        let state = if done == 0 {
            "pending"
        } else if done < cell.episodes {
            "partial"
        } else if self.final_path(&cell.name).exists() {
            "done"
        } else {
            "complete"
        };
        Ok(CellState {
            name: cell.name.clone(),
            episodes: cell.episodes,
            done,
            prefix,
            successes: eps.values().filter(|(e, _)| e.record.success).count(),
            state: state.into(),
            seconds_per_episode: (!secs.is_empty())
                .then(|| secs.iter().sum::<f64>() / secs.len() as f64),
            backends: backends.into_iter().collect(),
        })
    }

    /// Every cell's state, counted from its parts.
    pub fn states(&self, study: &Study) -> Result<Vec<CellState>> {
        study.cells.iter().map(|c| self.state(c)).collect()
    }

    /// Rewrite the manifest from the parts (under the study lock).
    pub fn write_manifest(&self, source: &str, study: &Study) -> Result<Manifest> {
        let _l = lock(&self.dir.join("study.lock"))?;
        let cells = self.states(study)?;
        let m = Manifest {
            source: source.to_string(),
            qwm_version: VERSION.to_string(),
            study: study.clone(),
            cells,
        };
        write_json(&self.manifest_path(), &m)?;
        Ok(m)
    }

    /// Recount the manifest's cell states from the parts, keeping its study, source and the
    /// version that ran it; `None` without a manifest. A run stopped part-way leaves states
    /// counted at its last finished item; `qwm study report` brings them up to date.
    pub fn refresh_manifest(&self) -> Result<Option<Manifest>> {
        let _l = lock(&self.dir.join("study.lock"))?;
        let Some(mut m) = self.manifest()? else {
            return Ok(None);
        };
        let cells = self.states(&m.study)?;
        if cells != m.cells {
            m.cells = cells;
            write_json(&self.manifest_path(), &m)?;
        }
        Ok(Some(m))
    }
}

impl Manifest {
    /// The manifest is a view anyone may have edited: its study is validated like a study file
    /// and every cell state must belong to the cell beside it and count sensibly.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let origin = path.display().to_string();
        self.study.validate(&origin)?;
        let bad = |m: String| {
            Err(Error::Invalid(format!(
                "{origin}: {m}; delete it (the next `qwm study run` rebuilds it from the parts)"
            )))
        };
        if self.cells.len() != self.study.cells.len() {
            return bad(format!(
                "{} cell states for {} cells",
                self.cells.len(),
                self.study.cells.len()
            ));
        }
        for (s, c) in self.cells.iter().zip(&self.study.cells) {
            let states = ["pending", "partial", "complete", "done"];
            if s.name != c.name
                || s.episodes != c.episodes
                || s.done > s.episodes
                || s.prefix > s.done
                || s.successes > s.done
                || !states.contains(&s.state.as_str())
            {
                return bad(format!(
                    "the state of cell {:?} does not fit the cell",
                    s.name
                ));
            }
        }
        Ok(())
    }
}

/// A part must hold the cell's settings: the same everything as `expected` except the episode
/// count and the backend (a study may continue on another machine), and the same model file
/// (CRC-32) wherever it lies.
/// Finished episodes by index from a cell's parts (the first part in file-name order wins when
/// two hold the same episode), with the backend each ran on.
fn episodes_of(cell: &Cell, parts: &[(PathBuf, Part)]) -> BTreeMap<usize, (PartEpisode, String)> {
    let mut eps = BTreeMap::new();
    for (_, part) in parts {
        for e in &part.episodes {
            if e.index < cell.episodes {
                eps.entry(e.index)
                    .or_insert_with(|| (e.clone(), part.config.backend.clone()));
            }
        }
    }
    eps
}

pub fn check_part(path: &Path, part: &Part, cell: &Cell, expected: &EvalConfig) -> Result<()> {
    let mut old = part.config.clone();
    old.backend = expected.backend.clone();
    let diffs = config_differences(&old, expected);
    if !diffs.is_empty() || part.cell != cell.name {
        let what = if part.cell != cell.name {
            format!("it belongs to cell {}", part.cell)
        } else {
            diffs.join("; ")
        };
        return Err(Error::Invalid(format!(
            "cell {}: {} was written with other settings or another model ({what}); delete \
             {} to recompute the cell with the study's settings, or run the study into \
             another --out directory",
            cell.name,
            path.display(),
            path.parent()
                .map_or(String::new(), |d| d.display().to_string())
        )));
    }
    Ok(())
}

/// "key: stored -> this run" for each planner setting that differs.
fn planner_differences(stored: &PlannerFile, run: &PlannerFile) -> String {
    let (a, b) = (
        serde_json::to_value(stored).unwrap_or_default(),
        serde_json::to_value(run).unwrap_or_default(),
    );
    let empty = serde_json::Map::new();
    let (a, b) = (
        a.as_object().unwrap_or(&empty),
        b.as_object().unwrap_or(&empty),
    );
    a.keys()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&serde_json::Value>| v.map_or("none".into(), |v| v.to_string());
            format!("{k}: {} -> {}", show(a.get(k)), show(b.get(k)))
        })
        .collect::<Vec<_>>()
        .join(", ")
}
