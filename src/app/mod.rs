//! The application layer: a model (loaded, quantized on load, calibrated), a backend (GPU or
//! CPU, with the fallback when there is no usable adapter) and an environment, ready to plan.
//! The CLI, the benchmarks, the viewer and the study runner all open models and plan through
//! here, so that choice and these steps are written once; none of them builds a model itself.
//!
//! ```no_run
//! use qwm::app::{Session, SessionOptions};
//! let opts = SessionOptions { env: "wall".into(), ..Default::default() };
//! let mut s = Session::open(&opts, &mut |e| eprintln!("{e:?}")).unwrap();
//! let run = s.plan_episode(5, false, &mut |_| {}).unwrap();
//! println!("success: {}", run.record.success);
//! ```

mod backend;
mod events;
mod inspect;
mod load;
mod session;
mod settings;

pub use backend::{Backend, BackendChoice};
pub use events::{ignore, Event, Observer};
pub use inspect::{inspect_model_file, ModelFileInfo};
pub use load::{LoadedModel, ModelRequest, ModelSource};
pub use session::{EpisodeRun, Session, SessionOptions};
pub use settings::PlanSettings;
