//! The study's definitions as a library, without running cells: the `quantwm` grid is the
//! issue's, shards split the work items disjointly and completely, and the findings'
//! difference interval matches published values. The runs are tests/study.rs.

#[test]
fn shards_split_the_work_items_disjointly_and_completely() {
    use qwm::study::{work, Shard, Study};
    let study = Study::load("quantwm").unwrap();
    let all = work::items(&study, None, Shard::ALL);
    // 50 episodes per cell in ranges of 10.
    assert_eq!(all.len(), study.cells.len() * 5);
    for n in [1, 2, 3, 7] {
        let mut union = Vec::new();
        for i in 0..n {
            union.extend(work::items(&study, None, Shard { index: i, count: n }));
        }
        union.sort_by_key(|it| (it.cell, it.range));
        assert_eq!(union, all, "{n} shards");
    }
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    let slurm = env(&[
        ("SLURM_ARRAY_TASK_ID", "11"),
        ("SLURM_ARRAY_TASK_MIN", "10"),
        ("SLURM_ARRAY_TASK_COUNT", "4"),
    ]);
    assert_eq!(
        Shard::parse("auto", &slurm).unwrap(),
        Shard { index: 1, count: 4 }
    );
    let k8s = env(&[("JOB_COMPLETION_INDEX", "2"), ("JOB_COMPLETIONS", "3")]);
    assert_eq!(
        Shard::parse("auto", &k8s).unwrap(),
        Shard { index: 2, count: 3 }
    );
    let stepped = env(&[
        ("SLURM_ARRAY_TASK_ID", "2"),
        ("SLURM_ARRAY_TASK_COUNT", "2"),
        ("SLURM_ARRAY_TASK_STEP", "2"),
    ]);
    assert!(Shard::parse("auto", &stepped).is_err());
    let none = env(&[]);
    assert!(Shard::parse("1/0", &none).is_err());
    assert!(Shard::parse("x/2", &none).is_err());
    assert_eq!(
        Shard::parse("1/2", &none).unwrap(),
        Shard { index: 1, count: 2 }
    );
    assert!(work::matches("wall/*,pointmaze/fp", "wall/w4.os30"));
    assert!(work::matches("wall/*,pointmaze/fp", "pointmaze/fp"));
    assert!(!work::matches("wall/*,pointmaze/fp", "pointmaze/w4"));
}

#[test]
fn quantwm_preset_is_the_issue_grid() {
    let study = qwm::study::Study::load("quantwm").unwrap();
    let names: Vec<&str> = study.cells.iter().map(|c| c.name.as_str()).collect();
    for env in ["wall", "pointmaze"] {
        for q in [
            "fp",
            "w8",
            "w6",
            "w4",
            "w3",
            "w2",
            "w4g64",
            "w2g32",
            "w8a8",
            "w8a8t",
            "w6a6",
            "w6a6t",
            "w4a8",
            "w4a8t",
            "w4a4",
            "w4a4t",
            "enc-w4_pred-fp",
            "enc-fp_pred-w3",
            "fp.os30",
            "fp.os50",
            "w4.os30",
            "w3.os50",
            "w4.omse",
            "w2g32.omse",
            "w4a4t.omse",
            "w4.gptq",
            "w4g32.awq",
            "w3.omniquant",
            "w8a8.smoothquant",
            "w4a8.awq",
        ] {
            let n = format!("{env}/{q}");
            assert!(names.contains(&n.as_str()), "{n} missing");
        }
    }
    // PushT: float, W8, W4 and W4 g32 only, at DINO-WM's PushT settings (issue 22).
    let pusht: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with("pusht/"))
        .collect();
    assert_eq!(pusht, ["pusht/fp", "pusht/w8", "pusht/w4", "pusht/w4g32"]);
    for c in &study.cells {
        let (opt_steps, max_iter) = if c.env == "pusht" {
            (30, 30)
        } else {
            (c.opt_steps, 50)
        };
        assert_eq!(c.episodes, 50, "{}", c.name);
        assert_eq!(
            (c.opt_steps, c.max_iter),
            (opt_steps, max_iter),
            "{}",
            c.name
        );
        assert_eq!(study.planner.samples, 300);
    }
    assert_eq!(study.cells.len(), 160);
    // The finished 50-episode Wall reports carry these cells' names and settings.
    let w4 = study.cell("wall/w4").unwrap();
    assert_eq!((w4.opt_steps, w4.method.as_str()), (10, "rtn"));
}

#[test]
fn newcombe_difference_interval_matches_published_values() {
    // Newcombe (1998), example (a): 56/70 vs 48/80 gives 0.0524 to 0.3339.
    let [d, lo, hi] = qwm::study::findings::diff_ci(56, 70, 48, 80);
    assert!((d - 0.2).abs() < 1e-12);
    assert!(
        (lo - 0.0524).abs() < 5e-4 && (hi - 0.3339).abs() < 5e-4,
        "{lo} {hi}"
    );
}

/// The methods table's rule: a difference counts when Newcombe's interval excludes 0,
/// "level" needs both cells complete.
#[test]
fn a_method_stands_above_below_level_or_undecided_by_the_interval() {
    use qwm::study::findings::{standing, Standing};
    let s = |a, b| standing(a, b).map(|s| s.0);
    assert_eq!(s((50, 50, true), (36, 50, true)), Some(Standing::Above));
    assert_eq!(s((36, 50, true), (48, 50, true)), Some(Standing::Below));
    assert_eq!(s((48, 50, true), (48, 50, true)), Some(Standing::Level));
    // The same counts with an unfinished cell are not a claim of no difference.
    assert_eq!(
        s((19, 20, false), (48, 50, true)),
        Some(Standing::Undecided)
    );
    // 0.86 vs 0.96 over 50 each: -0.10, whose interval reaches +0.02.
    let (st, [d, lo, hi]) = standing((43, 50, true), (48, 50, true)).unwrap();
    assert_eq!(st, Standing::Level);
    assert!(
        (d + 0.10).abs() < 1e-12 && lo < -0.2 && hi > 0.0 && hi < 0.05,
        "{lo} {hi}"
    );
    assert_eq!(s((0, 0, false), (48, 50, true)), None);
}
