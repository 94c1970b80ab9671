//! Calibration: min/max of every linear's inputs while the float planner runs (CPU backend).
//! The CPU `Linear` reports its inputs here while a calibration is active.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::{ActStats, InputSampler};

static ACTIVE: AtomicBool = AtomicBool::new(false);
static STATS: Mutex<BTreeMap<String, ActStats>> = Mutex::new(BTreeMap::new());
static SAMPLER: Mutex<Option<InputSampler>> = Mutex::new(None);

/// Also sample input rows into `s` until [`take_sampler`].
pub fn set_sampler(s: InputSampler) {
    *SAMPLER.lock().unwrap() = Some(s);
}

pub fn take_sampler() -> Option<InputSampler> {
    SAMPLER.lock().unwrap().take()
}

pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Start collecting (clears earlier statistics).
pub fn start() {
    STATS.lock().unwrap().clear();
    ACTIVE.store(true, Ordering::SeqCst);
}

/// Stop collecting and return the statistics per linear (keyed by weight name).
pub fn finish() -> BTreeMap<String, ActStats> {
    ACTIVE.store(false, Ordering::SeqCst);
    std::mem::take(&mut *STATS.lock().unwrap())
}

pub fn observe(name: &str, x: &[f32]) {
    if let Some(s) = SAMPLER.lock().unwrap().as_mut() {
        s.observe(name, x);
    }
    STATS
        .lock()
        .unwrap()
        .entry(name.to_string())
        .or_default()
        .observe(x);
}
