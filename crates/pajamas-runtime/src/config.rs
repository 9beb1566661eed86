//! The hyper-parameters the forward pass needs, read from an HF `config.json`.

use serde_json::Value;

use crate::error::{Result, RuntimeError};

/// Dense llama-family hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// `model_type`: `llama`, `mistral`, `qwen2` or `qwen3`.
    pub model_type: String,
    pub hidden_size: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    /// RMSNorm of each query and key head before RoPE (qwen3).
    pub qk_norm: bool,
    /// Keys further back than this many positions are masked (Mistral's
    /// `sliding_window`); `None` is full causal attention.
    pub sliding_window: Option<usize>,
}

const SUPPORTED: &[&str] = &["llama", "mistral", "qwen2", "qwen3"];

fn get_usize(cfg: &Value, key: &str) -> Result<Option<usize>> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|x| Some(x as usize))
            .ok_or_else(|| RuntimeError::Config(format!("{key} is not a non-negative integer"))),
    }
}

fn need_usize(cfg: &Value, key: &str) -> Result<usize> {
    get_usize(cfg, key)?.ok_or_else(|| RuntimeError::Config(format!("missing {key}")))
}

fn get_f64(cfg: &Value, key: &str) -> Result<Option<f64>> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| RuntimeError::Config(format!("{key} is not a number"))),
    }
}

/// Rejects rope scaling we do not implement: only plain (`default`) RoPE is supported.
fn check_rope_type(block: Option<&Value>) -> Result<()> {
    let Some(b) = block.filter(|b| !b.is_null()) else {
        return Ok(());
    };
    let kind = b
        .get("rope_type")
        .or_else(|| b.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    if kind == "default" {
        Ok(())
    } else {
        Err(RuntimeError::Config(format!(
            "rope scaling type {kind:?} is not supported yet"
        )))
    }
}

impl ModelConfig {
    /// Reads an HF `config.json` value.
    pub fn from_hf_config(cfg: &Value) -> Result<Self> {
        let model_type = cfg
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| RuntimeError::Config("missing model_type".into()))?
            .to_string();
        if !SUPPORTED.contains(&model_type.as_str()) {
            return Err(RuntimeError::Config(format!(
                "model_type {model_type:?} is not supported (supported: {})",
                SUPPORTED.join(", ")
            )));
        }
        let hidden_size = need_usize(cfg, "hidden_size")?;
        let n_heads = need_usize(cfg, "num_attention_heads")?;
        let n_kv_heads = get_usize(cfg, "num_key_value_heads")?.unwrap_or(n_heads);
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(RuntimeError::Config(format!(
                "{n_heads} query heads cannot be grouped over {n_kv_heads} KV heads"
            )));
        }
        let head_dim = match get_usize(cfg, "head_dim")? {
            Some(d) => d,
            None => hidden_size / n_heads,
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(RuntimeError::Config(format!(
                "head_dim {head_dim} must be even and positive"
            )));
        }
        check_rope_type(cfg.get("rope_scaling"))?;
        check_rope_type(cfg.get("rope_parameters"))?;
        // transformers 5 moved rope_theta into rope_parameters.
        let rope_theta = match get_f64(cfg, "rope_theta")? {
            Some(t) => t,
            None => match cfg.get("rope_parameters") {
                Some(p) => get_f64(p, "rope_theta")?.unwrap_or(10000.0),
                None => 10000.0,
            },
        };
        let sliding_window = match model_type.as_str() {
            "mistral" => get_usize(cfg, "sliding_window")?,
            _ => {
                if cfg.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
                    return Err(RuntimeError::Config(
                        "use_sliding_window is not supported yet".into(),
                    ));
                }
                None
            }
        };
        Ok(ModelConfig {
            qk_norm: model_type == "qwen3",
            hidden_size,
            n_heads,
            n_kv_heads,
            head_dim,
            intermediate_size: need_usize(cfg, "intermediate_size")?,
            n_layers: need_usize(cfg, "num_hidden_layers")?,
            vocab_size: need_usize(cfg, "vocab_size")?,
            rms_norm_eps: get_f64(cfg, "rms_norm_eps")?.unwrap_or(1e-6) as f32,
            rope_theta,
            tie_word_embeddings: cfg
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            sliding_window,
            model_type,
        })
    }

    /// Width of the query projection output, `n_heads * head_dim`.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of the key and value projection outputs, `n_kv_heads * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_transformers5_rope_parameters_and_head_dim() {
        let c = ModelConfig::from_hf_config(&json!({
            "model_type": "qwen3", "hidden_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 128,
            "num_hidden_layers": 2, "vocab_size": 4096, "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
            "tie_word_embeddings": true
        }))
        .unwrap();
        assert_eq!(c.head_dim, 32);
        assert_eq!(c.rope_theta, 1e6);
        assert!(c.qk_norm && c.tie_word_embeddings);
        assert_eq!((c.q_dim(), c.kv_dim()), (128, 64));
    }

    #[test]
    fn rejects_unknown_rope_scaling_and_models() {
        let base = json!({
            "model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
            "intermediate_size": 128, "num_hidden_layers": 2, "vocab_size": 10,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0}
        });
        assert!(ModelConfig::from_hf_config(&base).is_err());
        let mut other = base.clone();
        other["rope_scaling"] = Value::Null;
        let c = ModelConfig::from_hf_config(&other).unwrap();
        assert_eq!((c.head_dim, c.n_kv_heads, c.rope_theta), (16, 4, 10000.0));
        other["model_type"] = json!("gemma3_text");
        assert!(ModelConfig::from_hf_config(&other).is_err());
    }
}
