//! OpenAI gpt-oss (`gpt_oss`, llama.cpp architecture `gpt-oss`, `LLM_ARCH_OPENAI_MOE`).
//!
//! Each HF tensor becomes zero, one or two GGUF tensors:
//!
//! | HF (`model.layers.L.`) | GGUF (`blk.L.`) | transform, GGUF shape `{ne0, ...}` |
//! |---|---|---|
//! | `input_layernorm.weight` | `attn_norm.weight` | none |
//! | `post_attention_layernorm.weight` | `post_attention_norm.weight` | none (llama.cpp's name for gpt-oss) |
//! | `self_attn.{q,k,v,o}_proj.{weight,bias}` | `attn_{q,k,v,output}.*` | none (NeoX rope: no row permutation) |
//! | `self_attn.sinks` `[n_head]` | `attn_sinks.weight` | none |
//! | `mlp.router.{weight,bias}` | `ffn_gate_inp.*` | none |
//! | `mlp.experts.gate_up_proj` `[E, n_embd, 2I]` | `ffn_gate_exps.weight`, `ffn_up_exps.weight` | each expert transposed; gate = even rows, up = odd rows: `{n_embd, I, E}` |
//! | `mlp.experts.gate_up_proj_bias` `[E, 2I]` | `ffn_gate_exps.bias`, `ffn_up_exps.bias` | even / odd columns: `{I, E}` |
//! | `mlp.experts.down_proj` `[E, I, n_embd]` | `ffn_down_exps.weight` | each expert transposed: `{I, n_embd, E}` |
//! | `mlp.experts.down_proj_bias` `[E, n_embd]` | `ffn_down_exps.bias` | none |
//!
//! The published checkpoints store the experts in MXFP4: `*_blocks` `[E, rows, nb, 16]`
//! and `*_scales` `[E, rows, nb]`, already `[out, in]` (rows are outputs). Those become
//! the same GGUF tensors with ggml type MXFP4, the codes and scales copied and only the
//! nibbles rearranged ([`pajamas_quant::mxfp4::repack_hf`]); `gate_up_proj_blocks` is
//! split into even (gate) and odd (up) rows as its float twin.

use serde_json::Value as Json;

use pajamas_gguf::{Array, Value};

/// How an HF tensor's data becomes a GGUF tensor's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The values as they are.
    Copy,
    /// Stacked expert matrices `[E, in, out]`: each transposed to `[out, in]`, keeping the
    /// rows `offset, offset + stride, ...`.
    Experts { offset: u8, stride: u8 },
    /// Stacked expert biases `[E, w]`: the columns `offset, offset + stride, ...`.
    BiasColumns { offset: u8, stride: u8 },
    /// MXFP4 `*_blocks` + `*_scales` `[E, rows, nb, (16)]`: the rows `offset, offset +
    /// stride, ...` repacked into ggml MXFP4 blocks.
    Mxfp4 { offset: u8, stride: u8 },
}

impl Op {
    pub fn is_mxfp4(self) -> bool {
        matches!(self, Op::Mxfp4 { .. })
    }
}

/// One GGUF tensor made from HF tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub gguf: String,
    /// GGUF dims, innermost first.
    pub ne: Vec<u64>,
    pub op: Op,
    /// The HF tensors read: one, or `[blocks, scales]` for [`Op::Mxfp4`].
    pub parts: Vec<String>,
}

/// Whether this module maps the model type.
pub fn is_gpt_oss(model_type: &str) -> bool {
    model_type == "gpt_oss"
}

fn reversed(shape: &[u64]) -> Vec<u64> {
    shape.iter().rev().copied().collect()
}

/// Maps one HF tensor. `Ok(None)`: a name gpt-oss does not have. `Ok(Some(vec![]))`: a
/// tensor read as part of another (`*_scales`, with its `*_blocks`). `shape_of` gives the
/// shape of another tensor of the checkpoint (the scales of a blocks tensor).
pub fn map(
    hf: &str,
    shape: &[u64],
    shape_of: &dyn Fn(&str) -> Option<Vec<u64>>,
) -> Result<Option<Vec<Piece>>, String> {
    let one = |gguf: &str, ne: Vec<u64>| {
        Ok(Some(vec![Piece {
            gguf: gguf.to_string(),
            ne,
            op: Op::Copy,
            parts: vec![hf.to_string()],
        }]))
    };
    match hf {
        "model.embed_tokens.weight" => return one("token_embd.weight", reversed(shape)),
        "model.norm.weight" => return one("output_norm.weight", reversed(shape)),
        "lm_head.weight" => return one("output.weight", reversed(shape)),
        _ => {}
    }
    let Some((layer, leaf)) = hf
        .strip_prefix("model.layers.")
        .and_then(|r| r.split_once('.'))
    else {
        return Ok(None);
    };
    let Ok(layer) = layer.parse::<u64>() else {
        return Ok(None);
    };
    let blk = |n: &str| format!("blk.{layer}.{n}");
    let plain = match leaf {
        "input_layernorm.weight" => Some("attn_norm.weight".to_string()),
        "post_attention_layernorm.weight" => Some("post_attention_norm.weight".to_string()),
        "self_attn.sinks" => Some("attn_sinks.weight".to_string()),
        "mlp.router.weight" => Some("ffn_gate_inp.weight".to_string()),
        "mlp.router.bias" => Some("ffn_gate_inp.bias".to_string()),
        "mlp.experts.down_proj_bias" => Some("ffn_down_exps.bias".to_string()),
        _ => leaf.strip_prefix("self_attn.").and_then(|a| {
            let (stem, suffix) = a.rsplit_once('.')?;
            let name = match stem {
                "q_proj" => "attn_q",
                "k_proj" => "attn_k",
                "v_proj" => "attn_v",
                "o_proj" => "attn_output",
                _ => return None,
            };
            matches!(suffix, "weight" | "bias").then(|| format!("{name}.{suffix}"))
        }),
    };
    if let Some(g) = plain {
        return one(&blk(&g), reversed(shape));
    }
    let split = |gate: &str, up: &str, ne: Vec<u64>, op: &dyn Fn(u8) -> Op, parts: Vec<String>| {
        Ok(Some(
            [(gate, 0u8), (up, 1u8)]
                .into_iter()
                .map(|(g, offset)| Piece {
                    gguf: blk(g),
                    ne: ne.clone(),
                    op: op(offset),
                    parts: parts.clone(),
                })
                .collect(),
        ))
    };
    let bad = |what: &str| Err(format!("tensor '{hf}' has shape {shape:?}; {what}"));
    match leaf {
        "mlp.experts.gate_up_proj" => {
            let [e, inp, out2] = shape else {
                return bad("expected [experts, hidden, 2 * intermediate]");
            };
            if !out2.is_multiple_of(2) {
                return bad("the fused gate/up width is odd");
            }
            split(
                "ffn_gate_exps.weight",
                "ffn_up_exps.weight",
                vec![*inp, out2 / 2, *e],
                &|offset| Op::Experts { offset, stride: 2 },
                vec![hf.to_string()],
            )
        }
        "mlp.experts.gate_up_proj_bias" => {
            let [e, w2] = shape else {
                return bad("expected [experts, 2 * intermediate]");
            };
            if !w2.is_multiple_of(2) {
                return bad("the fused gate/up width is odd");
            }
            split(
                "ffn_gate_exps.bias",
                "ffn_up_exps.bias",
                vec![w2 / 2, *e],
                &|offset| Op::BiasColumns { offset, stride: 2 },
                vec![hf.to_string()],
            )
        }
        "mlp.experts.down_proj" => {
            let [e, inp, out] = shape else {
                return bad("expected [experts, intermediate, hidden]");
            };
            Ok(Some(vec![Piece {
                gguf: blk("ffn_down_exps.weight"),
                ne: vec![*inp, *out, *e],
                op: Op::Experts {
                    offset: 0,
                    stride: 1,
                },
                parts: vec![hf.to_string()],
            }]))
        }
        "mlp.experts.gate_up_proj_scales" | "mlp.experts.down_proj_scales" => Ok(Some(Vec::new())),
        "mlp.experts.gate_up_proj_blocks" | "mlp.experts.down_proj_blocks" => {
            let [e, rows, nb, 16] = shape else {
                return bad("MXFP4 blocks must be [experts, rows, blocks, 16]");
            };
            let scales = hf.replace("_blocks", "_scales");
            match shape_of(&scales) {
                Some(s) if s == [*e, *rows, *nb] => {}
                Some(s) => {
                    return Err(format!(
                        "tensor '{scales}' has shape {s:?}; the scales of '{hf}' {shape:?} must be {:?}",
                        [e, rows, nb]
                    ))
                }
                None => {
                    return Err(format!(
                        "tensor '{hf}' has no '{scales}'; MXFP4 blocks need their scales"
                    ))
                }
            }
            let parts = vec![hf.to_string(), scales];
            if leaf.starts_with("mlp.experts.gate_up") {
                if !rows.is_multiple_of(2) {
                    return bad("the fused gate/up width is odd");
                }
                split(
                    "ffn_gate_exps.weight",
                    "ffn_up_exps.weight",
                    vec![nb * 32, rows / 2, *e],
                    &|offset| Op::Mxfp4 { offset, stride: 2 },
                    parts,
                )
            } else {
                Ok(Some(vec![Piece {
                    gguf: blk("ffn_down_exps.weight"),
                    ne: vec![nb * 32, *rows, *e],
                    op: Op::Mxfp4 {
                        offset: 0,
                        stride: 1,
                    },
                    parts,
                }]))
            }
        }
        _ => Ok(None),
    }
}

/// Applies a float op to an HF tensor's values (row-major, `shape` its HF shape).
pub fn apply(op: Op, data: Vec<f32>, shape: &[u64]) -> Vec<f32> {
    match op {
        Op::Copy | Op::Mxfp4 { .. } => data,
        Op::Experts { offset, stride } => {
            let (e, inp, out) = (shape[0] as usize, shape[1] as usize, shape[2] as usize);
            let (offset, stride) = (offset as usize, stride as usize);
            let kept = (out - offset).div_ceil(stride);
            let mut v = Vec::with_capacity(e * kept * inp);
            for m in data.chunks_exact(inp * out) {
                for r in (offset..out).step_by(stride) {
                    v.extend((0..inp).map(|i| m[i * out + r]));
                }
            }
            v
        }
        Op::BiasColumns { offset, stride } => {
            let w = shape[shape.len() - 1] as usize;
            data.chunks_exact(w)
                .flat_map(|row| {
                    row[offset as usize..]
                        .iter()
                        .step_by(stride as usize)
                        .copied()
                })
                .collect()
        }
    }
}

/// ggml MXFP4 bytes of an [`Op::Mxfp4`] piece from the raw `*_blocks` / `*_scales` bytes
/// (`blocks_shape` `[E, rows, nb, 16]`).
pub fn mxfp4(
    op: Op,
    blocks: &[u8],
    scales: &[u8],
    blocks_shape: &[u64],
) -> Result<Vec<u8>, String> {
    let Op::Mxfp4 { offset, stride } = op else {
        return Err(format!("{op:?} is not an MXFP4 op"));
    };
    let (rows, nb) = (blocks_shape[1] as usize, blocks_shape[2] as usize);
    let n_rows = blocks.len() / (nb * 16).max(1);
    if blocks.len() != n_rows * nb * 16
        || scales.len() != n_rows * nb
        || !n_rows.is_multiple_of(rows.max(1))
    {
        return Err(format!(
            "{} block bytes and {} scales do not make [{rows} x {nb}] blocks per expert",
            blocks.len(),
            scales.len()
        ));
    }
    let mut kept_blocks = Vec::with_capacity(blocks.len() / stride as usize);
    let mut kept_scales = Vec::with_capacity(scales.len() / stride as usize);
    for r in (0..n_rows).filter(|r| (r % rows) % stride as usize == offset as usize) {
        kept_blocks.extend_from_slice(&blocks[r * nb * 16..(r + 1) * nb * 16]);
        kept_scales.extend_from_slice(&scales[r * nb..(r + 1) * nb]);
    }
    pajamas_quant::mxfp4::repack_hf(&kept_blocks, &kept_scales).map_err(|e| e.to_string())
}

/// The gpt-oss keys over the generic ones: which layers use the sliding window (as a
/// per-layer array, so llama.cpp does not assume its default alternation) and the YaRN
/// rope scaling.
pub fn metadata(
    m: &mut Vec<(String, Value)>,
    arch_name: &str,
    config: &Json,
    n_layers: u64,
) -> Result<(), String> {
    let key = |s: &str| format!("{arch_name}.{s}");
    let mut set = |k: String, v: Value| match m.iter_mut().find(|(x, _)| *x == k) {
        Some(slot) => slot.1 = v,
        None => m.push((k, v)),
    };
    if let Some(types) = config.get("layer_types").and_then(Json::as_array) {
        if types.len() as u64 != n_layers {
            return Err(format!(
                "layer_types has {} entries for {n_layers} layers",
                types.len()
            ));
        }
        let local = types
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                other => Err(format!("layer_types: unknown layer type {other:?}")),
            })
            .collect::<Result<Vec<bool>, String>>()?;
        set(
            key("attention.sliding_window_pattern"),
            Value::Array(Array::Bool(local)),
        );
    }
    if let Some(rs) = crate::metadata::rope_scaling(config) {
        let ty = rs
            .get("rope_type")
            .or_else(|| rs.get("type"))
            .and_then(Json::as_str)
            .unwrap_or("");
        if ty != "yarn" {
            return Err(format!(
                "rope scaling type {ty:?}: gpt-oss converts with YaRN scaling only"
            ));
        }
        let num = |k: &str| rs.get(k).and_then(Json::as_f64);
        let factor = num("factor").ok_or("YaRN rope scaling without a factor")?;
        let orig = num("original_max_position_embeddings")
            .ok_or("YaRN rope scaling without original_max_position_embeddings")?;
        set(key("rope.scaling.type"), Value::String("yarn".into()));
        set(key("rope.scaling.factor"), Value::F32(factor as f32));
        set(
            key("rope.scaling.original_context_length"),
            Value::U32(orig as u32),
        );
        for (hf, gguf) in [
            ("beta_fast", "rope.scaling.yarn_beta_fast"),
            ("beta_slow", "rope.scaling.yarn_beta_slow"),
        ] {
            if let Some(x) = num(hf) {
                set(key(gguf), Value::F32(x as f32));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_shapes(_: &str) -> Option<Vec<u64>> {
        None
    }

    #[test]
    fn names() {
        let m = |n: &str, s: &[u64]| map(n, s, &no_shapes).unwrap().unwrap();
        assert_eq!(
            m("model.layers.1.post_attention_layernorm.weight", &[64])[0].gguf,
            "blk.1.post_attention_norm.weight"
        );
        assert_eq!(
            m("model.layers.0.self_attn.sinks", &[4])[0].gguf,
            "blk.0.attn_sinks.weight"
        );
        assert_eq!(
            m("model.layers.0.self_attn.o_proj.bias", &[64])[0].gguf,
            "blk.0.attn_output.bias"
        );
        assert_eq!(
            m("model.layers.0.mlp.router.bias", &[4])[0].gguf,
            "blk.0.ffn_gate_inp.bias"
        );
        let gu = m("model.layers.0.mlp.experts.gate_up_proj", &[4, 64, 128]);
        assert_eq!(gu.len(), 2);
        assert_eq!(gu[0].gguf, "blk.0.ffn_gate_exps.weight");
        assert_eq!(gu[1].gguf, "blk.0.ffn_up_exps.weight");
        assert_eq!(gu[0].ne, vec![64, 64, 4]);
        let b = m("model.layers.0.mlp.experts.gate_up_proj_bias", &[4, 128]);
        assert_eq!(b[1].gguf, "blk.0.ffn_up_exps.bias");
        assert_eq!(b[1].ne, vec![64, 4]);
        let d = m("model.layers.0.mlp.experts.down_proj", &[4, 32, 64]);
        assert_eq!(d[0].ne, vec![32, 64, 4]);
        assert!(map("model.layers.0.mlp.bogus", &[1], &no_shapes)
            .unwrap()
            .is_none());
        // MXFP4: the blocks carry their scales; the scales map to nothing of their own.
        let shapes = |n: &str| {
            (n == "model.layers.0.mlp.experts.gate_up_proj_scales").then(|| vec![4, 128, 2])
        };
        let p = map(
            "model.layers.0.mlp.experts.gate_up_proj_blocks",
            &[4, 128, 2, 16],
            &shapes,
        )
        .unwrap()
        .unwrap();
        assert_eq!(p[0].ne, vec![64, 64, 4]);
        assert_eq!(
            p[1].op,
            Op::Mxfp4 {
                offset: 1,
                stride: 2
            }
        );
        assert_eq!(
            p[0].parts[1],
            "model.layers.0.mlp.experts.gate_up_proj_scales"
        );
        assert!(map(
            "model.layers.0.mlp.experts.down_proj_blocks",
            &[4, 64, 2, 16],
            &shapes
        )
        .is_err());
    }

    #[test]
    fn transposes_and_deinterleaves() {
        // one expert, in = 2, out = 4: m[i][r] = 10 i + r
        let data: Vec<f32> = (0..2)
            .flat_map(|i| (0..4).map(move |r| (10 * i + r) as f32))
            .collect();
        let shape = [1, 2, 4];
        assert_eq!(
            apply(
                Op::Experts {
                    offset: 0,
                    stride: 2
                },
                data.clone(),
                &shape
            ),
            vec![0., 10., 2., 12.]
        );
        assert_eq!(
            apply(
                Op::Experts {
                    offset: 1,
                    stride: 2
                },
                data.clone(),
                &shape
            ),
            vec![1., 11., 3., 13.]
        );
        assert_eq!(
            apply(
                Op::Experts {
                    offset: 0,
                    stride: 1
                },
                data,
                &shape
            ),
            vec![0., 10., 1., 11., 2., 12., 3., 13.]
        );
        let bias = vec![0., 1., 2., 3., 4., 5., 6., 7.];
        assert_eq!(
            apply(
                Op::BiasColumns {
                    offset: 1,
                    stride: 2
                },
                bias,
                &[2, 4]
            ),
            vec![1., 3., 5., 7.]
        );
    }

    #[test]
    fn mxfp4_rows() {
        // 1 expert, 2 rows, 1 block: row r has scale 100 + r and every byte 0x10 * r.
        let blocks: Vec<u8> = (0..2u8).flat_map(|r| [0x11 * r; 16]).collect();
        let scales = [100u8, 101];
        let up = mxfp4(
            Op::Mxfp4 {
                offset: 1,
                stride: 2,
            },
            &blocks,
            &scales,
            &[1, 2, 1, 16],
        )
        .unwrap();
        assert_eq!(up.len(), 17);
        assert_eq!(up[0], 101);
        assert!(up[1..].iter().all(|&b| b == 0x11));
        let all = mxfp4(
            Op::Mxfp4 {
                offset: 0,
                stride: 1,
            },
            &blocks,
            &scales,
            &[1, 2, 1, 16],
        )
        .unwrap();
        assert_eq!(all.len(), 34);
        assert_eq!((all[0], all[17]), (100, 101));
    }
}
