//! Errors of the runtime.

use thiserror::Error;

/// Everything that can go wrong loading weights or running the model.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The model source could not be read.
    #[error(transparent)]
    Model(#[from] pajamas_model::ModelError),
    /// `config.json` lacks a key, has a wrong type, or describes something unsupported.
    #[error("config: {0}")]
    Config(String),
    /// A tensor the architecture needs is not in the source.
    #[error("missing tensor {0}")]
    MissingTensor(String),
    /// A tensor has a shape other than the config implies.
    #[error("tensor {name}: shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    /// The caller's input is unusable (empty sequence, token id out of range, ...).
    #[error("input: {0}")]
    Input(String),
}

/// Result with [`RuntimeError`].
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
