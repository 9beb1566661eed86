//! Budgeted plans (`--target-bpw`, `--target-size`): pick each tensor's type so that the
//! sum of measured sensitivities is as small as possible within a byte budget.
//!
//! The pieces:
//! - [`BudgetSpec`]: what the user asked for (bits per weight, or a file size).
//! - [`trade`]: which tensors take part in the trade and which candidate types each may
//!   take. Tensors that are never quantized (1-D, norms, routers, SSM conv), tensors a
//!   user override fixes, and, with the architecture-aware rules on an MoE model, the
//!   parts that run for every token (attention, shared experts, dense FFN layers) keep
//!   the type the ordinary plan gives them and are not traded.
//! - [`solve`]: the multiple-choice knapsack over the traded tensors (exact dynamic
//!   programme over bytes rounded up to a fixed unit).
//! - [`plan_budget`]: the resulting [`GgufPlan`], every tensor with its reason.
//!
//! The sensitivities themselves are measured by the caller (they need the weights).

use pajamas_arch::{classify, ArchitectureInfo, Role};
use pajamas_quant::GgmlType;
use serde::Serialize;

use crate::ftype::Ftype;
use crate::gguf::{GgufPlan, Overrides, PlannedTensor, Rules};

/// Alignment of every tensor's data in a GGUF file we write (`general.alignment` default).
pub const TENSOR_ALIGNMENT: u64 = 32;

/// The k-quant ladder every traded tensor may take (when its rows fit the block size).
pub const KQUANT_LADDER: &[GgmlType] = &[
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_0,
];

/// Types offered when a row is not a multiple of 256 (llama.cpp's own fallbacks for the
/// k-quants), so that such tensors still take part in the trade.
pub const SMALL_BLOCK_LADDER: &[GgmlType] = &[GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0];

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetSpec {
    /// Tensor data bits over all tensor elements (llama.cpp's "BPW" as its loader prints
    /// it: `n_bytes * 8 / n_elements` over every tensor, header excluded).
    Bpw(f64),
    /// Bytes of the output file, header and alignment padding included.
    FileSize(u64),
}

impl BudgetSpec {
    /// The name of the output (`bpw4.50`, `size5000000`): a folder and a file suffix.
    pub fn label(&self) -> String {
        match self {
            BudgetSpec::Bpw(b) => format!("bpw{b:.2}"),
            BudgetSpec::FileSize(s) => format!("size{s}"),
        }
    }
}

/// Parses a size: a number with an optional unit, `5MB` (10^6), `4.2MiB` (2^20), `120M`
/// (10^6), `900K`, `3GB`, `1.5GiB`, or plain bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{s}': expected a size such as 5MB, 4.2MiB or 120M"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        u => {
            return Err(format!(
                "'{s}': unknown unit '{u}' (B, K/KB, M/MB, G/GB, KiB, MiB, GiB)"
            ))
        }
    };
    let bytes = (value * mult).floor();
    if !(bytes.is_finite() && bytes >= 1.0) {
        return Err(format!("'{s}': the size must be positive"));
    }
    Ok(bytes as u64)
}

/// One candidate of one tensor: its type, its cost in budget bytes, its sensitivity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub ty: GgmlType,
    pub bytes: u64,
    pub error: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Solution {
    /// For each item, the index of the chosen candidate.
    pub pick: Vec<usize>,
    pub bytes: u64,
    pub error: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BudgetError {
    #[error("the budget of {budget} bytes is below the smallest possible total of {min} bytes")]
    TooSmall { budget: u64, min: u64 },
    #[error("item {0} has no candidate")]
    Empty(usize),
}

/// The number of steps the byte axis is cut into. Fixed (not derived from the budget), so
/// that a larger budget can only allow more: the total sensitivity never goes up with the
/// budget.
const STEPS: u64 = 1 << 17;

/// Multiple-choice knapsack: one candidate per item, total bytes <= `budget`, minimal
/// total error. Exact dynamic programme over the bytes above each item's cheapest
/// candidate, rounded up to a unit of (sum of the largest extras) / 2^17 — exact when
/// that sum is at most 2^17 bytes, and otherwise never over budget, losing at most one
/// unit per item. Ties go to fewer bytes; the result is deterministic.
pub fn solve(items: &[Vec<Choice>], budget: u64) -> Result<Solution, BudgetError> {
    let mut base = 0u64;
    let mut max_extra = 0u64;
    for (i, c) in items.iter().enumerate() {
        let lo = c
            .iter()
            .map(|x| x.bytes)
            .min()
            .ok_or(BudgetError::Empty(i))?;
        let hi = c.iter().map(|x| x.bytes).max().unwrap_or(lo);
        base += lo;
        max_extra += hi - lo;
    }
    if base > budget {
        return Err(BudgetError::TooSmall { budget, min: base });
    }
    if budget - base >= max_extra {
        // Everything fits: each item's least error (ties: fewer bytes).
        let pick: Vec<usize> = items
            .iter()
            .map(|c| {
                (0..c.len())
                    .min_by(|&a, &b| {
                        c[a].error
                            .total_cmp(&c[b].error)
                            .then(c[a].bytes.cmp(&c[b].bytes))
                            .then(a.cmp(&b))
                    })
                    .unwrap_or(0)
            })
            .collect();
        let bytes = pick.iter().zip(items).map(|(&j, c)| c[j].bytes).sum();
        let error = pick.iter().zip(items).map(|(&j, c)| c[j].error).sum();
        return Ok(Solution { pick, bytes, error });
    }
    let unit = max_extra.div_ceil(STEPS).max(1);
    let cap = ((budget - base) / unit).min(max_extra.div_ceil(unit)) as usize;
    // dp[c]: least total error of the items so far with rounded extra bytes <= c.
    let mut dp = vec![0f64; cap + 1];
    let mut next = vec![0f64; cap + 1];
    let mut choice: Vec<Vec<u16>> = Vec::with_capacity(items.len());
    for c in items {
        let lo = c.iter().map(|x| x.bytes).min().unwrap_or(0);
        // Candidates by increasing cost, so ties keep the cheaper one.
        let mut order: Vec<usize> = (0..c.len()).collect();
        order.sort_by(|&a, &b| c[a].bytes.cmp(&c[b].bytes).then(a.cmp(&b)));
        let w: Vec<usize> = order
            .iter()
            .map(|&j| (c[j].bytes - lo).div_ceil(unit) as usize)
            .collect();
        let mut pick = vec![u16::MAX; cap + 1];
        for cc in 0..=cap {
            let mut best = f64::INFINITY;
            let mut arg = u16::MAX;
            for (k, &j) in order.iter().enumerate() {
                if w[k] > cc {
                    break;
                }
                let v = dp[cc - w[k]] + c[j].error;
                if v < best {
                    best = v;
                    arg = j as u16;
                }
            }
            next[cc] = best;
            pick[cc] = arg;
        }
        std::mem::swap(&mut dp, &mut next);
        choice.push(pick);
    }
    let mut pick = vec![0usize; items.len()];
    let mut cc = cap;
    for i in (0..items.len()).rev() {
        let j = choice[i][cc] as usize;
        pick[i] = j;
        let lo = items[i].iter().map(|x| x.bytes).min().unwrap_or(0);
        cc -= (items[i][j].bytes - lo).div_ceil(unit) as usize;
    }
    let bytes = pick.iter().zip(items).map(|(&j, c)| c[j].bytes).sum();
    let error = pick.iter().zip(items).map(|(&j, c)| c[j].error).sum();
    Ok(Solution { pick, bytes, error })
}

/// How a tensor enters the budgeted plan.
#[derive(Debug, Clone)]
pub enum Trade {
    /// Keeps the type of the ordinary plan, for this reason.
    Fixed(String),
    /// Traded among these candidate types (sorted by bits per weight).
    Candidates(Vec<GgmlType>),
}

/// The parts of an MoE model that the architecture-aware rules protect: they run for
/// every token and are a small share of the weights.
fn protected_in_moe(role: Role) -> bool {
    matches!(
        role,
        Role::SharedExpertGate
            | Role::SharedExpertUp
            | Role::SharedExpertDown
            | Role::SharedExpertGateUp
            | Role::AttnQ
            | Role::AttnK
            | Role::AttnV
            | Role::AttnQkv
            | Role::AttnOutput
            | Role::AttnQA
            | Role::AttnQB
            | Role::AttnKvA
            | Role::AttnKvB
            | Role::FfnGate
            | Role::FfnUp
            | Role::FfnDown
            | Role::FfnGateUp
    )
}

/// Which tensors of `reference` (the ordinary plan at the file type nearest the target)
/// are traded, and their candidates.
pub fn trade(reference: &GgufPlan, arch: &ArchitectureInfo, overrides: &Overrides) -> Vec<Trade> {
    reference
        .tensors
        .iter()
        .map(|t| {
            if !t.ty.is_quantized() {
                return Trade::Fixed(t.reason.clone());
            }
            let user = overrides
                .tensor_types
                .iter()
                .any(|(re, _)| re.is_match(&t.name))
                || (overrides.output_tensor_type.is_some() && t.name == "output.weight")
                || (overrides.token_embedding_type.is_some() && t.name == "token_embd.weight");
            if user {
                return Trade::Fixed(t.reason.clone());
            }
            let role = classify(&t.name, Some(arch.num_layers as u32));
            if reference.rules == Rules::ArchitectureAware
                && arch.moe.is_some()
                && protected_in_moe(role.role)
            {
                return Trade::Fixed(format!("budget: protected, not traded; {}", t.reason));
            }
            let ne0 = t.ne[0];
            // The i-quants are not offered: on demo with an imatrix they made the file
            // worse (docs/budget.md).
            let mut c: Vec<GgmlType> = KQUANT_LADDER
                .iter()
                .copied()
                .filter(|ty| ne0.is_multiple_of(ty.block_size() as u64))
                .collect();
            if !ne0.is_multiple_of(256) {
                for ty in SMALL_BLOCK_LADDER {
                    if ne0.is_multiple_of(ty.block_size() as u64) && !c.contains(ty) {
                        c.push(*ty);
                    }
                }
            }
            c.sort_by(|a, b| {
                a.bits_per_weight()
                    .total_cmp(&b.bits_per_weight())
                    .then(a.id().cmp(&b.id()))
            });
            if c.len() < 2 {
                Trade::Fixed(t.reason.clone())
            } else {
                Trade::Candidates(c)
            }
        })
        .collect()
}

/// The bytes of a tensor of dims `ne` in `ty`.
pub fn tensor_bytes(ne: &[u64], ty: GgmlType) -> u64 {
    let rows: u64 = ne.iter().skip(1).product();
    ty.row_bytes(ne[0] as usize) as u64 * rows
}

fn cost(bytes: u64, spec: BudgetSpec) -> u64 {
    match spec {
        BudgetSpec::Bpw(_) => bytes,
        BudgetSpec::FileSize(_) => bytes.div_ceil(TENSOR_ALIGNMENT) * TENSOR_ALIGNMENT,
    }
}

/// The file type whose base type is nearest to `bpw` (its rules give the protected
/// tensors their types, and it is recorded as `general.file_type`).
pub fn reference_ftype(bpw: f64) -> Ftype {
    let options = [
        (Ftype::Q2_K, 2.625),
        (Ftype::Q3_K_M, 3.4375),
        (Ftype::Q4_K_M, 4.5),
        (Ftype::Q5_K_M, 5.5),
        (Ftype::Q6_K, 6.5625),
        (Ftype::Q8_0, 8.5),
    ];
    options
        .iter()
        .min_by(|a, b| (a.1 - bpw).abs().total_cmp(&(b.1 - bpw).abs()))
        .map(|o| o.0)
        .expect("non-empty")
}

impl GgufPlan {
    /// The output's name: the budget label (`bpw4.50`) or the file type (`Q4_K_M`).
    pub fn precision_name(&self) -> String {
        match &self.budget {
            Some(b) => b.label.clone(),
            None => self.ftype.name().to_string(),
        }
    }
}

/// The budget and what the plan achieves, recorded in the plan and the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetInfo {
    pub spec: BudgetSpec,
    /// `bpw4.50`, `size5000000`: the output's folder and file suffix.
    pub label: String,
    /// The budget in the solver's bytes (tensor data; padded for a file size).
    pub budget_bytes: u64,
    /// The header estimate taken out of a file-size budget.
    pub header_bytes: u64,
    /// Tensor data bits over all elements.
    pub achieved_bpw: f64,
    /// Header + padded tensor data: the size of the file.
    pub predicted_file_bytes: u64,
    /// Sum of the traded tensors' sensitivities.
    pub sensitivity: f64,
    pub traded_tensors: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanBudgetError {
    #[error("{what}: the smallest mix is {min_bpw:.3} bits/weight ({min_bytes} bytes{header}); every traded tensor at its cheapest type and the others fixed. Raise the budget")]
    TooSmall {
        what: String,
        min_bytes: u64,
        min_bpw: f64,
        header: String,
    },
    #[error("tensor '{0}': {1} sensitivities for {2} candidates")]
    Mismatch(String, usize, usize),
}

/// The budgeted plan: `reference` with every traded tensor's type chosen by [`solve`].
/// `sensitivity[i]` holds one value per candidate of tensor `i` (empty for fixed ones);
/// `header_bytes` is the file's header size (used with [`BudgetSpec::FileSize`]).
pub fn plan_budget(
    reference: &GgufPlan,
    trades: &[Trade],
    sensitivity: &[Vec<f64>],
    spec: BudgetSpec,
    header_bytes: u64,
) -> Result<GgufPlan, PlanBudgetError> {
    let elements = reference.elements();
    let limit = match spec {
        BudgetSpec::Bpw(b) => (b * elements as f64 / 8.0).floor() as u64,
        BudgetSpec::FileSize(s) => s.saturating_sub(header_bytes),
    };
    let mut fixed = 0u64;
    let mut items = Vec::new();
    let mut item_of = vec![None; reference.tensors.len()];
    for (i, (t, tr)) in reference.tensors.iter().zip(trades).enumerate() {
        match tr {
            Trade::Fixed(_) => fixed += cost(t.bytes, spec),
            Trade::Candidates(c) => {
                let s = &sensitivity[i];
                if s.len() != c.len() {
                    return Err(PlanBudgetError::Mismatch(t.name.clone(), s.len(), c.len()));
                }
                item_of[i] = Some(items.len());
                items.push(
                    c.iter()
                        .zip(s)
                        .map(|(&ty, &error)| Choice {
                            ty,
                            bytes: cost(tensor_bytes(&t.ne, ty), spec),
                            error,
                        })
                        .collect::<Vec<_>>(),
                );
            }
        }
    }
    let too_small = |min: u64| {
        let min_bytes = fixed + min;
        PlanBudgetError::TooSmall {
            what: spec.label(),
            min_bytes: min_bytes
                + if matches!(spec, BudgetSpec::FileSize(_)) {
                    header_bytes
                } else {
                    0
                },
            min_bpw: min_bytes as f64 * 8.0 / elements.max(1) as f64,
            header: if matches!(spec, BudgetSpec::FileSize(_)) {
                format!(" with a {header_bytes}-byte header")
            } else {
                " of tensor data".into()
            },
        }
    };
    let min_items: u64 = items
        .iter()
        .map(|c: &Vec<Choice>| c.iter().map(|x| x.bytes).min().unwrap_or(0))
        .sum();
    if fixed > limit {
        return Err(too_small(min_items));
    }
    let sol = solve(&items, limit - fixed).map_err(|_| too_small(min_items))?;
    let mut tensors = Vec::with_capacity(reference.tensors.len());
    for (i, (t, tr)) in reference.tensors.iter().zip(trades).enumerate() {
        let mut p = t.clone();
        match (tr, item_of[i]) {
            (Trade::Candidates(_), Some(k)) => {
                let c = &items[k];
                let j = sol.pick[k];
                p.ty = c[j].ty;
                p.bytes = tensor_bytes(&t.ne, p.ty);
                let all = c
                    .iter()
                    .map(|x| format!("{} {:.3e}", x.ty, x.error))
                    .collect::<Vec<_>>()
                    .join(", ");
                p.reason = format!(
                    "budget: sensitivity {:.3e} at {} [{all}]",
                    c[j].error, c[j].ty
                );
            }
            (Trade::Fixed(why), _) => p.reason = why.clone(),
            _ => unreachable!("items follow trades"),
        }
        tensors.push(p);
    }
    let data: u64 = tensors.iter().map(|t: &PlannedTensor| t.bytes).sum();
    let padded: u64 = tensors
        .iter()
        .map(|t| cost(t.bytes, BudgetSpec::FileSize(0)))
        .sum();
    Ok(GgufPlan {
        ftype: reference.ftype,
        rules: reference.rules,
        tensors,
        budget: Some(BudgetInfo {
            spec,
            label: spec.label(),
            budget_bytes: limit,
            header_bytes,
            achieved_bpw: data as f64 * 8.0 / elements.max(1) as f64,
            predicted_file_bytes: header_bytes + padded,
            sensitivity: sol.error,
            traded_tensors: items.len(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(ty: GgmlType, bytes: u64, error: f64) -> Choice {
        Choice { ty, bytes, error }
    }

    /// Every combination, for checking the solver on small cases.
    fn brute(items: &[Vec<Choice>], budget: u64) -> Option<f64> {
        let mut best: Option<f64> = None;
        let mut idx = vec![0usize; items.len()];
        loop {
            let bytes: u64 = idx.iter().zip(items).map(|(&j, c)| c[j].bytes).sum();
            let err: f64 = idx.iter().zip(items).map(|(&j, c)| c[j].error).sum();
            if bytes <= budget && best.is_none_or(|b| err < b) {
                best = Some(err);
            }
            let mut k = 0;
            loop {
                if k == items.len() {
                    return best;
                }
                idx[k] += 1;
                if idx[k] < items[k].len() {
                    break;
                }
                idx[k] = 0;
                k += 1;
            }
        }
    }

    /// A deterministic pseudo-random sequence (splitmix64).
    fn rng(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn random_items(seed: u64, n: usize) -> Vec<Vec<Choice>> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                let scale = 1 + rng(&mut s) % 40;
                let mut err = 1.0 + (rng(&mut s) % 1000) as f64;
                KQUANT_LADDER
                    .iter()
                    .map(|&ty| {
                        err *= 0.2 + (rng(&mut s) % 60) as f64 / 100.0;
                        ch(ty, (ty.bits_per_weight() * scale as f64) as u64, err)
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn hand_checked_case() {
        use GgmlType::*;
        // Two tensors: A is cheap to improve, B expensive. Budget 30 bytes.
        let items = vec![
            vec![ch(Q2_K, 10, 8.0), ch(Q4_K, 15, 2.0), ch(Q8_0, 25, 0.5)],
            vec![ch(Q2_K, 10, 5.0), ch(Q4_K, 20, 4.0), ch(Q8_0, 30, 0.0)],
        ];
        // All options within 30: (Q2,Q2)=13 @20, (Q4,Q2)=7 @25, (Q8,Q2)=5.5 @35 no,
        // (Q2,Q4)=12 @30, (Q4,Q4) @35 no. Best: A at Q4_K, B at Q2_K.
        let s = solve(&items, 30).unwrap();
        assert_eq!(s.pick, vec![1, 0]);
        assert_eq!(s.bytes, 25);
        assert_eq!(s.error, 7.0);
        // 35 bytes: (Q8,Q2)=5.5 beats (Q4,Q4)=6.
        let s = solve(&items, 35).unwrap();
        assert_eq!((s.pick.clone(), s.error), (vec![2, 0], 5.5));
        // Everything at the top fits at 55.
        assert_eq!(solve(&items, 55).unwrap().error, 0.5);
        assert_eq!(
            solve(&items, 19),
            Err(BudgetError::TooSmall {
                budget: 19,
                min: 20
            })
        );
    }

    #[test]
    fn matches_brute_force_and_respects_budget() {
        for seed in 0..40 {
            let items = random_items(seed, 5);
            let lo: u64 = items.iter().map(|c| c[0].bytes).sum();
            let hi: u64 = items.iter().map(|c| c[5].bytes).sum();
            for b in (lo..=hi + 5).step_by(7) {
                let s = solve(&items, b).unwrap();
                assert!(s.bytes <= b, "seed {seed} budget {b}: {} bytes", s.bytes);
                let want = brute(&items, b).unwrap();
                assert!(
                    (s.error - want).abs() <= 1e-9 * want.max(1.0),
                    "seed {seed} budget {b}: {} vs best {want}",
                    s.error
                );
            }
        }
    }

    #[test]
    fn larger_budget_never_worse_even_when_rounded() {
        // Large byte counts force a unit > 1 byte: still within budget and monotone.
        let mut items = random_items(7, 60);
        for c in &mut items {
            for x in c.iter_mut() {
                x.bytes *= 100_003;
            }
        }
        let lo: u64 = items.iter().map(|c| c[0].bytes).sum();
        let hi: u64 = items.iter().map(|c| c[5].bytes).sum();
        let mut last = f64::INFINITY;
        let steps = 12;
        for k in 0..=steps {
            let b = lo + (hi - lo) / steps * k;
            let s = solve(&items, b).unwrap();
            assert!(s.bytes <= b);
            assert!(s.error <= last, "budget {b}: {} > {last}", s.error);
            last = s.error;
        }
        assert_eq!(
            solve(&items, hi).unwrap().error,
            items.iter().map(|c| c[5].error).sum::<f64>()
        );
    }

    #[test]
    fn sizes_and_labels() {
        assert_eq!(parse_size("5MB").unwrap(), 5_000_000);
        assert_eq!(parse_size("4.2MiB").unwrap(), (4.2 * 1048576.0f64) as u64);
        assert_eq!(parse_size("120M").unwrap(), 120_000_000);
        assert_eq!(parse_size("1234").unwrap(), 1234);
        assert!(parse_size("5XB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("MB").is_err());
        assert_eq!(BudgetSpec::Bpw(4.5).label(), "bpw4.50");
        assert_eq!(reference_ftype(4.1), Ftype::Q4_K_M);
        assert_eq!(reference_ftype(3.2), Ftype::Q3_K_M);
    }
}
