//! Errors of model sources. Every variant names the file (and tensor or key) it concerns
//! and, where there is one, what the user can do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{dir}: no config.json in this folder; a HuggingFace model folder needs config.json \
         next to its *.safetensors files"
    )]
    MissingConfig { dir: PathBuf },

    #[error("{path}: invalid JSON: {message}")]
    InvalidJson { path: PathBuf, message: String },

    #[error("{path}: not a valid safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },

    #[error("{path}: tensor '{tensor}': {message}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        message: String,
    },

    #[error(
        "{index}: lists shard '{shard}' but {missing} does not exist; the download is \
         incomplete: fetch the missing shard again"
    )]
    MissingShard {
        index: PathBuf,
        shard: String,
        missing: PathBuf,
    },

    #[error("{index}: tensor '{tensor}' is mapped to shard '{shard}' but that shard does not contain it")]
    IndexMismatch {
        index: PathBuf,
        shard: String,
        tensor: String,
    },

    #[error("{dir}: no weights found (expected model.safetensors, model.safetensors.index.json or *.safetensors)")]
    NoWeights { dir: PathBuf },

    #[error("{path}: tensor '{tensor}' appears in both {path} and {other}")]
    DuplicateTensor {
        path: PathBuf,
        other: PathBuf,
        tensor: String,
    },

    #[error(
        "model '{id}' is neither a local folder nor in the HuggingFace cache (looked for \
         {looked}). Download it first, e.g. `hf download {id}` (or `huggingface-cli download \
         {id}`), set HF_HUB_CACHE / HF_HOME if your cache lives elsewhere, or pass the path \
         of a local model folder"
    )]
    NotInCache { id: String, looked: String },

    #[error("'{input}' is not a model folder, a safetensors or GGUF file, or a hub id of the form ORG/NAME")]
    UnrecognisedInput { input: String },

    #[error("tensor '{tensor}' not found in {model}")]
    NoSuchTensor { model: PathBuf, tensor: String },
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
