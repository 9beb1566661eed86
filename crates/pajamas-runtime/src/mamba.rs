//! The Mamba-2 mixer of hybrid models (Granite 4.0-H), as a step-by-step recurrence over
//! the tokens of a chunk (the state-space dual form computes the same function; llama.cpp's
//! `ggml_ssm_scan` is this recurrence too):
//!
//! ```text
//! z | xBC | dt = in_proj(x)                       (d_inner | d_inner + 2 G N | H)
//! xBC = silu(causal depthwise conv1d(xBC) + conv bias)   (kernel K, zero history)
//! x | B | C = xBC                                 (H heads of P, G groups of N, G x N)
//! dt = softplus(dt + dt_bias); A = -exp(A_log)
//! per head h (group g = h / (H / G)), per token t:
//!     state_h = exp(dt_h A_h) state_h + dt_h x_h B_g^T      ([P x N])
//!     y_h = state_h C_g + D_h x_h
//! y = grouped_rmsnorm(y * silu(z)) * norm.weight  (G groups of d_inner / G)
//! out = out_proj(y)
//! ```

use rayon::prelude::*;

use crate::config::HybridConfig;
use crate::error::{Result, RuntimeError};
use crate::hook::LinearHook;
use crate::model::{read_checked, Linear};
use crate::weights::WeightSource;

/// One Mamba-2 mixer's weights (HF names under `model.layers.N.mamba.`).
#[derive(Debug, Clone)]
pub struct Mamba2 {
    pub in_proj: Linear,
    /// `[conv_dim x kernel]`.
    pub conv_weight: Vec<f32>,
    pub conv_bias: Vec<f32>,
    pub dt_bias: Vec<f32>,
    /// `A = -exp(A_log)`, one per head.
    pub a: Vec<f32>,
    pub d: Vec<f32>,
    /// Gated RMSNorm weight `[d_inner]`.
    pub norm: Vec<f32>,
    pub out_proj: Linear,
    pub shape: HybridConfig,
}

fn softplus(x: f32) -> f32 {
    // llama.cpp's ssm_scan: exact above 20.
    if x <= 20.0 {
        x.exp().ln_1p()
    } else {
        x
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// A tensor whose layout is fixed but whose shape sources spell differently (HF
/// `conv1d.weight` `[C, 1, K]` is GGUF `[C, K]`; `D` `[H]` is `[H, 1]`; the grouped norm
/// `[d_inner]` is `[G, d_inner / G]`): checked by element count.
fn read_flat(src: &dyn WeightSource, name: &str, len: usize) -> Result<Vec<f32>> {
    if !src.has_tensor(name) {
        return Err(RuntimeError::MissingTensor(name.to_string()));
    }
    let (shape, data) = src.read_tensor(name)?;
    if data.len() != len {
        return Err(RuntimeError::Shape {
            name: name.to_string(),
            found: shape,
            expected: vec![len],
        });
    }
    Ok(data)
}

impl Mamba2 {
    pub(crate) fn load(
        src: &dyn WeightSource,
        prefix: &str,
        hidden: usize,
        shape: &HybridConfig,
    ) -> Result<Self> {
        let (di, cd, nh, k) = (
            shape.d_inner(),
            shape.conv_dim(),
            shape.ssm_heads,
            shape.conv_kernel,
        );
        // GGUF stores A itself (`ssm_a`); HF checkpoints store A_log.
        let a = if src.has_tensor(&format!("{prefix}A")) {
            read_flat(src, &format!("{prefix}A"), nh)?
        } else {
            read_checked(src, &format!("{prefix}A_log"), &[nh])?
                .iter()
                .map(|v| -v.exp())
                .collect()
        };
        let conv_bias_name = format!("{prefix}conv1d.bias");
        let conv_bias = if src.has_tensor(&conv_bias_name) {
            read_checked(src, &conv_bias_name, &[cd])?
        } else {
            vec![0.0; cd]
        };
        Ok(Mamba2 {
            in_proj: Linear::load(src, &format!("{prefix}in_proj"), shape.d_in_proj(), hidden)?,
            conv_weight: read_flat(src, &format!("{prefix}conv1d.weight"), cd * k)?,
            conv_bias,
            dt_bias: read_checked(src, &format!("{prefix}dt_bias"), &[nh])?,
            a,
            d: read_flat(src, &format!("{prefix}D"), nh)?,
            norm: read_flat(src, &format!("{prefix}norm.weight"), di)?,
            out_proj: Linear::load(src, &format!("{prefix}out_proj"), hidden, di)?,
            shape: shape.clone(),
        })
    }

    /// `x` `[n x hidden]` (normalised) -> `[n x hidden]`, from a zero state.
    pub(crate) fn forward(
        &self,
        layer: usize,
        x: &[f32],
        n: usize,
        eps: f32,
        hook: &mut dyn LinearHook,
        convert: bool,
    ) -> Vec<f32> {
        let s = &self.shape;
        let (di, cd, nh, p, ns, g, k) = (
            s.d_inner(),
            s.conv_dim(),
            s.ssm_heads,
            s.ssm_head_dim,
            s.ssm_state,
            s.ssm_groups,
            s.conv_kernel,
        );
        let dip = s.d_in_proj();
        let zx = self.in_proj.apply(layer, "in_proj", x, n, hook, convert);
        // Causal depthwise conv over x, B, C, then SiLU.
        let mut xbc = vec![0.0f32; n * cd];
        xbc.par_chunks_mut(cd).enumerate().for_each(|(t, row)| {
            for (c, out) in row.iter_mut().enumerate() {
                let mut acc = self.conv_bias[c];
                for j in 0..k {
                    // tap j sees token t - (k - 1) + j
                    if let Some(src) = (t + j).checked_sub(k - 1) {
                        acc += self.conv_weight[c * k + j] * zx[src * dip + di + c];
                    }
                }
                *out = silu(acc);
            }
        });
        // The scan, head by head (heads are independent).
        let heads_per_group = nh / g;
        let mut y_heads: Vec<Vec<f32>> = (0..nh)
            .into_par_iter()
            .map(|h| {
                let gi = h / heads_per_group;
                let mut state = vec![0.0f32; p * ns];
                let mut y = vec![0.0f32; n * p];
                for t in 0..n {
                    let dt = softplus(zx[t * dip + di + cd + h] + self.dt_bias[h]);
                    let da = (dt * self.a[h]).exp();
                    let row = &xbc[t * cd..(t + 1) * cd];
                    let b = &row[di + gi * ns..di + (gi + 1) * ns];
                    let c = &row[di + g * ns + gi * ns..di + g * ns + (gi + 1) * ns];
                    for pi in 0..p {
                        let xv = row[h * p + pi];
                        let st = &mut state[pi * ns..(pi + 1) * ns];
                        let mut acc = 0.0f32;
                        for si in 0..ns {
                            st[si] = st[si] * da + b[si] * (xv * dt);
                            acc += st[si] * c[si];
                        }
                        y[t * p + pi] = acc + self.d[h] * xv;
                    }
                }
                y
            })
            .collect();
        // Gate with silu(z), grouped RMSNorm, weight.
        let mut y = vec![0.0f32; n * di];
        let group = di / g;
        y.par_chunks_mut(di).enumerate().for_each(|(t, row)| {
            for (h, yh) in y_heads.iter().enumerate() {
                for pi in 0..p {
                    let i = h * p + pi;
                    row[i] = yh[t * p + pi] * silu(zx[t * dip + i]);
                }
            }
            for (gi, chunk) in row.chunks_mut(group).enumerate() {
                let ms = chunk.iter().map(|v| v * v).sum::<f32>() / group as f32;
                let scale = 1.0 / (ms + eps).sqrt();
                for (j, v) in chunk.iter_mut().enumerate() {
                    *v = *v * scale * self.norm[gi * group + j];
                }
            }
        });
        y_heads.clear();
        self.out_proj.apply(layer, "out_proj", &y, n, hook, convert)
    }
}
