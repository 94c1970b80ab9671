//! `qwm bench compare`: result files side by side. A file gives one column per device it
//! timed (its adapter, and its CPU-reference rows as a second column), labelled by adapter,
//! backend and commit; rows are benchmarks matched by `family/name [shape]`. Each cell shows
//! the row's throughput and its speed relative to the baseline column (throughput ratio, or
//! baseline time / this time for rows without a throughput). Rows missing from some columns
//! stay in the table (as "-") and are listed, and a
//! benchmark measured at different shapes is reported as such instead of being paired.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::record::{BenchFile, BenchRecord};
use crate::{Error, Result};

/// The shapes of one benchmark, each with the ids of the columns that measured it.
pub type ShapeColumns = Vec<(String, Vec<String>)>;

/// One column: one device of one input file.
#[derive(Clone, Debug)]
pub struct Column {
    /// "A", "B", ...
    pub id: String,
    pub label: String,
    pub device: String,
    pub file: String,
    pub adapter: String,
    pub backend: String,
    pub driver: String,
    pub commit: String,
    pub date: String,
    pub timing: String,
}

/// One benchmark across the columns.
#[derive(Clone, Debug)]
pub struct Row {
    pub key: String,
    pub family: String,
    pub name: String,
    pub shape: String,
    pub cells: Vec<Option<BenchRecord>>,
}

#[derive(Clone, Debug)]
pub struct Comparison {
    pub columns: Vec<Column>,
    pub baseline: usize,
    pub rows: Vec<Row>,
}

fn col_id(i: usize) -> String {
    let mut s = String::new();
    let mut i = i;
    loop {
        s.insert(0, (b'A' + (i % 26) as u8) as char);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    s
}

fn short(commit: &str) -> String {
    match commit.strip_suffix("-dirty") {
        Some(c) => format!("{}-dirty", &c[..c.len().min(7)]),
        None => commit[..commit.len().min(7)].to_string(),
    }
}

impl Comparison {
    /// Build the comparison of `files` (name, contents); `baseline` picks a column by id
    /// ("B"), by file name (its first column) or by a label substring; default: the first.
    pub fn new(files: &[(String, BenchFile)], baseline: Option<&str>) -> Result<Comparison> {
        let mut columns = Vec::new();
        let mut sources: Vec<(usize, String)> = Vec::new();
        for (fi, (fname, f)) in files.iter().enumerate() {
            let mut devices: Vec<&str> = Vec::new();
            for r in &f.results {
                if !devices.contains(&r.device.as_str()) {
                    devices.push(&r.device);
                }
            }
            devices.sort_by_key(|d| (*d != "gpu") as u8);
            for d in devices {
                let id = col_id(columns.len());
                let commit = short(&f.build.git_commit);
                let (adapter, backend, driver) = match (&f.adapter, d) {
                    (Some(a), "gpu") => (
                        a.name.clone(),
                        a.backend.clone(),
                        format!("{} {}", a.driver, a.driver_info).trim().to_string(),
                    ),
                    _ => (
                        format!("CPU: {}", f.system.cpu_model),
                        "cpu".into(),
                        format!("{} threads", f.system.rayon_threads),
                    ),
                };
                let short_adapter = adapter.split(" (").next().unwrap_or(&adapter).to_string();
                let label = format!("{id}: {short_adapter} {backend} @{commit}");
                columns.push(Column {
                    id,
                    label,
                    device: d.to_string(),
                    file: fname.clone(),
                    adapter,
                    backend,
                    driver,
                    commit,
                    date: f.system.date.clone(),
                    timing: if d == "gpu" {
                        f.timing.gpu.clone()
                    } else {
                        f.timing.cpu.clone()
                    },
                });
                sources.push((fi, d.to_string()));
            }
        }
        if columns.is_empty() {
            return Err(Error::Invalid(
                "bench compare: the input files hold no results".into(),
            ));
        }
        let baseline = match baseline {
            None => 0,
            Some(b) => columns
                .iter()
                .position(|c| c.id == b)
                .or_else(|| columns.iter().position(|c| c.file == b))
                .or_else(|| columns.iter().position(|c| c.label.contains(b)))
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "--baseline {b:?} matches no column; columns: {}",
                        columns
                            .iter()
                            .map(|c| format!("{} ({})", c.label, c.file))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?,
        };
        let mut rows: Vec<Row> = Vec::new();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        for (ci, (fi, dev)) in sources.iter().enumerate() {
            for r in files[*fi].1.results.iter().filter(|r| &r.device == dev) {
                let key = r.key();
                let ri = *index.entry(key.clone()).or_insert_with(|| {
                    rows.push(Row {
                        key,
                        family: r.family.clone(),
                        name: r.name.clone(),
                        shape: r.shape.clone(),
                        cells: vec![None; columns.len()],
                    });
                    rows.len() - 1
                });
                // A repeated key within one column keeps the first record.
                if rows[ri].cells[ci].is_none() {
                    rows[ri].cells[ci] = Some(r.clone());
                }
            }
        }
        Ok(Comparison {
            columns,
            baseline,
            rows,
        })
    }

    /// Families in order of first appearance.
    pub fn families(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for r in &self.rows {
            if !v.contains(&r.family) {
                v.push(r.family.clone());
            }
        }
        v
    }

    /// Speed of a cell relative to the baseline column: the ratio of the row's throughput
    /// (this / baseline) when both have it, which stays right where the work was sized per
    /// adapter (the FMA probe); otherwise baseline time / this time.
    pub fn ratio(&self, row: &Row, ci: usize) -> Option<f64> {
        let b = row.cells[self.baseline].as_ref()?;
        let c = row.cells[ci].as_ref()?;
        match (Self::value(row, c).0, Self::value(row, b).0) {
            (Some(x), Some(y)) if y > 0.0 && Self::unit(row) != "ms" => Some(x / y),
            _ => (c.median_s > 0.0).then(|| b.median_s / c.median_s),
        }
    }

    /// The unit a row is shown in: the first throughput any of its cells has.
    pub fn unit(row: &Row) -> &'static str {
        let cells = row.cells.iter().flatten();
        if cells.clone().any(|c| c.gflops.is_some()) {
            "GFLOP/s"
        } else if cells.clone().any(|c| c.gbps.is_some()) {
            "GB/s"
        } else if cells.clone().any(|c| c.rate.is_some()) {
            "rate"
        } else {
            "ms"
        }
    }

    fn value(row: &Row, c: &BenchRecord) -> (Option<f64>, String) {
        match Self::unit(row) {
            "GFLOP/s" => (c.gflops, String::new()),
            "GB/s" => (c.gbps, String::new()),
            "rate" => (c.rate, c.rate_unit.clone().unwrap_or_default()),
            _ => (Some(c.median_s * 1e3), String::new()),
        }
    }

    /// Benchmarks measured at different shapes in different columns: (family/name, the
    /// shapes with the columns that have them).
    pub fn shape_mismatches(&self) -> Vec<(String, ShapeColumns)> {
        let mut by_name: BTreeMap<String, Vec<(String, Vec<String>)>> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        for r in &self.rows {
            let k = format!("{}/{}", r.family, r.name);
            let cols: Vec<String> = r
                .cells
                .iter()
                .zip(&self.columns)
                .filter(|(c, _)| c.is_some())
                .map(|(_, col)| col.id.clone())
                .collect();
            if !by_name.contains_key(&k) {
                order.push(k.clone());
            }
            by_name.entry(k).or_default().push((r.shape.clone(), cols));
        }
        order
            .into_iter()
            .filter_map(|k| {
                let v = by_name.remove(&k)?;
                // Mismatched: two columns each have a shape of this benchmark that the other
                // lacks (one column merely measuring fewer shapes is a missing row, not this).
                let shapes_of = |col: &str| -> Vec<&str> {
                    v.iter()
                        .filter(|(_, cols)| cols.iter().any(|c| c == col))
                        .map(|(s, _)| s.as_str())
                        .collect()
                };
                let cols: Vec<&str> = self.columns.iter().map(|c| c.id.as_str()).collect();
                let mismatched = cols.iter().any(|x| {
                    let sx = shapes_of(x);
                    !sx.is_empty()
                        && cols.iter().any(|y| {
                            let sy = shapes_of(y);
                            !sy.is_empty()
                                && sx.iter().any(|a| !sy.contains(a))
                                && sy.iter().any(|b| !sx.contains(b))
                        })
                });
                mismatched.then_some((k, v))
            })
            .collect()
    }

    /// For each column, the rows it lacks that some other column has.
    pub fn missing(&self) -> Vec<(usize, Vec<&Row>)> {
        (0..self.columns.len())
            .map(|ci| {
                (
                    ci,
                    self.rows
                        .iter()
                        .filter(|r| r.cells[ci].is_none())
                        .collect::<Vec<_>>(),
                )
            })
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }

    /// The markdown report; `charts` are the PNG file names to link, by family.
    pub fn markdown(&self, charts: &BTreeMap<String, String>) -> String {
        let mut s = String::from("# qwm bench compare\n\n");
        s += "| column | adapter | backend | driver | commit | date | timing | file |\n";
        s += "|---|---|---|---|---|---|---|---|\n";
        for c in &self.columns {
            let _ = writeln!(
                s,
                "| {}{} | {} | {} | {} | {} | {} | {} | {} |",
                c.id,
                if self.columns[self.baseline].id == c.id {
                    " (baseline)"
                } else {
                    ""
                },
                c.adapter,
                c.backend,
                c.driver,
                c.commit,
                c.date,
                c.timing,
                c.file
            );
        }
        let _ = writeln!(
            s,
            "\nEach cell: the row's throughput in its unit, then its speed relative to column \
             {} (this throughput / the baseline's). \"-\": not measured in that column.",
            self.columns[self.baseline].id
        );
        for fam in self.families() {
            let _ = writeln!(s, "\n## {fam}\n");
            if let Some(png) = charts.get(&fam) {
                let _ = writeln!(s, "![{fam}]({png})\n");
            }
            s += "| benchmark | shape | unit |";
            for c in &self.columns {
                let _ = write!(s, " {} |", c.id);
            }
            s += "\n|---|---|---|";
            s += &"---|".repeat(self.columns.len());
            s += "\n";
            for r in self.rows.iter().filter(|r| r.family == fam) {
                let mut unit = Self::unit(r).to_string();
                let mut cells = String::new();
                for (ci, c) in r.cells.iter().enumerate() {
                    match c {
                        None => cells += " - |",
                        Some(c) => {
                            let (v, u) = Self::value(r, c);
                            if !u.is_empty() {
                                unit = u;
                            }
                            let v = v.map(sig3).unwrap_or_else(|| "?".into());
                            match self.ratio(r, ci) {
                                Some(x) => {
                                    let _ = write!(cells, " {v} ({}x) |", sig3(x));
                                }
                                None => {
                                    let _ = write!(cells, " {v} |");
                                }
                            }
                        }
                    }
                }
                let _ = writeln!(s, "| {} | {} | {} |{}", r.name, r.shape, unit, cells);
            }
        }
        s += "\n## Unmatched rows\n\n";
        let mm = self.shape_mismatches();
        if mm.is_empty() {
            s += "No benchmark was measured at different shapes.\n";
        } else {
            s += "Measured at different shapes (not paired):\n\n";
            for (k, v) in &mm {
                let parts: Vec<String> = v
                    .iter()
                    .map(|(shape, cols)| format!("[{shape}] in {}", cols.join(", ")))
                    .collect();
                let _ = writeln!(s, "- `{k}`: {}", parts.join("; "));
            }
        }
        let missing = self.missing();
        if missing.is_empty() {
            s += "\nEvery row is in every column.\n";
        } else {
            s += "\nRows a column lacks (kept in the tables above as \"-\"):\n\n";
            for (ci, rows) in missing {
                let c = &self.columns[ci];
                let mut by_fam: Vec<(String, Vec<&str>)> = Vec::new();
                for r in rows {
                    match by_fam.iter_mut().find(|(f, _)| *f == r.family) {
                        Some((_, v)) => v.push(&r.key),
                        None => by_fam.push((r.family.clone(), vec![&r.key])),
                    }
                }
                for (fam, keys) in by_fam {
                    let total = self.rows.iter().filter(|r| r.family == fam).count();
                    if keys.len() == total {
                        let _ = writeln!(s, "- {}: every row of `{fam}` ({total})", c.id);
                    } else {
                        let list: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
                        let _ = writeln!(s, "- {}: {}", c.id, list.join(", "));
                    }
                }
            }
        }
        s
    }

    /// One CSV line per measured cell.
    pub fn csv(&self) -> String {
        let mut s = String::from(
            "key,family,name,shape,column,label,device,adapter,backend,driver,commit,file,\
             median_s,min_s,max_s,stddev_s,samples,gflops,gbps,rate,rate_unit,x_copy,x_peak,\
             x_baseline\n",
        );
        let o = |v: Option<f64>| v.map(|x| format!("{x:e}")).unwrap_or_default();
        for r in &self.rows {
            for (ci, c) in r.cells.iter().enumerate() {
                let Some(c) = c else { continue };
                let col = &self.columns[ci];
                let fields = [
                    r.key.clone(),
                    r.family.clone(),
                    r.name.clone(),
                    r.shape.clone(),
                    col.id.clone(),
                    col.label.clone(),
                    col.device.clone(),
                    col.adapter.clone(),
                    col.backend.clone(),
                    col.driver.clone(),
                    col.commit.clone(),
                    col.file.clone(),
                    format!("{:e}", c.median_s),
                    o(c.min_s),
                    o(c.max_s),
                    o(c.stddev_s),
                    c.samples_s.len().to_string(),
                    o(c.gflops),
                    o(c.gbps),
                    o(c.rate),
                    c.rate_unit.clone().unwrap_or_default(),
                    o(c.x_copy),
                    o(c.x_peak),
                    o(self.ratio(r, ci)),
                ];
                let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                s += &line.join(",");
                s += "\n";
            }
        }
        s
    }
}

fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\n']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

/// Three significant digits, without exponent for everyday magnitudes.
pub fn sig3(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else if a >= 0.001 {
        let d = (-a.log10().floor()) as usize + 2;
        format!("{x:.d$}")
    } else {
        format!("{x:.2e}")
    }
}

/// Read the inputs, compare, and write `compare.md`, `compare.csv` and one PNG per family
/// into `out`. Returns the markdown.
pub fn run(
    inputs: &[std::path::PathBuf],
    baseline: Option<&str>,
    out: &std::path::Path,
) -> Result<String> {
    if inputs.is_empty() {
        return Err(Error::Invalid(
            "bench compare: give at least one result file".into(),
        ));
    }
    let mut files = Vec::new();
    for p in inputs {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| p.display().to_string());
        files.push((name, BenchFile::load(p)?));
    }
    let cmp = Comparison::new(&files, baseline)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut charts = BTreeMap::new();
    for fam in cmp.families() {
        let png = format!(
            "compare_{}.png",
            fam.replace(|c: char| !c.is_alphanumeric(), "_")
        );
        if super::chart::family_png(&cmp, &fam, &out.join(&png))? {
            charts.insert(fam, png);
        }
    }
    let md = cmp.markdown(&charts);
    let p = out.join("compare.md");
    std::fs::write(&p, &md).map_err(|e| Error::io(&p, e))?;
    let p = out.join("compare.csv");
    std::fs::write(&p, cmp.csv()).map_err(|e| Error::io(&p, e))?;
    Ok(md)
}
