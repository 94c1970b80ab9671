//! DINO-WM's "DotWall": a dot on a 65 x 65 canvas, a vertical wall with a door, and a
//! border. State = proprio = dot (x, y) in pixel coordinates (x = column, y = row).
//!
//! Dynamics: `p' = p + 2 a`. A move whose segment would enter the wall outside the door or
//! cross the border is stopped where it first touches the obstacle and moved 0.5 px back
//! off that face (DINO-WM adds the same 0.5 px push-back); the rest of the move is dropped.

use super::render::{Frame, Rgb};
use super::{check_action, check_range, check_state, Env, EnvSpec};
use crate::{Error, Result};
use rand::Rng;

/// Canvas size of the reference renderer.
pub const SIZE: usize = 65;
/// Centre column of the middle wall.
pub const WALL_X: f32 = 32.0;
/// Half width of the wall (DINO-WM's `wall_width // 2` with width 6): columns 29..=35.
pub const WALL_HALF: f32 = 3.0;
/// Centre row of the door.
pub const DOOR_Y: f32 = 30.0;
/// Half height of the door (`door_space`): rows 26..=34 are open.
pub const DOOR_HALF: f32 = 4.0;
/// DINO-WM's `border_wall_loc`: border lines at index 4 and 65 - 5 = 60.
pub const BORDER: f32 = 5.0;
/// Standard deviation of the Gaussian dot, px.
pub const DOT_STD: f32 = 1.7;
/// Success when the dot is closer than this to the goal, px.
pub const SUCCESS_DIST: f32 = 4.5;
/// Distance a blocked move is pushed back off the obstacle face, px.
const PUSH_BACK: f32 = 0.5;

const LO: f32 = BORDER - 1.0; // 4
const HI: f32 = SIZE as f32 - BORDER; // 60
const BIG: f32 = 1.0e6;

const FLOOR: Rgb = [255, 255, 255];
const WALL_COLOR: Rgb = [0, 0, 0];

/// Axis-aligned solid boxes [x0, x1] x [y0, y1]: the two wall pieces and the outside of the
/// border.
const SOLIDS: [[f32; 4]; 6] = [
    [
        WALL_X - WALL_HALF,
        WALL_X + WALL_HALF,
        -BIG,
        DOOR_Y - DOOR_HALF,
    ],
    [
        WALL_X - WALL_HALF,
        WALL_X + WALL_HALF,
        DOOR_Y + DOOR_HALF,
        BIG,
    ],
    [-BIG, LO, -BIG, BIG],
    [HI, BIG, -BIG, BIG],
    [-BIG, BIG, -BIG, LO],
    [-BIG, BIG, HI, BIG],
];

fn spec() -> EnvSpec {
    EnvSpec {
        name: "wall",
        state_dim: 2,
        action_dim: 2,
        proprio_dim: 2,
        native_size: SIZE,
        default_data_size: 64,
        success_threshold: SUCCESS_DIST,
        alpha: 1.0,
        action_clip: None,
        action_scale: 1.0,
        state_names: &["dot x", "dot y"],
        plan_opt_steps: 10,
        plan_max_iters: 50,
    }
}

/// Whether a dot position is in free space (inside the border, not inside the wall).
pub fn is_free(x: f32, y: f32) -> bool {
    !SOLIDS
        .iter()
        .any(|s| x > s[0] && x < s[1] && y > s[2] && y < s[3])
}

#[derive(Clone, Debug)]
pub struct Wall {
    spec: EnvSpec,
    pos: [f32; 2],
}

impl Default for Wall {
    fn default() -> Self {
        Self::new()
    }
}

impl Wall {
    pub fn new() -> Wall {
        Wall {
            spec: spec(),
            pos: [16.0, 30.0],
        }
    }

    fn validate(&self, state: &[f32]) -> Result<()> {
        check_state(&self.spec, state)?;
        check_range(&self.spec, state, 0, LO, HI)?;
        check_range(&self.spec, state, 1, LO, HI)?;
        if !is_free(state[0], state[1]) {
            return Err(Error::Invalid(format!(
                "wall: dot ({}, {}) is inside the wall (columns {}..{} outside the door rows {}..{})",
                state[0],
                state[1],
                WALL_X - WALL_HALF,
                WALL_X + WALL_HALF,
                DOOR_Y - DOOR_HALF,
                DOOR_Y + DOOR_HALF
            )));
        }
        Ok(())
    }

    /// Next position from `p` under action `a` (see the module doc).
    pub fn transition(p: [f32; 2], a: [f32; 2]) -> [f32; 2] {
        let d = [2.0 * a[0], 2.0 * a[1]];
        let mut first: Option<(f32, [f32; 2])> = None;
        for s in &SOLIDS {
            if let Some((t, n)) = segment_enters_box(p, d, s) {
                if first.is_none_or(|(t0, _)| t < t0) {
                    first = Some((t, n));
                }
            }
        }
        let q = match first {
            None => [p[0] + d[0], p[1] + d[1]],
            Some((t, n)) => [
                p[0] + t * d[0] + PUSH_BACK * n[0],
                p[1] + t * d[1] + PUSH_BACK * n[1],
            ],
        };
        // Safety net for corner cases (touching two faces at once): never end in a solid.
        if is_free(q[0], q[1]) {
            q
        } else {
            p
        }
    }
}

/// Entry time t in [0, 1] and outward normal of the entered face when the segment
/// p + t d enters the open box; None when it does not.
fn segment_enters_box(p: [f32; 2], d: [f32; 2], b: &[f32; 4]) -> Option<(f32, [f32; 2])> {
    let mut t_in = f32::NEG_INFINITY;
    let mut t_out = f32::INFINITY;
    let mut normal = [0.0, 0.0];
    for axis in 0..2 {
        let (lo, hi) = (b[axis * 2], b[axis * 2 + 1]);
        if d[axis] == 0.0 {
            if p[axis] <= lo || p[axis] >= hi {
                return None;
            }
            continue;
        }
        let (mut t0, mut t1) = ((lo - p[axis]) / d[axis], (hi - p[axis]) / d[axis]);
        let mut n = -1.0;
        if t0 > t1 {
            std::mem::swap(&mut t0, &mut t1);
            n = 1.0;
        }
        if t0 > t_in {
            t_in = t0;
            normal = [0.0, 0.0];
            normal[axis] = n;
        }
        t_out = t_out.min(t1);
    }
    if t_in < t_out && t_out > 0.0 && (0.0..=1.0).contains(&t_in) {
        Some((t_in, normal))
    } else {
        None
    }
}

impl Env for Wall {
    fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    fn reset_to(&mut self, state: &[f32]) -> Result<()> {
        self.validate(state)?;
        self.pos = [state[0], state[1]];
        Ok(())
    }

    fn state(&self) -> Vec<f32> {
        self.pos.to_vec()
    }

    fn proprio_of(&self, state: &[f32]) -> Vec<f32> {
        state[..2].to_vec()
    }

    fn step(&mut self, action: &[f32]) -> Result<()> {
        check_action(&self.spec, action)?;
        self.pos = Wall::transition(self.pos, [action[0], action[1]]);
        Ok(())
    }

    fn render_state(&self, state: &[f32], size: usize) -> Result<Frame> {
        self.validate(state)?;
        if size == 0 {
            return Err(Error::Invalid(
                "wall: render size must be at least 1".into(),
            ));
        }
        Ok(render_native(state[0], state[1]).resize(size, size))
    }

    fn sample_start_goal(&self, seed: u64) -> (Vec<f32>, Vec<f32>) {
        // DINO-WM's generate_random_state: start left of the wall, goal right of it, a
        // 2-std padding from walls, order swapped half the time.
        let mut rng = super::rng(seed);
        let pad = 2.0 * DOT_STD;
        let border_pad = BORDER - 1.0 + pad;
        let (sx0, sx1) = (border_pad, WALL_X - WALL_HALF - pad);
        let (tx0, tx1) = (WALL_X + WALL_HALF + pad, SIZE as f32 - 1.0 - border_pad);
        let (y0, y1) = (border_pad, SIZE as f32 - 1.0 - border_pad);
        let mut sx = rng.random_range(sx0..sx1);
        let mut tx = rng.random_range(tx0..tx1);
        let sy = rng.random_range(y0..y1);
        let ty = rng.random_range(y0..y1);
        if rng.random::<f32>() < 0.5 {
            std::mem::swap(&mut sx, &mut tx);
        }
        (vec![sx, sy], vec![tx, ty])
    }

    fn is_success(&self, state: &[f32], goal: &[f32]) -> bool {
        let (dx, dy) = (state[0] - goal[0], state[1] - goal[1]);
        (dx * dx + dy * dy).sqrt() < SUCCESS_DIST
    }

    fn box_clone(&self) -> Box<dyn Env> {
        Box::new(self.clone())
    }
}

/// Whether pixel (col, row) of the 65 px canvas is drawn as wall (DINO-WM's `_render_walls`).
pub fn is_wall_pixel(col: usize, row: usize) -> bool {
    let (c, r) = (col as f32, row as f32);
    let middle = (WALL_X - WALL_HALF..=WALL_X + WALL_HALF).contains(&c)
        && !(DOOR_Y - DOOR_HALF..=DOOR_Y + DOOR_HALF).contains(&r);
    let border =
        col == LO as usize || col == HI as usize || row == LO as usize || row == HI as usize;
    middle || border
}

/// The 65 px frame: white floor, black walls, a red Gaussian dot (green and blue reduced by
/// the normalized Gaussian, as DINO-WM's `channels_to_img`). Pixel (i, j) is centred at
/// coordinate (i, j).
fn render_native(x: f32, y: f32) -> Frame {
    let mut f = Frame::new(SIZE, SIZE, FLOOR);
    let inv = 1.0 / (2.0 * DOT_STD * DOT_STD);
    // DINO-WM divides by the maximum over the pixel grid, reached at the nearest pixel.
    let (nx, ny) = (
        x.round().clamp(0.0, (SIZE - 1) as f32),
        y.round().clamp(0.0, (SIZE - 1) as f32),
    );
    let max = (-((nx - x).powi(2) + (ny - y).powi(2)) * inv).exp();
    // Beyond 8 px the blob is below 1/255 of its peak: only visit pixels near the dot.
    let r = 8.0;
    let (c0, c1) = (
        (x - r).max(0.0) as usize,
        ((x + r).ceil().max(0.0) as usize).min(SIZE - 1),
    );
    let (r0, r1) = (
        (y - r).max(0.0) as usize,
        ((y + r).ceil().max(0.0) as usize).min(SIZE - 1),
    );
    for row in r0..=r1 {
        for col in c0..=c1 {
            let (dx, dy) = (col as f32 - x, row as f32 - y);
            let g = (-(dx * dx + dy * dy) * inv).exp() / max;
            let red = (g * 255.0) as u8; // truncation, as torch's .to(uint8)
            let i = (row * SIZE + col) * 3;
            f.data[i + 1] = 255 - red;
            f.data[i + 2] = 255 - red;
        }
    }
    for row in 0..SIZE {
        for col in 0..SIZE {
            if is_wall_pixel(col, row) {
                let i = (row * SIZE + col) * 3;
                f.data[i..i + 3].copy_from_slice(&WALL_COLOR);
            }
        }
    }
    f
}

/// Sample a uniformly random free dot position.
pub fn random_free_position(rng: &mut impl Rng) -> [f32; 2] {
    let pad = 2.0 * DOT_STD;
    loop {
        let x = rng.random_range(LO + pad..HI - pad);
        let y = rng.random_range(LO + pad..HI - pad);
        if is_free(x, y) && !(WALL_X - WALL_HALF - 1.0..=WALL_X + WALL_HALF + 1.0).contains(&x) {
            return [x, y];
        }
    }
}
