//! Vision and speech encoders, recognised from their configs before we quantize them.
//!
//! Exact counts for ViT, CLIP, SigLIP and Whisper (the layouts of their transformers
//! implementations); other encoders are counted as a ViT-style stack with a warning.

use crate::config::Cfg;
use crate::info::*;

/// Parameters of one pre-norm encoder layer: biased q/k/v/o (k unbiased for Whisper),
/// two LayerNorms, a biased two-matrix MLP.
fn encoder_layer(h: u64, ffn: u64, k_bias: bool) -> u64 {
    4 * h * h + 3 * h + if k_bias { h } else { 0 } + 2 * 2 * h + (h * ffn + ffn) + (ffn * h + h)
}

fn mha(heads: u64, layers: u64, h: u64) -> AttentionInfo {
    AttentionInfo {
        kind: AttentionKind::MultiHead,
        num_heads: heads,
        num_kv_heads: heads,
        gqa_ratio: 1,
        head_dim: h / heads.max(1),
        head_dim_explicit: false,
        num_layers: layers,
        qkv_bias: true,
        qk_norm: false,
        sinks: false,
        sliding_window: None,
        layer_spans: None,
        span_pattern: None,
        mla: None,
    }
}

struct Tower {
    h: u64,
    layers: u64,
    heads: u64,
    ffn: u64,
    params: u64,
    embedding: u64,
}

/// A CLIP or SigLIP vision tower.
fn vision_tower(c: Cfg, siglip: bool) -> Tower {
    let h = c.u64(&["hidden_size"]).unwrap_or(768);
    let layers = c.u64(&["num_hidden_layers"]).unwrap_or(12);
    let heads = c.u64(&["num_attention_heads"]).unwrap_or(12);
    let ffn = c.u64(&["intermediate_size"]).unwrap_or(4 * h);
    let p = c
        .u64(&["patch_size"])
        .unwrap_or(if siglip { 16 } else { 32 });
    let img = c.u64(&["image_size"]).unwrap_or(224);
    let ch = c.u64(&["num_channels"]).unwrap_or(3);
    let patches = (img / p) * (img / p);
    let mut params = layers * encoder_layer(h, ffn, true) + 2 * h; // + post norm
    let embedding;
    if siglip {
        embedding = ch * p * p * h + h + patches * h;
        if c.bool(&["vision_use_head"]).unwrap_or(true) {
            // attention-pooling head: probe, MHA (fused in_proj), LayerNorm, MLP
            params +=
                h + (3 * h * h + 3 * h) + (h * h + h) + 2 * h + (h * ffn + ffn) + (ffn * h + h);
        }
    } else {
        embedding = h + ch * p * p * h + (patches + 1) * h;
        params += 2 * h; // pre-layernorm
    }
    Tower {
        h,
        layers,
        heads,
        ffn,
        params: params + embedding,
        embedding,
    }
}

/// A CLIP or SigLIP text tower.
fn text_tower(c: Cfg, siglip: bool) -> Tower {
    let h = c.u64(&["hidden_size"]).unwrap_or(512);
    let layers = c.u64(&["num_hidden_layers"]).unwrap_or(12);
    let heads = c.u64(&["num_attention_heads"]).unwrap_or(8);
    let ffn = c.u64(&["intermediate_size"]).unwrap_or(4 * h);
    let v = c.u64(&["vocab_size"]).unwrap_or(49408);
    let pos = c
        .u64(&["max_position_embeddings"])
        .unwrap_or(if siglip { 64 } else { 77 });
    let embedding = v * h + pos * h;
    let mut params = layers * encoder_layer(h, ffn, true) + 2 * h + embedding;
    if siglip {
        let proj = c.u64(&["projection_size"]).unwrap_or(h);
        params += h * proj + proj;
    }
    Tower {
        h,
        layers,
        heads,
        ffn,
        params,
        embedding,
    }
}

fn base(
    model_type: &str,
    root: Cfg,
    family: Family,
    t: &Tower,
    b: ParamBreakdown,
    warnings: Vec<String>,
    known: bool,
) -> ArchitectureInfo {
    let total = b.total();
    let modality = if family == Family::Speech {
        Modality::Speech
    } else {
        Modality::Vision
    };
    ArchitectureInfo {
        modality,
        model_type: model_type.to_string(),
        architectures: root.architectures(),
        family,
        known_model_type: known,
        hidden_size: t.h,
        num_layers: t.layers,
        vocab_size: root
            .u64(&["vocab_size"])
            .or_else(|| root.obj("text_config").and_then(|c| c.u64(&["vocab_size"])))
            .unwrap_or(0),
        intermediate_size: Some(t.ffn),
        max_position_embeddings: root.u64(&["max_position_embeddings", "max_source_positions"]),
        tie_word_embeddings: root.bool(&["tie_word_embeddings"]).unwrap_or(true),
        attention: Some(mha(t.heads, t.layers, t.h)),
        moe: None,
        hybrid: None,
        params: ParamCounts {
            total,
            total_without_embedding: total - b.embedding,
            active: total,
            active_without_embedding: total - b.embedding,
            breakdown: b,
        },
        source_quantization: None,
        torch_dtype: root.str(&["torch_dtype", "dtype"]).map(String::from),
        warnings,
    }
}

pub(crate) fn detect_vision(root: Cfg, model_type: &str, family: Family) -> ArchitectureInfo {
    let archs = root.str_list(&["architectures"]).unwrap_or_default();
    let mut warnings = Vec::new();
    match model_type {
        "clip" | "siglip" | "siglip2" => {
            let siglip = model_type != "clip";
            let vc = root.obj("vision_config").unwrap_or(root);
            let tc = root.obj("text_config").unwrap_or(root);
            let v = vision_tower(vc, siglip);
            let t = text_tower(tc, siglip);
            let extra = if siglip {
                2 // logit_scale, logit_bias
            } else {
                let proj = root.u64(&["projection_dim"]).unwrap_or(512);
                v.h * proj + t.h * proj + 1
            };
            let b = ParamBreakdown {
                embedding: t.embedding,
                other: v.params + (t.params - t.embedding) + extra,
                ..Default::default()
            };
            base(model_type, root, family, &v, b, warnings, true)
        }
        "clip_vision_model" | "siglip_vision_model" | "siglip2_vision_model" => {
            let v = vision_tower(root, model_type != "clip_vision_model");
            let b = ParamBreakdown {
                other: v.params,
                ..Default::default()
            };
            base(model_type, root, family, &v, b, warnings, true)
        }
        _ => {
            // ViT-style stack: patch embedding with bias, [CLS] + position table, encoder
            // layers, final LayerNorm, then a pooler or a classifier.
            let h = root.u64(&["hidden_size"]).unwrap_or(768);
            let layers = root.u64(&["num_hidden_layers"]).unwrap_or(12);
            let heads = root.u64(&["num_attention_heads"]).unwrap_or(12);
            let ffn = root.u64(&["intermediate_size"]).unwrap_or(4 * h);
            let p = root.u64(&["patch_size"]).unwrap_or(16);
            let img = root.u64(&["image_size"]).unwrap_or(224);
            let ch = root.u64(&["num_channels"]).unwrap_or(3);
            let patches = (img / p) * (img / p);
            let embedding = h + (patches + 1) * h + ch * p * p * h + h;
            let mut other = embedding + layers * encoder_layer(h, ffn, true) + 2 * h;
            let labels = root
                .get(&["id2label"])
                .and_then(|v| v.as_object())
                .map(|m| m.len() as u64)
                .unwrap_or(2);
            if archs.iter().any(|a| a.ends_with("ForImageClassification")) {
                other += h * labels + labels;
            } else if model_type == "vit" {
                other += h * h + h; // pooler
            }
            let known = model_type == "vit";
            if !known {
                warnings.push(format!(
                    "{model_type}: parameters counted as a ViT-style encoder; the detection or \
                     classification head is approximate"
                ));
            }
            let t = Tower {
                h,
                layers,
                heads,
                ffn,
                params: other,
                embedding,
            };
            let b = ParamBreakdown {
                other,
                ..Default::default()
            };
            base(model_type, root, family, &t, b, warnings, known)
        }
    }
}

pub(crate) fn detect_speech(root: Cfg, model_type: &str) -> ArchitectureInfo {
    let d = root.u64(&["d_model", "hidden_size"]).unwrap_or(384);
    let enc_layers = root
        .u64(&["encoder_layers", "num_hidden_layers"])
        .unwrap_or(4);
    let dec_layers = root.u64(&["decoder_layers"]).unwrap_or(0);
    let heads = root
        .u64(&["encoder_attention_heads", "num_attention_heads"])
        .unwrap_or(6);
    let enc_ffn = root
        .u64(&["encoder_ffn_dim", "intermediate_size"])
        .unwrap_or(4 * d);
    let dec_ffn = root.u64(&["decoder_ffn_dim"]).unwrap_or(4 * d);
    let mut warnings = Vec::new();
    let b = if model_type == "whisper" {
        let mel = root.u64(&["num_mel_bins"]).unwrap_or(80);
        let v = root.u64(&["vocab_size"]).unwrap_or(51865);
        let src = root.u64(&["max_source_positions"]).unwrap_or(1500);
        let tgt = root.u64(&["max_target_positions"]).unwrap_or(448);
        let stem = mel * d * 3 + d + d * d * 3 + d + src * d;
        let enc = enc_layers * encoder_layer(d, enc_ffn, false) + 2 * d;
        // decoder layers add cross-attention and its LayerNorm
        let dec =
            dec_layers * (encoder_layer(d, dec_ffn, false) + 4 * d * d + 3 * d + 2 * d) + 2 * d;
        ParamBreakdown {
            embedding: v * d,
            other: stem + enc + dec + tgt * d,
            ..Default::default()
        }
    } else {
        warnings.push(format!(
            "{model_type}: parameters counted for the transformer encoder only; the convolutional \
             feature extractor is not included"
        ));
        ParamBreakdown {
            other: enc_layers * encoder_layer(d, enc_ffn, true),
            ..Default::default()
        }
    };
    let t = Tower {
        h: d,
        layers: enc_layers + dec_layers,
        heads,
        ffn: enc_ffn,
        params: b.total(),
        embedding: b.embedding,
    };
    base(
        model_type,
        root,
        Family::Speech,
        &t,
        b,
        warnings,
        model_type == "whisper",
    )
}
