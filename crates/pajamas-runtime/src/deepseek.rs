//! DeepSeek-V2 / V3: multi-head latent attention (MLA), group-limited routing with a
//! sigmoid (V3) or softmax (V2) score and a selection-only correction bias, shared
//! experts, leading dense layers, and YaRN rope as llama.cpp's `deepseek2` computes it.
//!
//! MLA is computed in its decompressed form: per token, the query is `q_b(norm(q_a(x)))`
//! (or `q_proj(x)` without a query LoRA); `kv_a(x)` gives a latent of `kv_lora` values
//! plus one shared rope key; `kv_b(norm(latent))` gives each head's `nope` key part and
//! its value. Queries and keys are `[nope | rope]`, the rope halves rotated in
//! interleaved pairs (llama.cpp's "normal" rope; transformers' `rope_interleave`).
//! llama.cpp absorbs `kv_b` into the query and the output instead; the result is the
//! same function.

use pajamas_gguf::GgufFile;
use serde_json::Value;

use crate::config::{Family, ModelConfig, MoeConfig, Rope};
use crate::error::{Result, RuntimeError};
use crate::hook::{LinearHook, LinearInput, NoHook};
use crate::model::{read_checked, Ffn, LayerWeights, Linear, Mlp, Model};
use crate::moe::{MoeWeights, Route};
use crate::ops::{self, AttentionShape};
use crate::weights::WeightSource;

/// YaRN rope scaling (ggml's `rope_yarn`).
#[derive(Debug, Clone, PartialEq)]
pub struct Yarn {
    pub factor: f64,
    pub original_context: f64,
    pub beta_fast: f64,
    pub beta_slow: f64,
}

/// DeepSeek's hyper-parameters beyond the generic ones.
#[derive(Debug, Clone, PartialEq)]
pub struct DeepseekConfig {
    /// `None`: a plain `q_proj` (V2-Lite).
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    /// Leading layers with a dense FFN (`first_k_dense_replace`).
    pub first_dense: usize,
    /// Sigmoid scores (V3); softmax otherwise.
    pub sigmoid: bool,
    /// Expert groups and how many of them a token may use (1, 1: no grouping).
    pub n_group: usize,
    pub topk_group: usize,
    /// `routed_scaling_factor`.
    pub routed_scale: f32,
    pub yarn: Option<Yarn>,
    /// What the rotated values are multiplied by (YaRN's attention factor on cos/sin).
    pub rope_mscale: f32,
}

fn get_f(cfg: &Value, k: &str) -> Option<f64> {
    cfg.get(k).and_then(Value::as_f64)
}

fn get_u(cfg: &Value, k: &str) -> Option<usize> {
    cfg.get(k).and_then(Value::as_u64).map(|x| x as usize)
}

fn need_u(cfg: &Value, k: &str) -> Result<usize> {
    get_u(cfg, k).ok_or_else(|| RuntimeError::Config(format!("missing {k}")))
}

/// `0.1 * m * ln(scale) + 1` (1 for scale <= 1), transformers' and llama.cpp's YaRN mscale.
fn mscale(scale: f64, m: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * m * scale.ln() + 1.0
    }
}

/// A DeepSeek-V2/V3 `config.json`.
pub fn hf_config(cfg: &Value, model_type: String) -> Result<ModelConfig> {
    let hidden_size = need_u(cfg, "hidden_size")?;
    let n_heads = need_u(cfg, "num_attention_heads")?;
    let n_layers = need_u(cfg, "num_hidden_layers")?;
    let nope = need_u(cfg, "qk_nope_head_dim")?;
    let rope_dim = need_u(cfg, "qk_rope_head_dim")?;
    let v = need_u(cfg, "v_head_dim")?;
    let rp = cfg
        .get("rope_scaling")
        .filter(|v| v.is_object())
        .or_else(|| cfg.get("rope_parameters").filter(|v| v.is_object()));
    let theta = pajamas_convert::metadata::rope_theta(cfg).unwrap_or(10000.0);
    let mut att_scale = 1.0 / ((nope + rope_dim) as f64).sqrt();
    let (mut yarn, mut rope_mscale) = (None, 1.0);
    if let Some(rp) = rp {
        let ty = rp
            .get("rope_type")
            .or_else(|| rp.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        match ty {
            "default" => {}
            "yarn" => {
                let factor = get_f(rp, "factor").ok_or_else(|| {
                    RuntimeError::Config("yarn rope scaling without a factor".into())
                })?;
                let (m, m_all) = (get_f(rp, "mscale"), get_f(rp, "mscale_all_dim"));
                rope_mscale = match (get_f(rp, "attention_factor"), m, m_all) {
                    (Some(a), _, _) => a,
                    (None, Some(m), Some(ma)) if m != 0.0 && ma != 0.0 => {
                        mscale(factor, m) / mscale(factor, ma)
                    }
                    _ => mscale(factor, 1.0),
                };
                if let Some(ma) = m_all.filter(|x| *x != 0.0) {
                    att_scale *= mscale(factor, ma).powi(2);
                }
                yarn = Some(Yarn {
                    factor,
                    original_context: get_f(rp, "original_max_position_embeddings")
                        .unwrap_or(4096.0),
                    beta_fast: get_f(rp, "beta_fast").unwrap_or(32.0),
                    beta_slow: get_f(rp, "beta_slow").unwrap_or(1.0),
                });
            }
            other => {
                return Err(RuntimeError::Config(format!(
                    "rope scaling type {other:?} is not supported for DeepSeek (supported: default, yarn)"
                )))
            }
        }
    }
    let n_experts = get_u(cfg, "n_routed_experts").unwrap_or(0);
    let moe = if n_experts > 0 {
        let w = need_u(cfg, "moe_intermediate_size")?;
        Some(MoeConfig {
            n_experts,
            top_k: need_u(cfg, "num_experts_per_tok")?,
            expert_ffn: w,
            norm_topk_prob: cfg
                .get("norm_topk_prob")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            shared_ffn: get_u(cfg, "n_shared_experts")
                .filter(|n| *n > 0)
                .map(|n| n * w),
            sigmoid_scale: None,
        })
    } else {
        None
    };
    let ds = DeepseekConfig {
        q_lora_rank: get_u(cfg, "q_lora_rank").filter(|r| *r > 0),
        kv_lora_rank: need_u(cfg, "kv_lora_rank")?,
        qk_nope_head_dim: nope,
        qk_rope_head_dim: rope_dim,
        v_head_dim: v,
        first_dense: if moe.is_some() {
            get_u(cfg, "first_k_dense_replace").unwrap_or(0)
        } else {
            n_layers
        },
        sigmoid: cfg.get("scoring_func").and_then(Value::as_str) == Some("sigmoid"),
        n_group: get_u(cfg, "n_group").unwrap_or(1).max(1),
        topk_group: get_u(cfg, "topk_group").unwrap_or(1).max(1),
        routed_scale: get_f(cfg, "routed_scaling_factor").unwrap_or(1.0) as f32,
        yarn,
        rope_mscale: rope_mscale as f32,
    };
    finish(
        model_type,
        hidden_size,
        n_heads,
        n_layers,
        need_u(cfg, "vocab_size")?,
        need_u(cfg, "intermediate_size")?,
        get_f(cfg, "rms_norm_eps").unwrap_or(1e-6) as f32,
        theta,
        cfg.get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        att_scale as f32,
        moe,
        ds,
    )
}

#[allow(clippy::too_many_arguments)]
fn finish(
    model_type: String,
    hidden_size: usize,
    n_heads: usize,
    n_layers: usize,
    vocab_size: usize,
    intermediate_size: usize,
    rms_norm_eps: f32,
    theta: f64,
    tie_word_embeddings: bool,
    attn_scale: f32,
    moe: Option<MoeConfig>,
    ds: DeepseekConfig,
) -> Result<ModelConfig> {
    if ds.qk_rope_head_dim == 0 || !ds.qk_rope_head_dim.is_multiple_of(2) {
        return Err(RuntimeError::Config(format!(
            "qk_rope_head_dim {} must be even and positive",
            ds.qk_rope_head_dim
        )));
    }
    if let Some(m) = &moe {
        if ds.n_group > 1 && (!m.n_experts.is_multiple_of(ds.n_group) || ds.topk_group > ds.n_group)
        {
            return Err(RuntimeError::Config(format!(
                "{} experts cannot be split in {} groups with {} used",
                m.n_experts, ds.n_group, ds.topk_group
            )));
        }
    }
    Ok(ModelConfig {
        model_type,
        family: Family::Deepseek,
        hidden_size,
        n_heads,
        n_kv_heads: n_heads,
        head_dim: ds.qk_nope_head_dim + ds.qk_rope_head_dim,
        intermediate_size,
        n_layers,
        vocab_size,
        rms_norm_eps,
        rope: Rope {
            theta,
            freq_factors: None,
            linear_factor: 1.0,
            // MLA applies its own YaRN table (see `Mla`).
            yarn: None,
        },
        rope_local: None,
        tie_word_embeddings,
        qk_norm: false,
        sliding_window: None,
        layer_sliding: vec![false; n_layers],
        attn_scale,
        final_logit_softcap: None,
        moe,
        hybrid: None,
        deepseek: Some(ds),
    })
}

/// A `deepseek2` GGUF file's keys, interpreted as llama.cpp 0.3.36 does (including its
/// YaRN attention factor and the `yarn_log_multiplier / 0.1` of its deepseek2 loader).
pub fn gguf_config(f: &GgufFile) -> Result<ModelConfig> {
    let path = f.path().display().to_string();
    let err = |m: String| RuntimeError::Config(format!("{path}: {m}"));
    let key = |k: &str| format!("deepseek2.{k}");
    let uint = |k: &str| -> Option<usize> {
        match f.get(&key(k))? {
            pajamas_gguf::Value::Array(a) => (0..a.len())
                .filter_map(|i| a.get(i)?.as_uint())
                .max()
                .map(|v| v as usize),
            v => v.as_uint().map(|v| v as usize),
        }
    };
    let need = |k: &str| uint(k).ok_or_else(|| err(format!("missing {}", key(k))));
    let float = |k: &str| f.get(&key(k)).and_then(|v| v.as_float());
    let k_mla = need("attention.key_length_mla").map_err(|_| {
        err("no attention.key_length_mla: a legacy deepseek2 file without MLA sizes (unsplit attn_kv_b) is not supported by the runtime".into())
    })?;
    let v_mla = need("attention.value_length_mla")?;
    let rope_dim = need("rope.dimension_count")?;
    if k_mla <= rope_dim {
        return Err(err(format!(
            "key_length_mla {k_mla} leaves no non-rope part next to {rope_dim} rope dims"
        )));
    }
    let n_layers = need("block_count")?;
    let embd = f
        .tensor("token_embd.weight")
        .ok_or_else(|| err("missing tensor token_embd.weight".into()))?;
    let n_experts = uint("expert_count").unwrap_or(0);
    let moe = if n_experts > 0 {
        let w = need("expert_feed_forward_length")?;
        Some(MoeConfig {
            n_experts,
            top_k: need("expert_used_count")?,
            expert_ffn: w,
            norm_topk_prob: matches!(
                f.get(&key("expert_weights_norm")),
                Some(pajamas_gguf::Value::Bool(true))
            ),
            shared_ffn: uint("expert_shared_count")
                .filter(|n| *n > 0)
                .map(|n| n * w),
            sigmoid_scale: None,
        })
    } else {
        None
    };
    let dk = k_mla as f64;
    let mut att_scale = 1.0 / dk.sqrt();
    let (mut yarn, mut rope_mscale) = (None, 1.0);
    if f.get_str(&key("rope.scaling.type")) == Some("yarn") {
        let factor = float("rope.scaling.factor")
            .filter(|x| *x > 0.0)
            .ok_or_else(|| err("yarn rope scaling without rope.scaling.factor".into()))?;
        let log_mul = float("rope.scaling.yarn_log_multiplier").unwrap_or(0.0) / 0.1;
        // llama_context: yarn_attn_factor, then cancelled by ggml's own (1 + 0.1 ln f).
        let attn_factor = if log_mul != 0.0 {
            let m = if log_mul != 1.0 { log_mul } else { 1.0 };
            mscale(factor, m) / mscale(factor, log_mul)
        } else {
            mscale(factor, 1.0)
        } / (1.0 + 0.1 * factor.ln());
        let org = attn_factor * (1.0 + 0.1 * factor.ln());
        rope_mscale = org;
        let m = org * (1.0 + 0.1 * log_mul * factor.ln());
        att_scale = m * m / dk.sqrt();
        yarn = Some(Yarn {
            factor,
            original_context: uint("rope.scaling.original_context_length")
                .or(uint("context_length"))
                .unwrap_or(4096) as f64,
            beta_fast: float("rope.scaling.yarn_beta_fast").unwrap_or(32.0),
            beta_slow: float("rope.scaling.yarn_beta_slow").unwrap_or(1.0),
        });
    }
    let ds = DeepseekConfig {
        q_lora_rank: uint("attention.q_lora_rank").filter(|r| *r > 0),
        kv_lora_rank: need("attention.kv_lora_rank")?,
        qk_nope_head_dim: k_mla - rope_dim,
        qk_rope_head_dim: rope_dim,
        v_head_dim: v_mla,
        first_dense: uint("leading_dense_block_count").unwrap_or(0),
        // llama.cpp's default gating for deepseek2 files without the key: softmax.
        sigmoid: uint("expert_gating_func") == Some(2),
        n_group: uint("expert_group_count").unwrap_or(1).max(1),
        topk_group: uint("expert_group_used_count").unwrap_or(1).max(1),
        routed_scale: float("expert_weights_scale")
            .filter(|x| *x != 0.0)
            .unwrap_or(1.0) as f32,
        yarn,
        rope_mscale: rope_mscale as f32,
    };
    finish(
        "deepseek_v3".into(),
        need("embedding_length")?,
        need("attention.head_count")?,
        n_layers,
        embd.dims.get(1).copied().unwrap_or(0) as usize,
        need("feed_forward_length")?,
        float("attention.layer_norm_rms_epsilon").unwrap_or(1e-6) as f32,
        float("rope.freq_base").unwrap_or(10000.0),
        f.tensor("output.weight").is_none(),
        att_scale as f32,
        moe,
        ds,
    )
}

/// Interleaved-pair rotations `[n x rope/2]` at positions `0..n`, with YaRN as ggml's
/// `rope_yarn` computes it.
pub fn rope_table(n: usize, theta: f64, ds: &DeepseekConfig) -> (Vec<f32>, Vec<f32>) {
    let d = ds.qk_rope_head_dim;
    let half = d / 2;
    let base: Vec<f64> = (0..half)
        .map(|i| theta.powf(-((2 * i) as f64) / d as f64))
        .collect();
    let inv: Vec<f64> = match &ds.yarn {
        None => base,
        Some(y) => {
            let corr = |rot: f64| {
                d as f64 * (y.original_context / (rot * 2.0 * std::f64::consts::PI)).ln()
                    / (2.0 * theta.ln())
            };
            let low = corr(y.beta_fast).floor().max(0.0);
            let high = corr(y.beta_slow).ceil().min(d as f64 - 1.0);
            base.iter()
                .enumerate()
                .map(|(i, &extrap)| {
                    let t = ((i as f64 - low) / (high - low).max(0.001)).clamp(0.0, 1.0);
                    let ramp = 1.0 - t; // 1: keep the original frequency
                    extrap / y.factor * (1.0 - ramp) + extrap * ramp
                })
                .collect()
        }
    };
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for p in 0..n {
        for &f in &inv {
            let a = p as f64 * f;
            cos.push((a.cos() * ds.rope_mscale as f64) as f32);
            sin.push((a.sin() * ds.rope_mscale as f64) as f32);
        }
    }
    (cos, sin)
}

/// Rotates pairs `(2i, 2i+1)` of each `dim`-wide slice at `offset` in every
/// `stride`-wide block of a row (one block per head).
fn rope_pairs(
    x: &mut [f32],
    row: usize,
    stride: usize,
    offset: usize,
    dim: usize,
    cos: &[f32],
    sin: &[f32],
) {
    let half = dim / 2;
    for (p, r) in x.chunks_mut(row).enumerate() {
        let (c, s) = (
            &cos[p * half..(p + 1) * half],
            &sin[p * half..(p + 1) * half],
        );
        for head in r.chunks_mut(stride) {
            let v = &mut head[offset..offset + dim];
            for i in 0..half {
                let (a, b) = (v[2 * i], v[2 * i + 1]);
                v[2 * i] = a * c[i] - b * s[i];
                v[2 * i + 1] = b * c[i] + a * s[i];
            }
        }
    }
}

/// One layer's MLA projections.
#[derive(Debug, Clone)]
pub struct Mla {
    /// `q_a_proj` and `q_a_layernorm`; `None` without a query LoRA.
    pub q_a: Option<(Linear, Vec<f32>)>,
    /// `q_b_proj`, or `q_proj` without a query LoRA.
    pub q_b: Linear,
    pub kv_a: Linear,
    pub kv_a_norm: Vec<f32>,
    /// Per head, the key half of `kv_b_proj` transposed (`[kv_lora x nope]`, llama.cpp's
    /// `attn_k_b`): it takes a query's non-rope part into the latent space.
    pub k_b: Vec<Linear>,
    /// Per head, the value half of `kv_b_proj` (`[v x kv_lora]`, `attn_v_b`).
    pub v_b: Vec<Linear>,
    /// Names under which the hook sees the inputs of `k_b` / `v_b`
    /// (`self_attn.k_b_proj.weight`, `self_attn.v_b_proj.weight`: not HF tensors).
    pub k_b_tensor: String,
    pub v_b_tensor: String,
    pub o: Linear,
}

impl Mla {
    pub fn load(src: &dyn WeightSource, p: &str, c: &ModelConfig) -> Result<Self> {
        let ds = c.deepseek.as_ref().expect("a DeepSeek config");
        let (h, nh) = (c.hidden_size, c.n_heads);
        let (r, rope) = (ds.kv_lora_rank, ds.qk_rope_head_dim);
        let (nope, v) = (ds.qk_nope_head_dim, ds.v_head_dim);
        let qk = nope + rope;
        let (q_a, q_b) = match ds.q_lora_rank {
            Some(q) => (
                Some((
                    Linear::load(src, &format!("{p}q_a_proj"), q, h)?,
                    read_checked(src, &format!("{p}q_a_layernorm.weight"), &[q])?,
                )),
                Linear::load(src, &format!("{p}q_b_proj"), nh * qk, q)?,
            ),
            None => (None, Linear::load(src, &format!("{p}q_proj"), nh * qk, h)?),
        };
        let kv_b_name = format!("{p}kv_b_proj.weight");
        let kv_b = read_checked(src, &kv_b_name, &[nh * (nope + v), r])?;
        let act = |half: &str| {
            src.stored_type(&format!("{p}{half}.weight"))
                .and_then(crate::act_quant::ActQuant::for_weight)
        };
        let (mut k_b, mut v_b) = (Vec::with_capacity(nh), Vec::with_capacity(nh));
        for head in kv_b.chunks((nope + v) * r) {
            let mut kt = Vec::with_capacity(r * nope);
            for col in 0..r {
                kt.extend((0..nope).map(|i| head[i * r + col]));
            }
            k_b.push(Linear::from_weight(
                kv_b_name.clone(),
                kt,
                r,
                nope,
                act("k_b_proj"),
            ));
            v_b.push(Linear::from_weight(
                kv_b_name.clone(),
                head[nope * r..].to_vec(),
                v,
                r,
                act("v_b_proj"),
            ));
        }
        Ok(Mla {
            q_a,
            q_b,
            kv_a: Linear::load(src, &format!("{p}kv_a_proj_with_mqa"), r + rope, h)?,
            kv_a_norm: read_checked(src, &format!("{p}kv_a_layernorm.weight"), &[r])?,
            k_b,
            v_b,
            k_b_tensor: format!("{p}k_b_proj.weight"),
            v_b_tensor: format!("{p}v_b_proj.weight"),
            o: Linear::load(src, &format!("{p}o_proj"), h, nh * v)?,
        })
    }

    /// The attention output (after `o_proj`) for `a` `[n x hidden]`, in llama.cpp's
    /// absorbed form: each head's query `[k_b q_nope | rope(q_pe)]` against the shared
    /// key `[norm(latent) | rope(k_pe)]` (one KV head), the latent as the value, then
    /// `v_b` per head. `f16`: llama.cpp's f16 KV cache and products.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        layer: usize,
        a: &[f32],
        n: usize,
        c: &ModelConfig,
        hook: &mut dyn LinearHook,
        conv: bool,
        f16: bool,
    ) -> Vec<f32> {
        let ds = c.deepseek.as_ref().expect("a DeepSeek config");
        let nh = c.n_heads;
        let (nope, rope, vd, r) = (
            ds.qk_nope_head_dim,
            ds.qk_rope_head_dim,
            ds.v_head_dim,
            ds.kv_lora_rank,
        );
        let eps = c.rms_norm_eps;
        let mut q = match &self.q_a {
            Some((q_a, norm)) => {
                let mut t = q_a.apply(layer, "q_a_proj", a, n, hook, conv);
                ops::rms_norm_inplace(&mut t, norm, eps);
                self.q_b.apply(layer, "q_b_proj", &t, n, hook, conv)
            }
            None => self.q_b.apply(layer, "q_proj", a, n, hook, conv),
        };
        let mut ckv = self
            .kv_a
            .apply(layer, "kv_a_proj_with_mqa", a, n, hook, conv);
        let (cos, sin) = rope_table(n, c.rope.theta, ds);
        let qk = nope + rope;
        rope_pairs(&mut q, nh * qk, qk, nope, rope, &cos, &sin);
        rope_pairs(&mut ckv, r + rope, r + rope, r, rope, &cos, &sin);
        let hd = r + rope;
        // The shared key [latent | k_pe] and value [latent | 0].
        let mut kf = vec![0.0f32; n * hd];
        let mut vf = vec![0.0f32; n * hd];
        for t in 0..n {
            let row = &ckv[t * hd..(t + 1) * hd];
            let k = &mut kf[t * hd..(t + 1) * hd];
            k.copy_from_slice(row);
            ops::rms_norm_inplace(&mut k[..r], &self.kv_a_norm, eps);
            vf[t * hd..t * hd + r].copy_from_slice(&k[..r]);
        }
        // The hook sees each half's input for all heads at once, head-major
        // (`[n x (H * nope)]`, `[n x (H * kv_lora)]`), as llama-imatrix records the 3-D
        // attn_k_b / attn_v_b.
        let all_nope: Vec<f32> = q
            .chunks(qk)
            .flat_map(|head| head[..nope].iter().copied())
            .collect();
        hook.before_linear(&LinearInput {
            layer,
            name: "k_b_proj",
            tensor: &self.k_b_tensor,
            data: &all_nope,
            n_tokens: n,
            in_features: nh * nope,
        });
        drop(all_nope);
        let mut qf = vec![0.0f32; n * nh * hd];
        let mut q_nope = vec![0.0f32; n * nope];
        for (hh, k_b) in self.k_b.iter().enumerate() {
            for t in 0..n {
                let src = (t * nh + hh) * qk;
                q_nope[t * nope..(t + 1) * nope].copy_from_slice(&q[src..src + nope]);
            }
            let absorbed = k_b.apply(layer, "k_b_proj", &q_nope, n, &mut NoHook, conv);
            for t in 0..n {
                let dst = (t * nh + hh) * hd;
                qf[dst..dst + r].copy_from_slice(&absorbed[t * r..(t + 1) * r]);
                let src = (t * nh + hh) * qk + nope;
                qf[dst + r..dst + hd].copy_from_slice(&q[src..src + rope]);
            }
        }
        drop((q, ckv, q_nope));
        let mut out = vec![0.0f32; n * nh * hd];
        ops::attention(
            &qf,
            &kf,
            &vf,
            AttentionShape {
                n_tokens: n,
                n_heads: nh,
                n_kv_heads: 1,
                head_dim: hd,
                window: None,
                scale: c.attn_scale,
                f16,
            },
            &mut out,
        );
        drop((qf, kf, vf));
        let all_lat: Vec<f32> = out
            .chunks(hd)
            .flat_map(|head| head[..r].iter().copied())
            .collect();
        hook.before_linear(&LinearInput {
            layer,
            name: "v_b_proj",
            tensor: &self.v_b_tensor,
            data: &all_lat,
            n_tokens: n,
            in_features: nh * r,
        });
        drop(all_lat);
        let mut heads = vec![0.0f32; n * nh * vd];
        let mut lat = vec![0.0f32; n * r];
        for (hh, v_b) in self.v_b.iter().enumerate() {
            for t in 0..n {
                let src = (t * nh + hh) * hd;
                lat[t * r..(t + 1) * r].copy_from_slice(&out[src..src + r]);
            }
            let y = v_b.apply(layer, "v_b_proj", &lat, n, &mut NoHook, conv);
            for t in 0..n {
                let dst = (t * nh + hh) * vd;
                heads[dst..dst + vd].copy_from_slice(&y[t * vd..(t + 1) * vd]);
            }
        }
        self.o.apply(layer, "o_proj", &heads, n, hook, conv)
    }
}

/// DeepSeek's router as llama.cpp's `build_moe_ffn` computes it.
#[derive(Debug, Clone)]
pub struct GroupedRouter {
    /// `e_score_correction_bias`: added to the scores to choose, not to weigh.
    pub bias: Option<Vec<f32>>,
    pub sigmoid: bool,
    pub n_group: usize,
    pub topk_group: usize,
    pub scale: f32,
}

impl GroupedRouter {
    /// Scores (sigmoid or softmax), `score + bias` to choose: only experts of the
    /// `topk_group` groups with the largest sums of their two best choices compete;
    /// the `top_k` largest (ties to the lower index) are weighted by their unbiased
    /// scores, renormalised when `norm`, times `scale`.
    pub fn route(&self, logits: &[f32], n_experts: usize, top_k: usize, norm: bool) -> Vec<Route> {
        let mut out = Vec::with_capacity(logits.len() / n_experts.max(1) * top_k);
        let per_group = n_experts / self.n_group.max(1);
        for row in logits.chunks_exact(n_experts) {
            let scores: Vec<f32> = if self.sigmoid {
                row.iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect()
            } else {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let e: Vec<f32> = row.iter().map(|&v| (v - max).exp()).collect();
                let s: f32 = e.iter().sum();
                e.into_iter().map(|v| v / s).collect()
            };
            let mut choice: Vec<f32> = match &self.bias {
                Some(b) => scores.iter().zip(b).map(|(s, b)| s + b).collect(),
                None => scores.clone(),
            };
            if self.n_group > 1 {
                let group_score: Vec<f32> = choice
                    .chunks(per_group)
                    .map(|g| {
                        let mut v = g.to_vec();
                        v.sort_by(|a, b| b.total_cmp(a));
                        v.iter().take(2).sum()
                    })
                    .collect();
                let mut groups: Vec<usize> = (0..self.n_group).collect();
                groups.sort_by(|&a, &b| group_score[b].total_cmp(&group_score[a]).then(a.cmp(&b)));
                for &g in &groups[self.topk_group..] {
                    choice[g * per_group..(g + 1) * per_group].fill(f32::NEG_INFINITY);
                }
            }
            let mut order: Vec<usize> = (0..n_experts).collect();
            order.sort_by(|&a, &b| choice[b].total_cmp(&choice[a]).then(a.cmp(&b)));
            let chosen = &order[..top_k];
            let total: f32 = if norm {
                chosen
                    .iter()
                    .map(|&e| scores[e])
                    .sum::<f32>()
                    .max(6.103_515_6e-5)
            } else {
                1.0
            };
            out.extend(chosen.iter().map(|&e| (e, scores[e] / total * self.scale)));
        }
        out
    }
}

/// Layer `layer`'s MoE block: router `mlp.gate` (+ `e_score_correction_bias`), experts
/// `mlp.experts.E.*`, shared experts `mlp.shared_experts.*`.
pub fn load_moe(
    src: &dyn WeightSource,
    layer: usize,
    c: &ModelConfig,
    moe: &MoeConfig,
) -> Result<MoeWeights> {
    let ds = c.deepseek.as_ref().expect("a DeepSeek config");
    let h = c.hidden_size;
    let p = format!("model.layers.{layer}.mlp.");
    let bias_name = format!("{p}gate.e_score_correction_bias");
    let bias = if src.has_tensor(&bias_name) {
        Some(read_checked(src, &bias_name, &[moe.n_experts])?)
    } else {
        None
    };
    let experts = (0..moe.n_experts)
        .map(|e| Mlp::load(src, &format!("{p}experts.{e}."), moe.expert_ffn, h))
        .collect::<Result<Vec<_>>>()?;
    let shared = match moe.shared_ffn {
        Some(w) => Some((Mlp::load(src, &format!("{p}shared_experts."), w, h)?, None)),
        None => None,
    };
    Ok(MoeWeights {
        router: Linear::load(src, &format!("{p}gate"), moe.n_experts, h)?,
        experts,
        shared,
        top_k: moe.top_k,
        norm_topk_prob: moe.norm_topk_prob,
        sigmoid: None,
        grouped: Some(GroupedRouter {
            bias,
            sigmoid: ds.sigmoid,
            n_group: ds.n_group,
            topk_group: ds.topk_group,
            scale: ds.routed_scale,
        }),
    })
}

/// Loads a DeepSeek model: MLA in every layer, a dense MLP in the first
/// `first_dense` layers, MoE blocks after them.
pub fn load_model(src: &dyn WeightSource, c: ModelConfig) -> Result<Model> {
    let ds = c.deepseek.clone().expect("a DeepSeek config");
    let h = c.hidden_size;
    let embed: std::sync::Arc<[f32]> =
        read_checked(src, "model.embed_tokens.weight", &[c.vocab_size, h])?.into();
    let mut layers = Vec::with_capacity(c.n_layers);
    for i in 0..c.n_layers {
        let p = format!("model.layers.{i}.");
        let ffn = match &c.moe {
            Some(moe) if i >= ds.first_dense => Ffn::Moe(Box::new(load_moe(src, i, &c, moe)?)),
            _ => Ffn::Dense(Box::new(Mlp::load(
                src,
                &format!("{p}mlp."),
                c.intermediate_size,
                h,
            )?)),
        };
        let empty = |n: &str| Linear::empty(format!("{p}self_attn.{n}.weight"));
        layers.push(LayerWeights {
            attn_norm: read_checked(src, &format!("{p}input_layernorm.weight"), &[h])?,
            q_proj: empty("q_proj"),
            k_proj: empty("k_proj"),
            v_proj: empty("v_proj"),
            o_proj: empty("o_proj"),
            q_norm: None,
            k_norm: None,
            attn_post_norm: None,
            sinks: None,
            ffn_norm: read_checked(src, &format!("{p}post_attention_layernorm.weight"), &[h])?,
            ffn,
            ffn_post_norm: None,
            mamba: None,
            mla: Some(Box::new(Mla::load(src, &format!("{p}self_attn."), &c)?)),
        });
    }
    let norm = read_checked(src, "model.norm.weight", &[h])?;
    let lm_head = if src.has_tensor("lm_head.weight") {
        Linear::load(src, "lm_head", c.vocab_size, h)?
    } else {
        Linear::from_weight(
            "model.embed_tokens.weight".into(),
            embed.to_vec(),
            c.vocab_size,
            h,
            src.stored_type("model.embed_tokens.weight")
                .and_then(crate::act_quant::ActQuant::for_weight),
        )
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_routing() {
        // 4 experts in 2 groups, 1 group used, top-2, sigmoid: logits chosen so that the
        // bias moves the choice to group 1 while the weights stay the unbiased scores.
        let r = GroupedRouter {
            bias: Some(vec![0.0, 0.0, 0.5, 0.5]),
            sigmoid: true,
            n_group: 2,
            topk_group: 1,
            scale: 2.0,
        };
        let logits = [1.0f32, 1.0, 0.0, -0.5];
        let routes = r.route(&logits, 4, 2, true);
        assert_eq!(routes.iter().map(|x| x.0).collect::<Vec<_>>(), [2, 3]);
        let s = |x: f32| 1.0 / (1.0 + (-x).exp());
        let total = s(0.0) + s(-0.5);
        assert!((routes[0].1 - s(0.0) / total * 2.0).abs() < 1e-6);
        // Without the bias, group 0 wins.
        let r2 = GroupedRouter { bias: None, ..r };
        let routes = r2.route(&logits, 4, 2, false);
        assert_eq!(routes.iter().map(|x| x.0).collect::<Vec<_>>(), [0, 1]);
        assert!((routes[0].1 - s(1.0) * 2.0).abs() < 1e-6);
    }

    #[test]
    fn published_v3_config() {
        let cfg: Value = serde_json::from_str(include_str!(
            "../../../data/configs/deepseek-ai__DeepSeek-V3/config.json"
        ))
        .unwrap();
        let c = ModelConfig::from_hf_config(&cfg).unwrap();
        let ds = c.deepseek.as_ref().unwrap();
        assert_eq!((ds.q_lora_rank, ds.kv_lora_rank), (Some(1536), 512));
        assert_eq!((ds.n_group, ds.topk_group, ds.first_dense), (8, 4, 3));
        assert!(ds.sigmoid && ds.yarn.is_some());
        assert_eq!(ds.routed_scale, 2.5);
        assert_eq!(c.moe.as_ref().unwrap().shared_ffn, Some(2048));
        // transformers 4's `rope_scaling` with `type: yarn`: scores scaled by mscale^2.
        let m = 1.0 + 0.1 * 40f64.ln();
        assert!((c.attn_scale as f64 - m * m / 192f64.sqrt()).abs() < 1e-6);
        assert_eq!(ds.rope_mscale, 1.0);
    }

    #[test]
    fn yarn_keeps_high_frequencies() {
        let ds = DeepseekConfig {
            q_lora_rank: None,
            kv_lora_rank: 4,
            qk_nope_head_dim: 4,
            qk_rope_head_dim: 16,
            v_head_dim: 4,
            first_dense: 0,
            sigmoid: true,
            n_group: 1,
            topk_group: 1,
            routed_scale: 1.0,
            yarn: Some(Yarn {
                factor: 40.0,
                original_context: 4096.0,
                beta_fast: 32.0,
                beta_slow: 1.0,
            }),
            rope_mscale: 1.0,
        };
        let (c, s) = rope_table(2, 10000.0, &ds);
        // Position 1, pair 0: frequency 1 (extrapolated, unchanged).
        assert!((c[8] - 1f32.cos()).abs() < 1e-6 && (s[8] - 1f32.sin()).abs() < 1e-6);
        // The lowest frequency is interpolated: divided by the factor.
        let f7 = 10000f64.powf(-14.0 / 16.0) / 40.0;
        assert!((s[15] as f64 - f7.sin()).abs() < 1e-6);
    }
}
