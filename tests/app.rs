//! The application layer: a session plans an episode and reports every optimization step and
//! MPC iteration as events, runs on a background thread, stops when cancelled, and
//! calibration statistics belong to the calibrated model alone.

use std::sync::atomic::Ordering;
use std::sync::mpsc;

use qwm::app::SessionOptions;
use qwm::app::{BackendChoice, Event, ModelRequest, ModelSource, PlanSettings, Session};
use qwm::model::{CpuModel, ModelConfig, Weights, WorldModel};
use qwm::plan::calibrate::calibrate;
use qwm::plan::PlanConfig;

fn options() -> SessionOptions {
    SessionOptions {
        env: "wall".into(),
        model: ModelRequest {
            source: ModelSource::Random,
            ..ModelRequest::default()
        },
        backend: BackendChoice::Cpu,
        plan: PlanSettings {
            samples: 16,
            topk: 4,
            opt_steps: Some(3),
            max_iter: Some(2),
            ..PlanSettings::default()
        },
    }
}

#[test]
fn a_session_reports_each_step_and_iteration() {
    let mut notices = Vec::new();
    let mut s = Session::open(&options(), &mut |e: &Event| notices.push(e.clone())).unwrap();
    assert!(notices.iter().any(
        |e| matches!(e, Event::ModelLoaded { config, .. } if config.name == "random-tiny-wall")
    ));
    assert_eq!(s.backend().name(), "cpu");
    let mut events = Vec::new();
    let run = s
        .plan_episode(3, true, &mut |e: &Event| events.push(e.clone()))
        .unwrap();
    let iters = run.record.iterations;
    assert!((1..=2).contains(&iters), "{iters} iterations");
    let steps = events
        .iter()
        .filter(|e| matches!(e, Event::OptStep { .. }))
        .count();
    assert_eq!(steps, 3 * iters, "one OptStep per optimization step");
    let mpc: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::MpcIteration {
                iteration,
                iter,
                state,
            } => Some((*iteration, iter, state)),
            _ => None,
        })
        .collect();
    assert_eq!(mpc.len(), iters);
    for (i, (k, it, state)) in mpc.iter().enumerate() {
        assert_eq!(*k, i);
        // The streamed iteration is the one the run recorded.
        assert_eq!(it.plan.actions, run.iterations[i].plan.actions);
        assert_eq!(**state, run.states[i + 1]);
    }
    // Best costs of the streamed steps are those the planner logged.
    let first: Vec<f32> = events
        .iter()
        .filter_map(|e| match e {
            Event::OptStep {
                iteration: 0,
                best_cost,
                ..
            } => Some(*best_cost),
            _ => None,
        })
        .collect();
    let logged: Vec<f32> = run.iterations[0]
        .plan
        .steps
        .iter()
        .map(|s| s.best_cost)
        .collect();
    assert_eq!(first, logged);
    assert!(run.strip.is_some());
    assert_eq!(
        run.log_json()["iterations"].as_array().unwrap().len(),
        iters
    );
}

#[test]
fn a_session_plans_on_a_background_thread_and_can_be_cancelled() {
    let s = Session::open(&options(), &mut |_: &Event| {}).unwrap();
    let cancel = s.cancel_flag();
    let (tx, rx) = mpsc::channel();
    // The worker waits for this thread's answer after each optimization step, so the cancel
    // lands before its next step whatever the scheduling.
    let (ack_tx, ack_rx) = mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        let mut s = s;
        s.plan_episode(3, false, &mut |e: &Event| {
            let step = matches!(e, Event::OptStep { .. });
            let _ = tx.send(e.clone());
            if step {
                let _ = ack_rx.recv();
            }
        })
    });
    // Stop after the first optimization step arrives on this thread.
    let mut seen = 0;
    for e in rx.iter() {
        if matches!(e, Event::OptStep { .. }) {
            seen += 1;
            cancel.store(true, Ordering::SeqCst);
            ack_tx.send(()).unwrap();
        }
    }
    let r = worker.join().unwrap();
    assert!(matches!(r, Err(qwm::Error::Cancelled)), "{:?}", r.err());
    assert_eq!(seen, 1, "the step after the cancel ran");
}

#[test]
fn the_same_seed_plans_the_same_episode_twice() {
    let mut s = Session::open(&options(), &mut |_: &Event| {}).unwrap();
    let a = s.plan_episode(4, false, &mut |_: &Event| {}).unwrap();
    let b = s.plan_episode(4, false, &mut |_: &Event| {}).unwrap();
    assert_eq!(a.record.final_state, b.record.final_state);
    assert_eq!(a.iterations[0].plan.actions, b.iterations[0].plan.actions);
}

#[test]
fn calibration_statistics_belong_to_the_calibrated_model() {
    let w = Weights::random(&ModelConfig::tiny(), 5).unwrap();
    let pc = PlanConfig {
        horizon: 3,
        step_dim: 10,
        samples: 16,
        topk: 4,
        opt_steps: 2,
        ..PlanConfig::default()
    };
    let alone = calibrate(&w, "wall", 1, &pc, 1.0).unwrap();
    // Another model runs CPU forwards in the process while the calibration runs: with
    // process-global statistics its inputs would count too.
    let other = Weights::random(&ModelConfig::tiny(), 9).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noise = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let m = CpuModel::new(&other).unwrap();
            let s = m.config().encoder.resize;
            let px = m.upload(&vec![3.0; 2 * 3 * s * s], &[2, 3, s, s]).unwrap();
            let mut runs = 0;
            while !stop.load(Ordering::SeqCst) || runs == 0 {
                m.encode_pixels(&px).unwrap();
                runs += 1;
            }
            runs
        })
    };
    let busy = calibrate(&w, "wall", 1, &pc, 1.0).unwrap();
    stop.store(true, Ordering::SeqCst);
    assert!(noise.join().unwrap() > 0);
    assert_eq!(alone, busy);
    // A model that is not observing reports nothing.
    assert!(CpuModel::new(&w).unwrap().take_observed().is_empty());
}
