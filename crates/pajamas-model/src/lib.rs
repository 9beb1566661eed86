//! Model sources for llama-pajamas: HuggingFace folders, hub ids resolved through the
//! local HuggingFace cache, and the safetensors files inside them.
//!
//! Everything here is lazy: opening a model reads `config.json` and the safetensors
//! headers; tensor data is memory-mapped and decoded only when a later stage asks for it.

pub mod dtype;
pub mod error;
pub mod fp8;
pub mod hf;
pub mod hub;
pub mod safetensors;

use std::path::{Path, PathBuf};

pub use dtype::Dtype;
pub use error::{ModelError, Result};
pub use hf::{read_json, HfModel, ListedTensor};
pub use hub::{looks_like_hub_id, resolve_hub_id, CacheEnv};
pub use safetensors::{SafetensorsFile, TensorData, TensorInfo};

/// What a user's `--model` argument points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelLocation {
    /// A HuggingFace model folder (possibly a cache snapshot).
    HfFolder(PathBuf),
    /// A GGUF file.
    Gguf(PathBuf),
}

/// Resolves `--model`: an existing folder, a `.safetensors` file (its folder), a `.gguf`
/// file, or a hub id looked up in the HuggingFace cache of `env`.
pub fn locate(input: &str, env: &CacheEnv) -> Result<ModelLocation> {
    let path = Path::new(input);
    if path.is_dir() {
        return Ok(ModelLocation::HfFolder(path.to_path_buf()));
    }
    if path.is_file() {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        return match ext {
            "gguf" => Ok(ModelLocation::Gguf(path.to_path_buf())),
            "safetensors" | "json" => Ok(ModelLocation::HfFolder(
                path.parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from(".")),
            )),
            _ => Err(ModelError::UnrecognisedInput {
                input: input.to_string(),
            }),
        };
    }
    if looks_like_hub_id(input) {
        return resolve_hub_id(input, env).map(ModelLocation::HfFolder);
    }
    Err(ModelError::UnrecognisedInput {
        input: input.to_string(),
    })
}
