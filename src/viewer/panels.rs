//! The viewer's panels: top bar (live controls, compare, export), timeline, info, plots, and
//! the per-run columns (scene with paths over the environment render; imagination: real vs
//! decoded imagined frame per horizon step, with the latent error, and the goal).

use super::live::LiveSession;
use super::{Cursor, Source, ViewerApp, RUN_COLORS};
use crate::trace::Trace;
use egui::{Align2, Color32, FontId, Pos2, Rect, RichText, Sense, Shape, Stroke, Ui, Vec2};

pub(super) fn top_bar(app: &mut ViewerApp, ui: &mut Ui) {
    ui.horizontal_wrapped(|ui| {
        ui.heading("qwm view");
        let mut restart = None;
        match &mut app.source {
            Source::Replay { trace, dir } => {
                ui.label(format!(
                    "trace {} ({} seed {}, {} runs)",
                    dir.display(),
                    trace.meta.env,
                    trace.meta.seed,
                    trace.runs.len()
                ));
            }
            Source::Live {
                session,
                form,
                form_compare,
                ..
            } => {
                ui.label(format!("live: {}", session.request.env));
                let running = session.running();
                let paused = session.control.is_paused();
                if ui
                    .add_enabled(
                        running,
                        egui::Button::new(if paused { "Resume" } else { "Pause" }),
                    )
                    .clicked()
                {
                    if paused {
                        session.control.resume();
                    } else {
                        session.control.pause();
                    }
                }
                if ui
                    .add_enabled(running, egui::Button::new("Step iteration"))
                    .on_hover_text("run to the end of the next MPC iteration, then pause")
                    .clicked()
                {
                    session.control.step_iteration();
                }
                if ui.add_enabled(running, egui::Button::new("Stop")).clicked() {
                    session.control.stop();
                }
                ui.separator();
                ui.label("seed");
                ui.add(egui::DragValue::new(&mut form.seed));
                ui.label("quant");
                ui.add(egui::TextEdit::singleline(&mut form.quant).desired_width(70.0));
                ui.label("compare");
                ui.add(egui::TextEdit::singleline(form_compare).desired_width(70.0))
                    .on_hover_text("a second quantization spec (empty: none)");
                if ui.button("Re-run").clicked() {
                    let mut req = form.clone();
                    req.compare = Some(form_compare.trim().to_string()).filter(|s| !s.is_empty());
                    restart = Some(req);
                }
                ui.label(live_status(session));
            }
        }
        if let Some(req) = restart {
            app.restart(req);
        }
        ui.separator();
        let two = app.trace().is_some_and(|t| t.runs.len() > 1);
        ui.add_enabled(two, egui::Checkbox::new(&mut app.compare_shown, "compare"))
            .on_hover_text("show the second model's column");
        if ui
            .button("PNG")
            .on_hover_text("save the view as a PNG")
            .clicked()
        {
            let p = super::export::next_free("qwm-view", "png");
            let ctx = ui.ctx().clone();
            app.request_png(&ctx, p, false);
        }
        if ui
            .button("GIF")
            .on_hover_text("save the episode as an animated GIF")
            .clicked()
        {
            let p = super::export::next_free("qwm-episode", "gif");
            app.status = match app.trace().map(|t| super::export::episode_gif(t, &p)) {
                Some(Ok(())) => format!("saved {}", p.display()),
                Some(Err(e)) => e.to_string(),
                None => "nothing to export yet".into(),
            };
        }
        if !app.status.is_empty() {
            ui.label(RichText::new(&app.status).weak());
        }
    });
}

fn live_status(s: &LiveSession) -> String {
    let mut out = Vec::new();
    for (r, d) in s.done.iter().enumerate() {
        let n = s.trace.as_ref().map_or(0, |t| t.runs[r].iters.len());
        out.push(match d {
            None if s.control.is_paused() => format!("run {r}: paused after {n}"),
            None => format!("run {r}: planning iteration {}", n + 1),
            Some(Ok(true)) => format!("run {r}: reached the goal in {n}"),
            Some(Ok(false)) => format!("run {r}: not reached after {n}"),
            Some(Err(e)) => format!("run {r}: {e}"),
        });
    }
    if s.trace.is_none() {
        out.push("loading the model...".into());
    }
    out.join("; ")
}

impl ViewerApp {
    fn restart(&mut self, req: super::live::LiveRequest) {
        if let Source::Live {
            session, job, wake, ..
        } = &mut self.source
        {
            session.stop();
            *session = LiveSession::start(job.clone(), req.clone(), wake.clone());
            self.compare_shown = req.compare.is_some();
            self.cursor = Cursor::default();
            self.follow = true;
            self.textures.clear();
            self.status.clear();
        }
    }
}

pub(super) fn timeline(app: &mut ViewerApp, ui: &mut Ui) {
    let n = app.iterations();
    ui.horizontal(|ui| {
        if ui
            .button(if app.playing { "Pause" } else { "Play" })
            .on_hover_text("space")
            .clicked()
        {
            app.playing = !app.playing;
            app.follow = false;
        }
        if ui
            .button("Step")
            .on_hover_text("one optimization step (down arrow)")
            .clicked()
        {
            app.follow = false;
            app.advance();
        }
        ui.add(
            egui::Slider::new(&mut app.speed, 1.0..=60.0)
                .suffix(" steps/s")
                .text("speed"),
        );
        ui.checkbox(&mut app.looping, "loop");
        if matches!(app.source, Source::Live { .. }) {
            ui.checkbox(&mut app.follow, "follow");
        }
    });
    if n == 0 {
        ui.label("no MPC iteration yet");
        return;
    }
    ui.horizontal(|ui| {
        let mut it = app.cursor.iter + 1;
        let r = ui.add(egui::Slider::new(&mut it, 1..=n.max(1)).text("MPC iteration"));
        if r.changed() {
            app.follow = false;
            app.select_iteration(it - 1);
        }
        let steps = app.steps_at(app.cursor.iter);
        let mut st = app.cursor.step + 1;
        if ui
            .add(egui::Slider::new(&mut st, 1..=steps.max(1)).text("opt step"))
            .changed()
        {
            app.follow = false;
            app.cursor.step = st - 1;
        }
    });
    // The iteration x step grid: click or drag anywhere to scrub.
    let steps_max = (0..n).map(|i| app.steps_at(i)).max().unwrap_or(1).max(1);
    let (rect, resp) = ui.allocate_exact_size(
        Vec2::new(ui.available_width(), 26.0),
        Sense::click_and_drag(),
    );
    let cw = rect.width() / n as f32;
    let p = ui.painter_at(rect);
    for i in 0..n {
        let x0 = rect.left() + i as f32 * cw;
        let r = Rect::from_min_size(Pos2::new(x0 + 1.0, rect.top()), Vec2::new(cw - 2.0, 26.0));
        let sel = i == app.cursor.iter;
        p.rect_filled(
            r,
            2.0,
            if sel {
                Color32::from_gray(110)
            } else {
                Color32::from_gray(60)
            },
        );
        if sel {
            let f = (app.cursor.step + 1) as f32 / steps_max as f32;
            p.rect_filled(
                Rect::from_min_size(r.min, Vec2::new(r.width() * f.min(1.0), 4.0)),
                0.0,
                RUN_COLORS[0],
            );
        }
        if cw > 18.0 {
            p.text(
                r.center(),
                Align2::CENTER_CENTER,
                format!("{}", i + 1),
                FontId::proportional(11.0),
                Color32::WHITE,
            );
        }
    }
    if let Some(pos) = resp.interact_pointer_pos() {
        if resp.clicked() || resp.dragged() {
            app.follow = false;
            let i = ((pos.x - rect.left()) / cw).floor().max(0.0) as usize;
            let frac = ((pos.x - rect.left()) / cw).fract();
            app.cursor.iter = i.min(n - 1);
            let s = app.steps_at(app.cursor.iter);
            app.cursor.step = ((frac * s as f32) as usize).min(s.saturating_sub(1));
        }
    }
}

pub(super) fn info(app: &mut ViewerApp, ui: &mut Ui) {
    ui.heading("Info");
    if let Some(d) = &app.plan_device {
        ui.label(format!("planning: {d}"));
    }
    let Some(t) = app.trace() else {
        ui.label("waiting for the planner...");
        return;
    };
    let m = &t.meta;
    ui.label(format!("env {}  seed {}", m.env, m.seed));
    ui.label(format!(
        "{} {} samples, top {}, {} opt steps, horizon {}",
        m.planner, m.plan.samples, m.plan.topk, m.plan.opt_steps, m.plan.horizon
    ));
    ui.label(format!(
        "up to {} MPC iterations, {} model steps executed each",
        m.mpc.max_iters, m.mpc.n_taken
    ));
    let cur = app.cursor.iter;
    // Only the runs whose columns are drawn: a compared run hidden by the toggle is not listed.
    for r in app.shown_runs() {
        let run = &t.runs[r];
        ui.separator();
        let rm = &run.meta;
        ui.label(
            RichText::new(format!("run {r}: {}", rm.label))
                .color(RUN_COLORS[r % 2])
                .strong(),
        );
        ui.label(format!("model {}", rm.model));
        ui.label(format!("quant {}", rm.quant));
        let be = if rm.adapter.is_empty() {
            rm.backend.clone()
        } else {
            format!("{} ({})", rm.backend, rm.adapter)
        };
        ui.label(format!("backend {be}"));
        if let Some((q, f)) = rm.linear_bytes {
            ui.label(format!(
                "linear layers {:.1} kB ({:.3} of f32)",
                q as f64 / 1e3,
                q as f64 / f.max(1) as f64
            ));
        }
        ui.label(format!("load {:.2} s", rm.load_seconds));
        // (+ 0.0: an empty float sum is -0.0.)
        let sum = |f: fn(&crate::trace::IterMeta) -> f64| -> f64 {
            run.iters.iter().map(|i| f(&i.meta)).sum::<f64>() + 0.0
        };
        ui.label(format!(
            "total: plan {:.2} s, env {:.3} s, trace {:.2} s",
            sum(|m| m.plan_seconds),
            sum(|m| m.env_seconds),
            sum(|m| m.record_seconds)
        ));
        if let Some(it) = run.iters.get(cur) {
            let im = &it.meta;
            ui.label(format!(
                "iteration {}: plan {:.2} s, env {:.3} s, trace {:.2} s",
                cur + 1,
                im.plan_seconds,
                im.env_seconds,
                im.record_seconds
            ));
            ui.label(format!(
                "distance to goal {:.3}, plan objective {:.4}",
                im.distance, im.plan_cost
            ));
        }
        let status = if rm.success {
            "reached the goal"
        } else if rm.finished {
            "not reached"
        } else {
            "in progress / stopped"
        };
        ui.label(format!("{} iterations, {status}", run.iters.len()));
    }
}

pub(super) fn columns(app: &mut ViewerApp, ui: &mut Ui) {
    let runs = app.shown_runs();
    if runs.is_empty() {
        ui.label("waiting for the planner...");
        return;
    }
    let w = (ui.available_width() / runs.len() as f32 - 8.0).max(200.0);
    ui.horizontal_top(|ui| {
        for r in runs {
            ui.vertical(|ui| {
                ui.set_width(w);
                column(app, ui, r, w);
            });
        }
    });
}

fn column(app: &mut ViewerApp, ui: &mut Ui, r: usize, w: f32) {
    let ctx = ui.ctx().clone();
    let Some(t) = app.trace() else { return };
    let run = &t.runs[r];
    ui.label(
        RichText::new(format!(
            "run {r}: {} ({})",
            run.meta.label, run.meta.backend
        ))
        .color(RUN_COLORS[r % 2])
        .strong(),
    );
    let Some(it) = run
        .iters
        .get(app.cursor.iter.min(run.iters.len().saturating_sub(1)))
    else {
        ui.label("no iteration yet");
        return;
    };
    let idx = it.meta.index;
    let state = it.executed_states[0].clone();
    let env_name = t.meta.env.clone();
    let Some(env) = app.env(&env_name) else {
        return;
    };
    let scene_px = 256;
    let key = format!("scene-{r}-{idx}");
    let frame = match app.textures.contains_key(&key) {
        true => None,
        false => env.render_state(&state, scene_px).ok(),
    };
    let tex = match frame {
        Some(f) => Some(app.texture(&ctx, &key, &f)),
        None => app.textures.get(&key).cloned(),
    };
    let Some(t) = app.trace() else { return };
    ui.label("scene: start (green), goal (red), executed path, elites (thin), plan (thick)");
    let side = w.min(420.0);
    let (rect, _) = ui.allocate_exact_size(Vec2::splat(side), Sense::hover());
    if let Some(tex) = tex {
        ui.painter().image(
            tex.id(),
            rect,
            Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
            Color32::WHITE,
        );
    }
    scene_overlay(ui, &**env, t, r, app.cursor.iter, rect);
    imagination(app, ui, r, w);
}

fn scene_overlay(ui: &Ui, env: &dyn crate::env::Env, t: &Trace, r: usize, cur: usize, rect: Rect) {
    let to = |s: &[f32]| {
        let [u, v] = env.agent_uv(s);
        rect.min + Vec2::new(u * rect.width(), v * rect.height())
    };
    let p = ui.painter_at(rect);
    let run = &t.runs[r];
    let Some(it) = run.iters.get(cur.min(run.iters.len().saturating_sub(1))) else {
        return;
    };
    for (k, e) in it.elite_states.iter().enumerate().rev() {
        let a = if k == 0 { 160 } else { 60 };
        let pts: Vec<Pos2> = e.iter().map(|s| to(s)).collect();
        p.add(Shape::line(
            pts,
            Stroke::new(1.0, Color32::from_rgba_unmultiplied(120, 120, 120, a)),
        ));
    }
    // Executed path up to the end of this iteration.
    let mut path = vec![to(&t.meta.start)];
    for i in run.iters.iter().take(cur + 1) {
        path.extend(i.executed_states.iter().skip(1).map(|s| to(s)));
    }
    p.add(Shape::line(path, Stroke::new(2.5, RUN_COLORS[r % 2])));
    let plan: Vec<Pos2> = it.real_states.iter().map(|s| to(s)).collect();
    p.add(Shape::line(
        plan.clone(),
        Stroke::new(3.0, Color32::from_rgb(230, 170, 0)),
    ));
    for q in plan {
        p.circle_filled(q, 2.5, Color32::from_rgb(230, 170, 0));
    }
    p.circle_stroke(
        to(&t.meta.start),
        6.0,
        Stroke::new(2.5, Color32::from_rgb(0, 170, 0)),
    );
    let g = to(&t.meta.goal);
    p.circle_stroke(g, 7.0, Stroke::new(2.5, Color32::from_rgb(220, 0, 0)));
    p.line_segment(
        [g - Vec2::splat(4.0), g + Vec2::splat(4.0)],
        Stroke::new(2.0, Color32::from_rgb(220, 0, 0)),
    );
    p.line_segment(
        [g + Vec2::new(-4.0, 4.0), g + Vec2::new(4.0, -4.0)],
        Stroke::new(2.0, Color32::from_rgb(220, 0, 0)),
    );
}

fn imagination(app: &mut ViewerApp, ui: &mut Ui, r: usize, w: f32) {
    let ctx = ui.ctx().clone();
    let Some(t) = app.trace() else { return };
    let run = &t.runs[r];
    let Some(it) = run
        .iters
        .get(app.cursor.iter.min(run.iters.len().saturating_sub(1)))
    else {
        return;
    };
    let idx = it.meta.index;
    let (real, imag, errs) = (
        it.real.clone(),
        it.imagined.clone(),
        it.meta.latent_err.clone(),
    );
    let goal = t.goal_frame.clone();
    ui.label("imagination: real (top) vs decoded imagined (bottom) per horizon step");
    let n = real.len() + 1;
    let side = ((w - 8.0 * n as f32) / n as f32).clamp(24.0, 96.0);
    let mut texs = Vec::new();
    for (k, f) in real.iter().enumerate() {
        texs.push((0, k, app.texture(&ctx, &format!("real-{r}-{idx}-{k}"), f)));
    }
    for (k, f) in imag.iter().enumerate() {
        texs.push((1, k, app.texture(&ctx, &format!("imag-{r}-{idx}-{k}"), f)));
    }
    let goal_tex = app.texture(&ctx, "goal", &goal);
    egui::Grid::new(format!("imagination-{r}"))
        .spacing([4.0, 2.0])
        .show(ui, |ui| {
            for row in 0..2 {
                for k in 0..real.len() {
                    match texs.iter().find(|(rw, kk, _)| *rw == row && *kk == k) {
                        Some((_, _, t)) => {
                            ui.image((t.id(), Vec2::splat(side)));
                        }
                        None => {
                            ui.label(if row == 1 { "no decoder" } else { "" });
                        }
                    }
                }
                if row == 0 {
                    ui.image((goal_tex.id(), Vec2::splat(side)));
                } else {
                    ui.label("goal");
                }
                ui.end_row();
            }
            for e in &errs {
                ui.label(RichText::new(format!("{e:.3}")).small());
            }
            ui.end_row();
            for k in 0..errs.len() {
                ui.label(RichText::new(format!("t={k}")).small().weak());
            }
            ui.end_row();
        });
    ui.label(
        RichText::new("latent MSE (imagined vs encoded real frame) under each step")
            .small()
            .weak(),
    );
}
