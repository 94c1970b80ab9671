//! Loss curves as PNG (plotters). Text needs a TrueType font: DejaVu Sans is used when the
//! system has it; without it the curves are drawn without labels rather than failing.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use super::{EpochLog, Phase};
use crate::{Error, Result};

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

pub(crate) fn have_font() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        for p in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("loss plot: {e}"))
}

/// Train (solid) and validation (dashed-looking, lighter) loss per epoch, one colour per
/// phase, log scale; x is the epoch count over the whole run.
pub fn loss_png(path: &Path, epochs: &[EpochLog]) -> Result<()> {
    if epochs.is_empty() {
        return Ok(());
    }
    let text = have_font();
    let vals: Vec<f64> = epochs
        .iter()
        .flat_map(|e| [e.train_loss, e.val_loss])
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = vals
        .iter()
        .cloned()
        .fold(f64::INFINITY, f64::min)
        .max(1e-12);
    let hi = vals.iter().cloned().fold(0.0, f64::max).max(lo * 10.0);
    let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut b = ChartBuilder::on(&root);
    b.margin(12);
    if text {
        b.caption(
            "qwm train: loss per epoch (solid train, light validation)",
            ("sans-serif", 18),
        )
        .x_label_area_size(36)
        .y_label_area_size(70);
    }
    let mut chart = b
        .build_cartesian_2d(
            0f64..epochs.len() as f64 + 1.0,
            (lo * 0.8..hi * 1.2).log_scale(),
        )
        .map_err(err)?;
    if text {
        chart
            .configure_mesh()
            .x_desc("epoch (all phases)")
            .y_desc("MSE")
            .draw()
            .map_err(err)?;
    }
    for (phase, colour) in [
        (Phase::Encoder, BLUE),
        (Phase::Predictor, RED),
        (Phase::Decoder, GREEN),
    ] {
        let pts: Vec<(f64, f64, f64)> = epochs
            .iter()
            .enumerate()
            .filter(|(_, e)| e.phase == phase)
            .map(|(i, e)| ((i + 1) as f64, e.train_loss, e.val_loss))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let s = chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0, p.1)),
                colour.stroke_width(2),
            ))
            .map_err(err)?;
        if text {
            s.label(phase.name())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0, p.2)),
                colour.mix(0.4).stroke_width(2),
            ))
            .map_err(err)?;
        // Markers, so that a phase of one epoch still shows.
        chart
            .draw_series(
                pts.iter()
                    .map(|p| Circle::new((p.0, p.1), 3, colour.filled())),
            )
            .map_err(err)?;
        chart
            .draw_series(
                pts.iter()
                    .map(|p| Circle::new((p.0, p.2), 3, colour.mix(0.4).filled())),
            )
            .map_err(err)?;
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}
