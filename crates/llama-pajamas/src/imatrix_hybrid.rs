//! GGUF weight names of the matrices the runtime multiplies in hybrid Mamba-2 models
//! (Granite 4.0-H, Nemotron-H), as llama-imatrix records them: the name of the ggml
//! weight tensor of each `MUL_MAT` / `MUL_MAT_ID`.
//!
//! The runtime reports each product under the HF name of its weight (see
//! [`pajamas_runtime::LinearInput`]): the checkpoint's own names for an HF folder, and the
//! names a GGUF source resolves for one of our files. Both go through the converter's
//! map ([`map_hybrid`]), so a tensor is named here exactly as the converter names it in
//! the GGUF file the imatrix is meant for:
//!
//! - Mamba-2 `in_proj` / `out_proj` -> `blk.N.ssm_in.weight` / `blk.N.ssm_out.weight`;
//! - Granite's fused `input_linear` feeds both the gate and the up product, told apart
//!   by the layer's short name (`gate_proj` / `up_proj`): `ffn_gate` / `ffn_up` (dense),
//!   `ffn_gate_shexp` / `ffn_up_shexp` (shared expert), `ffn_gate_exps` / `ffn_up_exps`
//!   (routed experts, reported as `input_linear.weight[E]`);
//! - Nemotron-H's per-expert tensors -> their stacked `ffn_*_exps` weight and index.
//!
//! Names the hybrid map does not know (a Granite GGUF's FFN, which the source resolves
//! under llama's `mlp.*` names) are left to the dense / MoE rules.

use pajamas_convert::hybrid::{is_hybrid, map_hybrid, HybridLayout, HybridMap};
use pajamas_runtime::ModelConfig;

/// Where one product's inputs go: the GGUF weight name and, for one matrix of a stacked
/// expert tensor, its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub gguf: String,
    pub expert: Option<u64>,
}

/// `name[E]` -> (`name`, `Some(E)`); other names as they are.
fn split_index(tensor: &str) -> (&str, Option<u64>) {
    if let Some(open) = tensor.strip_suffix(']').and_then(|t| t.rfind('[')) {
        if let Ok(e) = tensor[open + 1..tensor.len() - 1].parse::<u64>() {
            return (&tensor[..open], Some(e));
        }
    }
    (tensor, None)
}

fn layout(c: &ModelConfig) -> HybridLayout {
    HybridLayout {
        model_type: c.model_type.clone(),
        heads: c.n_heads as u64,
        kv_heads: c.n_kv_heads as u64,
        ssm_groups: c.hybrid.as_ref().map_or(1, |h| h.ssm_groups as u64),
        has_experts: c.moe.is_some(),
    }
}

/// The GGUF target of the product `proj` (the runtime's short name) whose weight is
/// `tensor`, for a hybrid model; `None` for other models and for names the hybrid map
/// does not know.
pub fn hybrid_target(c: &ModelConfig, tensor: &str, proj: &str) -> Option<Target> {
    if !is_hybrid(&c.model_type) {
        return None;
    }
    let (hf, index) = split_index(tensor);
    // The shape only decides GGUF dims, never a name; [2, 1] lets a fused gate+up
    // tensor split in two.
    match map_hybrid(hf, &[2, 1], &layout(c))? {
        HybridMap::Pieces(pieces) => {
            let piece = match pieces.len() {
                1 => &pieces[0],
                // Gate rows first, then up rows.
                2 => match proj {
                    "gate_proj" => &pieces[0],
                    "up_proj" => &pieces[1],
                    _ => return None,
                },
                _ => return None,
            };
            Some(Target {
                gguf: piece.gguf.clone(),
                expert: index,
            })
        }
        HybridMap::Expert { gguf, expert } => Some(Target {
            gguf,
            expert: Some(expert),
        }),
    }
}

/// Whether a `blk.*` tensor of two or more dims is the weight of a matrix product (so
/// llama-imatrix gives it an entry). Mamba-2's conv kernel (`ssm_conv1d`, a depthwise
/// convolution), `ssm_a`, `ssm_d` and its grouped norm (`ssm_norm`) are 2-D in GGUF but
/// are no product's weight.
pub fn is_product_weight(gguf_name: &str) -> bool {
    gguf_name.ends_with(".weight")
        && !gguf_name.ends_with("_norm.weight")
        && !gguf_name.contains(".ssm_conv1d.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(folder: &str) -> ModelConfig {
        let path = format!("{}/../../{folder}/config.json", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        ModelConfig::from_hf_config(&serde_json::from_str(&text).unwrap()).unwrap()
    }

    fn target(c: &ModelConfig, tensor: &str, proj: &str) -> Option<(String, Option<u64>)> {
        hybrid_target(c, tensor, proj).map(|t| (t.gguf, t.expert))
    }

    fn plain(name: &str) -> Option<(String, Option<u64>)> {
        Some((name.to_string(), None))
    }

    #[test]
    fn granite_dense_and_mamba() {
        let c = config("models/tiny-hybrid");
        let fused = "model.layers.0.shared_mlp.input_linear.weight";
        assert_eq!(
            target(&c, fused, "gate_proj"),
            plain("blk.0.ffn_gate.weight")
        );
        assert_eq!(target(&c, fused, "up_proj"), plain("blk.0.ffn_up.weight"));
        assert_eq!(target(&c, fused, "down_proj"), None);
        assert_eq!(
            target(
                &c,
                "model.layers.3.shared_mlp.output_linear.weight",
                "down_proj"
            ),
            plain("blk.3.ffn_down.weight")
        );
        assert_eq!(
            target(&c, "model.layers.1.mamba.in_proj.weight", "in_proj"),
            plain("blk.1.ssm_in.weight")
        );
        assert_eq!(
            target(&c, "model.layers.1.mamba.out_proj.weight", "out_proj"),
            plain("blk.1.ssm_out.weight")
        );
        assert_eq!(
            target(&c, "model.layers.2.self_attn.o_proj.weight", "o_proj"),
            plain("blk.2.attn_output.weight")
        );
        // The tied head and a Granite GGUF's llama-named FFN are not hybrid names.
        assert_eq!(
            target(&c, "model.embed_tokens.weight", "lm_head"),
            plain("token_embd.weight")
        );
        assert_eq!(
            target(&c, "model.layers.0.mlp.gate_proj.weight", "gate_proj"),
            None
        );
    }

    #[test]
    fn granite_experts_by_index() {
        let c = config("tests/fixtures/tiny-granitemoehybrid");
        let fused = "model.layers.1.block_sparse_moe.input_linear.weight[3]";
        assert_eq!(
            target(&c, fused, "gate_proj"),
            Some(("blk.1.ffn_gate_exps.weight".into(), Some(3)))
        );
        assert_eq!(
            target(&c, fused, "up_proj"),
            Some(("blk.1.ffn_up_exps.weight".into(), Some(3)))
        );
        assert_eq!(
            target(
                &c,
                "model.layers.1.block_sparse_moe.output_linear.weight[0]",
                "down_proj"
            ),
            Some(("blk.1.ffn_down_exps.weight".into(), Some(0)))
        );
        assert_eq!(
            target(
                &c,
                "model.layers.1.shared_mlp.input_linear.weight",
                "up_proj"
            ),
            plain("blk.1.ffn_up_shexp.weight")
        );
        assert_eq!(
            target(
                &c,
                "model.layers.1.block_sparse_moe.router.layer.weight",
                "router"
            ),
            plain("blk.1.ffn_gate_inp.weight")
        );
    }

    #[test]
    fn nemotron_names() {
        let c = config("tests/fixtures/tiny-nemotron_h");
        assert_eq!(
            target(&c, "backbone.layers.0.mixer.in_proj.weight", "in_proj"),
            plain("blk.0.ssm_in.weight")
        );
        assert_eq!(
            target(
                &c,
                "backbone.layers.1.mixer.experts.7.up_proj.weight",
                "up_proj"
            ),
            Some(("blk.1.ffn_up_exps.weight".into(), Some(7)))
        );
        assert_eq!(
            target(
                &c,
                "backbone.layers.1.mixer.shared_experts.down_proj.weight",
                "down_proj"
            ),
            plain("blk.1.ffn_down_shexp.weight")
        );
        assert_eq!(
            target(&c, "backbone.layers.1.mixer.gate.weight", "router"),
            plain("blk.1.ffn_gate_inp.weight")
        );
        assert_eq!(
            target(&c, "lm_head.weight", "lm_head"),
            plain("output.weight")
        );
    }

    #[test]
    fn mamba_parameters_are_no_product_weights() {
        for n in [
            "blk.0.ssm_conv1d.weight",
            "blk.0.ssm_a",
            "blk.0.ssm_d",
            "blk.0.ssm_norm.weight",
        ] {
            assert!(!is_product_weight(n), "{n}");
        }
        for n in [
            "blk.0.ssm_in.weight",
            "blk.0.ssm_out.weight",
            "blk.1.ffn_up_exps.weight",
        ] {
            assert!(is_product_weight(n), "{n}");
        }
    }

    #[test]
    fn other_models_and_indices() {
        let c = config("tests/fixtures/tiny-qwen3_moe");
        assert_eq!(
            target(&c, "model.layers.0.mlp.gate_proj.weight", "gate_proj"),
            None
        );
        assert_eq!(split_index("a.weight[12]"), ("a.weight", Some(12)));
        assert_eq!(split_index("a.weight[x]"), ("a.weight[x]", None));
        assert_eq!(split_index("a.weight"), ("a.weight", None));
    }
}
