//! Tensor name -> role. Both HuggingFace names (`model.layers.3.self_attn.q_proj.weight`)
//! and GGUF names (`blk.3.attn_q.weight`) are understood, so a plan can be made for an HF
//! checkpoint or a GGUF being requantized.

use serde::Serialize;

/// What a tensor does in the network. The planner keys its precision rules on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    TokenEmbedding,
    PositionEmbedding,
    OutputHead,
    FinalNorm,
    AttnNorm,
    FfnNorm,
    /// Any other normalisation weight (Gemma's post-norms, MLA latent norms, encoders).
    Norm,
    AttnQ,
    AttnK,
    AttnV,
    /// Fused q/k/v projection (Phi-3 style).
    AttnQkv,
    AttnOutput,
    AttnQNorm,
    AttnKNorm,
    /// Learned attention sinks (GPT-OSS).
    AttnSinks,
    /// MLA low-rank query down-projection.
    AttnQA,
    /// MLA query up-projection.
    AttnQB,
    /// MLA joint KV down-projection (with the decoupled rope key).
    AttnKvA,
    /// MLA KV up-projection.
    AttnKvB,
    /// Cross-attention (encoder-decoder) projections.
    CrossAttn,
    FfnGate,
    FfnUp,
    FfnDown,
    /// Fused gate+up projection.
    FfnGateUp,
    /// MoE router / gate.
    Router,
    /// Router score-correction bias (DeepSeek-V3 `e_score_correction_bias`).
    RouterBias,
    ExpertGate,
    ExpertUp,
    ExpertDown,
    /// Fused gate+up of routed experts (GPT-OSS, Granite `input_linear`, fused Qwen MoE).
    ExpertGateUp,
    SharedExpertGate,
    SharedExpertUp,
    SharedExpertDown,
    SharedExpertGateUp,
    /// Qwen2-MoE's sigmoid gate on the shared expert output.
    SharedExpertRouter,
    SsmInProj,
    SsmOutProj,
    SsmConv1d,
    SsmALog,
    SsmD,
    SsmDtBias,
    SsmNorm,
    /// Vision patch embedding / audio conv stem.
    ConvStem,
    /// Vision or speech encoder layer weights not covered above.
    EncoderBlock,
    /// Classification, detection (box/class) or pooling head of an encoder.
    TaskHead,
    /// Multi-token-prediction module weights (DeepSeek-V3's extra layer).
    NextTokenPrediction,
    Unknown,
}

/// What kind of array a tensor is within its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Weight,
    Bias,
    /// Block scales of a pre-quantized checkpoint (FP8 `weight_scale_inv`, MXFP4 `_scales`).
    Scale,
    /// Packed pre-quantized blocks (MXFP4 `_blocks`).
    Blocks,
}

/// The role of one tensor, with the layer and expert it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct TensorRole {
    pub role: Role,
    pub part: Part,
    pub layer: Option<u32>,
    /// Expert index for per-expert tensors; `None` for stacked (all-experts) tensors.
    pub expert: Option<u32>,
}

impl TensorRole {
    /// Tensors that must never be quantized: norms, 1-D parameters, router, SSM
    /// state parameters, biases and pre-quantized scales.
    pub fn keep_full_precision(&self) -> bool {
        self.part != Part::Weight
            || matches!(
                self.role,
                Role::FinalNorm
                    | Role::AttnNorm
                    | Role::FfnNorm
                    | Role::Norm
                    | Role::AttnQNorm
                    | Role::AttnKNorm
                    | Role::AttnSinks
                    | Role::Router
                    | Role::RouterBias
                    | Role::SharedExpertRouter
                    | Role::SsmConv1d
                    | Role::SsmALog
                    | Role::SsmD
                    | Role::SsmDtBias
                    | Role::SsmNorm
            )
    }

    pub fn is_expert(&self) -> bool {
        matches!(
            self.role,
            Role::ExpertGate | Role::ExpertUp | Role::ExpertDown | Role::ExpertGateUp
        )
    }
}

/// Splits the trailing part marker off a name: `x.weight` -> (`x`, Weight).
fn split_part(name: &str) -> (&str, Part) {
    for (suffix, part) in [
        (".weight_scale_inv", Part::Scale),
        (".weight_scale", Part::Scale),
        ("_scales", Part::Scale),
        ("_blocks", Part::Blocks),
        (".weight", Part::Weight),
        (".bias", Part::Bias),
        ("_bias", Part::Bias),
    ] {
        if let Some(stem) = name.strip_suffix(suffix) {
            return (stem, part);
        }
    }
    (name, Part::Weight)
}

/// Finds `layers.N.` / `layer.N.` / `blk.N.` / `h.N.` and returns (N, rest after it).
fn split_layer(name: &str) -> Option<(u32, &str)> {
    for marker in ["layers.", "layer.", "blk.", "h.", "block."] {
        let mut search = name;
        let mut offset = 0;
        while let Some(pos) = search.find(marker) {
            let at = offset + pos;
            let boundary = at == 0 || name.as_bytes()[at - 1] == b'.';
            let after = &name[at + marker.len()..];
            let digits: &str = &after[..after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len())];
            if boundary && !digits.is_empty() && after[digits.len()..].starts_with('.') {
                return Some((digits.parse().ok()?, &after[digits.len() + 1..]));
            }
            offset = at + marker.len();
            search = &name[offset..];
        }
    }
    None
}

/// Finds `experts.N.` and returns (N, rest after it).
fn split_expert(rest: &str) -> Option<(u32, &str)> {
    let pos = rest.find("experts.")?;
    let after = &rest[pos + "experts.".len()..];
    let end = after.find('.')?;
    let n = after[..end].parse().ok()?;
    Some((n, &after[end + 1..]))
}

/// Classifies a tensor name. `num_layers` (if known) marks layers past the model's last
/// as next-token-prediction modules.
pub fn classify(name: &str, num_layers: Option<u32>) -> TensorRole {
    let (stem, part) = split_part(name);
    let (layer, rest) = match split_layer(stem) {
        Some((l, rest)) => (Some(l), rest),
        None => (None, stem),
    };
    let mut r = TensorRole {
        role: Role::Unknown,
        part,
        layer,
        expert: None,
    };
    if let (Some(l), Some(n)) = (layer, num_layers) {
        if l >= n && !stem.contains("encoder") && !stem.contains("decoder") {
            r.role = Role::NextTokenPrediction;
            return r;
        }
    }
    r.role = if layer.is_some() {
        if let Some((e, inner)) = split_expert(rest) {
            r.expert = Some(e);
            expert_role(last(inner))
        } else {
            layer_role(rest, stem)
        }
    } else {
        global_role(stem)
    };
    // GPT-OSS keeps the router bias as `router.bias`: a bias of the router, not a
    // correction bias; the part already says Bias.
    r
}

fn last(s: &str) -> &str {
    s.rsplit('.').next().unwrap_or(s)
}

fn expert_role(leaf: &str) -> Role {
    match leaf {
        "gate_proj" | "w1" | "gate" => Role::ExpertGate,
        "up_proj" | "w3" | "up" => Role::ExpertUp,
        "down_proj" | "w2" | "down" => Role::ExpertDown,
        "gate_up_proj" => Role::ExpertGateUp,
        _ => Role::Unknown,
    }
}

fn layer_role(rest: &str, full: &str) -> Role {
    let leaf = last(rest);
    let in_shared =
        rest.contains("shared_expert") || rest.contains("shared_mlp") || rest.contains("shexp");
    let in_experts = rest.contains("experts") && !in_shared;
    let encoderish =
        full.contains("vision") || full.contains("encoder.") || full.starts_with("vit.");
    // GGUF names first: they are flat and unambiguous.
    let gguf = match rest {
        "attn_norm" => Some(Role::AttnNorm),
        "ffn_norm" => Some(Role::FfnNorm),
        "attn_q" => Some(Role::AttnQ),
        "attn_k" => Some(Role::AttnK),
        "attn_v" => Some(Role::AttnV),
        "attn_qkv" => Some(Role::AttnQkv),
        "attn_output" => Some(Role::AttnOutput),
        "attn_q_norm" => Some(Role::AttnQNorm),
        "attn_k_norm" => Some(Role::AttnKNorm),
        "attn_sinks" => Some(Role::AttnSinks),
        "attn_q_a" => Some(Role::AttnQA),
        "attn_q_b" => Some(Role::AttnQB),
        "attn_kv_a_mqa" => Some(Role::AttnKvA),
        "attn_kv_b" | "attn_k_b" | "attn_v_b" => Some(Role::AttnKvB),
        "attn_q_a_norm"
        | "attn_kv_a_norm"
        | "attn_post_norm"
        | "ffn_post_norm"
        | "post_attention_norm"
        | "post_ffw_norm" => Some(Role::Norm),
        "ffn_gate" => Some(Role::FfnGate),
        "ffn_up" => Some(Role::FfnUp),
        "ffn_down" => Some(Role::FfnDown),
        "ffn_gate_inp" => Some(Role::Router),
        "exp_probs_b" => Some(Role::RouterBias),
        "ffn_gate_exps" => Some(Role::ExpertGate),
        "ffn_up_exps" => Some(Role::ExpertUp),
        "ffn_down_exps" => Some(Role::ExpertDown),
        "ffn_gate_up_exps" => Some(Role::ExpertGateUp),
        "ffn_gate_shexp" => Some(Role::SharedExpertGate),
        "ffn_up_shexp" => Some(Role::SharedExpertUp),
        "ffn_down_shexp" => Some(Role::SharedExpertDown),
        "ffn_gate_inp_shexp" => Some(Role::SharedExpertRouter),
        "ssm_in" => Some(Role::SsmInProj),
        "ssm_out" => Some(Role::SsmOutProj),
        "ssm_conv1d" => Some(Role::SsmConv1d),
        "ssm_a" => Some(Role::SsmALog),
        "ssm_d" => Some(Role::SsmD),
        "ssm_dt" => Some(Role::SsmDtBias),
        "ssm_norm" => Some(Role::SsmNorm),
        _ => None,
    };
    if let Some(role) = gguf {
        return role;
    }
    if in_shared {
        return match leaf {
            "gate_proj" => Role::SharedExpertGate,
            "up_proj" => Role::SharedExpertUp,
            "down_proj" | "output_linear" => Role::SharedExpertDown,
            "input_linear" | "gate_up_proj" => Role::SharedExpertGateUp,
            "shared_expert_gate" => Role::SharedExpertRouter,
            _ => Role::Unknown,
        };
    }
    // Granite MoE keeps all experts stacked in `input_linear` (gate+up) and `output_linear`.
    if rest.contains("block_sparse_moe.") && matches!(leaf, "input_linear" | "output_linear") {
        return if leaf == "input_linear" {
            Role::ExpertGateUp
        } else {
            Role::ExpertDown
        };
    }
    if in_experts {
        // Stacked experts: `mlp.experts.gate_up_proj`, `mlp.experts.down_proj`.
        return match leaf {
            "gate_up_proj" => Role::ExpertGateUp,
            "gate_proj" => Role::ExpertGate,
            "up_proj" => Role::ExpertUp,
            "down_proj" => Role::ExpertDown,
            _ => Role::Unknown,
        };
    }
    if rest.contains("encoder_attn") {
        return if leaf.contains("layer_norm") {
            Role::Norm
        } else {
            Role::CrossAttn
        };
    }
    // Mamba-2 mixers: `mamba.*` (Granite, Bamba) or `mixer.*` (Nemotron-H, Mamba-2).
    if rest.starts_with("mamba.") || rest.starts_with("mixer.") {
        let ssm = match leaf {
            "in_proj" => Some(Role::SsmInProj),
            "out_proj" => Some(Role::SsmOutProj),
            "conv1d" => Some(Role::SsmConv1d),
            "A_log" => Some(Role::SsmALog),
            "D" => Some(Role::SsmD),
            "dt" => Some(Role::SsmDtBias),
            "norm" => Some(Role::SsmNorm),
            _ => None,
        };
        if let Some(role) = ssm {
            return role;
        }
    }
    match leaf {
        "input_layernorm"
        | "attention_norm"
        | "ln_1"
        | "layer_norm1"
        | "layernorm_before"
        | "self_attn_layer_norm"
        | "norm1"
        | "norm" => Role::AttnNorm,
        "post_attention_layernorm"
        | "ffn_norm"
        | "ln_2"
        | "layer_norm2"
        | "layernorm_after"
        | "final_layer_norm"
        | "norm2"
        | "pre_feedforward_layernorm" => Role::FfnNorm,
        "post_feedforward_layernorm" | "q_a_layernorm" | "kv_a_layernorm" => Role::Norm,
        "q_proj" | "query" => Role::AttnQ,
        "k_proj" | "key" => Role::AttnK,
        "v_proj" | "value" => Role::AttnV,
        "qkv_proj" | "query_key_value" | "c_attn" | "Wqkv" | "in_proj_weight" => Role::AttnQkv,
        "o_proj" | "out_proj" => Role::AttnOutput,
        "dense" if rest.contains("attention") => Role::AttnOutput,
        "q_norm" => Role::AttnQNorm,
        "k_norm" => Role::AttnKNorm,
        "sinks" => Role::AttnSinks,
        "q_a_proj" => Role::AttnQA,
        "q_b_proj" => Role::AttnQB,
        "kv_a_proj_with_mqa" => Role::AttnKvA,
        "kv_b_proj" => Role::AttnKvB,
        "gate_proj" | "w1" => Role::FfnGate,
        "up_proj" | "w3" | "fc1" | "c_fc" | "fc_in" => Role::FfnUp,
        "down_proj" | "w2" | "fc2" | "c_proj" | "fc_out" => Role::FfnDown,
        "dense" if rest.contains("intermediate") => Role::FfnUp,
        "dense" if rest.contains("output") => Role::FfnDown,
        "gate_up_proj" => Role::FfnGateUp,
        "e_score_correction" => Role::RouterBias,
        "gate" | "router" => Role::Router,
        "layer" if rest.contains("router") => Role::Router,
        _ if encoderish => Role::EncoderBlock,
        _ => Role::Unknown,
    }
}

fn global_role(stem: &str) -> Role {
    let leaf = last(stem);
    match stem {
        "token_embd" => return Role::TokenEmbedding,
        "output" => return Role::OutputHead,
        "output_norm" => return Role::FinalNorm,
        "rope_freqs" => return Role::Unknown,
        _ => {}
    }
    if stem.ends_with("embed_tokens")
        || stem.ends_with("wte")
        || stem == "backbone.embeddings"
        || stem.ends_with("token_embedding")
        || stem.ends_with("word_embeddings")
        || stem.ends_with("tok_embeddings")
    {
        return Role::TokenEmbedding;
    }
    if stem.ends_with("embed_positions")
        || stem.ends_with("position_embedding")
        || stem.ends_with("position_embeddings")
        || stem.ends_with("wpe")
        || stem.ends_with("class_embedding")
        || stem.ends_with("cls_token")
    {
        return Role::PositionEmbedding;
    }
    if stem == "lm_head" || stem.ends_with(".lm_head") || stem == "proj_out" {
        return Role::OutputHead;
    }
    if matches!(
        leaf,
        "norm" | "norm_f" | "ln_f" | "final_layernorm" | "final_norm"
    ) || stem.ends_with("model.norm")
    {
        return Role::FinalNorm;
    }
    if stem.contains("patch_embed")
        || matches!(leaf, "conv1" | "conv2")
        || stem.contains("patch_embedding")
        || stem.contains("projection") && stem.contains("embeddings")
    {
        return Role::ConvStem;
    }
    if leaf.contains("layernorm") || leaf.contains("layer_norm") || leaf.contains("layrnorm") {
        return Role::Norm;
    }
    if stem.contains("classifier")
        || stem.contains("bbox")
        || stem.contains("class_labels")
        || stem.contains("pooler")
        || stem.contains("head")
        || stem.contains("projection")
        || stem.contains("logit_")
    {
        return Role::TaskHead;
    }
    Role::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cases: &[(&str, Role, Option<u32>, Option<u32>)]) {
        for (name, role, layer, expert) in cases {
            let r = classify(name, Some(61));
            assert_eq!(
                (r.role, r.layer, r.expert),
                (*role, *layer, *expert),
                "{name}"
            );
        }
    }

    #[test]
    fn llama_qwen_gemma_names() {
        use Role::*;
        check(&[
            ("model.embed_tokens.weight", TokenEmbedding, None, None),
            ("lm_head.weight", OutputHead, None, None),
            ("model.norm.weight", FinalNorm, None, None),
            (
                "model.layers.0.input_layernorm.weight",
                AttnNorm,
                Some(0),
                None,
            ),
            (
                "model.layers.0.post_attention_layernorm.weight",
                FfnNorm,
                Some(0),
                None,
            ),
            (
                "model.layers.12.self_attn.q_proj.weight",
                AttnQ,
                Some(12),
                None,
            ),
            (
                "model.layers.12.self_attn.k_proj.bias",
                AttnK,
                Some(12),
                None,
            ),
            (
                "model.layers.12.self_attn.v_proj.weight",
                AttnV,
                Some(12),
                None,
            ),
            (
                "model.layers.12.self_attn.o_proj.weight",
                AttnOutput,
                Some(12),
                None,
            ),
            (
                "model.layers.3.self_attn.q_norm.weight",
                AttnQNorm,
                Some(3),
                None,
            ),
            (
                "model.layers.3.self_attn.k_norm.weight",
                AttnKNorm,
                Some(3),
                None,
            ),
            (
                "model.layers.3.mlp.gate_proj.weight",
                FfnGate,
                Some(3),
                None,
            ),
            ("model.layers.3.mlp.up_proj.weight", FfnUp, Some(3), None),
            (
                "model.layers.3.mlp.down_proj.weight",
                FfnDown,
                Some(3),
                None,
            ),
            (
                "model.layers.3.pre_feedforward_layernorm.weight",
                FfnNorm,
                Some(3),
                None,
            ),
            (
                "model.layers.3.post_feedforward_layernorm.weight",
                Norm,
                Some(3),
                None,
            ),
            (
                "model.language_model.layers.5.self_attn.q_proj.weight",
                AttnQ,
                Some(5),
                None,
            ),
        ]);
        assert_eq!(
            classify("model.layers.1.self_attn.k_proj.bias", None).part,
            Part::Bias
        );
    }

    #[test]
    fn moe_names() {
        use Role::*;
        check(&[
            // Mixtral
            (
                "model.layers.7.block_sparse_moe.gate.weight",
                Router,
                Some(7),
                None,
            ),
            (
                "model.layers.7.block_sparse_moe.experts.5.w1.weight",
                ExpertGate,
                Some(7),
                Some(5),
            ),
            (
                "model.layers.7.block_sparse_moe.experts.5.w2.weight",
                ExpertDown,
                Some(7),
                Some(5),
            ),
            (
                "model.layers.7.block_sparse_moe.experts.5.w3.weight",
                ExpertUp,
                Some(7),
                Some(5),
            ),
            // Qwen3-MoE, per-expert and fused
            ("model.layers.2.mlp.gate.weight", Router, Some(2), None),
            (
                "model.layers.2.mlp.experts.127.gate_proj.weight",
                ExpertGate,
                Some(2),
                Some(127),
            ),
            (
                "model.layers.2.mlp.experts.0.down_proj.weight",
                ExpertDown,
                Some(2),
                Some(0),
            ),
            (
                "model.layers.2.mlp.experts.gate_up_proj",
                ExpertGateUp,
                Some(2),
                None,
            ),
            (
                "model.layers.2.mlp.experts.down_proj",
                ExpertDown,
                Some(2),
                None,
            ),
            // Qwen2-MoE shared expert
            (
                "model.layers.1.mlp.shared_expert.gate_proj.weight",
                SharedExpertGate,
                Some(1),
                None,
            ),
            (
                "model.layers.1.mlp.shared_expert.down_proj.weight",
                SharedExpertDown,
                Some(1),
                None,
            ),
            (
                "model.layers.1.mlp.shared_expert_gate.weight",
                SharedExpertRouter,
                Some(1),
                None,
            ),
            // DeepSeek-V3
            (
                "model.layers.4.self_attn.q_a_proj.weight",
                AttnQA,
                Some(4),
                None,
            ),
            (
                "model.layers.4.self_attn.q_a_layernorm.weight",
                Norm,
                Some(4),
                None,
            ),
            (
                "model.layers.4.self_attn.q_b_proj.weight",
                AttnQB,
                Some(4),
                None,
            ),
            (
                "model.layers.4.self_attn.kv_a_proj_with_mqa.weight",
                AttnKvA,
                Some(4),
                None,
            ),
            (
                "model.layers.4.self_attn.kv_b_proj.weight",
                AttnKvB,
                Some(4),
                None,
            ),
            (
                "model.layers.4.mlp.gate.e_score_correction_bias",
                RouterBias,
                Some(4),
                None,
            ),
            (
                "model.layers.4.mlp.shared_experts.up_proj.weight",
                SharedExpertUp,
                Some(4),
                None,
            ),
            (
                "model.layers.4.mlp.experts.255.up_proj.weight",
                ExpertUp,
                Some(4),
                Some(255),
            ),
            (
                "model.layers.4.mlp.experts.255.up_proj.weight_scale_inv",
                ExpertUp,
                Some(4),
                Some(255),
            ),
            (
                "model.layers.61.enorm.weight",
                NextTokenPrediction,
                Some(61),
                None,
            ),
            // GPT-OSS
            ("model.layers.0.self_attn.sinks", AttnSinks, Some(0), None),
            ("model.layers.0.mlp.router.weight", Router, Some(0), None),
            ("model.layers.0.mlp.router.bias", Router, Some(0), None),
            (
                "model.layers.0.mlp.experts.gate_up_proj_blocks",
                ExpertGateUp,
                Some(0),
                None,
            ),
            (
                "model.layers.0.mlp.experts.gate_up_proj_scales",
                ExpertGateUp,
                Some(0),
                None,
            ),
            (
                "model.layers.0.mlp.experts.down_proj_bias",
                ExpertDown,
                Some(0),
                None,
            ),
        ]);
        let r = classify(
            "model.layers.4.mlp.experts.255.up_proj.weight_scale_inv",
            None,
        );
        assert_eq!(r.part, Part::Scale);
        assert!(r.keep_full_precision());
        assert_eq!(
            classify("model.layers.0.mlp.experts.gate_up_proj_blocks", None).part,
            Part::Blocks
        );
    }

    #[test]
    fn hybrid_names() {
        use Role::*;
        check(&[
            // Granite 4.0-H
            (
                "model.layers.0.mamba.in_proj.weight",
                SsmInProj,
                Some(0),
                None,
            ),
            (
                "model.layers.0.mamba.conv1d.weight",
                SsmConv1d,
                Some(0),
                None,
            ),
            ("model.layers.0.mamba.conv1d.bias", SsmConv1d, Some(0), None),
            ("model.layers.0.mamba.dt_bias", SsmDtBias, Some(0), None),
            ("model.layers.0.mamba.A_log", SsmALog, Some(0), None),
            ("model.layers.0.mamba.D", SsmD, Some(0), None),
            ("model.layers.0.mamba.norm.weight", SsmNorm, Some(0), None),
            (
                "model.layers.0.mamba.out_proj.weight",
                SsmOutProj,
                Some(0),
                None,
            ),
            (
                "model.layers.0.block_sparse_moe.router.layer.weight",
                Router,
                Some(0),
                None,
            ),
            (
                "model.layers.0.block_sparse_moe.input_linear.weight",
                ExpertGateUp,
                Some(0),
                None,
            ),
            (
                "model.layers.0.block_sparse_moe.output_linear.weight",
                ExpertDown,
                Some(0),
                None,
            ),
            (
                "model.layers.0.shared_mlp.input_linear.weight",
                SharedExpertGateUp,
                Some(0),
                None,
            ),
            (
                "model.layers.0.shared_mlp.output_linear.weight",
                SharedExpertDown,
                Some(0),
                None,
            ),
            // Nemotron-H
            ("backbone.embeddings.weight", TokenEmbedding, None, None),
            ("backbone.norm_f.weight", FinalNorm, None, None),
            ("backbone.layers.0.norm.weight", AttnNorm, Some(0), None),
            (
                "backbone.layers.0.mixer.in_proj.weight",
                SsmInProj,
                Some(0),
                None,
            ),
            (
                "backbone.layers.0.mixer.norm.weight",
                SsmNorm,
                Some(0),
                None,
            ),
            (
                "backbone.layers.5.mixer.q_proj.weight",
                AttnQ,
                Some(5),
                None,
            ),
            (
                "backbone.layers.5.mixer.o_proj.weight",
                AttnOutput,
                Some(5),
                None,
            ),
            ("backbone.layers.1.mixer.gate.weight", Router, Some(1), None),
            (
                "backbone.layers.1.mixer.gate.e_score_correction_bias",
                RouterBias,
                Some(1),
                None,
            ),
            (
                "backbone.layers.1.mixer.experts.9.up_proj.weight",
                ExpertUp,
                Some(1),
                Some(9),
            ),
            (
                "backbone.layers.1.mixer.shared_experts.down_proj.weight",
                SharedExpertDown,
                Some(1),
                None,
            ),
        ]);
        assert!(classify("model.layers.0.mamba.A_log", None).keep_full_precision());
        assert!(!classify("model.layers.0.mamba.in_proj.weight", None).keep_full_precision());
    }

    #[test]
    fn gguf_names() {
        use Role::*;
        check(&[
            ("token_embd.weight", TokenEmbedding, None, None),
            ("output.weight", OutputHead, None, None),
            ("output_norm.weight", FinalNorm, None, None),
            ("blk.0.attn_q.weight", AttnQ, Some(0), None),
            ("blk.0.attn_v.weight", AttnV, Some(0), None),
            ("blk.9.ffn_down_exps.weight", ExpertDown, Some(9), None),
            ("blk.9.ffn_gate_inp.weight", Router, Some(9), None),
            ("blk.9.exp_probs_b.bias", RouterBias, Some(9), None),
            ("blk.2.ssm_a", SsmALog, Some(2), None),
            ("blk.2.ssm_conv1d.weight", SsmConv1d, Some(2), None),
        ]);
    }

    #[test]
    fn encoder_names() {
        use Role::*;
        check(&[
            (
                "vision_model.embeddings.patch_embedding.weight",
                ConvStem,
                None,
                None,
            ),
            (
                "vision_model.encoder.layers.3.self_attn.q_proj.weight",
                AttnQ,
                Some(3),
                None,
            ),
            (
                "vision_model.encoder.layers.3.mlp.fc1.weight",
                FfnUp,
                Some(3),
                None,
            ),
            (
                "vision_model.encoder.layers.3.layer_norm2.weight",
                FfnNorm,
                Some(3),
                None,
            ),
            (
                "vit.encoder.layer.0.attention.attention.query.weight",
                AttnQ,
                Some(0),
                None,
            ),
            (
                "vit.encoder.layer.0.attention.output.dense.weight",
                AttnOutput,
                Some(0),
                None,
            ),
            (
                "vit.encoder.layer.0.intermediate.dense.weight",
                FfnUp,
                Some(0),
                None,
            ),
            (
                "vit.encoder.layer.0.output.dense.weight",
                FfnDown,
                Some(0),
                None,
            ),
            ("classifier.weight", TaskHead, None, None),
            ("model.encoder.conv1.weight", ConvStem, None, None),
            (
                "model.decoder.layers.1.encoder_attn.k_proj.weight",
                CrossAttn,
                Some(1),
                None,
            ),
            (
                "model.decoder.layers.1.encoder_attn_layer_norm.weight",
                Norm,
                Some(1),
                None,
            ),
            (
                "model.encoder.embed_positions.weight",
                PositionEmbedding,
                None,
                None,
            ),
            (
                "model.decoder.embed_tokens.weight",
                TokenEmbedding,
                None,
                None,
            ),
        ]);
    }
}
