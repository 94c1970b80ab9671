//! One error type for the library. Every variant carries a message that says what is wrong
//! and, where there is one, how to fix it.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// No GPU adapter could be found or opened.
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// The GPU device reported an error (validation, out of memory, device lost).
    #[error("GPU error: {0}")]
    Gpu(String),
    /// Tensor shapes do not fit an operation.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A request exceeds a device limit (binding size, buffer size, workgroups).
    #[error("device limit exceeded: {0}")]
    Limit(String),
    /// Invalid user input (arguments, actions, states, files).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The cause is part of the message and deliberately not a `source()`: an error chain
    /// printed with `{:#}` would otherwise repeat it.
    #[error("{path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("CPU backend: {0}")]
    Cpu(String),
    /// The caller asked a running plan or evaluation to stop (`app::Session::cancel_flag`).
    #[error("cancelled")]
    Cancelled,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Cpu(e.to_string())
    }
}

impl Error {
    /// The same error as invalid input prefixed with `origin` (a file, a flag, a cell), its
    /// message stated once: `origin: what is wrong`, not `origin: invalid input: ...`.
    pub fn within(self, origin: &str) -> Self {
        match self {
            Error::Invalid(m) => Error::Invalid(format!("{origin}: {m}")),
            other => Error::Invalid(format!("{origin}: {other}")),
        }
    }

    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            cause: source,
        }
    }
}
