//! `qwm model random`, `qwm model info`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::model::{format, ModelConfig, Weights};

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Write a randomly initialised model file (for benchmarks and tests).
    Random(RandomArgs),
    /// Print a model file's config, parameter counts per module and size.
    Info(InfoArgs),
}

#[derive(Args, Debug)]
pub struct RandomArgs {
    /// `dinowm`, `tiny`, or a JSON file holding a ModelConfig.
    #[arg(long, default_value = "tiny")]
    pub config: String,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Storage dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    pub path: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `dinowm`, `tiny`, or a JSON config file.
pub fn config_arg(s: &str) -> anyhow::Result<ModelConfig> {
    if let Some(c) = ModelConfig::preset(s) {
        return Ok(c);
    }
    let text = crate::io::read_text(std::path::Path::new(s)).map_err(|e| {
        anyhow::anyhow!(
            "--config {s}: not a preset (dinowm, small, tiny) and not a readable file: {e}"
        )
    })?;
    let c: ModelConfig = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("--config {s}: not a valid ModelConfig JSON: {e}"))?;
    c.validate()
        .map_err(|e| anyhow::anyhow!("--config {s}: {e}"))?;
    Ok(c)
}

pub fn run_model(c: ModelCommand) -> anyhow::Result<()> {
    match c {
        ModelCommand::Random(a) => {
            let cfg = config_arg(&a.config)?;
            let dtype = match a.dtype.as_str() {
                "f32" => format::StoreDtype::F32,
                "f16" => format::StoreDtype::F16,
                "bf16" => format::StoreDtype::BF16,
                other => anyhow::bail!("--dtype must be f32, f16 or bf16, got {other}"),
            };
            let w = Weights::random(&cfg, a.seed)?;
            format::save_as(&w, &a.out, dtype)?;
            let bytes = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
            println!(
                "wrote {} ({} config, {} parameters, {:.1} MB, {})",
                a.out.display(),
                cfg.name,
                w.total_params(),
                bytes as f64 / 1e6,
                a.dtype
            );
            Ok(())
        }
        ModelCommand::Info(a) => {
            let i = crate::app::inspect_model_file(&a.path)?;
            let w = &i.weights;
            let (quant_spec, bytes) = (&i.quant, i.file_bytes);
            let (linear_bytes, linear_bytes_f32, total_bytes) =
                (i.linear_bytes, i.linear_bytes_f32, i.total_bytes);
            // The identities eval reports and study cells are stamped with (docs/STUDY.md).
            let (file_crc, planning_crc) = format::identity_crc32s(&a.path)?;
            if a.json {
                let v = serde_json::json!({
                    "quant": quant_spec,
                    "linear_bytes": linear_bytes,
                    "linear_bytes_f32": linear_bytes_f32,
                    "total_bytes": total_bytes,
                    "path": a.path.display().to_string(),
                    "bytes": bytes,
                    "format_version": format::FORMAT_VERSION,
                    "config": w.config,
                    "normalization": w.norm,
                    "params": w.param_counts().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                    "total_params": w.total_params(),
                    "model_crc32": file_crc,
                    "model_planning_crc32": planning_crc,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", info_text(w, &a.path, bytes));
                println!(
                    "quantization: {quant_spec}; linear layers {:.2} MB on the GPU ({:.2} MB in f32,                      ratio {:.4}); whole model {:.2} MB",
                    linear_bytes as f64 / 1e6,
                    linear_bytes_f32 as f64 / 1e6,
                    linear_bytes as f64 / linear_bytes_f32.max(1) as f64,
                    total_bytes as f64 / 1e6
                );
                println!(
                    "CRC-32: file {file_crc}, planning {planning_crc} (all but decoder.*; eval \
                     reports and study cells resume on it)"
                );
            }
            Ok(())
        }
    }
}

pub fn info_text(w: &Weights, path: &std::path::Path, bytes: u64) -> String {
    let c = &w.config;
    let e = &c.encoder;
    let p = &c.predictor;
    let mut s = format!(
        "{}: qwm model format v{}, {:.2} MB\n",
        path.display(),
        format::FORMAT_VERSION,
        bytes as f64 / 1e6
    );
    s += &format!("config '{}':\n", c.name);
    s += &format!(
        "  frames {0}x{0} RGB -> resized {1}x{1} ({4}), patch {2} -> {3} patches\n",
        c.image_size,
        e.resize,
        e.patch,
        c.patches(),
        e.resize_filter.name()
    );
    s += &format!(
        "  encoder: width {}, depth {}, heads {}, mlp {}, layerscale {}, cls {}, eps {:e}\n",
        e.width, e.depth, e.heads, e.mlp, e.layerscale, e.cls_token, e.eps
    );
    s += &format!(
        "  actions: {} x {} -> {}; proprio: {} -> {}; token width {}\n",
        c.frameskip,
        c.action_dim,
        c.action_emb,
        c.proprio_dim,
        c.proprio_emb,
        c.latent_dim()
    );
    s += &format!(
        "  predictor: depth {}, heads {} x {}, mlp {}, num_hist {}, eps {:e}\n",
        p.depth, p.heads, p.head_dim, p.mlp, c.num_hist, p.eps
    );
    match &c.decoder {
        Some(d) => {
            s += &format!(
                "  decoder: channel {}, res blocks {} x {}\n",
                d.channel, d.res_blocks, d.res_channel
            )
        }
        None => s += "  decoder: none\n",
    }
    s += &format!(
        "  normalization: action mean {:?} std {:?}; proprio mean {:?} std {:?}\n",
        w.norm.action_mean, w.norm.action_std, w.norm.proprio_mean, w.norm.proprio_std
    );
    if let Some(src) = &c.source {
        s += "source:\n";
        for (k, v) in src {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            s += &format!("  {k}: {v}\n");
        }
    }
    s += "parameters:\n";
    for (m, n) in w.param_counts() {
        s += &format!("  {m:<16} {n:>12}\n");
    }
    s += &format!("  {:<16} {:>12}\n", "total", w.total_params());
    s
}
