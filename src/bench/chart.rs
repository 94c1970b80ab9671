//! Bar charts of `qwm bench compare` (plotters): one PNG per benchmark family, one group of
//! horizontal bars per benchmark, one colour per column, bar length = speed relative to the
//! baseline column on a log axis (units cancel, so matmuls, mat-vecs and rollouts share an
//! axis, and a 1000x gap between a CPU driver and a datacenter GPU stays readable). Only rows
//! with the baseline and at least one other column are drawn; the markdown table has all.
//! Text needs a TrueType font (DejaVu Sans when present); without one the bars are drawn
//! without labels rather than failing.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use super::compare::{sig3, Comparison, Row};
use crate::{Error, Result};

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn have_font() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        FONT_PATHS.iter().any(|p| {
            std::fs::read(p).is_ok_and(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("bench chart: {e}"))
}

const LABEL_W: u32 = 340;
const BAR_H: u32 = 9;

/// Draw the family's chart into `path`; false (nothing written) when no row has the baseline
/// and another column.
pub fn family_png(cmp: &Comparison, family: &str, path: &Path) -> Result<bool> {
    let ncol = cmp.columns.len();
    let rows: Vec<&Row> = cmp
        .rows
        .iter()
        .filter(|r| r.family == family)
        .filter(|r| {
            r.cells[cmp.baseline].is_some() && r.cells.iter().filter(|c| c.is_some()).count() > 1
        })
        .collect();
    if rows.is_empty() {
        return Ok(false);
    }
    let ratios: Vec<f64> = rows
        .iter()
        .flat_map(|r| (0..ncol).filter_map(|ci| cmp.ratio(r, ci)))
        .filter(|x| x.is_finite() && *x > 0.0)
        .collect();
    let lo = ratios.iter().cloned().fold(1.0f64, f64::min) / 2.0;
    let hi = ratios.iter().cloned().fold(1.0f64, f64::max) * 2.0;
    let text = have_font();
    let group_h = ncol as u32 * BAR_H + 8;
    let legend_h = 18 * ncol as u32 + 12;
    let height = 70 + legend_h + group_h * rows.len() as u32;
    let root = BitMapBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (legend_area, plot_area) = root.split_vertically(legend_h + 30);
    let base = &cmp.columns[cmp.baseline];
    if text {
        legend_area
            .draw(&Text::new(
                format!(
                    "qwm bench compare: {family}, speed relative to {} (log scale)",
                    base.label
                ),
                (10, 6),
                ("sans-serif", 17).into_font(),
            ))
            .map_err(err)?;
        for (ci, c) in cmp.columns.iter().enumerate() {
            let y = 30 + 18 * ci as i32;
            let colour = Palette99::pick(ci).to_rgba();
            legend_area
                .draw(&Rectangle::new([(12, y), (28, y + 12)], colour.filled()))
                .map_err(err)?;
            legend_area
                .draw(&Text::new(
                    format!("{} ({}, {})", c.label, c.driver, c.date),
                    (34, y),
                    ("sans-serif", 13).into_font(),
                ))
                .map_err(err)?;
        }
    }
    let n = rows.len() as f64;
    let mut b = ChartBuilder::on(&plot_area);
    b.margin(10).margin_left(10);
    if text {
        b.x_label_area_size(30).y_label_area_size(LABEL_W);
    }
    let mut chart = b
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..n)
        .map_err(err)?;
    if text {
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_labels(6)
            .x_desc("x baseline (throughput / the baseline's)")
            .x_label_formatter(&|x| format!("{}x", sig3(*x)))
            .draw()
            .map_err(err)?;
    }
    // Row i occupies [n - i - 1, n - i) so the table's order reads top-down.
    let bar = 0.9 / ncol as f64;
    for (i, r) in rows.iter().enumerate() {
        let top = n - i as f64 - 0.05;
        for ci in 0..ncol {
            let Some(x) = cmp.ratio(r, ci) else { continue };
            let colour = Palette99::pick(ci).to_rgba();
            let y1 = top - bar * ci as f64;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(lo, y1 - bar * 0.9), (x.max(lo), y1)],
                    colour.filled(),
                )))
                .map_err(err)?;
        }
        if text {
            let (px, py) = chart.backend_coord(&(lo, n - i as f64 - 0.5));
            let label = format!("{} [{}]", r.name, r.shape);
            let label: String = label.chars().take(52).collect();
            root.draw(&Text::new(
                label,
                (px - LABEL_W as i32 + 4, py - 7),
                ("sans-serif", 12).into_font(),
            ))
            .map_err(err)?;
        }
    }
    // The baseline itself.
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, 0.0), (1.0, n)],
            BLACK.stroke_width(1),
        )))
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(true)
}
