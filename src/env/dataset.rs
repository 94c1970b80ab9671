//! Offline datasets: trajectories of a data policy, written as safetensors shards plus a
//! JSON manifest, and read back by [`Dataset`].
//!
//! Layout of a dataset directory:
//! * `manifest.json`: [`Manifest`] (env, seed, policy, counts, image size, finished shards,
//!   per-dimension mean/std of actions and proprio once complete).
//! * `shard_00000.safetensors`, ...: each holds `n` consecutive episodes as
//!   `frames` u8 [n, T+1, H, W, 3], `actions` f32 [n, T, A], `proprio` f32 [n, T+1, P],
//!   `states` f32 [n, T+1, S] and `episode` i64 [n] (global episode indices). Frame t shows
//!   state t; action t leads from state t to state t+1.
//!
//! Episode `i` is generated from `sub_seed(seed, i)` alone, so a dataset is identical
//! whatever the shard size, thread count or number of interruptions. A shard is written to
//! a temporary file, renamed, then listed in the manifest; a restart keeps listed shards that
//! still read back with the right shapes and regenerates the rest.

use super::{make, policy, sub_seed, Env};
use crate::{Error, Result};
use rayon::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "qwm-dataset-v1";
pub const MANIFEST: &str = "manifest.json";

/// What to collect.
#[derive(Clone, Debug)]
pub struct CollectConfig {
    pub env: String,
    pub episodes: usize,
    pub steps: usize,
    pub seed: u64,
    /// Frame size in pixels; None = the environment's `default_data_size`.
    pub size: Option<usize>,
    /// Episodes per shard; None = as many as fit in about 64 MiB of frames.
    pub shard_episodes: Option<usize>,
}

/// Running sums for per-dimension mean/std.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Moments {
    pub count: u64,
    pub sum: Vec<f64>,
    pub sum_sq: Vec<f64>,
}

impl Moments {
    fn new(dim: usize) -> Moments {
        Moments {
            count: 0,
            sum: vec![0.0; dim],
            sum_sq: vec![0.0; dim],
        }
    }
    fn add_rows(&mut self, data: &[f32], dim: usize) {
        for row in data.chunks_exact(dim) {
            self.count += 1;
            for (k, v) in row.iter().enumerate() {
                self.sum[k] += *v as f64;
                self.sum_sq[k] += (*v as f64) * (*v as f64);
            }
        }
    }
    fn merge(&mut self, o: &Moments) {
        self.count += o.count;
        for k in 0..self.sum.len() {
            self.sum[k] += o.sum[k];
            self.sum_sq[k] += o.sum_sq[k];
        }
    }
    /// (mean, population std) per dimension.
    pub fn mean_std(&self) -> (Vec<f32>, Vec<f32>) {
        let n = self.count.max(1) as f64;
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let std = self
            .sum_sq
            .iter()
            .zip(&mean)
            .map(|(q, m)| ((q / n - m * m).max(0.0)).sqrt() as f32)
            .collect();
        (mean.into_iter().map(|m| m as f32).collect(), std)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShardInfo {
    pub file: String,
    pub first_episode: usize,
    pub episodes: usize,
    pub actions: Moments,
    pub proprio: Moments,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub env: String,
    pub seed: u64,
    pub policy: String,
    pub episodes: usize,
    pub steps: usize,
    pub image_size: usize,
    pub shard_episodes: usize,
    pub num_shards: usize,
    pub action_dim: usize,
    pub proprio_dim: usize,
    pub state_dim: usize,
    pub state_names: Vec<String>,
    /// Finished shards, in order.
    pub shards: Vec<ShardInfo>,
    pub complete: bool,
    /// Per-dimension statistics over all finished shards.
    pub action_mean: Vec<f32>,
    pub action_std: Vec<f32>,
    pub proprio_mean: Vec<f32>,
    pub proprio_std: Vec<f32>,
}

impl Manifest {
    /// The fields that define a dataset; a resumed run must match them exactly.
    fn identity(&self) -> (String, u64, String, usize, usize, usize, usize) {
        (
            self.env.clone(),
            self.seed,
            self.policy.clone(),
            self.episodes,
            self.steps,
            self.image_size,
            self.shard_episodes,
        )
    }

    /// Check the numbers a manifest file claims before anything is computed or allocated from
    /// them: sizes within `crate::limits`, shards listed in order with their expected names
    /// and lengths, statistics of the right width.
    fn validate(&self) -> Result<()> {
        use crate::limits::{check_range, MAX_EPISODES, MAX_SMALL_DIM, MAX_STEPS};
        check_range("episodes", self.episodes, 1, MAX_EPISODES)?;
        check_range("steps", self.steps, 1, MAX_STEPS)?;
        check_range("image_size", self.image_size, 1, 1024)?;
        check_range("shard_episodes", self.shard_episodes, 1, self.episodes)?;
        check_range("action_dim", self.action_dim, 1, MAX_SMALL_DIM)?;
        check_range("proprio_dim", self.proprio_dim, 1, MAX_SMALL_DIM)?;
        check_range("state_dim", self.state_dim, 1, MAX_SMALL_DIM)?;
        let want = self.episodes.div_ceil(self.shard_episodes);
        if self.num_shards != want || self.shards.len() > want {
            return Err(Error::Invalid(format!(
                "num_shards {} with {} listed, expected {want} for {} episodes of {} per shard",
                self.num_shards,
                self.shards.len(),
                self.episodes,
                self.shard_episodes
            )));
        }
        for (k, s) in self.shards.iter().enumerate() {
            let n = shard_len(k, self.shard_episodes, self.episodes);
            let ok = s.file == shard_name(k)
                && s.first_episode == k * self.shard_episodes
                && s.episodes == n
                && [
                    (&s.actions, self.action_dim),
                    (&s.proprio, self.proprio_dim),
                ]
                .iter()
                .all(|(m, d)| m.sum.len() == *d && m.sum_sq.len() == *d);
            if !ok {
                return Err(Error::Invalid(format!(
                    "shard entry {k} ({}) does not match the dataset's layout",
                    s.file
                )));
            }
        }
        Ok(())
    }

    fn refresh_stats(&mut self) {
        let mut a = Moments::new(self.action_dim);
        let mut p = Moments::new(self.proprio_dim);
        for s in &self.shards {
            a.merge(&s.actions);
            p.merge(&s.proprio);
        }
        (self.action_mean, self.action_std) = a.mean_std();
        (self.proprio_mean, self.proprio_std) = p.mean_std();
        self.complete = self.shards.len() == self.num_shards;
    }
}

/// One trajectory.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    /// Global episode index.
    pub index: usize,
    pub steps: usize,
    pub image_size: usize,
    /// u8 [T+1, H, W, 3]
    pub frames: Vec<u8>,
    /// f32 [T, A]
    pub actions: Vec<f32>,
    /// f32 [T+1, P]
    pub proprio: Vec<f32>,
    /// f32 [T+1, S]
    pub states: Vec<f32>,
}

impl Episode {
    /// Frame t as an image.
    pub fn frame(&self, t: usize) -> super::Frame {
        let n = self.image_size * self.image_size * 3;
        super::Frame {
            width: self.image_size,
            height: self.image_size,
            data: self.frames[t * n..(t + 1) * n].to_vec(),
        }
    }
}

/// Roll out episode `index` of a dataset: start state and actions from the data policy.
pub fn generate_episode(
    env_name: &str,
    seed: u64,
    index: usize,
    steps: usize,
    size: usize,
) -> Result<Episode> {
    let mut env = make(env_name)?;
    let mut pol = policy::for_env(env_name)?;
    let mut rng = super::rng(sub_seed(seed, index as u64));
    let start = pol.start_state(&mut rng);
    env.reset_to(&start)?;
    let spec = env.spec().clone();
    let mut ep = Episode {
        index,
        steps,
        image_size: size,
        frames: Vec::with_capacity((steps + 1) * size * size * 3),
        actions: Vec::with_capacity(steps * spec.action_dim),
        proprio: Vec::with_capacity((steps + 1) * spec.proprio_dim),
        states: Vec::with_capacity((steps + 1) * spec.state_dim),
    };
    let record = |env: &dyn Env, ep: &mut Episode| {
        let s = env.state();
        ep.frames.extend_from_slice(&env.render(size).data);
        ep.proprio.extend(env.proprio_of(&s));
        ep.states.extend(s);
    };
    record(env.as_ref(), &mut ep);
    for _ in 0..steps {
        let a = pol.act(&env.state(), &mut rng);
        env.step(&a)?;
        ep.actions.extend(&a);
        record(env.as_ref(), &mut ep);
    }
    Ok(ep)
}

fn shard_name(k: usize) -> String {
    format!("shard_{k:05}.safetensors")
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn read_f32(t: &TensorView) -> Vec<f32> {
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn st_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!(
        "{}: not a readable dataset shard: {e}",
        path.display()
    ))
}

fn write_manifest(dir: &Path, m: &Manifest) -> Result<()> {
    let path = dir.join(MANIFEST);
    let text = serde_json::to_string_pretty(m).map_err(|e| Error::Invalid(e.to_string()))?;
    crate::io::write_atomic(&path, text.as_bytes())
}

pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = crate::io::read_text(&path)?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| {
        Error::Invalid(format!(
            "{}: not a qwm dataset manifest: {e}",
            path.display()
        ))
    })?;
    if m.format != FORMAT {
        return Err(Error::Invalid(format!(
            "{}: format '{}', expected '{FORMAT}'",
            path.display(),
            m.format
        )));
    }
    m.validate()
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    Ok(m)
}

fn write_shard(path: &Path, eps: &[Episode], m: &Manifest) -> Result<()> {
    let n = eps.len();
    let (t, sz) = (m.steps, m.image_size);
    let frames: Vec<u8> = eps.iter().flat_map(|e| e.frames.iter().copied()).collect();
    let actions = f32_bytes(
        &eps.iter()
            .flat_map(|e| e.actions.iter().copied())
            .collect::<Vec<_>>(),
    );
    let proprio = f32_bytes(
        &eps.iter()
            .flat_map(|e| e.proprio.iter().copied())
            .collect::<Vec<_>>(),
    );
    let states = f32_bytes(
        &eps.iter()
            .flat_map(|e| e.states.iter().copied())
            .collect::<Vec<_>>(),
    );
    let index: Vec<u8> = eps
        .iter()
        .flat_map(|e| (e.index as i64).to_le_bytes())
        .collect();
    fn view<'a>(
        path: &Path,
        dt: Dtype,
        shape: Vec<usize>,
        data: &'a [u8],
    ) -> Result<TensorView<'a>> {
        TensorView::new(dt, shape, data).map_err(|e| st_err(path, e))
    }
    let tensors = vec![
        (
            "frames",
            view(path, Dtype::U8, vec![n, t + 1, sz, sz, 3], &frames)?,
        ),
        (
            "actions",
            view(path, Dtype::F32, vec![n, t, m.action_dim], &actions)?,
        ),
        (
            "proprio",
            view(path, Dtype::F32, vec![n, t + 1, m.proprio_dim], &proprio)?,
        ),
        (
            "states",
            view(path, Dtype::F32, vec![n, t + 1, m.state_dim], &states)?,
        ),
        ("episode", view(path, Dtype::I64, vec![n], &index)?),
    ];
    // One metadata entry: safetensors keeps metadata in a HashMap, whose order (and so the
    // file's bytes) would otherwise change from run to run.
    let mut info = HashMap::new();
    info.insert("format".to_string(), format!("{FORMAT} env={}", m.env));
    let bytes = safetensors::serialize(tensors, Some(info)).map_err(|e| st_err(path, e))?;
    crate::io::write_atomic(path, &bytes)
}

/// Read the episodes of one shard file, checking shapes against the manifest.
fn read_shard(path: &Path, m: &Manifest, expect_n: usize) -> Result<Vec<Episode>> {
    let bytes = crate::io::read_file(path, crate::io::MAX_FILE_BYTES)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| st_err(path, e))?;
    let get = |name: &str, shape: Vec<usize>| -> Result<TensorView<'_>> {
        let t = st.tensor(name).map_err(|e| st_err(path, e))?;
        if t.shape() != shape.as_slice() {
            return Err(st_err(
                path,
                format!(
                    "tensor '{name}' has shape {:?}, expected {shape:?}",
                    t.shape()
                ),
            ));
        }
        Ok(t)
    };
    let (n, t, sz) = (expect_n, m.steps, m.image_size);
    let frames = get("frames", vec![n, t + 1, sz, sz, 3])?;
    let actions = read_f32(&get("actions", vec![n, t, m.action_dim])?);
    let proprio = read_f32(&get("proprio", vec![n, t + 1, m.proprio_dim])?);
    let states = read_f32(&get("states", vec![n, t + 1, m.state_dim])?);
    let index: Vec<i64> = get("episode", vec![n])?
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    let fl = (t + 1) * sz * sz * 3;
    Ok((0..n)
        .map(|i| Episode {
            index: index[i] as usize,
            steps: t,
            image_size: sz,
            frames: frames.data()[i * fl..(i + 1) * fl].to_vec(),
            actions: actions[i * t * m.action_dim..(i + 1) * t * m.action_dim].to_vec(),
            proprio: proprio[i * (t + 1) * m.proprio_dim..(i + 1) * (t + 1) * m.proprio_dim]
                .to_vec(),
            states: states[i * (t + 1) * m.state_dim..(i + 1) * (t + 1) * m.state_dim].to_vec(),
        })
        .collect())
}

/// Outcome of [`collect`].
#[derive(Clone, Debug)]
pub struct CollectReport {
    pub manifest: Manifest,
    /// Shards kept from an earlier, interrupted run.
    pub resumed_shards: usize,
}

/// Collect a dataset into `dir` (created if needed), resuming an interrupted run with the
/// same configuration. `progress(done, total)` is called with episode counts.
pub fn collect(
    cfg: &CollectConfig,
    dir: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<CollectReport> {
    let env = make(&cfg.env)?;
    let spec = env.spec().clone();
    if cfg.episodes == 0 || cfg.steps == 0 {
        return Err(Error::Invalid(
            "episodes and steps must be at least 1".into(),
        ));
    }
    let size = cfg.size.unwrap_or(spec.default_data_size);
    if size == 0 || size > 1024 {
        return Err(Error::Invalid(format!(
            "frame size {size} is outside 1..=1024"
        )));
    }
    use crate::limits::{check_range, product, MAX_EPISODES, MAX_EPISODE_FRAME_BYTES, MAX_STEPS};
    check_range("--episodes", cfg.episodes, 1, MAX_EPISODES)?;
    check_range("--steps", cfg.steps, 1, MAX_STEPS)?;
    let frame_bytes = product("frames per episode", &[cfg.steps + 1, size, size, 3])?;
    if frame_bytes as u64 > MAX_EPISODE_FRAME_BYTES {
        return Err(Error::Invalid(format!(
            "--steps {} at {size} px is {frame_bytes} bytes of frames per episode, more than the \
             {MAX_EPISODE_FRAME_BYTES} an episode may hold; lower --steps or --size",
            cfg.steps
        )));
    }
    if let Some(n) = cfg.shard_episodes {
        check_range("--shard-episodes", n, 1, MAX_EPISODES)?;
    }
    let shard_episodes = cfg
        .shard_episodes
        .unwrap_or_else(|| (64 << 20) / frame_bytes.max(1))
        .clamp(1, cfg.episodes);
    let num_shards = cfg.episodes.div_ceil(shard_episodes);
    let mut m = Manifest {
        format: FORMAT.into(),
        env: spec.name.into(),
        seed: cfg.seed,
        policy: policy::for_env(spec.name)?.name().into(),
        episodes: cfg.episodes,
        steps: cfg.steps,
        image_size: size,
        shard_episodes,
        num_shards,
        action_dim: spec.action_dim,
        proprio_dim: spec.proprio_dim,
        state_dim: spec.state_dim,
        state_names: spec.state_names.iter().map(|s| s.to_string()).collect(),
        shards: vec![],
        complete: false,
        action_mean: vec![],
        action_std: vec![],
        proprio_mean: vec![],
        proprio_std: vec![],
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut resumed = 0;
    if dir.join(MANIFEST).exists() {
        let old = read_manifest(dir)?;
        if old.identity() != m.identity() {
            return Err(Error::Invalid(format!(
                "{} holds a different dataset (env {}, seed {}, policy {}, {} episodes x {} steps, \
                 {} px, {} episodes per shard); pick another --out or delete it",
                dir.display(),
                old.env,
                old.seed,
                old.policy,
                old.episodes,
                old.steps,
                old.image_size,
                old.shard_episodes
            )));
        }
        // Keep the listed shards that are still readable, in order. Their statistics are
        // recomputed from the data: JSON does not round-trip every f64 exactly, and a resumed
        // dataset must be byte-identical to an uninterrupted one.
        for s in old.shards {
            let k = s.first_episode / shard_episodes;
            let n = shard_len(k, shard_episodes, cfg.episodes);
            if s.file != shard_name(k) || s.episodes != n || m.shards.len() != k {
                break;
            }
            match read_shard(&dir.join(&s.file), &m, n) {
                Ok(eps) => {
                    m.shards
                        .push(shard_info(k, first_of(k, shard_episodes), &eps, &spec));
                    resumed += 1;
                }
                Err(_) => break,
            }
        }
    } else if std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("shard_"))
    {
        return Err(Error::Invalid(format!(
            "{} has shard files but no {MANIFEST}; pick another --out or delete it",
            dir.display()
        )));
    }
    m.refresh_stats();
    write_manifest(dir, &m)?;
    let mut done = m.shards.iter().map(|s| s.episodes).sum::<usize>();
    progress(done, cfg.episodes);
    for k in m.shards.len()..num_shards {
        let first = k * shard_episodes;
        let n = shard_len(k, shard_episodes, cfg.episodes);
        let eps: Vec<Episode> = (first..first + n)
            .into_par_iter()
            .map(|i| generate_episode(spec.name, cfg.seed, i, cfg.steps, size))
            .collect::<Result<_>>()?;
        write_shard(&dir.join(shard_name(k)), &eps, &m)?;
        m.shards.push(shard_info(k, first, &eps, &spec));
        m.refresh_stats();
        write_manifest(dir, &m)?;
        done += n;
        progress(done, cfg.episodes);
    }
    Ok(CollectReport {
        manifest: m,
        resumed_shards: resumed,
    })
}

fn first_of(k: usize, per: usize) -> usize {
    k * per
}

/// Manifest entry of shard `k` holding `eps`.
fn shard_info(k: usize, first: usize, eps: &[Episode], spec: &super::EnvSpec) -> ShardInfo {
    let mut actions = Moments::new(spec.action_dim);
    let mut proprio = Moments::new(spec.proprio_dim);
    for e in eps {
        actions.add_rows(&e.actions, spec.action_dim);
        proprio.add_rows(&e.proprio, spec.proprio_dim);
    }
    ShardInfo {
        file: shard_name(k),
        first_episode: first,
        episodes: eps.len(),
        actions,
        proprio,
    }
}

fn shard_len(k: usize, per: usize, total: usize) -> usize {
    per.min(total - k * per)
}

/// A dataset on disk, as written by [`collect`].
#[derive(Clone, Debug)]
pub struct Dataset {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Dataset {
    /// Open a dataset directory. Incomplete datasets open too; only finished shards are
    /// visible.
    pub fn open(dir: impl AsRef<Path>) -> Result<Dataset> {
        let dir = dir.as_ref().to_path_buf();
        let manifest = read_manifest(&dir)?;
        Ok(Dataset { dir, manifest })
    }

    /// Number of episodes in finished shards.
    pub fn len(&self) -> usize {
        self.manifest.shards.iter().map(|s| s.episodes).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn num_shards(&self) -> usize {
        self.manifest.shards.len()
    }

    /// Episodes of finished shard `k`.
    pub fn shard(&self, k: usize) -> Result<Vec<Episode>> {
        let s = self.manifest.shards.get(k).ok_or_else(|| {
            Error::Invalid(format!(
                "shard {k} out of range ({} shards)",
                self.num_shards()
            ))
        })?;
        read_shard(&self.dir.join(&s.file), &self.manifest, s.episodes)
    }

    /// Episode `i` (loads its shard).
    pub fn episode(&self, i: usize) -> Result<Episode> {
        let k = i / self.manifest.shard_episodes;
        if i >= self.len() {
            return Err(Error::Invalid(format!(
                "episode {i} out of range ({} episodes)",
                self.len()
            )));
        }
        let mut eps = self.shard(k)?;
        Ok(eps.swap_remove(i - k * self.manifest.shard_episodes))
    }

    /// All episodes, in order.
    pub fn episodes(&self) -> Result<Vec<Episode>> {
        let mut out = Vec::with_capacity(self.len());
        for k in 0..self.num_shards() {
            out.extend(self.shard(k)?);
        }
        Ok(out)
    }

    /// DINO-WM's PushT evaluation pairs: a start and a goal state `gap` steps apart on a
    /// stored trajectory, chosen from `seed`.
    pub fn sample_start_goal(&self, seed: u64, gap: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        use rand::Rng;
        if self.is_empty() || gap > self.manifest.steps {
            return Err(Error::Invalid(format!(
                "cannot take states {gap} steps apart from {} episodes of {} steps",
                self.len(),
                self.manifest.steps
            )));
        }
        let mut rng = super::rng(seed);
        let ep = self.episode(rng.random_range(0..self.len()))?;
        let t = rng.random_range(0..=self.manifest.steps - gap);
        let sd = self.manifest.state_dim;
        Ok((
            ep.states[t * sd..(t + 1) * sd].to_vec(),
            ep.states[(t + gap) * sd..(t + gap + 1) * sd].to_vec(),
        ))
    }
}
