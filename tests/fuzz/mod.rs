//! A mutation fuzzer over the files qwm reads (docs/RELIABILITY.md), shared by the CI test
//! (tests/fuzz_files.rs, a fixed-seed budget) and the long run (examples/fuzz_files.rs).
//!
//! Each format is one [`Format`] entry: how to make valid seed files, what kind of container
//! they are (so header JSON can be edited structurally) and how qwm loads them. A case takes a
//! seed file and applies 1-3 [`Mutation`]s drawn with `arbitrary` from seeded random bytes
//! (truncations, bit flips, byte edits, splices, absurd header lengths, and edits of any JSON
//! node, including the JSON nested in safetensors metadata strings: absurd numbers, nulls,
//! deletions, wrong types). The loader runs under `catch_unwind` with a per-thread allocation
//! counter; a case fails on a panic, on an error that does not name the file, or on a peak
//! allocation above [`mem_bound`] of the file's size.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use qwm::model::quantized as qmodel;
use qwm::model::{format, ModelConfig, Weights};
use qwm::plan::eval::{EvalConfig, EvalReport};
use qwm::plan::EpisodeRecord;
use qwm::quant::{ActStats, QuantSpec};
use rand::{rngs::StdRng, RngCore, SeedableRng};
use serde_json::Value;

// ---- allocation accounting (this thread's live bytes and their peak) ----

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    // `try_with`: allocations during thread teardown find no slot; they are not counted.
    let _ = LIVE.try_with(|l| {
        let v = l.get() + delta;
        l.set(v);
        let _ = PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v)
            }
        });
    });
}

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            track(l.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        track(-(l.size() as isize));
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            track(l.size() as isize);
        }
        p
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            track(new as isize - l.size() as isize);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Run `f`, returning its result and the peak bytes it allocated on this thread.
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(|p| p.get()) - base;
    (r, peak.max(0) as usize)
}

/// The most a loader may allocate for a file of `len` bytes: a few copies of it (bytes, f32
/// tensors, dequantized weights) plus a constant.
pub fn mem_bound(len: usize) -> usize {
    12 * len + (16 << 20)
}

// ---- formats ----

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Container {
    Safetensors,
    Json,
}

/// One file format qwm reads. Adding a format is adding one entry to [`formats`].
pub struct Format {
    pub name: &'static str,
    pub ext: &'static str,
    pub container: Container,
    /// Valid files to mutate (written into `dir` if they need a scratch place).
    pub seeds: fn(dir: &Path) -> Vec<Vec<u8>>,
    /// Load the file as qwm does, and use what loaded.
    pub load: fn(path: &Path) -> qwm::Result<()>,
}

pub fn formats() -> Vec<Format> {
    vec![
        Format {
            name: "model",
            ext: "safetensors",
            container: Container::Safetensors,
            seeds: model_seeds,
            load: load_model,
        },
        Format {
            name: "quantized",
            ext: "safetensors",
            container: Container::Safetensors,
            seeds: quant_seeds,
            load: load_quant,
        },
        Format {
            name: "eval-report",
            ext: "json",
            container: Container::Json,
            seeds: report_seeds,
            load: load_report,
        },
    ]
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

fn report_seeds(_dir: &Path) -> Vec<Vec<u8>> {
    let pc = qwm::plan::PlanConfig::default();
    let cfg = EvalConfig {
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
    };
    let eps = vec![episode(0, 1.5), episode(1, f32::NAN), episode(2, 0.25)];
    let mut full = EvalReport::summarize(cfg.clone(), eps, Some(0.125));
    full.linear_bytes = Some([1000, 4000]);
    let empty = EvalReport::summarize(cfg, vec![], None);
    [full, empty]
        .iter()
        .map(|r| serde_json::to_vec_pretty(r).unwrap())
        .collect()
}

fn load_report(path: &Path) -> qwm::Result<()> {
    let r = qwm::plan::eval::read_report(path)?;
    // What a resume and the summary do with the stored episodes.
    EvalReport::summarize(r.config, r.episodes, r.latent_divergence);
    Ok(())
}

// ---- mutations ----

#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Absurd {
    Zero,
    One,
    MinusOne,
    Small(u8),
    Odd(u16),
    U32Max,
    U32MaxPlus1,
    U53,
    U64Max,
    Huge,
    NegHuge,
    Half,
    Any(u64),
}

impl Absurd {
    fn value(self) -> Value {
        use serde_json::json;
        match self {
            Absurd::Zero => json!(0),
            Absurd::One => json!(1),
            Absurd::MinusOne => json!(-1),
            Absurd::Small(v) => json!(v),
            Absurd::Odd(v) => json!(v),
            Absurd::U32Max => json!(u32::MAX),
            Absurd::U32MaxPlus1 => json!(u32::MAX as u64 + 1),
            Absurd::U53 => json!((1u64 << 53) + 1),
            Absurd::U64Max => json!(u64::MAX),
            Absurd::Huge => json!(1e308),
            Absurd::NegHuge => json!(-1e308),
            Absurd::Half => json!(0.5),
            Absurd::Any(v) => json!(v),
        }
    }

    fn u64(self) -> u64 {
        match self {
            Absurd::Zero => 0,
            Absurd::One => 1,
            Absurd::MinusOne | Absurd::U64Max => u64::MAX,
            Absurd::Small(v) => v as u64,
            Absurd::Odd(v) => v as u64,
            Absurd::U32Max => u32::MAX as u64,
            Absurd::U32MaxPlus1 => u32::MAX as u64 + 1,
            Absurd::U53 => (1 << 53) + 1,
            Absurd::Huge | Absurd::NegHuge => 1 << 62,
            Absurd::Half => 7,
            Absurd::Any(v) => v,
        }
    }
}

#[derive(Arbitrary, Clone, Debug)]
pub enum JsonOp {
    Number(Absurd),
    Null,
    Delete,
    Str(String),
    Bool(bool),
    EmptyArray,
    EmptyObject,
    /// Double an array (or append its first element) / copy a sibling value.
    Grow,
}

#[derive(Arbitrary, Clone, Debug)]
pub enum Mutation {
    Truncate {
        at: u32,
    },
    FlipBit {
        at: u32,
        bit: u8,
        in_header: bool,
    },
    SetByte {
        at: u32,
        value: u8,
        in_header: bool,
    },
    Delete {
        at: u32,
        len: u16,
    },
    Insert {
        at: u32,
        bytes: Vec<u8>,
    },
    /// Safetensors: the 8-byte header length.
    HeaderLen(Absurd),
    /// Edit the JSON node with this index (modulo the node count).
    Json {
        node: u32,
        op: JsonOp,
    },
}

/// The byte range of a file's JSON: the safetensors header, or the whole file.
fn json_range(c: Container, b: &[u8]) -> Option<(usize, usize)> {
    match c {
        Container::Json => Some((0, b.len())),
        Container::Safetensors => {
            let n = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
            let end = 8usize.checked_add(usize::try_from(n).ok()?)?;
            (end <= b.len()).then_some((8, end))
        }
    }
}

fn pos(at: u32, lo: usize, hi: usize) -> usize {
    if hi <= lo {
        lo
    } else {
        lo + at as usize % (hi - lo)
    }
}

/// Nodes in traversal order; a string holding a JSON object or array counts its inner nodes.
fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        Value::String(s) => nested(s).map_or(0, |n| count(&n)),
        _ => 0,
    }
}

fn nested(s: &str) -> Option<Value> {
    if !(s.starts_with('{') || s.starts_with('[')) {
        return None;
    }
    serde_json::from_str(s).ok()
}

/// Apply `op` to node `*target` (counting down in [`count`]'s order); `Some(true)` asks the
/// caller to delete this node from its parent.
fn edit(v: &mut Value, target: &mut usize, op: &JsonOp) -> Option<bool> {
    if *target == 0 {
        let new = match op {
            JsonOp::Number(a) => a.value(),
            JsonOp::Null => Value::Null,
            JsonOp::Delete => return Some(true),
            JsonOp::Str(s) => Value::String(s.clone()),
            JsonOp::Bool(b) => Value::Bool(*b),
            JsonOp::EmptyArray => Value::Array(vec![]),
            JsonOp::EmptyObject => Value::Object(Default::default()),
            JsonOp::Grow => match &*v {
                Value::Array(a) if !a.is_empty() => {
                    let mut b = a.clone();
                    b.extend(a.iter().cloned());
                    Value::Array(b)
                }
                Value::Object(o) => {
                    let mut o = o.clone();
                    if let Some((k, x)) = o.iter().next().map(|(k, x)| (k.clone(), x.clone())) {
                        o.insert(format!("{k}.qcodes"), x);
                    }
                    Value::Object(o)
                }
                other => Value::Array(vec![other.clone(), other.clone()]),
            },
        };
        *v = new;
        return Some(false);
    }
    *target -= 1;
    match v {
        Value::Array(a) => {
            for i in 0..a.len() {
                if let Some(del) = edit(&mut a[i], target, op) {
                    if del {
                        a.remove(i);
                    }
                    return Some(false);
                }
            }
            None
        }
        Value::Object(o) => {
            let keys: Vec<String> = o.keys().cloned().collect();
            for k in keys {
                let Some(x) = o.get_mut(&k) else { continue };
                if let Some(del) = edit(x, target, op) {
                    if del {
                        o.remove(&k);
                    }
                    return Some(false);
                }
            }
            None
        }
        Value::String(s) => {
            let mut n = nested(s)?;
            let r = edit(&mut n, target, op)?;
            *s = if r {
                String::new()
            } else {
                serde_json::to_string(&n).ok()?
            };
            Some(false)
        }
        _ => None,
    }
}

/// Apply one mutation to `b` (a file of container `c`).
pub fn apply(c: Container, b: &mut Vec<u8>, m: &Mutation) {
    let len = b.len();
    let header = json_range(c, b).unwrap_or((0, len));
    let region = |inside: bool| if inside { header } else { (0, len) };
    match m {
        Mutation::Truncate { at } => b.truncate(pos(*at, 0, len)),
        Mutation::FlipBit { at, bit, in_header } => {
            let (lo, hi) = region(*in_header);
            if hi > lo {
                b[pos(*at, lo, hi)] ^= 1 << (bit % 8);
            }
        }
        Mutation::SetByte {
            at,
            value,
            in_header,
        } => {
            let (lo, hi) = region(*in_header);
            if hi > lo {
                b[pos(*at, lo, hi)] = *value;
            }
        }
        Mutation::Delete { at, len: n } => {
            let s = pos(*at, 0, len);
            let e = (s + *n as usize).min(len);
            b.drain(s..e);
        }
        Mutation::Insert { at, bytes } => {
            let s = pos(*at, header.0, header.1.max(header.0 + 1).min(len));
            b.splice(s..s, bytes.iter().copied());
        }
        Mutation::HeaderLen(a) => {
            if c == Container::Safetensors && len >= 8 {
                b[..8].copy_from_slice(&a.u64().to_le_bytes());
            }
        }
        Mutation::Json { node, op } => {
            let Some((lo, hi)) = json_range(c, b) else {
                return;
            };
            let Ok(mut v) = serde_json::from_slice::<Value>(&b[lo..hi]) else {
                return;
            };
            let mut t = *node as usize % count(&v);
            if edit(&mut v, &mut t, op) == Some(true) {
                v = Value::Null; // the root itself was deleted
            }
            let Ok(mut text) = serde_json::to_vec(&v) else {
                return;
            };
            match c {
                Container::Json => *b = text,
                Container::Safetensors => {
                    while text.len() % 8 != 0 {
                        text.push(b' ');
                    }
                    let mut out = (text.len() as u64).to_le_bytes().to_vec();
                    out.extend_from_slice(&text);
                    out.extend_from_slice(&b[hi..]);
                    *b = out;
                }
            }
        }
    }
}

/// The mutations of case `case` under `seed` (1-3 of them), deterministically.
pub fn mutations(seed: u64, case: u64) -> Vec<Mutation> {
    let mut rng = StdRng::seed_from_u64(seed ^ case.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut raw = vec![0u8; 512];
    rng.fill_bytes(&mut raw);
    let mut u = Unstructured::new(&raw);
    let n = u.int_in_range(1..=3).unwrap_or(1);
    (0..n)
        .filter_map(|_| Mutation::arbitrary(&mut u).ok())
        .collect()
}

// ---- running ----

#[derive(Debug, Default)]
pub struct Summary {
    pub cases: u64,
    pub loaded: u64,
    pub refused: u64,
    /// Failures: (case, what happened, mutations).
    pub failures: Vec<(u64, String, String)>,
    /// Largest peak allocation / file size seen (loaded or refused).
    pub max_peak_bytes: usize,
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

/// Run `cases` mutated files of format `f` from `seed` in `dir`; keeps the first failures.
pub fn run(f: &Format, dir: &Path, seed: u64, cases: u64) -> Summary {
    std::fs::create_dir_all(dir).unwrap();
    let seeds = (f.seeds)(dir);
    // A name no loader would invent, to check that every error names the file.
    let path: PathBuf = dir.join(format!("fuzzcase-{}.{}", f.name, f.ext));
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut s = Summary::default();
    for case in 0..cases {
        let muts = mutations(seed, case);
        let mut b = seeds[case as usize % seeds.len()].clone();
        for m in &muts {
            apply(f.container, &mut b, m);
        }
        std::fs::write(&path, &b).unwrap();
        let (r, peak) = measured(|| std::panic::catch_unwind(|| (f.load)(&path)));
        s.cases += 1;
        s.max_peak_bytes = s.max_peak_bytes.max(peak);
        let fail = match r {
            Err(p) => Some(format!("panic: {}", panic_message(p.as_ref()))),
            Ok(Ok(())) => {
                s.loaded += 1;
                None
            }
            Ok(Err(e)) => {
                s.refused += 1;
                let msg = e.to_string();
                (!msg.contains(&name)).then(|| format!("error without the file name: {msg}"))
            }
        };
        let fail = fail.or_else(|| {
            (peak > mem_bound(b.len())).then(|| {
                format!(
                    "allocated {peak} bytes for a {}-byte file (bound {})",
                    b.len(),
                    mem_bound(b.len())
                )
            })
        });
        if let Some(what) = fail {
            if s.failures.len() < 20 {
                s.failures.push((case, what, format!("{muts:?}")));
            }
        }
    }
    s
}

/// Silence the default panic printout (panics are counted and reported by [`run`]).
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|_| {}));
}
