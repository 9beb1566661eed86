//! The weights and the forward pass.

use std::path::Path;
use std::sync::Arc;

use crate::act_quant::ActQuant;
use crate::config::{BlockKind, Family, ModelConfig};
use crate::error::{Result, RuntimeError};
use crate::hook::{LinearHook, LinearInput, NoHook};
use crate::mamba::Mamba2;
use crate::mlx_source::{is_mlx_dir, MlxSource};
use crate::moe::MoeWeights;
use crate::ops::{self, AttentionShape};
use crate::weights::{GgufSource, HfSource, WeightSource};

/// One linear layer, `y = x W^T + b`, with `W` `[out_features x in_features]` row-major.
#[derive(Debug, Clone)]
pub struct Linear {
    /// HF name of the weight tensor.
    pub tensor: String,
    pub weight: Arc<[f32]>,
    pub bias: Option<Vec<f32>>,
    pub out_features: usize,
    pub in_features: usize,
    /// How llama.cpp converts this layer's input before the product (GGUF weights);
    /// applied while [`Model::llama_cpp_activations`] is set.
    pub act_quant: Option<ActQuant>,
}

impl Linear {
    pub(crate) fn load(src: &dyn WeightSource, name: &str, out: usize, inp: usize) -> Result<Self> {
        let weight = read_checked(src, &format!("{name}.weight"), &[out, inp])?;
        let bias_name = format!("{name}.bias");
        let bias = if src.has_tensor(&bias_name) {
            Some(read_checked(src, &bias_name, &[out])?)
        } else {
            None
        };
        let act_quant = src
            .stored_type(&format!("{name}.weight"))
            .and_then(ActQuant::for_weight);
        Ok(Linear {
            tensor: format!("{name}.weight"),
            weight: weight.into(),
            bias,
            out_features: out,
            in_features: inp,
            act_quant,
        })
    }

    /// A linear layer from weights already in memory (`[out x inp]`, no bias), e.g. one
    /// half of a fused gate+up matrix.
    pub(crate) fn from_weight(
        tensor: String,
        weight: Vec<f32>,
        out: usize,
        inp: usize,
        act_quant: Option<ActQuant>,
    ) -> Self {
        debug_assert_eq!(weight.len(), out * inp);
        Linear {
            tensor,
            weight: weight.into(),
            bias: None,
            out_features: out,
            in_features: inp,
            act_quant,
        }
    }

    /// A placeholder for a projection the layer does not have (the attention
    /// projections of a Mamba-2 layer): 0 x 0, never applied.
    pub(crate) fn empty(tensor: String) -> Self {
        Self::from_weight(tensor, Vec::new(), 0, 0, None)
    }

    /// `x` `[n x in_features]` -> `[n x out_features]`, reporting `x` to the hook first.
    pub(crate) fn apply(
        &self,
        layer: usize,
        name: &'static str,
        x: &[f32],
        n: usize,
        hook: &mut dyn LinearHook,
        convert: bool,
    ) -> Vec<f32> {
        hook.before_linear(&LinearInput {
            layer,
            name,
            tensor: &self.tensor,
            data: x,
            n_tokens: n,
            in_features: self.in_features,
        });
        let converted;
        let x = match self.act_quant.filter(|_| convert) {
            Some(q) => {
                let mut c = x.to_vec();
                q.round_trip(&mut c, self.in_features);
                converted = c;
                &converted[..]
            }
            None => x,
        };
        let mut y = vec![0.0f32; n * self.out_features];
        ops::matmul_wt(
            x,
            n,
            self.in_features,
            &self.weight,
            self.out_features,
            &mut y,
        );
        if let Some(b) = &self.bias {
            ops::add_bias(&mut y, b);
        }
        y
    }
}

/// A gated MLP: `down(act(gate(x)) * up(x))`, SwiGLU (GeGLU with tanh GELU for Gemma).
#[derive(Debug, Clone)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
    /// GeGLU (Gemma) instead of SwiGLU.
    pub gelu: bool,
    /// Nemotron-H's ungated `down(relu(up(x))^2)`; `gate_proj` is then an empty
    /// placeholder.
    pub relu2: bool,
}

impl Mlp {
    /// `{prefix}gate_proj`, `{prefix}up_proj`, `{prefix}down_proj`.
    pub(crate) fn load(
        src: &dyn WeightSource,
        prefix: &str,
        inter: usize,
        h: usize,
    ) -> Result<Self> {
        Self::load_named(
            src,
            [
                &format!("{prefix}gate_proj"),
                &format!("{prefix}up_proj"),
                &format!("{prefix}down_proj"),
            ],
            inter,
            h,
        )
    }

    /// The three projections by name (Mixtral's experts call them w1, w3, w2).
    pub(crate) fn load_named(
        src: &dyn WeightSource,
        [gate, up, down]: [&str; 3],
        inter: usize,
        h: usize,
    ) -> Result<Self> {
        Ok(Mlp {
            gate_proj: Linear::load(src, gate, inter, h)?,
            up_proj: Linear::load(src, up, inter, h)?,
            down_proj: Linear::load(src, down, h, inter)?,
            gelu: false,
            relu2: false,
        })
    }

    /// Nemotron-H's relu^2 MLP: `{prefix}up_proj`, `{prefix}down_proj`.
    pub(crate) fn load_relu2(
        src: &dyn WeightSource,
        prefix: &str,
        inter: usize,
        h: usize,
    ) -> Result<Self> {
        Ok(Mlp {
            gate_proj: Linear::empty(format!("{prefix}gate_proj.weight")),
            up_proj: Linear::load(src, &format!("{prefix}up_proj"), inter, h)?,
            down_proj: Linear::load(src, &format!("{prefix}down_proj"), h, inter)?,
            gelu: false,
            relu2: true,
        })
    }

    /// `x` `[n x hidden]` -> `[n x hidden]`.
    pub(crate) fn forward(
        &self,
        layer: usize,
        x: &[f32],
        n: usize,
        hook: &mut dyn LinearHook,
        convert: bool,
    ) -> Vec<f32> {
        if self.relu2 {
            let mut u = self.up_proj.apply(layer, "up_proj", x, n, hook, convert);
            u.iter_mut().for_each(|v| {
                let r = v.max(0.0);
                *v = r * r;
            });
            return self
                .down_proj
                .apply(layer, "down_proj", &u, n, hook, convert);
        }
        let mut g = self
            .gate_proj
            .apply(layer, "gate_proj", x, n, hook, convert);
        let u = self.up_proj.apply(layer, "up_proj", x, n, hook, convert);
        if self.gelu {
            ops::gelu_tanh_mul(&mut g, &u);
        } else {
            ops::silu_mul(&mut g, &u);
        }
        drop(u);
        self.down_proj
            .apply(layer, "down_proj", &g, n, hook, convert)
    }
}

/// A layer's feed-forward block.
#[derive(Debug, Clone)]
pub enum Ffn {
    Dense(Box<Mlp>),
    Moe(Box<MoeWeights>),
    /// gpt-oss's experts (biased, clamped SwiGLU, softmax over the top-k logits).
    GptOss(Box<crate::gpt_oss::GptOssMoe>),
    /// No feed-forward block (Nemotron-H's Mamba-2 and attention blocks).
    None,
}

/// The weights of one decoder layer. Norm weights are stored as the factor the
/// normalised activations are multiplied by (for Gemma: `1 + w`).
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// Norm before attention (`input_layernorm`).
    pub attn_norm: Vec<f32>,
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    /// Per-head RMSNorm weights `[head_dim]` (qwen3, gemma3).
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    /// Norm of the attention output before the residual add (Gemma 3).
    pub attn_post_norm: Option<Vec<f32>>,
    /// Learned attention sinks, one logit per query head (gpt-oss).
    pub sinks: Option<Vec<f32>>,
    /// Norm before the MLP (`post_attention_layernorm`; Gemma 3:
    /// `pre_feedforward_layernorm`).
    pub ffn_norm: Vec<f32>,
    pub ffn: Ffn,
    /// Norm of the MLP output before the residual add (Gemma 3).
    pub ffn_post_norm: Option<Vec<f32>>,
    /// A Mamba-2 layer's mixer (hybrid models); when set it replaces attention, and the
    /// attention projections above are empty placeholders.
    pub mamba: Option<Box<Mamba2>>,
    /// DeepSeek's multi-head latent attention; when set it replaces the attention
    /// projections above (empty placeholders).
    pub mla: Option<Box<crate::deepseek::Mla>>,
}

/// A dense decoder held in f32.
#[derive(Debug, Clone)]
pub struct Model {
    pub config: ModelConfig,
    /// `[vocab x hidden]`.
    pub embed_tokens: Arc<[f32]>,
    pub layers: Vec<LayerWeights>,
    pub norm: Vec<f32>,
    /// The output head; shares `embed_tokens` when the embeddings are tied.
    pub lm_head: Linear,
    /// Convert linear inputs as llama.cpp's CPU backend does for each GGUF weight type
    /// (see [`ActQuant`]; on by default, a no-op for HF weights). Off: f32 activations,
    /// so that only the weights' quantization error is measured.
    pub llama_cpp_activations: bool,
    /// Round queries, keys, values and attention probabilities to f16 as llama.cpp's
    /// f16 KV cache and f16 products do (GGUF sources; applied with
    /// `llama_cpp_activations`).
    pub f16_attention: bool,
}

pub(crate) fn read_checked(
    src: &dyn WeightSource,
    name: &str,
    expected: &[usize],
) -> Result<Vec<f32>> {
    if !src.has_tensor(name) {
        return Err(RuntimeError::MissingTensor(name.to_string()));
    }
    let (shape, data) = src.read_tensor(name)?;
    if shape != expected || data.len() != expected.iter().product::<usize>() {
        return Err(RuntimeError::Shape {
            name: name.to_string(),
            found: shape,
            expected: expected.to_vec(),
        });
    }
    Ok(data)
}

impl Model {
    /// Opens an HF folder and loads every weight as f32.
    pub fn from_hf_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load(&HfSource::open(dir)?)
    }

    /// Opens one of our (or llama.cpp's) GGUF files and dequantizes every weight.
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self> {
        Self::load(&GgufSource::open(path)?)
    }

    /// Opens a quantized MLX checkpoint folder and dequantizes every weight.
    pub fn from_mlx_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load(&MlxSource::open(dir)?)
    }

    /// Opens an HF folder, a `.gguf` file or an MLX checkpoint (a folder whose
    /// `config.json` has a `quantization` block).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_file() && path.extension().is_some_and(|e| e == "gguf") {
            Self::from_gguf(path)
        } else if is_mlx_dir(path) {
            Self::from_mlx_dir(path)
        } else {
            Self::from_hf_dir(path)
        }
    }

    /// Nemotron-H: `backbone.*` names, one mixer per block.
    fn load_nemotron(src: &dyn WeightSource, c: ModelConfig) -> Result<Self> {
        let h = c.hidden_size;
        let hy = c.hybrid.clone().expect("Nemotron-H has a hybrid config");
        let embed: Arc<[f32]> =
            read_checked(src, "backbone.embeddings.weight", &[c.vocab_size, h])?.into();
        let mut layers = Vec::with_capacity(c.n_layers);
        for (i, kind) in hy.blocks.iter().enumerate() {
            let p = format!("backbone.layers.{i}.mixer.");
            let attention = *kind == BlockKind::Attention;
            let attn = |n: &str, out: usize, inp: usize| {
                let name = format!("{p}{n}");
                if attention {
                    Linear::load(src, &name, out, inp)
                } else {
                    Ok(Linear::empty(name))
                }
            };
            let ffn = match (kind, &c.moe) {
                (BlockKind::Mlp, _) => {
                    Ffn::Dense(Box::new(Mlp::load_relu2(src, &p, c.intermediate_size, h)?))
                }
                (BlockKind::Moe, Some(moe)) => {
                    Ffn::Moe(Box::new(MoeWeights::load_nemotron(src, i, h, moe)?))
                }
                (BlockKind::Moe, None) => {
                    return Err(RuntimeError::Config(format!(
                        "block {i} is MoE but the config has no experts"
                    )))
                }
                _ => Ffn::None,
            };
            layers.push(LayerWeights {
                attn_norm: read_checked(src, &format!("backbone.layers.{i}.norm.weight"), &[h])?,
                q_proj: attn("q_proj", c.q_dim(), h)?,
                k_proj: attn("k_proj", c.kv_dim(), h)?,
                v_proj: attn("v_proj", c.kv_dim(), h)?,
                o_proj: attn("o_proj", h, c.q_dim())?,
                q_norm: None,
                k_norm: None,
                attn_post_norm: None,
                sinks: None,
                ffn_norm: Vec::new(),
                ffn,
                ffn_post_norm: None,
                mamba: if *kind == BlockKind::Mamba {
                    Some(Box::new(Mamba2::load(src, &p, h, &hy)?))
                } else {
                    None
                },
                mla: None,
            });
        }
        let norm = read_checked(src, "backbone.norm_f.weight", &[h])?;
        let lm_head = if src.has_tensor("lm_head.weight") {
            Linear::load(src, "lm_head", c.vocab_size, h)?
        } else {
            Linear::from_weight(
                "backbone.embeddings.weight".into(),
                embed.to_vec(),
                c.vocab_size,
                h,
                None,
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

    /// Loads every weight from `src`.
    pub fn load(src: &dyn WeightSource) -> Result<Self> {
        let c = src.config()?;
        if c.family == Family::NemotronH {
            return Self::load_nemotron(src, c);
        }
        if c.family == Family::Deepseek {
            return crate::deepseek::load_model(src, c);
        }
        if c.family == Family::GptOss {
            return crate::gpt_oss::load_model(src, c);
        }
        let (h, hd, inter) = (c.hidden_size, c.head_dim, c.intermediate_size);
        let gemma = c.is_gemma();
        let add_one = gemma && !src.norms_include_one();
        let norm = |name: &str, len: usize| -> Result<Vec<f32>> {
            let mut w = read_checked(src, name, &[len])?;
            if add_one {
                w.iter_mut().for_each(|v| *v += 1.0);
            }
            Ok(w)
        };
        let embed: Arc<[f32]> =
            read_checked(src, "model.embed_tokens.weight", &[c.vocab_size, h])?.into();
        let mut layers = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let p = format!("model.layers.{i}.");
            let mamba = match &c.hybrid {
                Some(hy) if hy.mamba_layers[i] => {
                    Some(Box::new(Mamba2::load(src, &format!("{p}mamba."), h, hy)?))
                }
                _ => None,
            };
            let attn = |n: &str, out: usize, inp: usize| {
                let name = format!("{p}self_attn.{n}");
                if mamba.is_some() {
                    Ok(Linear::empty(name))
                } else {
                    Linear::load(src, &name, out, inp)
                }
            };
            // A layer with a router is MoE (Qwen's `mlp_only_layers` keep a dense MLP).
            let ffn = match &c.moe {
                // Granite 4.0-H's HF layout: stacked experts and a fused shared MLP (its
                // GGUF files have the per-name layout of the arm below).
                Some(moe)
                    if src.has_tensor(&format!("{p}block_sparse_moe.router.layer.weight")) =>
                {
                    Ffn::Moe(Box::new(MoeWeights::load_granite(src, i, h, moe)?))
                }
                Some(moe)
                    if src.has_tensor(&format!("{p}mlp.gate.weight"))
                        || src.has_tensor(&format!("{p}block_sparse_moe.gate.weight")) =>
                {
                    let mixtral = src.has_tensor(&format!("{p}block_sparse_moe.gate.weight"));
                    Ffn::Moe(Box::new(MoeWeights::load(src, i, h, moe, mixtral)?))
                }
                _ if c.hybrid.is_some() => {
                    Ffn::Dense(Box::new(granite_shared_mlp(src, &p, inter, h)?))
                }
                _ => {
                    let mut mlp = Mlp::load(src, &format!("{p}mlp."), inter, h)?;
                    mlp.gelu = gemma;
                    Ffn::Dense(Box::new(mlp))
                }
            };
            let opt_norm = |present: bool, n: &str, len: usize| -> Result<Option<Vec<f32>>> {
                if present {
                    Ok(Some(norm(&format!("{p}{n}.weight"), len)?))
                } else {
                    Ok(None)
                }
            };
            let (attn_post_norm, ffn_norm) = if gemma {
                (
                    opt_norm(true, "post_attention_layernorm", h)?,
                    norm(&format!("{p}pre_feedforward_layernorm.weight"), h)?,
                )
            } else {
                (
                    None,
                    norm(&format!("{p}post_attention_layernorm.weight"), h)?,
                )
            };
            layers.push(LayerWeights {
                attn_norm: norm(&format!("{p}input_layernorm.weight"), h)?,
                q_proj: attn("q_proj", c.q_dim(), h)?,
                k_proj: attn("k_proj", c.kv_dim(), h)?,
                v_proj: attn("v_proj", c.kv_dim(), h)?,
                o_proj: attn("o_proj", h, c.q_dim())?,
                q_norm: opt_norm(c.qk_norm, "self_attn.q_norm", hd)?,
                k_norm: opt_norm(c.qk_norm, "self_attn.k_norm", hd)?,
                attn_post_norm,
                sinks: None,
                ffn_norm,
                ffn,
                ffn_post_norm: opt_norm(gemma, "post_feedforward_layernorm", h)?,
                mamba,
                mla: None,
            });
        }
        let final_norm = norm("model.norm.weight", h)?;
        // Some tied checkpoints still carry lm_head.weight; use it when present.
        let lm_head = if src.has_tensor("lm_head.weight") || !c.tie_word_embeddings {
            Linear::load(src, "lm_head", c.vocab_size, h)?
        } else {
            Linear {
                tensor: "model.embed_tokens.weight".to_string(),
                weight: embed.clone(),
                bias: None,
                out_features: c.vocab_size,
                in_features: h,
                act_quant: src
                    .stored_type("model.embed_tokens.weight")
                    .and_then(ActQuant::for_weight),
            }
        };
        Ok(Model {
            config: c,
            embed_tokens: embed,
            layers,
            norm: final_norm,
            lm_head,
            llama_cpp_activations: true,
            f16_attention: src.llama_cpp_attention(),
        })
    }

    /// Logits `[n_tokens x vocab]` for `tokens` at positions `0..n_tokens`.
    pub fn forward(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.forward_rows(tokens, 0, &mut NoHook)
    }

    /// [`Model::forward`], reporting every linear layer's input to `hook`.
    pub fn forward_with_hook(&self, tokens: &[u32], hook: &mut dyn LinearHook) -> Result<Vec<f32>> {
        self.forward_rows(tokens, 0, hook)
    }

    /// Runs the whole sequence but computes the final norm and the head only for
    /// positions `first_row..n_tokens`: returns `[(n_tokens - first_row) x vocab]`. The
    /// hook sees the head's input for those rows only.
    pub fn forward_rows(
        &self,
        tokens: &[u32],
        first_row: usize,
        hook: &mut dyn LinearHook,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let n = tokens.len();
        if n == 0 {
            return Err(RuntimeError::Input("empty token sequence".into()));
        }
        if first_row >= n {
            return Err(RuntimeError::Input(format!(
                "first logits row {first_row} is past the {n} tokens"
            )));
        }
        let h = c.hidden_size;
        let mut x = Vec::with_capacity(n * h);
        for &t in tokens {
            let t = t as usize;
            if t >= c.vocab_size {
                return Err(RuntimeError::Input(format!(
                    "token id {t} out of range (vocab {})",
                    c.vocab_size
                )));
            }
            x.extend_from_slice(&self.embed_tokens[t * h..(t + 1) * h]);
        }
        if c.is_gemma() {
            // Gemma scales the embeddings by sqrt(hidden), rounded to the compute dtype.
            let scale = (h as f32).sqrt();
            x.iter_mut().for_each(|v| *v *= scale);
        }
        // Granite's multipliers (1 elsewhere); its hybrid attention has no positions.
        let (residual_mult, logits_div, use_rope) = match &c.hybrid {
            Some(hy) => {
                x.iter_mut().for_each(|v| *v *= hy.embedding_multiplier);
                (hy.residual_multiplier, hy.logits_scaling, false)
            }
            None => (1.0, 1.0, true),
        };
        let global = ops::RopeTable::new(n, c.head_dim, &c.rope);
        let local = c
            .rope_local
            .as_ref()
            .map(|r| ops::RopeTable::new(n, c.head_dim, r));
        let eps = c.rms_norm_eps;
        let conv = self.llama_cpp_activations;
        let mut a = vec![0.0f32; n * h];
        let mut attn_out = vec![0.0f32; n * c.q_dim()];
        for (li, l) in self.layers.iter().enumerate() {
            let sliding = c.layer_sliding.get(li).copied().unwrap_or(false);
            let rope = match (&local, sliding) {
                (Some(t), true) => t,
                _ => &global,
            };
            let shape = AttentionShape {
                n_tokens: n,
                n_heads: c.n_heads,
                n_kv_heads: c.n_kv_heads,
                head_dim: c.head_dim,
                window: if sliding { c.sliding_window } else { None },
                scale: c.attn_scale,
                f16: conv && self.f16_attention,
            };
            ops::rms_norm(&x, &l.attn_norm, eps, &mut a);
            if let Some(mla) = &l.mla {
                let o = mla.forward(li, &a, n, c, hook, conv, conv && self.f16_attention);
                ops::add_inplace(&mut x, &o);
                drop(o);
                self.ffn_block(li, l, &mut x, &mut a, n, residual_mult, hook, conv);
                continue;
            }
            if l.mamba.is_none() && l.q_proj.in_features == 0 {
                // Nemotron-H's MLP / MoE block: the FFN is the block's mixer.
                let d = match &l.ffn {
                    Ffn::Dense(mlp) => mlp.forward(li, &a, n, hook, conv),
                    Ffn::Moe(moe) => moe.forward(li, &a, n, h, hook, conv),
                    Ffn::GptOss(moe) => moe.forward(li, &a, n, h, hook, conv),
                    Ffn::None => unreachable!("a block with neither mixer nor FFN"),
                };
                ops::add_inplace(&mut x, &d);
                continue;
            }
            if let Some(m) = &l.mamba {
                let mut o = m.forward(li, &a, n, eps, hook, conv);
                if residual_mult != 1.0 {
                    o.iter_mut().for_each(|v| *v *= residual_mult);
                }
                ops::add_inplace(&mut x, &o);
                drop(o);
                self.ffn_block(li, l, &mut x, &mut a, n, residual_mult, hook, conv);
                continue;
            }
            let mut q = l.q_proj.apply(li, "q_proj", &a, n, hook, conv);
            let mut k = l.k_proj.apply(li, "k_proj", &a, n, hook, conv);
            let v = l.v_proj.apply(li, "v_proj", &a, n, hook, conv);
            if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                ops::rms_norm_inplace(&mut q, qn, eps);
                ops::rms_norm_inplace(&mut k, kn, eps);
            }
            if use_rope {
                rope.apply(&mut q, c.n_heads);
                rope.apply(&mut k, c.n_kv_heads);
            }
            ops::attention_with_sinks(&q, &k, &v, shape, l.sinks.as_deref(), &mut attn_out);
            drop((q, k, v));
            let mut o = l.o_proj.apply(li, "o_proj", &attn_out, n, hook, conv);
            if let Some(w) = &l.attn_post_norm {
                ops::rms_norm_inplace(&mut o, w, eps);
            }
            if residual_mult != 1.0 {
                o.iter_mut().for_each(|v| *v *= residual_mult);
            }
            ops::add_inplace(&mut x, &o);
            drop(o);
            self.ffn_block(li, l, &mut x, &mut a, n, residual_mult, hook, conv);
        }
        let rows = n - first_row;
        let mut fin = vec![0.0f32; rows * h];
        ops::rms_norm(&x[first_row * h..], &self.norm, eps, &mut fin);
        let mut logits = self
            .lm_head
            .apply(c.n_layers, "lm_head", &fin, rows, hook, conv);
        if let Some(cap) = c.final_logit_softcap {
            logits.iter_mut().for_each(|v| *v = (*v / cap).tanh() * cap);
        }
        if logits_div != 1.0 {
            logits.iter_mut().for_each(|v| *v /= logits_div);
        }
        Ok(logits)
    }

    /// The feed-forward half of a layer: norm, FFN, optional post-norm, scaled residual.
    #[allow(clippy::too_many_arguments)]
    fn ffn_block(
        &self,
        li: usize,
        l: &LayerWeights,
        x: &mut [f32],
        a: &mut [f32],
        n: usize,
        residual_mult: f32,
        hook: &mut dyn LinearHook,
        conv: bool,
    ) {
        let c = &self.config;
        if matches!(l.ffn, Ffn::None) {
            return;
        }
        ops::rms_norm(x, &l.ffn_norm, c.rms_norm_eps, a);
        let mut d = match &l.ffn {
            Ffn::Dense(mlp) => mlp.forward(li, a, n, hook, conv),
            Ffn::Moe(moe) => moe.forward(li, a, n, c.hidden_size, hook, conv),
            Ffn::GptOss(moe) => moe.forward(li, a, n, c.hidden_size, hook, conv),
            Ffn::None => return,
        };
        if let Some(w) = &l.ffn_post_norm {
            ops::rms_norm_inplace(&mut d, w, c.rms_norm_eps);
        }
        if residual_mult != 1.0 {
            d.iter_mut().for_each(|v| *v *= residual_mult);
        }
        ops::add_inplace(x, &d);
    }
}

/// Granite's dense `shared_mlp`: `input_linear` `[2I x hidden]` holds the gate rows, then
/// the up rows; `output_linear` is the down projection.
pub(crate) fn granite_shared_mlp(
    src: &dyn WeightSource,
    p: &str,
    inter: usize,
    h: usize,
) -> Result<Mlp> {
    // A GGUF file holds the halves as ffn_gate / ffn_up (the names of a llama MLP).
    if src.has_tensor(&format!("{p}mlp.gate_proj.weight")) {
        return Mlp::load(src, &format!("{p}mlp."), inter, h);
    }
    let name = format!("{p}shared_mlp.input_linear.weight");
    let fused = read_checked(src, &name, &[2 * inter, h])?;
    let act = src.stored_type(&name).and_then(ActQuant::for_weight);
    let (gate, up) = fused.split_at(inter * h);
    Ok(Mlp {
        gate_proj: Linear::from_weight(name.clone(), gate.to_vec(), inter, h, act),
        up_proj: Linear::from_weight(name, up.to_vec(), inter, h, act),
        down_proj: Linear::load(src, &format!("{p}shared_mlp.output_linear"), h, inter)?,
        gelu: false,
        relu2: false,
    })
}
