//! MLX checkpoints (ours or `mlx_lm.convert`'s) as a weight source: a quantized module
//! (`X.weight` packed `uint32` with `X.scales` and `X.biases` beside it) is dequantized
//! exactly as `mx.dequantize` does, with the bits and group size `config.json`'s
//! `quantization` block gives for that module; everything else is read as floats. So an
//! MLX output is scored by the same forward pass as its original, and the difference is
//! its quantization error.

use std::path::Path;

use pajamas_mlx::MlxDtype;
use pajamas_model::{Dtype, HfModel};
use serde_json::Value;

use crate::config::ModelConfig;
use crate::error::{Result, RuntimeError};
use crate::weights::WeightSource;

/// An MLX checkpoint folder: `config.json` with a `quantization` block and
/// `model*.safetensors`.
#[derive(Debug)]
pub struct MlxSource {
    model: HfModel,
    /// mlx-lm's name prefix for this layout (`language_model.` for Gemma 3's wrapper).
    prefix: &'static str,
    /// Global bits and group size; per-module overrides are looked up in `quantization`.
    bits: u32,
    group_size: usize,
    quantization: Value,
}

/// Whether `config` (a parsed `config.json`) describes a quantized MLX checkpoint.
pub fn is_mlx_config(config: &Value) -> bool {
    config.get("quantization").is_some_and(Value::is_object)
}

/// Whether folder `dir` holds a quantized MLX checkpoint (its `config.json` has a
/// `quantization` block). False when there is no readable config.
pub fn is_mlx_dir(dir: &Path) -> bool {
    std::fs::read(dir.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|c| is_mlx_config(&c))
}

impl MlxSource {
    /// Opens an MLX folder (only headers are read here).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let model = HfModel::open(dir.as_ref())?;
        let config = model.config();
        let where_ = || format!("{}/config.json", model.dir().display());
        let quantization = config
            .get("quantization")
            .filter(|q| q.is_object())
            .cloned()
            .ok_or_else(|| {
                RuntimeError::Config(format!(
                    "{}: no `quantization` block: not a quantized MLX checkpoint",
                    where_()
                ))
            })?;
        let global = |key: &str| -> Result<u64> {
            quantization
                .get(key)
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    RuntimeError::Config(format!("{}: quantization.{key} missing", where_()))
                })
        };
        let (bits, group_size) = (global("bits")? as u32, global("group_size")? as usize);
        if let Some(mode) = quantization.get("mode").and_then(Value::as_str) {
            if mode != "affine" {
                return Err(RuntimeError::Config(format!(
                    "{}: quantization mode {mode:?} is not supported (only \"affine\")",
                    where_()
                )));
            }
        }
        let prefix = if model
            .tensor("language_model.model.embed_tokens.weight")
            .is_some()
        {
            "language_model."
        } else {
            ""
        };
        Ok(MlxSource {
            model,
            prefix,
            bits,
            group_size,
            quantization,
        })
    }

    /// The underlying folder.
    pub fn hf_model(&self) -> &HfModel {
        &self.model
    }

    /// Bits and group size of module `path` (the global ones unless overridden).
    fn params_of(&self, path: &str) -> (u32, usize) {
        match self.quantization.get(path) {
            Some(Value::Object(o)) => (
                o.get("bits")
                    .and_then(Value::as_u64)
                    .map_or(self.bits, |b| b as u32),
                o.get("group_size")
                    .and_then(Value::as_u64)
                    .map_or(self.group_size, |g| g as usize),
            ),
            _ => (self.bits, self.group_size),
        }
    }

    fn error(&self, name: &str, message: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Config(format!(
            "{}: tensor {name}: {message}",
            self.model.dir().display()
        ))
    }

    fn dequantized(&self, name: &str, path: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let info = self.model.tensor(name).expect("caller checked");
        // Matrices, and stacked expert matrices `[E, out, words]` (gpt-oss's SwitchGLU).
        if info.dtype != Dtype::U32 || !matches!(info.shape.len(), 2 | 3) {
            return Err(self.error(
                name,
                format!(
                    "has scales beside it but is {} {:?}, not a packed uint32 matrix",
                    info.dtype, info.shape
                ),
            ));
        }
        let (bits, group_size) = self.params_of(path);
        let (lead, last) = info.shape.split_at(info.shape.len() - 1);
        let words = last[0] as usize;
        if !(words * 32).is_multiple_of(bits as usize) {
            return Err(self.error(
                name,
                format!("{words} words per row do not hold {bits}-bit codes"),
            ));
        }
        let n_per_row = words * 32 / bits as usize;
        let floats = |suffix: &str| -> Result<(Vec<f32>, MlxDtype)> {
            let n = format!("{path}.{suffix}");
            let t = self
                .model
                .tensor(&n)
                .ok_or_else(|| RuntimeError::MissingTensor(n.clone()))?;
            let dtype = MlxDtype::from_dtype(t.dtype)
                .ok_or_else(|| self.error(&n, format!("dtype {} is not a float", t.dtype)))?;
            Ok((self.model.read_f32_streaming(&n)?, dtype))
        };
        let (scales, dtype) = floats("scales")?;
        let (biases, _) = floats("biases")?;
        let packed: Vec<u32> = self
            .model
            .read_bytes(name)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let data = pajamas_mlx::dequantize(
            &packed, &scales, &biases, n_per_row, bits, group_size, dtype,
        )
        .map_err(|e| self.error(name, format!("{e} (bits {bits}, group size {group_size})")))?;
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(self.error(
                name,
                format!("value {i} is {} after dequantization", data[i]),
            ));
        }
        let mut shape: Vec<usize> = lead.iter().map(|&d| d as usize).collect();
        shape.push(n_per_row);
        Ok((shape, data))
    }
}

impl WeightSource for MlxSource {
    fn config(&self) -> Result<ModelConfig> {
        ModelConfig::from_hf_config(self.model.config())
    }

    fn has_tensor(&self, name: &str) -> bool {
        self.model
            .tensor(&format!("{}{name}", self.prefix))
            .is_some()
    }

    fn read_tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let full = format!("{}{name}", self.prefix);
        let info = self
            .model
            .tensor(&full)
            .ok_or_else(|| RuntimeError::MissingTensor(full.clone()))?;
        if let Some(path) = full.strip_suffix(".weight") {
            if self.model.tensor(&format!("{path}.scales")).is_some() {
                return self.dequantized(&full, path);
            }
        }
        let shape = info.shape.iter().map(|&d| d as usize).collect();
        Ok((shape, self.model.read_f32_streaming(&full)?))
    }
}
