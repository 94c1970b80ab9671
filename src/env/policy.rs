//! Data-collection policies, as in DINO-WM's offline data: noisy random walks for Wall and
//! PointMaze, noisy goal-directed pushes for PushT. Every random choice comes from the RNG
//! passed in, so an episode is a pure function of its seed.

use super::{pointmaze, pusht, wall};
use crate::{Error, Result};
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Distribution, Normal};
use std::f32::consts::PI;

pub trait Policy: Send {
    /// Name recorded in dataset manifests.
    fn name(&self) -> &'static str;
    /// A start state for a new episode.
    fn start_state(&mut self, rng: &mut StdRng) -> Vec<f32>;
    /// The next action for `state`.
    fn act(&mut self, state: &[f32], rng: &mut StdRng) -> Vec<f32>;
}

/// The data policy of an environment.
pub fn for_env(name: &str) -> Result<Box<dyn Policy>> {
    match super::make(name)?.spec().name {
        "wall" => Ok(Box::new(WallWalk::default())),
        "pointmaze" => Ok(Box::new(MazeWalk::default())),
        "pusht" => Ok(Box::new(PushPolicy::default())),
        other => Err(Error::Invalid(format!("no data policy for '{other}'"))),
    }
}

fn normal(rng: &mut StdRng, mean: f32, std: f32) -> f32 {
    Normal::new(mean, std)
        .map(|d| d.sample(rng))
        .unwrap_or(mean)
}

/// Wall: a heading that drifts by N(0, 0.2) rad per step and a step length N(1, 0.4)
/// clipped to [0.2, 1.8] (DINO-WM's `action_angle_noise`, `action_step_mean/std`,
/// bounds). Half the episodes start heading for the door so that many cross the wall; the
/// heading bounces off the border.
#[derive(Default)]
pub struct WallWalk {
    heading: f32,
}

impl Policy for WallWalk {
    fn name(&self) -> &'static str {
        "wall-random-walk"
    }
    fn start_state(&mut self, rng: &mut StdRng) -> Vec<f32> {
        let p = wall::random_free_position(rng);
        self.heading = if rng.random::<f32>() < 0.5 {
            (wall::DOOR_Y - p[1]).atan2(wall::WALL_X - p[0])
        } else {
            rng.random_range(-PI..PI)
        };
        p.to_vec()
    }
    fn act(&mut self, state: &[f32], rng: &mut StdRng) -> Vec<f32> {
        self.heading += normal(rng, 0.0, 0.2);
        let mag = normal(rng, 1.0, 0.4).clamp(0.2, 1.8);
        let (mut dx, mut dy) = (self.heading.cos(), self.heading.sin());
        let (lo, hi) = (wall::BORDER + 3.0, wall::SIZE as f32 - wall::BORDER - 4.0);
        if (state[0] < lo && dx < 0.0) || (state[0] > hi && dx > 0.0) {
            dx = -dx;
        }
        if (state[1] < lo && dy < 0.0) || (state[1] > hi && dy > 0.0) {
            dy = -dy;
        }
        self.heading = dy.atan2(dx);
        vec![mag * dx, mag * dy]
    }
}

/// PointMaze: temporally correlated noise, a <- clip(0.8 a + N(0, 0.5)), from a random free
/// start at low speed.
#[derive(Default)]
pub struct MazeWalk {
    prev: [f32; 2],
}

impl Policy for MazeWalk {
    fn name(&self) -> &'static str {
        "pointmaze-correlated-noise"
    }
    fn start_state(&mut self, rng: &mut StdRng) -> Vec<f32> {
        self.prev = [0.0, 0.0];
        let mut s = pointmaze::sample_state(rng);
        s[2] = normal(rng, 0.0, 0.1);
        s[3] = normal(rng, 0.0, 0.1);
        s
    }
    fn act(&mut self, _state: &[f32], rng: &mut StdRng) -> Vec<f32> {
        for k in 0..2 {
            self.prev[k] = (0.8 * self.prev[k] + normal(rng, 0.0, 0.5)).clamp(-1.0, 1.0);
        }
        self.prev.to_vec()
    }
}

/// PushT: pick a goal point for the block and a contact offset, walk around the block to the
/// side opposite to the goal, push through the contact point for a while, repeat. Actions
/// are relative moves (x100 px) capped at 0.6 with N(0, 0.1) noise.
///
/// The push length counts only steps in contact range, and an approach that takes longer
/// than `MAX_APPROACH` steps is abandoned for a new push, so most steps move the block
/// (docs/MODELS.md: 35% of steps did with the first version, which counted the walk
/// around the block as part of the push). The contact point is offset sideways from the
/// block's centre of mass by up to `MAX_OFFSET` px, so pushes turn the block as well as
/// slide it: the evaluation's success needs the angle within pi/9.
#[derive(Default)]
pub struct PushPolicy {
    dir: [f32; 2],
    offset: f32,
    steps_left: usize,
    approach_left: usize,
    pushing: bool,
}

impl PushPolicy {
    const MAX_APPROACH: usize = 25;
    const MAX_OFFSET: f32 = 40.0;

    /// A new push: towards a random goal point in the middle of the table (so blocks are not
    /// driven into walls, where they would only be squeezed under the kinematic agent), with
    /// N(0, 0.5) rad of direction noise; a random direction before the block is known.
    fn new_push(&mut self, com: Option<[f32; 2]>, rng: &mut StdRng) {
        let goal = [
            rng.random_range(128.0..384.0f32),
            rng.random_range(128.0..384.0f32),
        ];
        let a = match com {
            Some(c) => (goal[1] - c[1]).atan2(goal[0] - c[0]) + normal(rng, 0.0, 0.5),
            None => rng.random_range(-PI..PI),
        };
        self.dir = [a.cos(), a.sin()];
        self.offset = rng.random_range(-Self::MAX_OFFSET..Self::MAX_OFFSET);
        self.steps_left = rng.random_range(8..20);
        self.approach_left = Self::MAX_APPROACH;
        self.pushing = false;
    }
}

impl Policy for PushPolicy {
    fn name(&self) -> &'static str {
        "pusht-contact-pushes"
    }
    fn start_state(&mut self, rng: &mut StdRng) -> Vec<f32> {
        self.new_push(None, rng);
        pusht::sample_state(rng)
    }
    fn act(&mut self, s: &[f32], rng: &mut StdRng) -> Vec<f32> {
        // Block centre of mass in the world, and the contact line through it.
        let (sn, cs) = s[4].sin_cos();
        let com_local = 45.0;
        let com = [s[2] - sn * com_local, s[3] + cs * com_local];
        if self.steps_left == 0 || (!self.pushing && self.approach_left == 0) {
            self.new_push(Some(com), rng);
        }
        let perp = [-self.dir[1], self.dir[0]];
        let c = [
            com[0] + perp[0] * self.offset,
            com[1] + perp[1] * self.offset,
        ];
        let behind = [c[0] - self.dir[0] * 90.0, c[1] - self.dir[1] * 90.0];
        let dist = ((s[0] - behind[0]).powi(2) + (s[1] - behind[1]).powi(2)).sqrt();
        if dist < 25.0 {
            self.pushing = true;
        }
        if self.pushing {
            self.steps_left -= 1;
        } else {
            self.approach_left -= 1;
        }
        let lim = |v: f32| v.clamp(30.0, pusht::WORKSPACE - 30.0);
        let behind = [lim(behind[0]), lim(behind[1])];
        let target = if self.pushing {
            [c[0] + self.dir[0] * 60.0, c[1] + self.dir[1] * 60.0]
        } else {
            // Walk around the block, never through it (the kinematic agent would drag it
            // along): along a circle of radius `CLEAR` about its centre of mass (the T
            // reaches 75 px from it, the agent 15 px more) towards the side opposite to the
            // goal, at most 0.5 rad per step, then straight to the start of the push.
            const CLEAR: f32 = 110.0;
            let rel = [s[0] - com[0], s[1] - com[1]];
            let r = (rel[0] * rel[0] + rel[1] * rel[1]).sqrt().max(1e-3);
            let th = rel[1].atan2(rel[0]);
            let th_b = (behind[1] - com[1]).atan2(behind[0] - com[0]);
            let mut dth = (th_b - th).rem_euclid(2.0 * PI);
            if dth > PI {
                dth -= 2.0 * PI;
            }
            if dth.abs() < 0.5 && r > 80.0 {
                behind
            } else {
                let t = th + dth.clamp(-0.5, 0.5);
                [lim(com[0] + CLEAR * t.cos()), lim(com[1] + CLEAR * t.sin())]
            }
        };
        let mut a = [
            (target[0] - s[0]) / pusht::ACTION_SCALE,
            (target[1] - s[1]) / pusht::ACTION_SCALE,
        ];
        let n = (a[0] * a[0] + a[1] * a[1]).sqrt();
        if n > 0.6 {
            a = [a[0] * 0.6 / n, a[1] * 0.6 / n];
        }
        vec![a[0] + normal(rng, 0.0, 0.1), a[1] + normal(rng, 0.0, 0.1)]
    }
}
