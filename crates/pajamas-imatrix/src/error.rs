//! Errors. Every variant names the file (or says the imatrix is in memory) and, where there
//! is one, the entry (weight name) or metadata key, and says what to do about it.

use std::path::PathBuf;

use pajamas_gguf::GgufError;

#[derive(Debug, thiserror::Error)]
pub enum ImatrixError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file starts with the GGUF magic but is not a readable GGUF file (truncated,
    /// corrupt header); the message of the GGUF reader names the file and the place.
    #[error(
        "{0} (the imatrix file is damaged: regenerate it with llama-imatrix or our collector)"
    )]
    ReadGguf(#[source] GgufError),

    /// Writing the GGUF output failed.
    #[error("{0}")]
    WriteGguf(#[source] GgufError),

    /// The file as a whole is not an importance matrix of either format.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },

    /// A metadata key of a GGUF imatrix is missing or has the wrong type.
    #[error("{path}: metadata key '{key}': {message}")]
    Key {
        path: PathBuf,
        key: String,
        message: String,
    },

    /// One entry (the data of one weight) is malformed, or does not fit the model.
    #[error("{path}: entry '{entry}': {message}")]
    Entry {
        path: PathBuf,
        entry: String,
        message: String,
    },
}

pub type Result<T, E = ImatrixError> = std::result::Result<T, E>;
