//! D4RL's U-maze point mass as DINO-WM uses it (MuJoCo `maze2d-umaze`).
//!
//! State = proprio = (x, y, vx, vy) in the ball's joint coordinates (MuJoCo `qpos`/`qvel`).
//! Wall cells of the maze string are unit boxes centred at (row - 0.2, col - 0.2) in these
//! coordinates (D4RL places walls at (w + 1, h + 1) and the ball body at (1.2, 1.2)); the
//! ball has radius 0.1, so its centre stays in x in [0.4, 1.2] or [2.4, 3.2] for any y in
//! [0.4, 3.2], or anywhere in the top corridor y in [2.4, 3.2].
//!
//! One env step is 5 MuJoCo steps of 0.01 s (D4RL frame_skip 5): velocity clipped to +-5,
//! action clipped to [-1, 1] and scaled by the motor gear 100, mass 4.19 (sphere, density
//! 1000), joint damping 1 integrated implicitly as MuJoCo's Euler integrator does, and a
//! frictionless inelastic contact with the walls (the ball is projected out of a wall and
//! loses its velocity into it).

use super::render::{Frame, Rgb};
use super::{check_action, check_range, check_state, Env, EnvSpec};
use crate::{Error, Result};
use rand::Rng;

/// Rows of D4RL's U_MAZE string; row index = x cell, column index = y cell.
pub const U_MAZE: [&str; 5] = ["#####", "#GOO#", "###O#", "#OOO#", "#####"];
/// Offset from maze cell index to joint coordinates.
const CELL_OFFSET: f32 = -0.2;
/// Physical ball radius.
pub const BALL_RADIUS: f32 = 0.1;
/// Radius the ball is drawn with (D4RL's visible site, size 0.2).
pub const DRAW_RADIUS: f32 = 0.2;
pub const MASS: f32 = 1000.0 * 4.0 / 3.0 * std::f32::consts::PI * 0.001;
pub const DAMPING: f32 = 1.0;
pub const GEAR: f32 = 100.0;
pub const DT: f32 = 0.01;
pub const SUBSTEPS: usize = 5;
pub const MAX_SPEED: f32 = 5.0;
/// Success when the positions are closer than this.
pub const SUCCESS_DIST: f32 = 0.5;
/// DINO-WM's sampling range of velocities (`STATE_RANGES`).
pub const SAMPLE_SPEED: f32 = 5.226_255_4;
/// The top-down camera (distance 10, fovy 45) sees +- 10 tan(22.5 deg) around the maze centre.
const VIEW_CENTER: f32 = 1.8;
const VIEW_HALF: f32 = 4.142_136;

const FLOOR_A: Rgb = [51, 76, 102];
const FLOOR_B: Rgb = [25, 51, 76];
const WALL_COLOR: Rgb = [178, 127, 76];
const WALL_EDGE: Rgb = [140, 100, 60];
const BALL_COLOR: Rgb = [76, 153, 76];

fn spec() -> EnvSpec {
    EnvSpec {
        name: "pointmaze",
        state_dim: 4,
        action_dim: 2,
        proprio_dim: 4,
        native_size: 224,
        default_data_size: 64,
        success_threshold: SUCCESS_DIST,
        alpha: 0.0,
        action_clip: Some(1.0),
        action_scale: 1.0,
        state_names: &["x", "y", "vx", "vy"],
        plan_opt_steps: 10,
        plan_max_iters: 50,
    }
}

/// Wall boxes [x0, x1, y0, y1] in joint coordinates.
pub fn wall_boxes() -> Vec<[f32; 4]> {
    let mut v = Vec::new();
    for (w, row) in U_MAZE.iter().enumerate() {
        for (h, c) in row.chars().enumerate() {
            if c == '#' {
                let (cx, cy) = (w as f32 + CELL_OFFSET, h as f32 + CELL_OFFSET);
                v.push([cx - 0.5, cx + 0.5, cy - 0.5, cy + 0.5]);
            }
        }
    }
    v
}

/// Signed clearance of a ball centre from the walls (negative when overlapping), and the
/// push-out direction from the closest wall.
fn clearance(boxes: &[[f32; 4]], x: f32, y: f32) -> (f32, [f32; 2]) {
    let mut best = (f32::INFINITY, [0.0, 0.0]);
    for b in boxes {
        let qx = x.clamp(b[0], b[1]);
        let qy = y.clamp(b[2], b[3]);
        let (dx, dy) = (x - qx, y - qy);
        let d = (dx * dx + dy * dy).sqrt();
        let (c, n) = if d > 0.0 {
            (d - BALL_RADIUS, [dx / d, dy / d])
        } else {
            // centre inside the box: leave through the nearest face
            let faces = [
                (x - b[0], [-1.0, 0.0]),
                (b[1] - x, [1.0, 0.0]),
                (y - b[2], [0.0, -1.0]),
                (b[3] - y, [0.0, 1.0]),
            ];
            let f = faces
                .iter()
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .copied()
                .unwrap_or((0.0, [1.0, 0.0]));
            (-f.0 - BALL_RADIUS, f.1)
        };
        if c < best.0 {
            best = (c, n);
        }
    }
    best
}

#[derive(Clone, Debug)]
pub struct PointMaze {
    spec: EnvSpec,
    boxes: Vec<[f32; 4]>,
    s: [f32; 4],
}

impl Default for PointMaze {
    fn default() -> Self {
        Self::new()
    }
}

impl PointMaze {
    pub fn new() -> PointMaze {
        PointMaze {
            spec: spec(),
            boxes: wall_boxes(),
            s: [0.8, 0.8, 0.0, 0.0],
        }
    }

    /// Whether a ball centre is in free space (with a 1e-4 tolerance for contact).
    pub fn is_free(&self, x: f32, y: f32) -> bool {
        clearance(&self.boxes, x, y).0 >= -1e-4
    }

    fn validate(&self, state: &[f32]) -> Result<()> {
        check_state(&self.spec, state)?;
        let (lo, hi) = (
            0.5 + CELL_OFFSET + BALL_RADIUS,
            3.5 + CELL_OFFSET - BALL_RADIUS,
        );
        check_range(&self.spec, state, 0, lo, hi)?;
        check_range(&self.spec, state, 1, lo, hi)?;
        if !self.is_free(state[0], state[1]) {
            return Err(Error::Invalid(format!(
                "pointmaze: ball at ({}, {}) overlaps a wall; free space is x in [0.4, 1.2] or \
                 [2.4, 3.2] for y in [0.4, 3.2], or y in [2.4, 3.2]",
                state[0], state[1]
            )));
        }
        Ok(())
    }

    /// Resolve wall contact: project out and drop the velocity into the wall.
    fn collide(&self, s: &mut [f32; 4]) {
        for _ in 0..4 {
            let (c, n) = clearance(&self.boxes, s[0], s[1]);
            if c >= 0.0 {
                break;
            }
            s[0] -= c * n[0];
            s[1] -= c * n[1];
            let vn = s[2] * n[0] + s[3] * n[1];
            if vn < 0.0 {
                s[2] -= vn * n[0];
                s[3] -= vn * n[1];
            }
        }
    }
}

impl Env for PointMaze {
    fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    fn reset_to(&mut self, state: &[f32]) -> Result<()> {
        self.validate(state)?;
        self.s = [state[0], state[1], state[2], state[3]];
        Ok(())
    }

    fn state(&self) -> Vec<f32> {
        self.s.to_vec()
    }

    fn proprio_of(&self, state: &[f32]) -> Vec<f32> {
        state[..4].to_vec()
    }

    fn step(&mut self, action: &[f32]) -> Result<()> {
        check_action(&self.spec, action)?;
        let f = [
            action[0].clamp(-1.0, 1.0) * GEAR,
            action[1].clamp(-1.0, 1.0) * GEAR,
        ];
        let mut s = self.s;
        s[2] = s[2].clamp(-MAX_SPEED, MAX_SPEED);
        s[3] = s[3].clamp(-MAX_SPEED, MAX_SPEED);
        for _ in 0..SUBSTEPS {
            for k in 0..2 {
                // (M + h D) v' = M v + h f  (MuJoCo Euler: implicit joint damping)
                s[2 + k] = (MASS * s[2 + k] + DT * f[k]) / (MASS + DT * DAMPING);
                s[k] += DT * s[2 + k];
            }
            self.collide(&mut s);
        }
        self.s = s;
        Ok(())
    }

    fn render_state(&self, state: &[f32], size: usize) -> Result<Frame> {
        self.validate(state)?;
        if size == 0 {
            return Err(Error::Invalid(
                "pointmaze: render size must be at least 1".into(),
            ));
        }
        let scale = size as f32 / (2.0 * VIEW_HALF);
        let to_px = |v: f32| (v - (VIEW_CENTER - VIEW_HALF)) * scale;
        let mut f = Frame::new(size, size, FLOOR_A);
        // Checker floor: 2-unit squares in MuJoCo world coordinates (joint + 1.2).
        let world0 = VIEW_CENTER - VIEW_HALF + 1.2;
        let first = (world0 / 2.0).floor() as i32;
        let last = ((world0 + 2.0 * VIEW_HALF) / 2.0).ceil() as i32;
        for i in first..last {
            for j in first..last {
                if (i + j).rem_euclid(2) == 1 {
                    let (x0, y0) = (i as f32 * 2.0 - 1.2, j as f32 * 2.0 - 1.2);
                    f.fill_rect(
                        to_px(x0),
                        to_px(y0),
                        to_px(x0 + 2.0),
                        to_px(y0 + 2.0),
                        FLOOR_B,
                    );
                }
            }
        }
        // Walls with a thin darker rim so that adjacent cells read as blocks.
        let rim = 0.04;
        for b in &self.boxes {
            f.fill_rect(
                to_px(b[0]),
                to_px(b[2]),
                to_px(b[1]),
                to_px(b[3]),
                WALL_EDGE,
            );
            f.fill_rect(
                to_px(b[0] + rim),
                to_px(b[2] + rim),
                to_px(b[1] - rim),
                to_px(b[3] - rim),
                WALL_COLOR,
            );
        }
        f.fill_circle(
            to_px(state[0]),
            to_px(state[1]),
            DRAW_RADIUS * scale,
            BALL_COLOR,
        );
        Ok(f)
    }

    fn sample_start_goal(&self, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut rng = super::rng(seed);
        let start = sample_state(&mut rng);
        let goal = sample_state(&mut rng);
        (start, goal)
    }

    fn is_success(&self, state: &[f32], goal: &[f32]) -> bool {
        let (dx, dy) = (state[0] - goal[0], state[1] - goal[1]);
        (dx * dx + dy * dy).sqrt() < SUCCESS_DIST
    }

    fn box_clone(&self) -> Box<dyn Env> {
        Box::new(self.clone())
    }
}

/// DINO-WM's `sample_random_init_goal_states`: a position in [0.5, 3.1]^2 inside the
/// corridors (rejection sampling) and a velocity uniform in +-5.23.
pub fn sample_state(rng: &mut impl Rng) -> Vec<f32> {
    loop {
        let x: f32 = rng.random_range(0.5..3.1);
        let y: f32 = rng.random_range(0.5..3.1);
        let valid = ((0.5..=1.1).contains(&x) || (2.5..=3.1).contains(&x))
            || ((1.1..2.5).contains(&x) && (2.5..=3.1).contains(&y));
        if valid {
            let vx = rng.random_range(-SAMPLE_SPEED..SAMPLE_SPEED);
            let vy = rng.random_range(-SAMPLE_SPEED..SAMPLE_SPEED);
            return vec![x, y, vx, vy];
        }
    }
}
