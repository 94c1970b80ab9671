//! Seconds per episode for `qwm study status`'s ETA, for cells that have not played yet too.
//!
//! An episode's cost is set by its environment (PushT's is several times Wall's) and grows
//! with the CEM steps per plan (Wall W4, failing episodes, single-threaded: ~430 s at 30 steps,
//! ~720 s at 50). So a cell without episodes is estimated from measured cells of its own
//! environment and CEM steps, else of its environment scaled by the steps ratio, else of the
//! whole study scaled the same way.

use super::spec::Cell;
use super::store::CellState;

/// Per cell (in order): seconds per episode, its own measurement when it has one, else the
/// estimate above; `None` when nothing in the study has been measured.
pub fn per_episode(cells: &[Cell], states: &[CellState]) -> Vec<Option<f64>> {
    let measured: Vec<(&Cell, f64)> = cells
        .iter()
        .zip(states)
        .filter_map(|(c, s)| s.seconds_per_episode.map(|x| (c, x)))
        .collect();
    // Mean of the matching cells' seconds, each brought to `steps` CEM steps.
    let mean = |keep: &dyn Fn(&Cell) -> bool, steps: usize| -> Option<f64> {
        let v: Vec<f64> = measured
            .iter()
            .filter(|(c, _)| keep(c))
            .map(|(c, x)| x * steps as f64 / c.opt_steps.max(1) as f64)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    cells
        .iter()
        .zip(states)
        .map(|(c, s)| {
            let steps = c.opt_steps;
            s.seconds_per_episode
                .or_else(|| mean(&|m| m.env == c.env && m.opt_steps == steps, steps))
                .or_else(|| mean(&|m| m.env == c.env, steps))
                .or_else(|| mean(&|_| true, steps))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(env: &str, steps: usize) -> Cell {
        Cell {
            name: format!("{env}/x.os{steps}"),
            grid: "g".into(),
            env: env.into(),
            model: "m".into(),
            quant: "fp".into(),
            method: "rtn".into(),
            opt_steps: steps,
            max_iter: 50,
            episodes: 50,
        }
    }

    fn state(secs: Option<f64>) -> CellState {
        CellState {
            name: "c".into(),
            episodes: 50,
            done: secs.map_or(0, |_| 5),
            prefix: secs.map_or(0, |_| 5),
            successes: 0,
            state: if secs.is_some() { "partial" } else { "pending" }.into(),
            seconds_per_episode: secs,
            backends: vec![],
        }
    }

    #[test]
    fn unplayed_cells_borrow_from_their_environment_and_steps() {
        let cells = [
            cell("wall", 10),
            cell("wall", 10),
            cell("wall", 30),
            cell("wall", 50),
            cell("pusht", 10),
            cell("maze", 50),
        ];
        let states = [
            state(Some(100.0)),
            state(Some(200.0)),
            state(None),
            state(Some(600.0)),
            state(None),
            state(Some(900.0)),
        ];
        let e = per_episode(&cells, &states);
        assert_eq!(e[0], Some(100.0));
        // No wall cell at 30 steps has played: wall's cells (not maze's), scaled to 30 steps:
        // 100, 200 at 10 -> 300, 600; 600 at 50 -> 360; mean 420.
        assert!((e[2].unwrap() - 420.0).abs() < 1e-9);
        // pusht has nothing measured: every cell brought to 10 steps.
        let x = e[4].unwrap();
        let want = (100.0 + 200.0 + 600.0 / 5.0 + 900.0 / 5.0) / 4.0;
        assert!((x - want).abs() < 1e-9);
        let unmeasured = per_episode(&cells[..1], &[state(None)]);
        assert_eq!(unmeasured, vec![None]);
    }

    #[test]
    fn a_cell_of_the_same_environment_and_steps_wins_over_scaling() {
        let cells = [cell("wall", 10), cell("wall", 50), cell("wall", 10)];
        let states = [state(Some(100.0)), state(Some(1000.0)), state(None)];
        // Not the scaled mean of both, (100 + 1000 / 5) / 2 = 150.
        assert_eq!(per_episode(&cells, &states)[2], Some(100.0));
    }
}
