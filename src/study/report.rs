//! `qwm study report`: markdown tables (Wilson 95% intervals) and PNGs from a study's cell
//! reports and manifest alone (no model, no compute), with the six findings judged
//! (`findings`). docs/RESULTS.md is this report written with `--results`.
//!
//! The output holds no timestamps or timings other than the reports' own, so regenerating it
//! from the same reports gives the same text.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::findings::{self, EnvCells};
use super::plots::{self, Rate, Series};
use super::spec::{dinowm_defaults, Cell};
use super::store::{self, CellState, Manifest, Store};
use crate::plan::eval::EvalReport;
use crate::plan::stats::wilson95;
use crate::{Error, Result};

/// One cell with its state and report (if it has episodes).
pub struct Entry {
    pub cell: Cell,
    pub state: CellState,
    pub report: Option<EvalReport>,
    /// The cell uses the environment's default MPC cap.
    pub default_mpc: bool,
}

impl Entry {
    pub fn n(&self) -> usize {
        self.report.as_ref().map_or(0, |r| r.finished)
    }
    pub fn k(&self) -> usize {
        self.report
            .as_ref()
            .map_or(0, |r| r.episodes.iter().filter(|e| e.success).count())
    }
    pub fn complete(&self) -> bool {
        self.n() == self.cell.episodes
    }
    pub fn rate(&self) -> Option<Rate> {
        (self.n() > 0).then(|| {
            let [lo, hi] = wilson95(self.k(), self.n());
            Rate {
                p: self.k() as f64 / self.n() as f64,
                lo,
                hi,
                partial: !self.complete(),
            }
        })
    }
}

/// The manifest and every cell with its report.
pub fn load(dir: &Path) -> Result<(Manifest, Vec<Entry>)> {
    let st = Store::new(dir);
    let m = st.manifest()?.ok_or_else(|| {
        Error::Invalid(format!(
            "{} has no study.json: not a study directory (qwm study run STUDY --out {} \
             creates one)",
            dir.display(),
            dir.display()
        ))
    })?;
    let mut entries = Vec::new();
    for cell in &m.study.cells {
        // From the parts, as `study status` does: a run rewrites the manifest when it
        // starts and after each finished item, so while one runs its states lag the parts.
        let state = st.state(cell)?;
        let mut report = st.report(&cell.name)?;
        // A worker rebuilds the cell report when it finishes a work item; episodes played
        // since are in the parts only. Rebuild from them so the report counts them.
        if state.prefix > report.as_ref().map_or(0, |r| r.finished) {
            report = st.merge(cell, None)?;
        }
        entries.push(Entry {
            cell: cell.clone(),
            state,
            report,
            default_mpc: cell.max_iter == dinowm_defaults(&cell.env).1
                || m.study.planner.max_iter == Some(cell.max_iter),
        });
    }
    Ok((m, entries))
}

pub(super) fn f(x: Option<f64>, prec: usize) -> String {
    x.filter(|v| v.is_finite())
        .map_or("-".into(), |v| format!("{v:.prec$}"))
}

/// The `../`-path from directory `from` to `to` (both relative to one working directory).
pub fn relative(from: &Path, to: &Path) -> PathBuf {
    let abs = |p: &Path| -> Vec<std::ffi::OsString> {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .map(|c| c.as_os_str().to_os_string())
            .collect()
    };
    let (a, b) = (abs(from), abs(to));
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut r = PathBuf::new();
    for _ in common..a.len() {
        r.push("..");
    }
    for c in &b[common..] {
        r.push(c);
    }
    r
}

fn table_row(e: &Entry) -> String {
    let r = e.report.as_ref();
    let ratio = r
        .and_then(|r| r.linear_bytes)
        .map(|[q, f]| q as f64 / f.max(1) as f64)
        .or((e.cell.quant == "fp").then_some(1.0));
    let rate = e.rate();
    format!(
        "| {} | {} | {} | {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} |",
        e.cell.name,
        e.cell.quant,
        if e.cell.quant == "fp" {
            "-"
        } else {
            &e.cell.method
        },
        e.cell.opt_steps,
        e.n(),
        e.cell.episodes,
        rate.map_or("-".into(), |r| format!("{:.2}", r.p)),
        rate.map_or("-".into(), |r| format!("{:.2}-{:.2}", r.lo, r.hi)),
        f(r.map(|r| r.mean_state_dist), 2),
        f(r.and_then(|r| r.spearman_objective_vs_distance), 2),
        r.and_then(|r| r.latent_divergence)
            .map_or("-".into(), |d| format!("{d:.2e}")),
        f(ratio, 3),
        f(r.and_then(|r| r.plan_seconds_median), 2),
        r.map_or("-".into(), |r| r.config.backend.clone()),
    )
}

const HEADER: &str = "| cell | quant | method | CEM steps | episodes | success | Wilson 95% | mean dist | Spearman | latent div | linear bytes / f32 | s/plan | backend |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";

pub(super) fn cell_text(e: Option<&Entry>) -> String {
    match e {
        None => "not in study".into(),
        Some(e) => match e.rate() {
            None => format!("0/{}", e.cell.episodes),
            Some(r) => format!(
                "{:.2} [{:.2}-{:.2}] {}{}",
                r.p,
                r.lo,
                r.hi,
                e.n(),
                if e.complete() { "" } else { " (stopped)" }
            ),
        },
    }
}

/// A table with one row per label and one column per cell lookup, plus its PNG.
/// Adds a table whose columns are the alternatives compared (modules, activation
/// granularities) only when the study has cells in two of them: a method run only on both
/// modules or only with static ranges has nothing to compare there, and its cells are in the
/// methods table.
fn push_comparison<'a>(blocks: &mut Vec<(String, Block<'a>)>, file: String, b: Block<'a>) {
    let in_study = b
        .cells
        .iter()
        .filter(|col| col.iter().any(|e| e.is_some()))
        .count();
    if in_study >= 2 {
        blocks.push((file, b));
    }
}

struct Block<'a> {
    title: String,
    x_label: &'a str,
    rows: Vec<String>,
    cols: Vec<String>,
    /// `cells[col][row]`.
    cells: Vec<Vec<Option<&'a Entry>>>,
}

impl Block<'_> {
    fn markdown(&self, s: &mut String) {
        let _ = writeln!(s, "| {} | {} |", self.x_label, self.cols.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(self.cols.len()));
        for (ri, r) in self.rows.iter().enumerate() {
            let vals: Vec<String> = self.cells.iter().map(|c| cell_text(c[ri])).collect();
            let _ = writeln!(s, "| {r} | {} |", vals.join(" | "));
        }
    }

    fn png(&self, path: &Path) -> Result<()> {
        let series: Vec<Series> = self
            .cols
            .iter()
            .zip(&self.cells)
            .filter(|(_, c)| c.iter().any(|e| e.is_some()))
            .map(|(name, c)| Series {
                name: name.clone(),
                points: c.iter().map(|e| e.and_then(|e| e.rate())).collect(),
            })
            .collect();
        plots::categories(path, &self.title, self.x_label, &self.rows, &series)
    }
}

/// What `write` produced.
pub struct Written {
    pub markdown: String,
    pub pngs: Vec<PathBuf>,
    pub findings: Vec<findings::Finding>,
}

/// Write the report's PNGs into `png_dir` and return the markdown, whose image links are
/// relative to `md_dir` (where the markdown will be saved).
pub fn write(dir: &Path, png_dir: &Path, md_dir: &Path) -> Result<Written> {
    let (m, entries) = load(dir)?;
    store::io(png_dir, std::fs::create_dir_all(png_dir))?;
    let link = relative(md_dir, png_dir);
    let mut pngs = Vec::new();
    let mut md = String::new();
    let mut envs: Vec<String> = Vec::new();
    for e in &entries {
        if !envs.contains(&e.cell.env) {
            envs.push(e.cell.env.clone());
        }
    }
    let env_cells: Vec<EnvCells> = envs
        .iter()
        .map(|env| EnvCells {
            env: env.clone(),
            entries: entries.iter().filter(|e| &e.cell.env == env).collect(),
            default_steps: m.study.planner.opt_steps.unwrap_or(dinowm_defaults(env).0),
        })
        .collect();
    let verdicts = findings::judge(&env_cells);

    // Progress.
    let total: usize = entries.iter().map(|e| e.cell.episodes).sum();
    let done: usize = entries.iter().map(|e| e.state.done).sum();
    let cells_done = entries.iter().filter(|e| e.state.state == "done").count();
    let p = &m.study.planner;
    let _ = writeln!(
        md,
        "Study `{}` ({}): {} cells, {} of them done; {done} of {total} episodes finished.\n",
        m.study.name,
        m.study.description,
        entries.len(),
        cells_done
    );
    let _ = writeln!(
        md,
        "Settings: planner {} ({} samples, top {}, horizon {}, {} model steps executed per \
         plan), CEM steps and MPC cap per cell (DINO-WM: 10 and 50 for Wall and PointMaze), \
         success checked {}, evaluation episodes `sub_seed(99, i)`, static activation ranges \
         calibrated on {} float-planner episodes `sub_seed(7, i)`. Intervals are Wilson 95%; a \
         cell marked (stopped) has only its first episodes.\n",
        p.name,
        p.samples,
        p.topk,
        p.horizon,
        p.n_taken,
        match p.success_check {
            crate::plan::SuccessCheck::EveryStep =>
                "at the start and after every env step, mid-plan included (qwm's rule before \
                 2026-12-04; DINO-WM checks only after each executed plan, which gives \
                 quantized cells lower rates: docs/ENVIRONMENTS.md, \"Success check\"; \
                 quantized rates here are upper bounds)",
            crate::plan::SuccessCheck::AfterPlan => "after each executed plan, as DINO-WM",
        },
        m.study.calib_episodes
    );

    // Findings.
    let _ = writeln!(md, "## The paper's findings on our tasks\n");
    for fnd in &verdicts {
        let _ = writeln!(
            md,
            "{}. **{}: {}.**",
            fnd.number,
            fnd.claim,
            fnd.verdict.text().to_uppercase()
        );
        for l in &fnd.evidence {
            // Environment lines, then their evidence one level deeper.
            let indent = if l.starts_with("  ") { "     " } else { "   " };
            let _ = writeln!(md, "{indent}- {}", l.trim_start());
        }
    }
    let _ = writeln!(
        md,
        "\nRules (src/study/findings.rs): a difference between two cells counts when its \
         Newcombe 95% interval excludes 0; \"no difference\" needs complete cells; collapse \
         means a Wilson interval entirely below half of float's rate; Spearman intervals use \
         Fisher's z. Per environment, then combined: environments that decide must agree.\n"
    );

    // How far the cells got.
    let unfinished: Vec<&Entry> = entries.iter().filter(|e| e.state.state != "done").collect();
    let _ = writeln!(md, "## Progress\n");
    if unfinished.is_empty() {
        let _ = writeln!(md, "Every cell is done.\n");
    } else {
        let mut by_state: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for e in &unfinished {
            by_state
                .entry(e.state.state.as_str())
                .or_default()
                .push(format!(
                    "`{}` {}/{}",
                    e.cell.name, e.state.done, e.cell.episodes
                ));
        }
        for (st, v) in by_state {
            let _ = writeln!(md, "- {st} ({}): {}", v.len(), v.join(", "));
        }
        let _ = writeln!(
            md,
            "\nThe study resumes from here: `qwm study run {} --out DIR` (any machine; \
             `--backend gpu` on a GPU).\n",
            m.source
        );
    }

    for ec in &env_cells {
        let env = &ec.env;
        let _ = writeln!(md, "## {env}\n");
        let mut blocks: Vec<(String, Block)> = Vec::new();
        let methods: Vec<String> = {
            let mut v: Vec<String> = ec
                .entries
                .iter()
                .filter(|e| e.cell.quant != "fp")
                .map(|e| e.cell.method.clone())
                .collect();
            // RTN (the paper's baseline) first, then the others by name.
            v.sort_by_key(|m| (m != "rtn", m.clone()));
            v.dedup();
            v
        };
        let bits = ["fp", "8", "6", "4", "3", "2"];
        for meth in &methods {
            let cols: Vec<(String, String)> = [
                ("per-channel", ""),
                ("g128", "g128"),
                ("g64", "g64"),
                ("g32", "g32"),
            ]
            .iter()
            .map(|(n, g)| (n.to_string(), g.to_string()))
            .filter(|(_, g)| {
                bits.iter().any(|b| {
                    ec.get(&format!("w{b}{g}"), meth, ec.default_steps)
                        .is_some()
                })
            })
            .collect();
            // Only the bit-widths the method was run at (fp is the reference row).
            let bits: Vec<&str> = bits
                .iter()
                .copied()
                .filter(|b| {
                    *b == "fp"
                        || cols.iter().any(|(_, g)| {
                            ec.get(&format!("w{b}{g}"), meth, ec.default_steps)
                                .is_some()
                        })
                })
                .collect();
            blocks.push((
                format!("weight_bits_{env}_{meth}"),
                Block {
                    title: format!("{env}: success vs weight bits ({meth}, weight-only)"),
                    x_label: "weight bits",
                    rows: bits.iter().map(|b| b.to_string()).collect(),
                    cells: cols
                        .iter()
                        .map(|(_, g)| {
                            bits.iter()
                                .map(|b| {
                                    if *b == "fp" {
                                        ec.at("fp")
                                    } else {
                                        ec.get(&format!("w{b}{g}"), meth, ec.default_steps)
                                    }
                                })
                                .collect()
                        })
                        .collect(),
                    cols: cols.into_iter().map(|c| c.0).collect(),
                },
            ));
            let mb = ["4", "3"];
            let mods = [
                ("encoder only", "enc=w{b},pred=fp"),
                ("predictor only", "enc=fp,pred=w{b}"),
                ("both", "w{b}"),
            ];
            push_comparison(
                &mut blocks,
                format!("modules_{env}_{meth}"),
                Block {
                    title: format!("{env}: which module is quantized ({meth})"),
                    x_label: "weight bits",
                    rows: mb.iter().map(|b| format!("W{b}")).collect(),
                    cols: mods.iter().map(|m| m.0.to_string()).collect(),
                    cells: mods
                        .iter()
                        .map(|(_, pat)| {
                            mb.iter()
                                .map(|b| ec.get(&pat.replace("{b}", b), meth, ec.default_steps))
                                .collect()
                        })
                        .collect(),
                },
            );
            let acts = [
                ("W8A8", "w8a8"),
                ("W6A6", "w6a6"),
                ("W4A8", "w4a8"),
                ("W4A4", "w4a4"),
            ];
            push_comparison(
                &mut blocks,
                format!("activations_{env}_{meth}"),
                Block {
                    title: format!("{env}: activation granularity ({meth})"),
                    x_label: "weights / activations",
                    rows: acts.iter().map(|a| a.0.to_string()).collect(),
                    cols: vec!["per-tensor static".into(), "per-token dynamic".into()],
                    cells: ["", "t"]
                        .iter()
                        .map(|t| {
                            acts.iter()
                                .map(|a| ec.get(&format!("{}{t}", a.1), meth, ec.default_steps))
                                .collect()
                        })
                        .collect(),
                },
            );
        }
        if methods.len() > 1 {
            blocks.push((format!("methods_{env}"), methods_block(ec, &methods)));
        }
        let mut steps: Vec<usize> = ec.entries.iter().map(|e| e.cell.opt_steps).collect();
        steps.sort();
        steps.dedup();
        let sq = ["fp", "w4", "w3"];
        blocks.push((
            format!("cem_steps_{env}"),
            Block {
                title: format!("{env}: success vs CEM optimization steps (rtn)"),
                x_label: "CEM steps",
                rows: steps.iter().map(|s| s.to_string()).collect(),
                cols: sq.iter().map(|q| q.to_string()).collect(),
                cells: sq
                    .iter()
                    .map(|q| steps.iter().map(|s| ec.get(q, "rtn", *s)).collect())
                    .collect(),
            },
        ));
        for (file, b) in &blocks {
            if b.cells.iter().all(|c| c.iter().all(|e| e.is_none())) {
                continue; // the study has no such cells
            }
            let _ = writeln!(md, "### {}\n", b.title);
            b.markdown(&mut md);
            let mut with_data: Vec<&str> = b
                .cells
                .iter()
                .flatten()
                .filter_map(|e| e.filter(|e| e.n() > 0).map(|e| e.cell.name.as_str()))
                .collect();
            with_data.sort();
            with_data.dedup();
            let with_data = with_data.len();
            if with_data < 2 {
                let _ = writeln!(
                    md,
                    "\n(Fewer than two of these cells have episodes: no plot yet.)\n"
                );
                continue;
            }
            let png = png_dir.join(format!("{file}.png"));
            b.png(&png)?;
            let _ = writeln!(
                md,
                "\n![{}]({})\n",
                b.title,
                link.join(format!("{file}.png")).display()
            );
            pngs.push(png);
        }
        if methods.len() > 1 {
            methods_standing(ec, &methods, &mut md);
            quantize_cost(ec, &methods, &mut md);
        }
        super::report_extra::extra_sections(ec, png_dir, &link, &mut md, &mut pngs)?;
        let _ = writeln!(
            md,
            "### Every cell of {env}\n\n{HEADER}{}",
            ec.entries
                .iter()
                .map(|e| table_row(e) + "\n")
                .collect::<String>()
        );
    }
    Ok(Written {
        markdown: md,
        pngs,
        findings: verdicts,
    })
}

/// The specs that separate the PTQ methods (issue 18's grid): label, quant spec.
const METHOD_SPECS: [(&str, &str); 5] = [
    ("W4", "w4"),
    ("W4 g32", "w4g32"),
    ("W3", "w3"),
    ("W8A8", "w8a8"),
    ("W4A8", "w4a8"),
];

/// The PTQ methods side by side on the specs that separate them (issue 18's grid).
fn methods_block<'a>(ec: &EnvCells<'a>, methods: &[String]) -> Block<'a> {
    Block {
        title: format!("{}: PTQ methods", ec.env),
        x_label: "spec",
        rows: METHOD_SPECS.iter().map(|s| s.0.to_string()).collect(),
        cols: methods.to_vec(),
        cells: methods
            .iter()
            .map(|m| {
                METHOD_SPECS
                    .iter()
                    .map(|s| ec.get(s.1, m, ec.default_steps))
                    .collect()
            })
            .collect(),
    }
}

/// Which method keeps planning working at which spec: each method's cell against float and
/// against RTN at the same spec, by the findings' rules (`findings::standing`).
fn methods_standing(ec: &EnvCells, methods: &[String], md: &mut String) {
    let fp = ec.at("fp");
    let triple = |e: &Entry| (e.k(), e.n(), e.complete());
    let _ = writeln!(
        md,
        "### {env}: which method keeps planning working\n\nEach method's cell against float \
         ({}) and against RTN at the same spec: above / below when the difference's Newcombe \
         95% interval excludes 0, level when it includes 0 and both cells are complete, \
         undecided when it includes 0 and a cell is unfinished.\n\n| spec | method | success | \
         vs float | vs RTN |\n|---|---|---|---|---|",
        findings::cite(fp, "float"),
        env = ec.env
    );
    let show = |s: Option<(findings::Standing, [f64; 3])>| {
        s.map_or("-".to_string(), |(s, [d, lo, hi])| {
            format!("{} ({d:+.2} [{lo:+.2} to {hi:+.2}])", s.text())
        })
    };
    let mut summary = Vec::new();
    for (label, q) in METHOD_SPECS {
        let rtn = ec.get(q, "rtn", ec.default_steps);
        let (mut kept, mut lost, mut open) = (Vec::new(), Vec::new(), Vec::new());
        for m in methods {
            let Some(e) = ec.get(q, m, ec.default_steps).filter(|e| e.n() > 0) else {
                continue;
            };
            let vs_fp = fp.and_then(|f| findings::standing(triple(e), triple(f)));
            let vs_rtn = rtn
                .filter(|_| m != "rtn")
                .and_then(|r| findings::standing(triple(e), triple(r)));
            let _ = writeln!(
                md,
                "| {label} | {m} | {} | {} | {} |",
                findings::cite(Some(e), m),
                show(vs_fp),
                show(vs_rtn)
            );
            let mut name = format!("{m} {:.2}", e.k() as f64 / e.n() as f64);
            if !e.complete() {
                name += &format!(" ({} of {} episodes)", e.n(), e.cell.episodes);
            }
            match vs_fp.map(|s| s.0) {
                Some(findings::Standing::Above | findings::Standing::Level) => kept.push(name),
                Some(findings::Standing::Below) => lost.push(name),
                _ => open.push(name),
            }
        }
        let mut parts = Vec::new();
        for (what, v) in [
            ("keeps planning (level with float)", kept),
            ("below float", lost),
            ("undecided", open),
        ] {
            if !v.is_empty() {
                parts.push(format!("{what}: {}", v.join(", ")));
            }
        }
        if !parts.is_empty() {
            summary.push(format!("- **{label}**: {}", parts.join("; ")));
        }
    }
    let _ = writeln!(md, "\n{}\n", summary.join("\n"));
}

/// What each method costs to apply: the seconds its quantization took on load (given the
/// captured calibration inputs), median over the cells that recorded it.
fn quantize_cost(ec: &EnvCells, methods: &[String], md: &mut String) {
    let _ = writeln!(
        md,
        "### {}: quantization cost per method

Seconds the method took to quantize the \
         model on load, calibration inputs already captured (median over its cells; cells \
         written before the cost was kept have none).

| method | cells with a cost | \
         median s | max s |\n|---|---|---|---|",
        ec.env
    );
    for m in methods {
        let mut v: Vec<f64> = ec
            .entries
            .iter()
            .filter(|e| &e.cell.method == m && e.cell.quant != "fp")
            .filter_map(|e| e.report.as_ref().and_then(|r| r.quantize_seconds))
            .collect();
        v.sort_by(f64::total_cmp);
        let med = (!v.is_empty()).then(|| v[v.len() / 2]);
        let _ = writeln!(
            md,
            "| {m} | {} | {} | {} |",
            v.len(),
            f(med, 2),
            f(v.last().copied(), 2)
        );
    }
    let _ = writeln!(md);
}
