//! The quantization strategy derived from a detected architecture.
//!
//! Every allocation is computed from the architecture's own components and parameter
//! counts (not looked up by model name), and carries the reason for its precision. The
//! expected size and compression follow from the allocation. Later stages turn these
//! component precisions into per-tensor GGUF and MLX types.

use serde::Serialize;

use crate::info::*;

/// A storage precision, with the bits per weight it costs in practice (block scales
/// included, as the nearest GGUF type stores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    F32,
    F16,
    Int8,
    Int6,
    Int5,
    Int4,
}

impl Precision {
    pub fn bits_per_weight(self) -> f64 {
        match self {
            Precision::F32 => 32.0,
            Precision::F16 => 16.0,
            Precision::Int8 => 8.5,    // Q8_0
            Precision::Int6 => 6.5625, // Q6_K
            Precision::Int5 => 5.5,    // Q5_K
            Precision::Int4 => 4.5,    // Q4_K
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
            Precision::Int6 => "int6",
            Precision::Int5 => "int5",
            Precision::Int4 => "int4",
        }
    }

    /// The GGUF type that realises this precision.
    pub fn gguf_type(self) -> &'static str {
        match self {
            Precision::F32 => "F32",
            Precision::F16 => "F16",
            Precision::Int8 => "Q8_0",
            Precision::Int6 => "Q6_K",
            Precision::Int5 => "Q5_K",
            Precision::Int4 => "Q4_K",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Allocation {
    pub component: String,
    pub precision: Precision,
    /// Parameters this component holds.
    pub params: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    pub method: String,
    pub samples: u64,
    pub tokens_per_sample: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expected {
    pub bits_per_weight: f64,
    pub compression_vs_bf16: f64,
    pub size_bytes: u64,
    pub quality_target: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Strategy {
    pub name: String,
    pub precision_allocation: Vec<Allocation>,
    /// MLX affine group size.
    pub group_size: u64,
    pub group_size_reason: String,
    pub calibration: Calibration,
    pub kv_cache: Option<String>,
    pub expected: Expected,
}

/// llama.cpp's rule for which layers get more bits: the first and last eighth and every
/// third layer between them.
pub fn use_more_bits(i: u64, n: u64) -> bool {
    // `i < n / 8` short-circuits before the subtraction could underflow.
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

struct Builder {
    allocs: Vec<Allocation>,
}

impl Builder {
    fn add(
        &mut self,
        component: &str,
        precision: Precision,
        params: u64,
        reason: impl Into<String>,
    ) {
        if params > 0 {
            self.allocs.push(Allocation {
                component: component.into(),
                precision,
                params,
                reason: reason.into(),
            });
        }
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl ArchitectureInfo {
    /// The strategy this architecture calls for.
    pub fn recommend(&self) -> Strategy {
        let b = &self.params.breakdown;
        let total = self.params.total;
        let mut s = Builder { allocs: Vec::new() };
        let name;
        match self.modality {
            Modality::Vision => {
                name = "Layer-specific: INT8 backbone, higher-precision head".to_string();
                s.add("backbone", Precision::Int8, b.total() - b.embedding, "convolution and transformer blocks tolerate 8-bit weights with per-channel scales");
                s.add(
                    "text_embedding",
                    Precision::Int8,
                    b.embedding,
                    "embedding lookups tolerate 8 bits",
                );
            }
            Modality::Speech => {
                name = "Encoder-optimized INT8 with attention preservation".to_string();
                let attn = attention_params(self);
                s.add("attention", Precision::F16, attn, "attention over long audio frame sequences is where speech models lose accuracy; kept at 16 bits");
                s.add(
                    "encoder_decoder_mlp_and_stem",
                    Precision::Int8,
                    b.total() - attn - b.embedding,
                    "MLPs and the conv stem are robust at 8 bits",
                );
                s.add(
                    "token_embedding",
                    Precision::Int8,
                    b.embedding,
                    "a lookup table, tied to the output projection",
                );
            }
            Modality::Llm => {
                name = match self.family {
                    Family::Moe => "Expert-aware mixed precision",
                    Family::HybridMamba | Family::HybridMambaMoe => "Per-block-type quantization",
                    _ if self.attention.as_ref().is_some_and(|a| a.gqa_ratio >= 2) => {
                        "GQA-aware mixed k-quant (W4A16)"
                    }
                    _ => "Mixed k-quant (W4A16)",
                }
                .to_string();
                self.llm_allocations(&mut s);
            }
        }
        let allocated: u64 = s.allocs.iter().map(|a| a.params).sum();
        debug_assert_eq!(allocated, total, "every parameter is allocated once");
        let bits: f64 = s
            .allocs
            .iter()
            .map(|a| a.params as f64 * a.precision.bits_per_weight())
            .sum();
        let bpw = if total == 0 {
            16.0
        } else {
            bits / total as f64
        };
        let (group_size, group_size_reason) = self.group_size();
        Strategy {
            name,
            precision_allocation: s.allocs,
            group_size,
            group_size_reason,
            calibration: self.calibration(),
            kv_cache: self.kv_cache(),
            expected: Expected {
                bits_per_weight: (bpw * 1000.0).round() / 1000.0,
                compression_vs_bf16: ((16.0 / bpw) * 100.0).round() / 100.0,
                size_bytes: (bits / 8.0).round() as u64,
                quality_target: quality_target(bpw).into(),
            },
        }
    }

    fn llm_allocations(&self, s: &mut Builder) {
        let b = &self.params.breakdown;
        let total = self.params.total;
        let n = self.num_layers;
        s.add(
            "norms",
            Precision::F32,
            b.norms,
            "1-D scales: negligible size, and quantizing them shifts every activation",
        );
        if self.tie_word_embeddings {
            s.add(
                "embedding_and_output (tied)",
                Precision::Int6,
                b.embedding,
                "the tied matrix is also the output head, which decides every logit",
            );
        } else {
            s.add(
                "token_embedding",
                Precision::Int4,
                b.embedding,
                "a lookup table: each row's error touches only its own token",
            );
            s.add(
                "output_head",
                Precision::Int6,
                b.output,
                "the output head decides every logit; the most sensitive matrix",
            );
        }

        // Attention.
        if let Some(a) = &self.attention {
            let moe_like = self.moe.is_some();
            if a.mla.is_some() {
                s.add("attention (MLA projections)", Precision::Int8, b.attention, "latent attention compresses K/V into a low-rank latent: errors in its small projections reach every head");
            } else if moe_like && share(b.attention, self.params.total) < 0.10 {
                s.add("attention", Precision::Int8, b.attention, format!(
                    "attention is {:.1}% of the weights but runs for every token, unlike the experts: 8 bits costs little",
                    100.0 * share(b.attention, total)));
            } else {
                let h = self.hidden_size;
                let kv = a.num_layers * 2 * h * a.num_kv_heads * a.head_dim;
                let kv = kv.min(b.attention);
                if a.gqa_ratio >= 4 {
                    s.add("attention_k_v", Precision::Int6, kv, format!(
                        "GQA {}:1: each K/V head serves {} query heads, so its error is replicated {} times",
                        a.gqa_ratio, a.gqa_ratio, a.gqa_ratio));
                    s.add(
                        "attention_q_o",
                        Precision::Int4,
                        b.attention - kv,
                        "query/output projections are per-head: base precision",
                    );
                } else {
                    s.add(
                        "attention",
                        Precision::Int4,
                        b.attention,
                        "MHA or low GQA ratio: K/V heads are not shared widely; base precision",
                    );
                }
            }
        }

        // Dense FFNs: ffn_down on the sensitive layers gets more bits.
        if b.dense_ffn > 0 {
            let dense_layers: Vec<u64> = (0..n)
                .filter(|i| self.moe.as_ref().is_none_or(|m| !m.moe_layers.contains(i)))
                .collect();
            if self.moe.is_some() || self.family == Family::HybridMambaMoe {
                s.add(
                    "dense_ffn (leading dense layers / shared MLPs)",
                    Precision::Int8,
                    b.dense_ffn,
                    "dense FFNs run for every token in a sparse model: 8 bits",
                );
            } else {
                let more = dense_layers
                    .iter()
                    .filter(|&&i| use_more_bits(i, n))
                    .count() as u64;
                let down_more = b.dense_ffn / 3 * more / dense_layers.len().max(1) as u64;
                s.add("ffn_down (first/last eighth, every third layer)", Precision::Int6, down_more, format!(
                    "{more} of {n} layers: ffn_down feeds the residual stream directly and its input has the largest outliers"));
                s.add(
                    "ffn_gate_up_down (other)",
                    Precision::Int4,
                    b.dense_ffn - down_more,
                    "the bulk of the weights: base precision",
                );
            }
        }

        // MoE.
        if let Some(m) = &self.moe {
            s.add("router", Precision::F16, b.router, "expert selection flips on small logit errors; routers are tiny (f32 in GGUF, 8-bit in MLX)");
            s.add(
                "shared_experts",
                Precision::Int8,
                b.shared_experts,
                "shared experts run for every token",
            );
            let frequent = b.routed_experts / 5;
            let active = share(m.experts_per_token, m.num_experts);
            s.add("frequent_experts (top 20% by activation)", Precision::Int8, frequent, format!(
                "the most-routed experts carry most tokens (each token uses {} of {} experts, {:.1}%); chosen by profiling calibration text",
                m.experts_per_token, m.num_experts, 100.0 * active));
            s.add(
                "rare_experts (bottom 80%)",
                Precision::Int4,
                b.routed_experts - frequent,
                "rarely routed experts touch few tokens; sparse activation tolerates 4 bits",
            );
        }

        // Mamba-2.
        if b.mamba_proj > 0 {
            s.add(
                "mamba_in_out_proj",
                Precision::Int8,
                b.mamba_proj,
                "the recurrent state accumulates projection error over every token of the sequence",
            );
            s.add(
                "ssm_state_params (A, D, dt, conv1d, norm)",
                Precision::F32,
                b.ssm_params,
                "state-transition parameters set decay rates exponentially; kept exact",
            );
        }
    }

    fn group_size(&self) -> (u64, String) {
        let preferred = if self.params.total >= 6_000_000_000 {
            128
        } else {
            64
        };
        let mut dims = vec![self.hidden_size];
        dims.extend(self.intermediate_size);
        if let Some(m) = &self.moe {
            dims.push(m.expert_ffn_size);
        }
        for g in [preferred, 64, 32] {
            if g <= preferred && dims.iter().all(|d| d % g == 0) {
                let why = if g == preferred {
                    if preferred == 128 {
                        format!(
                            "{:.1}B parameters: group 128 keeps scale overhead low at this size",
                            self.params.total as f64 / 1e9
                        )
                    } else {
                        "under 6B parameters: group 64 for accuracy".to_string()
                    }
                } else {
                    format!("{preferred} does not divide every input width ({dims:?}); {g} does")
                };
                return (g, why);
            }
        }
        (0, format!("no group size of 32-128 divides the input widths {dims:?}: such tensors stay unquantized in MLX"))
    }

    fn calibration(&self) -> Calibration {
        match (self.modality, &self.moe, &self.hybrid) {
            (Modality::Vision, ..) => Calibration {
                method: "activation_ranges".into(),
                samples: 256,
                tokens_per_sample: 0,
                reason: "per-channel activation ranges over representative images".into(),
            },
            (Modality::Speech, ..) => Calibration {
                method: "activation_ranges".into(),
                samples: 128,
                tokens_per_sample: 0,
                reason: "per-channel activation ranges over representative audio".into(),
            },
            (_, Some(m), _) => {
                let samples = 512u64.max(2 * m.num_experts / m.experts_per_token.max(1));
                let per_expert = samples * 512 * m.experts_per_token / m.num_experts.max(1);
                Calibration {
                    method: "expert_balanced".into(),
                    samples,
                    tokens_per_sample: 512,
                    reason: format!(
                        "{} experts, {} per token: {samples} x 512 tokens give ~{per_expert} tokens per expert if routing were even; \
                         profiling finds the starved ones and oversamples text that routes to them",
                        m.num_experts, m.experts_per_token),
                }
            }
            (_, None, Some(h)) => Calibration {
                method: "block_type_importance".into(),
                samples: 128,
                tokens_per_sample: 2048,
                reason: format!(
                    "importance measured per block type ({} Mamba-2, {} attention layers); longer samples because the SSM state carries the whole prefix",
                    h.mamba_layers.len(), h.attention_layers.len()),
            },
            _ => Calibration {
                method: "importance_matrix".into(),
                samples: 128,
                tokens_per_sample: 512,
                reason: "an importance matrix over 64k tokens covers every input column's activation statistics".into(),
            },
        }
    }

    fn kv_cache(&self) -> Option<String> {
        let a = self.attention.as_ref()?;
        if self.modality != Modality::Llm {
            return None;
        }
        if let Some(m) = &a.mla {
            let per_token = a.num_layers * (m.kv_lora_rank + m.qk_rope_head_dim) * 2;
            return Some(format!(
                "MLA caches a {}-wide latent per layer: {} KiB per token at f16",
                m.kv_lora_rank + m.qk_rope_head_dim,
                per_token / 1024
            ));
        }
        let per_token = a.num_layers * 2 * a.num_kv_heads * a.head_dim * 2;
        let mut text = format!(
            "{} KiB per token at f16 over {} attention layers",
            per_token as f64 / 1024.0,
            a.num_layers
        );
        if a.gqa_ratio > 1 {
            text += &format!(
                "; GQA {}:1 already makes it {}x smaller than MHA",
                a.gqa_ratio, a.gqa_ratio
            );
        }
        if self.hybrid.is_some() {
            text += &format!(
                "; only the attention layers keep a KV cache ({} of {})",
                a.num_layers, self.num_layers
            );
        }
        if let Some(w) = a.sliding_window {
            text += &format!("; sliding-window layers cap theirs at {w} tokens");
        }
        Some(text)
    }
}

fn attention_params(a: &ArchitectureInfo) -> u64 {
    match &a.attention {
        Some(att) => {
            let per_layer = 4 * a.hidden_size * a.hidden_size + 4 * a.hidden_size;
            (att.num_layers * per_layer)
                .min(a.params.breakdown.total() - a.params.breakdown.embedding)
        }
        None => 0,
    }
}

fn quality_target(bpw: f64) -> &'static str {
    match bpw {
        b if b >= 8.0 => "<0.1% perplexity increase",
        b if b >= 6.0 => "<0.5% perplexity increase",
        b if b >= 5.0 => "<1% perplexity increase",
        b if b >= 4.25 => "<2% perplexity increase",
        b if b >= 3.5 => "<5% perplexity increase",
        _ => "<10% perplexity increase",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_bits_matches_llama_cpp_rule() {
        let n = 32;
        let picked: Vec<u64> = (0..n).filter(|&i| use_more_bits(i, n)).collect();
        assert_eq!(
            picked,
            vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
    }
}
