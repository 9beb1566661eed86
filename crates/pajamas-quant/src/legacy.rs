//! ggml's original 32-element blocks (ggml-common.h `block_q4_0` ... `block_q8_0`):
//!
//! | type | bytes | layout                                   | value          |
//! |------|-------|------------------------------------------|----------------|
//! | Q4_0 | 18    | d: f16, qs[16]                           | d·(q − 8)      |
//! | Q4_1 | 20    | d: f16, m: f16, qs[16]                   | d·q + m        |
//! | Q5_0 | 22    | d: f16, qh: u32, qs[16]                  | d·(q − 16)     |
//! | Q5_1 | 24    | d: f16, m: f16, qh: u32, qs[16]          | d·q + m        |
//! | Q8_0 | 34    | d: f16, qs[32]: i8                       | d·q            |
//!
//! 4-bit codes pair element `j` (low nibble) with element `j + 16` (high nibble) in
//! `qs[j]`; 5-bit codes keep those nibbles and put bit 4 of element `j` at bit `j` of the
//! little-endian `qh`.
//!
//! ggml's reference quantizer without an imatrix maps the largest element to the extreme
//! level (Q4_0, Q5_0, Q8_0) or the range to the levels (Q4_1, Q5_1). We always run the
//! weighted scale search of [`crate::search`] (importance or uniform weights) and keep
//! ggml's own choice among the candidates, so a block never comes out worse than ggml's
//! reference in the objective.

use half::f16;

use crate::search::{
    affine_error, affine_levels, f16_candidates, fit_affine, fit_symmetric, settle_sym_scale,
    to_f16, AffineStats, Grid, SymCode,
};

/// Elements per legacy block.
pub(crate) const QK: usize = 32;

const Q4_0_CODE: SymCode = SymCode { lo: -8.0, hi: 7.0 };
const Q5_0_CODE: SymCode = SymCode {
    lo: -16.0,
    hi: 15.0,
};
const Q8_0_CODE: SymCode = SymCode {
    lo: -128.0,
    hi: 127.0,
};

// Scale candidates (coarse grid, then quarter steps around its best point; see
// `search::Grid`). Symmetric: the largest element maps to level `|lo| + δ`; δ < 0 uses
// fewer levels, δ > 0 clips the largest element, which pays off when the others then get
// a finer step (more so with importance, when the largest element may matter little).
// The ranges were tuned on the oracle's test sets (docs/kernels.md).
const SYM_GRID: Grid = Grid::new(-2.0, 0.5, 12);
/// With 256 levels the best scale clips the largest element by up to ~15%: a sparse grid
/// reaching far, refined around its best point.
const Q8_GRID: Grid = Grid::new(-1.0, 6.0, 4);
/// Affine candidates: the range maps to `nmax + δ` levels.
const AFFINE_GRID: Grid = Grid::new(-2.0, 0.4, 10);

fn put_f16(dst: &mut [u8], v: f32) {
    dst.copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

fn get_f16(src: &[u8]) -> f32 {
    f16::from_le_bytes([src[0], src[1]]).to_f32()
}

/// The element of largest magnitude, with its sign (the first one on ties).
fn pivot(x: &[f32]) -> f32 {
    x.iter()
        .fold(0f32, |p, &v| if v.abs() > p.abs() { v } else { p })
}

/// Scale and levels (`lo..=hi`) of a symmetric block. `reference` holds ggml's own
/// scales for the block (its reference quantizer's, and the other one its imatrix search
/// can land on), kept as candidates.
fn symmetric_block(
    x: &[f32],
    w: &[f32],
    code: SymCode,
    grid: Grid,
    polish: bool,
    reference: &[f32],
) -> (f32, [f32; QK]) {
    let mut q = [0f32; QK];
    let scale = fit_symmetric(x, w, code, grid, polish, &mut q);
    let d = settle_sym_scale(x, w, code, scale, reference, &mut q);
    (d, q)
}

/// Scale, offset and levels (`0..=nmax`) of an affine block with free-signed offset.
fn affine_block(x: &[f32], w: &[f32], nmax: f32) -> (f32, f32, [f32; QK]) {
    let mut q = [0f32; QK];
    let fit = fit_affine(x, w, nmax, false, AFFINE_GRID, &mut q);
    let (min, max) = x
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    // ggml's reference: the range over the levels, the minimum as offset.
    let mut best = {
        let (d, m) = (to_f16((max - min) / nmax).to_f32(), to_f16(min).to_f32());
        (affine_error(x, w, d, m, nmax), d, m)
    };
    let consider = |scale: f32, offset: f32, best: &mut (f32, f32, f32)| -> bool {
        let mut improved = false;
        for d in f16_candidates(scale) {
            for m in f16_candidates(offset) {
                let e = affine_error(x, w, d, m, nmax);
                if e < best.0 {
                    *best = (e, d, m);
                    improved = true;
                }
            }
        }
        improved
    };
    consider(fit.scale, fit.offset, &mut best);
    // Re-round at the stored (f16) values and refit, while it helps.
    for _ in 0..2 {
        affine_levels(x, best.1, best.2, nmax, &mut q);
        let Some((t, u)) = AffineStats::gather(x, w, &q).optimum() else {
            break;
        };
        if t.is_nan() || t <= 0.0 || !consider(t as f32, -u as f32, &mut best) {
            break;
        }
    }
    affine_levels(x, best.1, best.2, nmax, &mut q);
    (best.1, best.2, q)
}

/// Packs levels `0..=15` two per byte, element `j` low and `j + 16` high.
fn pack_nibbles(q: &[f32; QK], qs: &mut [u8]) {
    for j in 0..QK / 2 {
        qs[j] = (q[j] as u8 & 0x0f) | ((q[j + QK / 2] as u8 & 0x0f) << 4);
    }
}

/// Bit 4 of every level, element `j` at bit `j`.
fn high_bits(q: &[f32; QK]) -> [u8; 4] {
    let mut qh = 0u32;
    for (j, &l) in q.iter().enumerate() {
        qh |= u32::from((l as u8 >> 4) & 1) << j;
    }
    qh.to_le_bytes()
}

/// The 4-bit codes of a block, element order.
fn unpack_nibbles(qs: &[u8]) -> [u8; QK] {
    let mut q = [0u8; QK];
    for j in 0..QK / 2 {
        q[j] = qs[j] & 0x0f;
        q[j + QK / 2] = qs[j] >> 4;
    }
    q
}

fn add_high_bits(q: &mut [u8; QK], qh: &[u8]) {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    for (j, l) in q.iter_mut().enumerate() {
        *l |= (((qh >> j) & 1) as u8) << 4;
    }
}

pub(crate) fn quantize_q4_0(x: &[f32], w: &[f32], out: &mut [u8]) {
    let p = pivot(x);
    let (d, mut q) = symmetric_block(x, w, Q4_0_CODE, SYM_GRID, true, &[p / -8.0, p / -7.0]);
    q.iter_mut().for_each(|l| *l += 8.0);
    put_f16(&mut out[0..2], d);
    pack_nibbles(&q, &mut out[2..18]);
}

pub(crate) fn dequantize_q4_0(b: &[u8], y: &mut [f32]) {
    let d = get_f16(&b[0..2]);
    for (v, q) in y.iter_mut().zip(unpack_nibbles(&b[2..18])) {
        *v = d * (i32::from(q) - 8) as f32;
    }
}

pub(crate) fn quantize_q4_1(x: &[f32], w: &[f32], out: &mut [u8]) {
    let (d, m, q) = affine_block(x, w, 15.0);
    put_f16(&mut out[0..2], d);
    put_f16(&mut out[2..4], m);
    pack_nibbles(&q, &mut out[4..20]);
}

pub(crate) fn dequantize_q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (get_f16(&b[0..2]), get_f16(&b[2..4]));
    for (v, q) in y.iter_mut().zip(unpack_nibbles(&b[4..20])) {
        *v = d * f32::from(q) + m;
    }
}

pub(crate) fn quantize_q5_0(x: &[f32], w: &[f32], out: &mut [u8]) {
    let p = pivot(x);
    let (d, mut q) = symmetric_block(x, w, Q5_0_CODE, SYM_GRID, true, &[p / -16.0, p / -15.0]);
    q.iter_mut().for_each(|l| *l += 16.0);
    put_f16(&mut out[0..2], d);
    out[2..6].copy_from_slice(&high_bits(&q));
    pack_nibbles(&q, &mut out[6..22]);
}

pub(crate) fn dequantize_q5_0(b: &[u8], y: &mut [f32]) {
    let d = get_f16(&b[0..2]);
    let mut q = unpack_nibbles(&b[6..22]);
    add_high_bits(&mut q, &b[2..6]);
    for (v, q) in y.iter_mut().zip(q) {
        *v = d * (i32::from(q) - 16) as f32;
    }
}

pub(crate) fn quantize_q5_1(x: &[f32], w: &[f32], out: &mut [u8]) {
    let (d, m, q) = affine_block(x, w, 31.0);
    put_f16(&mut out[0..2], d);
    put_f16(&mut out[2..4], m);
    out[4..8].copy_from_slice(&high_bits(&q));
    pack_nibbles(&q, &mut out[8..24]);
}

pub(crate) fn dequantize_q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (get_f16(&b[0..2]), get_f16(&b[2..4]));
    let mut q = unpack_nibbles(&b[8..24]);
    add_high_bits(&mut q, &b[4..8]);
    for (v, q) in y.iter_mut().zip(q) {
        *v = d * f32::from(q) + m;
    }
}

pub(crate) fn quantize_q8_0(x: &[f32], w: &[f32], out: &mut [u8]) {
    let amax = pivot(x).abs();
    let (d, q) = symmetric_block(x, w, Q8_0_CODE, Q8_GRID, false, &[amax / 127.0]);
    put_f16(&mut out[0..2], d);
    for (b, l) in out[2..34].iter_mut().zip(q) {
        *b = (l as i8) as u8;
    }
}

pub(crate) fn dequantize_q8_0(b: &[u8], y: &mut [f32]) {
    let d = get_f16(&b[0..2]);
    for (v, &q) in y.iter_mut().zip(&b[2..34]) {
        *v = f32::from(q as i8) * d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q4_0_layout() {
        // d = 0.5; element j has code j % 16 (low nibbles) and element j + 16 code 15 - j.
        let mut b = [0u8; 18];
        b[0..2].copy_from_slice(&f16_bytes(0.5));
        for j in 0..16 {
            b[2 + j] = (j as u8) | ((15 - j as u8) << 4);
        }
        let mut y = [0f32; 32];
        dequantize_q4_0(&b, &mut y);
        for j in 0..16 {
            assert_eq!(y[j], 0.5 * (j as f32 - 8.0));
            assert_eq!(y[j + 16], 0.5 * (7.0 - j as f32));
        }
    }

    #[test]
    fn q5_layouts() {
        // Q5_0: codes 0..31 in order: element j has code j.
        let mut b = [0u8; 22];
        b[0..2].copy_from_slice(&f16_bytes(0.25));
        let mut qh = 0u32;
        for j in 0..32u32 {
            if j >= 16 {
                qh |= 1 << j;
            }
        }
        b[2..6].copy_from_slice(&qh.to_le_bytes());
        for j in 0..16 {
            b[6 + j] = j as u8 | ((j as u8) << 4);
        }
        let mut y = [0f32; 32];
        dequantize_q5_0(&b, &mut y);
        for (j, &v) in y.iter().enumerate() {
            assert_eq!(v, 0.25 * (j as f32 - 16.0), "{j}");
        }
        // Q5_1: same codes with an offset.
        let mut b1 = [0u8; 24];
        b1[0..2].copy_from_slice(&f16_bytes(0.25));
        b1[2..4].copy_from_slice(&f16_bytes(-1.0));
        b1[4..24].copy_from_slice(&b[2..22]);
        dequantize_q5_1(&b1, &mut y);
        for (j, &v) in y.iter().enumerate() {
            assert_eq!(v, 0.25 * j as f32 - 1.0, "{j}");
        }
    }

    #[test]
    fn q4_1_and_q8_0_layouts() {
        let mut b = [0u8; 20];
        b[0..2].copy_from_slice(&f16_bytes(2.0));
        b[2..4].copy_from_slice(&f16_bytes(0.5));
        b[4] = 0x3a; // element 0 -> 10, element 16 -> 3
        let mut y = [0f32; 32];
        dequantize_q4_1(&b, &mut y);
        assert_eq!((y[0], y[16], y[1]), (20.5, 6.5, 0.5));

        let mut b = [0u8; 34];
        b[0..2].copy_from_slice(&f16_bytes(0.125));
        b[2] = (-128i8) as u8;
        b[33] = 127;
        dequantize_q8_0(&b, &mut y);
        assert_eq!((y[0], y[31], y[5]), (-16.0, 15.875, 0.0));
    }

    #[test]
    fn exact_grids_round_trip_exactly() {
        let ones = [1f32; 32];
        // Values on Q4_0's grid with an f16-exact step.
        let x: Vec<f32> = (0..32)
            .map(|j| ((j * 5) % 16) as f32 * 0.125 - 1.0)
            .collect();
        let mut b = [0u8; 18];
        quantize_q4_0(&x, &ones, &mut b);
        let mut y = [0f32; 32];
        dequantize_q4_0(&b, &mut y);
        assert_eq!(&y[..], &x[..]);
        let mut b = [0u8; 24];
        let x: Vec<f32> = (0..32).map(|j| (j as f32) * 0.5 + 3.0).collect();
        quantize_q5_1(&x, &ones, &mut b);
        dequantize_q5_1(&b, &mut y);
        assert_eq!(&y[..], &x[..]);
    }
}
