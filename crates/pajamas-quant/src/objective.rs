//! What the i-quant and k-quant searches minimise, as measured on whole models rather than on rows.
//!
//! Two corrections on top of the plain importance-weighted squared error, both found by
//! measuring KL divergence of whole models (docs/iquants.md, "Objective"):
//!
//! * **Effective weights.** An imatrix column's weight is scaled by `sqrt(σ² + x²)`
//!   (σ² a multiple of the block's mean square, as ggml does): large weights matter
//!   more than the activation statistics alone say, because the imatrix sees only the
//!   diagonal of the activations' second moment.
//! * **No shrinkage.** A least-squares fit at 2-3 bits shrinks the block towards zero
//!   (`<x̂,x> ≈ 0.91 <x,x>` on the demo model's IQ2_XS tensors). Shrunk q and k shrink
//!   every attention logit, and shrunk gate/up/down every MLP output, so the error adds
//!   up coherently through the layers. After the search each block's super-scale is
//!   rescaled so that `<x̂,x>_w = <x,x>_w`: the error is then uncorrelated with the
//!   weights. That costs a little squared error and wins a lot of KL divergence.

use half::f16;

use crate::GgmlType;

/// ggml's σ² multiplier: the mean square of the block times this.
fn sigma_factor(ty: GgmlType) -> f32 {
    match ty {
        GgmlType::IQ2_XXS | GgmlType::IQ2_XS => 1.0,
        _ => 2.0,
    }
}

/// The types whose searches use these corrections: the i-quants and the k-quants.
pub(crate) fn corrected(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        IQ4_NL
            | IQ4_XS
            | IQ3_S
            | IQ3_XXS
            | IQ2_S
            | IQ2_XS
            | IQ2_XXS
            | IQ1_M
            | IQ1_S
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
    )
}

/// The k-quants take the effective weights even without an imatrix (uniform importance),
/// as ggml's k-quant references weight by magnitude too. Measured on the trained tiny
/// MoE, hybrid and demo models (docs/kernels.md, "Objective of the k-quants"): lower KL
/// divergence at Q3_K_M and Q4_K_M on all three but the demo's Q4_K_M.
pub(crate) fn weighted_without_imatrix(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, Q2_K | Q3_K | Q4_K | Q5_K | Q6_K)
}

/// `imp[i] · sqrt(σ² + x[i]²)` into `out` (same length as `x`).
pub(crate) fn effective_weights(ty: GgmlType, x: &[f32], imp: &[f32], out: &mut [f32]) {
    let s2 = sigma_factor(ty) * x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    for ((e, &q), &v) in out.iter_mut().zip(imp).zip(x) {
        *e = q * (s2 + v * v).sqrt();
    }
}

/// Byte offsets of the f16 scales that multiply every value of a block: scaling them all
/// by α scales the dequantized block by α (the affine k-quants' `d` and `dmin` together).
/// IQ1_M spreads its super-scale over the scale words and is handled on its own.
fn scale_offsets(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q4_K | Q5_K => &[0, 2],
        Q6_K => &[208],
        _ => &[0],
    }
}

fn get_f16(block: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([block[at], block[at + 1]])).to_f32()
}

fn iq1_m_super_scale(block: &[u8]) -> f32 {
    let bits = (0..4).fold(0u16, |acc, k| {
        acc | ((u16::from_le_bytes([block[48 + 2 * k], block[49 + 2 * k]]) >> 12) << (4 * k))
    });
    f16::from_bits(bits).to_f32()
}

fn set_iq1_m_super_scale(block: &mut [u8], d: f32) {
    let bits = f16::from_f32(d).to_bits();
    for k in 0..4 {
        let at = 48 + 2 * k;
        let v = u16::from_le_bytes([block[at], block[at + 1]]) & 0x0fff;
        let v = v | (((bits >> (4 * k)) & 0xf) << 12);
        block[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
}

/// Multiplies the block's scales by `alpha`, unless a scale would overflow f16 (then the
/// block is left as it is).
fn rescale(ty: GgmlType, block: &mut [u8], alpha: f32) {
    if ty == GgmlType::IQ1_M {
        let scaled = iq1_m_super_scale(block) * alpha;
        if scaled.is_finite() && f16::from_f32(scaled).is_finite() {
            set_iq1_m_super_scale(block, scaled);
        }
        return;
    }
    let offsets = scale_offsets(ty);
    let scaled: Vec<f16> = offsets
        .iter()
        .map(|&at| f16::from_f32(get_f16(block, at) * alpha))
        .collect();
    if scaled.iter().all(|v| v.is_finite()) {
        for (&at, v) in offsets.iter().zip(scaled) {
            block[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// Rescales the quantized `block` of `x` so that `<x̂,x>_w = <x,x>_w`. `dequantize` is the
/// type's block dequantizer and `y` scratch of the block's length.
pub(crate) fn remove_shrinkage(
    ty: GgmlType,
    x: &[f32],
    w: &[f32],
    block: &mut [u8],
    dequantize: fn(&[u8], &mut [f32]),
    y: &mut [f32],
) {
    dequantize(block, y);
    let (mut xx, mut yx) = (0f64, 0f64);
    for ((&a, &b), &c) in x.iter().zip(y.iter()).zip(w) {
        xx += f64::from(c) * f64::from(a) * f64::from(a);
        yx += f64::from(c) * f64::from(a) * f64::from(b);
    }
    if xx > 0.0 && yx > 0.0 {
        rescale(ty, block, (xx / yx) as f32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dequantize_row, quantize_row};

    fn rows(n: usize) -> Vec<f32> {
        let mut s = 0x9e37_79b9_u32;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                s as f32 / u32::MAX as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn quantized_blocks_are_not_shrunk() {
        let x = rows(1024);
        let imp: Vec<f32> = (0..1024).map(|i| 0.5 + (i % 7) as f32).collect();
        for &ty in &[
            GgmlType::IQ2_XS,
            GgmlType::IQ3_XXS,
            GgmlType::IQ1_M,
            GgmlType::IQ4_XS,
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ] {
            let mut q = vec![0u8; ty.row_bytes(x.len())];
            quantize_row(ty, &x, Some(&imp), &mut q).unwrap();
            let mut y = vec![0f32; x.len()];
            dequantize_row(ty, &q, &mut y).unwrap();
            for b in 0..x.len() / 256 {
                let r = b * 256..(b + 1) * 256;
                let mut w = vec![0f32; 256];
                effective_weights(ty, &x[r.clone()], &imp[r.clone()], &mut w);
                let xx: f64 = x[r.clone()]
                    .iter()
                    .zip(&w)
                    .map(|(a, c)| f64::from(c * a * a))
                    .sum();
                let yx: f64 = x[r.clone()]
                    .iter()
                    .zip(&y[r.clone()])
                    .zip(&w)
                    .map(|((a, b), c)| f64::from(c * a * b))
                    .sum();
                // Only the f16 rounding of the rescaled super-scale remains.
                assert!(
                    (yx / xx - 1.0).abs() < 2e-3,
                    "{ty:?} block {b}: {}",
                    yx / xx
                );
            }
        }
    }

    #[test]
    fn super_scale_round_trips() {
        for &ty in &[GgmlType::IQ1_M, GgmlType::IQ2_XS] {
            let mut block = vec![0xa5u8; ty.type_size()];
            if ty == GgmlType::IQ1_M {
                set_iq1_m_super_scale(&mut block, 0.01234);
            } else {
                block[0..2].copy_from_slice(&f16::from_f32(0.01234).to_le_bytes());
            }
            rescale(ty, &mut block, 2.0);
            let d = if ty == GgmlType::IQ1_M {
                iq1_m_super_scale(&block)
            } else {
                get_f16(&block, 0)
            };
            assert_eq!(d, f16::from_f32(0.02468).to_f32());
            if ty == GgmlType::IQ1_M {
                // The 12 low bits of each scale word are untouched.
                assert_eq!(block[48], 0xa5);
                assert_eq!(block[49] & 0x0f, 0x05);
            }
        }
    }
}
