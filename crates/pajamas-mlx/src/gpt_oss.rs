//! gpt-oss for mlx-lm's `models/gpt_oss.py`: its model class holds the experts as a
//! biased `SwitchGLU` (`mlp.experts.{gate,up,down}_proj.{weight,bias}`, weights
//! `[E, out, in]`) and the router as `mlp.router`, and its `sanitize` leaves a checkpoint
//! alone once it has `gate_proj.weight` names. So we write those names directly:
//!
//! | HF | mlx-lm | transform |
//! |---|---|---|
//! | `mlp.experts.gate_up_proj` `[E, in, 2I]` | `mlp.experts.gate_proj.weight`, `up_proj.weight` `[E, I, in]` | each expert transposed, even / odd rows |
//! | `mlp.experts.gate_up_proj_bias` `[E, 2I]` | `mlp.experts.gate_proj.bias`, `up_proj.bias` `[E, I]` | even / odd columns |
//! | `mlp.experts.down_proj` `[E, I, out]` | `mlp.experts.down_proj.weight` `[E, out, I]` | each expert transposed |
//! | `mlp.experts.down_proj_bias` | `mlp.experts.down_proj.bias` | none |
//! | `self_attn.sinks` | `self_attn.sinks` | none (a bare parameter, never quantized) |
//!
//! config.json: mlx-lm's `ModelArgs` reads `rope_theta` and `rope_scaling` (transformers
//! 4 spellings); transformers 5 configs keep both in `rope_parameters`.

use serde_json::{Map, Value};

use crate::names::Mapped;

/// Which rows (weights) or columns (biases) of a source tensor a parameter keeps, after
/// transposing every stacked matrix when `transpose`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Strided {
    pub offset: u8,
    pub stride: u8,
    pub transpose: bool,
}

/// The mlx-lm name(s) of a gpt-oss expert tensor, `None` for other tensors.
pub fn map_expert(hf: &str) -> Option<Mapped> {
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, leaf) = rest.split_once('.')?;
    layer.parse::<u32>().ok()?;
    let e = |n: &str| format!("model.layers.{layer}.mlp.experts.{n}");
    Some(match leaf {
        "mlp.experts.gate_up_proj" => Mapped::Strided {
            names: vec![e("gate_proj.weight"), e("up_proj.weight")],
            transpose: true,
        },
        "mlp.experts.gate_up_proj_bias" => Mapped::Strided {
            names: vec![e("gate_proj.bias"), e("up_proj.bias")],
            transpose: false,
        },
        "mlp.experts.down_proj" => Mapped::Strided {
            names: vec![e("down_proj.weight")],
            transpose: true,
        },
        "mlp.experts.down_proj_bias" => Mapped::Keep(e("down_proj.bias")),
        // The published checkpoints' MXFP4 experts, decoded to f32 `[E, out, in]` by the
        // caller (already out-major: no transpose).
        "mlp.experts.gate_up_proj_blocks" => Mapped::Strided {
            names: vec![e("gate_proj.weight"), e("up_proj.weight")],
            transpose: false,
        },
        "mlp.experts.down_proj_blocks" => Mapped::Strided {
            names: vec![e("down_proj.weight")],
            transpose: false,
        },
        "mlp.experts.gate_up_proj_scales" | "mlp.experts.down_proj_scales" => Mapped::Drop(
            "MXFP4 scales: decoded with their blocks, which are quantized for mlx from the f32 values",
        ),
        _ => return None,
    })
}

/// The f32 shape an MXFP4 `*_blocks` tensor `[E, rows, nb, 16]` decodes to
/// (`[E, rows, nb * 32]`); `None` for other tensors.
pub fn decoded_shape(name: &str, shape: &[u64]) -> Option<Vec<u64>> {
    if !name.ends_with("_blocks") {
        return None;
    }
    match shape {
        [e, rows, nb, 16] => Some(vec![*e, *rows, nb * 32]),
        _ => None,
    }
}

/// The planned shape of a strided parameter from its source shape.
pub fn shape(source: &[u64], s: Strided, bias: bool) -> Option<Vec<u64>> {
    let mut shape = source.to_vec();
    let n = shape.len();
    if s.transpose {
        if n < 2 {
            return None;
        }
        shape.swap(n - 1, n - 2);
    }
    let k = if bias { n - 1 } else { n.checked_sub(2)? };
    if !shape[k].is_multiple_of(s.stride as u64) {
        return None;
    }
    shape[k] /= s.stride as u64;
    Some(shape)
}

/// The source shape a strided parameter of `shape` comes from ([`shape`]'s inverse).
pub fn source_shape(shape: &[u64], s: Strided, bias: bool) -> Vec<u64> {
    let mut src = shape.to_vec();
    let n = src.len();
    let k = if bias { n - 1 } else { n - 2 };
    src[k] *= s.stride as u64;
    if s.transpose {
        src.swap(n - 1, n - 2);
    }
    src
}

/// Applies `s` to a source tensor's values (`source_shape` its HF shape).
pub fn apply(data: &[f32], source_shape: &[u64], s: Strided, bias: bool) -> Vec<f32> {
    let n = source_shape.len();
    let (stride, offset) = (s.stride as usize, s.offset as usize);
    if bias {
        let w = source_shape[n - 1] as usize;
        return data
            .chunks_exact(w)
            .flat_map(|row| row[offset..].iter().step_by(stride).copied())
            .collect();
    }
    let (rows, cols) = (source_shape[n - 2] as usize, source_shape[n - 1] as usize);
    let mut out = Vec::with_capacity(data.len() / stride);
    for m in data.chunks_exact(rows * cols) {
        if s.transpose {
            // Output row r is source column r.
            for r in (offset..cols).step_by(stride) {
                out.extend((0..rows).map(|i| m[i * cols + r]));
            }
        } else {
            for r in (offset..rows).step_by(stride) {
                out.extend_from_slice(&m[r * cols..(r + 1) * cols]);
            }
        }
    }
    out
}

/// `rope_theta` / `rope_scaling` at the top level, from `rope_parameters`.
pub fn fix_config(c: &mut Map<String, Value>) {
    let Some(rp) = c.get("rope_parameters").and_then(Value::as_object).cloned() else {
        return;
    };
    let rp = rp
        .get("full_attention")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or(rp);
    if !c.contains_key("rope_theta") {
        if let Some(t) = rp.get("rope_theta") {
            c.insert("rope_theta".into(), t.clone());
        }
    }
    let scaled = rp
        .get("rope_type")
        .and_then(Value::as_str)
        .is_some_and(|t| t != "default");
    if scaled && c.get("rope_scaling").is_none_or(Value::is_null) {
        let mut rs = rp.clone();
        rs.remove("rope_theta");
        c.insert("rope_scaling".into(), Value::Object(rs));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_layouts() {
        // one expert [in 2, out 4]: m[i][r] = 10 i + r
        let data: Vec<f32> = (0..2)
            .flat_map(|i| (0..4).map(move |r| (10 * i + r) as f32))
            .collect();
        let up = Strided {
            offset: 1,
            stride: 2,
            transpose: true,
        };
        assert_eq!(shape(&[1, 2, 4], up, false), Some(vec![1, 2, 2]));
        assert_eq!(apply(&data, &[1, 2, 4], up, false), vec![1., 11., 3., 13.]);
        let down = Strided {
            offset: 0,
            stride: 1,
            transpose: true,
        };
        assert_eq!(shape(&[1, 2, 4], down, false), Some(vec![1, 4, 2]));
        let bias = Strided {
            offset: 0,
            stride: 2,
            transpose: false,
        };
        assert_eq!(shape(&[2, 4], bias, true), Some(vec![2, 2]));
        assert_eq!(
            apply(&[0., 1., 2., 3., 4., 5., 6., 7.], &[2, 4], bias, true),
            vec![0., 2., 4., 6.]
        );
    }

    #[test]
    fn config_gets_rope_keys() {
        let mut c = serde_json::json!({"rope_parameters": {"rope_theta": 150000.0, "rope_type": "yarn", "factor": 32.0}})
            .as_object()
            .cloned()
            .unwrap();
        fix_config(&mut c);
        assert_eq!(c["rope_theta"], 150000.0);
        assert_eq!(c["rope_scaling"]["factor"], 32.0);
        assert!(c["rope_scaling"].get("rope_theta").is_none());
    }
}
