//! Where tensors come from. The forward pass asks for tensors by their HuggingFace names
//! (`model.layers.0.self_attn.q_proj.weight`, ...) and gets f32 data with its shape
//! (PyTorch order, outermost first). A GGUF source will map those names onto GGUF names
//! and dequantize; nothing else has to change.

use std::path::Path;

use pajamas_model::HfModel;

use crate::config::ModelConfig;
use crate::error::{Result, RuntimeError};

/// A source of f32 tensors addressed by HuggingFace names.
pub trait WeightSource {
    /// The model's hyper-parameters.
    fn config(&self) -> Result<ModelConfig>;
    /// Whether the source holds tensor `name` (optional tensors: biases, untied head).
    fn has_tensor(&self, name: &str) -> bool;
    /// Tensor `name` as f32, with its shape. A missing tensor is
    /// [`RuntimeError::MissingTensor`].
    fn read_tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)>;
}

/// A HuggingFace folder (`config.json` + safetensors) read through `pajamas-model`.
#[derive(Debug)]
pub struct HfSource {
    model: HfModel,
}

impl HfSource {
    /// Opens an HF model folder (only headers are read here).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Ok(HfSource {
            model: HfModel::open(dir)?,
        })
    }

    /// Wraps an already opened folder.
    pub fn new(model: HfModel) -> Self {
        HfSource { model }
    }

    /// The underlying folder.
    pub fn hf_model(&self) -> &HfModel {
        &self.model
    }
}

impl WeightSource for HfSource {
    fn config(&self) -> Result<ModelConfig> {
        ModelConfig::from_hf_config(self.model.config())
    }

    fn has_tensor(&self, name: &str) -> bool {
        self.model.tensor(name).is_some()
    }

    fn read_tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let info = self
            .model
            .tensor(name)
            .ok_or_else(|| RuntimeError::MissingTensor(name.to_string()))?;
        let shape = info.shape.iter().map(|&d| d as usize).collect();
        let data = self.model.read_f32_streaming(name)?;
        Ok((shape, data))
    }
}
