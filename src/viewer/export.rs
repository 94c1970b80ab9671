//! Exports: PNG of the current view (pixels from eframe's screenshot), an animated GIF of an
//! episode (drawn in software with the environment renderer, so `qwm view DIR --gif` needs
//! no window or GPU), and the frame-time report of the viewer benchmark.

use std::path::{Path, PathBuf};

use egui::ColorImage;
use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, RgbaImage};

use crate::env::render::Rgb;
use crate::env::Frame;
use crate::trace::Trace;
use crate::{Error, Result};

/// `stem.ext`, or `stem-2.ext`, ... : the first name not taken in the working directory.
pub fn next_free(stem: &str, ext: &str) -> PathBuf {
    let first = PathBuf::from(format!("{stem}.{ext}"));
    if !first.exists() {
        return first;
    }
    let mut k = 2u64;
    loop {
        let p = PathBuf::from(format!("{stem}-{k}.{ext}"));
        if !p.exists() {
            return p;
        }
        k += 1;
    }
}

/// Save an egui screenshot as PNG.
pub fn save_color_image(img: &ColorImage, path: &Path) -> Result<()> {
    let [w, h] = img.size;
    let bytes: Vec<u8> = img.pixels.iter().flat_map(|c| c.to_array()).collect();
    let rgba = RgbaImage::from_raw(w as u32, h as u32, bytes)
        .ok_or_else(|| Error::Invalid("screenshot has the wrong number of pixels".into()))?;
    rgba.save(path)
        .map_err(|e| Error::Invalid(format!("{}: cannot write the PNG: {e}", path.display())))
}

const RUN_RGB: [Rgb; 2] = [[31, 119, 180], [255, 127, 14]];
const PLAN_RGB: Rgb = [230, 170, 0];
const SCENE: usize = 192;
const TILE: usize = 48;
const GAP: usize = 4;

/// One picture of run `r` at iteration `i`: the scene with its paths over it, then the real
/// and the decoded imagined frames of the plan, and the goal.
pub fn compose(t: &Trace, r: usize, i: usize) -> Result<Frame> {
    let env = crate::env::make(&t.meta.env)?;
    let run = &t.runs[r];
    let h = t.meta.plan.horizon;
    let width = SCENE.max((h + 2) * (TILE + GAP));
    let height = SCENE + 2 * (TILE + GAP) + GAP;
    let mut out = Frame::new(width, height, [255, 255, 255]);
    let Some(it) = run.iters.get(i) else {
        return Ok(out);
    };
    let mut scene = env.render_state(&it.executed_states[0], SCENE)?;
    let px = |s: &[f32]| {
        let [u, v] = env.agent_uv(s);
        [u * SCENE as f32, v * SCENE as f32]
    };
    let poly = |f: &mut Frame, pts: &[[f32; 2]], w: f32, c: Rgb| {
        for p in pts.windows(2) {
            f.thick_line(p[0], p[1], w, c, 2);
        }
    };
    for e in it.elite_states.iter().skip(1) {
        let pts: Vec<[f32; 2]> = e.iter().map(|s| px(s)).collect();
        poly(&mut scene, &pts, 1.0, [170, 170, 170]);
    }
    let mut path = vec![px(&t.meta.start)];
    for k in run.iters.iter().take(i + 1) {
        path.extend(k.executed_states.iter().skip(1).map(|s| px(s)));
    }
    poly(&mut scene, &path, 2.0, RUN_RGB[r % 2]);
    let plan: Vec<[f32; 2]> = it.real_states.iter().map(|s| px(s)).collect();
    poly(&mut scene, &plan, 2.0, PLAN_RGB);
    let s = px(&t.meta.start);
    scene.fill_circle(s[0], s[1], 4.0, [0, 170, 0]);
    let g = px(&t.meta.goal);
    scene.fill_circle(g[0], g[1], 4.0, [220, 0, 0]);
    blit(&mut out, &scene, 0, 0);
    let y0 = SCENE + GAP;
    for (k, f) in it.real.iter().enumerate() {
        blit(&mut out, &f.resize(TILE, TILE), k * (TILE + GAP), y0);
    }
    blit(
        &mut out,
        &t.goal_frame.resize(TILE, TILE),
        (h + 1) * (TILE + GAP),
        y0,
    );
    for (k, f) in it.imagined.iter().enumerate() {
        blit(
            &mut out,
            &f.resize(TILE, TILE),
            k * (TILE + GAP),
            y0 + TILE + GAP,
        );
    }
    Ok(out)
}

fn blit(dst: &mut Frame, src: &Frame, x0: usize, y0: usize) {
    for y in 0..src.height.min(dst.height.saturating_sub(y0)) {
        let w = src.width.min(dst.width.saturating_sub(x0));
        let d = ((y0 + y) * dst.width + x0) * 3;
        dst.data[d..d + w * 3]
            .copy_from_slice(&src.data[y * src.width * 3..(y * src.width + w) * 3]);
    }
}

/// Every run side by side for each MPC iteration, as an animated GIF (0.5 s per iteration,
/// looping).
pub fn episode_gif(t: &Trace, path: &Path) -> Result<()> {
    let n = t.max_iters();
    if n == 0 {
        return Err(Error::Invalid(
            "the trace has no MPC iteration to animate".into(),
        ));
    }
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut enc = GifEncoder::new_with_speed(std::io::BufWriter::new(file), 10);
    enc.set_repeat(Repeat::Infinite)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    for i in 0..n {
        let cols: Vec<Frame> = (0..t.runs.len())
            .map(|r| compose(t, r, i.min(t.runs[r].iters.len().saturating_sub(1))))
            .collect::<Result<_>>()?;
        let f = Frame::hstack(&cols, 8, [255, 255, 255]);
        let rgba: Vec<u8> = f
            .data
            .chunks(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect();
        let img = RgbaImage::from_raw(f.width as u32, f.height as u32, rgba).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: a GIF frame has the wrong size",
                path.display()
            ))
        })?;
        let frame = image::Frame::from_parts(img, 0, 0, Delay::from_numer_denom_ms(500, 1));
        enc.encode_frame(frame)
            .map_err(|e| Error::Invalid(format!("{}: writing the GIF: {e}", path.display())))?;
    }
    Ok(())
}

/// Percentiles of frame intervals and UI times, in ms, and the frame rate they allow.
pub fn frame_report(intervals: &[f64], ui: &[f64]) -> String {
    let pct = |v: &[f64], q: f64| {
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        s[((s.len() - 1) as f64 * q).round() as usize] * 1e3
    };
    let mean = intervals.iter().sum::<f64>() / intervals.len() as f64;
    format!(
        "frames {}: interval mean {:.1} ms ({:.1} fps), p50 {:.1}, p95 {:.1}, max {:.1} ms; \
         ui() p50 {:.2}, p95 {:.2}, max {:.2} ms",
        intervals.len(),
        mean * 1e3,
        1.0 / mean,
        pct(intervals, 0.5),
        pct(intervals, 0.95),
        pct(intervals, 1.0),
        pct(ui, 0.5),
        pct(ui, 0.95),
        pct(ui, 1.0)
    )
}
