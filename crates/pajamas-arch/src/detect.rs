//! config.json -> [`ArchitectureInfo`].
//!
//! Detection first builds a per-layer description (token mixer + FFN kind) from the
//! family's config keys, then derives everything else (MoE layer list, hybrid pattern,
//! exact parameter counts) from that one description, so the families differ only in how
//! they read their keys.

use serde_json::Value;

use crate::config::Cfg;
use crate::info::*;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("config.json is not a JSON object")]
    NotAnObject,
    #[error(
        "cannot detect the architecture of model_type '{model_type}': config.json lacks {missing}. \
         A decoder needs hidden_size, num_hidden_layers, num_attention_heads and vocab_size \
         (or their aliases n_embd, n_layer, n_head); if this is a new architecture, please \
         report it with its config.json"
    )]
    MissingKeys { model_type: String, missing: String },
    #[error("config.json: {key} = {value} is inconsistent: {why}")]
    Inconsistent {
        key: String,
        value: String,
        why: String,
    },
}

const SPEECH_TYPES: &[&str] = &["whisper", "wav2vec2", "hubert", "wavlm", "speech_to_text"];
const VISION_ENCODER_TYPES: &[&str] = &[
    "vit",
    "deit",
    "beit",
    "dinov2",
    "clip",
    "clip_vision_model",
    "siglip",
    "siglip_vision_model",
    "siglip2",
    "siglip2_vision_model",
    "convnext",
    "convnextv2",
    "resnet",
    "swin",
    "mobilevit",
    "efficientnet",
];
const VISION_DETECTOR_TYPES: &[&str] = &[
    "yolos",
    "detr",
    "conditional_detr",
    "deformable_detr",
    "rt_detr",
    "rt_detr_v2",
    "d_fine",
    "owlvit",
    "owlv2",
    "yolo",
];

/// Decoder model types whose layout we know exactly.
const KNOWN_DECODERS: &[&str] = &[
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3_text",
    "granite",
    "smollm3",
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "deepseek_v2",
    "deepseek_v3",
    "gpt_oss",
    "granitemoe",
    "granitemoeshared",
    "granitemoehybrid",
    "nemotron_h",
];

/// Detects the architecture described by a parsed `config.json`.
pub fn detect(config: &Value) -> Result<ArchitectureInfo, DetectError> {
    let root = Cfg::new(config).ok_or(DetectError::NotAnObject)?;
    let model_type = root.str(&["model_type"]).unwrap_or("").to_string();
    if SPEECH_TYPES.contains(&model_type.as_str()) {
        return Ok(crate::encoders::detect_speech(root, &model_type));
    }
    if VISION_ENCODER_TYPES.contains(&model_type.as_str()) {
        return Ok(crate::encoders::detect_vision(
            root,
            &model_type,
            Family::VisionEncoder,
        ));
    }
    if VISION_DETECTOR_TYPES.contains(&model_type.as_str()) {
        return Ok(crate::encoders::detect_vision(
            root,
            &model_type,
            Family::VisionDetector,
        ));
    }
    detect_decoder(root, &model_type)
}

/// How a layer mixes tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mixer {
    Attention,
    Mamba,
    None,
}

/// A layer's FFN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ffn {
    Dense,
    Moe,
    None,
}

#[derive(Debug, Clone)]
struct AttnSpec {
    heads: u64,
    kv_heads: u64,
    head_dim: u64,
    v_head_dim: u64,
    qkv_bias: bool,
    o_bias: bool,
    qk_norm: bool,
    sinks: bool,
    mla: Option<MlaInfo>,
}

impl AttnSpec {
    fn params(&self, h: u64) -> u64 {
        let (nh, nkv) = (self.heads, self.kv_heads);
        if let Some(m) = &self.mla {
            let qk = m.qk_nope_head_dim + m.qk_rope_head_dim;
            let q = match m.q_lora_rank {
                Some(r) => h * r + r + r * nh * qk,
                None => h * nh * qk,
            };
            let kv = h * (m.kv_lora_rank + m.qk_rope_head_dim)
                + m.kv_lora_rank
                + m.kv_lora_rank * nh * (m.qk_nope_head_dim + m.v_head_dim);
            let o = nh * m.v_head_dim * h;
            return q + kv + o;
        }
        let (hd, vd) = (self.head_dim, self.v_head_dim);
        let mut p = h * nh * hd + h * nkv * hd + h * nkv * vd + nh * vd * h;
        if self.qkv_bias {
            p += nh * hd + nkv * hd + nkv * vd;
        }
        if self.o_bias {
            p += h;
        }
        if self.qk_norm {
            p += 2 * hd;
        }
        if self.sinks {
            p += nh;
        }
        p
    }
}

/// A feed-forward block: `gated` means three matrices (gate, up, down), else two.
#[derive(Debug, Clone, Copy)]
struct MlpSpec {
    size: u64,
    gated: bool,
    bias: bool,
}

impl MlpSpec {
    fn params(&self, h: u64) -> u64 {
        let mats = if self.gated { 3 } else { 2 };
        let mut p = mats * h * self.size;
        if self.bias {
            p += (mats - 1) * self.size + h;
        }
        p
    }
}

#[derive(Debug, Clone)]
struct MoeSpec {
    experts: u64,
    per_token: u64,
    expert: MlpSpec,
    shared: Option<MlpSpec>,
    num_shared: u64,
    /// Shared expert's sigmoid gate (Qwen2-MoE): hidden -> 1.
    shared_gate: bool,
    router_bias: bool,
    correction_bias: bool,
    scoring: RouterScoring,
    norm_topk_prob: bool,
    leading_dense: u64,
    interval: u64,
}

#[derive(Debug, Clone)]
struct MambaSpec {
    info: SsmInfo,
    conv_bias: bool,
    proj_bias: bool,
}

impl MambaSpec {
    /// (projection params, small SSM params)
    fn params(&self, h: u64) -> (u64, u64) {
        let s = &self.info;
        let gs = 2 * s.num_groups * s.state_size;
        let in_dim = 2 * s.inner_size + gs + s.num_heads;
        let conv_dim = s.inner_size + gs;
        let mut proj = h * in_dim + s.inner_size * h;
        if self.proj_bias {
            proj += in_dim + h;
        }
        let mut small = conv_dim * s.conv_kernel + 3 * s.num_heads + s.inner_size;
        if self.conv_bias {
            small += conv_dim;
        }
        (proj, small)
    }
}

fn required(root: Cfg, model_type: &str) -> Result<(u64, u64, u64, u64), DetectError> {
    let h = root.u64(&["hidden_size", "n_embd", "d_model"]);
    let l = root.u64(&["num_hidden_layers", "n_layer", "num_layers"]);
    let nh = root.u64(&["num_attention_heads", "n_head"]);
    let v = root.u64(&["vocab_size"]);
    let missing: Vec<&str> = [
        ("hidden_size", h.is_none()),
        ("num_hidden_layers", l.is_none()),
        ("num_attention_heads", nh.is_none()),
        ("vocab_size", v.is_none()),
    ]
    .iter()
    .filter(|(_, m)| *m)
    .map(|(k, _)| *k)
    .collect();
    if !missing.is_empty() {
        return Err(DetectError::MissingKeys {
            model_type: if model_type.is_empty() {
                "(none)".into()
            } else {
                model_type.into()
            },
            missing: missing.join(", "),
        });
    }
    let (h, l, nh, v) = (h.unwrap(), l.unwrap(), nh.unwrap(), v.unwrap());
    if nh == 0 || h == 0 || l == 0 {
        return Err(DetectError::Inconsistent {
            key: "hidden_size / num_hidden_layers / num_attention_heads".into(),
            value: format!("{h} / {l} / {nh}"),
            why: "must all be positive".into(),
        });
    }
    Ok((h, l, nh, v))
}

fn detect_decoder(outer: Cfg, outer_type: &str) -> Result<ArchitectureInfo, DetectError> {
    // Multimodal wrappers (Gemma 3 4B+, Mistral 3...) keep the language model in text_config.
    let (root, model_type) = match outer.obj("text_config") {
        Some(tc) if !outer.has(&["num_hidden_layers", "n_layer"]) => (
            tc,
            tc.str(&["model_type"]).unwrap_or(outer_type).to_string(),
        ),
        _ => (outer, outer_type.to_string()),
    };
    let mt = model_type.as_str();
    let mut warnings = Vec::new();
    let known = KNOWN_DECODERS.contains(&mt);
    if !known {
        warnings.push(format!(
            "model_type '{}' is not one we know; detected on a best-effort basis from the usual keys \
             (dense decoder, llama-style layers). Check the parameter count against the publisher's.",
            if mt.is_empty() { "(none)" } else { mt }
        ));
    }
    let (h, n_layers, nh, vocab) = required(root, mt)?;
    let gemma = mt.starts_with("gemma");
    let nkv = root
        .u64(&["num_key_value_heads", "n_head_kv", "num_kv_heads"])
        .unwrap_or(nh);
    if nkv == 0 || nh % nkv != 0 {
        return Err(DetectError::Inconsistent {
            key: "num_key_value_heads".into(),
            value: nkv.to_string(),
            why: format!("must divide num_attention_heads = {nh}"),
        });
    }
    let explicit_head_dim = root.u64(&["head_dim", "attention_head_dim"]);
    let head_dim = explicit_head_dim.unwrap_or(h / nh);
    let intermediate = root.u64(&["intermediate_size", "ffn_dim", "n_inner"]);
    let tie_default = gemma || matches!(mt, "granitemoehybrid");
    let tied = root.bool(&["tie_word_embeddings"]).unwrap_or(tie_default);

    // Attention projections.
    let attention_bias = root.bool(&["attention_bias"]).unwrap_or(false);
    let qwen2ish = matches!(mt, "qwen2" | "qwen2_moe");
    let mla = root.u64(&["kv_lora_rank"]).map(|kv_lora_rank| MlaInfo {
        q_lora_rank: root.u64(&["q_lora_rank"]),
        kv_lora_rank,
        qk_nope_head_dim: root.u64(&["qk_nope_head_dim"]).unwrap_or(128),
        qk_rope_head_dim: root.u64(&["qk_rope_head_dim"]).unwrap_or(64),
        v_head_dim: root.u64(&["v_head_dim"]).unwrap_or(128),
    });
    let attn = AttnSpec {
        heads: nh,
        kv_heads: nkv,
        head_dim,
        v_head_dim: head_dim,
        qkv_bias: qwen2ish || attention_bias,
        o_bias: attention_bias,
        qk_norm: matches!(mt, "qwen3" | "qwen3_moe" | "gemma3" | "gemma3_text"),
        sinks: mt == "gpt_oss",
        mla: mla.clone(),
    };

    // FFNs and MoE.
    let mlp_bias = root.bool(&["mlp_bias"]).unwrap_or(false);
    let non_gated = matches!(mt, "nemotron_h")
        || root
            .str(&["mlp_hidden_act", "hidden_act"])
            .is_some_and(|a| a == "relu2");
    // Granite 4.0-H runs a "shared MLP" in every layer: beside the experts it is a shared
    // expert; in the dense variants it is the FFN.
    let granite_shared = matches!(mt, "granitemoehybrid" | "granitemoeshared")
        .then(|| root.u64(&["shared_intermediate_size"]))
        .flatten()
        .filter(|s| *s > 0);
    let dense = MlpSpec {
        size: granite_shared.or(intermediate).unwrap_or(4 * h),
        gated: !non_gated,
        bias: mlp_bias,
    };
    if intermediate.is_none() {
        warnings.push("intermediate_size not set; assumed 4 x hidden_size".into());
    }
    let moe = moe_spec(root, mt, intermediate, h, non_gated);

    // Per-layer layout.
    let (mixers, hybrid_key) = layer_mixers(root, mt, n_layers, &mut warnings)?;
    let ffns: Vec<Ffn> = (0..n_layers)
        .map(|i| layer_ffn(root, mt, i, moe.as_ref()))
        .collect();

    let mamba = if mixers.contains(&Mixer::Mamba) {
        Some(mamba_spec(root, h))
    } else {
        None
    };

    // Norms per layer: pre-mixer + pre-FFN for transformers; Gemma 2/3 add two post-norms;
    // Nemotron-H blocks hold a single norm.
    let norms_per_layer = match mt {
        "gemma2" | "gemma3" | "gemma3_text" => 4 * h,
        "nemotron_h" => h,
        _ => 2 * h,
    };

    // Count.
    let mut b = ParamBreakdown {
        embedding: vocab * h,
        output: if tied { 0 } else { vocab * h },
        norms: h + n_layers * norms_per_layer,
        ..Default::default()
    };
    let mut routed_per_layer = 0;
    for (mixer, ffn) in mixers.iter().zip(&ffns) {
        match mixer {
            Mixer::Attention => b.attention += attn.params(h),
            Mixer::Mamba => {
                let (proj, small) = mamba.as_ref().expect("mamba spec").params(h);
                b.mamba_proj += proj;
                b.ssm_params += small;
            }
            Mixer::None => {}
        }
        match ffn {
            Ffn::Dense => b.dense_ffn += dense.params(h),
            Ffn::Moe => {
                let m = moe.as_ref().expect("moe spec");
                b.router += m.experts * h
                    + if m.router_bias { m.experts } else { 0 }
                    + if m.correction_bias { m.experts } else { 0 };
                routed_per_layer = m.expert.params(h);
                b.routed_experts += m.experts * routed_per_layer;
                if let Some(s) = m.shared {
                    b.shared_experts += s.params(h) + if m.shared_gate { h } else { 0 };
                }
            }
            Ffn::None => {}
        }
    }
    let total = b.total();
    let (active, moe_info) = match &moe {
        Some(m) if ffns.contains(&Ffn::Moe) => {
            let moe_layers: Vec<u64> = ffns
                .iter()
                .enumerate()
                .filter(|(_, f)| **f == Ffn::Moe)
                .map(|(i, _)| i as u64)
                .collect();
            let active =
                total - b.routed_experts + moe_layers.len() as u64 * m.per_token * routed_per_layer;
            let info = MoeInfo {
                num_experts: m.experts,
                experts_per_token: m.per_token,
                num_shared_experts: m.num_shared,
                expert_ffn_size: m.expert.size,
                shared_expert_ffn_size: m.shared.map(|s| s.size),
                leading_dense_layers: m.leading_dense,
                moe_layer_interval: m.interval,
                router_scoring: m.scoring,
                router_correction_bias: m.correction_bias,
                norm_topk_prob: m.norm_topk_prob,
                moe_layers,
            };
            (active, Some(info))
        }
        _ => (total, None),
    };
    let params = ParamCounts {
        total,
        total_without_embedding: total - b.embedding,
        active,
        active_without_embedding: active - b.embedding,
        breakdown: b,
    };

    let attention_layers: Vec<u64> = mixers
        .iter()
        .enumerate()
        .filter(|(_, m)| **m == Mixer::Attention)
        .map(|(i, _)| i as u64)
        .collect();
    let hybrid = mamba.map(|m| {
        let mamba_layers: Vec<u64> = mixers
            .iter()
            .enumerate()
            .filter(|(_, x)| **x == Mixer::Mamba)
            .map(|(i, _)| i as u64)
            .collect();
        HybridInfo {
            ratio: ratio(mamba_layers.len() as u64, attention_layers.len() as u64),
            layer_mixers: mixers
                .iter()
                .map(|x| match x {
                    Mixer::Attention => MixerKind::Attention,
                    Mixer::Mamba => MixerKind::Mamba2,
                    Mixer::None => MixerKind::None,
                })
                .collect(),
            mamba_layers,
            attention_layers: attention_layers.clone(),
            source_key: hybrid_key.clone().unwrap_or_default(),
            ssm: m.info,
        }
    });

    let (layer_spans, sliding_window) = attention_spans(root, mt, &attention_layers);
    // A declared period (Gemma's sliding_window_pattern) describes the design better than
    // the counts, which a layer count that is not a multiple of the period skews.
    let span_pattern = match root.u64(&["sliding_window_pattern"]).filter(|p| *p > 1) {
        Some(p) if layer_spans.is_some() => Some(format!("{} local : 1 global", p - 1)),
        _ => layer_spans.as_ref().map(|s| span_pattern(s)),
    };
    let kind = if mla.is_some() {
        AttentionKind::MultiHeadLatent
    } else if nkv == nh {
        AttentionKind::MultiHead
    } else if nkv == 1 {
        AttentionKind::MultiQuery
    } else {
        AttentionKind::GroupedQuery
    };
    let attention = (!attention_layers.is_empty()).then(|| AttentionInfo {
        kind,
        num_heads: nh,
        num_kv_heads: nkv,
        gqa_ratio: nh / nkv,
        head_dim,
        head_dim_explicit: explicit_head_dim.is_some_and(|d| d != h / nh),
        num_layers: attention_layers.len() as u64,
        qkv_bias: attn.qkv_bias,
        qk_norm: attn.qk_norm,
        sinks: attn.sinks,
        sliding_window,
        layer_spans,
        span_pattern,
        mla,
    });

    let family = match (hybrid.is_some(), moe_info.is_some()) {
        (true, true) => Family::HybridMambaMoe,
        (true, false) => Family::HybridMamba,
        (false, true) => Family::Moe,
        (false, false) => Family::DenseDecoder,
    };
    Ok(ArchitectureInfo {
        modality: Modality::Llm,
        model_type,
        architectures: outer.architectures(),
        family,
        known_model_type: known,
        hidden_size: h,
        num_layers: n_layers,
        vocab_size: vocab,
        intermediate_size: intermediate,
        max_position_embeddings: root.u64(&["max_position_embeddings", "n_positions"]),
        tie_word_embeddings: tied,
        attention,
        moe: moe_info,
        hybrid,
        params,
        source_quantization: outer
            .obj("quantization_config")
            .and_then(|q| q.str(&["quant_method"]))
            .map(String::from),
        torch_dtype: outer.str(&["torch_dtype", "dtype"]).map(String::from),
        warnings,
    })
}

fn moe_spec(
    root: Cfg,
    mt: &str,
    intermediate: Option<u64>,
    h: u64,
    non_gated: bool,
) -> Option<MoeSpec> {
    let experts = root.u64(&[
        "num_local_experts",
        "num_experts",
        "n_routed_experts",
        "moe_num_experts",
    ])?;
    if experts == 0 {
        return None;
    }
    let per_token = root
        .u64(&[
            "num_experts_per_tok",
            "experts_per_token",
            "num_experts_per_token",
            "moe_top_k",
        ])
        .unwrap_or(2);
    let expert_size = root
        .u64(&["moe_intermediate_size", "expert_intermediate_size"])
        .or(intermediate)
        .unwrap_or(4 * h);
    let gpt_oss = mt == "gpt_oss";
    let expert = MlpSpec {
        size: expert_size,
        gated: !non_gated,
        bias: gpt_oss,
    };
    let num_shared = root
        .u64(&["n_shared_experts", "num_shared_experts"])
        .unwrap_or(0);
    let (shared, shared_gate) = if let Some(s) = root
        .u64(&[
            "shared_expert_intermediate_size",
            "moe_shared_expert_intermediate_size",
            "shared_intermediate_size",
        ])
        .filter(|s| *s > 0)
    {
        (
            Some(MlpSpec {
                size: s,
                gated: !non_gated,
                bias: false,
            }),
            mt == "qwen2_moe",
        )
    } else if num_shared > 0 {
        (
            Some(MlpSpec {
                size: expert_size * num_shared,
                gated: !non_gated,
                bias: false,
            }),
            false,
        )
    } else {
        (None, false)
    };
    let num_shared = if shared.is_some() {
        num_shared.max(1)
    } else {
        0
    };
    let sigmoid = root
        .str(&["scoring_func"])
        .map(|s| s == "sigmoid")
        .unwrap_or(mt == "nemotron_h");
    let correction_bias = root.str(&["topk_method"]) == Some("noaux_tc") || mt == "nemotron_h";
    Some(MoeSpec {
        experts,
        per_token,
        expert,
        shared,
        num_shared,
        shared_gate,
        router_bias: gpt_oss,
        correction_bias,
        scoring: if sigmoid {
            RouterScoring::Sigmoid
        } else {
            RouterScoring::Softmax
        },
        norm_topk_prob: root
            .bool(&["norm_topk_prob"])
            .unwrap_or(matches!(mt, "mixtral" | "gpt_oss")),
        leading_dense: root.u64(&["first_k_dense_replace"]).unwrap_or(0),
        interval: root
            .u64(&[
                "moe_layer_freq",
                "decoder_sparse_step",
                "moe_layer_interval",
            ])
            .unwrap_or(1)
            .max(1),
    })
}

fn layer_ffn(root: Cfg, mt: &str, i: u64, moe: Option<&MoeSpec>) -> Ffn {
    if mt == "nemotron_h" {
        let pattern = root.str(&["hybrid_override_pattern"]).unwrap_or("");
        return match pattern.as_bytes().get(i as usize) {
            Some(b'E') if moe.is_some() => Ffn::Moe,
            Some(b'-') => Ffn::Dense,
            _ => Ffn::None,
        };
    }
    let Some(m) = moe else {
        return Ffn::Dense;
    };
    if let Some(only) = root.u64_list(&["mlp_only_layers"]) {
        if only.contains(&i) {
            return Ffn::Dense;
        }
    }
    if i < m.leading_dense {
        return Ffn::Dense;
    }
    let is_moe = match mt {
        // Qwen MoE: layer i is sparse when (i + 1) % decoder_sparse_step == 0.
        "qwen2_moe" | "qwen3_moe" => (i + 1).is_multiple_of(m.interval),
        // DeepSeek: i % moe_layer_freq == 0 after the leading dense layers.
        _ => i.is_multiple_of(m.interval),
    };
    if is_moe {
        Ffn::Moe
    } else {
        Ffn::Dense
    }
}

fn layer_mixers(
    root: Cfg,
    mt: &str,
    n: u64,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Mixer>, Option<String>), DetectError> {
    if let Some(p) = root.str(&["hybrid_override_pattern"]) {
        if p.len() as u64 != n {
            return Err(DetectError::Inconsistent {
                key: "hybrid_override_pattern".into(),
                value: format!("'{p}'"),
                why: format!("has {} characters but num_hidden_layers = {n}", p.len()),
            });
        }
        let mixers = p
            .chars()
            .map(|c| match c {
                'M' => Mixer::Mamba,
                '*' => Mixer::Attention,
                _ => Mixer::None,
            })
            .collect();
        return Ok((mixers, Some("hybrid_override_pattern".into())));
    }
    if let Some(types) = root.str_list(&["layer_types", "layers_block_type"]) {
        let has_mamba = types
            .iter()
            .any(|t| t.contains("mamba") || *t == "linear_attention");
        if has_mamba {
            if types.len() as u64 != n {
                return Err(DetectError::Inconsistent {
                    key: "layer_types".into(),
                    value: format!("{} entries", types.len()),
                    why: format!("num_hidden_layers = {n}"),
                });
            }
            let mixers = types
                .iter()
                .map(|t| {
                    if t.contains("mamba") || *t == "linear_attention" {
                        Mixer::Mamba
                    } else {
                        Mixer::Attention
                    }
                })
                .collect();
            return Ok((mixers, Some("layer_types".into())));
        }
    }
    if let Some(idx) = root.u64_list(&["attn_layer_indices"]) {
        let mixers = (0..n)
            .map(|i| {
                if idx.contains(&i) {
                    Mixer::Attention
                } else {
                    Mixer::Mamba
                }
            })
            .collect();
        return Ok((mixers, Some("attn_layer_indices".into())));
    }
    if mt == "granitemoehybrid" || mt == "nemotron_h" {
        warnings.push(format!(
            "{mt} config has no layer_types / hybrid_override_pattern; assuming attention in every layer"
        ));
    }
    Ok((vec![Mixer::Attention; n as usize], None))
}

fn mamba_spec(root: Cfg, h: u64) -> MambaSpec {
    let heads = root
        .u64(&["mamba_n_heads", "mamba_num_heads", "ssm_num_heads"])
        .unwrap_or(h * 2 / 64);
    let expand = root.u64(&["mamba_expand", "expand"]).unwrap_or(2);
    let head_dim = root.u64(&["mamba_d_head", "mamba_head_dim"]);
    let inner = match head_dim {
        Some(d) => d * heads,
        None => expand * h,
    };
    let info = SsmInfo {
        state_size: root
            .u64(&["mamba_d_state", "ssm_state_size", "state_size"])
            .unwrap_or(128),
        conv_kernel: root.u64(&["mamba_d_conv", "conv_kernel"]).unwrap_or(4),
        num_heads: heads,
        head_dim: inner / heads.max(1),
        num_groups: root.u64(&["mamba_n_groups", "n_groups"]).unwrap_or(1),
        inner_size: inner,
    };
    MambaSpec {
        info,
        conv_bias: root
            .bool(&["mamba_conv_bias", "use_conv_bias"])
            .unwrap_or(true),
        proj_bias: root.bool(&["mamba_proj_bias", "use_bias"]).unwrap_or(false),
    }
}

/// Per-attention-layer spans where the config declares windows, and the window length.
fn attention_spans(
    root: Cfg,
    mt: &str,
    attn_layers: &[u64],
) -> (Option<Vec<AttentionSpan>>, Option<u64>) {
    let window = root.u64(&["sliding_window"]);
    if let Some(types) = root.str_list(&["layer_types"]) {
        if types.iter().any(|t| t.contains("sliding")) {
            let spans = attn_layers
                .iter()
                .map(|&i| match types.get(i as usize) {
                    Some(t) if t.contains("sliding") => AttentionSpan::SlidingWindow,
                    _ => AttentionSpan::Global,
                })
                .collect();
            return (Some(spans), window);
        }
    }
    let Some(w) = window else {
        return (None, None);
    };
    if let Some(pattern) = root.u64(&["sliding_window_pattern"]).filter(|p| *p > 0) {
        // Gemma 2/3: every pattern-th layer is global, the rest local.
        let spans = attn_layers
            .iter()
            .map(|&i| {
                if (i + 1) % pattern == 0 {
                    AttentionSpan::Global
                } else {
                    AttentionSpan::SlidingWindow
                }
            })
            .collect();
        return (Some(spans), Some(w));
    }
    if mt == "gemma2" {
        let spans = attn_layers
            .iter()
            .map(|&i| {
                if i % 2 == 0 {
                    AttentionSpan::SlidingWindow
                } else {
                    AttentionSpan::Global
                }
            })
            .collect();
        return (Some(spans), Some(w));
    }
    match root.bool(&["use_sliding_window"]) {
        // Qwen2 declares a window but disables it by default.
        Some(false) => (None, None),
        Some(true) => {
            let first = root.u64(&["max_window_layers"]).unwrap_or(0);
            let spans = attn_layers
                .iter()
                .map(|&i| {
                    if i >= first {
                        AttentionSpan::SlidingWindow
                    } else {
                        AttentionSpan::Global
                    }
                })
                .collect();
            (Some(spans), Some(w))
        }
        // Mistral: one window for every layer.
        None => (
            Some(vec![AttentionSpan::SlidingWindow; attn_layers.len()]),
            Some(w),
        ),
    }
}

fn span_pattern(spans: &[AttentionSpan]) -> String {
    let local = spans
        .iter()
        .filter(|s| **s == AttentionSpan::SlidingWindow)
        .count() as u64;
    let global = spans.len() as u64 - local;
    match (local, global) {
        (_, 0) => "all layers sliding-window".into(),
        (0, _) => "all layers global".into(),
        _ => {
            let r = ratio(local, global);
            let (a, b) = r.split_once(':').unwrap_or((&r, ""));
            format!("{a} local : {b} global")
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `a:b` reduced by their greatest common divisor ("36:4" -> "9:1").
pub(crate) fn ratio(a: u64, b: u64) -> String {
    let g = gcd(a, b).max(1);
    format!("{}:{}", a / g, b / g)
}
