//! GGUF -> an HF-style config, so that a GGUF being requantized goes through the same
//! detection and planning as a HuggingFace checkpoint.

use pajamas_gguf::{Array, GgufFile, Value};
use serde_json::{json, Map, Value as Json};

/// GGUF architecture name -> HF model_type.
fn model_type(arch: &str) -> &str {
    match arch {
        "gemma3" => "gemma3_text",
        "qwen2moe" => "qwen2_moe",
        "qwen3moe" => "qwen3_moe",
        "deepseek2" => "deepseek_v3",
        "granitehybrid" => "granitemoehybrid",
        "gpt-oss" => "gpt_oss",
        other => other,
    }
}

fn uint(v: &Value) -> Option<u64> {
    match v {
        Value::Array(Array::I32(a)) => a.iter().map(|x| *x as u64).max(),
        Value::Array(Array::U32(a)) => a.iter().map(|x| *x as u64).max(),
        other => other.as_uint(),
    }
}

fn float(v: &Value) -> Option<f64> {
    match v {
        Value::F32(x) => Some(*x as f64),
        Value::F64(x) => Some(*x),
        other => other.as_uint().map(|x| x as f64),
    }
}

/// Builds the config.json keys detection reads from a GGUF's metadata and tensor list.
pub fn config_from_gguf(f: &GgufFile) -> Option<Json> {
    let arch = f.architecture()?.to_string();
    let mut c = Map::new();
    c.insert("model_type".into(), json!(model_type(&arch)));
    let get = |k: &str| f.get(&format!("{arch}.{k}"));
    let put_uint = |hf: &str, k: &str, c: &mut Map<String, Json>| {
        if let Some(v) = get(k).and_then(uint) {
            c.insert(hf.into(), json!(v));
        }
    };
    put_uint("hidden_size", "embedding_length", &mut c);
    put_uint("num_hidden_layers", "block_count", &mut c);
    put_uint("num_attention_heads", "attention.head_count", &mut c);
    put_uint("num_key_value_heads", "attention.head_count_kv", &mut c);
    put_uint("intermediate_size", "feed_forward_length", &mut c);
    put_uint("max_position_embeddings", "context_length", &mut c);
    put_uint("head_dim", "attention.key_length", &mut c);
    put_uint("num_local_experts", "expert_count", &mut c);
    put_uint("num_experts_per_tok", "expert_used_count", &mut c);
    put_uint(
        "moe_intermediate_size",
        "expert_feed_forward_length",
        &mut c,
    );
    put_uint("sliding_window", "attention.sliding_window", &mut c);
    if let Some(v) = get("rope.freq_base").and_then(float) {
        c.insert("rope_theta".into(), json!(v));
    }
    if let Some(v) = get("attention.layer_norm_rms_epsilon").and_then(float) {
        c.insert("rms_norm_eps".into(), json!(v));
    }
    let vocab = get("vocab_size")
        .and_then(uint)
        .or_else(|| match f.get("tokenizer.ggml.tokens") {
            Some(Value::Array(a)) => Some(a.len() as u64),
            _ => None,
        });
    if let Some(v) = vocab {
        c.insert("vocab_size".into(), json!(v));
    }
    let tied = !f.tensors().iter().any(|t| t.name == "output.weight");
    c.insert("tie_word_embeddings".into(), json!(tied));
    // qwen2 checkpoints carry q/k/v biases; detection knows that from the model_type.
    Some(Json::Object(c))
}
