//! The report's sections beyond the success tables: alignment of the planning objective
//! with the task (Spearman, scatter), latent divergence vs success, bytes per configuration.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::findings::{rho_ci, EnvCells};
use super::plots;
use super::report::{cell_text, f, Entry};
use crate::quant::QuantSpec;
use crate::Result;

/// Weight bits of a uniform weight-only spec (`None` for float or mixed specs).
fn uniform_bits(q: &str) -> Option<String> {
    let s: QuantSpec = q.parse().ok()?;
    if s.encoder != s.predictor || s.encoder.act.is_some() {
        return None;
    }
    Some(
        s.encoder
            .weight
            .map_or("fp".into(), |w| format!("W{}", w.bits)),
    )
}

/// Alignment (objective vs distance), latent divergence vs success, bytes.
pub(super) fn extra_sections(
    ec: &EnvCells,
    png_dir: &Path,
    link: &Path,
    md: &mut String,
    pngs: &mut Vec<PathBuf>,
) -> Result<()> {
    let env = &ec.env;
    let default: Vec<&Entry> = ec
        .entries
        .iter()
        .copied()
        .filter(|e| e.n() > 0 && e.cell.opt_steps == ec.default_steps && e.default_mpc)
        .collect();
    // Objective vs final distance per bit-width (uniform weight-only cells, all methods).
    let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let _ = writeln!(md, "### {env}: planning objective vs final distance\n");
    let _ = writeln!(
        md,
        "| cell | episodes | Spearman rho | 95% (Fisher z) |\n|---|---|---|---|"
    );
    for e in &default {
        let Some(bits) = uniform_bits(&e.cell.quant) else {
            continue;
        };
        let Some(r) = e.report.as_ref() else {
            continue;
        };
        for ep in &r.episodes {
            groups
                .entry(bits.clone())
                .or_default()
                .push((ep.final_objective as f64, ep.final_state_distance as f64));
        }
        let rho = r.spearman_objective_vs_distance;
        let ci = rho.and_then(|x| rho_ci(x, e.n()));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            e.cell.name,
            e.n(),
            f(rho, 2),
            ci.map_or("-".into(), |[lo, hi]| format!("{lo:+.2} to {hi:+.2}"))
        );
    }
    let mut pooled = String::new();
    for (b, pts) in &groups {
        let (x, y): (Vec<f64>, Vec<f64>) = pts.iter().copied().unzip();
        let _ = write!(
            pooled,
            "{b} {} (n {}); ",
            f(crate::plan::stats::spearman(&x, &y), 2),
            pts.len()
        );
    }
    let _ = writeln!(
        md,
        "\nPooled per bit-width (every granularity and method): {pooled}\n"
    );
    if groups.is_empty() {
        let _ = writeln!(md, "(No weight-only cell has episodes yet, so no plot.)\n");
    } else {
        alignment_png(env, groups, png_dir, link, md, pngs)?;
    }

    // Latent divergence vs success, and bytes per configuration.
    let _ = writeln!(md, "### {env}: latent divergence, bytes and success\n");
    let _ = writeln!(
        md,
        "| cell | latent divergence | linear bytes | / f32 | success |\n|---|---|---|---|---|"
    );
    let mut div_pts: Vec<plots::Points> = Vec::new();
    let mut byte_pts: Vec<plots::Points> = Vec::new();
    for e in &default {
        let Some(r) = e.report.as_ref() else {
            continue;
        };
        let p = e.k() as f64 / e.n() as f64;
        let ratio = r.linear_bytes.map(|[q, fb]| q as f64 / fb.max(1) as f64);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            e.cell.name,
            r.latent_divergence
                .map_or("-".into(), |d| format!("{d:.2e}")),
            r.linear_bytes.map_or("-".into(), |b| b[0].to_string()),
            f(ratio.or((e.cell.quant == "fp").then_some(1.0)), 3),
            cell_text(Some(e))
        );
        let key = if e.cell.quant.contains('a') {
            "weight+activation"
        } else if e.cell.quant.contains("enc=") {
            "one module"
        } else {
            "weight-only"
        };
        let key = format!(
            "{key} ({})",
            if e.cell.quant == "fp" {
                "fp"
            } else {
                &e.cell.method
            }
        );
        let partial = !e.complete();
        if let Some(d) = r.latent_divergence {
            push(&mut div_pts, &key, (d, p, partial));
        }
        if let Some(x) = ratio.or((e.cell.quant == "fp").then_some(1.0)) {
            push(&mut byte_pts, &key, (x, p, partial));
        }
    }
    for (file, title, axes, pts, log) in [
        (
            "divergence",
            "latent divergence vs success",
            ("latent divergence from float", "success rate"),
            &div_pts,
            (true, false),
        ),
        (
            "bytes",
            "linear-layer bytes vs success",
            ("linear bytes / f32", "success rate"),
            &byte_pts,
            (false, false),
        ),
    ] {
        if pts.is_empty() {
            let _ = writeln!(
                md,
                "\n(No cell has a value for {} yet, so no plot.)",
                axes.0
            );
            continue;
        }
        let png = png_dir.join(format!("{file}_{env}.png"));
        plots::scatter(
            &png,
            &format!("{env}: {title}"),
            axes,
            pts,
            log,
            Some((-0.02, 1.02)),
        )?;
        let _ = writeln!(
            md,
            "\n![{title}]({})",
            link.join(png.file_name().unwrap_or_default()).display()
        );
        pngs.push(png);
    }
    let _ = writeln!(md);
    Ok(())
}

fn alignment_png(
    env: &str,
    groups: BTreeMap<String, Vec<(f64, f64)>>,
    png_dir: &Path,
    link: &Path,
    md: &mut String,
    pngs: &mut Vec<PathBuf>,
) -> Result<()> {
    let png = png_dir.join(format!("alignment_{env}.png"));
    let order = ["fp", "W8", "W6", "W4", "W3", "W2"];
    let mut series: Vec<plots::Points> = groups
        .into_iter()
        .map(|(b, pts)| (b, pts.into_iter().map(|(x, y)| (x, y, false)).collect()))
        .collect();
    series.sort_by_key(|(b, _)| order.iter().position(|o| o == b).unwrap_or(9));
    plots::scatter(
        &png,
        &format!("{env}: final objective vs final distance per episode"),
        ("final planning objective", "final state distance"),
        &series,
        (true, false),
        None,
    )?;
    let _ = writeln!(
        md,
        "![alignment]({})\n",
        link.join(png.file_name().unwrap_or_default()).display()
    );
    pngs.push(png);

    Ok(())
}

fn push(v: &mut Vec<plots::Points>, key: &str, p: (f64, f64, bool)) {
    match v.iter_mut().find(|(k, _)| k == key) {
        Some((_, pts)) => pts.push(p),
        None => v.push((key.to_string(), vec![p])),
    }
}
