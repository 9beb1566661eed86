//! The GGUF metadata llama.cpp's loader needs, per architecture, from config.json.

use pajamas_arch::{ArchitectureInfo, AttentionSpan, HybridInfo, MixerKind};
use pajamas_gguf::{Array, Value};
use serde_json::Value as Json;

use crate::tokenizer::Vocab;

/// Ordered key/value pairs, written in this order.
pub type Metadata = Vec<(String, Value)>;

fn f(config: &Json, keys: &[&str]) -> Option<f64> {
    keys.iter()
        .find_map(|k| config.get(*k).and_then(Json::as_f64))
}

/// transformers 5 moved `rope_theta` / `rope_scaling` into `rope_parameters` (nested per
/// layer type for models with local and global layers); 4.x configs keep them top-level.
fn rope_parameters(config: &Json) -> Option<&Json> {
    let rp = config.get("rope_parameters")?;
    Some(rp.get("full_attention").unwrap_or(rp))
}

/// The rope base frequency of the (global) attention layers.
pub fn rope_theta(config: &Json) -> Option<f64> {
    f(config, &["rope_theta"]).or_else(|| rope_parameters(config)?.get("rope_theta")?.as_f64())
}

/// The rope scaling block (`rope_type`/`type`, `factor`, ...), if the model scales rope.
pub fn rope_scaling(config: &Json) -> Option<&Json> {
    if let Some(rs) = config.get("rope_scaling").filter(|v| v.is_object()) {
        return Some(rs);
    }
    let rp = rope_parameters(config)?;
    let ty = rp
        .get("rope_type")
        .or_else(|| rp.get("type"))
        .and_then(Json::as_str)?;
    (ty != "default").then_some(rp)
}

/// Architecture keys (`<arch>.*`) and `general.*` keys other than the file type.
pub fn model_metadata(
    arch_name: &str,
    a: &ArchitectureInfo,
    config: &Json,
    model_name: &str,
) -> Metadata {
    let mut m: Metadata = Vec::new();
    let mut put = |k: &str, v: Value| m.push((k.to_string(), v));
    let key = |s: &str| format!("{arch_name}.{s}");
    put("general.architecture", Value::String(arch_name.into()));
    put("general.type", Value::String("model".into()));
    put("general.name", Value::String(model_name.into()));
    let att = a.attention.as_ref();
    let head_dim = att.map(|x| x.head_dim).unwrap_or(a.hidden_size);
    let ctx = a
        .max_position_embeddings
        .unwrap_or(if arch_name == "gemma3" { 131072 } else { 2048 });
    put(&key("context_length"), Value::U32(ctx as u32));
    put(&key("embedding_length"), Value::U32(a.hidden_size as u32));
    put(&key("block_count"), Value::U32(a.num_layers as u32));
    put(
        &key("feed_forward_length"),
        Value::U32(a.intermediate_size.unwrap_or(4 * a.hidden_size) as u32),
    );
    if let Some(att) = att {
        put(
            &key("attention.head_count"),
            Value::U32(att.num_heads as u32),
        );
        put(
            &key("attention.head_count_kv"),
            Value::U32(att.num_kv_heads as u32),
        );
    }
    let default_theta = match arch_name {
        "gemma3" => 1_000_000.0,
        _ => 10_000.0,
    };
    put(
        &key("rope.freq_base"),
        Value::F32(rope_theta(config).unwrap_or(default_theta) as f32),
    );
    let default_eps = if arch_name == "gemma3" || arch_name.starts_with("qwen") {
        1e-6
    } else {
        1e-5
    };
    put(
        &key("attention.layer_norm_rms_epsilon"),
        Value::F32(
            f(config, &["rms_norm_eps", "layer_norm_epsilon"]).unwrap_or(default_eps) as f32,
        ),
    );
    if att.is_some_and(|x| x.head_dim_explicit) || arch_name == "gemma3" || arch_name == "qwen3" {
        put(&key("attention.key_length"), Value::U32(head_dim as u32));
        put(&key("attention.value_length"), Value::U32(head_dim as u32));
    }
    if arch_name == "llama" {
        put(&key("vocab_size"), Value::U32(a.vocab_size as u32));
        put(&key("rope.dimension_count"), Value::U32(head_dim as u32));
    }
    if let Some(moe) = &a.moe {
        put(&key("expert_count"), Value::U32(moe.num_experts as u32));
        put(
            &key("expert_used_count"),
            Value::U32(moe.experts_per_token as u32),
        );
        // Mixtral (`llama`) experts are as wide as feed_forward_length; Qwen's have
        // their own width, and Qwen2-MoE's shared expert another.
        if arch_name != "llama" {
            put(
                &key("expert_feed_forward_length"),
                Value::U32(moe.expert_ffn_size as u32),
            );
        }
        if let (Some(w), "qwen2moe" | "granitehybrid" | "nemotron_h_moe") =
            (moe.shared_expert_ffn_size, arch_name)
        {
            put(
                &key("expert_shared_feed_forward_length"),
                Value::U32(w as u32),
            );
        }
    }
    if let Some(w) = att.and_then(|x| x.sliding_window) {
        put(&key("attention.sliding_window"), Value::U32(w as u32));
        // llama.cpp assumes Gemma 3's period of 6 unless told which layers are local.
        if let Some(spans) = att.and_then(|x| x.layer_spans.as_ref()) {
            if arch_name == "gemma3" {
                let local = spans
                    .iter()
                    .map(|s| *s == AttentionSpan::SlidingWindow)
                    .collect();
                put(
                    &key("attention.sliding_window_pattern"),
                    Value::Array(Array::Bool(local)),
                );
            }
        }
        // The local layers' rope base, where the config sets one other than llama.cpp's 10000.
        let local_theta = config
            .get("rope_local_base_freq")
            .and_then(Json::as_f64)
            .or_else(|| {
                config
                    .pointer("/rope_parameters/sliding_attention/rope_theta")?
                    .as_f64()
            });
        if let Some(t) = local_theta.filter(|t| *t != 10_000.0 && arch_name == "gemma3") {
            put(&key("rope.freq_base_swa"), Value::F32(t as f32));
        }
    }
    // Linear rope scaling is a metadata key; llama3-style scaling becomes the
    // rope_freqs tensor (see `llama3_rope_factors`).
    if let Some(rs) = rope_scaling(config) {
        let ty = rs
            .get("rope_type")
            .or_else(|| rs.get("type"))
            .and_then(Json::as_str)
            .unwrap_or("");
        if ty == "linear" {
            if let Some(fac) = rs.get("factor").and_then(Json::as_f64) {
                put(&key("rope.scaling.type"), Value::String("linear".into()));
                put(&key("rope.scaling.factor"), Value::F32(fac as f32));
            }
        }
    }
    if let Some(h) = &a.hybrid {
        hybrid_metadata(&mut m, arch_name, a, h, config);
    }
    if arch_name == "deepseek2" {
        crate::deepseek::deepseek_metadata(&mut m, arch_name, a, config);
    }
    m
}

/// Sets `key` to `value`: in place if an earlier rule wrote it, else appended.
fn set(m: &mut Metadata, key: String, value: Value) {
    match m.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => m.push((key, value)),
    }
}

/// The keys of the hybrid Mamba-2 architectures (`granitehybrid`, `nemotron_h`,
/// `nemotron_h_moe`), over the generic ones: the SSM sizes, per-layer arrays (llama.cpp
/// runs a layer as Mamba-2 iff its `head_count_kv` is 0, and for Nemotron-H also its
/// `feed_forward_length`), Granite's multipliers and Nemotron-H's router settings.
fn hybrid_metadata(
    m: &mut Metadata,
    arch_name: &str,
    a: &ArchitectureInfo,
    h: &HybridInfo,
    config: &Json,
) {
    let key = |s: &str| format!("{arch_name}.{s}");
    let u = |x: u64| Value::U32(x as u32);
    let ssm = &h.ssm;
    set(m, key("ssm.conv_kernel"), u(ssm.conv_kernel));
    set(m, key("ssm.inner_size"), u(ssm.inner_size));
    set(m, key("ssm.state_size"), u(ssm.state_size));
    // llama.cpp's "time step rank" of Mamba-2 is the number of SSM heads.
    set(m, key("ssm.time_step_rank"), u(ssm.num_heads));
    set(m, key("ssm.group_count"), u(ssm.num_groups));
    let kv = a.attention.as_ref().map(|x| x.num_kv_heads).unwrap_or(0);
    let per_layer_kv = h
        .layer_mixers
        .iter()
        .map(|k| {
            if *k == MixerKind::Attention {
                kv as i32
            } else {
                0
            }
        })
        .collect();
    set(
        m,
        key("attention.head_count_kv"),
        Value::Array(Array::I32(per_layer_kv)),
    );
    let cfg_f = |k: &str| config.get(k).and_then(Json::as_f64);
    if arch_name == "granitehybrid" {
        // Dense Granite 4.0-H (no experts): the shared MLP is the layer's FFN.
        if a.moe.is_none() {
            if let Some(w) = config
                .get("shared_intermediate_size")
                .and_then(Json::as_u64)
            {
                set(m, key("feed_forward_length"), u(w));
            }
        }
        // Granite's mup multipliers; llama.cpp reads a missing or zero one as "none".
        for (hf, gguf) in [
            ("attention_multiplier", "attention.scale"),
            ("embedding_multiplier", "embedding_scale"),
            ("residual_multiplier", "residual_scale"),
            ("logits_scaling", "logit_scale"),
        ] {
            if let Some(x) = cfg_f(hf).filter(|x| *x != 0.0) {
                set(m, key(gguf), Value::F32(x as f32));
            }
        }
        // llama.cpp's granitehybrid applies rope unless this says otherwise; Granite
        // 4.0-H's attention has no positional encoding (`position_embedding_type: nope`).
        let rope = config.get("position_embedding_type").and_then(Json::as_str) == Some("rope");
        set(m, key("rope.scaling.finetuned"), Value::Bool(rope));
    } else {
        // Nemotron-H: a block is a Mamba-2 mixer, attention, an MLP or an MoE; llama.cpp
        // tells them apart by head_count_kv and feed_forward_length being 0 or not.
        let moe_layers = a
            .moe
            .as_ref()
            .map(|x| x.moe_layers.clone())
            .unwrap_or_default();
        let width = a
            .moe
            .as_ref()
            .map(|x| x.expert_ffn_size)
            .or(a.intermediate_size)
            .unwrap_or(0);
        let ffn = h
            .layer_mixers
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let ffn_block =
                    *k == MixerKind::None && (a.moe.is_none() || moe_layers.contains(&(i as u64)));
                if ffn_block {
                    width as i32
                } else {
                    0
                }
            })
            .collect();
        set(m, key("feed_forward_length"), Value::Array(Array::I32(ffn)));
        let eps = cfg_f("layer_norm_epsilon")
            .or_else(|| cfg_f("rms_norm_eps"))
            .unwrap_or(1e-5) as f32;
        set(m, key("attention.layer_norm_epsilon"), Value::F32(eps));
        set(m, key("attention.layer_norm_rms_epsilon"), Value::F32(eps));
        if let Some(moe) = &a.moe {
            set(m, key("expert_shared_count"), u(moe.num_shared_experts));
            set(
                m,
                key("expert_weights_norm"),
                Value::Bool(moe.norm_topk_prob),
            );
            let scale = cfg_f("routed_scaling_factor").unwrap_or(1.0);
            set(m, key("expert_weights_scale"), Value::F32(scale as f32));
            if let Some(g) = config.get("n_group").and_then(Json::as_u64) {
                set(m, key("expert_group_count"), u(g));
            }
        }
    }
}

/// llama-3 rope scaling: one factor per rotary frequency, written as the `rope_freqs`
/// tensor. `None` unless config.json asks for `rope_type: llama3`.
pub fn llama3_rope_factors(config: &Json, head_dim: u64) -> Option<Vec<f32>> {
    let rs = rope_scaling(config)?;
    if rs.get("rope_type").or_else(|| rs.get("type"))?.as_str()? != "llama3" {
        return None;
    }
    let theta = rope_theta(config).unwrap_or(10_000.0);
    let factor = rs.get("factor")?.as_f64()?;
    let low = rs
        .get("low_freq_factor")
        .and_then(Json::as_f64)
        .unwrap_or(1.0);
    let high = rs
        .get("high_freq_factor")
        .and_then(Json::as_f64)
        .unwrap_or(4.0);
    let old_ctx = rs
        .get("original_max_position_embeddings")
        .and_then(Json::as_f64)
        .unwrap_or(8192.0);
    let low_wavelen = old_ctx / low;
    let high_wavelen = old_ctx / high;
    let factors = (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let scale = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            scale as f32
        })
        .collect();
    Some(factors)
}

/// The `tokenizer.*` keys.
pub fn tokenizer_metadata(v: &Vocab) -> Metadata {
    let mut m: Metadata = Vec::new();
    let mut put = |k: &str, val: Value| m.push((k.to_string(), val));
    put("tokenizer.ggml.model", Value::String(v.model.clone()));
    if let Some(p) = &v.pre {
        put("tokenizer.ggml.pre", Value::String(p.clone()));
    } else if v.model == "llama" {
        put("tokenizer.ggml.pre", Value::String("default".into()));
    }
    put(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(v.tokens.clone())),
    );
    if !v.scores.is_empty() {
        put(
            "tokenizer.ggml.scores",
            Value::Array(Array::F32(v.scores.clone())),
        );
    }
    put(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(v.types.clone())),
    );
    if !v.merges.is_empty() {
        put(
            "tokenizer.ggml.merges",
            Value::Array(Array::String(v.merges.clone())),
        );
    }
    for (k, id) in [
        ("tokenizer.ggml.bos_token_id", v.bos),
        ("tokenizer.ggml.eos_token_id", v.eos),
        ("tokenizer.ggml.unknown_token_id", v.unk),
        ("tokenizer.ggml.padding_token_id", v.pad),
    ] {
        if let Some(id) = id {
            put(k, Value::U32(id));
        }
    }
    if let Some(b) = v.add_bos {
        put("tokenizer.ggml.add_bos_token", Value::Bool(b));
    }
    if let Some(b) = v.add_eos {
        put("tokenizer.ggml.add_eos_token", Value::Bool(b));
    }
    if let Some(t) = &v.chat_template {
        put("tokenizer.chat_template", Value::String(t.clone()));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_factors() {
        let cfg = serde_json::json!({"rope_theta": 500000.0, "rope_scaling": {"factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
            "rope_type": "llama3"}});
        let f = llama3_rope_factors(&cfg, 128).unwrap();
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0, "high frequencies are not scaled");
        assert_eq!(f[63], 8.0, "low frequencies are scaled by the factor");
        assert!(f.windows(2).all(|w| w[0] <= w[1]));
        assert!(llama3_rope_factors(&serde_json::json!({}), 128).is_none());
        // transformers 5 layout
        let v5 = serde_json::json!({"rope_parameters": {"rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
            "rope_type": "llama3"}});
        assert_eq!(llama3_rope_factors(&v5, 128).unwrap(), f);
        assert_eq!(rope_theta(&v5), Some(500000.0));
        let plain =
            serde_json::json!({"rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}});
        assert!(rope_scaling(&plain).is_none());
    }
}
