//! Software rasterization into RGB u8 frames: anti-aliased rectangles, convex polygons and
//! circles, resizing, strips and PNG output. No GPU and no drawing library: frames must be
//! bit-identical from run to run so that datasets are deterministic.

use crate::{Error, Result};
use std::path::Path;

pub type Rgb = [u8; 3];

/// An RGB u8 image, row-major, 3 bytes per pixel (HWC), as stored in datasets.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl Frame {
    /// A frame filled with one colour.
    pub fn new(width: usize, height: usize, color: Rgb) -> Frame {
        let mut data = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            data.extend_from_slice(&color);
        }
        Frame {
            width,
            height,
            data,
        }
    }

    /// Colour at pixel (x, y).
    pub fn pixel(&self, x: usize, y: usize) -> Rgb {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// Blend `color` over pixel (x, y) with coverage `a` in [0, 1].
    #[inline]
    pub fn blend(&mut self, x: usize, y: usize, color: Rgb, a: f32) {
        if a <= 0.0 {
            return;
        }
        let i = (y * self.width + x) * 3;
        if a >= 1.0 {
            self.data[i..i + 3].copy_from_slice(&color);
            return;
        }
        for (d, c) in self.data[i..i + 3].iter_mut().zip(color) {
            let old = *d as f32;
            *d = (old + (c as f32 - old) * a).round() as u8;
        }
    }

    /// Pixel-index bounds [x0, x1) x [y0, y1) covering the box, clipped to the frame.
    fn clip_box(&self, x0: f32, y0: f32, x1: f32, y1: f32) -> (usize, usize, usize, usize) {
        let cx = |v: f32, n: usize| (v.max(0.0) as usize).min(n);
        (
            cx(x0.floor(), self.width),
            cx(y0.floor(), self.height),
            cx(x1.ceil(), self.width),
            cx(y1.ceil(), self.height),
        )
    }

    /// Fill an axis-aligned rectangle given in continuous pixel coordinates (pixel (i, j)
    /// covers [i, i+1) x [j, j+1)); edge pixels get their exact area coverage.
    pub fn fill_rect(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, color: Rgb) {
        let (px0, py0, px1, py1) = self.clip_box(x0, y0, x1, y1);
        for py in py0..py1 {
            let cy = (y1.min(py as f32 + 1.0) - y0.max(py as f32)).clamp(0.0, 1.0);
            for px in px0..px1 {
                let cx = (x1.min(px as f32 + 1.0) - x0.max(px as f32)).clamp(0.0, 1.0);
                self.blend(px, py, color, cx * cy);
            }
        }
    }

    /// Fill a convex polygon (any winding) with `ss` x `ss` supersampling per pixel.
    pub fn fill_convex(&mut self, pts: &[[f32; 2]], color: Rgb, ss: usize) {
        if pts.len() < 3 {
            return;
        }
        // Orient edges so that "inside" is a non-negative cross product.
        let area: f32 = (0..pts.len())
            .map(|i| {
                let (a, b) = (pts[i], pts[(i + 1) % pts.len()]);
                a[0] * b[1] - b[0] * a[1]
            })
            .sum();
        let sign = if area >= 0.0 { 1.0 } else { -1.0 };
        let edges: Vec<[f32; 3]> = (0..pts.len())
            .map(|i| {
                let (a, b) = (pts[i], pts[(i + 1) % pts.len()]);
                // inside when nx*x + ny*y + c >= 0
                let nx = -(b[1] - a[1]) * sign;
                let ny = (b[0] - a[0]) * sign;
                [nx, ny, -(nx * a[0] + ny * a[1])]
            })
            .collect();
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for p in pts {
            x0 = x0.min(p[0]);
            y0 = y0.min(p[1]);
            x1 = x1.max(p[0]);
            y1 = y1.max(p[1]);
        }
        let (px0, py0, px1, py1) = self.clip_box(x0, y0, x1, y1);
        let ss = ss.max(1);
        let inv = 1.0 / ss as f32;
        let total = (ss * ss) as f32;
        for py in py0..py1 {
            for px in px0..px1 {
                // Edge functions are linear: their range over the pixel square decides
                // fully-inside and fully-outside pixels without supersampling.
                let (cx, cy) = (px as f32 + 0.5, py as f32 + 0.5);
                let mut inside = true;
                let mut outside = false;
                for e in &edges {
                    let v = e[0] * cx + e[1] * cy + e[2];
                    let h = 0.5 * (e[0].abs() + e[1].abs());
                    if v + h < 0.0 {
                        outside = true;
                        break;
                    }
                    if v - h < 0.0 {
                        inside = false;
                    }
                }
                if outside {
                    continue;
                }
                if inside {
                    self.blend(px, py, color, 1.0);
                    continue;
                }
                let mut hits = 0usize;
                for sy in 0..ss {
                    let y = py as f32 + (sy as f32 + 0.5) * inv;
                    for sx in 0..ss {
                        let x = px as f32 + (sx as f32 + 0.5) * inv;
                        if edges.iter().all(|e| e[0] * x + e[1] * y + e[2] >= 0.0) {
                            hits += 1;
                        }
                    }
                }
                self.blend(px, py, color, hits as f32 / total);
            }
        }
    }

    /// Fill a circle; edge pixels get an analytic coverage estimate.
    pub fn fill_circle(&mut self, cx: f32, cy: f32, r: f32, color: Rgb) {
        let (px0, py0, px1, py1) =
            self.clip_box(cx - r - 1.0, cy - r - 1.0, cx + r + 1.0, cy + r + 1.0);
        for py in py0..py1 {
            let dy = py as f32 + 0.5 - cy;
            for px in px0..px1 {
                let dx = px as f32 + 0.5 - cx;
                let d = (dx * dx + dy * dy).sqrt();
                self.blend(px, py, color, (r - d + 0.5).clamp(0.0, 1.0));
            }
        }
    }

    /// A thick straight line from `a` to `b` with round caps.
    pub fn thick_line(&mut self, a: [f32; 2], b: [f32; 2], width: f32, color: Rgb, ss: usize) {
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let len = (dx * dx + dy * dy).sqrt().max(1e-6);
        let (nx, ny) = (-dy / len * width / 2.0, dx / len * width / 2.0);
        let quad = [
            [a[0] + nx, a[1] + ny],
            [b[0] + nx, b[1] + ny],
            [b[0] - nx, b[1] - ny],
            [a[0] - nx, a[1] - ny],
        ];
        self.fill_convex(&quad, color, ss);
        self.fill_circle(a[0], a[1], width / 2.0, color);
        self.fill_circle(b[0], b[1], width / 2.0, color);
    }

    /// Resize to `w` x `h`: area averaging when shrinking (no aliasing), bilinear with
    /// half-pixel centres when enlarging (as cv2/torchvision do).
    pub fn resize(&self, w: usize, h: usize) -> Frame {
        if w == self.width && h == self.height {
            return self.clone();
        }
        let xs = axis_weights(self.width, w);
        let ys = axis_weights(self.height, h);
        let mut out = Frame::new(w, h, [0, 0, 0]);
        for (oy, yw) in ys.iter().enumerate() {
            for (ox, xw) in xs.iter().enumerate() {
                let mut acc = [0f32; 3];
                for &(iy, wy) in yw {
                    for &(ix, wx) in xw {
                        let p = self.pixel(ix, iy);
                        let wgt = wx * wy;
                        for (acc, v) in acc.iter_mut().zip(p) {
                            *acc += v as f32 * wgt;
                        }
                    }
                }
                let i = (oy * w + ox) * 3;
                for (d, v) in out.data[i..i + 3].iter_mut().zip(acc) {
                    *d = v.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        out
    }

    /// Write as PNG.
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let img =
            image::RgbImage::from_raw(self.width as u32, self.height as u32, self.data.clone())
                .ok_or_else(|| Error::Invalid("frame buffer has the wrong size".into()))?;
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png)
            .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
        // Atomic, and never over a device node or other non-regular file.
        crate::io::write_atomic(path, png.get_ref())
    }

    /// Frames side by side with a `gap`-pixel separator of colour `bg`; all frames must have
    /// the same height.
    pub fn hstack(frames: &[Frame], gap: usize, bg: Rgb) -> Frame {
        let h = frames.iter().map(|f| f.height).max().unwrap_or(0);
        let w =
            frames.iter().map(|f| f.width).sum::<usize>() + gap * frames.len().saturating_sub(1);
        let mut out = Frame::new(w, h, bg);
        let mut x0 = 0;
        for f in frames {
            for y in 0..f.height {
                let src = &f.data[y * f.width * 3..(y + 1) * f.width * 3];
                let dst = (y * w + x0) * 3;
                out.data[dst..dst + f.width * 3].copy_from_slice(src);
            }
            x0 += f.width + gap;
        }
        out
    }

    /// Frames one above the other, left-aligned, with a `gap`-pixel separator of colour `bg`.
    pub fn vstack(frames: &[Frame], gap: usize, bg: Rgb) -> Frame {
        let w = frames.iter().map(|f| f.width).max().unwrap_or(0);
        let h =
            frames.iter().map(|f| f.height).sum::<usize>() + gap * frames.len().saturating_sub(1);
        let mut out = Frame::new(w, h, bg);
        let mut y0 = 0;
        for f in frames {
            for y in 0..f.height {
                let dst = ((y0 + y) * w) * 3;
                out.data[dst..dst + f.width * 3]
                    .copy_from_slice(&f.data[y * f.width * 3..(y + 1) * f.width * 3]);
            }
            y0 += f.height + gap;
        }
        out
    }
}

/// For each output index, the (input index, weight) pairs of a 1-D resampling.
fn axis_weights(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = n_in as f32 / n_out as f32;
    (0..n_out)
        .map(|o| {
            if scale > 1.0 {
                // area: the output pixel covers [o*scale, (o+1)*scale) of the input
                let (a, b) = (o as f32 * scale, (o as f32 + 1.0) * scale);
                let mut v = Vec::new();
                let mut i = a.floor() as usize;
                while (i as f32) < b && i < n_in {
                    let w = (b.min(i as f32 + 1.0) - a.max(i as f32)).max(0.0) / scale;
                    if w > 0.0 {
                        v.push((i, w));
                    }
                    i += 1;
                }
                v
            } else {
                let x = ((o as f32 + 0.5) * scale - 0.5).clamp(0.0, (n_in - 1) as f32);
                let i0 = x.floor() as usize;
                let i1 = (i0 + 1).min(n_in - 1);
                let t = x - i0 as f32;
                vec![(i0, 1.0 - t), (i1, t)]
            }
        })
        .collect()
}
