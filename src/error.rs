//! The crate's error type: every failure carries a sentence a user can act on.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in chargru, each with a message fit for a user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What we were doing, as a verb phrase ("read", "create directory").
        action: &'static str,
        /// The file at fault.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The input (corpus, prompt, text file or option) is unusable; the message says why and what to do.
    #[error("{0}")]
    Input(String),
    /// A checkpoint file is damaged or was not written by chargru.
    #[error("{} is not a usable chargru checkpoint: {reason}", path.display())]
    Checkpoint {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it and, where it helps, how to get a good one.
        reason: String,
    },
    /// A tensor computation failed (a device error, or a bug in chargru).
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// `Result` with chargru's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// An [`Error::Checkpoint`] for `path`.
    pub fn checkpoint(path: &Path, reason: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// Returns early with an [`Error::Input`] built like `format!`.
#[macro_export]
macro_rules! input_error {
    ($($arg:tt)*) => {
        return Err($crate::Error::Input(format!($($arg)*)))
    };
}
