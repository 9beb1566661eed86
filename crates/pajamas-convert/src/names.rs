//! HuggingFace tensor names -> GGUF tensor names, with the transform each needs.
//!
//! GGUF names follow llama.cpp's `gguf-py` tensor map (`token_embd`, `blk.N.attn_q`, ...).
//! Shapes: an HF `[out, in]` matrix is GGUF `{in, out}` (innermost first) with the same
//! bytes, so only the dims are reversed; llama-arch q/k projections additionally have
//! their rows permuted for llama.cpp's rope layout.

/// A change applied to a tensor's values on its way into GGUF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    None,
    /// Permute rows from HF's rotate-half rope layout to llama.cpp's interleaved one,
    /// with this many heads (`num_attention_heads` for q, `num_key_value_heads` for k).
    RopePermute {
        heads: u64,
    },
    /// Gemma stores RMSNorm weights as `w` and multiplies by `1 + w`; llama.cpp stores
    /// `1 + w`.
    AddOne,
}

/// The GGUF architecture name a model type converts to.
pub fn gguf_arch(model_type: &str) -> Option<&'static str> {
    Some(match model_type {
        // Mixtral is llama.cpp's `llama` architecture with experts.
        "llama" | "mistral" | "mixtral" => "llama",
        "qwen2" => "qwen2",
        "qwen3" => "qwen3",
        "qwen2_moe" => "qwen2moe",
        "qwen3_moe" => "qwen3moe",
        "gemma3" | "gemma3_text" => "gemma3",
        "granitemoehybrid" => "granitehybrid",
        "nemotron_h" => "nemotron_h",
        "deepseek_v2" | "deepseek_v3" => "deepseek2",
        "gpt_oss" => "gpt-oss",
        _ => return None,
    })
}

/// The GGUF architecture of a detected model: as [`gguf_arch`], except that llama.cpp
/// names a Nemotron-H with mixture-of-experts blocks `nemotron_h_moe`.
pub fn gguf_arch_for(a: &pajamas_arch::ArchitectureInfo) -> Option<&'static str> {
    match gguf_arch(&a.model_type)? {
        "nemotron_h" if a.moe.is_some() => Some("nemotron_h_moe"),
        other => Some(other),
    }
}

/// Model types we convert to GGUF today.
pub const CONVERTIBLE: &[&str] = &[
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma3",
    "gemma3_text",
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "granitemoehybrid",
    "nemotron_h",
    "deepseek_v2",
    "deepseek_v3",
    "gpt_oss",
];

/// Maps one HF tensor name. `None` for tensors that GGUF does not store (e.g. rotary
/// inverse frequencies some checkpoints carry).
pub fn map_name(
    hf: &str,
    model_type: &str,
    heads: u64,
    kv_heads: u64,
) -> Option<(String, Transform)> {
    let gemma = model_type.starts_with("gemma");
    let llama_rope = matches!(model_type, "llama" | "mistral" | "mixtral");
    let hf = hf
        .strip_prefix("model.language_model.")
        .map(|s| format!("model.{s}"))
        .unwrap_or_else(|| hf.to_string());
    let norm = |name: &str| {
        let t = if gemma {
            Transform::AddOne
        } else {
            Transform::None
        };
        Some((name.to_string(), t))
    };
    match hf.as_str() {
        "model.embed_tokens.weight" => return Some(("token_embd.weight".into(), Transform::None)),
        "lm_head.weight" => return Some(("output.weight".into(), Transform::None)),
        "model.norm.weight" => return norm("output_norm.weight"),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, leaf) = rest.split_once('.')?;
    let layer: u64 = layer.parse().ok()?;
    let blk = |n: &str| format!("blk.{layer}.{n}");
    let (stem, suffix) = leaf.rsplit_once('.')?;
    let plain = |n: &str| Some((blk(&format!("{n}.{suffix}")), Transform::None));
    match stem {
        "self_attn.q_proj" if llama_rope && suffix == "weight" => {
            Some((blk("attn_q.weight"), Transform::RopePermute { heads }))
        }
        "self_attn.k_proj" if llama_rope && suffix == "weight" => Some((
            blk("attn_k.weight"),
            Transform::RopePermute { heads: kv_heads },
        )),
        "self_attn.q_proj" => plain("attn_q"),
        "self_attn.k_proj" => plain("attn_k"),
        "self_attn.v_proj" => plain("attn_v"),
        "self_attn.o_proj" => plain("attn_output"),
        "self_attn.q_norm" => norm(&blk("attn_q_norm.weight")),
        "self_attn.k_norm" => norm(&blk("attn_k_norm.weight")),
        "input_layernorm" => norm(&blk("attn_norm.weight")),
        "post_attention_layernorm" if gemma => norm(&blk("post_attention_norm.weight")),
        "post_attention_layernorm" => norm(&blk("ffn_norm.weight")),
        "pre_feedforward_layernorm" => norm(&blk("ffn_norm.weight")),
        "post_feedforward_layernorm" => norm(&blk("post_ffw_norm.weight")),
        "mlp.gate_proj" => plain("ffn_gate"),
        "mlp.up_proj" => plain("ffn_up"),
        "mlp.down_proj" => plain("ffn_down"),
        // MoE: the router, and Qwen2-MoE's shared expert with its sigmoid gate.
        "mlp.gate" | "block_sparse_moe.gate" => plain("ffn_gate_inp"),
        "mlp.shared_expert.gate_proj" => plain("ffn_gate_shexp"),
        "mlp.shared_expert.up_proj" => plain("ffn_up_shexp"),
        "mlp.shared_expert.down_proj" => plain("ffn_down_shexp"),
        "mlp.shared_expert_gate" => plain("ffn_gate_inp_shexp"),
        "self_attn.rotary_emb" => None,
        _ => None,
    }
}

/// A per-expert HF matrix (`model.layers.L.mlp.experts.E.gate_proj.weight`, Mixtral's
/// `block_sparse_moe.experts.E.w1.weight`): the stacked GGUF tensor it is slice `E` of
/// (`blk.L.ffn_gate_exps.weight`, `{in, out, n_expert}`) and `E`.
pub fn map_expert(hf: &str) -> Option<(String, u64)> {
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, leaf) = rest.split_once('.')?;
    let layer: u64 = layer.parse().ok()?;
    let leaf = leaf
        .strip_prefix("mlp.experts.")
        .or_else(|| leaf.strip_prefix("block_sparse_moe.experts."))?;
    let (expert, proj) = leaf.split_once('.')?;
    let expert: u64 = expert.parse().ok()?;
    let stem = match proj {
        "gate_proj.weight" | "w1.weight" => "ffn_gate_exps",
        "up_proj.weight" | "w3.weight" => "ffn_up_exps",
        "down_proj.weight" | "w2.weight" => "ffn_down_exps",
        _ => return None,
    };
    Some((format!("blk.{layer}.{stem}.weight"), expert))
}

/// Where a tensor goes in the file: token embedding first, then layer by layer in a
/// fixed order, then the output norm and head. llama.cpp's stock mix counts attn_v and
/// ffn_down tensors in file order, so layer order matters.
pub fn sort_key(gguf_name: &str) -> (u64, u64, u64) {
    const ORDER: &[&str] = &[
        "attn_norm",
        "ssm_in",
        "ssm_conv1d",
        "ssm_dt",
        "ssm_a",
        "ssm_d",
        "ssm_norm",
        "ssm_out",
        "attn_q",
        "attn_q_norm",
        "attn_k",
        "attn_k_norm",
        "attn_v",
        "attn_q_a",
        "attn_q_a_norm",
        "attn_q_b",
        "attn_kv_a_mqa",
        "attn_kv_a_norm",
        "attn_k_b",
        "attn_v_b",
        "attn_output",
        "attn_sinks",
        "post_attention_norm",
        "ffn_norm",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
        "ffn_gate_inp",
        "exp_probs_b",
        "ffn_gate_exps",
        "ffn_down_exps",
        "ffn_up_exps",
        "ffn_gate_inp_shexp",
        "ffn_gate_shexp",
        "ffn_down_shexp",
        "ffn_up_shexp",
        "post_ffw_norm",
    ];
    if gguf_name.starts_with("token_embd") {
        return (0, 0, 0);
    }
    if gguf_name.starts_with("rope_freqs") {
        return (1, 0, 0);
    }
    if let Some(rest) = gguf_name.strip_prefix("blk.") {
        let (layer, leaf) = rest.split_once('.').unwrap_or((rest, ""));
        let layer: u64 = layer.parse().unwrap_or(u64::MAX / 4);
        let (stem, suffix) = leaf.rsplit_once('.').unwrap_or((leaf, ""));
        let pos = ORDER.iter().position(|o| *o == stem).unwrap_or(ORDER.len()) as u64;
        return (2 + layer, pos, u64::from(suffix != "weight"));
    }
    if gguf_name.starts_with("output_norm") {
        return (u64::MAX - 1, 0, 0);
    }
    (u64::MAX, 0, 0)
}

/// llama.cpp's rope row order: within each head, rows `[0..half)` and `[half..dim)` are
/// interleaved (`r0, r_half, r1, r_half+1, ...`). Returns `new[i] = old[perm[i]]`.
pub fn rope_permutation(rows: usize, heads: usize) -> Vec<usize> {
    let dim = rows / heads;
    let half = dim / 2;
    let mut perm = Vec::with_capacity(rows);
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                perm.push(h * dim + j * half + i);
            }
        }
    }
    perm
}

/// Applies a transform to a row-major tensor of `rows` x `cols` f32 values.
pub fn apply(t: Transform, data: Vec<f32>, rows: usize, cols: usize) -> Vec<f32> {
    match t {
        Transform::None => data,
        Transform::AddOne => data.into_iter().map(|x| x + 1.0).collect(),
        Transform::RopePermute { heads } => {
            let perm = rope_permutation(rows, heads as usize);
            let mut out = Vec::with_capacity(data.len());
            for &src in &perm {
                out.extend_from_slice(&data[src * cols..(src + 1) * cols]);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_names() {
        let m = |n| map_name(n, "llama", 9, 3);
        assert_eq!(
            m("model.embed_tokens.weight").unwrap().0,
            "token_embd.weight"
        );
        assert_eq!(
            m("model.layers.7.self_attn.q_proj.weight").unwrap(),
            (
                "blk.7.attn_q.weight".into(),
                Transform::RopePermute { heads: 9 }
            )
        );
        assert_eq!(
            m("model.layers.7.self_attn.k_proj.weight").unwrap(),
            (
                "blk.7.attn_k.weight".into(),
                Transform::RopePermute { heads: 3 }
            )
        );
        assert_eq!(
            m("model.layers.7.post_attention_layernorm.weight")
                .unwrap()
                .0,
            "blk.7.ffn_norm.weight"
        );
        assert_eq!(
            m("model.layers.0.mlp.down_proj.weight").unwrap().0,
            "blk.0.ffn_down.weight"
        );
        assert!(m("model.layers.0.self_attn.rotary_emb.inv_freq").is_none());
    }

    #[test]
    fn qwen_and_gemma_names() {
        let q = map_name("model.layers.1.self_attn.q_proj.bias", "qwen2", 28, 4).unwrap();
        assert_eq!(q, ("blk.1.attn_q.bias".into(), Transform::None));
        let q = map_name("model.layers.1.self_attn.q_proj.weight", "qwen3", 32, 8).unwrap();
        assert_eq!(q.1, Transform::None);
        let n = map_name("model.layers.1.self_attn.k_norm.weight", "qwen3", 32, 8).unwrap();
        assert_eq!(n, ("blk.1.attn_k_norm.weight".into(), Transform::None));
        let g = |n| map_name(n, "gemma3_text", 4, 1).unwrap();
        assert_eq!(
            g("model.layers.2.post_attention_layernorm.weight"),
            ("blk.2.post_attention_norm.weight".into(), Transform::AddOne)
        );
        assert_eq!(
            g("model.layers.2.pre_feedforward_layernorm.weight").0,
            "blk.2.ffn_norm.weight"
        );
        assert_eq!(
            g("model.layers.2.post_feedforward_layernorm.weight").0,
            "blk.2.post_ffw_norm.weight"
        );
        assert_eq!(
            g("model.norm.weight"),
            ("output_norm.weight".into(), Transform::AddOne)
        );
    }

    #[test]
    fn permutation_interleaves_halves() {
        // one head of dim 4: rows [a0 a1 b0 b1] -> [a0 b0 a1 b1]
        assert_eq!(rope_permutation(4, 1), vec![0, 2, 1, 3]);
        assert_eq!(rope_permutation(8, 2), vec![0, 2, 1, 3, 4, 6, 5, 7]);
        let data: Vec<f32> = (0..8).map(|x| x as f32).collect(); // 4 rows x 2 cols
        assert_eq!(
            apply(Transform::RopePermute { heads: 1 }, data, 4, 2),
            vec![0., 1., 4., 5., 2., 3., 6., 7.]
        );
    }

    #[test]
    fn order() {
        let mut names = vec![
            "output.weight",
            "blk.1.attn_q.weight",
            "blk.10.attn_norm.weight",
            "blk.1.attn_norm.weight",
            "output_norm.weight",
            "token_embd.weight",
            "blk.1.attn_q.bias",
        ];
        names.sort_by_key(|n| sort_key(n));
        assert_eq!(
            names,
            vec![
                "token_embd.weight",
                "blk.1.attn_norm.weight",
                "blk.1.attn_q.weight",
                "blk.1.attn_q.bias",
                "blk.10.attn_norm.weight",
                "output_norm.weight",
                "output.weight"
            ]
        );
    }
}
