//! The detected architecture: what `detect` reports and what the planner reads.
//!
//! Serialised as the stable `detect --json` schema (documented in docs/detect-json.md):
//! fields are only ever added, never renamed.

use serde::Serialize;

/// Broad kind of model, as the original tool printed it (`Detected: llm (qwen3)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Modality {
    Llm,
    Vision,
    Speech,
}

/// The structural family that decides the quantization strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Decoder-only transformer with a dense FFN in every layer.
    DenseDecoder,
    /// Decoder-only transformer whose FFNs are (mostly) mixtures of experts.
    Moe,
    /// Mamba-2 layers interleaved with attention layers, dense FFNs.
    HybridMamba,
    /// Mamba-2 / attention hybrid with MoE FFNs (Granite 4.0-H Small, Nemotron-3-Nano).
    HybridMambaMoe,
    /// Image encoder (ViT, CLIP, SigLIP, DINOv2...).
    VisionEncoder,
    /// Object detector (YOLOS, DETR, RT-DETR...).
    VisionDetector,
    /// Speech encoder-decoder (Whisper) or encoder (wav2vec2, HuBERT).
    Speech,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKind {
    /// Multi-head attention: one KV head per query head.
    MultiHead,
    /// Grouped-query attention: several query heads share a KV head.
    GroupedQuery,
    /// Multi-query attention: one KV head for all query heads.
    MultiQuery,
    /// DeepSeek multi-head latent attention: K/V come from a low-rank latent.
    MultiHeadLatent,
}

impl AttentionKind {
    /// The original tool's spelling.
    pub fn long_name(self) -> &'static str {
        match self {
            AttentionKind::MultiHead => "multi_head_attention (MHA)",
            AttentionKind::GroupedQuery => "grouped_query_attention (GQA)",
            AttentionKind::MultiQuery => "multi_query_attention (MQA)",
            AttentionKind::MultiHeadLatent => "multi_head_latent_attention (MLA)",
        }
    }
}

/// Per-layer attention span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionSpan {
    Global,
    SlidingWindow,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MlaInfo {
    pub q_lora_rank: Option<u64>,
    pub kv_lora_rank: u64,
    pub qk_nope_head_dim: u64,
    pub qk_rope_head_dim: u64,
    pub v_head_dim: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttentionInfo {
    pub kind: AttentionKind,
    pub num_heads: u64,
    pub num_kv_heads: u64,
    /// Query heads per KV head (`4` means 4:1); 1 for MHA.
    pub gqa_ratio: u64,
    pub head_dim: u64,
    /// Whether `head_dim` is set independently of hidden_size / num_heads.
    pub head_dim_explicit: bool,
    /// Number of attention layers (all layers for a transformer; fewer for hybrids).
    pub num_layers: u64,
    pub qkv_bias: bool,
    pub qk_norm: bool,
    /// Learned attention sinks (GPT-OSS).
    pub sinks: bool,
    /// Window length where the config declares sliding-window attention.
    pub sliding_window: Option<u64>,
    /// Span of every attention layer, where local and global layers alternate or the
    /// whole model uses a window.
    pub layer_spans: Option<Vec<AttentionSpan>>,
    /// e.g. "5 local : 1 global" for Gemma 3.
    pub span_pattern: Option<String>,
    pub mla: Option<MlaInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouterScoring {
    Softmax,
    Sigmoid,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoeInfo {
    pub num_experts: u64,
    pub experts_per_token: u64,
    pub num_shared_experts: u64,
    /// FFN width of one routed expert.
    pub expert_ffn_size: u64,
    /// Total FFN width of the shared expert(s), if any.
    pub shared_expert_ffn_size: Option<u64>,
    /// Layers at the start that keep a dense FFN (DeepSeek `first_k_dense_replace`).
    pub leading_dense_layers: u64,
    /// Every n-th layer is MoE (1 = every layer).
    pub moe_layer_interval: u64,
    pub router_scoring: RouterScoring,
    /// Router carries a score-correction bias (DeepSeek-V3 `e_score_correction_bias`).
    pub router_correction_bias: bool,
    pub norm_topk_prob: bool,
    /// Indices of layers with an MoE FFN.
    pub moe_layers: Vec<u64>,
}

/// What a layer's token mixer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MixerKind {
    Attention,
    Mamba2,
    /// A layer with no token mixer (Nemotron-H's standalone MLP / MoE blocks).
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SsmInfo {
    pub state_size: u64,
    pub conv_kernel: u64,
    pub num_heads: u64,
    pub head_dim: u64,
    pub num_groups: u64,
    /// Inner (expanded) width: num_heads * head_dim.
    pub inner_size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HybridInfo {
    /// Mixer of every layer, in order.
    pub layer_mixers: Vec<MixerKind>,
    pub mamba_layers: Vec<u64>,
    pub attention_layers: Vec<u64>,
    /// Mamba : attention layer ratio, reduced (e.g. "9:1").
    pub ratio: String,
    /// The config key the layout came from.
    pub source_key: String,
    pub ssm: SsmInfo,
}

/// Parameter counts, split by component, from the config alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ParamBreakdown {
    pub embedding: u64,
    /// Untied LM head (0 when tied to the embedding).
    pub output: u64,
    pub attention: u64,
    pub dense_ffn: u64,
    pub router: u64,
    pub shared_experts: u64,
    pub routed_experts: u64,
    /// Mamba-2 in/out projections.
    pub mamba_proj: u64,
    /// Mamba-2 conv1d, A_log, D, dt_bias and gated-norm weights.
    pub ssm_params: u64,
    pub norms: u64,
    /// Encoder-specific tensors (patch/conv stems, position tables, vision heads...).
    pub other: u64,
}

impl ParamBreakdown {
    pub fn total(&self) -> u64 {
        self.embedding
            + self.output
            + self.attention
            + self.dense_ffn
            + self.router
            + self.shared_experts
            + self.routed_experts
            + self.mamba_proj
            + self.ssm_params
            + self.norms
            + self.other
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamCounts {
    pub total: u64,
    pub total_without_embedding: u64,
    /// Parameters used per token: everything but the routed experts, plus
    /// experts_per_token of them. Equal to `total` for dense models.
    pub active: u64,
    pub active_without_embedding: u64,
    pub breakdown: ParamBreakdown,
}

/// Everything detection learns from config.json.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchitectureInfo {
    pub modality: Modality,
    /// config.json `model_type` (of the text model for multimodal wrappers).
    pub model_type: String,
    pub architectures: Vec<String>,
    pub family: Family,
    /// True when the model_type is known to us; false for best-effort detection.
    pub known_model_type: bool,
    pub hidden_size: u64,
    pub num_layers: u64,
    pub vocab_size: u64,
    pub intermediate_size: Option<u64>,
    pub max_position_embeddings: Option<u64>,
    pub tie_word_embeddings: bool,
    pub attention: Option<AttentionInfo>,
    pub moe: Option<MoeInfo>,
    pub hybrid: Option<HybridInfo>,
    pub params: ParamCounts,
    /// `quantization_config.quant_method` of the checkpoint itself (fp8, mxfp4...).
    pub source_quantization: Option<String>,
    pub torch_dtype: Option<String>,
    pub warnings: Vec<String>,
}
