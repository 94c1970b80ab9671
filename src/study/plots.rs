//! The study report's PNGs (plotters): success rates with their Wilson 95% intervals over a
//! categorical axis (bit-widths, modules, activation granularity, CEM steps), and scatter plots
//! (objective vs final distance, latent divergence vs success, bytes vs success).
//!
//! Text needs a TrueType font: the one `train::plot` registers (DejaVu Sans) when the system
//! has it; without it the plots are drawn without labels rather than failing.

use std::path::Path;

use plotters::prelude::*;

use crate::{Error, Result};

fn err(e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("study plot: {e}"))
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// A success rate and its interval.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub p: f64,
    pub lo: f64,
    pub hi: f64,
    /// The cell has fewer episodes than planned: drawn as a hollow marker, so a plot read
    /// without its table does not pass a half-run cell off as a finished one.
    pub partial: bool,
}

/// One line of a categorical plot: a value (or a gap) per category.
pub struct Series {
    pub name: String,
    pub points: Vec<Option<Rate>>,
}

/// Success (0..1) per category, one line per series, with interval bars. Series are offset
/// a little along x so their bars do not hide each other.
pub fn categories(
    path: &Path,
    title: &str,
    x_label: &str,
    cats: &[String],
    series: &[Series],
) -> Result<()> {
    let text = crate::train::plot::have_font();
    let root = BitMapBackend::new(path, (760, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let n = cats.len().max(1) as f64;
    let mut b = ChartBuilder::on(&root);
    b.margin(14);
    if text {
        b.caption(title, ("sans-serif", 20))
            .x_label_area_size(40)
            .y_label_area_size(50);
    }
    let mut chart = b
        .build_cartesian_2d(-0.5..n - 0.5, 0.0..1.05)
        .map_err(err)?;
    if text {
        let cats = cats.to_vec();
        chart
            .configure_mesh()
            .x_labels(cats.len().max(1))
            .x_label_formatter(&move |x: &f64| {
                let k = x.round();
                if (x - k).abs() < 1e-6 && k >= 0.0 && (k as usize) < cats.len() {
                    cats[k as usize].clone()
                } else {
                    String::new()
                }
            })
            .x_desc(x_label)
            .y_desc("success rate (Wilson 95%)")
            .disable_x_mesh()
            .draw()
            .map_err(err)?;
    }
    let ns = series.len().max(1) as f64;
    for (si, s) in series.iter().enumerate() {
        let c = COLORS[si % COLORS.len()];
        let off = (si as f64 - (ns - 1.0) / 2.0) * 0.06;
        let pts: Vec<(f64, Rate)> = s
            .points
            .iter()
            .enumerate()
            .filter_map(|(k, r)| r.map(|r| (k as f64 + off, r)))
            .collect();
        let line = chart
            .draw_series(LineSeries::new(
                pts.iter().map(|(x, r)| (*x, r.p)),
                c.stroke_width(2),
            ))
            .map_err(err)?;
        if text {
            line.label(s.name.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
            });
        }
        chart
            .draw_series(
                pts.iter()
                    .map(|(x, r)| ErrorBar::new_vertical(*x, r.lo, r.p, r.hi, c.filled(), 8)),
            )
            .map_err(err)?;
        chart
            .draw_series(pts.iter().map(|(x, r)| {
                let style = if r.partial {
                    WHITE.filled()
                } else {
                    c.filled()
                };
                Circle::new((*x, r.p), 5, style)
            }))
            .map_err(err)?;
        chart
            .draw_series(
                pts.iter()
                    .map(|(x, r)| Circle::new((*x, r.p), 5, c.stroke_width(2))),
            )
            .map_err(err)?;
    }
    let partial = series
        .iter()
        .any(|s| s.points.iter().flatten().any(|r| r.partial));
    if text && partial {
        // A legend entry only: the markers themselves are drawn above.
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(err)?
            .label("hollow: partial cell")
            .legend(|(x, y)| Circle::new((x + 9, y), 5, BLACK.stroke_width(2)));
    }
    if text && !series.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// One scatter series: its name and points; a point whose flag is set is drawn hollow (a
/// partial cell, as in [`categories`]).
pub type Points = (String, Vec<(f64, f64, bool)>);

/// Width of the legend panel right of a scatter plot: outside the axes, so that no point
/// hides behind it.
const LEGEND_W: u32 = 250;

/// Series `si`'s marker at `at`, on the axes or in the legend: a circle, and once the palette
/// is used up a triangle and then a square, so no two series look alike; each shape is filled
/// or (a partial cell) a ring, as `style` says.
fn draw_marker<DB: DrawingBackend, CT: CoordTranslate>(
    area: &DrawingArea<DB, CT>,
    si: usize,
    at: CT::From,
    style: ShapeStyle,
) -> Result<()>
where
    CT::From: Clone,
{
    // plotters' TriangleMarker is always filled: the triangle is a polygon or a closed path.
    let tri = [(0, -7), (-6, 4), (6, 4), (0, -7)];
    let at = EmptyElement::at(at);
    match (si / COLORS.len() % 3, style.filled) {
        (0, _) => area.draw(&(at + Circle::new((0, 0), 4, style))),
        (1, true) => area.draw(&(at + Polygon::new(&tri[..3], style))),
        (1, false) => area.draw(&(at + PathElement::new(tri, style))),
        _ => area.draw(&(at + Rectangle::new([(-4, -4), (4, 4)], style))),
    }
    .map_err(err)
}

/// Points per series; `log` puts x and/or y on log scales (non-positive values are left out);
/// `y_range` fixes the y axis (success rates: 0..1), else it spans the data.
pub fn scatter(
    path: &Path,
    title: &str,
    axes: (&str, &str),
    series: &[Points],
    log: (bool, bool),
    y_range: Option<(f64, f64)>,
) -> Result<()> {
    let text = crate::train::plot::have_font();
    let keep = |v: f64, lg: bool| v.is_finite() && (!lg || v > 0.0);
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.1.iter().map(|&(x, y, _)| (x, y)))
        .filter(|(x, y)| keep(*x, log.0) && keep(*y, log.1))
        .collect();
    let range = |vals: Vec<f64>, lg: bool| -> (f64, f64) {
        let lo = vals.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if !lo.is_finite() {
            return if lg { (1e-3, 1.0) } else { (0.0, 1.0) };
        }
        if lg {
            (lo / 1.5, (hi * 1.5).max(lo * 10.0))
        } else {
            // A lone value gets 5% of itself each side, not a sliver of an axis.
            let pad = ((hi - lo) * 0.05)
                .max(lo.abs().max(hi.abs()) * 0.05)
                .max(1e-3);
            (lo - pad, hi + pad)
        }
    };
    let (x0, x1) = range(pts.iter().map(|p| p.0).collect(), log.0);
    let (y0, y1) = y_range.unwrap_or_else(|| range(pts.iter().map(|p| p.1).collect(), log.1));
    let legend = text && !series.is_empty();
    let width = 760 + if legend { LEGEND_W } else { 0 };
    let root = BitMapBackend::new(path, (width, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (area, panel) = root.split_horizontally(760);
    let mut b = ChartBuilder::on(&area);
    b.margin(14);
    if text {
        b.caption(title, ("sans-serif", 20))
            .x_label_area_size(40)
            .y_label_area_size(60);
    }
    // The four scale combinations are distinct chart types in plotters.
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart.map_err(err)?;
            if text {
                chart
                    .configure_mesh()
                    .x_desc(axes.0)
                    .y_desc(axes.1)
                    .draw()
                    .map_err(err)?;
            }
            let area = chart.plotting_area();
            for (si, (_, s)) in series.iter().enumerate() {
                let c = COLORS[si % COLORS.len()];
                for &(x, y, hollow) in s {
                    if keep(x, log.0) && keep(y, log.1) {
                        let style = if hollow {
                            c.stroke_width(2)
                        } else {
                            c.mix(0.7).filled()
                        };
                        draw_marker(area, si, (x, y), style)?;
                    }
                }
            }
        }};
    }
    match log {
        (false, false) => body!(b.build_cartesian_2d(x0..x1, y0..y1)),
        (true, false) => body!(b.build_cartesian_2d((x0..x1).log_scale(), y0..y1)),
        (false, true) => body!(b.build_cartesian_2d(x0..x1, (y0..y1).log_scale())),
        (true, true) => body!(b.build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())),
    }
    if legend {
        let font = ("sans-serif", 14).into_font();
        let hollow = series.iter().any(|s| s.1.iter().any(|p| p.2));
        let rows = series.len() + usize::from(hollow);
        let top = 230 - 10 * rows as i32;
        for (si, (name, _)) in series.iter().enumerate() {
            let c = COLORS[si % COLORS.len()];
            let at = (14, top + 20 * si as i32);
            draw_marker(&panel, si, at, c.filled())?;
            panel
                .draw(&Text::new(name.clone(), (28, at.1 - 7), font.clone()))
                .map_err(err)?;
        }
        if hollow {
            let at = (14, top + 20 * series.len() as i32);
            draw_marker(&panel, 0, at, BLACK.stroke_width(2))?;
            panel
                .draw(&Text::new("hollow: partial cell", (28, at.1 - 7), font))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pixels close to the first series' colour.
    fn coloured(path: &Path) -> usize {
        let img = image::open(path).unwrap().to_rgb8();
        let c = COLORS[0];
        img.pixels()
            .filter(|p| {
                let d = |a: u8, b: u8| (a as i32 - b as i32).abs();
                d(p[0], c.0) + d(p[1], c.1) + d(p[2], c.2) < 30
            })
            .count()
    }

    /// The legend sits beside the axes: a point in the top-right corner of the data, where a
    /// legend inside the axes would go, shows in full; a partial cell's point is a solid ring,
    /// with no fill, for each of the three marker shapes.
    #[test]
    fn scatter_points_stay_visible_beside_the_legend() {
        let dir = std::env::temp_dir().join(format!("qwm-scatter-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Pixels of the first colour: solid (rings) and blended into white (filled markers).
        let c = [COLORS[0].0, COLORS[0].1, COLORS[0].2].map(i32::from);
        let blend = c.map(|v| (0.7 * v as f64 + 0.3 * 255.0).round() as i32);
        let dist = |p: &image::Rgb<u8>, q: [i32; 3]| {
            (0..3).map(|i| (p[i] as i32 - q[i]).abs()).sum::<i32>()
        };
        // Series `at` (of 20) holds the corner point, if any; the others one point each at
        // x = 0.1, so series 0, 8 and 16 share the first colour as circle, triangle, square.
        let draw = |at: usize, corner: Option<bool>, name: &str| {
            let series: Vec<Points> = (0..20)
                .map(|i| match (i == at, corner) {
                    (true, Some(hollow)) => ("corner".into(), vec![(1.0, 1.0, hollow)]),
                    (true, None) => ("corner".into(), vec![]),
                    // The last series also spans x to 1.0, so every picture has one x axis.
                    _ => {
                        let mut pts = vec![(0.1, 0.04 * i as f64, false)];
                        if i == 19 {
                            pts.push((1.0, 0.0, false));
                        }
                        (format!("series {i}"), pts)
                    }
                })
                .collect();
            let path = dir.join(name);
            scatter(
                &path,
                "t",
                ("x", "y"),
                &series,
                (false, false),
                Some((0.0, 1.02)),
            )
            .unwrap();
            image::open(&path).unwrap().to_rgb8()
        };
        for (at, shape) in [(0, "circle"), (8, "triangle"), (16, "square")] {
            let none = draw(at, None, "none.png");
            // The corner marker: the pixels that differ from the picture without it, in the
            // axes' part of the image only (the legend's markers do not count); their solid
            // and blended counts, and whether the middle of their bounding box is painted.
            let marker = |img: &image::RgbImage| {
                assert!(img.width() >= 760, "{} px wide", img.width());
                let px: Vec<_> = img
                    .enumerate_pixels()
                    .filter(|&(x, y, p)| x < 760 && p != none.get_pixel(x, y))
                    .collect();
                let solid = px.iter().filter(|(_, _, p)| dist(p, c) < 30).count();
                let mixed = px.iter().filter(|(_, _, p)| dist(p, blend) < 30).count();
                let (xs, ys) = (px.iter().map(|p| p.0), px.iter().map(|p| p.1));
                let mid = (
                    (xs.clone().min().unwrap_or(0) + xs.max().unwrap_or(0)) / 2,
                    (ys.clone().min().unwrap_or(0) + ys.max().unwrap_or(0)) / 2,
                );
                let painted = img.get_pixel(mid.0, mid.1) != none.get_pixel(mid.0, mid.1);
                (solid, mixed, painted)
            };
            let full = marker(&draw(at, Some(false), "full.png"));
            let ring = marker(&draw(at, Some(true), "ring.png"));
            // A filled circle of radius 4 is ~50 pixels, its blended core at least 30.
            assert!(
                full.1 >= 30 && full.2,
                "the corner {shape} is covered or not filled: {full:?} (solid, blended, middle)"
            );
            assert!(
                ring.0 >= 10 && ring.1 < 5 && !ring.2,
                "the partial {shape} is not a ring: {ring:?}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_partial_cell_is_drawn_hollow() {
        let dir = std::env::temp_dir().join(format!("qwm-plots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cats: Vec<String> = ["10", "30"].iter().map(|s| s.to_string()).collect();
        let draw = |partial: bool, name: &str| {
            let r = |p: f64| Rate {
                p,
                lo: p,
                hi: p,
                partial,
            };
            let s = Series {
                name: "w4".into(),
                points: vec![Some(r(0.2)), Some(r(0.8))],
            };
            let path = dir.join(name);
            categories(&path, "t", "x", &cats, &[s]).unwrap();
            coloured(&path)
        };
        let full = draw(false, "full.png");
        let hollow = draw(true, "hollow.png");
        std::fs::remove_dir_all(&dir).unwrap();
        // Two filled markers of radius 5 are ~2 x 50 more pixels of the colour than two rings.
        assert!(
            full > hollow + 30,
            "filled {full} vs hollow {hollow} pixels"
        );
    }
}
