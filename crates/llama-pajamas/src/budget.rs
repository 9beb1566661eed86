//! Measured sensitivity of a tensor to each candidate type, for the budgeted plans of
//! `quantize llm --target-bpw / --target-size` (the solver is `pajamas_plan::budget`).
//!
//! A tensor's sensitivity at type T is the importance-weighted squared error of its
//! weights quantized to T and dequantized, `sum_rows sum_j imp_j (w_j - q_j)^2`, times
//! how often that error reaches the output:
//! - With an imatrix, `imp_j` is the mean squared activation of input column j (what the
//!   quantizer itself weights by), so for a matrix product `y = W x` with roughly
//!   uncorrelated inputs the sum is the expected squared error of `y` per token. Without
//!   one, `imp_j = 1` (the same quantity for unit-power inputs, as after an RMS norm).
//! - A routed expert runs for `experts_per_token / num_experts` of the tokens on average:
//!   its error is scaled by that share (the imatrix of an expert averages over the tokens
//!   routed to it only).
//! - An untied `token_embd` is a lookup: one row per token, so its expected error per
//!   token is the mean over rows, i.e. the sum divided by the vocabulary size. A tied one
//!   is also the output head and counts in full.
//!
//! Rows are sampled for speed: every k-th row (k = ceil(rows / 256)), the same rows
//! whatever the thread count, and the sum is scaled back to all rows.

use anyhow::{anyhow, bail, Result};
use pajamas_arch::{classify, ArchitectureInfo, Role};
use pajamas_plan::budget::{plan_budget, reference_ftype, trade, BudgetInfo, BudgetSpec, Trade};
use pajamas_plan::{plan_gguf, Ftype, GgufPlan, PlanInput};
use pajamas_quant::GgmlType;

use crate::quantize::QuantizeOptions;

/// The budgeted plan of a model: the ordinary plan at the file type nearest the target
/// (for the tensors that are not traded), every traded tensor measured at each candidate
/// (`read(i)` gives tensor `i` of `inputs` in GGUF layout), then the solver.
/// `header(plan)` is the size of the file header the plan would get.
pub fn budget_plan(
    spec: BudgetSpec,
    inputs: &[PlanInput],
    arch: &ArchitectureInfo,
    opts: &QuantizeOptions,
    imatrix: Option<&pajamas_imatrix::Imatrix>,
    header: &dyn Fn(&GgufPlan) -> u64,
    read: &mut dyn FnMut(usize) -> Result<Vec<f32>>,
) -> Result<GgufPlan> {
    if opts.overrides.pure {
        bail!("--pure and --target-bpw/--target-size exclude each other: a budget mixes types by design");
    }
    match spec {
        BudgetSpec::Bpw(b) if !(b.is_finite() && b > 0.0) => {
            bail!("--target-bpw {b}: expected a positive number of bits per weight")
        }
        _ => {}
    }
    let has_im = imatrix.is_some();
    let mut probe = plan_gguf(
        inputs,
        arch,
        Ftype::Q4_K_M,
        opts.rules,
        &opts.overrides,
        has_im,
    )?;
    // The header has the same size whatever the types: measure it on a stand-in.
    probe.budget = Some(BudgetInfo {
        spec,
        label: spec.label(),
        budget_bytes: 0,
        header_bytes: 0,
        achieved_bpw: 0.0,
        predicted_file_bytes: 0,
        sensitivity: 0.0,
        traded_tensors: 0,
    });
    let header_bytes = header(&probe);
    let elements = probe.elements().max(1);
    let bpw = match spec {
        BudgetSpec::Bpw(b) => b,
        BudgetSpec::FileSize(s) => s.saturating_sub(header_bytes) as f64 * 8.0 / elements as f64,
    };
    let reference = plan_gguf(
        inputs,
        arch,
        reference_ftype(bpw),
        opts.rules,
        &opts.overrides,
        has_im,
    )?;
    let trades = trade(&reference, arch, &opts.overrides);
    let has_output = inputs.iter().any(|t| t.name == "output.weight");
    let traded = trades
        .iter()
        .filter(|t| matches!(t, Trade::Candidates(_)))
        .count();
    if opts.progress {
        eprintln!(
            "budget {}: measuring {traded} tensors at each candidate type",
            spec.label()
        );
    }
    let mut sens = vec![Vec::new(); inputs.len()];
    for (i, tr) in trades.iter().enumerate() {
        if let Trade::Candidates(c) = tr {
            let t = &inputs[i];
            let data = read(i)?;
            let imp = imatrix.and_then(|im| im.importance(&t.name));
            sens[i] = sensitivity(
                &t.name,
                &data,
                &t.ne,
                c,
                imp.as_deref(),
                reach(&t.name, &t.ne, arch, has_output),
            )?;
        }
    }
    plan_budget(&reference, &trades, &sens, spec, header_bytes).map_err(|e| anyhow!("{e}"))
}

/// At most this many rows of a tensor are quantized to measure it.
pub const SAMPLED_ROWS: usize = 256;

/// How much of a tensor's error reaches the output per token (see the module docs).
pub fn reach(name: &str, ne: &[u64], arch: &ArchitectureInfo, has_output: bool) -> f64 {
    let role = classify(name, Some(arch.num_layers as u32)).role;
    let mut f = role_prior(role);
    if matches!(
        role,
        Role::ExpertGate | Role::ExpertUp | Role::ExpertDown | Role::ExpertGateUp
    ) {
        if let Some(m) = arch.moe.as_ref().filter(|m| m.num_experts > 0) {
            f *= m.experts_per_token.max(1) as f64 / m.num_experts as f64;
        }
    }
    if name == "token_embd.weight" {
        if has_output {
            let rows: u64 = ne.iter().skip(1).product();
            f /= rows.max(1) as f64;
        } else {
            f *= HEAD_PRIOR; // tied: also the output head
        }
    }
    f
}

/// The output head writes the logits, where the divergence from the original model is
/// measured, with no normalisation or residual stream in between.
pub const HEAD_PRIOR: f64 = 4.0;

/// Products whose error passes through a nonlinearity before it reaches the residual
/// stream: q and k through the attention softmax, gate and up through the SiLU gating,
/// Mamba's in-projection through the convolution, gating and scan.
pub const BEHIND_NONLINEARITY_PRIOR: f64 = 0.25;

/// The prior of a role (see docs/budget.md): 4 for the output head, 1/4 for the
/// products behind a nonlinearity, 1 for those that write the residual stream (v and
/// attention output through the attention's linear mix, ffn_down, ssm_out).
pub fn role_prior(role: Role) -> f64 {
    match role {
        Role::OutputHead => HEAD_PRIOR,
        Role::AttnQ
        | Role::AttnK
        | Role::AttnQA
        | Role::AttnQB
        | Role::FfnGate
        | Role::FfnUp
        | Role::FfnGateUp
        | Role::ExpertGate
        | Role::ExpertUp
        | Role::ExpertGateUp
        | Role::SharedExpertGate
        | Role::SharedExpertUp
        | Role::SharedExpertGateUp
        | Role::SsmInProj => BEHIND_NONLINEARITY_PRIOR,
        _ => 1.0,
    }
}

/// The sensitivity of `data` (rows of `ne[0]`) at each of `candidates`, times `reach`.
/// `importance` is the imatrix entry: one vector (shared by all rows) or one per matrix
/// of a stacked expert tensor.
pub fn sensitivity(
    name: &str,
    data: &[f32],
    ne: &[u64],
    candidates: &[GgmlType],
    importance: Option<&[f32]>,
    reach: f64,
) -> Result<Vec<f64>> {
    let n = ne[0] as usize;
    if n == 0 || !data.len().is_multiple_of(n) {
        return Err(anyhow!(
            "tensor '{name}': {} values are not rows of {n}",
            data.len()
        ));
    }
    let rows = data.len() / n;
    let n_mat = match importance {
        Some(imp) if imp.len() == n => 1,
        Some(imp) if imp.len() > n && imp.len().is_multiple_of(n) => imp.len() / n,
        Some(imp) => {
            return Err(anyhow!(
                "tensor '{name}': imatrix entry of {} values does not fit rows of {n}",
                imp.len()
            ))
        }
        None => 1,
    };
    if !rows.is_multiple_of(n_mat) {
        return Err(anyhow!(
            "tensor '{name}': {rows} rows do not split into the imatrix's {n_mat} matrices"
        ));
    }
    let per_mat = rows / n_mat;
    let stride = rows.div_ceil(SAMPLED_ROWS).max(1);
    // The sampled rows, grouped by matrix (each matrix has its own importance).
    let mut groups: Vec<(usize, Vec<f32>)> = Vec::new();
    let mut sampled = 0usize;
    for r in (0..rows).step_by(stride) {
        let m = r / per_mat;
        if groups.last().map(|g| g.0) != Some(m) {
            groups.push((m, Vec::new()));
        }
        groups
            .last_mut()
            .expect("pushed")
            .1
            .extend_from_slice(&data[r * n..(r + 1) * n]);
        sampled += 1;
    }
    let scale = rows as f64 / sampled as f64 * reach;
    let mut out = Vec::with_capacity(candidates.len());
    for &ty in candidates {
        let mut err = 0f64;
        for (m, buf) in &groups {
            let imp = importance.map(|imp| &imp[m * n..(m + 1) * n]);
            let q = pajamas_quant::quantize_rows(ty, buf, n, imp)
                .map_err(|e| anyhow!("measuring '{name}' at {ty}: {e}"))?;
            let d = pajamas_quant::dequantize_rows(ty, &q, n)
                .map_err(|e| anyhow!("measuring '{name}' at {ty}: {e}"))?;
            for (row_x, row_q) in buf.chunks_exact(n).zip(d.chunks_exact(n)) {
                let mut s = 0f64;
                for (j, (x, y)) in row_x.iter().zip(row_q).enumerate() {
                    let e = (*x - *y) as f64;
                    let w = imp.map_or(1.0, |imp| imp[j] as f64);
                    s += w * e * e;
                }
                err += s;
            }
        }
        out.push(err * scale);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(rows: usize, n: usize) -> Vec<f32> {
        (0..rows * n)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i % 13) as f32))
            .collect()
    }

    #[test]
    fn reach_of_roles() {
        let cfg = serde_json::json!({
            "model_type": "qwen3_moe", "hidden_size": 256, "num_hidden_layers": 4,
            "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 32,
            "vocab_size": 4096, "intermediate_size": 768, "moe_intermediate_size": 256,
            "num_experts": 8, "num_experts_per_tok": 2, "tie_word_embeddings": true
        });
        let arch = pajamas_arch::detect(&cfg).unwrap();
        let r = |n: &str, out: bool| reach(n, &[256, 4096], &arch, out);
        assert_eq!(r("blk.0.ffn_down_exps.weight", false), 0.25);
        assert_eq!(r("blk.0.ffn_gate_exps.weight", false), 0.25 * 0.25);
        assert_eq!(r("blk.0.attn_v.weight", false), 1.0);
        assert_eq!(r("blk.0.attn_q.weight", false), 0.25);
        assert_eq!(r("token_embd.weight", false), HEAD_PRIOR, "tied: the head");
        assert_eq!(r("token_embd.weight", true), 1.0 / 4096.0, "a lookup");
        assert_eq!(r("output.weight", true), HEAD_PRIOR);
    }

    #[test]
    fn more_bits_less_error_and_weights_count() {
        let (rows, n) = (64, 256);
        let x = data(rows, n);
        let ladder = pajamas_plan::budget::KQUANT_LADDER;
        let s = sensitivity("t", &x, &[n as u64, rows as u64], ladder, None, 1.0).unwrap();
        for w in s.windows(2) {
            assert!(w[1] < w[0], "{s:?}");
        }
        // Doubling the importance everywhere doubles the error (same quantization).
        let imp = vec![2.0f32; n];
        let s2 = sensitivity("t", &x, &[n as u64, rows as u64], ladder, Some(&imp), 0.5).unwrap();
        for (a, b) in s.iter().zip(&s2) {
            assert!((a - b).abs() <= 1e-9 * a.abs(), "{a} {b}");
        }
        // Sampling: of 256 rows (each of ours four times) every 4th is measured (our
        // 64), scaled to the whole tensor: four times our error.
        let big: Vec<f32> = x
            .chunks_exact(n)
            .flat_map(|r| std::iter::repeat_n(r, 4).flatten())
            .copied()
            .collect();
        let big_rows = 4 * rows * SAMPLED_ROWS / 256 * 4;
        let big: Vec<f32> = big.iter().cycle().take(big_rows * n).copied().collect();
        let sb = sensitivity(
            "t",
            &big,
            &[n as u64, big_rows as u64],
            &[GgmlType::Q4_K],
            None,
            1.0,
        )
        .unwrap();
        assert!((sb[0] / s[2] - 16.0).abs() < 1e-6, "{} {}", sb[0], s[2]);
        // An imatrix entry of the wrong length is an error naming the tensor.
        let e = sensitivity(
            "blk.0.x",
            &x,
            &[n as u64, rows as u64],
            ladder,
            Some(&imp[..10]),
            1.0,
        )
        .unwrap_err();
        assert!(e.to_string().contains("blk.0.x"));
    }
}
