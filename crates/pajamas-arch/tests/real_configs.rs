//! Detection on the verbatim config.json files of published models (data/configs/),
//! checked against the exact totals in data/configs/README.md.

use std::path::PathBuf;

use pajamas_arch::{detect, ArchitectureInfo, AttentionKind, Family, RouterScoring};

fn load(folder: &str) -> ArchitectureInfo {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/configs")
        .join(folder)
        .join("config.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    detect(&serde_json::from_str(&text).unwrap()).unwrap()
}

fn dense(folder: &str, total: u64, kind: AttentionKind, ratio: u64) -> ArchitectureInfo {
    let a = load(folder);
    assert_eq!(a.params.total, total, "{folder} total");
    assert_eq!(a.params.active, total, "{folder} active");
    assert_eq!(a.family, Family::DenseDecoder, "{folder}");
    let att = a.attention.as_ref().unwrap();
    assert_eq!(att.kind, kind, "{folder}");
    assert_eq!(att.gqa_ratio, ratio, "{folder}");
    assert!(a.warnings.is_empty(), "{folder}: {:?}", a.warnings);
    a
}

#[test]
fn smollm2() {
    let a = dense(
        "HuggingFaceTB__SmolLM2-135M-Instruct",
        134_515_008,
        AttentionKind::GroupedQuery,
        3,
    );
    assert!(a.tie_word_embeddings);
}

#[test]
fn qwen25_7b() {
    let a = dense(
        "Qwen__Qwen2.5-7B-Instruct",
        7_615_616_512,
        AttentionKind::GroupedQuery,
        7,
    );
    let att = a.attention.unwrap();
    assert!(att.qkv_bias);
    // declared but disabled
    assert_eq!(att.sliding_window, None);
}

#[test]
fn qwen3_dense() {
    let a = dense(
        "Qwen__Qwen3-0.6B",
        596_049_920,
        AttentionKind::GroupedQuery,
        2,
    );
    assert!(a.attention.as_ref().unwrap().head_dim_explicit);
    assert!(a.attention.unwrap().qk_norm);
    dense(
        "Qwen__Qwen3-8B",
        8_190_735_360,
        AttentionKind::GroupedQuery,
        4,
    );
}

#[test]
fn llama31_and_mistral() {
    dense(
        "meta-llama__Meta-Llama-3.1-8B",
        8_030_261_248,
        AttentionKind::GroupedQuery,
        4,
    );
    let m = dense(
        "mistralai__Mistral-7B-v0.1",
        7_241_732_096,
        AttentionKind::GroupedQuery,
        4,
    );
    let att = m.attention.unwrap();
    assert_eq!(att.sliding_window, Some(4096));
    assert_eq!(
        att.span_pattern.as_deref(),
        Some("all layers sliding-window")
    );
}

#[test]
fn gemma3_local_global() {
    let a = dense(
        "google__gemma-3-1b-it",
        999_885_952,
        AttentionKind::MultiQuery,
        4,
    );
    assert!(a.tie_word_embeddings);
    let att = a.attention.unwrap();
    assert_eq!(att.head_dim, 256);
    assert!(att.head_dim_explicit);
    assert_eq!(att.sliding_window, Some(512));
    assert_eq!(att.span_pattern.as_deref(), Some("5 local : 1 global"));
}

fn moe(folder: &str, total: u64, active: u64, active_wo_embd_approx: f64) -> ArchitectureInfo {
    let a = load(folder);
    assert_eq!(a.params.total, total, "{folder} total");
    assert_eq!(a.params.active, active, "{folder} active");
    let excl = a.params.active_without_embedding as f64 / 1e9;
    assert!(
        (excl - active_wo_embd_approx).abs() < 0.0005,
        "{folder}: {excl}"
    );
    a
}

#[test]
fn qwen3_moe() {
    let a = moe("Qwen__Qwen3-30B-A3B", 30_532_122_624, 3_353_032_704, 3.042);
    assert_eq!(a.family, Family::Moe);
    let m = a.moe.unwrap();
    assert_eq!(
        (m.num_experts, m.experts_per_token, m.num_shared_experts),
        (128, 8, 0)
    );
    assert_eq!(m.expert_ffn_size, 768);
    assert_eq!(m.moe_layers.len(), 48);
    assert_eq!(a.attention.unwrap().gqa_ratio, 8);
}

#[test]
fn mixtral() {
    let a = moe(
        "mistralai__Mixtral-8x7B-v0.1",
        46_702_792_704,
        12_879_925_248,
        12.749,
    );
    let m = a.moe.unwrap();
    assert_eq!((m.num_experts, m.experts_per_token), (8, 2));
    assert_eq!(m.router_scoring, RouterScoring::Softmax);
    assert_eq!(a.attention.unwrap().sliding_window, None);
}

#[test]
fn deepseek_v3() {
    let a = moe(
        "deepseek-ai__DeepSeek-V3",
        671_026_419_200,
        37_552_297_472,
        36.626,
    );
    let att = a.attention.unwrap();
    assert_eq!(att.kind, AttentionKind::MultiHeadLatent);
    assert_eq!(att.mla.unwrap().kv_lora_rank, 512);
    let m = a.moe.unwrap();
    assert_eq!(
        (m.num_experts, m.experts_per_token, m.num_shared_experts),
        (256, 8, 1)
    );
    assert_eq!(m.leading_dense_layers, 3);
    assert_eq!(m.router_scoring, RouterScoring::Sigmoid);
    assert!(m.router_correction_bias);
    assert_eq!(m.moe_layers.first(), Some(&3));
    assert_eq!(a.source_quantization.as_deref(), Some("fp8"));
}

#[test]
fn gpt_oss() {
    let a = moe("openai__gpt-oss-20b", 20_914_757_184, 4_187_440_704, 3.608);
    let att = a.attention.unwrap();
    assert!(att.sinks);
    assert_eq!(att.sliding_window, Some(128));
    assert_eq!(att.span_pattern.as_deref(), Some("1 local : 1 global"));
    assert_eq!(a.moe.unwrap().experts_per_token, 4);
    assert_eq!(a.source_quantization.as_deref(), Some("mxfp4"));
}

#[test]
fn nemotron_h_hybrid_moe() {
    let a = moe(
        "nvidia__NVIDIA-Nemotron-3-Nano-30B-A3B-BF16",
        31_577_940_288,
        3_580_076_352,
        3.228,
    );
    assert_eq!(a.family, Family::HybridMambaMoe);
    let h = a.hybrid.unwrap();
    assert_eq!(h.mamba_layers.len(), 23);
    assert_eq!(h.attention_layers.len(), 6);
    assert_eq!(h.ratio, "23:6");
    assert_eq!(h.ssm.num_groups, 8);
    assert_eq!(h.ssm.inner_size, 4096);
    assert_eq!(a.moe.unwrap().moe_layers.len(), 23);
}

fn alloc<'a>(
    s: &'a pajamas_arch::Strategy,
    prefix: &str,
) -> Option<&'a pajamas_arch::strategy::Allocation> {
    s.precision_allocation
        .iter()
        .find(|a| a.component.starts_with(prefix))
}

#[test]
fn strategies_follow_the_architecture() {
    use pajamas_arch::Precision;
    for folder in [
        "HuggingFaceTB__SmolLM2-135M-Instruct",
        "Qwen__Qwen2.5-7B-Instruct",
        "Qwen__Qwen3-0.6B",
        "Qwen__Qwen3-8B",
        "Qwen__Qwen3-30B-A3B",
        "meta-llama__Meta-Llama-3.1-8B",
        "mistralai__Mistral-7B-v0.1",
        "mistralai__Mixtral-8x7B-v0.1",
        "deepseek-ai__DeepSeek-V3",
        "openai__gpt-oss-20b",
        "google__gemma-3-1b-it",
        "nvidia__NVIDIA-Nemotron-3-Nano-30B-A3B-BF16",
    ] {
        let a = load(folder);
        let s = a.recommend();
        let allocated: u64 = s.precision_allocation.iter().map(|x| x.params).sum();
        assert_eq!(
            allocated, a.params.total,
            "{folder}: every parameter allocated once"
        );
        assert!(
            s.expected.bits_per_weight > 4.0 && s.expected.bits_per_weight < 9.0,
            "{folder}: {}",
            s.expected.bits_per_weight
        );
        assert!(
            s.group_size > 0 && a.hidden_size.is_multiple_of(s.group_size),
            "{folder}"
        );
    }
    // Dense GQA 4:1: K/V get more bits; 8B -> group 128.
    let s = load("Qwen__Qwen3-8B").recommend();
    assert_eq!(
        alloc(&s, "attention_k_v").unwrap().precision,
        Precision::Int6
    );
    assert_eq!(s.group_size, 128);
    assert_eq!(s.calibration.method, "importance_matrix");
    // SmolLM2 (GQA 3:1, tied): attention at base precision, tied head at 6 bits, group 64.
    let s = load("HuggingFaceTB__SmolLM2-135M-Instruct").recommend();
    assert!(alloc(&s, "attention_k_v").is_none());
    assert_eq!(
        alloc(&s, "embedding_and_output").unwrap().precision,
        Precision::Int6
    );
    assert_eq!(s.group_size, 64);
    // MoE: router kept at 16 bits, shared experts 8-bit where they exist, expert-balanced calibration.
    let s = load("deepseek-ai__DeepSeek-V3").recommend();
    assert_eq!(s.name, "Expert-aware mixed precision");
    assert_eq!(alloc(&s, "router").unwrap().precision, Precision::F16);
    assert_eq!(
        alloc(&s, "shared_experts").unwrap().precision,
        Precision::Int8
    );
    assert_eq!(
        alloc(&s, "attention (MLA").unwrap().precision,
        Precision::Int8
    );
    assert_eq!(s.calibration.method, "expert_balanced");
    assert!(alloc(
        &load("mistralai__Mixtral-8x7B-v0.1").recommend(),
        "shared_experts"
    )
    .is_none());
    // Hybrid: Mamba projections 8-bit, SSM state params f32, only attention layers cache KV.
    let s = load("nvidia__NVIDIA-Nemotron-3-Nano-30B-A3B-BF16").recommend();
    assert_eq!(s.name, "Per-block-type quantization");
    assert_eq!(
        alloc(&s, "mamba_in_out_proj").unwrap().precision,
        Precision::Int8
    );
    assert_eq!(
        alloc(&s, "ssm_state_params").unwrap().precision,
        Precision::F32
    );
    assert!(s.kv_cache.unwrap().contains("only the attention layers"));
}

/// Configs we wrote from public documentation (Granite 4.0-H, whose configs have no
/// public verbatim copy here) or know well (vision, speech), counted against the module
/// trees transformers builds for them (scripts/param_oracle.py -> expected.json).
#[test]
fn extra_configs_match_transformers() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/configs-extra");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("expected.json")).unwrap())
            .unwrap();
    let expected = expected.as_object().unwrap();
    assert_eq!(expected.len(), 7);
    for (folder, want) in expected {
        let text = std::fs::read_to_string(root.join(folder).join("config.json")).unwrap();
        let a = detect(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(a.params.total, want["total"].as_u64().unwrap(), "{folder}");
    }
    let granite = |name: &str| {
        let text = std::fs::read_to_string(root.join(name).join("config.json")).unwrap();
        detect(&serde_json::from_str(&text).unwrap()).unwrap()
    };
    let small = granite("ibm-granite__granite-4.0-h-small");
    assert_eq!(small.family, Family::HybridMambaMoe);
    let h = small.hybrid.as_ref().unwrap();
    assert_eq!(h.ratio, "9:1");
    assert_eq!(h.attention_layers, vec![5, 15, 25, 35]);
    assert_eq!(h.source_key, "layer_types");
    let m = small.moe.as_ref().unwrap();
    assert_eq!(
        (m.num_experts, m.experts_per_token, m.num_shared_experts),
        (72, 10, 1)
    );
    assert_eq!(m.shared_expert_ffn_size, Some(1536));
    // Published: 32B total, 9B active.
    assert_eq!((small.params.total as f64 / 1e9).round(), 32.0);
    assert_eq!((small.params.active as f64 / 1e9).round(), 9.0);
    let micro = granite("ibm-granite__granite-4.0-h-micro");
    assert_eq!(micro.family, Family::HybridMamba);
    assert!(micro.moe.is_none());
}

#[test]
fn unknown_model_type_best_effort_or_clear_error() {
    let cfg = serde_json::json!({
        "model_type": "brand_new_lm", "hidden_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 1000,
        "intermediate_size": 512
    });
    let a = detect(&cfg).unwrap();
    assert!(!a.known_model_type);
    assert_eq!(a.family, Family::DenseDecoder);
    assert_eq!(a.attention.as_ref().unwrap().gqa_ratio, 4);
    assert!(a.warnings[0].contains("brand_new_lm"));
    // llama-style count: embeddings + head + 2 x (attention + MLP + 2 norms) + final norm
    let layer = 256 * 256 * 2 + 256 * 64 * 2 + 3 * 256 * 512 + 2 * 256;
    assert_eq!(a.params.total, 2 * 1000 * 256 + 2 * layer + 256);

    let bad = serde_json::json!({"model_type": "mystery", "hidden_size": 64});
    let e = detect(&bad).unwrap_err().to_string();
    assert!(
        e.contains("mystery")
            && e.contains("num_hidden_layers")
            && e.contains("num_attention_heads")
            && e.contains("vocab_size"),
        "{e}"
    );
    assert!(
        e.contains("lacks num_hidden_layers, num_attention_heads, vocab_size"),
        "{e}"
    );

    let inconsistent = serde_json::json!({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 6, "num_key_value_heads": 4, "vocab_size": 10});
    assert!(detect(&inconsistent)
        .unwrap_err()
        .to_string()
        .contains("num_key_value_heads"));
}

#[test]
fn encoders_are_recognised() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/configs-extra");
    let load = |name: &str| {
        let text = std::fs::read_to_string(root.join(name).join("config.json")).unwrap();
        detect(&serde_json::from_str(&text).unwrap()).unwrap()
    };
    let w = load("openai__whisper-tiny");
    assert_eq!(
        (w.modality, w.family),
        (pajamas_arch::Modality::Speech, Family::Speech)
    );
    assert_eq!(w.num_layers, 8);
    for v in [
        "google__vit-base-patch16-224",
        "openai__clip-vit-base-patch32",
        "google__siglip-base-patch16-224",
    ] {
        let a = load(v);
        assert_eq!(
            (a.modality, a.family),
            (pajamas_arch::Modality::Vision, Family::VisionEncoder),
            "{v}"
        );
        assert_eq!(a.recommend().calibration.method, "activation_ranges");
    }
    let det = detect(
        &serde_json::json!({"model_type": "yolos", "hidden_size": 192, "num_hidden_layers": 12,
        "num_attention_heads": 3, "intermediate_size": 768}),
    )
    .unwrap();
    assert_eq!(det.family, Family::VisionDetector);
    assert!(!det.warnings.is_empty());
}
