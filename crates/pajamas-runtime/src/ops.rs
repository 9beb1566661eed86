//! The kernels of the forward pass, over row-major f32 matrices. Every kernel is
//! parallel over independent rows (or output blocks, for the matrix product) and reduces
//! each value in a fixed order, so results do not depend on the number of threads.

use rayon::prelude::*;

/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_FLOPS: usize = 1 << 16;

/// `y[n x out] = x[n x k] * w^T`, where `w` is `[out x k]` row-major (the PyTorch
/// `Linear` layout). `y` is overwritten.
pub fn matmul_wt(x: &[f32], n: usize, k: usize, w: &[f32], out: usize, y: &mut [f32]) {
    assert_eq!(x.len(), n * k, "lhs size");
    assert_eq!(w.len(), out * k, "weight size");
    assert_eq!(y.len(), n * out, "output size");
    if n == 0 || out == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0);
        return;
    }
    let parallelism = if n * out * k >= PARALLEL_MIN_FLOPS && rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the three buffers have the asserted sizes; the strides below address
    // y as n x out (row stride out), x as n x k (row stride k) and w^T as k x out, whose
    // element (kk, j) is w[j * k + kk] (column stride k, row stride 1). y does not alias
    // x or w (it is a unique borrow).
    unsafe {
        gemm::gemm(
            n,
            out,
            k,
            y.as_mut_ptr(),
            1,
            out as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Adds `bias` (length `dim`) to every row of `y`.
pub fn add_bias(y: &mut [f32], bias: &[f32]) {
    let dim = bias.len();
    y.par_chunks_mut(dim).for_each(|row| {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    });
}

fn rms_scale(row: &[f32], eps: f32) -> f32 {
    let ss: f64 = row.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let mean = ss / row.len() as f64;
    (1.0 / (mean + eps as f64).sqrt()) as f32
}

/// RMSNorm of every `w.len()`-wide row of `x` into `out`: `x / sqrt(mean(x^2) + eps) * w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let dim = w.len();
    assert_eq!(x.len(), out.len());
    out.par_chunks_mut(dim)
        .zip(x.par_chunks(dim))
        .for_each(|(o, row)| {
            let s = rms_scale(row, eps);
            for ((o, &v), &g) in o.iter_mut().zip(row).zip(w) {
                *o = (v * s) * g;
            }
        });
}

/// RMSNorm in place, every `w.len()`-wide row (the per-head q/k norms of qwen3).
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    x.par_chunks_mut(w.len()).for_each(|row| {
        let s = rms_scale(row, eps);
        for (v, &g) in row.iter_mut().zip(w) {
            *v = (*v * s) * g;
        }
    });
}

/// Cosine and sine tables for rotate-half RoPE at positions `0..n`: `[n x head_dim/2]`
/// each, computed as transformers does (f32 inverse frequencies, f32 angle
/// `position * inv_freq`).
pub fn rope_tables(n: usize, head_dim: usize, theta: f64) -> (Vec<f32>, Vec<f32>) {
    let t = RopeTable::new(
        n,
        head_dim,
        &crate::config::Rope {
            theta,
            freq_factors: None,
            linear_factor: 1.0,
            yarn: None,
        },
    );
    (t.cos, t.sin)
}

/// Precomputed rotations for one RoPE configuration over positions `0..n`.
#[derive(Debug, Clone)]
pub struct RopeTable {
    head_dim: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// YaRN (gpt-oss): blended frequencies, cos and sin scaled by the magnitude factor.
    fn yarn(n: usize, head_dim: usize, theta: f64, y: &crate::gpt_oss::Yarn) -> RopeTable {
        let (inv, mscale) = y.frequencies(theta, head_dim);
        let mut cos = Vec::with_capacity(n * inv.len());
        let mut sin = Vec::with_capacity(n * inv.len());
        for p in 0..n {
            for &f in &inv {
                let a = (p as f32 * f) as f64;
                cos.push(a.cos() as f32 * mscale);
                sin.push(a.sin() as f32 * mscale);
            }
        }
        RopeTable { head_dim, cos, sin }
    }
}

impl RopeTable {
    /// Inverse frequencies `theta^(-2d/head_dim)` in f32, divided by the per-frequency
    /// factors (Llama 3) and the linear factor, then f32 angles `position * inv_freq`.
    pub fn new(n: usize, head_dim: usize, rope: &crate::config::Rope) -> RopeTable {
        if let Some(y) = &rope.yarn {
            return RopeTable::yarn(n, head_dim, rope.theta, y);
        }
        let half = head_dim / 2;
        let inv: Vec<f32> = (0..half)
            .map(|d| {
                let mut f = (1.0 / rope.theta.powf((2 * d) as f64 / head_dim as f64)) as f32;
                if let Some(fac) = &rope.freq_factors {
                    f /= fac[d];
                }
                if rope.linear_factor != 1.0 {
                    f /= rope.linear_factor as f32;
                }
                f
            })
            .collect();
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in 0..n {
            for &f in &inv {
                let a = (p as f32 * f) as f64;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        RopeTable { head_dim, cos, sin }
    }

    /// Rotates `x` `[n x (heads * head_dim)]` in place.
    pub fn apply(&self, x: &mut [f32], heads: usize) {
        apply_rope(x, heads, self.head_dim, &self.cos, &self.sin);
    }
}

/// Rotate-half RoPE in place on `x` `[n x (heads * head_dim)]`: within each head, the
/// pair (d, d + head_dim/2) is rotated by the angle of frequency d.
pub fn apply_rope(x: &mut [f32], heads: usize, head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    x.par_chunks_mut(heads * head_dim)
        .enumerate()
        .for_each(|(p, row)| {
            let c = &cos[p * half..(p + 1) * half];
            let s = &sin[p * half..(p + 1) * half];
            for head in row.chunks_mut(head_dim) {
                let (a, b) = head.split_at_mut(half);
                for d in 0..half {
                    let (x0, x1) = (a[d], b[d]);
                    a[d] = x0 * c[d] - x1 * s[d];
                    b[d] = x1 * c[d] + x0 * s[d];
                }
            }
        });
}

/// Shapes of one causal attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub n_tokens: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Keys at distance >= window from the query are masked; `None`: full causal.
    pub window: Option<usize>,
    /// Scale of the scores (usually `1/sqrt(head_dim)`).
    pub scale: f32,
    /// Round q, k, v and the normalised probabilities to f16 (llama.cpp's f16 KV cache
    /// and f16 products).
    pub f16: bool,
}

/// Grouped-query causal attention. `q` `[n x n_heads*hd]`, `k` and `v`
/// `[n x n_kv_heads*hd]` (RoPE already applied), into `out` `[n x n_heads*hd]`. Query
/// head h reads KV head `h / (n_heads / n_kv_heads)`; scores are multiplied by `s.scale`.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], s: AttentionShape, out: &mut [f32]) {
    attention_with_sinks(q, k, v, s, None, out)
}

/// [`attention`] with learned sinks (gpt-oss): one extra logit per query head in every
/// softmax, whose probability mass is dropped (it attends to nothing).
pub fn attention_with_sinks(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttentionShape,
    sinks: Option<&[f32]>,
    out: &mut [f32],
) {
    let hd = s.head_dim;
    let qw = s.n_heads * hd;
    let kw = s.n_kv_heads * hd;
    let group = s.n_heads / s.n_kv_heads;
    let scale = s.scale;
    assert_eq!(q.len(), s.n_tokens * qw);
    assert_eq!(k.len(), s.n_tokens * kw);
    assert_eq!(v.len(), s.n_tokens * kw);
    assert_eq!(out.len(), s.n_tokens * qw);
    let h16 = |v: f32| half::f16::from_f32(v).to_f32();
    let (q16, k16, v16);
    let (q, k, v) = if s.f16 {
        q16 = q.iter().map(|&x| h16(x)).collect::<Vec<_>>();
        k16 = k.iter().map(|&x| h16(x)).collect::<Vec<_>>();
        v16 = v.iter().map(|&x| h16(x)).collect::<Vec<_>>();
        (&q16[..], &k16[..], &v16[..])
    } else {
        (q, k, v)
    };
    out.par_chunks_mut(qw).enumerate().for_each(|(i, orow)| {
        let lo = s.window.map_or(0, |w| (i + 1).saturating_sub(w));
        let mut scores = vec![0.0f32; i + 1 - lo];
        for h in 0..s.n_heads {
            let kvh = h / group;
            let qh = &q[i * qw + h * hd..i * qw + (h + 1) * hd];
            let sink = sinks.map(|x| x[h]);
            let mut max = sink.unwrap_or(f32::NEG_INFINITY);
            for (j, sc) in (lo..=i).zip(scores.iter_mut()) {
                let kh = &k[j * kw + kvh * hd..j * kw + (kvh + 1) * hd];
                let dot: f32 = qh.iter().zip(kh).map(|(a, b)| a * b).sum();
                *sc = dot * scale;
                max = max.max(*sc);
            }
            let mut total = sink.map_or(0.0, |x| (x - max).exp());
            for sc in scores.iter_mut() {
                *sc = (*sc - max).exp();
                total += *sc;
            }
            let inv = 1.0 / total;
            if s.f16 {
                // llama.cpp normalises in f32, then the product with V rounds to f16.
                scores.iter_mut().for_each(|p| *p = h16(*p * inv));
            }
            let oh = &mut orow[h * hd..(h + 1) * hd];
            oh.fill(0.0);
            for (j, &p) in (lo..=i).zip(scores.iter()) {
                let vh = &v[j * kw + kvh * hd..j * kw + (kvh + 1) * hd];
                for (o, &x) in oh.iter_mut().zip(vh) {
                    *o += p * x;
                }
            }
            if !s.f16 {
                for o in oh.iter_mut() {
                    *o *= inv;
                }
            }
        }
    });
}

/// SwiGLU: `gate = silu(gate) * up`, in place.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    gate.par_chunks_mut(4096)
        .zip(up.par_chunks(4096))
        .for_each(|(g, u)| {
            for (g, &u) in g.iter_mut().zip(u) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
        });
}

/// GeGLU with the tanh approximation of GELU (`gelu_pytorch_tanh`):
/// `gate = gelu(gate) * up`, in place.
pub fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    gate.par_chunks_mut(4096)
        .zip(up.par_chunks(4096))
        .for_each(|(g, u)| {
            for (g, &u) in g.iter_mut().zip(u) {
                let x = *g;
                let inner = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
                *g = 0.5 * x * (1.0 + inner.tanh()) * u;
            }
        });
}

/// Adds `y` to `x` elementwise (the residual connection).
pub fn add_inplace(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(4096)
        .zip(y.par_chunks(4096))
        .for_each(|(a, b)| {
            for (a, &b) in a.iter_mut().zip(b) {
                *a += b;
            }
        });
}

/// `log softmax(row)[target]`, in f64.
pub fn log_prob(row: &[f32], target: usize) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row[target] as f64 - max - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_naive() {
        let (n, k, out) = (5, 37, 11);
        let x: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let w: Vec<f32> = (0..out * k)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let mut y = vec![f32::NAN; n * out];
        matmul_wt(&x, n, k, &w, out, &mut y);
        for r in 0..n {
            for c in 0..out {
                let e: f32 = (0..k).map(|i| x[r * k + i] * w[c * k + i]).sum();
                assert!((y[r * out + c] - e).abs() < 1e-4, "{r},{c}");
            }
        }
    }

    #[test]
    fn rope_rotates_pairs_and_keeps_norm() {
        let (cos, sin) = rope_tables(3, 4, 10000.0);
        let mut x = [1.0, 2.0, 3.0, 4.0].repeat(3);
        apply_rope(&mut x, 1, 4, &cos, &sin);
        assert_eq!(&x[..4], &[1.0, 2.0, 3.0, 4.0]); // position 0: identity
        let a = 2.0f64; // position 2, frequency 0
        let e0 = 1.0 * a.cos() - 3.0 * a.sin();
        assert!((x[8] as f64 - e0).abs() < 1e-6);
        let n2: f32 = x[8..12].iter().map(|v| v * v).sum();
        assert!((n2 - 30.0).abs() < 1e-4);
    }

    #[test]
    fn attention_first_token_copies_its_value() {
        let s = AttentionShape {
            n_tokens: 2,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 2,
            window: None,
            scale: 1.0 / 2f32.sqrt(),
            f16: false,
        };
        let q = vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0];
        let k = vec![1.0, 0.0, 0.0, 1.0];
        let v = vec![3.0, 4.0, 5.0, 6.0];
        let mut out = vec![0.0; 8];
        attention(&q, &k, &v, s, &mut out);
        assert_eq!(&out[..4], &[3.0, 4.0, 3.0, 4.0]);
        // second token, head 0: scores (1, 0)/sqrt2 over values (3,4), (5,6)
        let p0 = 1.0 / (1.0 + (-1.0f32 / 2f32.sqrt()).exp());
        assert!((out[4] - (p0 * 3.0 + (1.0 - p0) * 5.0)).abs() < 1e-6);
    }

    #[test]
    fn log_prob_is_normalised() {
        let row = [0.5f32, -1.0, 2.0];
        let total: f64 = (0..3).map(|t| log_prob(&row, t).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }
}
