//! OpenAI gpt-oss: attention with learned sinks and q/k/v/o biases, sliding-window and
//! full layers, YaRN rope, and a mixture of experts with a biased router (softmax over
//! the top-k logits), biased experts and the clamped SwiGLU
//! `(clamp(up, -l, l) + 1) * g * sigmoid(alpha * g)`, `g = min(gate, l)` (ggml's
//! `swiglu_oai`, alpha 1.702, l 7).
//!
//! Tensors are asked for by names of our own, which [`gguf_name`] maps to llama.cpp's:
//! the experts as stacked `model.layers.L.mlp.experts.{gate,up,down}_proj.{weight,bias}`
//! (`[E, out, in]` / `[E, out]`, gate and up already de-interleaved). An HF folder holds
//! the fused `gate_up_proj` `[E, in, 2I]` (or its MXFP4 blocks, decoded here) instead,
//! split here as the converter splits it.

use serde_json::Value;

use crate::act_quant::ActQuant;
use crate::config::{MoeConfig, Rope};
use crate::error::{Result, RuntimeError};
use crate::hook::LinearHook;
use crate::model::{read_checked, Ffn, LayerWeights, Linear, Model};
use crate::moe::route;
use crate::weights::WeightSource;

/// YaRN rope scaling (as llama.cpp applies it: `ggml_rope_yarn_corr_dims`, `rope_yarn`).
#[derive(Debug, Clone, PartialEq)]
pub struct Yarn {
    pub factor: f64,
    /// The context the model was trained with before scaling.
    pub original_context: f64,
    pub beta_fast: f64,
    pub beta_slow: f64,
    /// Round the correction range to whole dimensions (llama.cpp always does;
    /// transformers unless the config says `truncate: false`).
    pub truncate: bool,
}

impl Yarn {
    /// The rotary frequencies (`head_dim / 2`) and the factor on cos and sin: each
    /// frequency blends the interpolated `f / factor` and the original `f` by a ramp over
    /// the correction range, and the magnitude is scaled by `1 + 0.1 ln(factor)`.
    pub fn frequencies(&self, theta: f64, head_dim: usize) -> (Vec<f32>, f32) {
        let d = head_dim as f64;
        let corr = |rot: f64| {
            d * (self.original_context / (rot * 2.0 * std::f64::consts::PI)).ln()
                / (2.0 * theta.ln())
        };
        let (mut low, mut high) = (corr(self.beta_fast), corr(self.beta_slow));
        if self.truncate {
            (low, high) = (low.floor(), high.ceil());
        }
        let (low, high) = (low.max(0.0), high.min(d - 1.0));
        let inv = (0..head_dim / 2)
            .map(|i| {
                let extrap = 1.0 / theta.powf(2.0 * i as f64 / d);
                let interp = extrap / self.factor;
                let y = ((i as f64 - low) / (high - low).max(0.001)).clamp(0.0, 1.0);
                let mix = 1.0 - y; // weight of the original frequency
                (interp * (1.0 - mix) + extrap * mix) as f32
            })
            .collect();
        let mscale = if self.factor > 1.0 {
            1.0 + 0.1 * self.factor.ln()
        } else {
            1.0
        };
        (inv, mscale as f32)
    }
}

/// What gpt-oss adds to the generic hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct GptOssParams {
    pub sliding_window: usize,
    pub layer_sliding: Vec<bool>,
    pub yarn: Option<Yarn>,
    pub moe: MoeConfig,
}

fn cfg_err(m: String) -> RuntimeError {
    RuntimeError::Config(m)
}

/// From an HF `config.json`.
pub fn hf_params(cfg: &Value, n_layers: usize) -> Result<GptOssParams> {
    let uint = |k: &str| -> Result<usize> {
        cfg.get(k)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| cfg_err(format!("missing or non-integer {k}")))
    };
    for (k, want) in [("swiglu_limit", 7.0), ("swiglu_alpha", 1.702)] {
        if let Some(v) = cfg.get(k).and_then(Value::as_f64) {
            if (v - want).abs() > 1e-6 {
                return Err(cfg_err(format!(
                    "{k} = {v}: llama.cpp fixes gpt-oss's at {want}, and so does this runtime"
                )));
            }
        }
    }
    let types = cfg
        .get("layer_types")
        .and_then(Value::as_array)
        .ok_or_else(|| cfg_err("missing layer_types".into()))?;
    if types.len() != n_layers {
        return Err(cfg_err(format!(
            "layer_types has {} entries for {n_layers} layers",
            types.len()
        )));
    }
    let layer_sliding = types
        .iter()
        .map(|t| match t.as_str() {
            Some("sliding_attention") => Ok(true),
            Some("full_attention") => Ok(false),
            other => Err(cfg_err(format!(
                "layer_types: unknown layer type {other:?}"
            ))),
        })
        .collect::<Result<Vec<bool>>>()?;
    let yarn = match pajamas_convert::metadata::rope_scaling(cfg) {
        None => None,
        Some(rs) => {
            let ty = rs
                .get("rope_type")
                .or_else(|| rs.get("type"))
                .and_then(Value::as_str);
            if ty != Some("yarn") {
                return Err(cfg_err(format!(
                    "gpt-oss rope scaling {ty:?}: only yarn is supported"
                )));
            }
            let num = |k: &str, d: Option<f64>| {
                rs.get(k)
                    .and_then(Value::as_f64)
                    .or(d)
                    .ok_or_else(|| cfg_err(format!("yarn rope scaling without {k}")))
            };
            Some(Yarn {
                factor: num("factor", None)?,
                original_context: num("original_max_position_embeddings", None)?,
                beta_fast: num("beta_fast", Some(32.0))?,
                beta_slow: num("beta_slow", Some(1.0))?,
                truncate: rs.get("truncate").and_then(Value::as_bool).unwrap_or(true),
            })
        }
    };
    Ok(GptOssParams {
        sliding_window: uint("sliding_window")?,
        layer_sliding,
        yarn,
        moe: MoeConfig {
            n_experts: uint("num_local_experts")?,
            top_k: uint("num_experts_per_tok")?,
            expert_ffn: uint("intermediate_size")?,
            norm_topk_prob: true,
            shared_ffn: None,
            sigmoid_scale: None,
        },
    })
}

/// From a GGUF file's `gpt-oss.*` keys, read as llama.cpp's loader reads them.
pub fn gguf_params(f: &pajamas_gguf::GgufFile, n_layers: usize) -> Result<GptOssParams> {
    let path = f.path().display().to_string();
    let key = |k: &str| format!("gpt-oss.{k}");
    let uint = |k: &str| -> Result<usize> {
        f.get(&key(k))
            .and_then(|v| v.as_uint())
            .map(|v| v as usize)
            .ok_or_else(|| cfg_err(format!("{path}: missing {}", key(k))))
    };
    let float = |k: &str| f.get(&key(k)).and_then(|v| v.as_float());
    let layer_sliding = match f.get(&key("attention.sliding_window_pattern")) {
        Some(pajamas_gguf::Value::Array(pajamas_gguf::Array::Bool(b))) => b.clone(),
        Some(v) => match v.as_uint() {
            // A period: layer i slides unless i % n == n - 1 (llama.cpp's set_swa_pattern).
            Some(n) if n > 0 => (0..n_layers as u64).map(|i| i % n < n - 1).collect(),
            _ => {
                return Err(cfg_err(format!(
                    "{path}: {} is neither a bool array nor a period",
                    key("attention.sliding_window_pattern")
                )))
            }
        },
        // llama.cpp's default for gpt-oss: every other layer, starting with a sliding one.
        None => (0..n_layers).map(|i| i % 2 == 0).collect(),
    };
    if layer_sliding.len() != n_layers {
        return Err(cfg_err(format!(
            "{path}: attention.sliding_window_pattern has {} entries for {n_layers} layers",
            layer_sliding.len()
        )));
    }
    let yarn = match f.get_str(&key("rope.scaling.type")) {
        None | Some("none") => None,
        Some("yarn") => Some(Yarn {
            factor: float("rope.scaling.factor")
                .ok_or_else(|| cfg_err(format!("{path}: yarn without rope.scaling.factor")))?,
            original_context: match f
                .get(&key("rope.scaling.original_context_length"))
                .and_then(|v| v.as_uint())
            {
                Some(n) => n as f64,
                None => uint("context_length")? as f64,
            },
            beta_fast: float("rope.scaling.yarn_beta_fast").unwrap_or(32.0),
            beta_slow: float("rope.scaling.yarn_beta_slow").unwrap_or(1.0),
            truncate: true,
        }),
        Some(other) => {
            return Err(cfg_err(format!(
                "{path}: rope scaling {other:?} is not supported for gpt-oss"
            )))
        }
    };
    Ok(GptOssParams {
        sliding_window: uint("attention.sliding_window")?,
        layer_sliding,
        yarn,
        moe: MoeConfig {
            n_experts: uint("expert_count")?,
            top_k: uint("expert_used_count")?,
            expert_ffn: uint("expert_feed_forward_length")?,
            norm_topk_prob: true,
            shared_ffn: None,
            sigmoid_scale: None,
        },
    })
}

/// The GGUF tensor of one of the names this module asks for (`None`: a name the generic
/// map handles, e.g. the attention projections).
pub fn gguf_name(hf: &str) -> Option<String> {
    let (layer, leaf) = hf.strip_prefix("model.layers.")?.split_once('.')?;
    layer.parse::<u32>().ok()?;
    let g = match leaf {
        "post_attention_layernorm.weight" => "post_attention_norm.weight",
        "self_attn.sinks" => "attn_sinks.weight",
        "mlp.router.weight" => "ffn_gate_inp.weight",
        "mlp.router.bias" => "ffn_gate_inp.bias",
        "mlp.experts.gate_proj.weight" => "ffn_gate_exps.weight",
        "mlp.experts.gate_proj.bias" => "ffn_gate_exps.bias",
        "mlp.experts.up_proj.weight" => "ffn_up_exps.weight",
        "mlp.experts.up_proj.bias" => "ffn_up_exps.bias",
        "mlp.experts.down_proj.weight" => "ffn_down_exps.weight",
        "mlp.experts.down_proj.bias" => "ffn_down_exps.bias",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}"))
}

/// One expert: three biased projections.
#[derive(Debug, Clone)]
pub struct Expert {
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

/// A gpt-oss MoE block.
#[derive(Debug, Clone)]
pub struct GptOssMoe {
    /// `[n_experts x hidden]` with a bias.
    pub router: Linear,
    pub experts: Vec<Expert>,
    pub top_k: usize,
}

const ALPHA: f32 = 1.702;
const LIMIT: f32 = 7.0;

/// ggml's `swiglu_oai` in place on `gate`.
fn swiglu_oai(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = g.min(LIMIT);
        let y = u.clamp(-LIMIT, LIMIT);
        *g = x / (1.0 + (-ALPHA * x).exp()) * (y + 1.0);
    }
}

/// The stacked experts of layer `p` as `[E, out, in]` weights and `[E, out]` biases:
/// (gate, up, down) each as (weights, biases, stored type).
type Stacked = (Vec<f32>, Vec<f32>, Option<pajamas_quant::GgmlType>);

fn stacked_experts(
    src: &dyn WeightSource,
    p: &str,
    e: usize,
    h: usize,
    w: usize,
) -> Result<[Stacked; 3]> {
    let fused = format!("{p}mlp.experts.gate_up_proj");
    if src.has_tensor(&fused) {
        // HF float layout: [E, h, 2w] (input-major), gate = even outputs, up = odd.
        let gu = read_checked(src, &fused, &[e, h, 2 * w])?;
        let gub = read_checked(src, &format!("{fused}_bias"), &[e, 2 * w])?;
        let down = read_checked(src, &format!("{p}mlp.experts.down_proj"), &[e, w, h])?;
        let db = read_checked(src, &format!("{p}mlp.experts.down_proj_bias"), &[e, h])?;
        let mut gate = Vec::with_capacity(e * w * h);
        let mut up = Vec::with_capacity(e * w * h);
        for m in gu.chunks_exact(h * 2 * w) {
            for r in 0..2 * w {
                let dst = if r % 2 == 0 { &mut gate } else { &mut up };
                dst.extend((0..h).map(|i| m[i * 2 * w + r]));
            }
        }
        let (gb, ub): (Vec<f32>, Vec<f32>) = {
            let (mut g, mut u) = (Vec::new(), Vec::new());
            for (i, v) in gub.iter().enumerate() {
                if i % 2 == 0 {
                    g.push(*v)
                } else {
                    u.push(*v)
                }
            }
            (g, u)
        };
        let mut down_t = Vec::with_capacity(e * h * w);
        for m in down.chunks_exact(w * h) {
            for o in 0..h {
                down_t.extend((0..w).map(|i| m[i * h + o]));
            }
        }
        return Ok([(gate, gb, None), (up, ub, None), (down_t, db, None)]);
    }
    let blocks = format!("{fused}_blocks");
    if src.has_tensor(&blocks) || src.read_bytes(&blocks).is_some() {
        // HF MXFP4 layout: [E, rows, nb, 16] blocks, already [out, in]; gate = even rows.
        let gu = mxfp4_matrix(src, &fused, e * 2 * w, h)?;
        let gub = read_checked(src, &format!("{fused}_bias"), &[e, 2 * w])?;
        let (mut gate, mut up) = (Vec::with_capacity(e * w * h), Vec::with_capacity(e * w * h));
        for (r, row) in gu.chunks_exact(h).enumerate() {
            if r % 2 == 0 {
                gate.extend_from_slice(row)
            } else {
                up.extend_from_slice(row)
            }
        }
        let (mut gb, mut ub) = (Vec::new(), Vec::new());
        for (i, v) in gub.iter().enumerate() {
            if i % 2 == 0 {
                gb.push(*v)
            } else {
                ub.push(*v)
            }
        }
        let down_name = format!("{p}mlp.experts.down_proj");
        let down = mxfp4_matrix(src, &down_name, e * h, w)?;
        let db = read_checked(src, &format!("{down_name}_bias"), &[e, h])?;
        return Ok([(gate, gb, None), (up, ub, None), (down, db, None)]);
    }
    let read = |proj: &str, out: usize, inp: usize| -> Result<Stacked> {
        let name = format!("{p}mlp.experts.{proj}.weight");
        let weight = read_checked(src, &name, &[e, out, inp])?;
        let bias = read_checked(src, &format!("{p}mlp.experts.{proj}.bias"), &[e, out])?;
        Ok((weight, bias, src.stored_type(&name)))
    };
    Ok([
        read("gate_proj", w, h)?,
        read("up_proj", w, h)?,
        read("down_proj", h, w)?,
    ])
}

/// Decodes HF MXFP4 `{stem}_blocks` / `{stem}_scales` into `rows` rows of `cols` values.
fn mxfp4_matrix(src: &dyn WeightSource, stem: &str, rows: usize, cols: usize) -> Result<Vec<f32>> {
    let raw = |n: String| -> Result<Vec<u8>> {
        src.read_bytes(&n)
            .unwrap_or_else(|| Err(RuntimeError::MissingTensor(n.clone())))
    };
    let (blocks, scales) = (
        raw(format!("{stem}_blocks"))?,
        raw(format!("{stem}_scales"))?,
    );
    if scales.len() * 32 != rows * cols || blocks.len() != scales.len() * 16 {
        return Err(cfg_err(format!(
            "{stem}_blocks / _scales: {} and {} bytes, expected {} values of [{rows} x {cols}]",
            blocks.len(),
            scales.len(),
            rows * cols
        )));
    }
    let ggml = pajamas_quant::mxfp4::repack_hf(&blocks, &scales)
        .map_err(|e| cfg_err(format!("{stem}_blocks: {e}")))?;
    pajamas_quant::dequantize_rows(pajamas_quant::GgmlType::MXFP4, &ggml, cols)
        .map_err(|e| cfg_err(format!("{stem}_blocks: {e}")))
}

impl GptOssMoe {
    /// Layer `layer`'s block.
    pub fn load(src: &dyn WeightSource, layer: usize, h: usize, moe: &MoeConfig) -> Result<Self> {
        let p = format!("model.layers.{layer}.");
        let (e, w) = (moe.n_experts, moe.expert_ffn);
        let mut router = Linear::load(src, &format!("{p}mlp.router"), e, h)?;
        // The label llama-imatrix uses for the router (`ffn_gate_inp`).
        router.tensor = format!("{p}mlp.gate.weight");
        let [gate, up, down] = stacked_experts(src, &p, e, h, w)?;
        let expert_linear = |s: &Stacked, i: usize, proj: &str, out: usize, inp: usize| -> Linear {
            let mut l = Linear::from_weight(
                format!("{p}mlp.experts.{i}.{proj}.weight"),
                s.0[i * out * inp..(i + 1) * out * inp].to_vec(),
                out,
                inp,
                s.2.and_then(ActQuant::for_weight),
            );
            l.bias = Some(s.1[i * out..(i + 1) * out].to_vec());
            l
        };
        let experts = (0..e)
            .map(|i| Expert {
                gate: expert_linear(&gate, i, "gate_proj", w, h),
                up: expert_linear(&up, i, "up_proj", w, h),
                down: expert_linear(&down, i, "down_proj", h, w),
            })
            .collect();
        Ok(GptOssMoe {
            router,
            experts,
            top_k: moe.top_k,
        })
    }

    /// The block's output for `a` `[n x hidden]` (the normalised hidden states).
    pub fn forward(
        &self,
        layer: usize,
        a: &[f32],
        n: usize,
        hidden: usize,
        hook: &mut dyn LinearHook,
        convert: bool,
    ) -> Vec<f32> {
        let n_experts = self.experts.len();
        let logits = self.router.apply(layer, "router", a, n, hook, convert);
        // Softmax over the top-k logits = the renormalised top-k of the full softmax.
        let routes = route(&logits, n_experts, self.top_k, true);
        hook.on_route(layer, n_experts, &routes);
        let k = self.top_k;
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); n_experts];
        for (i, &(e, _)) in routes.iter().enumerate() {
            members[e].push(i);
        }
        let mut slots = vec![0.0f32; n * k * hidden];
        for (e, list) in members.iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            let mut xs = Vec::with_capacity(list.len() * hidden);
            for &i in list {
                let t = i / k;
                xs.extend_from_slice(&a[t * hidden..(t + 1) * hidden]);
            }
            let ex = &self.experts[e];
            let m = list.len();
            let mut g = ex.gate.apply(layer, "gate_proj", &xs, m, hook, convert);
            let u = ex.up.apply(layer, "up_proj", &xs, m, hook, convert);
            swiglu_oai(&mut g, &u);
            let y = ex.down.apply(layer, "down_proj", &g, m, hook, convert);
            for (row, &i) in list.iter().enumerate() {
                let wgt = routes[i].1;
                let dst = &mut slots[i * hidden..(i + 1) * hidden];
                for (d, &v) in dst.iter_mut().zip(&y[row * hidden..(row + 1) * hidden]) {
                    *d = v * wgt;
                }
            }
        }
        let mut out = vec![0.0f32; n * hidden];
        for (t, o) in out.chunks_exact_mut(hidden).enumerate() {
            for s in 0..k {
                let src = &slots[(t * k + s) * hidden..(t * k + s + 1) * hidden];
                o.iter_mut().zip(src).for_each(|(d, v)| *d += v);
            }
        }
        out
    }
}

/// Loads a gpt-oss model from `src` (HF folder or GGUF).
pub fn load_model(src: &dyn WeightSource, c: crate::config::ModelConfig) -> Result<Model> {
    let h = c.hidden_size;
    let moe = c
        .moe
        .clone()
        .ok_or_else(|| cfg_err("gpt-oss without experts".into()))?;
    let embed: std::sync::Arc<[f32]> =
        read_checked(src, "model.embed_tokens.weight", &[c.vocab_size, h])?.into();
    let mut layers = Vec::with_capacity(c.n_layers);
    for i in 0..c.n_layers {
        let p = format!("model.layers.{i}.");
        let lin = |n: &str, out: usize, inp: usize| {
            Linear::load(src, &format!("{p}self_attn.{n}"), out, inp)
        };
        layers.push(LayerWeights {
            attn_norm: read_checked(src, &format!("{p}input_layernorm.weight"), &[h])?,
            q_proj: lin("q_proj", c.q_dim(), h)?,
            k_proj: lin("k_proj", c.kv_dim(), h)?,
            v_proj: lin("v_proj", c.kv_dim(), h)?,
            o_proj: lin("o_proj", h, c.q_dim())?,
            q_norm: None,
            k_norm: None,
            attn_post_norm: None,
            sinks: Some(read_checked(
                src,
                &format!("{p}self_attn.sinks"),
                &[c.n_heads],
            )?),
            ffn_norm: read_checked(src, &format!("{p}post_attention_layernorm.weight"), &[h])?,
            ffn: Ffn::GptOss(Box::new(GptOssMoe::load(src, i, h, &moe)?)),
            ffn_post_norm: None,
            mamba: None,
            mla: None,
        });
    }
    let norm = read_checked(src, "model.norm.weight", &[h])?;
    let lm_head = Linear::load(src, "lm_head", c.vocab_size, h)?;
    Ok(Model {
        config: c,
        embed_tokens: embed,
        layers,
        norm,
        lm_head,
        llama_cpp_activations: true,
        f16_attention: src.llama_cpp_attention(),
    })
}

/// The rope of every gpt-oss layer.
pub fn rope(theta: f64, yarn: Option<Yarn>) -> Rope {
    Rope {
        theta,
        freq_factors: None,
        linear_factor: 1.0,
        yarn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yarn_frequencies() {
        let y = Yarn {
            factor: 32.0,
            original_context: 4096.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            truncate: true,
        };
        let (inv, mscale) = y.frequencies(150000.0, 64);
        assert_eq!(inv.len(), 32);
        assert!((mscale - (1.0 + 0.1 * 32f32.ln())).abs() < 1e-6);
        // High frequencies keep their value, low ones are divided by the factor.
        assert!((inv[0] - 1.0).abs() < 1e-6);
        let last = 1.0 / 150000f64.powf(62.0 / 64.0) / 32.0;
        assert!((inv[31] as f64 / last - 1.0).abs() < 1e-5);
        assert!(inv.windows(2).all(|w| w[1] < w[0]));
    }

    #[test]
    fn clamped_swiglu() {
        let mut g = [1.0f32, 10.0, -2.0];
        swiglu_oai(&mut g, &[0.5, 9.0, -10.0]);
        let s = |x: f32| x / (1.0 + (-ALPHA * x).exp());
        assert!((g[0] - s(1.0) * 1.5).abs() < 1e-6);
        assert!(
            (g[1] - s(7.0) * 8.0).abs() < 1e-5,
            "gate and up clamped at 7"
        );
        assert!((g[2] - s(-2.0) * -6.0).abs() < 1e-6, "up clamped at -7");
    }

    #[test]
    fn names() {
        assert_eq!(
            gguf_name("model.layers.3.mlp.experts.up_proj.bias").as_deref(),
            Some("blk.3.ffn_up_exps.bias")
        );
        assert_eq!(
            gguf_name("model.layers.0.post_attention_layernorm.weight").as_deref(),
            Some("blk.0.post_attention_norm.weight")
        );
        assert!(gguf_name("model.layers.0.self_attn.q_proj.weight").is_none());
    }
}
