//! The MLX plan: for every tensor of the checkpoint, its mlx-lm name, whether it is
//! quantized (bits, group size) or kept in the model dtype, and why.
//!
//! Three ways to choose bits ([`MlxChoice`]):
//! - **Uniform**: every quantizable module at the same bits and group size
//!   (`mlx_lm.convert -q --q-bits B --q-group-size G`).
//! - **Recipe**: mlx-lm's mixed recipes (`--quant-predicate mixed_2_6|mixed_3_4|mixed_3_6|
//!   mixed_4_6`), reproduced from `mlx_lm/convert.py` (0.32.2): low bits everywhere, high
//!   bits on `v_proj` and `down_proj` of the `use_more_bits` layers (first and last
//!   eighth, every third layer between) and on `lm_head`.
//! - **Architecture-aware** (ours): base bits everywhere, then upgrades in order of how
//!   much each module's error costs the output, driven by the detected architecture: the
//!   output head (or the tied embedding that serves as one), the value projections (more
//!   of them when GQA shares each V head among 4 or more query heads), `down_proj` of the
//!   sensitive layers, then an untied embedding. Every upgrade must fit a budget of
//!   +0.3 bits per weight over uniform base bits; one that does not fit is tried one
//!   step lower, else left at base, and the reason says so.
//!
//! As in mlx-lm, a Linear or Embedding whose input size is not a multiple of the group
//! size stays in the model dtype; norms are never quantized.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use pajamas_arch::ArchitectureInfo;
use pajamas_model::Dtype;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::affine::{self, MlxDtype};
use crate::names::{self, layer_index, map_name, module_path, Mapped, MlxFamily, ModuleKind};
use crate::nemotron_h;
use crate::writer::OutputTensor;
use crate::MlxError;

/// mlx-lm's mixed-precision recipes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Recipe {
    #[serde(rename = "mixed_2_6")]
    Mixed2_6,
    #[serde(rename = "mixed_3_4")]
    Mixed3_4,
    #[serde(rename = "mixed_3_6")]
    Mixed3_6,
    #[serde(rename = "mixed_4_6")]
    Mixed4_6,
}

impl Recipe {
    pub const ALL: [Recipe; 4] = [
        Recipe::Mixed2_6,
        Recipe::Mixed3_4,
        Recipe::Mixed3_6,
        Recipe::Mixed4_6,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Recipe::Mixed2_6 => "mixed_2_6",
            Recipe::Mixed3_4 => "mixed_3_4",
            Recipe::Mixed3_6 => "mixed_3_6",
            Recipe::Mixed4_6 => "mixed_4_6",
        }
    }

    pub fn from_name(s: &str) -> Option<Recipe> {
        Recipe::ALL.into_iter().find(|r| r.name() == s)
    }

    pub fn low_bits(self) -> u32 {
        match self {
            Recipe::Mixed2_6 => 2,
            Recipe::Mixed3_4 | Recipe::Mixed3_6 => 3,
            Recipe::Mixed4_6 => 4,
        }
    }

    pub fn high_bits(self) -> u32 {
        match self {
            Recipe::Mixed3_4 => 4,
            _ => 6,
        }
    }
}

/// How bits are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MlxChoice {
    Uniform { bits: u32, group_size: usize },
    Recipe { recipe: Recipe, group_size: usize },
    ArchitectureAware { base_bits: u32, group_size: usize },
}

/// Extra bits per weight the architecture-aware plan may spend over uniform base bits.
pub const AWARE_BUDGET_BITS_PER_WEIGHT: f64 = 0.3;

impl MlxChoice {
    /// Architecture-aware at `base_bits` with the group size the detected strategy
    /// recommends (64 under 6B parameters, 128 above, smaller when it does not divide
    /// the layer widths; 64 when none does).
    pub fn architecture_aware(arch: &ArchitectureInfo, base_bits: u32) -> MlxChoice {
        let g = arch.recommend().group_size as usize;
        MlxChoice::ArchitectureAware {
            base_bits,
            group_size: if affine::GROUP_SIZES.contains(&g) {
                g
            } else {
                64
            },
        }
    }

    pub fn group_size(&self) -> usize {
        match *self {
            MlxChoice::Uniform { group_size, .. }
            | MlxChoice::Recipe { group_size, .. }
            | MlxChoice::ArchitectureAware { group_size, .. } => group_size,
        }
    }

    /// The global bits written to config.json (the low bits of a recipe).
    pub fn bits(&self) -> u32 {
        match *self {
            MlxChoice::Uniform { bits, .. } => bits,
            MlxChoice::Recipe { recipe, .. } => recipe.low_bits(),
            MlxChoice::ArchitectureAware { base_bits, .. } => base_bits,
        }
    }

    /// The output folder name: `4bit`, `3bit-mixed_3_6`, `4bit-aware`.
    pub fn dir_name(&self) -> String {
        match *self {
            MlxChoice::Uniform { bits, .. } => format!("{bits}bit"),
            MlxChoice::Recipe { recipe, .. } => {
                format!("{}bit-{}", recipe.low_bits(), recipe.name())
            }
            MlxChoice::ArchitectureAware { base_bits, .. } => format!("{base_bits}bit-aware"),
        }
    }

    fn label(&self) -> String {
        match *self {
            MlxChoice::Uniform { bits, group_size } => {
                format!("uniform {bits}-bit, group {group_size}")
            }
            MlxChoice::Recipe { recipe, group_size } => {
                format!("mlx-lm recipe {}, group {group_size}", recipe.name())
            }
            MlxChoice::ArchitectureAware {
                base_bits,
                group_size,
            } => {
                format!("architecture-aware, base {base_bits}-bit, group {group_size}")
            }
        }
    }
}

/// One tensor of the source checkpoint, as the plan needs it.
#[derive(Debug, Clone)]
pub struct SourceTensor {
    /// HF name.
    pub name: String,
    pub shape: Vec<u64>,
    pub dtype: Dtype,
}

/// Quantization of one module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QuantSpec {
    pub bits: u32,
    pub group_size: usize,
}

/// One tensor the MLX checkpoint holds (a quantized weight stands for its
/// `.weight`/`.scales`/`.biases` triple).
#[derive(Debug, Clone, Serialize)]
pub struct PlannedTensor {
    /// HF name it comes from.
    pub source: String,
    /// mlx-lm parameter name (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// mlx-lm module path (`model.layers.0.self_attn.q_proj`).
    pub module: String,
    pub kind: ModuleKind,
    /// Source shape (`[out, in]` for a matrix).
    pub shape: Vec<u64>,
    /// Storage type of the float tensor, or of the scales and biases.
    pub dtype: MlxDtype,
    /// `None`: kept in `dtype`.
    pub quant: Option<QuantSpec>,
    pub reason: String,
    /// For a stacked expert parameter (`switch_mlp.*`, shape `[E, out, in]`): the HF
    /// matrices it is made of, expert by expert (`source` is the first).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
    /// One half of a fused gate+up source (`Mapped::Split`): 0 takes the first half of
    /// the rows of every stacked matrix, 1 the second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub half: Option<u8>,
    /// DeepSeek's `embed_q` / `unembed_out`, cut out of `kv_b_proj`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_b: Option<crate::deepseek::KvBPart>,
    /// Strided rows or columns of the source (`Mapped::Strided`, gpt-oss's experts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strided: Option<crate::gpt_oss::Strided>,
}

impl PlannedTensor {
    fn elements(&self) -> u64 {
        self.shape.iter().product()
    }

    fn n_per_row(&self) -> usize {
        self.shape.last().copied().unwrap_or(1) as usize
    }

    /// Bytes this tensor takes in the checkpoint.
    pub fn bytes(&self) -> u64 {
        self.outputs().iter().map(OutputTensor::nbytes).sum()
    }

    /// Bits per weight it costs (quantized: codes plus a scale and a bias per group).
    pub fn bits_per_weight(&self) -> f64 {
        self.bytes() as f64 * 8.0 / self.elements().max(1) as f64
    }

    /// The tensors it becomes, in file order.
    pub fn outputs(&self) -> Vec<OutputTensor> {
        match self.quant {
            None => vec![OutputTensor::new(
                &self.name,
                self.dtype.safetensors_name(),
                self.shape.clone(),
            )],
            Some(q) => {
                let (lead, n) = self.shape.split_at(self.shape.len() - 1);
                let n = n[0];
                let with = |last: u64| {
                    let mut s = lead.to_vec();
                    s.push(last);
                    s
                };
                vec![
                    OutputTensor::new(
                        &format!("{}.weight", self.module),
                        "U32",
                        with(n * q.bits as u64 / 32),
                    ),
                    OutputTensor::new(
                        &format!("{}.scales", self.module),
                        self.dtype.safetensors_name(),
                        with(n / q.group_size as u64),
                    ),
                    OutputTensor::new(
                        &format!("{}.biases", self.module),
                        self.dtype.safetensors_name(),
                        with(n / q.group_size as u64),
                    ),
                ]
            }
        }
    }
}

/// A source tensor the checkpoint does not carry.
#[derive(Debug, Clone, Serialize)]
pub struct DroppedTensor {
    pub source: String,
    pub reason: String,
}

/// Expert matrices held until their stack is complete: planned tensor index -> one slot
/// per expert.
type PendingExperts = HashMap<usize, Vec<Option<Vec<f32>>>>;

/// A stacked parameter being gathered: (index in the plan, [(expert, HF name, shape)]).
type Stack = (usize, Vec<(usize, String, Vec<u64>)>);

/// The plan for one MLX checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct MlxPlan {
    pub choice: MlxChoice,
    pub family: MlxFamily,
    /// Global bits and group size of config.json's `quantization` block.
    pub bits: u32,
    pub group_size: usize,
    /// The model dtype from config.json (`torch_dtype`), if it names a float type.
    pub dtype: Option<MlxDtype>,
    pub tie_word_embeddings: bool,
    /// In source order.
    pub tensors: Vec<PlannedTensor>,
    pub dropped: Vec<DroppedTensor>,
    #[serde(skip)]
    by_source: HashMap<String, Vec<usize>>,
    /// Expert matrices read so far of stacked parameters not yet complete.
    #[serde(skip)]
    pending: Arc<Mutex<PendingExperts>>,
}

/// The model dtype mlx-lm's convert casts to: `torch_dtype`, else `dtype`
/// (transformers 5's spelling), else the text config's; only float16/bfloat16/float32.
pub fn model_dtype(config: &Value) -> Option<MlxDtype> {
    let pick = |c: &Value| {
        ["torch_dtype", "dtype"]
            .iter()
            .find_map(|k| c.get(*k).and_then(Value::as_str))
            .and_then(MlxDtype::from_config_name)
    };
    pick(config).or_else(|| config.get("text_config").and_then(pick))
}

/// Builds the plan. `tensors`: the checkpoint's tensors in the order they will be
/// streamed; `config`: its config.json; `arch`: what `detect` made of it.
pub fn plan_mlx(
    tensors: &[SourceTensor],
    config: &Value,
    arch: &ArchitectureInfo,
    choice: MlxChoice,
) -> Result<MlxPlan, MlxError> {
    let group_size = choice.group_size();
    if !affine::GROUP_SIZES.contains(&group_size) {
        return Err(MlxError::UnsupportedGroupSize(group_size));
    }
    match choice {
        MlxChoice::Uniform { bits, .. }
        | MlxChoice::ArchitectureAware {
            base_bits: bits, ..
        } => {
            if !affine::BITS.contains(&bits) {
                return Err(MlxError::UnsupportedBits(bits));
            }
        }
        MlxChoice::Recipe { .. } => {}
    }
    let family = MlxFamily::from_config(config)?;
    let dtype = model_dtype(config);
    let has_head = tensors.iter().any(|t| {
        matches!(
            map_name(&t.name, family, false),
            Ok(Mapped::Keep(n)) if n.ends_with("lm_head.weight")
        )
    });
    // Gemma 3 ties whenever the checkpoint has no lm_head (mlx-lm's gemma3_text sanitize).
    // Nemotron-H's class always has its own lm_head.
    let tied = family != MlxFamily::NemotronH
        && (arch.tie_word_embeddings
            || (!has_head && matches!(family, MlxFamily::Gemma3Text | MlxFamily::Gemma3)));
    if !tied && !has_head {
        return Err(MlxError::MissingOutputHead);
    }

    let mut planned = Vec::new();
    let mut dropped = Vec::new();
    // Stacked expert parameters: name -> (index in `planned`, [(expert, source, shape)]).
    let mut stacks: HashMap<String, Stack> = HashMap::new();
    for t in tensors {
        // gpt-oss's MXFP4 `*_blocks` arrive decoded, `[E, rows, in]` f32.
        let decoded = (family == MlxFamily::GptOss)
            .then(|| crate::gpt_oss::decoded_shape(&t.name, &t.shape))
            .flatten();
        let source_shape = decoded.clone().unwrap_or_else(|| t.shape.clone());
        let mut shape = source_shape.clone();
        let mut halves: Vec<(String, Option<u8>)> = Vec::new();
        let mut kv_b = None;
        if family.is_deepseek() && crate::deepseek::is_mtp(&t.name, arch.num_layers) {
            dropped.push(DroppedTensor {
                source: t.name.clone(),
                reason: "multi-token-prediction layer: mlx-lm's deepseek_v3 drops it (sanitize)"
                    .into(),
            });
            continue;
        }
        let mut strides: Vec<crate::gpt_oss::Strided> = Vec::new();
        let name = match map_name(&t.name, family, tied)? {
            Mapped::Split { first, second } if family == MlxFamily::DeepseekV3 => {
                kv_b = Some(crate::deepseek::kv_b_parts(&t.name, &shape, config)?);
                halves.push((first, Some(0)));
                halves.push((second, Some(1)));
                halves[0].0.clone()
            }
            Mapped::Keep(n) => n,
            Mapped::Strided { names, transpose } => {
                let stride = names.len() as u8;
                for (k, n) in names.into_iter().enumerate() {
                    let s = crate::gpt_oss::Strided {
                        offset: k as u8,
                        stride,
                        transpose,
                    };
                    shape = crate::gpt_oss::shape(&source_shape, s, n.ends_with(".bias"))
                        .ok_or_else(|| MlxError::UnknownTensor {
                            name: t.name.clone(),
                            family: family.mlx_lm_module(),
                        })?;
                    strides.push(s);
                    halves.push((n, None));
                }
                halves[0].0.clone()
            }
            Mapped::Split { first, second } => {
                // Two parameters of half the rows each.
                let k = shape.len().saturating_sub(2);
                if shape.len() < 2 || !shape[k].is_multiple_of(2) {
                    return Err(MlxError::UnknownTensor {
                        name: t.name.clone(),
                        family: family.mlx_lm_module(),
                    });
                }
                shape[k] /= 2;
                halves.push((second, Some(1)));
                halves.insert(0, (first, Some(0)));
                halves[0].0.clone()
            }
            Mapped::Expert { name, expert } => {
                if let Some((_, parts)) = stacks.get_mut(&name) {
                    parts.push((expert, t.name.clone(), t.shape.clone()));
                    continue;
                }
                stacks.insert(
                    name.clone(),
                    (
                        planned.len(),
                        vec![(expert, t.name.clone(), t.shape.clone())],
                    ),
                );
                name
            }
            Mapped::Drop(why) => {
                dropped.push(DroppedTensor {
                    source: t.name.clone(),
                    reason: why.to_string(),
                });
                continue;
            }
        };
        if !(t.dtype.is_float_readable() || t.dtype == pajamas_model::Dtype::F8E4M3)
            && decoded.is_none()
        {
            return Err(MlxError::NotFloat {
                name: t.name.clone(),
                dtype: t.dtype.name().to_string(),
            });
        }
        // No float torch_dtype: each tensor keeps its own type (F64 becomes F32, which
        // mlx can hold).
        let own_dtype = MlxDtype::from_dtype(t.dtype);
        // A class's `cast_predicate` keeps some parameters in their checkpoint dtype
        // (Nemotron-H's; DeepSeek's correction bias).
        let keep_own = (family == MlxFamily::NemotronH
            && nemotron_h::keeps_checkpoint_dtype(&name))
            || (family.is_deepseek() && name.ends_with("e_score_correction_bias"));
        let out_dtype = if keep_own {
            own_dtype.or(dtype)
        } else {
            dtype.or(own_dtype)
        }
        .unwrap_or(MlxDtype::F32);
        // Mamba's depthwise conv: HF `[C, 1, K]`, mlx `[C, K, 1]` (sanitize's moveaxis;
        // the same bytes).
        if name.ends_with("conv1d.weight") && shape.len() == 3 && shape[1] == 1 {
            shape = vec![shape[0], shape[2], 1];
        }
        if halves.is_empty() {
            halves.push((name, None));
        }
        for (j, (name, half)) in halves.into_iter().enumerate() {
            let kind =
                names::module_kind_in(family, &name).expect("map_name keeps known names only");
            let part = kv_b.map(|parts| parts[half.unwrap_or(0) as usize]);
            if let Some(p) = part {
                shape = p.shape();
            }
            let is_weight = name.ends_with(".weight");
            planned.push(PlannedTensor {
                source: t.name.clone(),
                module: module_path(&name).to_string(),
                name,
                kind,
                shape: shape.clone(),
                dtype: out_dtype,
                quant: None,
                reason: String::new(),
                parts: Vec::new(),
                half: if part.is_some() { None } else { half },
                kv_b: part,
                strided: strides.get(j).copied(),
            });
            let p = planned.last_mut().expect("just pushed");
            if kind == ModuleKind::Other {
                p.reason = format!(
                    "kept in {out_dtype}: not a Linear or Embedding (mlx-lm quantizes only those)"
                );
            } else if !is_weight {
                p.reason = format!("bias: kept in {out_dtype} (mlx quantizes weights only)");
            } else if kind == ModuleKind::Norm {
                p.reason = format!(
                "norm: kept in {out_dtype} (mlx-lm quantizes only Linear and Embedding modules)"
            );
            } else if p.shape.len() < 2 {
                p.reason = format!("1-D: kept in {out_dtype}");
            } else if !(p.n_per_row()).is_multiple_of(group_size) {
                p.reason = format!(
                "kept in {out_dtype}: input size {} is not a multiple of group size {group_size}",
                p.n_per_row()
            );
            } else {
                // Quantizable: bits decided below.
                p.quant = Some(QuantSpec {
                    bits: 0,
                    group_size,
                });
            }
        }
    }

    for (name, (i, mut parts)) in stacks {
        parts.sort_by_key(|(e, _, _)| *e);
        if let Some(pos) = parts.iter().enumerate().position(|(k, (e, _, _))| *e != k) {
            return Err(MlxError::ExpertMissing { name, expert: pos });
        }
        if let Some((_, src, shape)) = parts.iter().find(|(_, _, s)| *s != parts[0].2) {
            return Err(MlxError::ExpertShape {
                name: src.clone(),
                shape: shape.clone(),
                expected: parts[0].2.clone(),
            });
        }
        let p = &mut planned[i];
        p.shape = std::iter::once(parts.len() as u64)
            .chain(parts[0].2.iter().copied())
            .collect();
        p.source = parts[0].1.clone();
        p.parts = parts.into_iter().map(|(_, s, _)| s).collect();
    }

    match choice {
        MlxChoice::Uniform { bits, .. } => {
            for p in planned.iter_mut().filter(|p| p.quant.is_some()) {
                p.quant = Some(QuantSpec { bits, group_size });
                p.reason = format!("uniform {bits}-bit");
                // Qwen3-MoE's and Granite 4.0-H's model classes keep their routers at
                // 8 bits, group 64.
                if is_class_router(family, &p.module) {
                    p.quant = Some(QuantSpec {
                        bits: 8,
                        group_size: 64,
                    });
                    p.reason =
                        "router: 8-bit, group 64 (mlx-lm's qwen3_moe quant_predicate)".into();
                }
            }
        }
        MlxChoice::Recipe { recipe, .. } => {
            apply_recipe(&mut planned, recipe, arch.num_layers, group_size)
        }
        MlxChoice::ArchitectureAware { base_bits, .. } => {
            apply_aware(&mut planned, arch, base_bits, group_size, tied)
        }
    }

    let mut by_source: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, p) in planned.iter().enumerate() {
        let mut names = vec![p.source.clone()];
        names.extend(p.parts.iter().skip(1).cloned());
        for n in names {
            by_source.entry(n).or_default().push(i);
        }
    }
    Ok(MlxPlan {
        choice,
        family,
        bits: choice.bits(),
        group_size,
        dtype,
        tie_word_embeddings: tied,
        tensors: planned,
        dropped,
        by_source,
        pending: Arc::default(),
    })
}

/// A router that the model class's own `quant_predicate` keeps at 8 bits, group 64
/// (qwen3_moe's `mlp.gate`, granitemoehybrid's `block_sparse_moe.router.layer`).
fn is_class_router(family: MlxFamily, module: &str) -> bool {
    (family == MlxFamily::Qwen3Moe && module.ends_with("mlp.gate"))
        || (family == MlxFamily::GptOss && module.ends_with("mlp.router"))
        || (family == MlxFamily::GraniteMoeHybrid && module.ends_with("router.layer"))
}

/// mlx-lm's `mixed_quant_predicate`: `v_proj`/`down_proj` of `use_more_bits` layers and
/// `lm_head` at high bits, every other quantizable module at low bits. Modules outside
/// the layers count as layer 0 (as mlx-lm's path split does); none of them is a
/// `v_proj` or `down_proj`, so it never matters.
fn apply_recipe(planned: &mut [PlannedTensor], recipe: Recipe, num_layers: u64, group_size: usize) {
    let (low, high) = (recipe.low_bits(), recipe.high_bits());
    for p in planned.iter_mut().filter(|p| p.quant.is_some()) {
        let index = layer_index(&p.module).unwrap_or(0);
        let more = pajamas_arch::strategy::use_more_bits(index, num_layers);
        let r = recipe.name();
        let leaf = p.module.rsplit('.').next().unwrap_or("");
        // mlx-lm matches substrings of the path: `v_a_proj` / `v_b_proj` also catch
        // DeepSeek's `kv_a_proj_with_mqa` (and the `kv_b_proj` it no longer has).
        let v_like = ["v_proj", "v_a_proj", "v_b_proj", "down_proj"]
            .iter()
            .any(|k| p.module.contains(k));
        let (bits, why) = if v_like && more {
            let where_ = layer_label(index, num_layers);
            (
                high,
                format!("{r}: {leaf} of a use_more_bits layer ({index} of {num_layers}: {where_}) -> {high}-bit"),
            )
        } else if p.module.contains("lm_head") {
            (high, format!("{r}: lm_head -> {high}-bit"))
        } else {
            (low, format!("{r}: low bits -> {low}-bit"))
        };
        p.quant = Some(QuantSpec { bits, group_size });
        p.reason = why;
    }
}

/// The supported width `steps` above `bits` (capped at 8).
fn step_up(bits: u32, steps: usize) -> u32 {
    let i = affine::BITS.iter().position(|&b| b == bits).unwrap_or(0);
    affine::BITS[(i + steps).min(affine::BITS.len() - 1)]
}

/// Cost in bits of storing `p` quantized at `bits` (codes + f16/bf16/f32 scale and bias
/// per group).
fn quant_cost(p: &PlannedTensor, bits: u32, group_size: usize) -> f64 {
    let n = p.elements() as f64;
    n * bits as f64 + 2.0 * (n / group_size as f64) * (p.dtype.size() * 8) as f64
}

/// Where an upgrade candidate sits in the architecture-aware order.
struct Candidate {
    index: usize,
    /// Preferred width, then the fallback when it does not fit the budget.
    want: u32,
    fallback: u32,
    why: String,
}

fn apply_aware(
    planned: &mut [PlannedTensor],
    arch: &ArchitectureInfo,
    base: u32,
    group_size: usize,
    tied: bool,
) {
    let n = arch.num_layers;
    let high = step_up(base, 2).clamp(6, 8);
    let mid = step_up(base, 1);
    let gqa = arch.attention.as_ref().map(|a| a.gqa_ratio).unwrap_or(1);
    for p in planned.iter_mut().filter(|p| p.quant.is_some()) {
        p.quant = Some(QuantSpec {
            bits: base,
            group_size,
        });
        p.reason = format!("base {base}-bit");
    }
    // Budget: extra bits over uniform base bits, over every weight of the model.
    let total: f64 = planned.iter().map(|p| p.elements() as f64).sum();
    let mut budget = AWARE_BUDGET_BITS_PER_WEIGHT * total;

    let leaf = |p: &PlannedTensor| p.module.rsplit('.').next().unwrap_or("").to_string();
    let mut cands: Vec<(u8, u64, Candidate)> = Vec::new();
    for (i, p) in planned.iter().enumerate() {
        if p.quant.is_none() {
            continue;
        }
        let layer = layer_index(&p.module);
        let more = layer.is_some_and(|l| pajamas_arch::strategy::use_more_bits(l, n));
        let edge_layer = layer.is_some_and(|l| l < n / 8 || l >= 7 * n / 8);
        let c = |want: u32, fallback: u32, why: String| Candidate {
            index: i,
            want,
            fallback,
            why,
        };
        let l = layer.unwrap_or(0);
        let shared = if gqa > 1 {
            format!("; GQA {gqa}:1, each V head serves {gqa} query heads")
        } else {
            String::new()
        };
        let (tier, cand) = match (p.kind, leaf(p).as_str()) {
            (ModuleKind::Linear, "shared_expert_gate") => (
                0,
                c(
                    8,
                    high,
                    "shared expert gate: scales the shared expert's output for every token".into(),
                ),
            ),
            (ModuleKind::Linear, "gate" | "layer" | "router") => (
                0,
                c(
                    8,
                    high,
                    "router: picks the experts of every token; a flipped choice changes the whole FFN output".into(),
                ),
            ),
            (ModuleKind::Linear, _)
                if p.module.contains(".shared_expert.")
                    || (p.module.contains(".shared_mlp.") && arch.moe.is_some()) =>
            (
                1,
                c(
                    high,
                    mid,
                    "shared expert: runs for every token, unlike the routed experts".into(),
                ),
            ),
            (ModuleKind::Linear, "lm_head") => (
                0,
                c(high, mid, "output head: decides every logit, the most sensitive matrix".into()),
            ),
            (ModuleKind::Embedding, _) if tied => (
                0,
                c(
                    high,
                    mid,
                    "tied embedding: it is also the output head, which decides every logit".into(),
                ),
            ),
            (ModuleKind::Linear, "v_proj") if more => (
                1,
                c(
                    high,
                    mid,
                    format!(
                        "v_proj of layer {l} ({}): values feed the residual stream directly{shared}",
                        layer_label(l, n)
                    ),
                ),
            ),
            (ModuleKind::Linear, "v_proj") if gqa >= 4 => (
                2,
                c(
                    mid,
                    mid,
                    format!("v_proj: GQA {gqa}:1, each V head serves {gqa} query heads, so its error is replicated {gqa} times"),
                ),
            ),
            (ModuleKind::Linear, "down_proj") if more => (
                if edge_layer { 3 } else { 4 },
                c(
                    high,
                    mid,
                    format!(
                        "down_proj of layer {l} ({}): it feeds the residual stream and its input has the largest outliers",
                        layer_label(l, n)
                    ),
                ),
            ),
            (ModuleKind::Embedding, _) => (
                5,
                c(
                    high,
                    mid,
                    "untied embedding: a lookup table, upgraded last (each row's error touches only its own token)".into(),
                ),
            ),
            _ => continue,
        };
        cands.push((tier, l, cand));
    }
    cands.sort_by_key(|(tier, layer, _)| (*tier, *layer));
    for (_, _, c) in cands {
        let p = &mut planned[c.index];
        let base_cost = quant_cost(p, base, group_size);
        let mut done = false;
        for (k, bits) in [c.want, c.fallback].into_iter().enumerate() {
            if bits <= base || (k == 1 && bits == c.want) {
                continue;
            }
            let extra = quant_cost(p, bits, group_size) - base_cost;
            if extra <= budget {
                budget -= extra;
                p.quant = Some(QuantSpec { bits, group_size });
                p.reason = if k == 0 {
                    format!("{} -> {bits}-bit", c.why)
                } else {
                    format!(
                        "{} -> {bits}-bit ({}-bit would exceed the +{AWARE_BUDGET_BITS_PER_WEIGHT} bits/weight budget)",
                        c.why, c.want
                    )
                };
                done = true;
                break;
            }
        }
        if !done && c.want > base {
            p.reason = format!(
                "base {base}-bit: {} but the +{AWARE_BUDGET_BITS_PER_WEIGHT} bits/weight budget is spent",
                c.why
            );
        }
    }
}

fn layer_label(l: u64, n: u64) -> &'static str {
    if l < n / 8 {
        "first eighth"
    } else if l >= 7 * n / 8 {
        "last eighth"
    } else {
        "every third layer"
    }
}

/// A plan summary for the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct MlxPlanSummary {
    pub choice: MlxChoice,
    pub label: String,
    pub mode: &'static str,
    pub bits: u32,
    pub group_size: usize,
    /// Storage type of scales, biases and unquantized tensors (`bfloat16`...).
    pub dtypes: Vec<MlxDtype>,
    /// Module count per setting: `"4bit/g64"`, `"6bit/g64"`, `"bfloat16"` (kept).
    pub modules: BTreeMap<String, usize>,
    pub bits_per_weight: f64,
    pub tensor_bytes: u64,
    pub parameters: u64,
}

impl MlxPlan {
    pub fn get(&self, source: &str) -> Option<&PlannedTensor> {
        self.by_source
            .get(source)
            .and_then(|v| v.first())
            .map(|&i| &self.tensors[i])
    }

    /// Every output tensor in file order (what [`crate::MlxWriter::create`] takes).
    pub fn output_tensors(&self) -> Vec<OutputTensor> {
        self.tensors
            .iter()
            .flat_map(PlannedTensor::outputs)
            .collect()
    }

    /// Bytes of tensor data in the checkpoint.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(PlannedTensor::bytes).sum()
    }

    /// Parameters of the unquantized model (mlx-lm's `total_parameters`, which counts
    /// the parameters of leaf modules only: Mamba's `A_log`, `D` and `dt_bias` belong to
    /// the mixer module itself and are not counted; DeepSeek's `MoEGate` router is a leaf
    /// module, so its weight and bias are).
    pub fn parameters(&self) -> u64 {
        self.tensors
            .iter()
            .filter(|t| match self.family {
                MlxFamily::NemotronH => nemotron_h::counts_as_parameter(&t.name),
                _ => {
                    t.kind != ModuleKind::Other
                        || t.name.contains("conv1d")
                        || (self.family.is_deepseek() && t.module.ends_with("mlp.gate"))
                }
            })
            .map(PlannedTensor::elements)
            .sum()
    }

    /// Average bits per weight over every parameter.
    pub fn bits_per_weight(&self) -> f64 {
        self.tensor_bytes() as f64 * 8.0 / self.parameters().max(1) as f64
    }

    /// Planned modules that are Linear or Embedding: the ones mlx-lm decides on.
    pub fn modules(&self) -> impl Iterator<Item = &PlannedTensor> {
        self.tensors.iter().filter(|t| {
            matches!(t.kind, ModuleKind::Linear | ModuleKind::Embedding)
                && t.name.ends_with(".weight")
        })
    }

    /// Encodes one source tensor (HF layout, as read; no GGUF transforms) into its
    /// output tensors: `[(name, bytes)]` in file order; empty for a dropped tensor.
    pub fn encode(&self, source: &str, data: &[f32]) -> Result<Vec<(String, Vec<u8>)>, MlxError> {
        let Some(indices) = self.by_source.get(source) else {
            if self.dropped.iter().any(|d| d.source == source) {
                return Ok(Vec::new());
            }
            return Err(MlxError::NotPlanned(source.to_string()));
        };
        let mut out = Vec::new();
        for &index in indices {
            out.extend(self.encode_one(index, source, data)?);
        }
        Ok(out)
    }

    /// The outputs of planned tensor `index` that `source`'s data completes.
    fn encode_one(
        &self,
        index: usize,
        source: &str,
        data: &[f32],
    ) -> Result<Vec<(String, Vec<u8>)>, MlxError> {
        let p = &self.tensors[index];
        let cut;
        let (data, per_part) = match p.kv_b {
            Some(k) if data.len() == k.source_len() => {
                cut = k.extract(data);
                (&cut[..], p.elements())
            }
            Some(k) => (data, k.source_len() as u64),
            None => (
                data,
                p.elements() / p.parts.len().max(1) as u64
                    * if p.half.is_some() { 2 } else { 1 }
                    * p.strided.map_or(1, |s| s.stride as u64),
            ),
        };
        if data.len() as u64 != per_part {
            return Err(MlxError::LengthMismatch {
                what: "tensor data",
                expected: per_part as usize,
                got: data.len(),
            });
        }
        let strided;
        let data = match p.strided {
            None => data,
            Some(s) => {
                let bias = p.name.ends_with(".bias");
                let shape = crate::gpt_oss::source_shape(&p.shape, s, bias);
                strided = crate::gpt_oss::apply(data, &shape, s, bias);
                &strided[..]
            }
        };
        let halved;
        let data = match p.half {
            None => data,
            Some(h) => {
                // Rows [h*n, (h+1)*n) of every stacked matrix of 2n rows.
                let cols = p.n_per_row();
                let rows = p.shape[p.shape.len() - 2] as usize;
                let block = rows * cols;
                halved = data
                    .chunks_exact(2 * block)
                    .flat_map(|m| &m[h as usize * block..(h as usize + 1) * block])
                    .copied()
                    .collect::<Vec<f32>>();
                &halved[..]
            }
        };
        let stacked;
        let data = if p.parts.is_empty() {
            data
        } else {
            // Hold each expert until the last one of the stack arrives.
            let slot = p.parts.iter().position(|s| s == source).expect("a part");
            let mut pending = self.pending.lock().expect("not poisoned");
            let parts = pending
                .entry(index)
                .or_insert_with(|| vec![None; p.parts.len()]);
            parts[slot] = Some(data.to_vec());
            if parts.iter().any(Option::is_none) {
                return Ok(Vec::new());
            }
            let parts = pending.remove(&index).expect("present");
            stacked = parts.into_iter().flatten().flatten().collect::<Vec<f32>>();
            &stacked[..]
        };
        match p.quant {
            None => Ok(vec![(p.name.clone(), p.dtype.encode(data))]),
            Some(q) => {
                let r = affine::quantize(data, p.n_per_row(), q.bits, q.group_size, p.dtype)
                    .map_err(|e| MlxError::Tensor {
                        name: source.to_string(),
                        source: Box::new(e),
                    })?;
                Ok(vec![
                    (format!("{}.weight", p.module), r.packed_bytes()),
                    (format!("{}.scales", p.module), r.scales_bytes()),
                    (format!("{}.biases", p.module), r.biases_bytes()),
                ])
            }
        }
    }

    /// config.json's `quantization` block: global group size, bits and mode, then one
    /// entry per module that differs from them, keyed by mlx-lm module path:
    /// `{"group_size", "bits", "mode"}` or `false` for a Linear/Embedding kept in the
    /// model dtype. Recipes list every quantized module, as mlx-lm writes them.
    pub fn quantization_block(&self) -> Value {
        let mut q = Map::new();
        q.insert("group_size".into(), json!(self.group_size));
        q.insert("bits".into(), json!(self.bits));
        q.insert("mode".into(), json!("affine"));
        let list_all = matches!(self.choice, MlxChoice::Recipe { .. });
        for m in self.modules() {
            match m.quant {
                None => {
                    q.insert(m.module.clone(), Value::Bool(false));
                }
                Some(s) if list_all || s.bits != self.bits || s.group_size != self.group_size => {
                    // mlx-lm records a model class's own predicate (qwen3_moe's routers)
                    // as the predicate returns it, without `mode`.
                    let entry = if matches!(self.choice, MlxChoice::Uniform { .. })
                        && is_class_router(self.family, &m.module)
                    {
                        json!({"group_size": s.group_size, "bits": s.bits})
                    } else {
                        json!({"group_size": s.group_size, "bits": s.bits, "mode": "affine"})
                    };
                    q.insert(m.module.clone(), entry);
                }
                Some(_) => {}
            }
        }
        Value::Object(q)
    }

    /// The output config.json: the source config with `quantization` and
    /// `quantization_config` (the same block), keys sorted as mlx-lm's `save_config`
    /// writes them, `_name_or_path` and (gemma3) `vision_config` removed, and an explicit
    /// `tie_word_embeddings` where mlx-lm's class would otherwise assume one (llama and
    /// qwen2 default to tied, which would drop a real lm_head).
    pub fn config_json(&self, source: &Value) -> Value {
        let mut c: Map<String, Value> = source.as_object().cloned().unwrap_or_default();
        c.remove("_name_or_path");
        if self.family == MlxFamily::Gemma3 {
            c.remove("vision_config");
        }
        if self.family.reads_tie_flag() && !c.contains_key("tie_word_embeddings") {
            c.insert(
                "tie_word_embeddings".into(),
                json!(self.tie_word_embeddings),
            );
        }
        // mlx-lm's qwen3_moe requires the transformers 4 spellings that transformers 5
        // renamed: `num_experts` (now `num_local_experts`) and `rope_theta` (now inside
        // `rope_parameters`).
        if self.family == MlxFamily::GptOss {
            crate::gpt_oss::fix_config(&mut c);
        }
        if self.family == MlxFamily::Qwen3Moe {
            if !c.contains_key("num_experts") {
                if let Some(n) = c.get("num_local_experts").cloned() {
                    c.insert("num_experts".into(), n);
                }
            }
            if !c.contains_key("rope_theta") {
                if let Some(t) = c.get("rope_parameters").and_then(|r| r.get("rope_theta")) {
                    c.insert("rope_theta".into(), t.clone());
                }
            }
        }
        // mlx-lm's deepseek_v3 reads the transformers 4 spellings `rope_theta` and
        // `rope_scaling` (transformers 5 keeps both inside `rope_parameters`).
        if self.family.is_deepseek() {
            let rp = c.get("rope_parameters").cloned().unwrap_or(Value::Null);
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
                let mut rs = rp.as_object().cloned().unwrap_or_default();
                rs.remove("rope_theta");
                c.insert("rope_scaling".into(), Value::Object(rs));
            }
        }
        let q = self.quantization_block();
        c.insert("quantization".into(), q.clone());
        c.insert("quantization_config".into(), q);
        let mut keys: Vec<String> = c.keys().cloned().collect();
        keys.sort();
        let mut sorted = Map::new();
        for k in keys {
            let v = c.remove(&k).expect("listed");
            sorted.insert(k, v);
        }
        Value::Object(sorted)
    }

    pub fn summary(&self) -> MlxPlanSummary {
        let mut modules = BTreeMap::new();
        for m in self.modules() {
            let key = match m.quant {
                Some(q) => format!("{}bit/g{}", q.bits, q.group_size),
                None => m.dtype.config_name().to_string(),
            };
            *modules.entry(key).or_insert(0) += 1;
        }
        let mut dtypes: Vec<MlxDtype> = Vec::new();
        for t in &self.tensors {
            if !dtypes.contains(&t.dtype) {
                dtypes.push(t.dtype);
            }
        }
        MlxPlanSummary {
            choice: self.choice,
            label: self.choice.label(),
            mode: "affine",
            bits: self.bits,
            group_size: self.group_size,
            dtypes,
            modules,
            bits_per_weight: (self.bits_per_weight() * 1000.0).round() / 1000.0,
            tensor_bytes: self.tensor_bytes(),
            parameters: self.parameters(),
        }
    }

    /// The `--dry-run` printout: one line per module (bits, group, reason), norms and
    /// biases only with `verbose`, then dropped tensors and the totals.
    pub fn render(&self, verbose: bool) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "== MLX {} ({}, mlx-lm {})",
            self.choice.dir_name(),
            self.choice.label(),
            self.family.mlx_lm_module()
        );
        let _ = writeln!(
            o,
            "{:<48} {:>14} {:>9} {:>6}  reason",
            "module", "shape", "bits", "group"
        );
        for t in &self.tensors {
            let module_row = matches!(t.kind, ModuleKind::Linear | ModuleKind::Embedding)
                && t.name.ends_with(".weight");
            if !verbose && !module_row {
                continue;
            }
            let shape = t
                .shape
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join("x");
            let (bits, group) = match t.quant {
                Some(q) => (q.bits.to_string(), q.group_size.to_string()),
                None => (t.dtype.config_name().to_string(), "-".to_string()),
            };
            let label = if module_row { &t.module } else { &t.name };
            let _ = writeln!(
                o,
                "{label:<48} {shape:>14} {bits:>9} {group:>6}  {}",
                t.reason
            );
        }
        for d in &self.dropped {
            let _ = writeln!(
                o,
                "{:<48} {:>14} {:>9} {:>6}  {}",
                d.source, "", "dropped", "-", d.reason
            );
        }
        let s = self.summary();
        let mods = s
            .modules
            .iter()
            .map(|(k, v)| format!("{v} x {k}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            o,
            "Total: {:.3} bits/weight, {:.2} MiB of tensors, {} parameters ({mods})",
            s.bits_per_weight,
            s.tensor_bytes as f64 / (1024.0 * 1024.0),
            s.parameters
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama(
        layers: u64,
        h: u64,
        kv: u64,
        ff: u64,
        vocab: u64,
        tied: bool,
    ) -> (Value, Vec<SourceTensor>) {
        let heads = h / 64;
        let cfg = json!({
            "model_type": "llama", "hidden_size": h, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": vocab,
            "intermediate_size": ff, "tie_word_embeddings": tied, "torch_dtype": "bfloat16"
        });
        let t = |name: &str, shape: Vec<u64>| SourceTensor {
            name: name.into(),
            shape,
            dtype: Dtype::BF16,
        };
        let mut v = vec![t("model.embed_tokens.weight", vec![vocab, h])];
        for i in 0..layers {
            let p = |s: &str| format!("model.layers.{i}.{s}");
            v.push(t(&p("input_layernorm.weight"), vec![h]));
            v.push(t(&p("self_attn.q_proj.weight"), vec![h, h]));
            v.push(t(&p("self_attn.k_proj.weight"), vec![kv * 64, h]));
            v.push(t(&p("self_attn.v_proj.weight"), vec![kv * 64, h]));
            v.push(t(&p("self_attn.o_proj.weight"), vec![h, h]));
            v.push(t(&p("self_attn.rotary_emb.inv_freq"), vec![32]));
            v.push(t(&p("post_attention_layernorm.weight"), vec![h]));
            v.push(t(&p("mlp.gate_proj.weight"), vec![ff, h]));
            v.push(t(&p("mlp.up_proj.weight"), vec![ff, h]));
            v.push(t(&p("mlp.down_proj.weight"), vec![h, ff]));
        }
        v.push(t("model.norm.weight", vec![h]));
        v.push(t("lm_head.weight", vec![vocab, h]));
        (cfg, v)
    }

    fn plan(cfg: &Value, t: &[SourceTensor], choice: MlxChoice) -> MlxPlan {
        let arch = pajamas_arch::detect(cfg).unwrap();
        plan_mlx(t, cfg, &arch, choice).unwrap()
    }

    fn bits(p: &MlxPlan, module: &str) -> Option<u32> {
        p.tensors
            .iter()
            .find(|t| t.module == module)
            .unwrap()
            .quant
            .map(|q| q.bits)
    }

    #[test]
    fn uniform_keeps_norms_and_non_divisible_inputs() {
        let (cfg, t) = llama(2, 576, 3, 1536, 1000, true);
        let p = plan(
            &cfg,
            &t,
            MlxChoice::Uniform {
                bits: 4,
                group_size: 128,
            },
        );
        // 576 is not a multiple of 128: everything reading the hidden state stays bf16.
        assert_eq!(bits(&p, "model.layers.0.self_attn.q_proj"), None);
        assert_eq!(bits(&p, "model.embed_tokens"), None);
        assert_eq!(bits(&p, "model.layers.0.mlp.down_proj"), Some(4));
        assert_eq!(bits(&p, "model.layers.0.input_layernorm"), None);
        // Tied head and rope frequencies are dropped.
        assert!(p.get("lm_head.weight").is_none());
        assert_eq!(p.dropped.len(), 3);
        let q = p.quantization_block();
        assert_eq!(q["model.layers.0.self_attn.q_proj"], json!(false));
        assert_eq!(q["bits"], json!(4));
        assert!(q.get("model.layers.0.mlp.down_proj").is_none());
        assert!(q.get("model.layers.0.input_layernorm").is_none());
        let s = p.summary();
        assert_eq!(s.modules["4bit/g128"], 2);
    }

    #[test]
    fn recipe_matches_mlx_lm_predicate() {
        let (cfg, t) = llama(16, 256, 1, 512, 1000, false);
        let p = plan(
            &cfg,
            &t,
            MlxChoice::Recipe {
                recipe: Recipe::Mixed3_6,
                group_size: 64,
            },
        );
        for i in 0..16u64 {
            let more = !(2..14).contains(&i) || (i - 2) % 3 == 2;
            let want = if more { 6 } else { 3 };
            assert_eq!(
                bits(&p, &format!("model.layers.{i}.self_attn.v_proj")),
                Some(want),
                "{i}"
            );
            assert_eq!(
                bits(&p, &format!("model.layers.{i}.mlp.down_proj")),
                Some(want),
                "{i}"
            );
            assert_eq!(
                bits(&p, &format!("model.layers.{i}.self_attn.k_proj")),
                Some(3)
            );
        }
        assert_eq!(bits(&p, "lm_head"), Some(6));
        assert_eq!(bits(&p, "model.embed_tokens"), Some(3));
        // Every quantized module is listed, as mlx-lm writes it.
        let q = p.quantization_block();
        assert_eq!(
            q["model.layers.4.mlp.up_proj"],
            json!({"group_size": 64, "bits": 3, "mode": "affine"})
        );
        assert_eq!(p.choice.dir_name(), "3bit-mixed_3_6");
    }

    #[test]
    fn aware_upgrades_within_budget() {
        for (layers, h, kv, ff, vocab, tied) in [
            (30, 576, 3, 1536, 49152, true),
            (32, 4096, 8, 14336, 128256, false),
            (4, 256, 1, 768, 4096, true),
        ] {
            let (cfg, t) = llama(layers, h, kv, ff, vocab, tied);
            let p = plan(
                &cfg,
                &t,
                MlxChoice::ArchitectureAware {
                    base_bits: 4,
                    group_size: 64,
                },
            );
            let u = plan(
                &cfg,
                &t,
                MlxChoice::Uniform {
                    bits: 4,
                    group_size: 64,
                },
            );
            let extra = p.bits_per_weight() - u.bits_per_weight();
            assert!(extra <= AWARE_BUDGET_BITS_PER_WEIGHT + 1e-9, "{extra}");
            assert!(extra > 0.05, "{extra}");
            // The output head is the first upgrade.
            let head = if tied {
                "model.embed_tokens"
            } else {
                "lm_head"
            };
            assert!(bits(&p, head).unwrap() > 4, "{head}");
            for m in p.modules() {
                assert!(!m.reason.is_empty());
            }
        }
    }

    #[test]
    fn encode_produces_planned_shapes() {
        let (cfg, t) = llama(1, 128, 1, 256, 64, false);
        let p = plan(
            &cfg,
            &t,
            MlxChoice::Uniform {
                bits: 3,
                group_size: 32,
            },
        );
        let outs = p.output_tensors();
        for src in &t {
            let n: u64 = src.shape.iter().product();
            let data: Vec<f32> = (0..n).map(|i| (i % 17) as f32 * 0.01).collect();
            for (name, bytes) in p.encode(&src.name, &data).unwrap() {
                let o = outs.iter().find(|o| o.name == name).unwrap();
                assert_eq!(o.nbytes(), bytes.len() as u64, "{name}");
            }
        }
        assert!(p.encode("nope", &[]).is_err());
        let c = p.config_json(&cfg);
        assert_eq!(c["quantization"], c["quantization_config"]);
        let keys: Vec<&String> = c.as_object().unwrap().keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }
}
