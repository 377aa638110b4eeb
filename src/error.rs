//! The library's error type: every variant names the file or setting at fault and states the mismatch.

use std::path::{Path, PathBuf};

/// Result with headstart's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot decode image: {msg}")]
    Image { path: PathBuf, msg: String },
    #[error("{path}: {msg}")]
    Dataset { path: PathBuf, msg: String },
    #[error("{path}: {msg}")]
    Model { path: PathBuf, msg: String },
    #[error("{0}")]
    Runtime(String),
    #[error("{path}: {msg}")]
    Cache { path: PathBuf, msg: String },
    #[error("{0}")]
    Config(String),
    /// An HDF5 call failed on `path`; `what` says what was being done or expected.
    #[error("{path}: {what}: {source}")]
    Hdf5 {
        path: PathBuf,
        what: String,
        #[source]
        source: hdf5::Error,
    },
    #[error("{path}: not a valid ONNX protobuf: {source}")]
    Protobuf {
        path: PathBuf,
        #[source]
        source: prost::DecodeError,
    },
    #[cfg(feature = "finetune")]
    #[error("candle: {0}")]
    Candle(#[source] candle_core::Error),
    /// An object-storage request failed (`url` has no credentials: they never appear in a URL).
    #[error("{url}: {msg}")]
    Remote { url: String, msg: String },
    /// An output refused before anything was written: it is an input of the same command, lies
    /// inside an input folder, or exists and the command's rule does not replace it.
    #[error("{path}: {msg}")]
    Output { path: PathBuf, msg: String },
    /// A setting is out of its range: `what` names the setting (`epochs`, `batch_size`; the binary
    /// shows it as its flag, `--epochs`), `msg` states the value and the rule.
    #[error("setting `{what}`: {msg}")]
    Invalid { what: String, msg: String },
    #[error("interrupted: {0}")]
    Interrupted(String),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub fn model(path: &Path, msg: impl Into<String>) -> Self {
        Error::Model {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
    pub fn cache(path: &Path, msg: impl std::fmt::Display) -> Self {
        Error::Cache {
            path: path.to_path_buf(),
            msg: msg.to_string(),
        }
    }
    /// An HDF5 failure on `path`; a checksum that does not match is said to be damage, whatever
    /// `what` was being done.
    pub fn hdf5(path: &Path, what: impl Into<String>, source: hdf5::Error) -> Self {
        let what = if source.to_string().contains("incorrect metadata checksum") {
            "the file is damaged (a checksum does not match)".to_string()
        } else {
            what.into()
        };
        Error::Hdf5 {
            path: path.to_path_buf(),
            what,
            source,
        }
    }
    pub fn output(path: &Path, msg: impl Into<String>) -> Self {
        Error::Output {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
    pub fn invalid(what: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            msg: msg.into(),
        }
    }
    pub fn dataset(path: &Path, msg: impl Into<String>) -> Self {
        Error::Dataset {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}
