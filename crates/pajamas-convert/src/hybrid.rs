//! Hybrid Mamba-2 / attention families: IBM Granite 4.0-H (`granitemoehybrid`, llama.cpp
//! architecture `granitehybrid`) and NVIDIA Nemotron-H (`nemotron_h`, llama.cpp
//! `nemotron_h`, or `nemotron_h_moe` when its FFN blocks are mixtures of experts).
//!
//! Each HF tensor becomes one or more GGUF tensors, with the value transform and the
//! GGUF shape llama.cpp's loader asks for:
//!
//! | HF (Granite `mamba.*`, Nemotron-H `mixer.*`) | GGUF | transform, GGUF shape `{ne0, ne1, ...}` |
//! |---|---|---|
//! | `in_proj.weight` `[d_in_proj, n_embd]` | `ssm_in.weight` | none |
//! | `conv1d.weight` `[C, 1, K]` | `ssm_conv1d.weight` | squeezed: `{K, C}` |
//! | `conv1d.bias` `[C]` | `ssm_conv1d.bias` | none |
//! | `dt_bias` `[H]` | `ssm_dt.bias` | none |
//! | `A_log` `[H]` | `ssm_a` (no suffix) | `A = -exp(A_log)`, `{1, H}` |
//! | `D` `[H]` | `ssm_d` (no suffix) | `{1, H}` |
//! | `norm.weight` `[d_inner]` | `ssm_norm.weight` | grouped: `{d_inner / n_group, n_group}` |
//! | `out_proj.weight` | `ssm_out.weight` | none |
//!
//! Granite's fused `input_linear` (`[.., 2I, n_embd]`, gate rows first, then up) is split
//! into its gate and up halves: `block_sparse_moe.input_linear` (all experts stacked) into
//! `ffn_gate_exps` / `ffn_up_exps`, `shared_mlp.input_linear` into `ffn_gate_shexp` /
//! `ffn_up_shexp` when the model has experts and into the dense `ffn_gate` / `ffn_up`
//! when it has none (Granite 4.0-H Micro); `output_linear` likewise becomes
//! `ffn_down_exps`, `ffn_down_shexp` or `ffn_down`. q/k projections get llama.cpp's rope
//! row order, as its converter writes them for both families (these models use no
//! positional encoding in attention, so the order changes nothing there, but the file
//! then holds what llama.cpp's own converter would write).

/// A change applied to an HF tensor's values on its way into GGUF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The values as they are (possibly under a new shape).
    Copy,
    /// Mamba-2's `A_log` -> `A = -exp(A_log)`.
    NegExp,
    /// q/k rows from HF's rotate-half order to llama.cpp's interleaved one.
    RopePermute { heads: u64 },
    /// One half of a fused gate+up matrix: of every stacked matrix of `2n` rows, rows
    /// `[0, n)` (`half` 0, the gate) or `[n, 2n)` (`half` 1, the up projection).
    RowHalf { half: u8 },
    /// DeepSeek's `kv_b_proj` split for MLA (`crate::deepseek::split_kv_b`): the key
    /// up-projection transposed per head, or (`value`) the value up-projection.
    MlaKvB { value: bool },
}

/// One GGUF tensor made from an HF tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub gguf: String,
    pub op: Op,
    /// GGUF dims, innermost first.
    pub ne: Vec<u64>,
}

/// Where an HF tensor of a hybrid model goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HybridMap {
    /// One or more GGUF tensors of their own.
    Pieces(Vec<Piece>),
    /// Matrix `expert` of the stacked expert tensor `gguf` (Nemotron-H stores one HF
    /// tensor per expert).
    Expert { gguf: String, expert: u64 },
}

/// What the mapping needs to know about the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HybridLayout {
    /// `granitemoehybrid` or `nemotron_h`.
    pub model_type: String,
    pub heads: u64,
    pub kv_heads: u64,
    /// Mamba-2 groups (`mamba_n_groups` / `n_groups`): the gated RMSNorm is per group.
    pub ssm_groups: u64,
    /// Whether the FFNs are routed experts (Granite: `num_local_experts` > 0).
    pub has_experts: bool,
}

/// Whether this module maps the model type.
pub fn is_hybrid(model_type: &str) -> bool {
    matches!(model_type, "granitemoehybrid" | "nemotron_h")
}

fn reversed(shape: &[u64]) -> Vec<u64> {
    shape.iter().rev().copied().collect()
}

fn piece(gguf: String, op: Op, ne: Vec<u64>) -> Option<HybridMap> {
    Some(HybridMap::Pieces(vec![Piece { gguf, op, ne }]))
}

/// The Mamba-2 mixer tensors, shared by both families (`leaf` is the name after
/// `mamba.` / `mixer.`).
fn mamba(
    leaf: &str,
    blk: &dyn Fn(&str) -> String,
    shape: &[u64],
    groups: u64,
) -> Option<HybridMap> {
    let n: u64 = shape.iter().product();
    match leaf {
        "in_proj.weight" => piece(blk("ssm_in.weight"), Op::Copy, reversed(shape)),
        "out_proj.weight" => piece(blk("ssm_out.weight"), Op::Copy, reversed(shape)),
        "conv1d.weight" => {
            // [channels, 1, kernel] -> [channels, kernel]
            let squeezed: Vec<u64> = shape.iter().copied().filter(|&d| d != 1).collect();
            piece(blk("ssm_conv1d.weight"), Op::Copy, reversed(&squeezed))
        }
        "conv1d.bias" => piece(blk("ssm_conv1d.bias"), Op::Copy, vec![n]),
        "dt_bias" => piece(blk("ssm_dt.bias"), Op::Copy, vec![n]),
        "A_log" => piece(blk("ssm_a"), Op::NegExp, vec![1, n]),
        "D" => piece(blk("ssm_d"), Op::Copy, vec![1, n]),
        "norm.weight" if groups > 0 && n.is_multiple_of(groups) => {
            piece(blk("ssm_norm.weight"), Op::Copy, vec![n / groups, groups])
        }
        _ => None,
    }
}

/// q/k/v/o projections (`self_attn.*` in Granite, `mixer.*` in Nemotron-H).
fn attention(
    leaf: &str,
    blk: &dyn Fn(&str) -> String,
    shape: &[u64],
    l: &HybridLayout,
) -> Option<HybridMap> {
    let (stem, suffix) = leaf.rsplit_once('.')?;
    let name = match stem {
        "q_proj" => "attn_q",
        "k_proj" => "attn_k",
        "v_proj" => "attn_v",
        "o_proj" => "attn_output",
        _ => return None,
    };
    let op = match (stem, suffix) {
        ("q_proj", "weight") => Op::RopePermute { heads: l.heads },
        ("k_proj", "weight") => Op::RopePermute { heads: l.kv_heads },
        _ => Op::Copy,
    };
    piece(blk(&format!("{name}.{suffix}")), op, reversed(shape))
}

/// Splits a fused gate+up tensor into its two halves.
fn gate_up(gate: String, up: String, shape: &[u64]) -> Option<HybridMap> {
    let mut ne = reversed(shape);
    if ne.len() < 2 || !ne[1].is_multiple_of(2) {
        return None;
    }
    ne[1] /= 2;
    Some(HybridMap::Pieces(vec![
        Piece {
            gguf: gate,
            op: Op::RowHalf { half: 0 },
            ne: ne.clone(),
        },
        Piece {
            gguf: up,
            op: Op::RowHalf { half: 1 },
            ne,
        },
    ]))
}

/// Maps one HF tensor of a hybrid model; `None` for a name this layout does not know.
pub fn map_hybrid(hf: &str, shape: &[u64], l: &HybridLayout) -> Option<HybridMap> {
    let granite = l.model_type == "granitemoehybrid";
    let top = |n: &str| piece(n.to_string(), Op::Copy, reversed(shape));
    match (hf, granite) {
        ("model.embed_tokens.weight", true) | ("backbone.embeddings.weight", false) => {
            return top("token_embd.weight")
        }
        ("model.norm.weight", true) | ("backbone.norm_f.weight", false) => {
            return top("output_norm.weight")
        }
        ("lm_head.weight", _) => return top("output.weight"),
        _ => {}
    }
    let prefix = if granite {
        "model.layers."
    } else {
        "backbone.layers."
    };
    let (layer, leaf) = hf.strip_prefix(prefix)?.split_once('.')?;
    let layer: u64 = layer.parse().ok()?;
    let blk = move |n: &str| format!("blk.{layer}.{n}");
    if granite {
        if let Some(m) = leaf.strip_prefix("mamba.") {
            return mamba(m, &blk, shape, l.ssm_groups);
        }
        if let Some(a) = leaf.strip_prefix("self_attn.") {
            return attention(a, &blk, shape, l);
        }
        let (gate, up, down) = if l.has_experts {
            ("ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp")
        } else {
            ("ffn_gate", "ffn_up", "ffn_down")
        };
        return match leaf {
            "input_layernorm.weight" => top(&blk("attn_norm.weight")),
            "post_attention_layernorm.weight" => top(&blk("ffn_norm.weight")),
            "block_sparse_moe.router.layer.weight" => top(&blk("ffn_gate_inp.weight")),
            "block_sparse_moe.input_linear.weight" => gate_up(
                blk("ffn_gate_exps.weight"),
                blk("ffn_up_exps.weight"),
                shape,
            ),
            "block_sparse_moe.output_linear.weight" => top(&blk("ffn_down_exps.weight")),
            "shared_mlp.input_linear.weight" => gate_up(
                blk(&format!("{gate}.weight")),
                blk(&format!("{up}.weight")),
                shape,
            ),
            "shared_mlp.output_linear.weight" => top(&blk(&format!("{down}.weight"))),
            _ => None,
        };
    }
    // Nemotron-H: every block is `norm` + one `mixer` (Mamba-2, attention, MLP or MoE).
    if leaf == "norm.weight" {
        return top(&blk("attn_norm.weight"));
    }
    let m = leaf.strip_prefix("mixer.")?;
    if let Some(e) = m.strip_prefix("experts.") {
        let (expert, proj) = e.split_once('.')?;
        let expert: u64 = expert.parse().ok()?;
        let stem = match proj {
            "up_proj.weight" => "ffn_up_exps",
            "down_proj.weight" => "ffn_down_exps",
            _ => return None,
        };
        return Some(HybridMap::Expert {
            gguf: blk(&format!("{stem}.weight")),
            expert,
        });
    }
    if let Some(found) = mamba(m, &blk, shape, l.ssm_groups) {
        return Some(found);
    }
    if let Some(found) = attention(m, &blk, shape, l) {
        return Some(found);
    }
    match m {
        "gate.weight" => top(&blk("ffn_gate_inp.weight")),
        "gate.e_score_correction_bias" => top(&blk("exp_probs_b.bias")),
        "shared_experts.up_proj.weight" => top(&blk("ffn_up_shexp.weight")),
        "shared_experts.down_proj.weight" => top(&blk("ffn_down_shexp.weight")),
        "up_proj.weight" => top(&blk("ffn_up.weight")),
        "down_proj.weight" => top(&blk("ffn_down.weight")),
        _ => None,
    }
}

/// Applies `op` to an HF tensor's values (row-major); `ne` is the GGUF tensor's shape.
pub fn apply(op: Op, data: Vec<f32>, ne: &[u64]) -> Vec<f32> {
    match op {
        Op::Copy => data,
        Op::NegExp => data.into_iter().map(|x| -x.exp()).collect(),
        Op::RopePermute { heads } => {
            let cols = ne[0] as usize;
            let rows = data.len() / cols;
            crate::names::apply(
                crate::names::Transform::RopePermute { heads },
                data,
                rows,
                cols,
            )
        }
        Op::RowHalf { half } => {
            let cols = ne[0] as usize;
            let rows_out = ne[1] as usize;
            let mats: usize = ne[2..].iter().product::<u64>() as usize;
            let mut out = Vec::with_capacity(mats * rows_out * cols);
            for m in 0..mats {
                let start = (m * 2 * rows_out + half as usize * rows_out) * cols;
                out.extend_from_slice(&data[start..start + rows_out * cols]);
            }
            out
        }
        Op::MlaKvB { value } => crate::deepseek::split_kv_b(&data, value, ne),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granite(experts: bool) -> HybridLayout {
        HybridLayout {
            model_type: "granitemoehybrid".into(),
            heads: 4,
            kv_heads: 2,
            ssm_groups: 1,
            has_experts: experts,
        }
    }

    fn pieces(m: Option<HybridMap>) -> Vec<Piece> {
        match m {
            Some(HybridMap::Pieces(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn granite_mamba_tensors() {
        let l = granite(true);
        let p = pieces(map_hybrid(
            "model.layers.1.mamba.conv1d.weight",
            &[160, 1, 4],
            &l,
        ));
        assert_eq!(p[0].gguf, "blk.1.ssm_conv1d.weight");
        assert_eq!(p[0].ne, vec![4, 160]);
        let p = pieces(map_hybrid("model.layers.1.mamba.A_log", &[4], &l));
        assert_eq!((p[0].gguf.as_str(), p[0].op), ("blk.1.ssm_a", Op::NegExp));
        assert_eq!(p[0].ne, vec![1, 4]);
        let p = pieces(map_hybrid("model.layers.0.mamba.dt_bias", &[4], &l));
        assert_eq!(p[0].gguf, "blk.0.ssm_dt.bias");
        let p = pieces(map_hybrid("model.layers.0.mamba.norm.weight", &[128], &l));
        assert_eq!(p[0].ne, vec![128, 1]);
    }

    #[test]
    fn granite_ffn_split() {
        let p = pieces(map_hybrid(
            "model.layers.0.block_sparse_moe.input_linear.weight",
            &[4, 64, 64],
            &granite(true),
        ));
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].gguf, "blk.0.ffn_gate_exps.weight");
        assert_eq!(p[1].gguf, "blk.0.ffn_up_exps.weight");
        assert_eq!(p[0].ne, vec![64, 32, 4]);
        let dense = pieces(map_hybrid(
            "model.layers.3.shared_mlp.input_linear.weight",
            &[256, 64],
            &granite(false),
        ));
        assert_eq!(dense[0].gguf, "blk.3.ffn_gate.weight");
        assert_eq!(dense[1].gguf, "blk.3.ffn_up.weight");
        let shared = pieces(map_hybrid(
            "model.layers.3.shared_mlp.output_linear.weight",
            &[64, 128],
            &granite(true),
        ));
        assert_eq!(shared[0].gguf, "blk.3.ffn_down_shexp.weight");
        // two stacked matrices of 4 rows x 1 col: gate = rows 0..2 of each
        let data: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let ne = [1, 2, 2];
        assert_eq!(
            apply(Op::RowHalf { half: 0 }, data.clone(), &ne),
            vec![0., 1., 4., 5.]
        );
        assert_eq!(
            apply(Op::RowHalf { half: 1 }, data, &ne),
            vec![2., 3., 6., 7.]
        );
    }

    #[test]
    fn nemotron_names() {
        let l = HybridLayout {
            model_type: "nemotron_h".into(),
            heads: 4,
            kv_heads: 2,
            ssm_groups: 2,
            has_experts: true,
        };
        let p = pieces(map_hybrid(
            "backbone.layers.0.mixer.norm.weight",
            &[128],
            &l,
        ));
        assert_eq!(p[0].ne, vec![64, 2]);
        let p = pieces(map_hybrid("backbone.layers.2.norm.weight", &[64], &l));
        assert_eq!(p[0].gguf, "blk.2.attn_norm.weight");
        let p = pieces(map_hybrid(
            "backbone.layers.1.mixer.gate.e_score_correction_bias",
            &[8],
            &l,
        ));
        assert_eq!(p[0].gguf, "blk.1.exp_probs_b.bias");
        assert_eq!(
            map_hybrid(
                "backbone.layers.1.mixer.experts.7.down_proj.weight",
                &[64, 32],
                &l
            ),
            Some(HybridMap::Expert {
                gguf: "blk.1.ffn_down_exps.weight".into(),
                expert: 7
            })
        );
        let p = pieces(map_hybrid(
            "backbone.layers.2.mixer.k_proj.weight",
            &[64, 64],
            &l,
        ));
        assert_eq!(p[0].op, Op::RopePermute { heads: 2 });
        assert_eq!(
            pieces(map_hybrid("backbone.embeddings.weight", &[10, 4], &l))[0].gguf,
            "token_embd.weight"
        );
        assert!(map_hybrid("backbone.layers.0.mixer.bogus", &[1], &l).is_none());
        let a = apply(Op::NegExp, vec![0.0, 1.0], &[1, 2]);
        assert_eq!(a, vec![-1.0, -(1f32.exp())]);
    }
}
