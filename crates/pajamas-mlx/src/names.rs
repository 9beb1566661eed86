//! HuggingFace tensor names -> mlx-lm parameter paths, and which modules mlx-lm can
//! quantize.
//!
//! mlx-lm builds its model class from config.json's `model_type` and loads the
//! checkpoint with `strict=True` after the class's `sanitize`, so every tensor we write
//! must be a parameter of that class and every parameter must be written. For the dense
//! families we convert, mlx-lm's parameter names are HF's names, except:
//!
//! - `*.self_attn.rotary_emb.inv_freq` (precomputed rope frequencies some checkpoints
//!   carry) is not a parameter: llama/qwen2 `sanitize` drop it; we never write it.
//! - a tied `lm_head.weight` is dropped (`sanitize` pops it; the model reuses the
//!   embedding through `as_linear`).
//! - `model_type: "gemma3"` (Gemma3ForConditionalGeneration) loads `mlx_lm.models.gemma3`,
//!   whose text model sits under `language_model.` (`language_model.model.layers.0...`,
//!   `language_model.lm_head`) and whose `sanitize` drops `vision_tower` and
//!   `multi_modal_projector`. Checkpoints spell the text weights
//!   `language_model.model.*` (transformers 4) or `model.language_model.*`
//!   (transformers 5); both map to the former. `model_type: "gemma3_text"`
//!   (Gemma3ForCausalLM) keeps HF's names.
//! - `mistral` loads `mlx_lm.models.llama` (mlx-lm's MODEL_REMAPPING).

use serde::Serialize;
use serde_json::Value;

use crate::MlxError;

/// The mlx-lm model class a checkpoint loads as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MlxFamily {
    /// `mlx_lm.models.llama`: llama, mistral (SmolLM2, Llama 3...).
    Llama,
    Qwen2,
    Qwen3,
    /// `mlx_lm.models.gemma3_text`: Gemma3ForCausalLM (text only).
    Gemma3Text,
    /// `mlx_lm.models.gemma3`: the multimodal wrapper, text model under `language_model.`.
    Gemma3,
    /// MoE families: per-expert HF matrices are stacked into `switch_mlp.*` (`[E, out, in]`)
    /// as their `sanitize` does.
    Mixtral,
    Qwen2Moe,
    Qwen3Moe,
    /// `mlx_lm.models.granitemoehybrid` with experts (Granite 4.0-H Tiny/Small): Mamba-2
    /// and attention layers; the stacked `block_sparse_moe.input_linear` is split into
    /// `switch_mlp.{gate,up}_proj` and `output_linear` becomes `switch_mlp.down_proj`, as
    /// its `sanitize` does; the shared MLP keeps its fused `shared_mlp.input_linear`.
    GraniteMoeHybrid,
    /// The same class without experts (`num_local_experts: 0`, Granite 4.0-H Micro): its
    /// `sanitize` turns `shared_mlp.{input,output}_linear` into `mlp.{gate,up,down}_proj`.
    GraniteMoeHybridDense,
    /// `mlx_lm.models.deepseek_v3`: MLA with `kv_b_proj` split into `embed_q` /
    /// `unembed_out`, stacked experts, an unquantized `MoEGate` router (see
    /// [`crate::deepseek`]).
    DeepseekV3,
    /// `mlx_lm.models.deepseek_v2`: as DeepSeek-V3, but `kv_b_proj` stays one Linear.
    DeepseekV2,
    /// `mlx_lm.models.gpt_oss`: biased `SwitchGLU` experts written de-interleaved (see
    /// `crate::gpt_oss`), attention sinks.
    GptOss,
    /// `mlx_lm.models.nemotron_h`: `backbone.*` names, experts stacked into
    /// `switch_mlp.fc1` / `fc2` (see [`crate::nemotron_h`]).
    NemotronH,
}

/// Model types we write MLX checkpoints for.
pub const MLX_MODEL_TYPES: &[&str] = &[
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma3_text",
    "gemma3",
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "granitemoehybrid",
    "deepseek_v3",
    "deepseek_v2",
    "gpt_oss",
    "nemotron_h",
];

impl MlxFamily {
    /// The family of a config.json, by its top-level `model_type` (what mlx-lm reads).
    pub fn from_config(config: &Value) -> Result<MlxFamily, MlxError> {
        let mt = config
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let experts = config
            .get("num_local_experts")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if mt == "granitemoehybrid" && experts == 0 {
            return Ok(MlxFamily::GraniteMoeHybridDense);
        }
        Self::from_model_type(mt)
    }

    pub fn from_model_type(model_type: &str) -> Result<MlxFamily, MlxError> {
        Ok(match model_type {
            "llama" | "mistral" => MlxFamily::Llama,
            "qwen2" => MlxFamily::Qwen2,
            "qwen3" => MlxFamily::Qwen3,
            "gemma3_text" => MlxFamily::Gemma3Text,
            "gemma3" => MlxFamily::Gemma3,
            "mixtral" => MlxFamily::Mixtral,
            "qwen2_moe" => MlxFamily::Qwen2Moe,
            "qwen3_moe" => MlxFamily::Qwen3Moe,
            "granitemoehybrid" => MlxFamily::GraniteMoeHybrid,
            "deepseek_v3" => MlxFamily::DeepseekV3,
            "deepseek_v2" => MlxFamily::DeepseekV2,
            "gpt_oss" => MlxFamily::GptOss,
            "nemotron_h" => MlxFamily::NemotronH,
            other => return Err(MlxError::UnsupportedModelType(other.to_string())),
        })
    }

    /// The mlx-lm module that implements it (`mlx_lm.models.<name>`).
    pub fn mlx_lm_module(self) -> &'static str {
        match self {
            MlxFamily::Llama => "llama",
            MlxFamily::Qwen2 => "qwen2",
            MlxFamily::Qwen3 => "qwen3",
            MlxFamily::Gemma3Text => "gemma3_text",
            MlxFamily::Gemma3 => "gemma3",
            MlxFamily::Mixtral => "mixtral",
            MlxFamily::Qwen2Moe => "qwen2_moe",
            MlxFamily::Qwen3Moe => "qwen3_moe",
            MlxFamily::GraniteMoeHybrid | MlxFamily::GraniteMoeHybridDense => "granitemoehybrid",
            MlxFamily::DeepseekV3 => "deepseek_v3",
            MlxFamily::DeepseekV2 => "deepseek_v2",
            MlxFamily::GptOss => "gpt_oss",
            MlxFamily::NemotronH => "nemotron_h",
        }
    }

    /// Prefix of the text model's parameters.
    fn prefix(self) -> &'static str {
        match self {
            MlxFamily::Gemma3 => "language_model.",
            _ => "",
        }
    }

    /// Mixture-of-experts families (stacked `switch_mlp` experts).
    pub fn is_moe(self) -> bool {
        matches!(
            self,
            MlxFamily::Mixtral
                | MlxFamily::Qwen2Moe
                | MlxFamily::Qwen3Moe
                | MlxFamily::DeepseekV3
                | MlxFamily::DeepseekV2
        )
    }

    /// DeepSeek-V2/V3 (MLA, `MoEGate` routers).
    pub fn is_deepseek(self) -> bool {
        matches!(self, MlxFamily::DeepseekV3 | MlxFamily::DeepseekV2)
    }

    /// Whether mlx-lm's class reads `tie_word_embeddings` from the config (llama and
    /// qwen2 default it to true when absent, qwen3 requires it; gemma3 decides from the
    /// presence of `lm_head.weight`).
    pub fn reads_tie_flag(self) -> bool {
        matches!(
            self,
            MlxFamily::Llama
                | MlxFamily::Qwen2
                | MlxFamily::Qwen3
                | MlxFamily::Mixtral
                | MlxFamily::Qwen2Moe
                | MlxFamily::Qwen3Moe
                | MlxFamily::GraniteMoeHybrid
                | MlxFamily::GraniteMoeHybridDense
        )
    }
}

/// Where one HF tensor goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    /// Written under this mlx-lm parameter name.
    Keep(String),
    /// Slice `expert` of the stacked parameter `name` (`...switch_mlp.gate_proj.weight`).
    Expert { name: String, expert: usize },
    /// A fused gate+up matrix (`[.., 2n, in]`, gate rows first) written as two
    /// parameters: rows `[0, n)` of every stacked matrix under `first`, rows `[n, 2n)`
    /// under `second`.
    Split { first: String, second: String },
    /// Rows (weights) or columns (biases) `k, k + n, ...` of the source under `names[k]`
    /// (`n = names.len()`), every stacked matrix transposed first when `transpose`
    /// (gpt-oss's interleaved `gate_up_proj`, see `crate::gpt_oss`).
    Strided { names: Vec<String>, transpose: bool },
    /// Not written, for this reason.
    Drop(&'static str),
}

/// What kind of mlx-lm module a parameter belongs to; only `Linear` and `Embedding`
/// have `to_quantized`, so only they are ever quantized (mlx's `nn.quantize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleKind {
    Embedding,
    Linear,
    Norm,
    /// A module mlx never quantizes other than a norm (Mamba's `conv1d`) or a bare
    /// parameter (Mamba's `A_log`, `D`, `dt_bias`): kept in the model dtype.
    Other,
}

/// Leaves of a decoder layer that mlx-lm's classes for our families define.
const LAYER_LEAVES: &[(&str, ModuleKind)] = &[
    ("self_attn.q_proj", ModuleKind::Linear),
    ("self_attn.k_proj", ModuleKind::Linear),
    ("self_attn.v_proj", ModuleKind::Linear),
    ("self_attn.o_proj", ModuleKind::Linear),
    ("self_attn.q_norm", ModuleKind::Norm),
    ("self_attn.k_norm", ModuleKind::Norm),
    ("mlp.gate_proj", ModuleKind::Linear),
    ("mlp.up_proj", ModuleKind::Linear),
    ("mlp.down_proj", ModuleKind::Linear),
    // MoE: routers, stacked experts, Qwen2-MoE's shared expert and its gate.
    ("mlp.gate", ModuleKind::Linear),
    ("block_sparse_moe.gate", ModuleKind::Linear),
    ("mlp.switch_mlp.gate_proj", ModuleKind::Linear),
    ("mlp.switch_mlp.up_proj", ModuleKind::Linear),
    ("mlp.switch_mlp.down_proj", ModuleKind::Linear),
    ("block_sparse_moe.switch_mlp.gate_proj", ModuleKind::Linear),
    ("block_sparse_moe.switch_mlp.up_proj", ModuleKind::Linear),
    ("block_sparse_moe.switch_mlp.down_proj", ModuleKind::Linear),
    ("mlp.shared_expert.gate_proj", ModuleKind::Linear),
    ("mlp.shared_expert.up_proj", ModuleKind::Linear),
    ("mlp.shared_expert.down_proj", ModuleKind::Linear),
    ("mlp.shared_expert_gate", ModuleKind::Linear),
    // Granite 4.0-H: Mamba-2 mixer, router, shared MLP.
    ("mamba.in_proj", ModuleKind::Linear),
    ("mamba.out_proj", ModuleKind::Linear),
    ("mamba.conv1d", ModuleKind::Other),
    ("mamba.norm", ModuleKind::Norm),
    ("block_sparse_moe.router.layer", ModuleKind::Linear),
    ("shared_mlp.input_linear", ModuleKind::Linear),
    ("shared_mlp.output_linear", ModuleKind::Linear),
    // DeepSeek's MLA (`embed_q` / `unembed_out`: MultiLinear, quantizable) and shared
    // experts.
    ("self_attn.q_a_proj", ModuleKind::Linear),
    ("self_attn.q_a_layernorm", ModuleKind::Norm),
    ("self_attn.q_b_proj", ModuleKind::Linear),
    ("self_attn.kv_a_proj_with_mqa", ModuleKind::Linear),
    ("self_attn.kv_a_layernorm", ModuleKind::Norm),
    ("self_attn.kv_b_proj", ModuleKind::Linear),
    ("self_attn.embed_q", ModuleKind::Linear),
    ("self_attn.unembed_out", ModuleKind::Linear),
    ("mlp.shared_experts.gate_proj", ModuleKind::Linear),
    ("mlp.shared_experts.up_proj", ModuleKind::Linear),
    ("mlp.shared_experts.down_proj", ModuleKind::Linear),
    // gpt-oss: biased router and SwitchGLU experts.
    ("mlp.router", ModuleKind::Linear),
    ("mlp.experts.gate_proj", ModuleKind::Linear),
    ("mlp.experts.up_proj", ModuleKind::Linear),
    ("mlp.experts.down_proj", ModuleKind::Linear),
    ("input_layernorm", ModuleKind::Norm),
    ("post_attention_layernorm", ModuleKind::Norm),
    ("pre_feedforward_layernorm", ModuleKind::Norm),
    ("post_feedforward_layernorm", ModuleKind::Norm),
];

/// The text-model name of an HF tensor (`model.layers.0...`, `lm_head.weight`), or why
/// it is dropped, for the multimodal Gemma 3 wrapper.
fn gemma3_text_name(hf: &str) -> Result<String, &'static str> {
    for vision in [
        "vision_tower.",
        "model.vision_tower.",
        "multi_modal_projector.",
        "model.multi_modal_projector.",
    ] {
        if hf.starts_with(vision) {
            return Err("vision tower / projector: mlx-lm's gemma3 text model drops it (sanitize)");
        }
    }
    if let Some(rest) = hf.strip_prefix("model.language_model.") {
        return Ok(format!("model.{rest}"));
    }
    if let Some(rest) = hf.strip_prefix("language_model.") {
        return Ok(rest.to_string());
    }
    Ok(hf.to_string())
}

/// Maps one HF tensor name. `tied`: the model ties its output head to the embedding.
/// An unknown name is an error: mlx-lm would refuse to load a file that has it.
pub fn map_name(hf: &str, family: MlxFamily, tied: bool) -> Result<Mapped, MlxError> {
    if family == MlxFamily::NemotronH {
        return crate::nemotron_h::map_name(hf).ok_or_else(|| MlxError::UnknownTensor {
            name: hf.to_string(),
            family: family.mlx_lm_module(),
        });
    }
    let text = if family == MlxFamily::Gemma3 {
        match gemma3_text_name(hf) {
            Ok(t) => t,
            Err(why) => return Ok(Mapped::Drop(why)),
        }
    } else {
        hf.to_string()
    };
    if family.is_moe() {
        if let Some((name, expert)) = expert_slot(&text) {
            return Ok(Mapped::Expert { name, expert });
        }
    }
    if let Some(m) = granite_ffn(&text, family) {
        return Ok(m);
    }
    if family.is_deepseek() {
        if let Some(m) = crate::deepseek::map_name(&text, family == MlxFamily::DeepseekV3) {
            return Ok(m);
        }
    }
    if family == MlxFamily::GptOss {
        if let Some(m) = crate::gpt_oss::map_expert(&text) {
            return Ok(m);
        }
    }
    if text.ends_with(".rotary_emb.inv_freq") {
        return Ok(Mapped::Drop(
            "precomputed rope frequencies: not a parameter in mlx-lm (sanitize drops it)",
        ));
    }
    if text == "lm_head.weight" && tied {
        return Ok(Mapped::Drop(
            "tied to the embedding: mlx-lm reuses embed_tokens as the output head",
        ));
    }
    if module_kind_in(family, &text).is_none() {
        return Err(MlxError::UnknownTensor {
            name: hf.to_string(),
            family: family.mlx_lm_module(),
        });
    }
    Ok(Mapped::Keep(format!("{}{text}", family.prefix())))
}

/// Granite 4.0-H's FFN tensors that mlx-lm's `sanitize` renames or splits.
fn granite_ffn(hf: &str, family: MlxFamily) -> Option<Mapped> {
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, leaf) = rest.split_once('.')?;
    layer.parse::<u32>().ok()?;
    let l = |n: &str| format!("model.layers.{layer}.{n}");
    match (family, leaf) {
        (MlxFamily::GraniteMoeHybrid, "block_sparse_moe.input_linear.weight") => {
            Some(Mapped::Split {
                first: l("block_sparse_moe.switch_mlp.gate_proj.weight"),
                second: l("block_sparse_moe.switch_mlp.up_proj.weight"),
            })
        }
        (MlxFamily::GraniteMoeHybrid, "block_sparse_moe.output_linear.weight") => Some(
            Mapped::Keep(l("block_sparse_moe.switch_mlp.down_proj.weight")),
        ),
        (MlxFamily::GraniteMoeHybridDense, "shared_mlp.input_linear.weight") => {
            Some(Mapped::Split {
                first: l("mlp.gate_proj.weight"),
                second: l("mlp.up_proj.weight"),
            })
        }
        (MlxFamily::GraniteMoeHybridDense, "shared_mlp.output_linear.weight") => {
            Some(Mapped::Keep(l("mlp.down_proj.weight")))
        }
        _ => None,
    }
}

/// A per-expert HF matrix (`model.layers.L.mlp.experts.E.up_proj.weight`, Mixtral's
/// `block_sparse_moe.experts.E.w3.weight`): the stacked `switch_mlp` parameter and `E`.
fn expert_slot(hf: &str) -> Option<(String, usize)> {
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, leaf) = rest.split_once('.')?;
    layer.parse::<u32>().ok()?;
    let (block, leaf) = if let Some(l) = leaf.strip_prefix("mlp.experts.") {
        ("mlp", l)
    } else {
        (
            "block_sparse_moe",
            leaf.strip_prefix("block_sparse_moe.experts.")?,
        )
    };
    let (expert, proj) = leaf.split_once('.')?;
    let expert: usize = expert.parse().ok()?;
    let proj = match proj {
        "gate_proj.weight" | "w1.weight" => "gate_proj",
        "up_proj.weight" | "w3.weight" => "up_proj",
        "down_proj.weight" | "w2.weight" => "down_proj",
        _ => return None,
    };
    Some((
        format!("model.layers.{layer}.{block}.switch_mlp.{proj}.weight"),
        expert,
    ))
}

/// The kind of module an mlx-lm parameter name belongs to, `None` when the name is not
/// a parameter of our families' classes. Accepts names with or without the Gemma 3
/// wrapper's `language_model.` prefix.
pub fn module_kind(mlx_name: &str) -> Option<ModuleKind> {
    let name = mlx_name.strip_prefix("language_model.").unwrap_or(mlx_name);
    if name.starts_with("backbone.") {
        return crate::nemotron_h::module_kind(name);
    }
    match name {
        "model.embed_tokens.weight" => return Some(ModuleKind::Embedding),
        "model.norm.weight" => return Some(ModuleKind::Norm),
        "lm_head.weight" => return Some(ModuleKind::Linear),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, leaf) = rest.split_once('.')?;
    layer.parse::<u32>().ok()?;
    let (module, part) = leaf.rsplit_once('.')?;
    // Mamba-2's bare parameters (no `.weight`).
    if module == "mamba" && matches!(part, "A_log" | "D" | "dt_bias") {
        return Some(ModuleKind::Other);
    }
    // gpt-oss's attention sinks, a bare parameter.
    if module == "self_attn" && part == "sinks" {
        return Some(ModuleKind::Other);
    }
    let kind = LAYER_LEAVES
        .iter()
        .find(|(l, _)| *l == module)
        .map(|&(_, k)| k)?;
    match (kind, part) {
        (_, "weight") => Some(kind),
        // qwen2's q/k/v projections carry biases (attention_bias / mlp_bias elsewhere).
        (ModuleKind::Linear | ModuleKind::Other, "bias") => Some(kind),
        _ => None,
    }
}

/// [`module_kind`] for one family: DeepSeek's router `mlp.gate` is a `MoEGate` (a bare
/// weight, and V3's `e_score_correction_bias`), not a Linear.
pub fn module_kind_in(family: MlxFamily, mlx_name: &str) -> Option<ModuleKind> {
    if family.is_deepseek() {
        if let Some(stem) = mlx_name
            .strip_suffix(".mlp.gate.weight")
            .or_else(|| mlx_name.strip_suffix(".mlp.gate.e_score_correction_bias"))
        {
            return stem
                .strip_prefix("model.layers.")
                .and_then(|l| l.parse::<u32>().ok())
                .map(|_| ModuleKind::Other);
        }
    }
    module_kind(mlx_name)
}

/// The module path of a parameter name (`...q_proj.weight` -> `...q_proj`).
pub fn module_path(mlx_name: &str) -> &str {
    mlx_name
        .rsplit_once('.')
        .map(|(m, _)| m)
        .unwrap_or(mlx_name)
}

/// The decoder layer a module path belongs to (`model.layers.7.mlp.down_proj` -> 7;
/// Nemotron-H's `backbone.layers.7.mixer.down_proj` too).
pub fn layer_index(path: &str) -> Option<u64> {
    let name = path.strip_prefix("language_model.").unwrap_or(path);
    let rest = name
        .strip_prefix("model.layers.")
        .or_else(|| name.strip_prefix("backbone.layers."))?;
    rest.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(hf: &str, f: MlxFamily, tied: bool) -> String {
        match map_name(hf, f, tied).unwrap() {
            Mapped::Keep(n) => n,
            Mapped::Drop(why) => panic!("{hf} dropped: {why}"),
            Mapped::Expert { name, expert } => panic!("{hf} is expert {expert} of {name}"),
            Mapped::Split { first, second } => panic!("{hf} is split into {first}, {second}"),
            Mapped::Strided { names, .. } => panic!("{hf} is strided into {names:?}"),
        }
    }

    #[test]
    fn experts_are_slices_of_switch_mlp() {
        let e = |hf: &str, f| match map_name(hf, f, false).unwrap() {
            Mapped::Expert { name, expert } => (name, expert),
            other => panic!("{hf}: {other:?}"),
        };
        assert_eq!(
            e(
                "model.layers.2.mlp.experts.7.down_proj.weight",
                MlxFamily::Qwen3Moe
            ),
            ("model.layers.2.mlp.switch_mlp.down_proj.weight".into(), 7)
        );
        assert_eq!(
            e(
                "model.layers.0.block_sparse_moe.experts.3.w3.weight",
                MlxFamily::Mixtral
            ),
            (
                "model.layers.0.block_sparse_moe.switch_mlp.up_proj.weight".into(),
                3
            )
        );
        assert_eq!(
            keep(
                "model.layers.1.mlp.shared_expert_gate.weight",
                MlxFamily::Qwen2Moe,
                false
            ),
            "model.layers.1.mlp.shared_expert_gate.weight"
        );
    }

    #[test]
    fn families_from_model_type() {
        let f = |mt: &str| MlxFamily::from_config(&serde_json::json!({ "model_type": mt }));
        assert_eq!(f("mistral").unwrap(), MlxFamily::Llama);
        assert_eq!(f("gemma3").unwrap(), MlxFamily::Gemma3);
        assert_eq!(f("mixtral").unwrap(), MlxFamily::Mixtral);
        assert_eq!(f("deepseek_v3").unwrap(), MlxFamily::DeepseekV3);
        assert_eq!(f("deepseek_v2").unwrap(), MlxFamily::DeepseekV2);
        assert!(matches!(
            f("deepseek_v32"),
            Err(MlxError::UnsupportedModelType(_))
        ));
    }

    #[test]
    fn dense_names_are_hf_names() {
        for f in [
            MlxFamily::Llama,
            MlxFamily::Qwen2,
            MlxFamily::Qwen3,
            MlxFamily::Gemma3Text,
        ] {
            for n in [
                "model.embed_tokens.weight",
                "model.layers.3.self_attn.q_proj.weight",
                "model.layers.3.self_attn.q_proj.bias",
                "model.layers.0.mlp.down_proj.weight",
                "model.layers.0.post_feedforward_layernorm.weight",
                "model.norm.weight",
                "lm_head.weight",
            ] {
                assert_eq!(keep(n, f, false), n);
            }
        }
    }

    #[test]
    fn dropped_tensors() {
        let f = MlxFamily::Llama;
        assert!(matches!(
            map_name("model.layers.0.self_attn.rotary_emb.inv_freq", f, false).unwrap(),
            Mapped::Drop(_)
        ));
        assert!(matches!(
            map_name("lm_head.weight", f, true).unwrap(),
            Mapped::Drop(_)
        ));
        assert!(matches!(
            map_name("model.layers.0.mlp.experts.0.w1.weight", f, false),
            Err(MlxError::UnknownTensor { .. })
        ));
        assert!(matches!(
            map_name("model.layers.0.input_layernorm.bias", f, false),
            Err(MlxError::UnknownTensor { .. })
        ));
    }

    #[test]
    fn gemma3_wrapper_paths() {
        let g = MlxFamily::Gemma3;
        assert_eq!(
            keep(
                "model.language_model.layers.1.self_attn.k_norm.weight",
                g,
                true
            ),
            "language_model.model.layers.1.self_attn.k_norm.weight"
        );
        assert_eq!(
            keep("language_model.model.embed_tokens.weight", g, true),
            "language_model.model.embed_tokens.weight"
        );
        assert_eq!(
            keep("lm_head.weight", g, false),
            "language_model.lm_head.weight"
        );
        for v in [
            "model.vision_tower.vision_model.embeddings.patch_embedding.weight",
            "vision_tower.vision_model.post_layernorm.bias",
            "model.multi_modal_projector.mm_input_projection_weight",
        ] {
            assert!(
                matches!(map_name(v, g, true).unwrap(), Mapped::Drop(_)),
                "{v}"
            );
        }
    }

    #[test]
    fn kinds_paths_layers() {
        assert_eq!(
            module_kind("model.embed_tokens.weight"),
            Some(ModuleKind::Embedding)
        );
        assert_eq!(
            module_kind("language_model.model.layers.2.mlp.up_proj.weight"),
            Some(ModuleKind::Linear)
        );
        assert_eq!(
            module_kind("model.layers.2.input_layernorm.weight"),
            Some(ModuleKind::Norm)
        );
        assert_eq!(
            module_path("model.layers.2.mlp.up_proj.weight"),
            "model.layers.2.mlp.up_proj"
        );
        assert_eq!(
            layer_index("language_model.model.layers.12.mlp.up_proj"),
            Some(12)
        );
        assert_eq!(layer_index("lm_head"), None);
    }

    #[test]
    fn granite_hybrid_layout() {
        let moe = MlxFamily::GraniteMoeHybrid;
        assert_eq!(
            map_name(
                "model.layers.1.block_sparse_moe.input_linear.weight",
                moe,
                true
            )
            .unwrap(),
            Mapped::Split {
                first: "model.layers.1.block_sparse_moe.switch_mlp.gate_proj.weight".into(),
                second: "model.layers.1.block_sparse_moe.switch_mlp.up_proj.weight".into(),
            }
        );
        assert_eq!(
            keep(
                "model.layers.1.block_sparse_moe.output_linear.weight",
                moe,
                true
            ),
            "model.layers.1.block_sparse_moe.switch_mlp.down_proj.weight"
        );
        assert_eq!(
            keep("model.layers.1.shared_mlp.input_linear.weight", moe, true),
            "model.layers.1.shared_mlp.input_linear.weight"
        );
        let dense = MlxFamily::GraniteMoeHybridDense;
        assert_eq!(
            keep(
                "model.layers.0.shared_mlp.output_linear.weight",
                dense,
                true
            ),
            "model.layers.0.mlp.down_proj.weight"
        );
        assert_eq!(
            module_kind("model.layers.0.mamba.A_log"),
            Some(ModuleKind::Other)
        );
        assert_eq!(
            module_kind("model.layers.0.mamba.conv1d.bias"),
            Some(ModuleKind::Other)
        );
        assert_eq!(
            module_kind("model.layers.0.mamba.in_proj.weight"),
            Some(ModuleKind::Linear)
        );
        let cfg = serde_json::json!({"model_type": "granitemoehybrid", "num_local_experts": 0});
        assert_eq!(MlxFamily::from_config(&cfg).unwrap(), dense);
    }
}
