//! `qwm study`: run, status, report, import, and Slurm/Kubernetes job files for a study
//! (docs/STUDY.md). Parsing and printing only; the work is in `crate::study`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::study::{self, cluster, report, work, Backend, Shard, Store, Study};

#[derive(Subcommand, Debug)]
pub enum StudyCommand {
    /// Run or resume a study (a preset: quantwm, smoke; or a TOML study file).
    Run(RunArgs),
    /// Progress per cell and an ETA.
    Status(StatusArgs),
    /// Markdown tables, PNGs and the findings' verdicts from the cell reports.
    Report(ReportArgs),
    /// Two study directories on the same episodes: what each lost and gained.
    Compare(CompareArgs),
    /// Take earlier `qwm eval` reports as the first episodes of the matching cells.
    Import(ImportArgs),
    /// The study's cells and work items.
    List(ListArgs),
    /// Write an sbatch script that runs the study as a Slurm job array.
    Slurm(ClusterArgs),
    /// Write a Kubernetes Indexed Job manifest that runs the study.
    K8s(ClusterArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A preset (quantwm, smoke) or a TOML study file.
    pub study: String,
    /// Study directory (created; an existing one is resumed).
    #[arg(long)]
    pub out: PathBuf,
    /// This process's share: i/N (0-based), or auto (Slurm array / Kubernetes Indexed Job).
    #[arg(long, default_value = "0/1")]
    pub shard: String,
    /// Worker processes (default: the machine's cores); with more than one, each runs
    /// single-threaded.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// auto: a hardware GPU if there is one, else the CPU backend; gpu: any adapter (an error
    /// when none opens); cpu.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Only cells whose names match (comma-separated, `*` wildcard), e.g. 'wall/*'.
    #[arg(long)]
    pub only: Option<String>,
    /// Prefix of progress lines (set for worker processes).
    #[arg(long, hide = true, default_value = "")]
    pub tag: String,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    pub dir: PathBuf,
    /// Workers that will run the rest (divides the ETA).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    pub dir: PathBuf,
    /// Where report.md and the PNGs go (default DIR/report).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the report as this results document (docs/RESULTS.md).
    #[arg(long)]
    pub results: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The baseline study directory.
    pub a: PathBuf,
    /// The study directory compared with it (another setting, backend, build or machine).
    pub b: PathBuf,
    /// Only cells whose names match (comma-separated, `*` wildcard), e.g. 'wall/*'.
    #[arg(long)]
    pub only: Option<String>,
    /// Write the markdown here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    pub study: String,
    #[arg(long)]
    pub out: PathBuf,
    /// `qwm eval` JSON reports.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    pub study: String,
}

#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// A preset or a study file (as `qwm study run` takes it on the cluster).
    pub study: String,
    /// The shared study directory, as the tasks see it.
    #[arg(long)]
    pub out: String,
    /// Number of shards: array tasks or completions.
    #[arg(long)]
    pub tasks: usize,
    /// Cores per task (that many single-threaded workers).
    #[arg(long, default_value_t = 1)]
    pub cpus: usize,
    /// GPUs per task (0: none).
    #[arg(long, default_value_t = 0)]
    pub gpus: usize,
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// The qwm binary as the tasks see it.
    #[arg(long, default_value = "qwm")]
    pub qwm: String,
    /// Working directory of the tasks (the repository root: model paths are relative to it).
    #[arg(long)]
    pub workdir: Option<String>,
    #[arg(long)]
    pub only: Option<String>,
    /// Slurm: partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// Slurm: time limit per task (e.g. 24:00:00).
    #[arg(long)]
    pub time: Option<String>,
    /// Kubernetes: container image with qwm and the repository at --workdir.
    #[arg(long, default_value = "qwm:latest")]
    pub image: String,
    /// Kubernetes: PersistentVolumeClaim mounted at --workdir (shared by every index).
    #[arg(long, default_value = "qwm-study")]
    pub claim: String,
    /// Write the file here instead of stdout.
    #[arg(long)]
    pub file: Option<PathBuf>,
}

pub fn run_study(c: StudyCommand) -> anyhow::Result<()> {
    match c {
        StudyCommand::Run(a) => run(a),
        StudyCommand::Status(a) => status(a),
        StudyCommand::Report(a) => report_cmd(a),
        StudyCommand::Compare(a) => compare(a),
        StudyCommand::Import(a) => import(a),
        StudyCommand::List(a) => list(a),
        StudyCommand::Slurm(a) => cluster_file(a, false),
        StudyCommand::K8s(a) => cluster_file(a, true),
    }
}

fn run(a: RunArgs) -> anyhow::Result<()> {
    let study = Study::load(&a.study)?;
    let shard = Shard::parse(&a.shard, &|k| std::env::var(k).ok())?;
    let backend: Backend = a.backend.parse()?;
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    crate::limits::check_range("--jobs", jobs, 1, crate::limits::MAX_PROCESSES)?;
    let opts = study::RunOptions {
        out: a.out.clone(),
        shard,
        jobs,
        backend,
        only: a.only.clone(),
        tag: a.tag.clone(),
    };
    let exe = std::env::current_exe()?;
    let worker = |k: usize| {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["study", "run", &a.study, "--out"])
            .arg(&a.out)
            .args(["--shard", &format!("{}/{}", shard.index, shard.count)])
            .args(["--jobs", "1", "--backend", &a.backend])
            .args(["--tag", &format!("[job {k}] ")]);
        if let Some(p) = &a.only {
            cmd.args(["--only", p]);
        }
        cmd
    };
    let s = study::run(&study, &a.study, &opts, &worker)?;
    if !a.tag.is_empty() {
        return Ok(()); // a worker: its parent prints the summary
    }
    let done = s
        .manifest
        .cells
        .iter()
        .filter(|c| c.state == "done")
        .count();
    println!(
        "study {} shard {}/{}: {} work items, {} episodes played here{}; {} of {} cells done; \
         status: qwm study status {}",
        study.name,
        shard.index,
        shard.count,
        s.items,
        s.episodes_played,
        if jobs > 1 {
            " (plus the workers' above)"
        } else {
            ""
        },
        done,
        s.manifest.cells.len(),
        a.out.display()
    );
    Ok(())
}

fn hours(s: f64) -> String {
    if s < 3600.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

fn status(a: StatusArgs) -> anyhow::Result<()> {
    crate::limits::check_range("--workers", a.workers, 1, crate::limits::MAX_PROCESSES)?;
    let st = Store::new(&a.dir);
    let Some(m) = st.manifest()? else {
        anyhow::bail!(
            "{} has no study.json: not a study directory (qwm study run STUDY --out DIR)",
            a.dir.display()
        );
    };
    let cells = st.states(&m.study)?;
    let est = study::eta::per_episode(&m.study.cells, &cells);
    println!(
        "study {} ({}), written by qwm {}",
        m.study.name, m.source, m.qwm_version
    );
    println!(
        "{:<34} {:>9} {:>8} {:>9} {:>8} {:>10}",
        "cell", "episodes", "success", "state", "s/ep", "remaining"
    );
    let mut eta = 0.0;
    let mut unknown = 0;
    for ((c, s), est) in m.study.cells.iter().zip(&cells).zip(&est) {
        let running = (c.episodes > 0)
            && work::items(&m.study, Some(&c.name), Shard::ALL)
                .iter()
                .any(|it| study::store::is_locked(&st.item_lock(&c.name, it.range)));
        let left = c.episodes - s.done.min(c.episodes);
        let per = *est;
        match per {
            Some(p) => eta += p * left as f64,
            None => unknown += left,
        }
        println!(
            "{:<34} {:>9} {:>8} {:>9} {:>8} {:>10}",
            c.name,
            format!("{}/{}", s.done, c.episodes),
            if s.done > 0 {
                format!("{:.2}", s.successes as f64 / s.done as f64)
            } else {
                "-".into()
            },
            if running { "running" } else { s.state.as_str() },
            // `~`: estimated from other cells (see study::eta).
            match (s.seconds_per_episode, per) {
                (Some(x), _) => format!("{x:.0}"),
                (None, Some(x)) => format!("~{x:.0}"),
                (None, None) => "-".into(),
            },
            if left == 0 {
                "-".into()
            } else {
                per.map_or("?".into(), |p| hours(p * left as f64))
            }
        );
    }
    let done: usize = cells.iter().map(|c| c.done).sum();
    let total: usize = m.study.cells.iter().map(|c| c.episodes).sum();
    println!(
        "{} of {} cells done, {done} of {total} episodes; ETA {} with {} worker(s) at the \
         measured seconds per episode (~: a cell without episodes counts at the mean of its \
         environment's cells at its CEM steps, else scaled by CEM steps{})",
        cells.iter().filter(|c| c.state == "done").count(),
        cells.len(),
        hours(eta / a.workers.max(1) as f64),
        a.workers.max(1),
        if unknown > 0 {
            format!("; {unknown} episodes have no estimate yet")
        } else {
            String::new()
        }
    );
    Ok(())
}

fn compare(a: CompareArgs) -> anyhow::Result<()> {
    let c = study::compare::compare(&a.a, &a.b, a.only.as_deref())?;
    let mut cmd = format!("qwm study compare {} {}", a.a.display(), a.b.display());
    if let Some(p) = &a.only {
        cmd += &format!(" --only '{p}'");
    }
    let md = format!(
        "<!-- Generated by `{cmd}`; edit the studies, not this file. -->\n\n# Two study runs, \
         episode by episode\n\n{}",
        study::compare::markdown(&c, &a.a, &a.b)
    );
    match &a.out {
        Some(p) => {
            // Regenerating a comparison replaces it; any other file stays.
            if let Ok(old) = std::fs::read_to_string(p) {
                if !old.starts_with("<!-- Generated by `qwm study compare ") {
                    anyhow::bail!(
                        "--out {}: that file exists and is not a `qwm study compare` output; \
                         remove it or choose another path",
                        p.display()
                    );
                }
            }
            study::store::write_atomic(p, &md)?;
            println!("wrote {} ({} cells compared)", p.display(), c.rows.len());
        }
        None => print!("{md}"),
    }
    Ok(())
}

fn report_cmd(a: ReportArgs) -> anyhow::Result<()> {
    let out = a.out.clone().unwrap_or_else(|| a.dir.join("report"));
    // The manifest's states as the report counts them (a stopped run leaves them behind).
    Store::new(&a.dir).refresh_manifest()?;
    let w = report::write(&a.dir, &out, &out)?;
    let md = format!(
        "# qwm study report\n\nGenerated by `qwm study report {}`.\n\n{}",
        a.dir.display(),
        w.markdown
    );
    let p = out.join("report.md");
    study::store::write_atomic(&p, &md)?;
    println!("wrote {} and {} PNGs", p.display(), w.pngs.len());
    if let Some(r) = &a.results {
        let md_dir = r
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let w = report::write(&a.dir, &out, md_dir)?;
        let text = format!(
            "# Results\n\n<!-- Generated by `qwm study report {} --results {}`; edit the \
             study, not this file. -->\n\nEvery number here comes from the cell reports of \
             the study directory `{}` (one `qwm eval`-format JSON per cell, in `cells/`). \
             Earlier hand-written results (the H200 runs, the first Wall model) are in \
             docs/RESULTS_HISTORY.md.\n\n{}",
            a.dir.display(),
            r.display(),
            a.dir.display(),
            w.markdown
        );
        study::store::write_atomic(r, &text)?;
        println!("wrote {}", r.display());
    }
    for f in &w.findings {
        println!("finding {} ({}): {}", f.number, f.claim, f.verdict.text());
    }
    Ok(())
}

fn import(a: ImportArgs) -> anyhow::Result<()> {
    let study = Study::load(&a.study)?;
    let st = Store::new(&a.out);
    st.check_study(&study)?;
    let mut refused = 0;
    for r in &a.reports {
        match work::import(&study, &st, r) {
            Ok(cell) => println!("{} -> cell {cell}", r.display()),
            Err(e) => {
                eprintln!("error: {e}");
                refused += 1;
            }
        }
    }
    st.write_manifest(&a.study, &study)?;
    if refused > 0 {
        anyhow::bail!(
            "{refused} of {} reports were not imported (above); the others were",
            a.reports.len()
        );
    }
    Ok(())
}

fn list(a: ListArgs) -> anyhow::Result<()> {
    let study = Study::load(&a.study)?;
    for c in &study.cells {
        println!(
            "{:<34} {:<10} {:<5} {:>3} CEM steps, MPC cap {:>3}, {} episodes ({})",
            c.name, c.quant, c.method, c.opt_steps, c.max_iter, c.episodes, c.grid
        );
    }
    println!(
        "{} cells, {} work items of up to {} episodes",
        study.cells.len(),
        work::items(&study, None, Shard::ALL).len(),
        study.chunk
    );
    Ok(())
}

fn cluster_file(a: ClusterArgs, k8s: bool) -> anyhow::Result<()> {
    Study::load(&a.study)?; // refuse a bad study before anything is submitted
    a.backend.parse::<Backend>()?;
    {
        use crate::limits::{check_range, MAX_PROCESSES, MAX_STUDY_ITEMS};
        // More tasks than work items would leave tasks idle; the bound only stops nonsense.
        check_range("--tasks", a.tasks, 1, MAX_STUDY_ITEMS)?;
        check_range("--cpus", a.cpus, 1, MAX_PROCESSES)?;
        check_range("--gpus", a.gpus, 0, MAX_PROCESSES)?;
    }
    let workdir = match &a.workdir {
        Some(w) => w.clone(),
        None if k8s => "/work".into(),
        None => std::env::current_dir()?.display().to_string(),
    };
    let o = cluster::JobOptions {
        study: a.study.clone(),
        out: a.out.clone(),
        tasks: a.tasks,
        cpus: a.cpus,
        backend: a.backend.clone(),
        qwm: a.qwm.clone(),
        workdir,
        partition: a.partition.clone(),
        time: a.time.clone(),
        gpus_per_task: a.gpus,
        image: a.image.clone(),
        claim: a.claim.clone(),
        only: a.only.clone(),
    };
    let text = if k8s {
        cluster::k8s_manifest(&o)
    } else {
        // Slurm opens each task's log before the script runs: the directory must exist.
        let logs = std::path::Path::new(&o.workdir).join(&o.out).join("logs");
        if let Err(e) = std::fs::create_dir_all(&logs) {
            eprintln!(
                "note: could not create {} ({e}); create it on the cluster before sbatch",
                logs.display()
            );
        }
        cluster::slurm_script(&o)
    };
    match &a.file {
        Some(p) => {
            study::store::write_atomic(p, &text)?;
            eprintln!("wrote {}", p.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}
