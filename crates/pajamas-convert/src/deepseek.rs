//! DeepSeek-V2 / V3 (`deepseek_v2`, `deepseek_v3`) -> llama.cpp's `deepseek2`
//! architecture: multi-head latent attention (MLA), a sigmoid (V3) or softmax (V2) router
//! with optional score-correction bias and group-limited top-k, shared experts, and
//! leading dense layers.
//!
//! | HF (`model.layers.L.`) | GGUF (`blk.L.`) |
//! |---|---|
//! | `self_attn.q_a_proj` / `q_a_layernorm` / `q_b_proj` | `attn_q_a` / `attn_q_a_norm` / `attn_q_b` |
//! | `self_attn.q_proj` (V2-Lite: `q_lora_rank` null) | `attn_q` |
//! | `self_attn.kv_a_proj_with_mqa` / `kv_a_layernorm` | `attn_kv_a_mqa` / `attn_kv_a_norm` |
//! | `self_attn.kv_b_proj` `[H*(nope+v), kv_lora]` | `attn_k_b` `{nope, kv_lora, H}` and `attn_v_b` `{kv_lora, v, H}` |
//! | `self_attn.o_proj` | `attn_output` |
//! | `mlp.{gate,up,down}_proj` (leading dense layers) | `ffn_{gate,up,down}` |
//! | `mlp.gate.weight` / `mlp.gate.e_score_correction_bias` | `ffn_gate_inp` / `exp_probs_b.bias` |
//! | `mlp.experts.E.{gate,up,down}_proj` | slice `E` of `ffn_{gate,up,down}_exps` |
//! | `mlp.shared_experts.{gate,up,down}_proj` | `ffn_{gate,up,down}_shexp` |
//!
//! `kv_b_proj` is split the way llama.cpp 0.3.36's loader wants it for MLA (it reads the
//! unsplit `attn_kv_b` only from legacy files without `key_length_mla`): per head, the
//! first `nope` rows are the key up-projection, stored transposed (`attn_k_b`, so that
//! the query can be absorbed into the latent), the next `v` rows the value
//! up-projection (`attn_v_b`). The rope part of q and k needs no row permutation: the
//! checkpoints keep the rotary pairs interleaved (transformers' `rope_interleave`),
//! which is llama.cpp's "normal" rope for this architecture.
//!
//! Multi-token-prediction layers (index >= `num_hidden_layers`) are dropped, as
//! llama.cpp's converter does, and FP8 block scales (`*.weight_scale_inv`) are consumed
//! when their weight is read (see `pajamas_model::fp8`).

use pajamas_arch::ArchitectureInfo;
use pajamas_gguf::Value;
use serde_json::Value as Json;

use crate::hybrid::{HybridMap, Op, Piece};
use crate::metadata::Metadata;

/// Whether this module maps the model type.
pub fn is_deepseek(model_type: &str) -> bool {
    matches!(model_type, "deepseek_v2" | "deepseek_v3")
}

/// The sizes the mapping needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeepseekLayout {
    pub heads: u64,
    pub kv_lora_rank: u64,
    pub qk_nope_head_dim: u64,
    pub v_head_dim: u64,
    /// Decoder layers; layers past them are multi-token-prediction modules.
    pub num_layers: u64,
}

impl DeepseekLayout {
    /// From the detected architecture; `None` unless it is a DeepSeek-V2/V3 with MLA.
    pub fn from_arch(a: &ArchitectureInfo) -> Option<Self> {
        if !is_deepseek(&a.model_type) {
            return None;
        }
        let att = a.attention.as_ref()?;
        let mla = att.mla.as_ref()?;
        Some(DeepseekLayout {
            heads: att.num_heads,
            kv_lora_rank: mla.kv_lora_rank,
            qk_nope_head_dim: mla.qk_nope_head_dim,
            v_head_dim: mla.v_head_dim,
            num_layers: a.num_layers,
        })
    }
}

fn reversed(shape: &[u64]) -> Vec<u64> {
    shape.iter().rev().copied().collect()
}

fn one(gguf: String, shape: &[u64]) -> Option<HybridMap> {
    Some(HybridMap::Pieces(vec![Piece {
        gguf,
        op: Op::Copy,
        ne: reversed(shape),
    }]))
}

/// Nothing to write (MTP layers, FP8 scales, rotary caches).
fn dropped() -> Option<HybridMap> {
    Some(HybridMap::Pieces(Vec::new()))
}

/// Maps one HF tensor; `None` for a name this layout does not know. An empty
/// `Pieces` means the tensor is deliberately not written.
pub fn map_deepseek(hf: &str, shape: &[u64], l: &DeepseekLayout) -> Option<HybridMap> {
    if hf.ends_with(".weight_scale_inv") || hf.ends_with("rotary_emb.inv_freq") {
        return dropped();
    }
    match hf {
        "model.embed_tokens.weight" => return one("token_embd.weight".into(), shape),
        "model.norm.weight" => return one("output_norm.weight".into(), shape),
        "lm_head.weight" => return one("output.weight".into(), shape),
        _ => {}
    }
    let (layer, leaf) = hf.strip_prefix("model.layers.")?.split_once('.')?;
    let layer: u64 = layer.parse().ok()?;
    if layer >= l.num_layers {
        return dropped();
    }
    let blk = |n: &str| format!("blk.{layer}.{n}");
    if let Some(e) = leaf.strip_prefix("mlp.experts.") {
        let (expert, proj) = e.split_once('.')?;
        let stem = match proj {
            "gate_proj.weight" => "ffn_gate_exps",
            "up_proj.weight" => "ffn_up_exps",
            "down_proj.weight" => "ffn_down_exps",
            _ => return None,
        };
        return Some(HybridMap::Expert {
            gguf: blk(&format!("{stem}.weight")),
            expert: expert.parse().ok()?,
        });
    }
    if leaf == "self_attn.kv_b_proj.weight" {
        let (h, r) = (l.heads, l.kv_lora_rank);
        let (nope, v) = (l.qk_nope_head_dim, l.v_head_dim);
        if shape != [h * (nope + v), r] {
            return None;
        }
        return Some(HybridMap::Pieces(vec![
            Piece {
                gguf: blk("attn_k_b.weight"),
                op: Op::MlaKvB { value: false },
                ne: vec![nope, r, h],
            },
            Piece {
                gguf: blk("attn_v_b.weight"),
                op: Op::MlaKvB { value: true },
                ne: vec![r, v, h],
            },
        ]));
    }
    let name = match leaf {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.q_a_proj.weight" => "attn_q_a.weight",
        "self_attn.q_a_layernorm.weight" => "attn_q_a_norm.weight",
        "self_attn.q_b_proj.weight" => "attn_q_b.weight",
        "self_attn.kv_a_proj_with_mqa.weight" => "attn_kv_a_mqa.weight",
        "self_attn.kv_a_layernorm.weight" => "attn_kv_a_norm.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        "mlp.gate.weight" => "ffn_gate_inp.weight",
        "mlp.gate.e_score_correction_bias" => "exp_probs_b.bias",
        "mlp.shared_experts.gate_proj.weight" => "ffn_gate_shexp.weight",
        "mlp.shared_experts.up_proj.weight" => "ffn_up_shexp.weight",
        "mlp.shared_experts.down_proj.weight" => "ffn_down_shexp.weight",
        _ => return None,
    };
    one(blk(name), shape)
}

/// The GGUF weight a runtime tensor name stands for, for importance matrices: the HF
/// names of single tensors, plus `self_attn.k_b_proj.weight` / `v_b_proj.weight`, the
/// names the runtime gives the two halves of `kv_b_proj` (`attn_k_b` / `attn_v_b`).
pub fn gguf_weight_name(hf: &str) -> Option<String> {
    for (suffix, leaf) in [
        (".self_attn.k_b_proj.weight", "attn_k_b"),
        (".self_attn.v_b_proj.weight", "attn_v_b"),
    ] {
        if let Some(stem) = hf.strip_suffix(suffix) {
            let layer: u64 = stem.strip_prefix("model.layers.")?.parse().ok()?;
            return Some(format!("blk.{layer}.{leaf}.weight"));
        }
    }
    let any = DeepseekLayout {
        heads: 1,
        kv_lora_rank: 1,
        qk_nope_head_dim: 1,
        v_head_dim: 1,
        num_layers: u64::MAX,
    };
    match map_deepseek(hf, &[1], &any)? {
        HybridMap::Pieces(p) if p.len() == 1 => Some(p[0].gguf.clone()),
        HybridMap::Expert { gguf, .. } => Some(gguf),
        _ => None,
    }
}

/// One half of `kv_b_proj` (`[H * (nope + v), kv_lora]`, row-major): the key part
/// transposed per head (`ne` `{nope, kv_lora, H}`) or the value part (`ne`
/// `{kv_lora, v, H}`).
pub fn split_kv_b(data: &[f32], value: bool, ne: &[u64]) -> Vec<f32> {
    let (r, heads) = if value {
        (ne[0] as usize, ne[2] as usize)
    } else {
        (ne[1] as usize, ne[2] as usize)
    };
    let per_head = data.len() / heads / r; // nope + v rows
    let mut out = Vec::with_capacity(ne.iter().product::<u64>() as usize);
    for h in 0..heads {
        let head = &data[h * per_head * r..(h + 1) * per_head * r];
        if value {
            let v = ne[1] as usize;
            let nope = per_head - v;
            out.extend_from_slice(&head[nope * r..]);
        } else {
            let nope = ne[0] as usize;
            // GGUF {nope, r}: for each latent column c, the nope values of rows 0..nope.
            for c in 0..r {
                for i in 0..nope {
                    out.push(head[i * r + c]);
                }
            }
        }
    }
    out
}

/// The inverse of [`split_kv_b`]: `kv_b_proj` `[H * (nope + v), kv_lora]` (row-major)
/// from `attn_k_b` (`{nope, kv_lora, H}`) and `attn_v_b` (`{kv_lora, v, H}`).
pub fn join_kv_b(k_b: &[f32], v_b: &[f32], nope: usize, v: usize, r: usize) -> Vec<f32> {
    let heads = k_b.len() / (nope * r).max(1);
    let mut out = Vec::with_capacity(heads * (nope + v) * r);
    for h in 0..heads {
        let k = &k_b[h * nope * r..(h + 1) * nope * r];
        for i in 0..nope {
            out.extend((0..r).map(|c| k[c * nope + i]));
        }
        out.extend_from_slice(&v_b[h * v * r..(h + 1) * v * r]);
    }
    out
}

fn set(m: &mut Metadata, key: String, value: Value) {
    match m.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => m.push((key, value)),
    }
}

/// The `deepseek2.*` keys over the generic ones (as llama.cpp 0.3.36's loader reads
/// them; MLA is written the way its converter does: one latent "KV head" of
/// `kv_lora + rope` key and `kv_lora` value width, plus the per-head `_mla` sizes).
pub fn deepseek_metadata(m: &mut Metadata, arch_name: &str, a: &ArchitectureInfo, config: &Json) {
    let key = |s: &str| format!("{arch_name}.{s}");
    let u = |x: u64| Value::U32(x as u32);
    let cfg_u = |k: &str| config.get(k).and_then(Json::as_u64);
    let cfg_f = |k: &str| config.get(k).and_then(Json::as_f64);
    set(m, key("vocab_size"), u(a.vocab_size));
    if let Some(mla) = a.attention.as_ref().and_then(|x| x.mla.as_ref()) {
        set(m, key("attention.head_count_kv"), u(1));
        // 0 without a query LoRA (V2-Lite): llama.cpp's loader then reads attn_q. It
        // requires the key unless it recognises a Lite model by its layer count.
        set(
            m,
            key("attention.q_lora_rank"),
            u(mla.q_lora_rank.unwrap_or(0)),
        );
        set(m, key("attention.kv_lora_rank"), u(mla.kv_lora_rank));
        set(
            m,
            key("attention.key_length"),
            u(mla.kv_lora_rank + mla.qk_rope_head_dim),
        );
        set(m, key("attention.value_length"), u(mla.kv_lora_rank));
        set(
            m,
            key("attention.key_length_mla"),
            u(mla.qk_nope_head_dim + mla.qk_rope_head_dim),
        );
        set(m, key("attention.value_length_mla"), u(mla.v_head_dim));
        set(m, key("rope.dimension_count"), u(mla.qk_rope_head_dim));
    }
    let dense_lead = a
        .moe
        .as_ref()
        .map(|x| x.leading_dense_layers)
        .unwrap_or(a.num_layers);
    set(m, key("leading_dense_block_count"), u(dense_lead));
    if let Some(moe) = &a.moe {
        set(m, key("expert_feed_forward_length"), u(moe.expert_ffn_size));
        set(m, key("expert_shared_count"), u(moe.num_shared_experts));
        if let Some(s) = cfg_f("routed_scaling_factor") {
            set(m, key("expert_weights_scale"), Value::F32(s as f32));
        }
        if moe.norm_topk_prob {
            set(m, key("expert_weights_norm"), Value::Bool(true));
        }
        // llama.cpp's LLAMA_EXPERT_GATING_FUNC_TYPE: 1 softmax, 2 sigmoid.
        let gating = match moe.router_scoring {
            pajamas_arch::RouterScoring::Softmax => 1,
            pajamas_arch::RouterScoring::Sigmoid => 2,
        };
        set(m, key("expert_gating_func"), u(gating));
        if let Some(g) = cfg_u("n_group") {
            set(m, key("expert_group_count"), u(g));
        }
        if let Some(g) = cfg_u("topk_group") {
            set(m, key("expert_group_used_count"), u(g));
        }
    } else {
        set(m, key("expert_shared_count"), u(0));
    }
    if let Some(rs) = crate::metadata::rope_scaling(config) {
        let ty = rs
            .get("rope_type")
            .or_else(|| rs.get("type"))
            .and_then(Json::as_str)
            .unwrap_or("");
        let get = |k: &str| rs.get(k).and_then(Json::as_f64);
        if let ("yarn", Some(factor)) = (ty, get("factor")) {
            set(m, key("rope.scaling.type"), Value::String("yarn".into()));
            set(m, key("rope.scaling.factor"), Value::F32(factor as f32));
            if let Some(n) = rs
                .get("original_max_position_embeddings")
                .and_then(Json::as_u64)
            {
                set(m, key("rope.scaling.original_context_length"), u(n));
            }
            if let Some(b) = get("beta_fast") {
                set(m, key("rope.scaling.yarn_beta_fast"), Value::F32(b as f32));
            }
            if let Some(b) = get("beta_slow") {
                set(m, key("rope.scaling.yarn_beta_slow"), Value::F32(b as f32));
            }
            // llama.cpp's deepseek2 loader divides this key by 0.1 (its converter writes
            // 0.1 * mscale_all_dim for historical reasons).
            if let Some(ms) = get("mscale_all_dim") {
                set(
                    m,
                    key("rope.scaling.yarn_log_multiplier"),
                    Value::F32((0.1 * ms) as f32),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> DeepseekLayout {
        DeepseekLayout {
            heads: 2,
            kv_lora_rank: 3,
            qk_nope_head_dim: 2,
            v_head_dim: 1,
            num_layers: 2,
        }
    }

    fn pieces(m: Option<HybridMap>) -> Vec<Piece> {
        match m {
            Some(HybridMap::Pieces(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names() {
        let l = layout();
        let p = pieces(map_deepseek(
            "model.layers.1.self_attn.q_a_proj.weight",
            &[8, 4],
            &l,
        ));
        assert_eq!(p[0].gguf, "blk.1.attn_q_a.weight");
        assert_eq!(p[0].ne, vec![4, 8]);
        let p = pieces(map_deepseek(
            "model.layers.1.mlp.gate.e_score_correction_bias",
            &[8],
            &l,
        ));
        assert_eq!(p[0].gguf, "blk.1.exp_probs_b.bias");
        assert_eq!(
            map_deepseek("model.layers.1.mlp.experts.5.down_proj.weight", &[4, 2], &l),
            Some(HybridMap::Expert {
                gguf: "blk.1.ffn_down_exps.weight".into(),
                expert: 5
            })
        );
        // MTP layer and FP8 scales: dropped.
        assert!(pieces(map_deepseek("model.layers.2.enorm.weight", &[4], &l)).is_empty());
        assert!(pieces(map_deepseek(
            "model.layers.0.mlp.up_proj.weight_scale_inv",
            &[1, 1],
            &l
        ))
        .is_empty());
        assert!(map_deepseek("model.layers.0.self_attn.bogus.weight", &[1], &l).is_none());
        assert_eq!(
            gguf_weight_name("model.layers.3.self_attn.v_b_proj.weight").as_deref(),
            Some("blk.3.attn_v_b.weight")
        );
        assert_eq!(
            gguf_weight_name("model.layers.3.mlp.shared_experts.down_proj.weight").as_deref(),
            Some("blk.3.ffn_down_shexp.weight")
        );
        // kv_b with the wrong shape is not guessed at.
        assert!(map_deepseek("model.layers.0.self_attn.kv_b_proj.weight", &[5, 3], &l).is_none());
    }

    #[test]
    fn published_v3_metadata() {
        let cfg: Json = serde_json::from_str(include_str!(
            "../../../data/configs/deepseek-ai__DeepSeek-V3/config.json"
        ))
        .unwrap();
        let a = pajamas_arch::detect(&cfg).unwrap();
        let m = crate::metadata::model_metadata("deepseek2", &a, &cfg, "v3");
        let get = |k: &str| {
            m.iter()
                .find(|(key, _)| key == &format!("deepseek2.{k}"))
                .map(|(_, v)| v.clone())
        };
        let u = |x: u32| Some(Value::U32(x));
        assert_eq!(get("attention.head_count_kv"), u(1));
        assert_eq!(get("attention.q_lora_rank"), u(1536));
        assert_eq!(get("attention.key_length"), u(512 + 64));
        assert_eq!(get("attention.key_length_mla"), u(192));
        assert_eq!(get("attention.value_length_mla"), u(128));
        assert_eq!(get("rope.dimension_count"), u(64));
        assert_eq!(get("leading_dense_block_count"), u(3));
        assert_eq!(get("expert_gating_func"), u(2));
        assert_eq!(get("expert_group_count"), u(8));
        assert_eq!(get("expert_group_used_count"), u(4));
        assert_eq!(get("expert_feed_forward_length"), u(2048));
        assert_eq!(get("rope.scaling.type"), Some(Value::String("yarn".into())));
        assert_eq!(get("rope.scaling.original_context_length"), u(4096));
        assert_eq!(
            get("rope.scaling.yarn_log_multiplier"),
            Some(Value::F32(0.1))
        );
        assert_eq!(get("expert_weights_norm"), Some(Value::Bool(true)));
    }

    #[test]
    fn kv_b_split() {
        let l = layout();
        // 2 heads x (2 nope + 1 v) rows x 3 latent columns: value = 10*row + col.
        let rows = 6;
        let data: Vec<f32> = (0..rows * 3)
            .map(|i| (10 * (i / 3) + i % 3) as f32)
            .collect();
        let p = pieces(map_deepseek(
            "model.layers.0.self_attn.kv_b_proj.weight",
            &[6, 3],
            &l,
        ));
        assert_eq!(p[0].gguf, "blk.0.attn_k_b.weight");
        assert_eq!(p[0].ne, vec![2, 3, 2]);
        assert_eq!(p[1].ne, vec![3, 1, 2]);
        let k = split_kv_b(&data, false, &p[0].ne);
        // head 0: rows 0,1 transposed -> [c][i] = row i col c
        assert_eq!(
            k,
            vec![0., 10., 1., 11., 2., 12., 30., 40., 31., 41., 32., 42.]
        );
        let v = split_kv_b(&data, true, &p[1].ne);
        assert_eq!(v, vec![20., 21., 22., 50., 51., 52.]);
        assert_eq!(join_kv_b(&k, &v, 2, 1, 3), data);
    }
}
