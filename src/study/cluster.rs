//! Job files for running a study on many machines: a Slurm `sbatch` array script and a
//! Kubernetes Indexed Job manifest. Each array task / completion index runs
//! `qwm study run STUDY --out DIR --shard auto`, which reads its index from the environment
//! (`work::Shard::parse`), so every task writes disjoint parts into the shared `DIR`.

/// Settings of a cluster job.
#[derive(Clone, Debug)]
pub struct JobOptions {
    /// The study file or preset, as `qwm study run` takes it.
    pub study: String,
    /// The shared study directory (absolute, or relative to the working directory).
    pub out: String,
    /// Number of shards (array tasks / completions).
    pub tasks: usize,
    /// CPU cores per task (each task runs that many single-threaded workers).
    pub cpus: usize,
    /// `cpu`, `gpu` or `auto`.
    pub backend: String,
    /// The qwm binary on the cluster.
    pub qwm: String,
    /// The directory the tasks run in (the repository root: model paths are relative to it).
    pub workdir: String,
    /// Slurm only: partition, time limit, extra `#SBATCH` lines.
    pub partition: Option<String>,
    pub time: Option<String>,
    pub gpus_per_task: usize,
    /// Kubernetes only: container image and the PersistentVolumeClaim holding `workdir`.
    pub image: String,
    pub claim: String,
    pub only: Option<String>,
}

fn quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-=+:,*".contains(c))
        && !s.is_empty()
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn run_args(o: &JobOptions) -> Vec<String> {
    let mut a = vec![
        o.qwm.clone(),
        "study".into(),
        "run".into(),
        o.study.clone(),
        "--out".into(),
        o.out.clone(),
        "--shard".into(),
        "auto".into(),
        "--jobs".into(),
        o.cpus.to_string(),
        "--backend".into(),
        o.backend.clone(),
    ];
    if let Some(p) = &o.only {
        a.push("--only".into());
        a.push(p.clone());
    }
    a
}

/// An `sbatch` script: a job array of `tasks` tasks (`--array=0-(tasks-1)`), each one shard.
pub fn slurm_script(o: &JobOptions) -> String {
    let mut s = String::from("#!/bin/bash\n");
    s += "# qwm study as a Slurm job array (written by `qwm study slurm`; docs/STUDY.md).\n";
    s += "# Each task runs one shard; all write disjoint files into the shared --out directory.\n";
    s += &format!("#SBATCH --job-name=qwm-{}\n", sanitize(&o.study));
    s += &format!("#SBATCH --array=0-{}\n", o.tasks.saturating_sub(1));
    s += "#SBATCH --ntasks=1\n";
    s += &format!("#SBATCH --cpus-per-task={}\n", o.cpus.max(1));
    if o.gpus_per_task > 0 {
        s += &format!("#SBATCH --gpus-per-task={}\n", o.gpus_per_task);
    }
    if let Some(p) = &o.partition {
        s += &format!("#SBATCH --partition={p}\n");
    }
    if let Some(t) = &o.time {
        s += &format!("#SBATCH --time={t}\n");
    }
    s += &format!("#SBATCH --chdir={}\n", o.workdir);
    s += &format!("#SBATCH --output={}/logs/slurm-%A_%a.out\n", o.out);
    s += "set -euo pipefail\n";
    s += &format!("mkdir -p {}/logs\n", quote(&o.out));
    let args: Vec<String> = run_args(o).iter().map(|a| quote(a)).collect();
    s += &format!("exec {}\n", args.join(" "));
    s
}

fn sanitize(s: &str) -> String {
    let base = std::path::Path::new(s)
        .file_stem()
        .map_or(s.to_string(), |x| x.to_string_lossy().into_owned());
    let t: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    t.trim_matches('-').to_string()
}

/// A Kubernetes Indexed Job: `tasks` completions, each one shard; `JOB_COMPLETIONS` tells
/// `--shard auto` the shard count (Kubernetes sets only `JOB_COMPLETION_INDEX`).
pub fn k8s_manifest(o: &JobOptions) -> String {
    let name = format!("qwm-study-{}", sanitize(&o.study));
    let args: Vec<String> = run_args(o)
        .iter()
        .map(|a| format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    let gpu = if o.gpus_per_task > 0 {
        format!("\n                nvidia.com/gpu: {}", o.gpus_per_task)
    } else {
        String::new()
    };
    format!(
        "# qwm study as a Kubernetes Indexed Job (written by `qwm study k8s`; docs/STUDY.md).
# Each completion index runs one shard; all write disjoint files into the shared volume.
apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
  completionMode: Indexed
  completions: {tasks}
  parallelism: {tasks}
  backoffLimit: {backoff}
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: qwm
          image: \"{image}\"
          workingDir: \"{workdir}\"
          command: [{args}]
          env:
            - name: JOB_COMPLETIONS
              value: \"{tasks}\"
          resources:
            requests:
              cpu: \"{cpus}\"
            limits:
              cpu: \"{cpus}\"{gpu}
          volumeMounts:
            - name: study
              mountPath: \"{workdir}\"
      volumes:
        - name: study
          persistentVolumeClaim:
            claimName: \"{claim}\"
",
        tasks = o.tasks,
        backoff = o.tasks * 2,
        image = o.image,
        workdir = o.workdir,
        args = args.join(", "),
        cpus = o.cpus.max(1),
        claim = o.claim,
    )
}
