//! How often the PushT data policy moves the block: rolls out the behaviour policy exactly
//! as `qwm data` does (episode `i` from `sub_seed(seed, i)`, no rendering) and counts the
//! steps whose block pose changes (`pusht::block_moved`), plus how far the block travels.
//! A world model can only learn pushing from steps with contact, so this fraction is the
//! first thing to check about a PushT dataset (docs/MODELS.md).
//!
//! Usage: `cargo run --release --example pusht_contact -- [EPISODES] [STEPS] [SEED]`
//! (defaults 200, 100, 0).
use qwm::env::{self, policy, pusht, sub_seed};

fn main() -> anyhow::Result<()> {
    let arg = |i: usize, d: u64| -> u64 {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let (episodes, steps, seed) = (arg(1, 200) as usize, arg(2, 100) as usize, arg(3, 0));
    let mut moved = 0usize;
    let mut eps_with_motion = 0usize;
    let (mut travel, mut turn) = (0f64, 0f64);
    let mut in_window = 0usize; // 25-step windows in which the block moves at all
    let mut windows = 0usize;
    for i in 0..episodes {
        let mut e = env::make("pusht")?;
        let mut pol = policy::for_env("pusht")?;
        let mut rng = env::rng(sub_seed(seed, i as u64));
        let s0 = pol.start_state(&mut rng);
        e.reset_to(&s0)?;
        let mut states = vec![s0];
        for _ in 0..steps {
            let a = pol.act(&e.state(), &mut rng);
            e.step(&a)?;
            states.push(e.state());
        }
        let flags: Vec<bool> = states
            .windows(2)
            .map(|w| pusht::block_moved(&w[0], &w[1]))
            .collect();
        let m = flags.iter().filter(|&&f| f).count();
        moved += m;
        eps_with_motion += (m > 0) as usize;
        for w in states.windows(2) {
            travel += (((w[1][2] - w[0][2]).powi(2) + (w[1][3] - w[0][3]).powi(2)) as f64).sqrt();
            turn += pusht::angle_diff(w[1][4], w[0][4]) as f64;
        }
        for t in 0..steps.saturating_sub(24) {
            windows += 1;
            in_window += flags[t..t + 25].iter().any(|&f| f) as usize;
        }
    }
    let total = episodes * steps;
    println!(
        "pusht policy '{}': {episodes} episodes x {steps} steps, seed {seed}",
        policy::for_env("pusht")?.name()
    );
    println!(
        "steps with block motion: {moved}/{total} = {:.3}; episodes with any: {eps_with_motion}/{episodes}",
        moved as f64 / total as f64
    );
    println!(
        "25-step windows with block motion: {in_window}/{windows} = {:.3}",
        in_window as f64 / windows.max(1) as f64
    );
    println!(
        "block travel per episode: {:.1} px, {:.2} rad",
        travel / episodes as f64,
        turn / episodes as f64
    );
    Ok(())
}
