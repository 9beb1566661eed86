//! The human-readable `detect` report, in the original tool's wording
//! (`Detected: llm (qwen3)`, `GQA Ratio: 4:1`, ...).

use std::fmt::Write;

use pajamas_arch::{Family, Modality};

use crate::detect::DetectReport;

/// `8.19B`, `134.5M`, `950K`.
pub fn human_count(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.2}B", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.1}M", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.0}K", f / 1e3)
    } else {
        n.to_string()
    }
}

/// `1,234,567`.
pub fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn human_bytes(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.2} GB", f / 1e9)
    } else {
        format!("{:.1} MB", f / 1e6)
    }
}

pub fn render(r: &DetectReport, list_tensors: bool) -> String {
    let a = &r.architecture;
    let mut o = String::new();
    let modality = match a.modality {
        Modality::Llm => "llm",
        Modality::Vision => "vision",
        Modality::Speech => "speech",
    };
    let _ = writeln!(o, "Detected: {modality} ({})", a.model_type);
    let family = match a.family {
        Family::DenseDecoder => "dense decoder",
        Family::Moe => "mixture of experts",
        Family::HybridMamba => "hybrid Mamba-2/Transformer",
        Family::HybridMambaMoe => "hybrid Mamba-2/Transformer with MoE",
        Family::VisionEncoder => "vision encoder",
        Family::VisionDetector => "vision detector",
        Family::Speech => "speech encoder-decoder",
    };
    let _ = writeln!(o, "Family: {family}");
    let p = &a.params;
    let _ = writeln!(
        o,
        "Parameters: {} ({})",
        human_count(p.total),
        grouped(p.total)
    );
    if a.moe.is_some() {
        let _ = writeln!(
            o,
            "Active parameters: {} ({}; {} without the input embedding)",
            human_count(p.active),
            grouped(p.active),
            human_count(p.active_without_embedding)
        );
    }
    if let Some(att) = &a.attention {
        let _ = writeln!(o, "Attention: {}", att.kind.long_name());
        if att.gqa_ratio > 1 {
            let _ = writeln!(
                o,
                "GQA Ratio: {}:1 ({} query heads, {} KV heads)",
                att.gqa_ratio, att.num_heads, att.num_kv_heads
            );
        }
        if att.head_dim_explicit {
            let _ = writeln!(
                o,
                "Head dim: {} (set independently of hidden size)",
                att.head_dim
            );
        }
        if let (Some(w), Some(pat)) = (att.sliding_window, &att.span_pattern) {
            let _ = writeln!(o, "Sliding window: {w} tokens ({pat})");
        }
        if let Some(m) = &att.mla {
            let _ = writeln!(
                o,
                "MLA: kv_lora_rank {}, q_lora_rank {}",
                m.kv_lora_rank,
                m.q_lora_rank.map(|x| x.to_string()).unwrap_or("-".into())
            );
        }
    }
    if let Some(m) = &a.moe {
        let _ = writeln!(
            o,
            "MoE: {} experts, {} active",
            m.num_experts, m.experts_per_token
        );
        if m.num_shared_experts > 0 {
            let _ = writeln!(o, "Shared experts: {}", m.num_shared_experts);
        }
        if m.leading_dense_layers > 0 {
            let _ = writeln!(o, "Leading dense layers: {}", m.leading_dense_layers);
        }
        let _ = writeln!(
            o,
            "Router: {:?} scoring{}",
            m.router_scoring,
            if m.router_correction_bias {
                " with correction bias"
            } else {
                ""
            }
        );
    }
    if let Some(h) = &a.hybrid {
        let _ = writeln!(o, "Architecture: Hybrid Mamba-2/Transformer ({})", h.ratio);
        let _ = writeln!(
            o,
            "Mamba-2 layers: {} / attention layers: {:?}",
            h.mamba_layers.len(),
            h.attention_layers
        );
        let _ = writeln!(
            o,
            "SSM: state {}, conv kernel {}, {} heads x {}, {} groups",
            h.ssm.state_size, h.ssm.conv_kernel, h.ssm.num_heads, h.ssm.head_dim, h.ssm.num_groups
        );
    }
    if let Some(q) = &a.source_quantization {
        let how = if q == "mxfp4" && a.model_type == "gpt_oss" {
            "experts copied into GGUF as MXFP4, decoded for other types"
        } else {
            "dequantized on read"
        };
        let _ = writeln!(o, "Checkpoint precision: {q} ({how})");
    }
    for w in &a.warnings {
        let _ = writeln!(o, "warning: {w}");
    }
    let s = &r.strategy;
    let _ = writeln!(o, "Architecture-aware strategy: {}", s.name);
    for al in &s.precision_allocation {
        let _ = writeln!(
            o,
            "  - {}: {} ({} params) - {}",
            al.component,
            al.precision.label(),
            human_count(al.params),
            al.reason
        );
    }
    let _ = writeln!(
        o,
        "  - Group size: {} ({})",
        s.group_size, s.group_size_reason
    );
    let _ = writeln!(
        o,
        "  - Calibration: {}, {} samples x {} tokens ({})",
        s.calibration.method,
        s.calibration.samples,
        s.calibration.tokens_per_sample,
        s.calibration.reason
    );
    if let Some(kv) = &s.kv_cache {
        let _ = writeln!(o, "  - KV cache: {kv}");
    }
    let e = &s.expected;
    let _ = writeln!(
        o,
        "  - Expected: {:.2} bits/weight, {:.1}x smaller than bf16 (~{}), {}",
        e.bits_per_weight,
        e.compression_vs_bf16,
        human_bytes(e.size_bytes),
        e.quality_target
    );
    if let Some(t) = &r.tensors {
        let _ = writeln!(
            o,
            "Checkpoint: {} tensors in {} file(s), {} elements; dtypes {:?}",
            t.count,
            t.shards,
            grouped(t.params_in_checkpoint),
            t.dtypes
        );
        if !t.unrecognised.is_empty() {
            let _ = writeln!(
                o,
                "warning: {} tensor(s) with no known role, e.g. {}",
                t.unrecognised.len(),
                t.unrecognised[0]
            );
        }
        if list_tensors {
            for e in &t.tensors {
                let _ = writeln!(
                    o,
                    "  {:<60} {:>5} {:?} {:?}",
                    e.name, e.dtype, e.shape, e.role
                );
            }
        }
    } else {
        let _ = writeln!(
            o,
            "Checkpoint: no weights in the folder (detected from config.json alone)"
        );
    }
    o
}

/// The `--dry-run` printout: per plan, each tensor with shape, type, bits and reason,
/// then the predicted size. Tensors kept in full precision are listed with `verbose`.
pub fn render_plans(plans: &[pajamas_plan::GgufPlan], verbose: bool) -> String {
    let mut o = String::new();
    for p in plans {
        let _ = writeln!(
            o,
            "== GGUF {} ({} rules)",
            p.precision_name(),
            p.rules.name()
        );
        if let Some(b) = &p.budget {
            let target = match b.spec {
                pajamas_plan::budget::BudgetSpec::Bpw(x) => format!("{x} bits/weight"),
                pajamas_plan::budget::BudgetSpec::FileSize(x) => {
                    format!("{x} bytes of file ({} of header)", b.header_bytes)
                }
            };
            let _ = writeln!(
                o,
                "budget: {target}; {} tensors traded, total sensitivity {:.4e}; others as {} ({})",
                b.traded_tensors,
                b.sensitivity,
                p.ftype,
                p.rules.name()
            );
        }
        let _ = writeln!(
            o,
            "{:<36} {:>18} {:>7} {:>6}  reason",
            "tensor", "shape", "type", "bits"
        );
        for t in &p.tensors {
            if !verbose && !t.ty.is_quantized() && t.ne.len() < 2 {
                continue;
            }
            let shape =
                t.ne.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("x");
            let _ = writeln!(
                o,
                "{:<36} {:>18} {:>7} {:>6.2}  {}",
                t.name,
                shape,
                t.ty.name(),
                t.ty.bits_per_weight(),
                t.reason
            );
        }
        let _ = writeln!(
            o,
            "predicted: {} of tensor data{}, {:.3} bits/weight over {} tensors ({} 1-D tensors in F32 not listed{})\n",
            human_bytes(p.tensor_bytes()),
            p.budget
                .as_ref()
                .map(|b| format!(" ({} bytes of file)", b.predicted_file_bytes))
                .unwrap_or_default(),
            p.bits_per_weight(),
            p.tensors.len(),
            p.tensors.iter().filter(|t| t.ne.len() < 2).count(),
            if verbose { "; listed above" } else { "; --verbose lists them" }
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(human_count(8_190_735_360), "8.19B");
        assert_eq!(human_count(134_515_008), "134.5M");
        assert_eq!(grouped(134_515_008), "134,515,008");
        assert_eq!(grouped(999), "999");
    }
}
