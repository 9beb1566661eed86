//! DeepSeek-V3 (`mlx_lm.models.deepseek_v3`) and V2 (`deepseek_v2`): what their
//! `sanitize` does to an HF checkpoint, done here so that the written checkpoint loads
//! as it is. V2's class keeps `kv_b_proj` as one Linear and has no correction bias;
//! everything else below holds for both.
//!
//! - `self_attn.kv_b_proj` `[H * (nope + v), kv_lora]` becomes two `MultiLinear`s:
//!   `self_attn.embed_q` `[H, kv_lora, nope]` (each head's key rows, transposed) and
//!   `self_attn.unembed_out` `[H, v, kv_lora]` (each head's value rows). Both are
//!   quantizable (`MultiLinear.to_quantized`, along their last dim).
//! - routed experts are stacked into `mlp.switch_mlp.{gate,up,down}_proj` (the MoE
//!   families' rule in `names`).
//! - the router `mlp.gate` is `MoEGate`, a bare `weight` and `e_score_correction_bias`,
//!   not an `nn.Linear`: never quantized, and the bias keeps its stored dtype (the
//!   class's `cast_predicate`).
//! - FP8 block scales (`*.weight_scale_inv`) are applied when their weight is read
//!   (`pajamas_model::fp8`), and multi-token-prediction layers are dropped.

use serde::Serialize;
use serde_json::Value;

use crate::names::Mapped;
use crate::MlxError;

/// Which `MultiLinear` a planned tensor is, with the sizes needed to cut it out of
/// `kv_b_proj`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KvBPart {
    /// `unembed_out` (the value rows) rather than `embed_q` (the key rows, transposed).
    pub value: bool,
    pub heads: u64,
    pub nope: u64,
    pub v: u64,
    pub kv_lora: u64,
}

impl KvBPart {
    /// The parameter's shape (`[H, kv_lora, nope]` or `[H, v, kv_lora]`).
    pub fn shape(&self) -> Vec<u64> {
        if self.value {
            vec![self.heads, self.v, self.kv_lora]
        } else {
            vec![self.heads, self.kv_lora, self.nope]
        }
    }

    /// Elements of the source `kv_b_proj`.
    pub fn source_len(&self) -> usize {
        (self.heads * (self.nope + self.v) * self.kv_lora) as usize
    }

    /// Cuts this parameter out of `kv_b_proj`'s values (row-major).
    pub fn extract(&self, kv_b: &[f32]) -> Vec<f32> {
        let (nope, v, r) = (self.nope as usize, self.v as usize, self.kv_lora as usize);
        let mut out = Vec::with_capacity(self.shape().iter().product::<u64>() as usize);
        for head in kv_b.chunks_exact((nope + v) * r) {
            if self.value {
                out.extend_from_slice(&head[nope * r..]);
            } else {
                for c in 0..r {
                    out.extend((0..nope).map(|i| head[i * r + c]));
                }
            }
        }
        out
    }
}

/// The DeepSeek-specific mapping of one HF name; `None` when the generic rules apply.
/// `split_kv_b`: V3's class (V2's keeps `kv_b_proj` as one Linear).
pub fn map_name(hf: &str, split_kv_b: bool) -> Option<Mapped> {
    if hf.ends_with(".weight_scale_inv") {
        return Some(Mapped::Drop(
            "FP8 block scales: applied to their weight when it is read",
        ));
    }
    if !split_kv_b {
        return None;
    }
    let stem = hf.strip_suffix(".self_attn.kv_b_proj.weight")?;
    Some(Mapped::Split {
        first: format!("{stem}.self_attn.embed_q.weight"),
        second: format!("{stem}.self_attn.unembed_out.weight"),
    })
}

/// The two `MultiLinear` parts of a `kv_b_proj` of `shape`, from config.json's sizes.
pub fn kv_b_parts(hf: &str, shape: &[u64], config: &Value) -> Result<[KvBPart; 2], MlxError> {
    let get = |k: &str| config.get(k).and_then(Value::as_u64);
    let bad = || {
        MlxError::UnknownTensor {
        name: format!("{hf} (shape {shape:?} does not fit num_attention_heads, qk_nope_head_dim, v_head_dim, kv_lora_rank)"),
        family: "deepseek_v3",
    }
    };
    let (Some(heads), Some(nope), Some(v), Some(r)) = (
        get("num_attention_heads"),
        get("qk_nope_head_dim"),
        get("v_head_dim"),
        get("kv_lora_rank"),
    ) else {
        return Err(bad());
    };
    if shape != [heads * (nope + v), r] {
        return Err(bad());
    }
    let part = |value| KvBPart {
        value,
        heads,
        nope,
        v,
        kv_lora: r,
    };
    Ok([part(false), part(true)])
}

/// Layers past `num_hidden_layers` (DeepSeek-V3's multi-token-prediction module).
pub fn is_mtp(hf: &str, num_layers: u64) -> bool {
    hf.strip_prefix("model.layers.")
        .and_then(|r| r.split('.').next())
        .and_then(|l| l.parse::<u64>().ok())
        .is_some_and(|l| l >= num_layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_b_cut() {
        let cfg = serde_json::json!({"num_attention_heads": 2, "qk_nope_head_dim": 2,
            "v_head_dim": 1, "kv_lora_rank": 3});
        let [k, v] = kv_b_parts("x", &[6, 3], &cfg).unwrap();
        let data: Vec<f32> = (0..18).map(|i| (10 * (i / 3) + i % 3) as f32).collect();
        assert_eq!(k.shape(), vec![2, 3, 2]);
        assert_eq!(
            k.extract(&data),
            vec![0., 10., 1., 11., 2., 12., 30., 40., 31., 41., 32., 42.]
        );
        assert_eq!(v.shape(), vec![2, 1, 3]);
        assert_eq!(v.extract(&data), vec![20., 21., 22., 50., 51., 52.]);
        assert!(kv_b_parts("x", &[5, 3], &cfg).is_err());
        assert!(is_mtp("model.layers.61.enorm.weight", 61));
        assert!(!is_mtp("model.layers.60.mlp.gate.weight", 61));
    }
}
