//! The GGUF plan: a ggml type and a reason for every tensor.
//!
//! Two rule sets:
//! - [`Rules::LlamaCpp`]: llama-quantize's stock mix (`llama_tensor_get_type`), rebuilt
//!   from its published behaviour so that `--rules llama.cpp` gives the same per-tensor
//!   types as llama-quantize on the same model.
//! - [`Rules::ArchitectureAware`] (default): the stock mix, then our rules driven by the
//!   detected architecture (GQA ratio, MoE layout, hybrid blocks), each with its reason.
//!
//! User overrides (`--tensor-type`, `--output-tensor-type`, `--token-embedding-type`,
//! `--pure`, `--leave-output-tensor`) are applied here and nowhere else.

use pajamas_arch::{classify, ArchitectureInfo, Role, TensorRole};
use pajamas_quant::GgmlType;
use regex::Regex;
use serde::Serialize;

use crate::ftype::Ftype;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rules {
    /// llama-quantize's stock per-tensor mix.
    #[serde(rename = "llama.cpp-compatible")]
    LlamaCpp,
    /// Stock mix plus our architecture-driven rules.
    ArchitectureAware,
}

impl Rules {
    pub fn from_name(s: &str) -> Option<Rules> {
        match s {
            "llama.cpp" | "llama.cpp-compatible" | "llama-cpp" | "compat" => Some(Rules::LlamaCpp),
            "architecture-aware" | "arch" | "default" => Some(Rules::ArchitectureAware),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Rules::LlamaCpp => "llama.cpp-compatible",
            Rules::ArchitectureAware => "architecture-aware",
        }
    }
}

/// A tensor to plan, by its GGUF name and GGUF dims (innermost first).
#[derive(Debug, Clone)]
pub struct PlanInput {
    pub name: String,
    pub ne: Vec<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--tensor-type REGEX=TYPE`, first match wins.
    pub tensor_types: Vec<(Regex, GgmlType)>,
    pub output_tensor_type: Option<GgmlType>,
    pub token_embedding_type: Option<GgmlType>,
    pub pure: bool,
    pub leave_output_tensor: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedTensor {
    pub name: String,
    pub ne: Vec<u64>,
    #[serde(serialize_with = "ser_type")]
    pub ty: GgmlType,
    pub bytes: u64,
    pub reason: String,
}

fn ser_type<S: serde::Serializer>(t: &GgmlType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.name())
}

#[derive(Debug, Clone, Serialize)]
pub struct GgufPlan {
    pub ftype: Ftype,
    pub rules: Rules,
    pub tensors: Vec<PlannedTensor>,
    /// Set for a budgeted plan (`--target-bpw`, `--target-size`; see `budget.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::budget::BudgetInfo>,
}

impl GgufPlan {
    /// Bytes of tensor data (the file adds metadata and alignment padding).
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes).sum()
    }

    pub fn elements(&self) -> u64 {
        self.tensors
            .iter()
            .map(|t| t.ne.iter().product::<u64>())
            .sum()
    }

    /// Bits per weight over all tensors.
    pub fn bits_per_weight(&self) -> f64 {
        self.tensor_bytes() as f64 * 8.0 / self.elements().max(1) as f64
    }

    pub fn get(&self, name: &str) -> Option<&PlannedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The first tensor that llama-quantize would refuse to write without an importance
    /// matrix (see [`tensor_requires_imatrix`]).
    pub fn needs_imatrix(&self) -> Option<&PlannedTensor> {
        self.tensors
            .iter()
            .find(|t| tensor_requires_imatrix(&t.name, t.ty))
    }
}

/// llama-quantize's rule: below 3 bits (and IQ3_XXS), a lattice quantizer without
/// importance weights spends its few codes on the wrong columns, so llama.cpp refuses
/// these types without an imatrix, except for token_embd and output (lookups and the
/// head, whose rows the imatrix does not see). Our kernels can run without one for
/// IQ3_XXS, IQ2_S and IQ1_M, but the files would be as poor, so we refuse as well.
pub fn tensor_requires_imatrix(name: &str, ty: GgmlType) -> bool {
    use GgmlType::*;
    let head = matches!(category(name), Category::Output | Category::TokenEmbd);
    !head && matches!(ty, IQ3_XXS | IQ2_XXS | IQ2_XS | IQ2_S | IQ1_M | IQ1_S)
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("tensor '{tensor}': {ty} needs rows that are a multiple of {block}, and no fallback type fits {ne0} columns")]
    NoFallback {
        tensor: String,
        ty: GgmlType,
        block: usize,
        ne0: u64,
    },
}

/// What llama.cpp calls the broad category of a tensor (from its GGUF name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnK,
    AttnV,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

fn category(name: &str) -> Category {
    if name == "output.weight" {
        return Category::Output;
    }
    if name == "token_embd.weight" {
        return Category::TokenEmbd;
    }
    for (pat, c) in [
        ("attn_qkv.weight", Category::AttnQkv),
        ("attn_kv_b.weight", Category::AttnKvB),
        ("attn_v.weight", Category::AttnV),
        ("attn_k.weight", Category::AttnK),
        ("attn_q.weight", Category::AttnQ),
        ("attn_output.weight", Category::AttnOutput),
        ("ffn_up", Category::FfnUp),
        ("ffn_gate", Category::FfnGate),
        ("ffn_down", Category::FfnDown),
    ] {
        if name.contains(pat) {
            return c;
        }
    }
    Category::Other
}

fn is_attn_v_like(c: Category) -> bool {
    matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB)
}

/// llama.cpp's rule for which layers get more bits: the first and last eighth and every
/// third layer in between.
pub fn use_more_bits(i: i64, n: i64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// Whether llama-quantize would quantize this tensor at all.
fn allows_quantization(name: &str, ne: &[u64], overrides: &Overrides) -> bool {
    ne.len() >= 2
        && name.ends_with("weight")
        && !name.contains("_norm.weight")
        && (!overrides.leave_output_tensor || name != "output.weight")
        && !name.contains("ffn_gate_inp.weight")
        && !name.contains("ssm_conv1d")
        && name != "position_embd.weight"
        && name != "token_types.weight"
}

/// The type a tensor keeps when it is not quantized: F32 for 1-D tensors, norms and the
/// small tensors converters keep in full precision, else the file's float type.
fn unquantized_type(role: &TensorRole, ne: &[u64], ftype: Ftype) -> GgmlType {
    if ne.len() < 2 || role.keep_full_precision() || ftype == Ftype::F32 {
        GgmlType::F32
    } else if ftype == Ftype::BF16 {
        GgmlType::BF16
    } else {
        GgmlType::F16
    }
}

/// Model facts llama.cpp's rules consult.
struct Hparams {
    n_gqa: u64,
    n_expert: u64,
    n_layer: u64,
    is_70b: bool,
}

struct Counters {
    n_attention_wv: i64,
    i_attention_wv: i64,
    i_ffn_down: i64,
    i_ffn_gate: i64,
    i_ffn_up: i64,
}

fn layer_of(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?;
    rest.split('.').next()?.parse().ok()
}

/// Makes the plan for one GGUF file.
pub fn plan_gguf(
    tensors: &[PlanInput],
    arch: &ArchitectureInfo,
    ftype: Ftype,
    rules: Rules,
    overrides: &Overrides,
    has_imatrix: bool,
) -> Result<GgufPlan, PlanError> {
    let hp = Hparams {
        n_gqa: arch.attention.as_ref().map(|a| a.gqa_ratio).unwrap_or(1),
        n_expert: arch.moe.as_ref().map(|m| m.num_experts).unwrap_or(0),
        n_layer: arch.num_layers,
        is_70b: arch.model_type == "llama" && arch.num_layers == 80,
    };
    let count = |f: &dyn Fn(Category) -> bool| {
        tensors.iter().filter(|t| f(category(&t.name))).count() as i64
    };
    // As llama.cpp: attn_v tensors are counted, ffn layers are the model's layer count.
    let mut c = Counters {
        n_attention_wv: count(&|c| is_attn_v_like(c)),
        i_attention_wv: 0,
        i_ffn_down: 0,
        i_ffn_gate: 0,
        i_ffn_up: 0,
    };
    let has_tied = !tensors.iter().any(|t| t.name == "output.weight");
    let base = ftype.base_type();
    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        let role = classify(&t.name, Some(arch.num_layers as u32));
        let cat = category(&t.name);
        let (ty, reason) = if !allows_quantization(&t.name, &t.ne, overrides) {
            let ty = unquantized_type(&role, &t.ne, ftype);
            (
                ty,
                "never quantized: 1-D, norm, router or SSM conv (kept as converted)".to_string(),
            )
        } else if let (Some(ty), Category::TokenEmbd) = (overrides.token_embedding_type, cat) {
            (ty, "--token-embedding-type".to_string())
        } else if let (Some(ty), Category::Output) = (overrides.output_tensor_type, cat) {
            (ty, "--output-tensor-type".to_string())
        } else if !base.is_quantized() {
            (base, format!("{ftype} file: every weight matrix in {base}"))
        } else {
            let manual = overrides
                .tensor_types
                .iter()
                .find(|(re, _)| re.is_match(&t.name))
                .map(|(re, ty)| (*ty, format!("--tensor-type {}={}", re.as_str(), ty)));
            let (ty, reason) = match manual {
                Some(m) => m,
                None if overrides.pure => (base, format!("--pure: {base} everywhere")),
                None => {
                    let (ty, why) =
                        stock_type(&mut c, &hp, t, cat, ftype, base, has_tied, has_imatrix);
                    let stock = (ty, format!("llama.cpp {ftype}: {why}"));
                    match rules {
                        Rules::LlamaCpp => stock,
                        Rules::ArchitectureAware => {
                            architecture_rules(stock, arch, &role, cat, ftype)
                        }
                    }
                }
            };
            fallback(&t.name, &t.ne, ty, reason)?
        };
        let rows: u64 = t.ne.iter().skip(1).product();
        let bytes = ty.row_bytes(t.ne[0] as usize) as u64 * rows;
        out.push(PlannedTensor {
            name: t.name.clone(),
            ne: t.ne.clone(),
            ty,
            bytes,
            reason,
        });
    }
    Ok(GgufPlan {
        ftype,
        rules,
        tensors: out,
        budget: None,
    })
}

/// A tensor the checkpoint already stores quantized in a GGUF type (gpt-oss's MXFP4
/// experts): its bytes can be copied as they are. It keeps that type unless the plan
/// asks for a smaller one or `--tensor-type` names it: any other type would requantize
/// the already rounded values, adding error without saving space.
pub fn keep_source_type(plan: &mut GgufPlan, name: &str, source: GgmlType, overrides: &Overrides) {
    if overrides
        .tensor_types
        .iter()
        .any(|(re, _)| re.is_match(name))
    {
        return;
    }
    let Some(t) = plan.tensors.iter_mut().find(|t| t.name == name) else {
        return;
    };
    let planned = t.ty;
    if planned == source
        || (planned.is_quantized() && planned.bits_per_weight() < source.bits_per_weight())
        || !(t.ne[0] as usize).is_multiple_of(source.block_size())
    {
        return;
    }
    let rows: u64 = t.ne.iter().skip(1).product();
    t.ty = source;
    t.bytes = source.row_bytes(t.ne[0] as usize) as u64 * rows;
    t.reason = format!(
        "stored {source} in the checkpoint: copied as is (the plan's {planned} would requantize it without saving space)"
    );
}

/// llama.cpp's fallback when a row is not a multiple of the type's block size.
fn fallback(
    name: &str,
    ne: &[u64],
    ty: GgmlType,
    reason: String,
) -> Result<(GgmlType, String), PlanError> {
    let ne0 = ne[0];
    if ne0.is_multiple_of(ty.block_size() as u64) {
        return Ok((ty, reason));
    }
    use GgmlType::*;
    let alt = match ty {
        IQ1_S | IQ1_M | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ4_XS => IQ4_NL,
        Q2_K | Q3_K | TQ1_0 | TQ2_0 => Q4_0,
        Q4_K => Q5_0,
        Q5_K => Q5_1,
        Q6_K | MXFP4 => Q8_0,
        _ => {
            return Err(PlanError::NoFallback {
                tensor: name.into(),
                ty,
                block: ty.block_size(),
                ne0,
            })
        }
    };
    let alt = if !ne0.is_multiple_of(alt.block_size() as u64) {
        F16
    } else {
        alt
    };
    Ok((
        alt,
        format!(
            "{reason}; {ne0} columns not a multiple of {} -> fallback {alt}",
            ty.block_size()
        ),
    ))
}

/// The i-quant file types at 2 bits and below, which llama.cpp treats as one group.
fn is_iq2_group(f: Ftype) -> bool {
    use Ftype::*;
    matches!(f, IQ2_XXS | IQ2_XS | IQ2_S | IQ2_M | IQ1_S | IQ1_M)
}

/// llama-quantize's per-tensor choice for a quantized ftype.
#[allow(clippy::too_many_arguments)]
fn stock_type(
    c: &mut Counters,
    hp: &Hparams,
    t: &PlanInput,
    cat: Category,
    ftype: Ftype,
    base: GgmlType,
    has_tied: bool,
    has_imatrix: bool,
) -> (GgmlType, String) {
    use Ftype as F;
    use GgmlType as G;
    let name = t.name.as_str();
    // Experts are not laid out in layer order in every model: llama.cpp reads the layer
    // from the name when the model has experts, else counts tensors.
    let layer = |i: i64| -> (i64, i64) {
        let n = hp.n_layer as i64;
        if hp.n_expert > 1 {
            (layer_of(name).unwrap_or(i), n)
        } else {
            (i, n)
        }
    };
    // IQ2_S and IQ2_M give their sensitive tensors IQ3_S where the others use Q2_K.
    let iq2_up = if matches!(ftype, F::IQ2_S | F::IQ2_M) {
        G::IQ3_S
    } else {
        G::Q2_K
    };
    if ftype == F::MXFP4_MOE {
        // llama.cpp: stacked expert tensors MXFP4, everything else (output included) Q8_0.
        return if t.ne.get(2).is_some_and(|&e| e > 1) {
            (
                G::MXFP4,
                "expert tensor of an MXFP4_MOE file -> MXFP4".into(),
            )
        } else {
            (
                G::Q8_0,
                "not an expert tensor: MXFP4_MOE keeps it Q8_0".into(),
            )
        };
    }
    if cat == Category::Output || (has_tied && cat == Category::TokenEmbd) {
        let what = if cat == Category::Output {
            "output"
        } else {
            "tied token_embd (also the output)"
        };
        let nx = t.ne[0];
        return if !nx.is_multiple_of(base.block_size() as u64) {
            (
                G::Q8_0,
                format!(
                    "{what}: {nx} columns not a multiple of {} -> Q8_0",
                    base.block_size()
                ),
            )
        } else if is_iq2_group(ftype) || ftype == F::IQ3_XXS {
            (G::Q5_K, format!("{what} of a {ftype} file -> Q5_K"))
        } else if base != G::Q8_0 {
            (G::Q6_K, format!("{what} -> Q6_K"))
        } else {
            (base, format!("{what} stays {base}"))
        };
    }
    if cat == Category::TokenEmbd {
        return match ftype {
            F::IQ2_XXS | F::IQ2_XS | F::IQ1_S | F::IQ1_M => {
                (G::Q2_K, format!("token_embd of a {ftype} file -> Q2_K"))
            }
            F::IQ2_S | F::IQ2_M | F::IQ3_XXS => {
                (G::IQ3_S, format!("token_embd of a {ftype} file -> IQ3_S"))
            }
            _ => (base, "token_embd at the base type".into()),
        };
    }
    if is_iq2_group(ftype) {
        return match cat {
            _ if is_attn_v_like(cat) => {
                c.i_attention_wv += 1;
                if hp.n_gqa >= 4 || hp.n_expert >= 4 {
                    (
                        G::Q4_K,
                        format!(
                            "attn_v with GQA {} / {} experts -> Q4_K",
                            hp.n_gqa, hp.n_expert
                        ),
                    )
                } else {
                    (iq2_up, format!("attn_v of a {ftype} file -> {iq2_up}"))
                }
            }
            Category::AttnK if hp.n_expert == 8 => {
                (G::Q4_K, "attn_k of an 8-expert model -> Q4_K".into())
            }
            Category::FfnDown => {
                // This group counts ffn_down tensors, not layers.
                let i = c.i_ffn_down;
                c.i_ffn_down += 1;
                if i < hp.n_layer as i64 / 8 {
                    (
                        iq2_up,
                        format!("ffn_down {i} in the first eighth -> {iq2_up}"),
                    )
                } else {
                    (base, format!("ffn_down {i} at the base type"))
                }
            }
            Category::AttnOutput if hp.n_expert == 8 => {
                (G::Q5_K, "attn_output of an 8-expert model -> Q5_K".into())
            }
            Category::AttnOutput if matches!(ftype, F::IQ1_S | F::IQ1_M) => (
                G::IQ2_XXS,
                format!("attn_output of a {ftype} file -> IQ2_XXS"),
            ),
            Category::AttnOutput if matches!(ftype, F::IQ2_S | F::IQ2_M) => {
                (G::IQ3_S, format!("attn_output of a {ftype} file -> IQ3_S"))
            }
            _ => (base, "at the base type".into()),
        };
    }
    match cat {
        _ if is_attn_v_like(cat) => {
            let i = c.i_attention_wv;
            let n = c.n_attention_wv;
            c.i_attention_wv += 1;
            let gqa4 = hp.n_gqa >= 4;
            let (mut ty, mut why) = (base, format!("attn_v {i} of {n} at the base type"));
            let mut set = |t: G, w: String| {
                ty = t;
                why = w;
            };
            match ftype {
                F::Q2_K => set(
                    if gqa4 { G::Q4_K } else { G::Q3_K },
                    format!(
                        "attn_v with GQA {} -> {}",
                        hp.n_gqa,
                        if gqa4 { "Q4_K" } else { "Q3_K" }
                    ),
                ),
                F::IQ3_XXS if gqa4 => set(G::Q4_K, format!("attn_v with GQA {} -> Q4_K", hp.n_gqa)),
                F::IQ3_XXS if !has_imatrix => set(
                    G::IQ3_S,
                    "attn_v of an IQ3_XXS file without an imatrix -> IQ3_S".into(),
                ),
                F::IQ3_XXS => set(G::IQ3_XXS, "attn_v at the base type".into()),
                F::IQ3_XS | F::IQ3_S if gqa4 => {
                    set(G::Q4_K, format!("attn_v with GQA {} -> Q4_K", hp.n_gqa))
                }
                F::IQ3_M => set(G::Q4_K, "attn_v of an IQ3_M file -> Q4_K".into()),
                F::Q3_K_M => set(
                    if i < 2 { G::Q5_K } else { G::Q4_K },
                    format!("attn_v {i}: first two Q5_K, others Q4_K"),
                ),
                F::Q3_K_L => set(G::Q5_K, "attn_v -> Q5_K".into()),
                F::IQ4_NL | F::IQ4_XS if gqa4 => {
                    set(G::Q5_K, format!("attn_v with GQA {} -> Q5_K", hp.n_gqa))
                }
                F::Q4_K_M | F::Q5_K_M if use_more_bits(i, n) => set(
                    G::Q6_K,
                    format!("attn_v {i} of {n} is a use_more_bits layer -> Q6_K"),
                ),
                F::Q4_K_S if i < 4 => set(G::Q5_K, format!("attn_v {i} < 4 -> Q5_K")),
                _ => {}
            }
            if hp.is_70b && matches!(ty, G::Q3_K | G::Q4_K) {
                ty = G::Q5_K;
                why = "attn_v of a 70B model (8 heads share it) -> Q5_K".into();
            }
            if hp.n_expert == 8 {
                ty = G::Q8_0;
                why = "attn_v of an 8-expert model -> Q8_0".into();
            }
            (ty, why)
        }
        Category::AttnK if hp.n_expert == 8 => {
            (G::Q8_0, "attn_k of an 8-expert model -> Q8_0".into())
        }
        Category::AttnK | Category::AttnQ if ftype == F::IQ3_XS => (
            G::IQ3_XXS,
            "attn_q/attn_k of an IQ3_XS file -> IQ3_XXS".into(),
        ),
        Category::AttnK | Category::AttnQ if ftype == F::IQ3_XXS => {
            (G::IQ2_S, "attn_q/attn_k of an IQ3_XXS file -> IQ2_S".into())
        }
        Category::FfnDown => {
            let (i, n) = layer(c.i_ffn_down);
            c.i_ffn_down += 1;
            let keep = (base, format!("ffn_down {i} of {n} at the base type"));
            match ftype {
                F::Q2_K => (G::Q3_K, "ffn_down -> Q3_K".into()),
                F::IQ3_XXS if !has_imatrix => {
                    if i < n / 8 {
                        (
                            G::Q4_K,
                            format!("ffn_down {i} in the first eighth, no imatrix -> Q4_K"),
                        )
                    } else {
                        (
                            G::Q3_K,
                            format!("ffn_down {i} of an IQ3_XXS file without an imatrix -> Q3_K"),
                        )
                    }
                }
                F::Q3_K_M => {
                    if i < n / 16 {
                        (
                            G::Q5_K,
                            format!("ffn_down {i} in the first sixteenth -> Q5_K"),
                        )
                    } else {
                        (G::Q4_K, format!("ffn_down {i} -> Q4_K"))
                    }
                }
                F::IQ3_M if i < n / 8 || (hp.n_expert == 8 && use_more_bits(i, n)) => (
                    G::Q4_K,
                    format!("ffn_down {i} of {n} (first eighth or 8-expert use_more_bits) -> Q4_K"),
                ),
                F::Q3_K_L => (G::Q5_K, "ffn_down -> Q5_K".into()),
                F::Q4_K_M if use_more_bits(i, n) => (
                    G::Q6_K,
                    format!("ffn_down {i} of {n} is a use_more_bits layer -> Q6_K"),
                ),
                F::IQ4_NL | F::IQ4_XS if i < n / 8 && !has_imatrix => (
                    G::Q5_K,
                    format!("ffn_down {i} in the first eighth, no imatrix -> Q5_K"),
                ),
                F::Q5_K_M if use_more_bits(i, n) => (
                    G::Q6_K,
                    format!("ffn_down {i} of {n} is a use_more_bits layer -> Q6_K"),
                ),
                F::Q4_K_S if i < n / 8 => {
                    (G::Q5_K, format!("ffn_down {i} in the first eighth -> Q5_K"))
                }
                F::Q4_0 | F::Q5_0 if has_imatrix && i < n / 8 => {
                    let ty = if ftype == F::Q4_0 { G::Q4_1 } else { G::Q5_1 };
                    (
                        ty,
                        format!("ffn_down {i} in the first eighth with an imatrix -> {ty}"),
                    )
                }
                _ => keep,
            }
        }
        Category::AttnOutput => {
            if hp.n_expert == 8 {
                if matches!(
                    ftype,
                    F::Q2_K
                        | F::Q3_K_S
                        | F::Q3_K_M
                        | F::Q4_K_S
                        | F::Q4_K_M
                        | F::IQ3_XS
                        | F::IQ3_XXS
                        | F::IQ3_S
                        | F::IQ3_M
                        | F::IQ4_NL
                        | F::IQ4_XS
                ) {
                    (G::Q5_K, "attn_output of an 8-expert model -> Q5_K".into())
                } else {
                    (base, "attn_output at the base type".into())
                }
            } else {
                match ftype {
                    F::Q2_K => (G::Q3_K, "attn_output -> Q3_K".into()),
                    F::IQ3_XXS => (G::IQ3_S, "attn_output of an IQ3_XXS file -> IQ3_S".into()),
                    F::Q3_K_M | F::IQ3_M => {
                        (G::Q4_K, format!("attn_output of a {ftype} file -> Q4_K"))
                    }
                    F::Q3_K_L => (G::Q5_K, "attn_output -> Q5_K".into()),
                    _ => (base, "attn_output at the base type".into()),
                }
            }
        }
        Category::FfnGate | Category::FfnUp => {
            let counter = if cat == Category::FfnGate {
                &mut c.i_ffn_gate
            } else {
                &mut c.i_ffn_up
            };
            let (i, n) = layer(*counter);
            *counter += 1;
            let what = if cat == Category::FfnGate {
                "ffn_gate"
            } else {
                "ffn_up"
            };
            if ftype == F::IQ3_XS && i >= n / 8 && i < 7 * n / 8 {
                (
                    G::IQ3_XXS,
                    format!("{what} {i} of {n} in the middle layers of an IQ3_XS file -> IQ3_XXS"),
                )
            } else {
                (base, format!("{what} at the base type"))
            }
        }
        _ => (base, "at the base type".into()),
    }
}

/// One step up the precision ladder of the same family.
fn bump(ty: GgmlType) -> GgmlType {
    use GgmlType::*;
    match ty {
        IQ1_S => IQ1_M,
        IQ1_M => IQ2_XXS,
        IQ2_XXS => IQ2_XS,
        IQ2_XS => IQ2_S,
        IQ2_S => IQ3_XXS,
        IQ3_XXS => IQ3_S,
        IQ3_S => IQ4_XS,
        IQ4_XS | IQ4_NL => Q5_K,
        Q2_K => Q3_K,
        Q3_K => Q4_K,
        Q4_K => Q5_K,
        Q5_K => Q6_K,
        Q6_K => Q8_0,
        Q4_0 => Q5_0,
        Q4_1 => Q5_1,
        Q5_0 | Q5_1 => Q8_0,
        other => other,
    }
}

/// The better (more bits per weight) of two types.
fn at_least(ty: GgmlType, floor: GgmlType) -> GgmlType {
    if floor.bits_per_weight() > ty.bits_per_weight() {
        floor
    } else {
        ty
    }
}

/// Our rules, applied on top of the stock decision. Each returns its reason.
fn architecture_rules(
    stock: (GgmlType, String),
    arch: &ArchitectureInfo,
    role: &TensorRole,
    cat: Category,
    ftype: Ftype,
) -> (GgmlType, String) {
    let (ty, why) = stock;
    let base = ftype.base_type();
    let hi = at_least(bump(bump(base)), GgmlType::Q6_K);
    let with = |new: GgmlType, rule: String| -> (GgmlType, String) {
        if new != ty && new.bits_per_weight() > ty.bits_per_weight() {
            (new, format!("{rule} ({why} -> {new})"))
        } else {
            (ty, why.clone())
        }
    };
    // MoE: parts that run for every token are cheap relative to the experts.
    if arch.moe.is_some() {
        if matches!(
            role.role,
            Role::SharedExpertGate
                | Role::SharedExpertUp
                | Role::SharedExpertDown
                | Role::SharedExpertGateUp
        ) {
            return with(
                hi,
                "architecture-aware: shared experts run for every token".into(),
            );
        }
        if matches!(cat, Category::FfnGate | Category::FfnUp | Category::FfnDown)
            && !role.is_expert()
        {
            return with(
                hi,
                "architecture-aware: dense FFN layers of an MoE model run for every token".into(),
            );
        }
        if matches!(
            cat,
            Category::AttnQ
                | Category::AttnK
                | Category::AttnV
                | Category::AttnOutput
                | Category::AttnQkv
                | Category::AttnKvB
        ) || matches!(
            role.role,
            Role::AttnQA | Role::AttnQB | Role::AttnKvA | Role::AttnKvB
        ) {
            // Two steps above the base, not the >= Q6_K floor of the shared parts: on the
            // trained tiny MoE at Q3_K_M, Q5_K attention had lower KL divergence than Q6_K
            // and keeps the file within 2% of llama.cpp's (docs/moe.md).
            return with(bump(bump(base)), "architecture-aware: attention is a small share of an MoE model and runs for every token".into());
        }
    }
    // GQA: attn_v is 1/ratio the size of attn_q and each KV head serves `ratio` query heads.
    if let Some(a) = &arch.attention {
        if a.gqa_ratio >= 4 && cat == Category::AttnV {
            return with(
                bump(base),
                format!(
                    "architecture-aware: GQA {}:1, each V head serves {} query heads",
                    a.gqa_ratio, a.gqa_ratio
                ),
            );
        }
    }
    (ty, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama(
        layers: u64,
        h: u64,
        kv: u64,
        ff: u64,
        tied: bool,
    ) -> (ArchitectureInfo, Vec<PlanInput>) {
        let cfg = serde_json::json!({
            "model_type": "llama", "hidden_size": h, "num_hidden_layers": layers,
            "num_attention_heads": h / 64, "num_key_value_heads": kv, "vocab_size": 1024,
            "intermediate_size": ff, "tie_word_embeddings": tied
        });
        let arch = pajamas_arch::detect(&cfg).unwrap();
        let mut t = vec![PlanInput {
            name: "token_embd.weight".into(),
            ne: vec![h, 1024],
        }];
        for i in 0..layers {
            let kvd = kv * 64;
            for (n, ne) in [
                ("attn_norm.weight", vec![h]),
                ("attn_q.weight", vec![h, h]),
                ("attn_k.weight", vec![h, kvd]),
                ("attn_v.weight", vec![h, kvd]),
                ("attn_output.weight", vec![h, h]),
                ("ffn_norm.weight", vec![h]),
                ("ffn_gate.weight", vec![h, ff]),
                ("ffn_up.weight", vec![h, ff]),
                ("ffn_down.weight", vec![ff, h]),
            ] {
                t.push(PlanInput {
                    name: format!("blk.{i}.{n}"),
                    ne,
                });
            }
        }
        t.push(PlanInput {
            name: "output_norm.weight".into(),
            ne: vec![h],
        });
        if !tied {
            t.push(PlanInput {
                name: "output.weight".into(),
                ne: vec![h, 1024],
            });
        }
        (arch, t)
    }

    fn ty(p: &GgufPlan, name: &str) -> GgmlType {
        p.get(name).unwrap().ty
    }

    #[test]
    fn stock_q4_k_m() {
        let (arch, t) = llama(32, 512, 2, 1024, false);
        let p = plan_gguf(
            &t,
            &arch,
            Ftype::Q4_K_M,
            Rules::LlamaCpp,
            &Overrides::default(),
            false,
        )
        .unwrap();
        assert_eq!(ty(&p, "output.weight"), GgmlType::Q6_K);
        assert_eq!(ty(&p, "token_embd.weight"), GgmlType::Q4_K);
        assert_eq!(ty(&p, "blk.0.attn_norm.weight"), GgmlType::F32);
        for i in 0..32 {
            let more = use_more_bits(i, 32);
            let want = if more { GgmlType::Q6_K } else { GgmlType::Q4_K };
            assert_eq!(ty(&p, &format!("blk.{i}.attn_v.weight")), want, "{i}");
            assert_eq!(ty(&p, &format!("blk.{i}.ffn_down.weight")), want, "{i}");
            assert_eq!(ty(&p, &format!("blk.{i}.attn_q.weight")), GgmlType::Q4_K);
        }
    }

    #[test]
    fn tied_embeddings_and_fallback() {
        // SmolLM2-like: 576 columns are not a multiple of 256.
        let (arch, t) = llama(30, 576, 3, 1536, true);
        let p = plan_gguf(
            &t,
            &arch,
            Ftype::Q4_K_M,
            Rules::LlamaCpp,
            &Overrides::default(),
            false,
        )
        .unwrap();
        assert_eq!(
            ty(&p, "token_embd.weight"),
            GgmlType::Q8_0,
            "tied: output rule, 576 % 256 != 0"
        );
        assert_eq!(ty(&p, "blk.5.attn_q.weight"), GgmlType::Q5_0);
        assert_eq!(
            ty(&p, "blk.0.ffn_down.weight"),
            GgmlType::Q6_K,
            "1536 columns are fine"
        );
        assert_eq!(
            ty(&p, "blk.0.attn_v.weight"),
            GgmlType::Q8_0,
            "Q6_K falls back to Q8_0"
        );
        assert!(p
            .get("blk.5.attn_q.weight")
            .unwrap()
            .reason
            .contains("fallback"));
    }

    #[test]
    fn q3_k_m_and_overrides() {
        let (arch, t) = llama(32, 512, 8, 1024, false);
        let p = plan_gguf(
            &t,
            &arch,
            Ftype::Q3_K_M,
            Rules::LlamaCpp,
            &Overrides::default(),
            false,
        )
        .unwrap();
        assert_eq!(ty(&p, "blk.0.attn_v.weight"), GgmlType::Q5_K);
        assert_eq!(ty(&p, "blk.2.attn_v.weight"), GgmlType::Q4_K);
        assert_eq!(ty(&p, "blk.1.ffn_down.weight"), GgmlType::Q5_K);
        assert_eq!(ty(&p, "blk.2.ffn_down.weight"), GgmlType::Q4_K);
        assert_eq!(ty(&p, "blk.2.attn_output.weight"), GgmlType::Q4_K);
        assert_eq!(ty(&p, "blk.2.ffn_up.weight"), GgmlType::Q3_K);
        let o = Overrides {
            tensor_types: vec![(Regex::new("ffn_up").unwrap(), GgmlType::Q8_0)],
            output_tensor_type: Some(GgmlType::F16),
            ..Default::default()
        };
        let p = plan_gguf(&t, &arch, Ftype::Q3_K_M, Rules::LlamaCpp, &o, false).unwrap();
        assert_eq!(ty(&p, "blk.2.ffn_up.weight"), GgmlType::Q8_0);
        assert_eq!(ty(&p, "output.weight"), GgmlType::F16);
        let pure = Overrides {
            pure: true,
            ..Default::default()
        };
        let p = plan_gguf(&t, &arch, Ftype::Q3_K_M, Rules::LlamaCpp, &pure, false).unwrap();
        assert_eq!(ty(&p, "blk.0.attn_v.weight"), GgmlType::Q3_K);
        assert_eq!(ty(&p, "output.weight"), GgmlType::Q3_K);
        assert_eq!(ty(&p, "blk.0.attn_norm.weight"), GgmlType::F32);
    }

    #[test]
    fn architecture_aware_gqa() {
        let (arch, t) = llama(32, 512, 2, 1024, false); // GQA 4:1
        let p = plan_gguf(
            &t,
            &arch,
            Ftype::Q4_K_M,
            Rules::ArchitectureAware,
            &Overrides::default(),
            false,
        )
        .unwrap();
        let v = p.get("blk.4.attn_v.weight").unwrap();
        assert_eq!(
            v.ty,
            GgmlType::Q5_K,
            "not a use_more_bits layer: bumped one step"
        );
        assert!(v.reason.contains("GQA 4:1"));
        assert_eq!(
            ty(&p, "blk.0.attn_v.weight"),
            GgmlType::Q6_K,
            "stock already gives more"
        );
        let stock = plan_gguf(
            &t,
            &arch,
            Ftype::Q4_K_M,
            Rules::LlamaCpp,
            &Overrides::default(),
            false,
        )
        .unwrap();
        assert!(p.tensor_bytes() > stock.tensor_bytes());
        assert!(p.bits_per_weight() - stock.bits_per_weight() < 0.05);
    }

    #[test]
    fn stock_iquants() {
        // Llama-like, GQA 4:1, 32 layers (the oracle test checks every i-quant type
        // against llama-quantize --dry-run on real models).
        let (arch, t) = llama(32, 512, 2, 1024, false);
        let plan =
            |f, im| plan_gguf(&t, &arch, f, Rules::LlamaCpp, &Overrides::default(), im).unwrap();
        let p = plan(Ftype::IQ2_XS, true);
        assert_eq!(ty(&p, "output.weight"), GgmlType::Q5_K);
        assert_eq!(ty(&p, "token_embd.weight"), GgmlType::Q2_K);
        assert_eq!(ty(&p, "blk.7.attn_v.weight"), GgmlType::Q4_K, "GQA 4:1");
        assert_eq!(
            ty(&p, "blk.3.ffn_down.weight"),
            GgmlType::Q2_K,
            "first eighth"
        );
        assert_eq!(ty(&p, "blk.4.ffn_down.weight"), GgmlType::IQ2_XS);
        assert_eq!(ty(&p, "blk.4.attn_q.weight"), GgmlType::IQ2_XS);
        assert!(p.needs_imatrix().is_some());
        let p = plan(Ftype::IQ3_XXS, false);
        assert_eq!(ty(&p, "blk.4.attn_q.weight"), GgmlType::IQ2_S);
        assert_eq!(ty(&p, "blk.4.attn_output.weight"), GgmlType::IQ3_S);
        assert_eq!(
            ty(&p, "blk.1.ffn_down.weight"),
            GgmlType::Q4_K,
            "no imatrix"
        );
        assert_eq!(
            ty(&p, "blk.9.ffn_down.weight"),
            GgmlType::Q3_K,
            "no imatrix"
        );
        let p = plan(Ftype::IQ3_XS, true);
        assert_eq!(ty(&p, "blk.1.ffn_up.weight"), GgmlType::IQ3_S);
        assert_eq!(
            ty(&p, "blk.9.ffn_up.weight"),
            GgmlType::IQ3_XXS,
            "middle layers"
        );
        let p = plan(Ftype::IQ4_XS, false);
        assert_eq!(ty(&p, "blk.0.ffn_down.weight"), GgmlType::Q5_K);
        assert_eq!(ty(&p, "blk.9.ffn_down.weight"), GgmlType::IQ4_XS);
        assert!(p.needs_imatrix().is_none());
        // Aware rules keep the stock floor and move up the i-quant ladder.
        let aware = plan_gguf(
            &t,
            &arch,
            Ftype::IQ2_XS,
            Rules::ArchitectureAware,
            &Overrides::default(),
            true,
        )
        .unwrap();
        assert!(aware.tensor_bytes() >= plan(Ftype::IQ2_XS, true).tensor_bytes());
    }

    #[test]
    fn float_files() {
        let (arch, t) = llama(2, 256, 2, 512, false);
        let p = plan_gguf(
            &t,
            &arch,
            Ftype::F16,
            Rules::ArchitectureAware,
            &Overrides::default(),
            false,
        )
        .unwrap();
        assert_eq!(ty(&p, "blk.0.attn_q.weight"), GgmlType::F16);
        assert_eq!(ty(&p, "output.weight"), GgmlType::F16);
        assert_eq!(ty(&p, "blk.0.ffn_norm.weight"), GgmlType::F32);
        let p = plan_gguf(
            &t,
            &arch,
            Ftype::BF16,
            Rules::ArchitectureAware,
            &Overrides::default(),
            false,
        )
        .unwrap();
        assert_eq!(ty(&p, "blk.0.attn_q.weight"), GgmlType::BF16);
    }

    #[test]
    fn source_types_are_kept_unless_smaller() {
        let (arch, mut t) = llama(2, 256, 2, 512, false);
        t.push(PlanInput {
            name: "blk.0.ffn_down_exps.weight".into(),
            ne: vec![512, 256, 4],
        });
        let name = "blk.0.ffn_down_exps.weight";
        for (ftype, expect) in [
            (Ftype::F16, GgmlType::MXFP4),
            (Ftype::Q8_0, GgmlType::MXFP4),
            (Ftype::Q4_K_M, GgmlType::MXFP4),
            (Ftype::IQ3_S, GgmlType::IQ3_S),
        ] {
            let o = Overrides::default();
            let mut p = plan_gguf(&t, &arch, ftype, Rules::LlamaCpp, &o, false).unwrap();
            keep_source_type(&mut p, name, GgmlType::MXFP4, &o);
            let kept = p.get(name).unwrap();
            assert_eq!(kept.ty, expect, "{ftype}");
            assert_eq!(kept.bytes, kept.ty.row_bytes(512) as u64 * 256 * 4);
        }
        let o = Overrides {
            tensor_types: vec![(regex::Regex::new("ffn_down_exps").unwrap(), GgmlType::Q8_0)],
            ..Default::default()
        };
        let mut p = plan_gguf(&t, &arch, Ftype::Q4_K_M, Rules::LlamaCpp, &o, false).unwrap();
        keep_source_type(&mut p, name, GgmlType::MXFP4, &o);
        assert_eq!(ty(&p, name), GgmlType::Q8_0);
    }

    #[test]
    fn mxfp4_moe_files() {
        let (arch, mut t) = llama(2, 256, 2, 512, false);
        t.push(PlanInput {
            name: "blk.0.ffn_down_exps.weight".into(),
            ne: vec![512, 256, 4],
        });
        let p = plan_gguf(
            &t,
            &arch,
            Ftype::MXFP4_MOE,
            Rules::LlamaCpp,
            &Overrides::default(),
            false,
        )
        .unwrap();
        assert_eq!(ty(&p, "blk.0.ffn_down_exps.weight"), GgmlType::MXFP4);
        assert_eq!(ty(&p, "blk.0.attn_q.weight"), GgmlType::Q8_0);
        assert_eq!(ty(&p, "output.weight"), GgmlType::Q8_0);
        assert_eq!(ty(&p, "token_embd.weight"), GgmlType::Q8_0);
        assert_eq!(ty(&p, "blk.0.ffn_norm.weight"), GgmlType::F32);
        assert_eq!(Ftype::from_name("mxfp4_moe"), Some(Ftype::MXFP4_MOE));
        assert_eq!(Ftype::MXFP4_MOE.id(), 38);
    }
}
