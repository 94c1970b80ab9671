//! What a Wall model's planning objective says about pairs of real states: for each pair of
//! dot positions, the visual term (MSE between the encoder's latents of the two rendered
//! frames) and the proprio term (alpha x MSE between the proprio embeddings), as
//! `qwm plan` computes them at the goal. Pairs come in threes with the same Euclidean
//! distance: across the wall, on the same side, and through the door, so one can read off
//! whether the latent knows which side of the wall the dot is on (docs/MODELS.md).
//!
//! With a dataset directory it also reports, over the dataset's first 60 episodes, the mean
//! visual distance (root of the visual MSE) between consecutive frames against the normalized
//! distance the dot moved, which the temporal-distance term of `qwm train --td-weight` bounds.
//!
//! Usage: `cargo run --release --example wall_latent -- [MODEL] [DATA]` (the shipped Wall
//! model by default).
use qwm::env;
use qwm::model::{format, CpuModel, Frames, WorldModel};

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "assets/wall.safetensors".into());
    let w = format::load(&path)?;
    let norm = w.norm.clone();
    let model = CpuModel::new(&w)?;
    let env = env::make("wall")?;
    let size = env.spec().default_data_size;
    let alpha = env.spec().alpha;
    // (label, a, b): the door is rows 26-34 of the wall at columns 29-35.
    let pairs: [(&str, [f32; 2], [f32; 2]); 9] = [
        ("across the wall, row 12", [26.0, 12.0], [38.0, 12.0]),
        ("same side (left), row 12", [14.0, 12.0], [26.0, 12.0]),
        ("through the door, row 30", [26.0, 30.0], [38.0, 30.0]),
        ("across the wall, row 50", [24.0, 50.0], [40.0, 50.0]),
        ("same side (right), row 50", [40.0, 50.0], [56.0, 50.0]),
        ("through the door, row 30", [24.0, 30.0], [40.0, 30.0]),
        ("across the wall, far", [12.0, 12.0], [52.0, 12.0]),
        ("same side (left), far", [12.0, 12.0], [12.0, 52.0]),
        ("across via door, far", [12.0, 30.0], [52.0, 30.0]),
    ];
    let states: Vec<[f32; 2]> = pairs.iter().flat_map(|p| [p.1, p.2]).collect();
    let mut bytes = Vec::new();
    for s in &states {
        bytes.extend(env.render_state(s, size)?.data);
    }
    let z = model.download(&model.encode(&Frames::new(&bytes, states.len(), size, size)?)?)?;
    let np: Vec<f32> = states
        .iter()
        .flat_map(|s| norm.normalize_proprio(s))
        .collect();
    let pe = model.download(&model.embed_proprio(&model.upload(&np, &[states.len(), 2])?)?)?;
    let (nz, npe) = (z.len() / states.len(), pe.len() / states.len());
    let mse = |a: &[f32], b: &[f32]| {
        a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f32>() / a.len() as f32
    };
    println!("model {path}");
    println!(
        "{:<28} {:>7} {:>10} {:>10}",
        "pair", "px", "visual", "proprio"
    );
    for (i, (label, a, b)) in pairs.iter().enumerate() {
        let (i, j) = (2 * i, 2 * i + 1);
        let v = mse(&z[i * nz..(i + 1) * nz], &z[j * nz..(j + 1) * nz]);
        let p = alpha * mse(&pe[i * npe..(i + 1) * npe], &pe[j * npe..(j + 1) * npe]);
        let px = (a[0] - b[0]).hypot(a[1] - b[1]);
        println!("{label:<28} {px:>7.1} {v:>10.4} {p:>10.4}");
    }
    if let Some(dir) = std::env::args().nth(2) {
        let eps = qwm::env::dataset::Dataset::open(&dir)?.episodes()?;
        let (mut step, mut moved, mut over, mut k) = (0.0f64, 0.0f64, 0usize, 0usize);
        for ep in eps.iter().take(60) {
            let f = Frames::new(&ep.frames, ep.steps + 1, ep.image_size, ep.image_size)?;
            let z = model.download(&model.encode(&f)?)?;
            let p = |t: usize| norm.normalize_proprio(&ep.proprio[2 * t..2 * t + 2]);
            for t in 0..ep.steps {
                let d = mse(&z[t * nz..(t + 1) * nz], &z[(t + 1) * nz..(t + 2) * nz]).sqrt();
                let (a, b) = (p(t), p(t + 1));
                let m = (a[0] - b[0]).hypot(a[1] - b[1]);
                step += d as f64;
                moved += m as f64;
                over += usize::from(d > 1.5 * m + 0.05);
                k += 1;
            }
        }
        println!(
            "consecutive frames ({k}): mean visual distance {:.4}, mean normalized motion {:.4}; {over} steps more than 1.5x their motion + 0.05",
            step / k as f64,
            moved / k as f64
        );
    }
    Ok(())
}
