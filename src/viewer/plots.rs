//! The plots panel (egui_plot): objective per optimization step, distance to goal per MPC
//! iteration, imagination error per horizon step, latent divergence of the compared model.
//!
//! Each plot's legend is a row under it, not egui_plot's legend: that one sits inside the plot
//! area, and in plots this small (seven entries in the objective plot's 120 points of height)
//! it covered the curves.

use egui::{Color32, Rect, RichText, Sense, Stroke, Ui, Vec2};
use egui_plot::{Line, Plot, PlotPoints, VLine};

use super::live::mean_divergence;
use super::{Source, ViewerApp, RUN_COLORS};

/// One legend entry: name, colour, line width.
type Entry = (String, Color32, f32);

/// Points of a per-iteration series.
fn series(v: impl Iterator<Item = f32>) -> PlotPoints<'static> {
    v.enumerate()
        .filter(|(_, y)| y.is_finite())
        .map(|(i, y)| [(i + 1) as f64, y as f64])
        .collect()
}

/// The legend row under a plot: a short line in each entry's colour and width, then its name.
fn legend(ui: &mut Ui, entries: &[Entry]) {
    ui.horizontal_wrapped(|ui| {
        for (name, color, width) in entries {
            let (rect, _) = ui.allocate_exact_size(Vec2::new(16.0, 10.0), Sense::hover());
            ui.painter().line_segment(
                [rect.left_center(), rect.right_center()],
                Stroke::new(*width, *color),
            );
            ui.label(RichText::new(name).small());
            ui.add_space(6.0);
        }
    });
}

/// Draw `lines` (entry, points) and the cursor line `vline` into a plot, its legend under it,
/// and remember where the plot went.
fn plot(
    app: &mut ViewerApp,
    ui: &mut Ui,
    id: &'static str,
    lines: Vec<(Entry, PlotPoints<'static>)>,
    vline: Option<(&str, f64)>,
) {
    let mut entries: Vec<Entry> = lines.iter().map(|(e, _)| e.clone()).collect();
    let r = Plot::new(id).height(120.0).show(ui, |p| {
        for ((name, color, width), pts) in lines {
            p.line(Line::new(name, pts).color(color).width(width));
        }
        if let Some((name, x)) = vline {
            p.vline(VLine::new(name, x).color(Color32::GRAY));
        }
    });
    app.plot_rects.push((id, r.response.rect));
    if let Some((name, _)) = vline {
        entries.push((name.to_string(), Color32::GRAY, 1.0));
    }
    legend(ui, &entries);
    ui.add_space(4.0);
}

pub(super) fn plots(app: &mut ViewerApp, ui: &mut Ui) {
    app.plot_rects.clear();
    ui.heading("Plots");
    let runs = app.shown_runs();
    let cur = app.cursor;
    let Some(t) = app.trace() else { return };
    let labels: Vec<String> = t.runs.iter().map(|r| r.meta.label.clone()).collect();
    let one_run = t.runs.len() < 2;

    let mut objective = Vec::new();
    for &r in &runs {
        let steps = match &app.source {
            Source::Live { session, .. } => session.steps_of(r, cur.iter).map(|s| s.to_vec()),
            Source::Replay { .. } => t.runs[r]
                .iters
                .get(cur.iter)
                .map(|i| i.meta.opt_steps.clone()),
        };
        let Some(steps) = steps else { continue };
        let c = RUN_COLORS[r % 2];
        let lbl = &labels[r];
        objective.push((
            (format!("{lbl} best"), c, 2.0),
            series(steps.iter().map(|s| s.best)),
        ));
        objective.push((
            (format!("{lbl} elite mean"), c.gamma_multiply(0.7), 1.0),
            series(steps.iter().map(|s| s.elite_mean)),
        ));
        objective.push((
            (format!("{lbl} elite max"), c.gamma_multiply(0.4), 1.0),
            series(steps.iter().map(|s| s.elite_max)),
        ));
    }
    let per_run = |f: &dyn Fn(usize) -> Option<PlotPoints<'static>>,
                   name: &dyn Fn(&str) -> String| {
        runs.iter()
            .filter_map(|&r| Some(((name(&labels[r]), RUN_COLORS[r % 2], 2.0), f(r)?)))
            .collect::<Vec<_>>()
    };
    let distance = per_run(
        &|r| Some(series(t.runs[r].iters.iter().map(|i| i.meta.distance))),
        &|l| l.to_string(),
    );
    let imagination = per_run(
        &|r| {
            let it = t.runs[r].iters.get(cur.iter)?;
            Some(
                it.meta
                    .latent_err
                    .iter()
                    .enumerate()
                    .map(|(k, e)| [k as f64, *e as f64])
                    .collect(),
            )
        },
        &|l| l.to_string(),
    );
    let divergence = per_run(
        &|r| {
            Some(series(
                t.runs[r]
                    .iters
                    .iter()
                    .map(|i| mean_divergence(&i.meta).unwrap_or(f32::NAN)),
            ))
        },
        &|l| format!("{l} vs other"),
    );

    let (step_x, iter_x) = ((cur.step + 1) as f64, (cur.iter + 1) as f64);
    ui.label(format!(
        "objective per optimization step (iteration {})",
        cur.iter + 1
    ));
    plot(app, ui, "objective", objective, Some(("step", step_x)));
    ui.label("distance to goal per MPC iteration");
    plot(app, ui, "distance", distance, Some(("iteration", iter_x)));
    ui.label(format!(
        "imagination error per horizon step (iteration {})",
        cur.iter + 1
    ));
    plot(app, ui, "imagination", imagination, None);
    ui.label("latent divergence of the compared model per MPC iteration");
    plot(
        app,
        ui,
        "divergence",
        divergence,
        Some(("iteration", iter_x)),
    );
    if one_run {
        ui.label(RichText::new("(no compared model: plan with --compare SPEC)").weak());
    }
}

impl ViewerApp {
    /// Each plot's id and drawing area in the last frame: tests check with it that nothing,
    /// legends included, covers the curves.
    pub fn plot_rects(&self) -> &[(&'static str, Rect)] {
        &self.plot_rects
    }
}
