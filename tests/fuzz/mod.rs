//! A mutation fuzzer over the files qwm reads (docs/RELIABILITY.md), shared by the CI test
//! (tests/fuzz_files.rs, a fixed-seed budget) and the long run (examples/fuzz_files.rs).
//!
//! Each format is one [`Format`] entry (`formats.rs`): valid seed files, where a case is
//! written, and how qwm loads it. A case takes a seed and applies 1-3 mutations
//! (`mutate.rs`) drawn with `arbitrary` from seeded random bytes: truncations, bit flips,
//! byte edits, splices, absurd header lengths, edits of any JSON or TOML node (including the
//! JSON nested in safetensors metadata strings: absurd numbers, nulls, deletions, wrong
//! types) and, for text files, line edits (deletions, key edits, absurd literals, invalid
//! UTF-8). The loader runs under `catch_unwind` with a per-thread allocation counter; a case
//! fails on a panic, on an error that does not name the file, or on a peak allocation above
//! [`mem_bound`] of the file's size.
#![allow(dead_code)]

mod formats;
mod mutate;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

pub use formats::formats;
use mutate::{apply_mut, mutations};

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
    /// Text with TOML syntax (study files).
    Toml,
}

/// One valid file to mutate: where a case is written (inside a valid directory for directory
/// formats) and its bytes, which are written back after every case.
pub struct Seed {
    pub path: PathBuf,
    pub container: Container,
    pub bytes: Vec<u8>,
}

/// One file format qwm reads. Adding a format is adding one entry to [`formats`].
pub struct Format {
    pub name: &'static str,
    /// Valid files to mutate (written into `dir`, with any files they need beside them).
    pub seeds: fn(dir: &Path) -> Vec<Seed>,
    /// Load the file at a seed's path as qwm does, and use what loaded.
    pub load: fn(path: &Path) -> qwm::Result<()>,
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
    let mut s = Summary::default();
    for case in 0..cases {
        let sd = &seeds[case as usize % seeds.len()];
        let path = &sd.path;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let muts = mutations(seed, case, sd.container);
        let mut b = sd.bytes.clone();
        for m in &muts {
            apply_mut(sd.container, &mut b, m);
        }
        std::fs::write(path, &b).unwrap();
        let (r, peak) = measured(|| std::panic::catch_unwind(|| (f.load)(path)));
        // The file as it was: a directory format's next case mutates another of its files
        // and needs this one valid (loaders only read).
        std::fs::write(path, &sd.bytes).unwrap();
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
