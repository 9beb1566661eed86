//! The hyper-parameters the forward pass needs, read from an HF `config.json` or from a
//! GGUF file's metadata.

use pajamas_gguf::GgufFile;
use serde_json::Value;

use crate::error::{Result, RuntimeError};

/// The decoder families the forward pass implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// llama, SmolLM2, Mistral, Llama 3: pre-norm, SwiGLU.
    Llama,
    /// qwen2: llama with q/k/v biases.
    Qwen2,
    /// qwen3: llama with per-head q/k RMSNorm.
    Qwen3,
    /// Gemma 3: scaled embeddings, `(1 + w)` norms, sandwich norms around attention and
    /// MLP, GeGLU (tanh GELU), per-head q/k norm, interleaved local/global layers.
    Gemma3,
    /// IBM Granite 4.0-H (`granitemoehybrid`): Mamba-2 and attention layers (no
    /// positional encoding), a SwiGLU `shared_mlp` after each mixer (with routed experts
    /// beside it in the MoE models), Granite's multipliers. See [`HybridConfig`].
    GraniteHybrid,
    /// NVIDIA Nemotron-H (`nemotron_h`): blocks of one RMSNorm and one mixer each (Mamba-2,
    /// attention without positions, a relu^2 MLP, or relu^2 experts with a sigmoid
    /// router and a shared expert); `backbone.*` names.
    NemotronH,
    /// DeepSeek-V2/V3: multi-head latent attention, grouped routing, shared experts,
    /// leading dense layers (see [`crate::deepseek`]).
    Deepseek,
    /// OpenAI gpt-oss: attention sinks, biases, sliding and full layers, YaRN, clamped
    /// SwiGLU experts with biases (see `crate::gpt_oss`).
    GptOss,
}

impl Family {
    fn from_model_type(t: &str) -> Option<Family> {
        Some(match t {
            "llama" | "mistral" | "mixtral" => Family::Llama,
            "qwen2" | "qwen2_moe" => Family::Qwen2,
            "qwen3" | "qwen3_moe" => Family::Qwen3,
            "gemma3" | "gemma3_text" => Family::Gemma3,
            "granitemoehybrid" => Family::GraniteHybrid,
            "nemotron_h" => Family::NemotronH,
            "deepseek_v2" | "deepseek_v3" => Family::Deepseek,
            "gpt_oss" => Family::GptOss,
            _ => return None,
        })
    }
}

/// How positions are rotated in one kind of layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    /// Base frequency.
    pub theta: f64,
    /// Per rotary frequency divisors (Llama 3's `rope_freqs`), `head_dim / 2` values.
    pub freq_factors: Option<Vec<f32>>,
    /// Linear position scaling: angles are divided by this (1.0 = none).
    pub linear_factor: f64,
    /// YaRN scaling (gpt-oss).
    pub yarn: Option<crate::gpt_oss::Yarn>,
}

impl Rope {
    fn plain(theta: f64) -> Rope {
        Rope {
            theta,
            freq_factors: None,
            linear_factor: 1.0,
            yarn: None,
        }
    }
}

/// Mixture-of-experts feed-forward blocks (Mixtral, Qwen2-MoE, Qwen3-MoE). Which
/// layers have one is read from the weights (a layer with a router is MoE; Qwen's
/// `mlp_only_layers` keep a dense MLP).
#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    pub n_experts: usize,
    /// Experts each token is routed to.
    pub top_k: usize,
    /// Width of one routed expert's FFN.
    pub expert_ffn: usize,
    /// Renormalise the top-k routing weights to sum to 1 (Mixtral, Qwen3-MoE); otherwise
    /// they stay softmax probabilities over all experts (Qwen2-MoE).
    pub norm_topk_prob: bool,
    /// Width of the always-on shared expert (Qwen2-MoE, gated by a sigmoid), if any.
    pub shared_ffn: Option<usize>,
    /// Nemotron-H's router: sigmoid scores, the top-k of score + correction bias, weights
    /// the chosen scores (renormalised when `norm_topk_prob`) times this factor; relu^2
    /// experts. `None`: softmax routing, SwiGLU experts.
    pub sigmoid_scale: Option<f32>,
}

/// What one Nemotron-H block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    Mamba,
    Attention,
    Mlp,
    Moe,
}

/// The Mamba-2 layers and multipliers of a hybrid model (Granite 4.0-H, Nemotron-H).
#[derive(Debug, Clone, PartialEq)]
pub struct HybridConfig {
    /// Per layer: a Mamba-2 mixer (true) or not.
    pub mamba_layers: Vec<bool>,
    /// Nemotron-H: each block's single mixer (no separate FFN). Empty for Granite,
    /// whose layers are mixer + FFN.
    pub blocks: Vec<BlockKind>,
    pub ssm_heads: usize,
    pub ssm_head_dim: usize,
    pub ssm_state: usize,
    pub ssm_groups: usize,
    pub conv_kernel: usize,
    /// The embeddings are multiplied by this.
    pub embedding_multiplier: f32,
    /// Each mixer and FFN output is multiplied by this before the residual add.
    pub residual_multiplier: f32,
    /// The logits are divided by this.
    pub logits_scaling: f32,
}

impl HybridConfig {
    /// `ssm_heads * ssm_head_dim`.
    pub fn d_inner(&self) -> usize {
        self.ssm_heads * self.ssm_head_dim
    }

    /// Channels of the causal conv: x, B and C.
    pub fn conv_dim(&self) -> usize {
        self.d_inner() + 2 * self.ssm_groups * self.ssm_state
    }

    /// Width of `in_proj`'s output: z, x, B, C and one dt per head.
    pub fn d_in_proj(&self) -> usize {
        self.d_inner() + self.conv_dim() + self.ssm_heads
    }
}

/// Granite 4.0-H's experts (Tiny/Small): softmax over the top-k router logits (the
/// renormalised top-k of the full softmax), SwiGLU experts `intermediate_size` wide, and
/// the always-on `shared_mlp` as the shared expert. `None` without experts (Micro).
fn hf_granite_moe(cfg: &Value) -> Result<Option<MoeConfig>> {
    let n_experts = get_usize(cfg, "num_local_experts")?.unwrap_or(0);
    if n_experts == 0 {
        return Ok(None);
    }
    Ok(Some(MoeConfig {
        n_experts,
        top_k: need_usize(cfg, "num_experts_per_tok")?,
        expert_ffn: need_usize(cfg, "intermediate_size")?,
        norm_topk_prob: true,
        shared_ffn: get_usize(cfg, "shared_intermediate_size")?.filter(|w| *w > 0),
        sigmoid_scale: None,
    }))
}

/// Nemotron-H's blocks and experts from an HF config.
fn hf_nemotron(cfg: &Value, n_layers: usize) -> Result<(HybridConfig, Option<MoeConfig>)> {
    let pattern = cfg
        .get("hybrid_override_pattern")
        .and_then(Value::as_str)
        .ok_or_else(|| RuntimeError::Config("missing hybrid_override_pattern".into()))?;
    let blocks = pattern
        .chars()
        .map(|c| match c {
            'M' => Ok(BlockKind::Mamba),
            '*' => Ok(BlockKind::Attention),
            '-' => Ok(BlockKind::Mlp),
            'E' => Ok(BlockKind::Moe),
            other => Err(RuntimeError::Config(format!(
                "hybrid_override_pattern: unknown block {other:?}"
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    if blocks.len() != n_layers {
        return Err(RuntimeError::Config(format!(
            "hybrid_override_pattern has {} blocks for {n_layers} layers",
            blocks.len()
        )));
    }
    if get_usize(cfg, "n_group")?.unwrap_or(1) > 1 || get_usize(cfg, "moe_latent_size")?.is_some() {
        return Err(RuntimeError::Config(
            "Nemotron-H with grouped routing (n_group > 1) or a latent MoE is not supported by the runtime".into(),
        ));
    }
    let moe = if blocks.contains(&BlockKind::Moe) {
        Some(MoeConfig {
            n_experts: need_usize(cfg, "n_routed_experts")?,
            top_k: need_usize(cfg, "num_experts_per_tok")?,
            expert_ffn: need_usize(cfg, "moe_intermediate_size")?,
            norm_topk_prob: cfg
                .get("norm_topk_prob")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            shared_ffn: get_usize(cfg, "moe_shared_expert_intermediate_size")?.filter(|w| *w > 0),
            sigmoid_scale: Some(get_f64(cfg, "routed_scaling_factor")?.unwrap_or(1.0) as f32),
        })
    } else {
        None
    };
    let h = HybridConfig {
        mamba_layers: blocks.iter().map(|b| *b == BlockKind::Mamba).collect(),
        blocks,
        ssm_heads: need_usize(cfg, "mamba_num_heads")?,
        ssm_head_dim: need_usize(cfg, "mamba_head_dim")?,
        ssm_state: need_usize(cfg, "ssm_state_size")?,
        ssm_groups: get_usize(cfg, "n_groups")?.unwrap_or(1).max(1),
        conv_kernel: get_usize(cfg, "conv_kernel")?.unwrap_or(4),
        embedding_multiplier: 1.0,
        residual_multiplier: 1.0,
        logits_scaling: 1.0,
    };
    Ok((h, moe))
}

/// Granite 4.0-H's hybrid block from an HF config.
fn hf_granite_hybrid(cfg: &Value, n_layers: usize) -> Result<HybridConfig> {
    let pe = cfg
        .get("position_embedding_type")
        .and_then(Value::as_str)
        .unwrap_or("rope");
    if pe != "nope" {
        return Err(RuntimeError::Config(format!(
            "position_embedding_type {pe:?}: only Granite 4.0-H's attention without positions (\"nope\") is supported"
        )));
    }
    let types = cfg
        .get("layer_types")
        .and_then(Value::as_array)
        .ok_or_else(|| RuntimeError::Config("missing layer_types".into()))?;
    if types.len() != n_layers {
        return Err(RuntimeError::Config(format!(
            "layer_types has {} entries for {n_layers} layers",
            types.len()
        )));
    }
    let mamba_layers = types
        .iter()
        .map(|t| match t.as_str() {
            Some("mamba") | Some("linear_attention") => Ok(true),
            Some("attention") | Some("full_attention") => Ok(false),
            other => Err(RuntimeError::Config(format!(
                "unknown layer type {other:?}"
            ))),
        })
        .collect::<Result<Vec<bool>>>()?;
    let mult = |k: &str| -> Result<f32> { Ok(get_f64(cfg, k)?.unwrap_or(1.0) as f32) };
    let h = HybridConfig {
        mamba_layers,
        blocks: Vec::new(),
        ssm_heads: need_usize(cfg, "mamba_n_heads")?,
        ssm_head_dim: need_usize(cfg, "mamba_d_head")?,
        ssm_state: need_usize(cfg, "mamba_d_state")?,
        ssm_groups: get_usize(cfg, "mamba_n_groups")?.unwrap_or(1),
        conv_kernel: get_usize(cfg, "mamba_d_conv")?.unwrap_or(4),
        embedding_multiplier: mult("embedding_multiplier")?,
        residual_multiplier: mult("residual_multiplier")?,
        logits_scaling: mult("logits_scaling")?,
    };
    if h.ssm_groups == 0 || !h.ssm_heads.is_multiple_of(h.ssm_groups) {
        return Err(RuntimeError::Config(format!(
            "{} SSM heads cannot be grouped over {} groups",
            h.ssm_heads, h.ssm_groups
        )));
    }
    Ok(h)
}

/// Dense decoder hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// HF `model_type` (for a GGUF: the model type its architecture converts from).
    pub model_type: String,
    pub family: Family,
    pub hidden_size: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f32,
    /// RoPE of the full-attention layers.
    pub rope: Rope,
    /// RoPE of the sliding-window layers where it differs (Gemma 3's local base).
    pub rope_local: Option<Rope>,
    pub tie_word_embeddings: bool,
    /// RMSNorm of each query and key head before RoPE (qwen3, gemma3).
    pub qk_norm: bool,
    /// Window of the sliding layers: keys this many positions back or further are
    /// masked. `None`: every layer attends to the whole causal prefix.
    pub sliding_window: Option<usize>,
    /// Which layers use the window (`n_layers` values; all true for Mistral).
    pub layer_sliding: Vec<bool>,
    /// Scale of the attention scores (`1/sqrt(head_dim)`, Gemma 3:
    /// `query_pre_attn_scalar^-0.5`).
    pub attn_scale: f32,
    /// `cap * tanh(logits / cap)` on the output logits (Gemma 2 style), if set.
    pub final_logit_softcap: Option<f32>,
    /// Routed experts, for MoE models.
    pub moe: Option<MoeConfig>,
    /// Mamba-2 layers and multipliers (Granite 4.0-H).
    pub hybrid: Option<HybridConfig>,
    /// MLA and routing of DeepSeek-V2/V3.
    pub deepseek: Option<crate::deepseek::DeepseekConfig>,
}

const SUPPORTED: &str =
    "llama, mistral, mixtral, qwen2, qwen2_moe, qwen3, qwen3_moe, gemma3, granitemoehybrid, nemotron_h, deepseek_v2, deepseek_v3, gpt_oss";

/// The MoE block of an HF config, `None` for dense models.
fn hf_moe(cfg: &Value, model_type: &str) -> Result<Option<MoeConfig>> {
    let ffn_key = match model_type {
        "mixtral" => "intermediate_size",
        "qwen2_moe" | "qwen3_moe" => "moe_intermediate_size",
        _ => return Ok(None),
    };
    // Qwen's `num_experts` is `num_local_experts` in transformers 5's configs.
    let n_experts = match get_usize(cfg, "num_experts")? {
        Some(n) => n,
        None => need_usize(cfg, "num_local_experts")?,
    };
    let shared_ffn = match model_type {
        "qwen2_moe" => get_usize(cfg, "shared_expert_intermediate_size")?.filter(|w| *w > 0),
        _ => None,
    };
    Ok(Some(MoeConfig {
        n_experts,
        top_k: need_usize(cfg, "num_experts_per_tok")?,
        expert_ffn: need_usize(cfg, ffn_key)?,
        norm_topk_prob: cfg
            .get("norm_topk_prob")
            .and_then(Value::as_bool)
            .unwrap_or(model_type == "mixtral"),
        shared_ffn,
        sigmoid_scale: None,
    }))
}

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

/// The rope block of the full-attention layers: `rope_scaling` (transformers 4) or
/// `rope_parameters` (transformers 5, nested per layer type for Gemma 3).
fn rope_block(cfg: &Value) -> Option<&Value> {
    if let Some(rs) = cfg.get("rope_scaling").filter(|v| v.is_object()) {
        return Some(rs);
    }
    let rp = cfg.get("rope_parameters").filter(|v| v.is_object())?;
    Some(rp.get("full_attention").unwrap_or(rp))
}

fn rope_kind(block: &Value) -> &str {
    block
        .get("rope_type")
        .or_else(|| block.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default")
}

/// The global layers' RoPE from an HF config: plain, linear or Llama 3 scaling.
fn hf_rope(cfg: &Value, head_dim: usize) -> Result<Rope> {
    let theta = pajamas_convert::metadata::rope_theta(cfg).unwrap_or(10000.0);
    let mut rope = Rope::plain(theta);
    let Some(block) = rope_block(cfg) else {
        return Ok(rope);
    };
    match rope_kind(block) {
        "default" => {}
        "linear" => {
            rope.linear_factor = get_f64(block, "factor")?.ok_or_else(|| {
                RuntimeError::Config("linear rope scaling without a factor".into())
            })?
        }
        "llama3" => {
            let factors = pajamas_convert::metadata::llama3_rope_factors(cfg, head_dim as u64)
                .ok_or_else(|| {
                    RuntimeError::Config("llama3 rope scaling without a factor".into())
                })?;
            rope.freq_factors = Some(factors);
        }
        other => {
            return Err(RuntimeError::Config(format!(
                "rope scaling type {other:?} is not supported (supported: default, linear, llama3)"
            )))
        }
    }
    Ok(rope)
}

/// Gemma 3's local layers: `rope_local_base_freq` (transformers 4) or
/// `rope_parameters.sliding_attention.rope_theta` (5); 10000 when neither is set.
fn hf_rope_local(cfg: &Value) -> Result<Rope> {
    let theta = match get_f64(cfg, "rope_local_base_freq")? {
        Some(t) => t,
        None => cfg
            .pointer("/rope_parameters/sliding_attention/rope_theta")
            .and_then(Value::as_f64)
            .unwrap_or(10000.0),
    };
    Ok(Rope::plain(theta))
}

/// Gemma 3's layer pattern: `layer_types` when present, else every `pattern`-th layer
/// is global (`sliding_window_pattern`, default 6).
fn gemma_layer_sliding(cfg: &Value, n_layers: usize) -> Result<Vec<bool>> {
    if let Some(types) = cfg.get("layer_types").and_then(Value::as_array) {
        if types.len() != n_layers {
            return Err(RuntimeError::Config(format!(
                "layer_types has {} entries for {n_layers} layers",
                types.len()
            )));
        }
        return Ok(types
            .iter()
            .map(|t| t.as_str() == Some("sliding_attention"))
            .collect());
    }
    let pattern = match get_usize(cfg, "sliding_window_pattern")? {
        Some(p) => p,
        None => get_usize(cfg, "_sliding_window_pattern")?.unwrap_or(6),
    }
    .max(1);
    Ok((0..n_layers).map(|i| (i + 1) % pattern != 0).collect())
}

fn check_heads(n_heads: usize, n_kv_heads: usize, head_dim: usize) -> Result<()> {
    if n_heads == 0 || n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) {
        return Err(RuntimeError::Config(format!(
            "{n_heads} query heads cannot be grouped over {n_kv_heads} KV heads"
        )));
    }
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        return Err(RuntimeError::Config(format!(
            "head_dim {head_dim} must be even and positive"
        )));
    }
    Ok(())
}

impl ModelConfig {
    /// Reads an HF `config.json` value.
    pub fn from_hf_config(cfg: &Value) -> Result<Self> {
        let model_type = cfg
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| RuntimeError::Config("missing model_type".into()))?
            .to_string();
        let family = Family::from_model_type(&model_type).ok_or_else(|| {
            RuntimeError::Config(format!(
                "model_type {model_type:?} is not supported (supported: {SUPPORTED})"
            ))
        })?;
        if family == Family::Deepseek {
            return crate::deepseek::hf_config(cfg, model_type);
        }
        let hidden_size = need_usize(cfg, "hidden_size")?;
        let n_heads = need_usize(cfg, "num_attention_heads")?;
        let n_kv_heads = get_usize(cfg, "num_key_value_heads")?.unwrap_or(n_heads);
        let head_dim = match get_usize(cfg, "head_dim")? {
            Some(d) => d,
            None => hidden_size / n_heads.max(1),
        };
        check_heads(n_heads, n_kv_heads, head_dim)?;
        let n_layers = need_usize(cfg, "num_hidden_layers")?;
        let gemma = family == Family::Gemma3;
        let gpt_oss = match family {
            Family::GptOss => Some(crate::gpt_oss::hf_params(cfg, n_layers)?),
            _ => None,
        };
        let rope = match &gpt_oss {
            Some(g) => crate::gpt_oss::rope(
                pajamas_convert::metadata::rope_theta(cfg).unwrap_or(10000.0),
                g.yarn.clone(),
            ),
            None => hf_rope(cfg, head_dim)?,
        };
        let (sliding_window, layer_sliding, rope_local) = match family {
            Family::GptOss => {
                let g = gpt_oss.as_ref().expect("parsed above");
                (Some(g.sliding_window), g.layer_sliding.clone(), None)
            }
            Family::Gemma3 => (
                get_usize(cfg, "sliding_window")?,
                gemma_layer_sliding(cfg, n_layers)?,
                Some(hf_rope_local(cfg)?),
            ),
            Family::Llama if model_type == "mistral" => {
                let w = get_usize(cfg, "sliding_window")?;
                (w, vec![w.is_some(); n_layers], None)
            }
            _ => {
                if cfg.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
                    return Err(RuntimeError::Config(
                        "use_sliding_window is not supported yet".into(),
                    ));
                }
                (None, vec![false; n_layers], None)
            }
        };
        let nemotron = match family {
            Family::NemotronH => Some(hf_nemotron(cfg, n_layers)?),
            _ => None,
        };
        let hybrid = match family {
            Family::GraniteHybrid => Some(hf_granite_hybrid(cfg, n_layers)?),
            _ => nemotron.as_ref().map(|(h, _)| h.clone()),
        };
        let attn_scale = match (gemma, get_f64(cfg, "query_pre_attn_scalar")?) {
            (true, Some(s)) => (1.0 / s.sqrt()) as f32,
            // Granite's scores are scaled by attention_multiplier, not 1/sqrt(head_dim).
            _ if family == Family::GraniteHybrid => match get_f64(cfg, "attention_multiplier")? {
                Some(m) => m as f32,
                None => 1.0 / (head_dim as f32).sqrt(),
            },
            _ => 1.0 / (head_dim as f32).sqrt(),
        };
        // Granite 4.0-H's FFN is the shared MLP.
        let intermediate_size = match family {
            Family::GraniteHybrid => match get_usize(cfg, "shared_intermediate_size")? {
                Some(w) => w,
                None => need_usize(cfg, "intermediate_size")?,
            },
            _ => need_usize(cfg, "intermediate_size")?,
        };
        if get_f64(cfg, "attn_logit_softcapping")?.is_some() {
            return Err(RuntimeError::Config(
                "attn_logit_softcapping is not supported".into(),
            ));
        }
        Ok(ModelConfig {
            family,
            qk_norm: matches!(family, Family::Qwen3 | Family::Gemma3),
            hidden_size,
            n_heads,
            n_kv_heads,
            head_dim,
            intermediate_size,
            n_layers,
            vocab_size: need_usize(cfg, "vocab_size")?,
            rms_norm_eps: match get_f64(cfg, "rms_norm_eps")? {
                Some(e) => e,
                None => get_f64(cfg, "layer_norm_epsilon")?.unwrap_or(1e-6),
            } as f32,
            rope,
            rope_local,
            tie_word_embeddings: cfg
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(gemma),
            sliding_window,
            layer_sliding,
            attn_scale,
            final_logit_softcap: get_f64(cfg, "final_logit_softcapping")?.map(|c| c as f32),
            moe: match family {
                Family::GraniteHybrid => hf_granite_moe(cfg)?,
                Family::NemotronH => nemotron.and_then(|(_, m)| m),
                Family::GptOss => gpt_oss.map(|g| g.moe),
                _ => hf_moe(cfg, &model_type)?,
            },
            hybrid,
            model_type,
            deepseek: None,
        })
    }

    /// Reads the `<arch>.*` keys of a GGUF file, interpreting them the way llama.cpp
    /// does (e.g. the `llama` architecture ignores a sliding window, Gemma 3's attention
    /// scale is `1/sqrt(head_dim)`).
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let path = f.path().display().to_string();
        let err = |m: String| RuntimeError::Config(format!("{path}: {m}"));
        let arch = f
            .architecture()
            .ok_or_else(|| err("no general.architecture".into()))?
            .to_string();
        let (family, model_type) = match arch.as_str() {
            "llama" => (Family::Llama, "llama"),
            "qwen2" => (Family::Qwen2, "qwen2"),
            "qwen3" => (Family::Qwen3, "qwen3"),
            "qwen2moe" => (Family::Qwen2, "qwen2_moe"),
            "qwen3moe" => (Family::Qwen3, "qwen3_moe"),
            "gemma3" => (Family::Gemma3, "gemma3_text"),
            "granitehybrid" => (Family::GraniteHybrid, "granitemoehybrid"),
            "nemotron_h" | "nemotron_h_moe" => (Family::NemotronH, "nemotron_h"),
            "deepseek2" => return crate::deepseek::gguf_config(f),
            "gpt-oss" => (Family::GptOss, "gpt_oss"),
            other => {
                return Err(err(format!(
                    "architecture {other:?} is not supported by the runtime (supported: llama, qwen2, qwen2moe, qwen3, qwen3moe, gemma3, granitehybrid, nemotron_h, nemotron_h_moe, deepseek2, gpt-oss)"
                )))
            }
        };
        let key = |k: &str| format!("{arch}.{k}");
        let uint = |k: &str| -> Option<usize> {
            match f.get(&key(k))? {
                pajamas_gguf::Value::Array(a) => (0..a.len())
                    .filter_map(|i| a.get(i)?.as_uint())
                    .max()
                    .map(|v| v as usize),
                v => v.as_uint().map(|v| v as usize),
            }
        };
        let need = |k: &str| uint(k).ok_or_else(|| err(format!("missing {}", key(k))));
        let float = |k: &str| f.get(&key(k)).and_then(|v| v.as_float());
        let hidden_size = need("embedding_length")?;
        let n_heads = need("attention.head_count")?;
        let n_kv_heads = uint("attention.head_count_kv").unwrap_or(n_heads);
        let head_dim = uint("attention.key_length").unwrap_or(hidden_size / n_heads.max(1));
        check_heads(n_heads, n_kv_heads, head_dim)?;
        let n_layers = need("block_count")?;
        let embd = f
            .tensor("token_embd.weight")
            .ok_or_else(|| err("missing tensor token_embd.weight".into()))?;
        let vocab_size = embd.dims.get(1).copied().unwrap_or(0) as usize;
        let gemma = family == Family::Gemma3;
        let mut rope = Rope::plain(float("rope.freq_base").unwrap_or(if gemma {
            1_000_000.0
        } else {
            10_000.0
        }));
        if let Some(t) = f.tensor("rope_freqs.weight") {
            let data = f.data_of(t).map_err(|e| err(e.to_string()))?;
            let factors = pajamas_quant::dequantize_rows(t.ggml_type, data, t.n_elements as usize)
                .map_err(|e| err(format!("rope_freqs.weight: {e}")))?;
            if factors.len() != head_dim / 2 {
                return Err(err(format!(
                    "rope_freqs.weight has {} values, expected head_dim/2 = {}",
                    factors.len(),
                    head_dim / 2
                )));
            }
            rope.freq_factors = Some(factors);
        }
        if f.get_str(&key("rope.scaling.type")) == Some("linear") {
            if let Some(fac) = float("rope.scaling.factor").filter(|x| *x > 0.0) {
                rope.linear_factor = fac;
            }
        }
        // Experts as llama.cpp's loader reads them: Mixtral (`llama`) experts are
        // feed_forward_length wide and their weights renormalised, Qwen2-MoE's are not.
        let mut moe = match uint("expert_count").filter(|n| *n > 0) {
            None => None,
            Some(n_experts) => Some(MoeConfig {
                n_experts,
                top_k: need("expert_used_count")?,
                expert_ffn: match uint("expert_feed_forward_length") {
                    Some(w) => w,
                    None => need("feed_forward_length")?,
                },
                norm_topk_prob: match f.get(&key("expert_weights_norm")) {
                    Some(pajamas_gguf::Value::Bool(b)) => *b,
                    _ => arch != "qwen2moe",
                },
                shared_ffn: uint("expert_shared_feed_forward_length").filter(|w| *w > 0),
                sigmoid_scale: None,
            }),
        };
        let gpt_oss = match family {
            Family::GptOss => Some(crate::gpt_oss::gguf_params(f, n_layers)?),
            _ => None,
        };
        if let Some(g) = &gpt_oss {
            rope = crate::gpt_oss::rope(rope.theta, g.yarn.clone());
            moe = Some(g.moe.clone());
        }
        let (sliding_window, layer_sliding, rope_local) = if let Some(g) = gpt_oss {
            (Some(g.sliding_window), g.layer_sliding, None)
        } else if gemma {
            let pattern: Vec<bool> = match f.get(&key("attention.sliding_window_pattern")) {
                Some(pajamas_gguf::Value::Array(pajamas_gguf::Array::Bool(b))) => b.clone(),
                // llama.cpp's default for Gemma 3: five local layers, then a global one.
                _ => (0..n_layers).map(|i| i % 6 < 5).collect(),
            };
            if pattern.len() != n_layers {
                return Err(err(format!(
                    "attention.sliding_window_pattern has {} entries for {n_layers} layers",
                    pattern.len()
                )));
            }
            (
                uint("attention.sliding_window"),
                pattern,
                Some(Rope::plain(float("rope.freq_base_swa").unwrap_or(10_000.0))),
            )
        } else {
            (None, vec![false; n_layers], None)
        };
        let hybrid = if family == Family::GraniteHybrid {
            if matches!(
                f.get(&key("rope.scaling.finetuned")),
                Some(pajamas_gguf::Value::Bool(true)) | None
            ) {
                return Err(err(
                    "granitehybrid with rope (rope.scaling.finetuned not false) is not supported by the runtime".into(),
                ));
            }
            // llama.cpp: a layer is recurrent iff its head_count_kv is 0.
            let kv: Vec<usize> = match f.get(&key("attention.head_count_kv")) {
                Some(pajamas_gguf::Value::Array(a)) => (0..a.len())
                    .map(|i| a.get(i).and_then(|v| v.as_uint()).unwrap_or(0) as usize)
                    .collect(),
                _ => {
                    return Err(err(
                        "attention.head_count_kv is not a per-layer array".into()
                    ))
                }
            };
            if kv.len() != n_layers {
                return Err(err(format!(
                    "attention.head_count_kv has {} entries for {n_layers} layers",
                    kv.len()
                )));
            }
            let heads = need("ssm.time_step_rank")?;
            let scale = |k: &str| {
                float(k)
                    .filter(|x| *x != 0.0)
                    .map(|x| x as f32)
                    .unwrap_or(1.0)
            };
            Some(HybridConfig {
                mamba_layers: kv.iter().map(|&k| k == 0).collect(),
                blocks: Vec::new(),
                ssm_heads: heads,
                ssm_head_dim: need("ssm.inner_size")? / heads.max(1),
                ssm_state: need("ssm.state_size")?,
                ssm_groups: need("ssm.group_count")?.max(1),
                conv_kernel: need("ssm.conv_kernel")?,
                embedding_multiplier: scale("embedding_scale"),
                residual_multiplier: scale("residual_scale"),
                logits_scaling: scale("logit_scale"),
            })
        } else if family == Family::NemotronH {
            // A block is attention where head_count_kv > 0, an MLP/MoE where
            // feed_forward_length > 0, else Mamba-2 (llama.cpp's rule).
            let per_layer = |k: &str| -> Result<Vec<usize>> {
                match f.get(&key(k)) {
                    Some(pajamas_gguf::Value::Array(a)) if a.len() == n_layers => Ok((0..a.len())
                        .map(|i| a.get(i).and_then(|v| v.as_uint()).unwrap_or(0) as usize)
                        .collect()),
                    _ => Err(err(format!("{} is not a per-layer array", key(k)))),
                }
            };
            let (kv, ff) = (
                per_layer("attention.head_count_kv")?,
                per_layer("feed_forward_length")?,
            );
            let blocks: Vec<BlockKind> = kv
                .iter()
                .zip(&ff)
                .map(|(&k, &w)| match (k > 0, w > 0) {
                    (true, _) => BlockKind::Attention,
                    (false, true) if moe.is_some() => BlockKind::Moe,
                    (false, true) => BlockKind::Mlp,
                    (false, false) => BlockKind::Mamba,
                })
                .collect();
            if let Some(m) = moe.as_mut() {
                m.sigmoid_scale = Some(float("expert_weights_scale").unwrap_or(1.0) as f32);
            }
            let heads = need("ssm.time_step_rank")?;
            Some(HybridConfig {
                mamba_layers: blocks.iter().map(|b| *b == BlockKind::Mamba).collect(),
                blocks,
                ssm_heads: heads,
                ssm_head_dim: need("ssm.inner_size")? / heads.max(1),
                ssm_state: need("ssm.state_size")?,
                ssm_groups: need("ssm.group_count")?.max(1),
                conv_kernel: need("ssm.conv_kernel")?,
                embedding_multiplier: 1.0,
                residual_multiplier: 1.0,
                logits_scaling: 1.0,
            })
        } else {
            None
        };
        let attn_scale = match float("attention.scale").filter(|x| *x != 0.0) {
            Some(s) if hybrid.is_some() => s as f32,
            _ => 1.0 / (head_dim as f32).sqrt(),
        };
        Ok(ModelConfig {
            model_type: model_type.to_string(),
            family,
            hidden_size,
            n_heads,
            n_kv_heads,
            head_dim,
            intermediate_size: need("feed_forward_length")?,
            n_layers,
            vocab_size,
            rms_norm_eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f32,
            rope,
            rope_local,
            tie_word_embeddings: f.tensor("output.weight").is_none(),
            qk_norm: matches!(family, Family::Qwen3 | Family::Gemma3),
            sliding_window,
            layer_sliding,
            attn_scale,
            final_logit_softcap: float("final_logit_softcapping").map(|c| c as f32),
            moe,
            hybrid,
            deepseek: None,
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

    /// Whether this is Gemma 3 (scaled embeddings, sandwich norms, GeGLU).
    pub fn is_gemma(&self) -> bool {
        self.family == Family::Gemma3
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
        assert_eq!(c.rope, Rope::plain(1e6));
        assert!(c.qk_norm && c.tie_word_embeddings);
        assert_eq!((c.q_dim(), c.kv_dim()), (128, 64));
    }

    #[test]
    fn llama3_scaling_and_unknown_models() {
        let base = json!({
            "model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
            "intermediate_size": 128, "num_hidden_layers": 2, "vocab_size": 10,
            "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
        });
        let c = ModelConfig::from_hf_config(&base).unwrap();
        let f = c.rope.freq_factors.as_ref().unwrap();
        assert_eq!(f.len(), 8);
        assert_eq!((f[0], f[7]), (1.0, 8.0));
        let mut yarn = base.clone();
        yarn["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
        assert!(ModelConfig::from_hf_config(&yarn).is_err());
        let mut other = base.clone();
        other["rope_scaling"] = Value::Null;
        let c = ModelConfig::from_hf_config(&other).unwrap();
        assert_eq!((c.head_dim, c.n_kv_heads), (16, 4));
        assert_eq!(c.rope, Rope::plain(500000.0));
        other["model_type"] = json!("phi3");
        assert!(ModelConfig::from_hf_config(&other).is_err());
    }

    #[test]
    fn gemma3_layers_and_ropes() {
        let c = ModelConfig::from_hf_config(&json!({
            "model_type": "gemma3_text", "hidden_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 128,
            "num_hidden_layers": 7, "vocab_size": 10, "query_pre_attn_scalar": 256,
            "sliding_window": 512, "sliding_window_pattern": 6, "rope_theta": 1e6,
            "rope_local_base_freq": 10000.0,
            "rope_scaling": {"rope_type": "linear", "factor": 8.0}
        }))
        .unwrap();
        assert_eq!(c.layer_sliding, [true, true, true, true, true, false, true]);
        assert_eq!(c.rope.linear_factor, 8.0);
        assert_eq!(c.rope_local, Some(Rope::plain(10000.0)));
        assert_eq!(c.attn_scale, 1.0 / 16.0);
        assert!(c.tie_word_embeddings && c.qk_norm && c.is_gemma());
    }
}
