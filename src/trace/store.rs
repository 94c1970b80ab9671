//! Reading and writing trace directories (docs/TRACE.md). The writer replaces `trace.json`
//! atomically after each iteration file, so a reader sees either the old or the new list; the
//! reader checks the format version first and every array's shape against `trace.json`
//! before it builds anything from it, so a truncated or foreign file is an error naming it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};

use super::{IterTrace, RunTrace, Trace, TraceMeta, FORMAT_NAME, FORMAT_VERSION};
use crate::env::Frame;
use crate::model::format::{write_tensors, RawTensor};
use crate::{Error, Result};

/// Largest iteration file a reader accepts (a 224 px model with horizon 5 and 64 elites
/// writes about 2 MB).
const MAX_ITER_FILE: u64 = 1 << 30;

fn iter_path(dir: &Path, run: usize, iter: usize) -> PathBuf {
    dir.join(format!("r{run}"))
        .join(format!("iter{iter:04}.safetensors"))
}

/// Writes a trace directory as the recording goes.
pub struct TraceWriter {
    dir: PathBuf,
    /// Held while recording: a second process on the same directory is refused.
    _lock: crate::io::FileLock,
}

impl TraceWriter {
    /// Start a trace in `dir` (created). A directory that already holds a trace, an unfinished
    /// one or anything else, or that another process is recording into, is refused, so two
    /// recordings never mix.
    pub fn create(dir: &Path, goal: &Frame) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let lock = crate::io::FileLock::acquire_patiently(dir)?.ok_or_else(|| {
            Error::Invalid(format!(
                "--trace {}: another qwm process is recording into this directory now; pass \
                 another --trace directory",
                dir.display()
            ))
        })?;
        if dir.join("trace.json").exists() {
            return Err(Error::Invalid(format!(
                "{} already holds a trace; pass another --trace directory or delete it",
                dir.display()
            )));
        }
        let mut entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        if entries.next().is_some() {
            return Err(Error::Invalid(format!(
                "{} is not empty (an unfinished recording or other files); pass another \
                 --trace directory or delete it",
                dir.display()
            )));
        }
        let w = TraceWriter {
            dir: dir.to_path_buf(),
            _lock: lock,
        };
        write_tensors(
            &[frame_tensor("goal", goal)],
            HashMap::new(),
            &dir.join("goal.safetensors"),
        )?;
        Ok(w)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Write one iteration's arrays.
    pub fn write_iter(&self, run: usize, it: &IterTrace) -> Result<()> {
        let mut t: Vec<RawTensor> = vec![frame_tensor("obs", &it.obs)];
        if !it.imagined.is_empty() {
            t.push(frames_tensor("imagined", &it.imagined));
        }
        t.push(frames_tensor("real", &it.real));
        t.push(f32_tensor("pred_latent", &it.pred_latent));
        t.push(f32_tensor("real_latent", &it.real_latent));
        t.push(f32_tensor("real_states", &it.real_states));
        t.push(f32_tensor(
            "plan_actions",
            std::slice::from_ref(&it.plan_actions),
        ));
        t.push(f32_tensor("executed_actions", &it.executed_actions));
        t.push(f32_tensor("executed_states", &it.executed_states));
        t.push(f32_tensor("elite_actions", &it.elite_actions));
        let flat: Vec<Vec<f32>> = it.elite_states.iter().map(|e| e.concat()).collect();
        t.push(f32_tensor("elite_states", &flat));
        let p = iter_path(&self.dir, run, it.meta.index);
        let tmp = p.with_extension("tmp");
        write_tensors(&t, HashMap::new(), &tmp)?;
        std::fs::rename(&tmp, &p).map_err(|e| Error::io(&p, e))
    }

    /// Replace `trace.json` (after the iteration files it lists are written).
    pub fn write_meta(&self, meta: &TraceMeta) -> Result<()> {
        let p = self.dir.join("trace.json");
        let js = serde_json::to_string_pretty(meta)
            .map_err(|e| Error::Invalid(format!("{}: {e}", p.display())))?;
        crate::io::write_atomic(&p, js.as_bytes())
    }
}

fn frame_tensor(name: &str, f: &Frame) -> RawTensor {
    (
        name.to_string(),
        Dtype::U8,
        vec![f.height, f.width, 3],
        f.data.clone(),
    )
}

fn frames_tensor(name: &str, fs: &[Frame]) -> RawTensor {
    let (h, w) = fs.first().map_or((0, 0), |f| (f.height, f.width));
    (
        name.to_string(),
        Dtype::U8,
        vec![fs.len(), h, w, 3],
        fs.iter().flat_map(|f| f.data.iter().copied()).collect(),
    )
}

fn f32_tensor(name: &str, rows: &[Vec<f32>]) -> RawTensor {
    let w = rows.first().map_or(0, |r| r.len());
    (
        name.to_string(),
        Dtype::F32,
        vec![rows.len(), w],
        rows.iter()
            .flat_map(|r| r.iter().flat_map(|x| x.to_le_bytes()))
            .collect(),
    )
}

/// Read a trace directory. Errors name the file and say what to do.
pub fn load(dir: &Path) -> Result<Trace> {
    let jp = dir.join("trace.json");
    if !dir.is_dir() {
        return Err(Error::Invalid(format!(
            "{}: no such trace directory; record one with `qwm plan --env wall --trace {}`",
            dir.display(),
            dir.display()
        )));
    }
    if !jp.exists() {
        return Err(Error::Invalid(format!(
            "{}: missing; a trace directory holds trace.json, written by `qwm plan --trace DIR`",
            jp.display()
        )));
    }
    let text = crate::io::read_text(&jp)?;
    // The version is checked before the rest is parsed, so a newer trace says so instead of
    // failing on a field it does not know.
    let head: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::Invalid(format!(
            "{}: not valid JSON (truncated?): {e}",
            jp.display()
        ))
    })?;
    if head.get("format").and_then(|v| v.as_str()) != Some(FORMAT_NAME) {
        return Err(Error::Invalid(format!(
            "{}: not a qwm trace (its \"format\" is not \"{FORMAT_NAME}\")",
            jp.display()
        )));
    }
    let version = head.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
    if version > FORMAT_VERSION as u64 {
        return Err(Error::Invalid(format!(
            "{}: trace format version {version} is newer than this qwm reads ({FORMAT_VERSION}); \
             update qwm",
            jp.display()
        )));
    }
    if version == 0 {
        return Err(Error::Invalid(format!(
            "{}: \"version\" is missing or 0",
            jp.display()
        )));
    }
    let meta: TraceMeta = serde_json::from_value(head)
        .map_err(|e| Error::Invalid(format!("{}: {e}", jp.display())))?;
    let s = meta.image_size;
    if s == 0 || s > 4096 || meta.plan.horizon == 0 || meta.plan.horizon > 1024 {
        return Err(Error::Invalid(format!(
            "{}: image_size {s} or horizon {} out of range",
            jp.display(),
            meta.plan.horizon
        )));
    }
    let origin = jp.display().to_string();
    let in_file = |e: Error| e.within(&origin);
    // Every size trace.json declares is bounded (`crate::limits`) and multiplied in checked
    // arithmetic before an array is checked against it.
    meta.plan.validate().map_err(in_file)?;
    let seq_len = meta.plan.seq_len();
    for rm in &meta.runs {
        use crate::limits::{check_range, MAX_IMAGE, MAX_STEPS, MAX_TOKENS, MAX_WIDTH};
        let (n, de) = rm.latent_shape;
        check_range("latent_shape[0] (patches)", n, 0, MAX_TOKENS).map_err(in_file)?;
        check_range("latent_shape[1] (width)", de, 0, MAX_WIDTH).map_err(in_file)?;
        check_range("decoded_size", rm.decoded_size, 0, MAX_IMAGE).map_err(in_file)?;
        for im in &rm.iterations {
            check_range("executed_steps", im.executed_steps, 0, MAX_STEPS).map_err(in_file)?;
        }
    }
    let mut env = crate::env::make(&meta.env).map_err(in_file)?;
    let sd = env.state_dim();
    for (name, v) in [("start", &meta.start), ("goal", &meta.goal)] {
        if v.len() != sd {
            return Err(Error::Invalid(format!(
                "{}: {name} has {} values, {} states have {sd}",
                jp.display(),
                v.len(),
                meta.env
            )));
        }
        // A state the environment cannot be in cannot be drawn either (the viewer and the
        // GIF export render it): refused here, naming the file.
        env.reset_to(v)
            .map_err(|e| e.within(&format!("{origin}: {name}")))?;
    }
    let gp = dir.join("goal.safetensors");
    if !gp.exists() {
        return Err(Error::Invalid(format!(
            "{}: missing or unreadable (truncated trace?)",
            gp.display()
        )));
    }
    let goal_file = read_file(&gp)?;
    let goal = Arrays::parse(&gp, &goal_file)?;
    let goal_frame = goal.frames("goal", 1, s)?.remove(0);
    let h = meta.plan.horizon;
    let mut runs = Vec::new();
    for (r, rm) in meta.runs.iter().enumerate() {
        let mut iters = Vec::new();
        for (k, im) in rm.iterations.iter().enumerate() {
            if im.index != k {
                return Err(Error::Invalid(format!(
                    "{}: run {r} iteration {k} has index {}",
                    jp.display(),
                    im.index
                )));
            }
            let p = iter_path(dir, r, k);
            if !p.exists() {
                return Err(Error::Invalid(format!(
                    "truncated trace: {} is missing ({} lists {} iterations for run {r})",
                    p.display(),
                    jp.display(),
                    rm.iterations.len()
                )));
            }
            let bytes = read_file(&p)?;
            let a = Arrays::parse(&p, &bytes)?;
            let (n, de) = rm.latent_shape;
            let ds = rm.decoded_size;
            let n_exec = im.executed_steps;
            let elites = a.rows("elite_actions")?;
            let k_el = elites.0;
            let it = IterTrace {
                meta: im.clone(),
                obs: a.frames("obs", 1, s)?.remove(0),
                imagined: if ds > 0 {
                    a.frames("imagined", h + 1, ds)?
                } else {
                    Vec::new()
                },
                real: a.frames("real", h + 1, s)?,
                pred_latent: a.f32s("pred_latent", h + 1, n * de)?,
                real_latent: a.f32s("real_latent", h + 1, n * de)?,
                real_states: a.f32s("real_states", h + 1, sd)?,
                plan_actions: a.f32s("plan_actions", 1, seq_len)?.remove(0),
                executed_actions: a.f32s("executed_actions", n_exec, env.action_dim())?,
                executed_states: a.f32s("executed_states", n_exec + 1, sd)?,
                elite_actions: a.f32s("elite_actions", k_el, seq_len)?,
                elite_states: a
                    .f32s("elite_states", k_el, (h + 1) * sd)?
                    .into_iter()
                    .map(|e| e.chunks(sd).map(|c| c.to_vec()).collect())
                    .collect(),
            };
            // The state each iteration starts from is rendered (viewer, GIF export).
            if let Some(s0) = it.executed_states.first() {
                env.reset_to(s0)
                    .map_err(|e| e.within(&format!("{}: executed_states[0]", p.display())))?;
            }
            iters.push(it);
        }
        runs.push(RunTrace {
            meta: rm.clone(),
            iters,
        });
    }
    Ok(Trace {
        meta,
        goal_frame,
        runs,
    })
}

/// A regular file of at most [`MAX_ITER_FILE`] bytes (`crate::io::read_file`).
fn read_file(p: &Path) -> Result<Vec<u8>> {
    crate::io::read_file(p, MAX_ITER_FILE)
}

/// The tensors of one file, each checked against the shape the caller expects.
struct Arrays<'a> {
    path: &'a Path,
    st: SafeTensors<'a>,
}

impl<'a> Arrays<'a> {
    fn parse(path: &'a Path, bytes: &'a [u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            Error::Invalid(format!(
                "{}: not a valid safetensors file (truncated or corrupt?): {e}",
                path.display()
            ))
        })?;
        Ok(Arrays { path, st })
    }

    fn get(&self, name: &str, dtype: Dtype) -> Result<(Vec<usize>, &'a [u8])> {
        let v = self.st.tensor(name).map_err(|_| {
            Error::Invalid(format!(
                "{}: tensor {name} is missing (truncated trace?)",
                self.path.display()
            ))
        })?;
        if v.dtype() != dtype {
            return Err(Error::Invalid(format!(
                "{}: tensor {name} is {:?}, expected {dtype:?}",
                self.path.display(),
                v.dtype()
            )));
        }
        Ok((v.shape().to_vec(), v.data()))
    }

    fn bad(&self, name: &str, got: &[usize], want: &[usize]) -> Error {
        Error::Invalid(format!(
            "{}: tensor {name} has shape {got:?}, trace.json implies {want:?}",
            self.path.display()
        ))
    }

    fn rows(&self, name: &str) -> Result<(usize, usize)> {
        let (shape, _) = self.get(name, Dtype::F32)?;
        match shape.as_slice() {
            [r, c] => Ok((*r, *c)),
            s => Err(self.bad(name, s, &[0, 0])),
        }
    }

    fn frames(&self, name: &str, n: usize, size: usize) -> Result<Vec<Frame>> {
        let (shape, data) = self.get(name, Dtype::U8)?;
        let (count, h, w) = match shape.as_slice() {
            [h, w, 3] if n == 1 => (1, *h, *w),
            [k, h, w, 3] => (*k, *h, *w),
            s => return Err(self.bad(name, s, &[n, size, size, 3])),
        };
        if count != n || h != size || w != size {
            return Err(self.bad(name, &shape, &[n, size, size, 3]));
        }
        Ok(data
            .chunks(size * size * 3)
            .map(|c| Frame {
                width: size,
                height: size,
                data: c.to_vec(),
            })
            .collect())
    }

    fn f32s(&self, name: &str, rows: usize, cols: usize) -> Result<Vec<Vec<f32>>> {
        let (shape, data) = self.get(name, Dtype::F32)?;
        // An empty array is stored as [0, 0].
        let ok = shape == [rows, cols] || (rows == 0 && shape.first() == Some(&0));
        if !ok {
            return Err(self.bad(name, &shape, &[rows, cols]));
        }
        let vals: Vec<f32> = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok((0..rows)
            .map(|r| vals[r * cols..(r + 1) * cols].to_vec())
            .collect())
    }
}
