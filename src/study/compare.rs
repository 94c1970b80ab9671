//! `qwm study compare A B`: two study directories side by side on the same episodes. Cells
//! pair by name and episodes by seed, start and goal, so a change of setting (success rule,
//! backend, build, adapter) shows as the episodes it lost and gained rather than as two
//! rates with overlapping intervals. Reads reports only, like `qwm study report`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::path::Path;

use super::report::{self, Entry};
use super::work;
use crate::plan::eval::EvalReport;
use crate::plan::mpc::EpisodeRecord;
use crate::plan::stats::mcnemar_exact;
use crate::{Error, Result};

/// One cell's paired episodes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub cell: String,
    /// Episodes present in both runs.
    pub paired: usize,
    /// Successes among the paired episodes.
    pub a_k: usize,
    pub b_k: usize,
    /// Succeeded in A and failed in B.
    pub lost: usize,
    /// Failed in A and succeeded in B.
    pub gained: usize,
    /// Of the lost, those A solved without a plan (a start that already met the goal).
    pub lost_unplanned: usize,
    /// Plans (MPC iterations) over the paired episodes.
    pub a_plans: usize,
    pub b_plans: usize,
    /// The whole cell: (successes, episodes).
    pub a_all: (usize, usize),
    pub b_all: (usize, usize),
}

impl Row {
    /// The sum of `rows` over their paired episodes (the table's last line).
    fn total(rows: &[Row]) -> Row {
        let mut t = Row::default();
        for r in rows {
            t.paired += r.paired;
            t.a_k += r.a_k;
            t.b_k += r.b_k;
            t.lost += r.lost;
            t.gained += r.gained;
            t.lost_unplanned += r.lost_unplanned;
            t.a_plans += r.a_plans;
            t.b_plans += r.b_plans;
        }
        t.a_all = (t.a_k, t.paired);
        t.b_all = (t.b_k, t.paired);
        t
    }
}

/// What `compare` found.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    pub rows: Vec<Row>,
    /// Config fields that differ (`mpc.success_check`), with A's and B's values, and the
    /// compared cells where they do.
    pub settings: BTreeMap<(String, String, String), Vec<String>>,
    /// Cells with episodes in one directory only.
    pub only_a: Vec<String>,
    pub only_b: Vec<String>,
    /// Cells with episodes in both whose episodes share no seed, start and goal.
    pub no_pair: Vec<String>,
}

/// Leaf fields of a config as `path = value`.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, x, out);
            }
        }
        serde_json::Value::String(s) => {
            out.insert(prefix.into(), s.clone());
        }
        x => {
            out.insert(prefix.into(), x.to_string());
        }
    }
}

fn config_fields(r: &EvalReport) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    if let Ok(v) = serde_json::to_value(&r.config) {
        flatten("", &v, &mut m);
    }
    m
}

/// The same task: equal starts and goals (up to float printing).
fn same_task(a: &EpisodeRecord, b: &EpisodeRecord) -> bool {
    let close = |x: &[f32], y: &[f32]| {
        x.len() == y.len()
            && x.iter()
                .zip(y)
                .all(|(p, q)| (p - q).abs() <= 1e-5 * p.abs().max(1.0))
    };
    close(&a.start, &b.start) && close(&a.goal, &b.goal)
}

fn pair(cell: &str, a: &EvalReport, b: &EvalReport) -> Row {
    let succ = |r: &EvalReport| r.episodes.iter().filter(|e| e.success).count();
    let mut by_seed: HashMap<u64, &EpisodeRecord> = HashMap::new();
    for e in &b.episodes {
        by_seed.entry(e.seed).or_insert(e);
    }
    let mut row = Row {
        cell: cell.into(),
        paired: 0,
        a_k: 0,
        b_k: 0,
        lost: 0,
        gained: 0,
        lost_unplanned: 0,
        a_plans: 0,
        b_plans: 0,
        a_all: (succ(a), a.episodes.len()),
        b_all: (succ(b), b.episodes.len()),
    };
    for ea in &a.episodes {
        let Some(eb) = by_seed.get(&ea.seed).filter(|eb| same_task(ea, eb)) else {
            continue;
        };
        row.paired += 1;
        row.a_k += ea.success as usize;
        row.b_k += eb.success as usize;
        row.a_plans += ea.iterations;
        row.b_plans += eb.iterations;
        if ea.success && !eb.success {
            row.lost += 1;
            row.lost_unplanned += (ea.iterations == 0) as usize;
        }
        row.gained += (!ea.success && eb.success) as usize;
    }
    row
}

/// Pair the cells of study directories `a` and `b` (only those matching `only`, comma-
/// separated `*` patterns, when given).
pub fn compare(a: &Path, b: &Path, only: Option<&str>) -> Result<Comparison> {
    let (_, ea) = report::load(a)?;
    let (_, eb) = report::load(b)?;
    let keep = |e: &Entry| {
        e.report.as_ref().is_some_and(|r| !r.episodes.is_empty())
            && only.is_none_or(|p| work::matches(p, &e.cell.name))
    };
    let ea: Vec<&Entry> = ea.iter().filter(|e| keep(e)).collect();
    let eb: Vec<&Entry> = eb.iter().filter(|e| keep(e)).collect();
    let b_of: HashMap<&str, &Entry> = eb.iter().map(|e| (e.cell.name.as_str(), *e)).collect();
    let a_names: Vec<&str> = ea.iter().map(|e| e.cell.name.as_str()).collect();
    // Environments in order of first appearance, so each one's rows stay together.
    let mut envs: Vec<&str> = Vec::new();
    for e in &ea {
        if !envs.contains(&e.cell.env.as_str()) {
            envs.push(&e.cell.env);
        }
    }
    let mut c = Comparison::default();
    let mut ordered: Vec<&Entry> = ea.clone();
    ordered.sort_by_key(|e| envs.iter().position(|x| *x == e.cell.env));
    for e in ordered {
        // Both reports exist (`keep`) unless B has no episodes in this cell.
        let other = b_of.get(e.cell.name.as_str());
        let (Some(ra), Some(rb)) = (e.report.as_ref(), other.and_then(|o| o.report.as_ref()))
        else {
            c.only_a.push(e.cell.name.clone());
            continue;
        };
        let row = pair(&e.cell.name, ra, rb);
        if row.paired == 0 {
            c.no_pair.push(e.cell.name.clone());
            continue;
        }
        let (fa, fb) = (config_fields(ra), config_fields(rb));
        let keys: std::collections::BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
        for k in keys {
            let (va, vb) = (fa.get(k), fb.get(k));
            if va != vb {
                let v = |x: Option<&String>| x.cloned().unwrap_or_else(|| "(absent)".into());
                let key = (k.clone(), v(va), v(vb));
                c.settings.entry(key).or_default().push(e.cell.name.clone());
            }
        }
        c.rows.push(row);
    }
    c.only_b.extend(
        eb.iter()
            .filter(|e| !a_names.contains(&e.cell.name.as_str()))
            .map(|e| e.cell.name.clone()),
    );
    if c.rows.is_empty() {
        return Err(Error::Invalid(format!(
            "{} and {} have no episodes in common{} (cells pair by name, episodes by seed, \
             start and goal): compare two runs of the same study",
            a.display(),
            b.display(),
            only.map_or(String::new(), |p| format!(
                " in the cells --only {p:?} selects"
            ))
        )));
    }
    Ok(c)
}

fn p_text(p: f64) -> String {
    if p < 0.001 {
        "< 0.001".into()
    } else {
        format!("{p:.3}")
    }
}

fn count(k: usize, n: usize, all: (usize, usize)) -> String {
    if all.1 == n {
        format!("{k}/{n}")
    } else {
        format!("{k}/{n} ({}/{} in all)", all.0, all.1)
    }
}

/// One line of the comparison table.
fn table_row(md: &mut String, name: &str, r: &Row) {
    let _ = writeln!(
        md,
        "| {name} | {} | {} | {} | {} | {} | {} -> {} |",
        count(r.a_k, r.paired, r.a_all),
        count(r.b_k, r.paired, r.b_all),
        r.lost,
        r.gained,
        p_text(mcnemar_exact(r.lost, r.gained)),
        r.a_plans,
        r.b_plans
    );
}

/// The comparison as markdown: what differs, one row per cell and a total, and notes.
pub fn markdown(c: &Comparison, a: &Path, b: &Path) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "A: `{}`, B: `{}`.\n", a.display(), b.display());
    if c.settings.is_empty() {
        md.push_str("The compared cells' settings are identical.\n\n");
    } else {
        md.push_str("Settings that differ (A -> B, in which compared cells):\n\n");
        for ((k, va, vb), cells) in &c.settings {
            let which = if cells.len() == c.rows.len() {
                format!("all {}", cells.len())
            } else if cells.len() <= 12 {
                cells.join(", ")
            } else {
                format!("{} of {}", cells.len(), c.rows.len())
            };
            let _ = writeln!(md, "- `{k}`: {va} -> {vb} ({which})");
        }
        md.push('\n');
    }
    md.push_str("| cell | A | B, same episodes | lost | gained | exact p | plans A -> B |\n");
    md.push_str("|---|---|---|---|---|---|---|\n");
    for r in &c.rows {
        table_row(&mut md, &r.cell, r);
    }
    table_row(
        &mut md,
        &format!("**all {} cells**", c.rows.len()),
        &Row::total(&c.rows),
    );
    md.push('\n');
    md.push_str(
        "Episodes pair by seed, start and goal. Lost: succeeded in A, failed in B; gained: the \
         reverse. Exact p: two-sided exact McNemar test on the lost and gained episodes (could \
         B succeed as often as A on these episodes?). Plans: MPC iterations over the paired \
         episodes.\n",
    );
    let unplanned: Vec<String> = c
        .rows
        .iter()
        .filter(|r| r.lost_unplanned > 0)
        .map(|r| format!("{} {}", r.cell, r.lost_unplanned))
        .collect();
    if !unplanned.is_empty() {
        let _ = writeln!(
            md,
            "\nLost episodes that A solved without a plan (the start already met the goal): {}.",
            unplanned.join(", ")
        );
    }
    for (what, cells) in [
        ("Cells with episodes only in A", &c.only_a),
        ("Cells with episodes only in B", &c.only_b),
        (
            "Cells whose episodes share no seed, start and goal",
            &c.no_pair,
        ),
    ] {
        if !cells.is_empty() {
            let _ = writeln!(md, "\n{what}: {}.", cells.join(", "));
        }
    }
    md
}
