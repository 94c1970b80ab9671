//! Push-T (DINO-WM's pymunk task) on rapier2d.
//!
//! State = [agent x, agent y, block x, block y, block angle, agent vx, agent vy] in the
//! 512 x 512 workspace (x right, y down, as pygame draws it). The block position is the
//! origin of its local frame (the middle of the top edge of the T's bar); the angle is
//! wrapped to [0, 2 pi). Proprio = [agent x, agent y, agent vx, agent vy].
//!
//! Dynamics, one env step = 10 physics steps at 100 Hz (10 Hz control):
//! * action a (2-D, relative): PD target = agent + 100 a, clamped so the agent stays inside
//!   the walls;
//! * each physics step: agent velocity += (k_p (target - pos) - k_v vel) dt with k_p 100,
//!   k_v 20, then rapier steps the world. The agent is a kinematic disc of radius 15 (it
//!   pushes with unlimited force, as pymunk's kinematic body does).
//! * the block is a dynamic T of mass 1 (bar 120 x 30, stem 30 x 90), inertia 3000 about its
//!   centre of mass at (0, 45) (the value pymunk computes for DINO-WM's T). DINO-WM sets the
//!   space damping to 0, which removes all block velocity before every physics step: the
//!   block only moves while it is pushed (quasi-static sliding with floor friction). We do
//!   the same by zeroing the block's velocity before each rapier step.
//! * contacts are frictionless (`CONTACT_FRICTION`): the reference sets `body.friction = 1`,
//!   an attribute pymunk ignores, so its shapes keep the default friction 0.
//! * walls: four static boxes whose inner faces are at 7 and 504 (pymunk segments at 5/506
//!   with radius 2).
//!
//! A fresh rapier world is built from the 7-D state at every env step, so stepping is a
//! pure function of (state, action) and a planner can reset to any observed state.

use super::render::{Frame, Rgb};
use super::{check_action, check_range, check_state, Env, EnvSpec};
use crate::{Error, Result};
use rand::Rng;
use rand_distr::StandardNormal;
use rapier2d::prelude::*;
use std::f32::consts::PI;

pub const WORKSPACE: f32 = 512.0;
pub const SIM_HZ: usize = 100;
pub const CONTROL_HZ: usize = 10;
pub const K_P: f32 = 100.0;
pub const K_V: f32 = 20.0;
/// Relative actions are multiplied by this (DINO-WM's `action_scale`).
pub const ACTION_SCALE: f32 = 100.0;
pub const AGENT_RADIUS: f32 = 15.0;
/// Inner faces of the walls.
pub const WALL_LO: f32 = 7.0;
pub const WALL_HI: f32 = 504.0;
/// Scale of the T (pymunk `scale`) and its length in units of `scale`.
pub const T_SCALE: f32 = 30.0;
pub const T_LENGTH: f32 = 4.0;
pub const BLOCK_MASS: f32 = 1.0;
pub const BLOCK_INERTIA: f32 = 3000.0;
pub const CONTACT_FRICTION: f32 = 0.0;
/// Success: distance on [agent xy, block xy] below this and angle difference below
/// `SUCCESS_ANGLE`.
pub const SUCCESS_DIST: f32 = 20.0;
pub const SUCCESS_ANGLE: f32 = PI / 9.0;
/// The goal area drawn in every frame (DINO-WM's fixed `goal_pose`).
pub const GOAL_POSE: [f32; 3] = [256.0, 256.0, PI / 4.0];

const BG: Rgb = [255, 255, 255];
const GOAL_COLOR: Rgb = [144, 238, 144]; // LightGreen
const GOAL_EDGE: Rgb = [60, 179, 113]; // MediumSeaGreen outline
const WALL_COLOR: Rgb = [211, 211, 211]; // LightGray
const BLOCK_EDGE: Rgb = [119, 136, 153]; // LightSlateGray
const BLOCK_FILL: Rgb = [142, 163, 183]; // 1.2 x LightSlateGray (pymunk debug draw)
const AGENT_EDGE: Rgb = [65, 105, 225]; // RoyalBlue
const AGENT_FILL: Rgb = [78, 126, 255]; // 1.2 x RoyalBlue

fn spec() -> EnvSpec {
    EnvSpec {
        name: "pusht",
        state_dim: 7,
        action_dim: 2,
        proprio_dim: 4,
        native_size: 224,
        default_data_size: 64,
        success_threshold: SUCCESS_DIST,
        alpha: 1.0,
        action_clip: None,
        action_scale: 1.0,
        state_names: &[
            "agent x",
            "agent y",
            "block x",
            "block y",
            "block angle",
            "agent vx",
            "agent vy",
        ],
        plan_opt_steps: 30,
        plan_max_iters: 30,
    }
}

/// The two rectangles of the T in block-local coordinates: [x0, y0, x1, y1].
pub const T_PARTS: [[f32; 4]; 2] = [
    [
        -T_LENGTH * T_SCALE / 2.0,
        0.0,
        T_LENGTH * T_SCALE / 2.0,
        T_SCALE,
    ],
    [-T_SCALE / 2.0, T_SCALE, T_SCALE / 2.0, T_LENGTH * T_SCALE],
];

/// Corners of the T's parts in world coordinates for a block pose.
pub fn t_polygons(x: f32, y: f32, angle: f32) -> [[[f32; 2]; 4]; 2] {
    let (s, c) = angle.sin_cos();
    let tf = |px: f32, py: f32| [x + c * px - s * py, y + s * px + c * py];
    T_PARTS.map(|p| {
        [
            tf(p[0], p[1]),
            tf(p[2], p[1]),
            tf(p[2], p[3]),
            tf(p[0], p[3]),
        ]
    })
}

/// An angle in [0, 2 pi).
pub fn wrap_angle(a: f32) -> f32 {
    let w = a.rem_euclid(2.0 * PI);
    if w >= 2.0 * PI {
        0.0
    } else {
        w
    }
}

/// Absolute angle difference wrapped to [0, pi].
pub fn angle_diff(a: f32, b: f32) -> f32 {
    let d = (a - b).rem_euclid(2.0 * PI);
    d.min(2.0 * PI - d)
}

/// Whether the block moved between two states: its origin by more than 0.5 px or its angle
/// by more than 0.5 degrees. Without a push the block stays exactly where it is (no
/// velocity survives a physics step), so this counts the steps with contact.
pub fn block_moved(a: &[f32], b: &[f32]) -> bool {
    let d = ((a[2] - b[2]).powi(2) + (a[3] - b[3]).powi(2)).sqrt();
    d > 0.5 || angle_diff(a[4], b[4]) > 0.5f32.to_radians()
}

#[derive(Clone, Debug)]
pub struct PushT {
    spec: EnvSpec,
    s: [f32; 7],
}

impl Default for PushT {
    fn default() -> Self {
        Self::new()
    }
}

const AGENT_MIN: f32 = WALL_LO + AGENT_RADIUS;
const AGENT_MAX: f32 = WALL_HI - AGENT_RADIUS;

impl PushT {
    pub fn new() -> PushT {
        PushT {
            spec: spec(),
            s: [256.0, 400.0, 256.0, 300.0, 0.0, 0.0, 0.0],
        }
    }

    fn validate(&self, state: &[f32]) -> Result<()> {
        check_state(&self.spec, state)?;
        check_range(&self.spec, state, 0, AGENT_MIN, AGENT_MAX)?;
        check_range(&self.spec, state, 1, AGENT_MIN, AGENT_MAX)?;
        check_range(&self.spec, state, 2, WALL_LO, WALL_HI)?;
        check_range(&self.spec, state, 3, WALL_LO, WALL_HI)?;
        Ok(())
    }

    /// One env step from `s` (already validated) with a finite action.
    pub fn transition(s: &[f32; 7], action: [f32; 2]) -> [f32; 7] {
        let mut world = PhysicsWorld::new();
        world.gravity = Vector::ZERO;
        world.integration_parameters.dt = 1.0 / SIM_HZ as f32;
        // Rapier's tolerances scale with the length unit; our unit is a pixel and objects are
        // ~100 px, so contacts are predicted 2 px ahead and penetrations stay well below 1 px
        // in open space.
        world.integration_parameters.length_unit = 100.0;

        // Walls: thick static boxes outside the workspace.
        let t = 100.0;
        let mid = WORKSPACE / 2.0;
        let half = WORKSPACE;
        for (cx, cy, hx, hy) in [
            (WALL_LO - t, mid, t, half),
            (WALL_HI + t, mid, t, half),
            (mid, WALL_LO - t, half, t),
            (mid, WALL_HI + t, half, t),
        ] {
            world.insert_collider(
                ColliderBuilder::cuboid(hx, hy)
                    .translation(Vector::new(cx, cy))
                    .friction(CONTACT_FRICTION)
                    .restitution(0.0),
                None,
            );
        }

        let (agent, _) = world.insert(
            RigidBodyBuilder::kinematic_velocity_based()
                .translation(Vector::new(s[0], s[1]))
                .linvel(Vector::new(s[5], s[6])),
            ColliderBuilder::ball(AGENT_RADIUS)
                .friction(CONTACT_FRICTION)
                .restitution(0.0),
        );

        let com = Vector::new(
            0.0,
            (T_SCALE / 2.0 + (T_SCALE + T_LENGTH * T_SCALE) / 2.0) / 2.0,
        );
        let block = world.insert_body(
            RigidBodyBuilder::dynamic()
                .translation(Vector::new(s[2], s[3]))
                .rotation(s[4])
                .additional_mass_properties(MassProperties::new(com, BLOCK_MASS, BLOCK_INERTIA))
                .can_sleep(false),
        );
        for p in T_PARTS {
            world.insert_collider(
                ColliderBuilder::cuboid((p[2] - p[0]) / 2.0, (p[3] - p[1]) / 2.0)
                    .translation(Vector::new((p[0] + p[2]) / 2.0, (p[1] + p[3]) / 2.0))
                    .density(0.0)
                    .friction(CONTACT_FRICTION)
                    .restitution(0.0),
                Some(block),
            );
        }

        let target = [
            (s[0] + ACTION_SCALE * action[0]).clamp(AGENT_MIN, AGENT_MAX),
            (s[1] + ACTION_SCALE * action[1]).clamp(AGENT_MIN, AGENT_MAX),
        ];
        let dt = 1.0 / SIM_HZ as f32;
        let mut pos = [s[0], s[1]];
        let mut vel = [s[5], s[6]];
        for _ in 0..SIM_HZ / CONTROL_HZ {
            for k in 0..2 {
                let acc = K_P * (target[k] - pos[k]) - K_V * vel[k];
                vel[k] += acc * dt;
            }
            world.bodies[agent].set_linvel(Vector::new(vel[0], vel[1]), true);
            // Space damping 0: the block keeps no velocity from the previous physics step.
            let b = &mut world.bodies[block];
            b.set_linvel(Vector::ZERO, true);
            b.set_angvel(0.0, true);
            world.step();
            let p = world.bodies[agent].translation();
            pos = [p.x, p.y];
            // Keep the agent inside the walls (pymunk's kinematic agent could leave them; a
            // target clamp plus this guard keeps every state valid).
            let mut clamped = false;
            for k in 0..2 {
                if pos[k] < AGENT_MIN || pos[k] > AGENT_MAX {
                    pos[k] = pos[k].clamp(AGENT_MIN, AGENT_MAX);
                    vel[k] = 0.0;
                    clamped = true;
                }
            }
            if clamped {
                world.bodies[agent].set_translation(Vector::new(pos[0], pos[1]), true);
            }
        }
        let b = &world.bodies[block];
        let bp = b.translation();
        let mut out = [
            pos[0],
            pos[1],
            bp.x,
            bp.y,
            wrap_angle(b.rotation().angle()),
            vel[0],
            vel[1],
        ];
        // The walls keep the block inside; guard against a squeeze by the kinematic agent.
        out[2] = out[2].clamp(WALL_LO, WALL_HI);
        out[3] = out[3].clamp(WALL_LO, WALL_HI);
        if out.iter().any(|v| !v.is_finite()) {
            // Never let a solver failure poison the state: keep the block where it was.
            out = [pos[0], pos[1], s[2], s[3], s[4], vel[0], vel[1]];
        }
        out
    }
}

impl Env for PushT {
    fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    fn reset_to(&mut self, state: &[f32]) -> Result<()> {
        self.validate(state)?;
        let mut s = [0f32; 7];
        s.copy_from_slice(state);
        s[4] = wrap_angle(s[4]);
        self.s = s;
        Ok(())
    }

    fn state(&self) -> Vec<f32> {
        self.s.to_vec()
    }

    fn proprio_of(&self, state: &[f32]) -> Vec<f32> {
        vec![state[0], state[1], state[5], state[6]]
    }

    fn step(&mut self, action: &[f32]) -> Result<()> {
        check_action(&self.spec, action)?;
        self.s = PushT::transition(&self.s, [action[0], action[1]]);
        Ok(())
    }

    fn render_state(&self, state: &[f32], size: usize) -> Result<Frame> {
        self.validate(state)?;
        if size == 0 {
            return Err(Error::Invalid(
                "pusht: render size must be at least 1".into(),
            ));
        }
        let k = size as f32 / WORKSPACE;
        let ss = if size >= 256 { 2 } else { 4 };
        let px = |p: [f32; 2]| [p[0] * k, p[1] * k];
        let mut f = Frame::new(size, size, BG);
        // Goal area (fixed pose), filled with an outline.
        let goal = t_polygons(GOAL_POSE[0], GOAL_POSE[1], GOAL_POSE[2]);
        for poly in &goal {
            f.fill_convex(&poly.map(px), GOAL_COLOR, ss);
        }
        draw_t_outline(&mut f, &goal, k, GOAL_EDGE, ss);
        // Walls (pymunk segments of radius 2 along x/y = 5 and 506).
        let (a, b) = (5.0 * k, 506.0 * k);
        let w = (4.0 * k).max(1.0);
        for (p, q) in [
            ([a, a], [b, a]),
            ([b, a], [b, b]),
            ([b, b], [a, b]),
            ([a, b], [a, a]),
        ] {
            f.thick_line(p, q, w, WALL_COLOR, ss);
        }
        // Agent: RoyalBlue disc with a lighter inner disc (pymunk debug draw).
        f.fill_circle(state[0] * k, state[1] * k, AGENT_RADIUS * k, AGENT_EDGE);
        f.fill_circle(
            state[0] * k,
            state[1] * k,
            (AGENT_RADIUS - 4.0) * k,
            AGENT_FILL,
        );
        // Block drawn after the agent, as pymunk draws shapes in insertion order.
        let block = t_polygons(state[2], state[3], state[4]);
        for poly in &block {
            f.fill_convex(&poly.map(px), BLOCK_FILL, ss);
        }
        draw_t_outline(&mut f, &block, k, BLOCK_EDGE, ss);
        Ok(f)
    }

    fn agent_uv(&self, state: &[f32]) -> [f32; 2] {
        [state[0] / WORKSPACE, state[1] / WORKSPACE]
    }

    /// DINO-WM's PushT evaluation pair: [`eval_start_goal`].
    fn sample_start_goal(&self, seed: u64) -> (Vec<f32>, Vec<f32>) {
        eval_start_goal(seed)
    }

    fn is_success(&self, state: &[f32], goal: &[f32]) -> bool {
        let pos: f32 = (0..4)
            .map(|i| (state[i] - goal[i]) * (state[i] - goal[i]))
            .sum::<f32>()
            .sqrt();
        pos < SUCCESS_DIST && angle_diff(state[4], goal[4]) < SUCCESS_ANGLE
    }

    /// Euclidean distance with the angle difference wrapped to [0, pi].
    fn state_distance(&self, state: &[f32], goal: &[f32]) -> f32 {
        (0..7)
            .map(|i| {
                let d = if i == 4 {
                    angle_diff(state[i], goal[i])
                } else {
                    state[i] - goal[i]
                };
                d * d
            })
            .sum::<f32>()
            .sqrt()
    }

    fn box_clone(&self) -> Box<dyn Env> {
        Box::new(self.clone())
    }
}

/// Outline of a T: pymunk draws each part's edges as 2-px-radius fat segments.
fn draw_t_outline(f: &mut Frame, parts: &[[[f32; 2]; 4]; 2], k: f32, color: Rgb, ss: usize) {
    let w = (4.0 * k).max(1.0);
    for poly in parts {
        for i in 0..4 {
            let (a, b) = (poly[i], poly[(i + 1) % 4]);
            f.thick_line([a[0] * k, a[1] * k], [b[0] * k, b[1] * k], w, color, ss);
        }
    }
}

/// Steps between an evaluation start and its goal (DINO-WM: `goal_H` 5 x frameskip 5).
pub const EVAL_GOAL_STEPS: usize = 25;
/// Length of the behaviour-policy trajectories evaluation segments are cut from (the
/// episode length of the shipped model's dataset).
pub const EVAL_TRAJ_STEPS: usize = 100;

/// DINO-WM's PushT evaluation (`goal_source: dset`): start and goal are states
/// `EVAL_GOAL_STEPS` apart on a trajectory like the training data's, so the goal is reachable
/// and the block is usually moved and turned on the way. Here the trajectory is a fresh
/// episode of the data policy ([`super::policy::PushPolicy`]) drawn from `seed`, which plays
/// the role of DINO-WM's validation split: the evaluation seeds are hashed apart from the
/// dataset's, so no evaluation trajectory is a training one. From `rng(seed)`: the offset
/// `t0` uniform in `0..=EVAL_TRAJ_STEPS - EVAL_GOAL_STEPS`, then the episode as `qwm data`
/// would run it; start = state `t0`, goal = state `t0 + EVAL_GOAL_STEPS`. A segment whose
/// start already meets the goal (nothing moved) is skipped for the next one from the same
/// generator, so every episode needs planning (at most 100 draws: the block moves in 99% of
/// the policy's 25-step windows, so the cap is never reached in practice).
pub fn eval_start_goal(seed: u64) -> (Vec<f32>, Vec<f32>) {
    let (start, goal, _) = eval_segment(seed);
    (start, goal)
}

/// [`eval_start_goal`] with the `EVAL_GOAL_STEPS` raw actions of the data policy that lead
/// from the start to the goal (`[steps * 2]`): the goal is reachable by construction, and
/// these actions say what a world model predicts for a known solution.
pub fn eval_segment(seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    use super::policy::Policy;
    let mut rng = super::rng(seed);
    for draw in 0..100 {
        let t0 = rng.random_range(0..=EVAL_TRAJ_STEPS - EVAL_GOAL_STEPS);
        let mut pol = super::policy::PushPolicy::default();
        let mut s = pol.start_state(&mut rng);
        let mut start = s.clone();
        let mut actions = Vec::with_capacity(2 * EVAL_GOAL_STEPS);
        for t in 0..t0 + EVAL_GOAL_STEPS {
            if t == t0 {
                start = s.clone();
            }
            let a = pol.act(&s, &mut rng);
            if t >= t0 {
                actions.extend_from_slice(&a[..2]);
            }
            s = PushT::transition(&to7(&s), [a[0], a[1]]).to_vec();
        }
        if draw == 99 || !PushT::new().is_success(&start, &s) {
            return (start, s, actions);
        }
    }
    unreachable!("the loop returns by its 100th draw")
}

fn to7(s: &[f32]) -> [f32; 7] {
    let mut o = [0f32; 7];
    o.copy_from_slice(s);
    o
}

/// DINO-WM's random state: agent in [50, 450)^2, block in [100, 400)^2 (integers), angle
/// 2 pi N(0, 1) - pi (wrapped), agent at rest.
pub fn sample_state(rng: &mut impl Rng) -> Vec<f32> {
    let ax = rng.random_range(50..450) as f32;
    let ay = rng.random_range(50..450) as f32;
    let bx = rng.random_range(100..400) as f32;
    let by = rng.random_range(100..400) as f32;
    let n: f32 = rng.sample(StandardNormal);
    vec![ax, ay, bx, by, wrap_angle(n * 2.0 * PI - PI), 0.0, 0.0]
}
