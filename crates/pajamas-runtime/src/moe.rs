//! Mixture-of-experts feed-forward blocks: softmax routing to the top-k experts
//! (Mixtral, Qwen2-MoE, Qwen3-MoE), SwiGLU experts, and Qwen2-MoE's sigmoid-gated shared
//! expert. Tokens are grouped by expert so that each expert runs one batched product
//! over the tokens routed to it.

use crate::config::MoeConfig;
use crate::error::Result;
use crate::hook::LinearHook;
use crate::model::{granite_shared_mlp, read_checked, Linear, Mlp};
use crate::ops;
use crate::weights::WeightSource;

/// The weights of one MoE block.
#[derive(Debug, Clone)]
pub struct MoeWeights {
    /// `[n_experts x hidden]`: one routing logit per expert.
    pub router: Linear,
    pub experts: Vec<Mlp>,
    /// Always-on expert and its `[1 x hidden]` sigmoid gate (Qwen2-MoE).
    pub shared: Option<(Mlp, Option<Linear>)>,
    pub top_k: usize,
    pub norm_topk_prob: bool,
    /// Nemotron-H's sigmoid routing: correction bias (added for the choice only) and the
    /// factor the weights are scaled by.
    pub sigmoid: Option<(Vec<f32>, f32)>,
}

/// One token's choice: expert index and routing weight, `top_k` per token.
pub type Route = (usize, f32);

/// Routes each token (`logits` `[n x n_experts]`) to its `top_k` most probable experts:
/// softmax over all experts, the `top_k` largest probabilities (ties to the lower
/// index), renormalised to sum to 1 when `norm`. Returns `n * top_k` routes, each
/// token's in descending probability.
pub fn route(logits: &[f32], n_experts: usize, top_k: usize, norm: bool) -> Vec<Route> {
    let mut out = Vec::with_capacity(logits.len() / n_experts.max(1) * top_k);
    let mut order: Vec<usize> = Vec::with_capacity(n_experts);
    for row in logits.chunks_exact(n_experts) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let exps: Vec<f32> = row.iter().map(|&v| (v - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        order.clear();
        order.extend(0..n_experts);
        order.sort_by(|&a, &b| exps[b].total_cmp(&exps[a]).then(a.cmp(&b)));
        let chosen = &order[..top_k];
        let total: f32 = if norm {
            chosen.iter().map(|&e| exps[e] / sum).sum()
        } else {
            1.0
        };
        out.extend(chosen.iter().map(|&e| (e, exps[e] / sum / total)));
    }
    out
}

/// Nemotron-H's routing: sigmoid scores, the `top_k` largest `score + bias` (ties to the
/// lower index), weighted by their scores, renormalised when `norm`, times `scale`.
pub fn route_sigmoid(
    logits: &[f32],
    n_experts: usize,
    top_k: usize,
    bias: &[f32],
    norm: bool,
    scale: f32,
) -> Vec<Route> {
    let mut out = Vec::with_capacity(logits.len() / n_experts.max(1) * top_k);
    let mut order: Vec<usize> = Vec::with_capacity(n_experts);
    for row in logits.chunks_exact(n_experts) {
        let scores: Vec<f32> = row.iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect();
        let choice: Vec<f32> = scores.iter().zip(bias).map(|(s, b)| s + b).collect();
        order.clear();
        order.extend(0..n_experts);
        order.sort_by(|&a, &b| choice[b].total_cmp(&choice[a]).then(a.cmp(&b)));
        let chosen = &order[..top_k];
        let total: f32 = if norm {
            chosen.iter().map(|&e| scores[e]).sum::<f32>() + 1e-20
        } else {
            1.0
        };
        out.extend(chosen.iter().map(|&e| (e, scores[e] / total * scale)));
    }
    out
}

impl MoeWeights {
    /// Nemotron-H's block: router `mixer.gate` with `e_score_correction_bias`, relu^2
    /// experts `mixer.experts.E.{up,down}_proj`, relu^2 shared expert
    /// `mixer.shared_experts.*`.
    pub fn load_nemotron(
        src: &dyn WeightSource,
        layer: usize,
        hidden: usize,
        moe: &MoeConfig,
    ) -> Result<Self> {
        let p = format!("backbone.layers.{layer}.mixer.");
        let router = Linear::load(src, &format!("{p}gate"), moe.n_experts, hidden)?;
        let bias = read_checked(
            src,
            &format!("{p}gate.e_score_correction_bias"),
            &[moe.n_experts],
        )?;
        let experts = (0..moe.n_experts)
            .map(|e| Mlp::load_relu2(src, &format!("{p}experts.{e}."), moe.expert_ffn, hidden))
            .collect::<Result<Vec<_>>>()?;
        let shared = match moe.shared_ffn {
            Some(w) => Some((
                Mlp::load_relu2(src, &format!("{p}shared_experts."), w, hidden)?,
                None,
            )),
            None => None,
        };
        Ok(MoeWeights {
            router,
            experts,
            shared,
            top_k: moe.top_k,
            norm_topk_prob: moe.norm_topk_prob,
            sigmoid: Some((bias, moe.sigmoid_scale.unwrap_or(1.0))),
        })
    }

    /// Loads layer `layer`'s block. Tensor names follow the source's HF layout: Mixtral's
    /// `block_sparse_moe.{gate,experts.E.w1|w3|w2}` or Qwen's `mlp.{gate,experts.E.*_proj}`.
    pub fn load(
        src: &dyn WeightSource,
        layer: usize,
        hidden: usize,
        moe: &MoeConfig,
        mixtral_names: bool,
    ) -> Result<Self> {
        let p = format!("model.layers.{layer}.");
        let (block, [g, u, d]) = if mixtral_names {
            ("block_sparse_moe", ["w1", "w3", "w2"])
        } else {
            ("mlp", ["gate_proj", "up_proj", "down_proj"])
        };
        let router = Linear::load(src, &format!("{p}{block}.gate"), moe.n_experts, hidden)?;
        let experts = (0..moe.n_experts)
            .map(|e| {
                let x = format!("{p}{block}.experts.{e}.");
                Mlp::load_named(
                    src,
                    [&format!("{x}{g}"), &format!("{x}{u}"), &format!("{x}{d}")],
                    moe.expert_ffn,
                    hidden,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let shared = match moe.shared_ffn {
            None => None,
            Some(w) => {
                let mlp = Mlp::load(src, &format!("{p}mlp.shared_expert."), w, hidden)?;
                let gate_name = format!("{p}mlp.shared_expert_gate");
                let gate = if src.has_tensor(&format!("{gate_name}.weight")) {
                    Some(Linear::load(src, &gate_name, 1, hidden)?)
                } else {
                    None
                };
                Some((mlp, gate))
            }
        };
        Ok(MoeWeights {
            router,
            experts,
            shared,
            top_k: moe.top_k,
            norm_topk_prob: moe.norm_topk_prob,
            sigmoid: None,
        })
    }

    /// Granite 4.0-H's block in its HF layout: router `block_sparse_moe.router.layer`,
    /// experts stacked in `block_sparse_moe.input_linear` `[E, 2I, hidden]` (gate rows,
    /// then up rows, per expert) and `output_linear` `[E, hidden, I]`, and the fused
    /// `shared_mlp` as an ungated shared expert.
    pub fn load_granite(
        src: &dyn WeightSource,
        layer: usize,
        hidden: usize,
        moe: &MoeConfig,
    ) -> Result<Self> {
        let p = format!("model.layers.{layer}.");
        let (ne, w) = (moe.n_experts, moe.expert_ffn);
        let router = Linear::load(
            src,
            &format!("{p}block_sparse_moe.router.layer"),
            ne,
            hidden,
        )?;
        let in_name = format!("{p}block_sparse_moe.input_linear.weight");
        let out_name = format!("{p}block_sparse_moe.output_linear.weight");
        let fused = read_checked(src, &in_name, &[ne, 2 * w, hidden])?;
        let down = read_checked(src, &out_name, &[ne, hidden, w])?;
        let experts = (0..ne)
            .map(|e| {
                let m = &fused[e * 2 * w * hidden..(e + 1) * 2 * w * hidden];
                let (gate, up) = m.split_at(w * hidden);
                // Matrix `e` of a stacked tensor is reported to hooks as `name[e]`.
                let (fused_e, down_e) = (format!("{in_name}[{e}]"), format!("{out_name}[{e}]"));
                Mlp {
                    gate_proj: Linear::from_weight(fused_e.clone(), gate.to_vec(), w, hidden, None),
                    up_proj: Linear::from_weight(fused_e, up.to_vec(), w, hidden, None),
                    down_proj: Linear::from_weight(
                        down_e,
                        down[e * hidden * w..(e + 1) * hidden * w].to_vec(),
                        hidden,
                        w,
                        None,
                    ),
                    gelu: false,
                    relu2: false,
                }
            })
            .collect();
        let shared = match moe.shared_ffn {
            Some(sw) => Some((granite_shared_mlp(src, &p, sw, hidden)?, None)),
            None => None,
        };
        Ok(MoeWeights {
            router,
            experts,
            shared,
            top_k: moe.top_k,
            norm_topk_prob: true,
            sigmoid: None,
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
        let routes = match &self.sigmoid {
            Some((bias, scale)) => route_sigmoid(
                &logits,
                n_experts,
                self.top_k,
                bias,
                self.norm_topk_prob,
                *scale,
            ),
            None => route(&logits, n_experts, self.top_k, self.norm_topk_prob),
        };
        hook.on_route(layer, n_experts, &routes);
        // Each (token, slot) output, summed afterwards in slot order per token.
        let k = self.top_k;
        let mut slots = vec![0.0f32; n * k * hidden];
        let mut members: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n_experts];
        for (i, &(e, _)) in routes.iter().enumerate() {
            members[e].push((i / k, i % k));
        }
        for (e, list) in members.iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            let mut xs = Vec::with_capacity(list.len() * hidden);
            for &(t, _) in list {
                xs.extend_from_slice(&a[t * hidden..(t + 1) * hidden]);
            }
            let y = self.experts[e].forward(layer, &xs, list.len(), hook, convert);
            for (row, &(t, s)) in list.iter().enumerate() {
                let w = routes[t * k + s].1;
                let dst = &mut slots[(t * k + s) * hidden..(t * k + s + 1) * hidden];
                for (d, &v) in dst.iter_mut().zip(&y[row * hidden..(row + 1) * hidden]) {
                    *d = v * w;
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
        if let Some((mlp, gate)) = &self.shared {
            let mut y = mlp.forward(layer, a, n, hook, convert);
            if let Some(g) = gate {
                let gl = g.apply(layer, "shared_expert_gate", a, n, hook, convert);
                for (row, &z) in y.chunks_exact_mut(hidden).zip(&gl) {
                    let s = 1.0 / (1.0 + (-z).exp());
                    row.iter_mut().for_each(|v| *v *= s);
                }
            }
            ops::add_inplace(&mut out, &y);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_to_the_most_probable_experts() {
        // Two tokens, four experts.
        let logits = [0.0, 2.0, 1.0, -1.0, 3.0, 3.0, 0.0, 0.0];
        let r = route(&logits, 4, 2, false);
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 2, 0, 1]);
        let z: f32 = [0.0f32, 2.0, 1.0, -1.0].iter().map(|v| v.exp()).sum();
        assert!((r[0].1 - 2f32.exp() / z).abs() < 1e-6);
        // Ties go to the lower index; normalised weights sum to 1.
        let r = route(&logits, 4, 2, true);
        assert!((r[2].1 - 0.5).abs() < 1e-6 && (r[3].1 - 0.5).abs() < 1e-6);
        assert!((r[0].1 + r[1].1 - 1.0).abs() < 1e-6);
    }
}
