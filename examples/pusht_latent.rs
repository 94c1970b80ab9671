//! What the PushT planning objective sees: for real states of the evaluation episodes, how much
//! the visual term (MSE between the encoder's latents of two rendered frames) and the proprio
//! term (alpha x MSE between the proprio embeddings) grow when only the block moves or turns,
//! and when only the agent moves, by DINO-WM's success thresholds (20 px, pi/9) and by three
//! times that. A planner that minimizes the sum pulls hardest on whatever moves the objective
//! most per pixel, so this says whether the objective can pull the block at all
//! (docs/MODELS.md, PushT evaluation).
//!
//! Usage: `cargo run --release --example pusht_latent -- [MODEL] [EPISODES]` (the shipped PushT
//! model and 40 evaluation episodes by default).
use qwm::env::{self, pusht};
use qwm::model::{format, CpuModel, Frames, WorldModel};
use qwm::plan::eval::eval_seed;
use std::f32::consts::PI;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .cloned()
        .unwrap_or_else(|| "assets/pusht.safetensors".into());
    let episodes: usize = args.get(1).map_or(Ok(40), |s| s.parse())?;
    let w = format::load(&path)?;
    let norm = w.norm.clone();
    let model = CpuModel::new(&w)?;
    let env = env::make("pusht")?;
    let size = env.spec().default_data_size;
    let alpha = env.spec().alpha;
    // (label, block shift px, block turn rad, agent shift px); shifts in a direction that
    // varies with the episode.
    let moves: [(&str, f32, f32, f32); 7] = [
        ("block moved 20 px", 20.0, 0.0, 0.0),
        ("block moved 60 px", 60.0, 0.0, 0.0),
        ("block turned pi/9", 0.0, PI / 9.0, 0.0),
        ("block turned pi/3", 0.0, PI / 3.0, 0.0),
        ("agent moved 20 px", 0.0, 0.0, 20.0),
        ("agent moved 60 px", 0.0, 0.0, 60.0),
        ("start vs goal", f32::NAN, 0.0, 0.0),
    ];
    let clamp = |v: f32| v.clamp(30.0, 482.0);
    let mut states = Vec::new();
    for i in 0..episodes {
        let (start, goal) = pusht::eval_start_goal(eval_seed(i));
        let dir = i as f32 * 2.399; // golden-angle directions
        let (dx, dy) = (dir.cos(), dir.sin());
        states.push(start.clone());
        for &(_, shift, turn, agent) in &moves {
            if shift.is_nan() {
                states.push(goal.clone());
                continue;
            }
            let mut s = start.clone();
            s[0] = clamp(s[0] + agent * dx);
            s[1] = clamp(s[1] + agent * dy);
            s[2] = clamp(s[2] + shift * dx);
            s[3] = clamp(s[3] + shift * dy);
            s[4] = pusht::wrap_angle(s[4] + turn);
            states.push(s);
        }
    }
    let per = moves.len() + 1;
    let mut bytes = Vec::new();
    for s in &states {
        bytes.extend(env.render_state(s, size)?.data);
    }
    let mut z = Vec::new();
    // Encode in chunks of one episode's frames to keep the batch small.
    for c in bytes.chunks(per * size * size * 3) {
        z.extend(model.download(&model.encode(&Frames::new(c, per, size, size)?)?)?);
    }
    let pd = env.proprio_dim();
    let np: Vec<f32> = states
        .iter()
        .flat_map(|s| norm.normalize_proprio(&env.proprio_of(s)))
        .collect();
    let pe = model.download(&model.embed_proprio(&model.upload(&np, &[states.len(), pd])?)?)?;
    let (nz, npe) = (z.len() / states.len(), pe.len() / states.len());
    let mse = |a: &[f32], b: &[f32]| {
        a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f32>() / a.len() as f32
    };
    println!("model {path}, {episodes} evaluation starts, alpha {alpha}");
    println!("{:<20} {:>12} {:>12}", "change", "visual", "proprio");
    for (m, (label, ..)) in moves.iter().enumerate() {
        let (mut v, mut p) = (0.0f64, 0.0f64);
        for e in 0..episodes {
            let (i, j) = (e * per, e * per + 1 + m);
            v += mse(&z[i * nz..(i + 1) * nz], &z[j * nz..(j + 1) * nz]) as f64;
            p += (alpha * mse(&pe[i * npe..(i + 1) * npe], &pe[j * npe..(j + 1) * npe])) as f64;
        }
        let n = episodes as f64;
        println!("{label:<20} {:>12.5} {:>12.5}", v / n, p / n);
    }
    Ok(())
}
