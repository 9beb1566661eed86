//! Errors of the GGUF reader and writer. Every variant names the file, and the metadata key
//! or tensor where there is one, so that a message alone tells the user what is wrong where.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not a well-formed GGUF file (header, counts, layout).
    #[error("{path}: not a valid GGUF file: {message}")]
    Format { path: PathBuf, message: String },

    /// A metadata entry is malformed, duplicated or of the wrong type.
    #[error("{path}: metadata key '{key}': {message}")]
    Key {
        path: PathBuf,
        key: String,
        message: String,
    },

    /// A tensor info is malformed, or its data cannot be reached.
    #[error("{path}: tensor '{tensor}': {message}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        message: String,
    },

    #[error("{path}: no tensor named '{tensor}'")]
    NoSuchTensor { path: PathBuf, tensor: String },

    #[error("{path}: no metadata key '{key}'")]
    MissingKey { path: PathBuf, key: String },

    /// The writer was used against its contract (order, sizes, state).
    #[error("{path}: cannot write GGUF: {message}")]
    Write { path: PathBuf, message: String },
}

impl GgufError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GgufError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = GgufError> = std::result::Result<T, E>;
