//! k-quants: 256-element super-blocks of sub-blocks, each sub-block with its own
//! quantized scale (ggml-common.h `block_q2_K` ... `block_q6_K`):
//!
//! | type | bytes | layout                                                     | value                 |
//! |------|-------|------------------------------------------------------------|-----------------------|
//! | Q2_K | 84    | scales[16] (scale nibble, min nibble), qs[64], d, dmin     | d·sc·q − dmin·m, q<4  |
//! | Q3_K | 110   | hmask[32], qs[64], scales[12] (16 × 6 bit), d              | d·(sc−32)·(q−4), q<8  |
//! | Q4_K | 144   | d, dmin, scales[12] (8 × 6-bit scale + min), qs[128]       | d·sc·q − dmin·m, q<16 |
//! | Q5_K | 176   | d, dmin, scales[12], qh[32], qs[128]                       | d·sc·q − dmin·m, q<32 |
//! | Q6_K | 210   | ql[128], qh[64], scales[16]: i8, d                         | d·sc·(q−32), q<64     |
//!
//! Quantizing one super-block takes two stages:
//! 1. every sub-block gets its own float scale (and minimum) and levels from the
//!    weighted search in [`crate::search`];
//! 2. the sub-block scales are coded against f16 super-scales so as to minimise the
//!    element-domain error (exact for fixed levels), the elements are re-rounded with the
//!    stored scales, and stage 2 repeats on the new levels while the error drops.
//!
//! For the affine types ggml only ever subtracts minimums (dmin ≥ 0). A super-block whose
//! sub-blocks lie entirely above zero is also tried mirrored (both super-scales negative,
//! which the format allows), and the better of the two is kept.

use half::f16;

use crate::search::{
    affine_error, affine_levels, fit_affine, fit_symmetric, quantize_affine_scales,
    quantize_sym_scales, sym_error, sym_levels, AffineStats, Grid, SymCode, SymStats,
};

/// Elements per super-block.
pub(crate) const QK_K: usize = 256;

/// Parameters of an affine k-quant.
struct AffineK {
    /// Elements per sub-block.
    sub: usize,
    /// Element levels are `0..=nmax`.
    nmax: f32,
    /// Scale and minimum codes are `0..=cmax`.
    cmax: f64,
    /// Stage-1 scale candidates (added to `nmax`). The grids of all k-quants were tuned
    /// on the oracle's test sets for RMSE and speed (docs/kernels.md).
    grid: Grid,
}

const Q2_K: AffineK = AffineK {
    sub: 16,
    nmax: 3.0,
    cmax: 15.0,
    grid: Grid::new(-1.5, 0.15, 20),
};
const Q4_K: AffineK = AffineK {
    sub: 32,
    nmax: 15.0,
    cmax: 63.0,
    grid: Grid::new(-2.0, 0.2, 20),
};
const Q5_K: AffineK = AffineK {
    sub: 32,
    nmax: 31.0,
    cmax: 63.0,
    grid: Grid::new(-2.0, 0.2, 20),
};

/// Parameters of a symmetric k-quant (both have 16-element sub-blocks).
struct SymK {
    /// Element levels.
    code: SymCode,
    /// Sub-block scale codes.
    scale_code: SymCode,
    /// Stage-1 scale candidates (added to `|code.lo|`; δ > 0 clips the largest element).
    grid: Grid,
    /// Coordinate descent over single levels in stage 1 (pays off with few levels).
    polish: bool,
}

const Q3_K: SymK = SymK {
    code: SymCode { lo: -4.0, hi: 3.0 },
    scale_code: SymCode {
        lo: -32.0,
        hi: 31.0,
    },
    grid: Grid::new(-1.5, 0.3, 12),
    polish: true,
};
const Q6_K: SymK = SymK {
    code: SymCode {
        lo: -32.0,
        hi: 31.0,
    },
    scale_code: SymCode {
        lo: -128.0,
        hi: 127.0,
    },
    grid: Grid::new(-2.0, 1.0, 10),
    polish: false,
};

/// Scale candidates for the sub-block scales of the symmetric types.
const SCALE_GRID: Grid = Grid::new(-1.0, 0.1, 20);

/// Code moves tried on the true error after stage 2: none first (ties keep it), then the
/// scale code, the min code, and both together (scale and minimum move together when
/// the sub-block's range shifts).
const CODE_STEPS: [(i32, i32); 7] = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1)];

/// Rounds of "code the scales, re-round the elements" in stage 2.
const ROUNDS: usize = 3;

/// A quantized affine super-block, before packing.
#[derive(Clone)]
struct AffineBlock {
    d: f32,
    dmin: f32,
    ls: [u8; 16],
    lm: [u8; 16],
    q: [f32; QK_K],
    err: f32,
}

fn affine_superblock(x: &[f32], w: &[f32], p: &AffineK) -> AffineBlock {
    let best = solve_affine(x, w, p);
    let lifted = x.chunks_exact(p.sub).any(|c| c.iter().all(|&v| v > 0.0));
    if !lifted {
        return best;
    }
    let mut neg = [0f32; QK_K];
    for (n, &v) in neg.iter_mut().zip(x) {
        *n = -v;
    }
    let mut mirrored = solve_affine(&neg, w, p);
    if mirrored.err < best.err {
        mirrored.d = -mirrored.d;
        mirrored.dmin = -mirrored.dmin;
        mirrored
    } else {
        best
    }
}

fn solve_affine(x: &[f32], w: &[f32], p: &AffineK) -> AffineBlock {
    let n_sub = QK_K / p.sub;
    let mut q = [0f32; QK_K];
    let mut stats = [AffineStats::default(); 16];
    let mut hint = [0f64; 16];
    let (mut max_scale, mut max_min) = (0f64, 0f64);
    for j in 0..n_sub {
        let r = j * p.sub..(j + 1) * p.sub;
        let fit = fit_affine(
            &x[r.clone()],
            &w[r.clone()],
            p.nmax,
            true,
            p.grid,
            &mut q[r.clone()],
        );
        stats[j] = AffineStats::gather(&x[r.clone()], &w[r.clone()], &q[r]);
        hint[j] = -f64::from(fit.offset);
        max_scale = max_scale.max(f64::from(fit.scale));
        max_min = max_min.max(hint[j]);
    }
    let mut init = (max_scale / p.cmax, max_min / p.cmax);
    let mut best: Option<AffineBlock> = None;
    let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
    for _ in 0..ROUNDS {
        let (d, dmin) = quantize_affine_scales(
            &stats[..n_sub],
            &hint[..n_sub],
            p.cmax,
            init,
            &mut ls[..n_sub],
            &mut lm[..n_sub],
        );
        let mut err = 0f32;
        for j in 0..n_sub {
            let r = j * p.sub..(j + 1) * p.sub;
            let (xs, ws) = (&x[r.clone()], &w[r.clone()]);
            // The codes came from the fixed-level model; with the levels re-rounded a
            // neighbouring code can be better. Check them on the true error.
            let mut best_j = (f32::INFINITY, ls[j], lm[j]);
            for (da, db) in CODE_STEPS {
                let (a, b) = (i32::from(ls[j]) + da, i32::from(lm[j]) + db);
                if a < 0 || b < 0 || a > p.cmax as i32 || b > p.cmax as i32 {
                    continue;
                }
                let (t, u) = (d * a as f32, dmin * b as f32);
                let e = affine_error(xs, ws, t, -u, p.nmax);
                if e < best_j.0 {
                    best_j = (e, a as u8, b as u8);
                }
            }
            (ls[j], lm[j]) = (best_j.1, best_j.2);
            err += best_j.0;
            let (t, u) = (d * f32::from(ls[j]), dmin * f32::from(lm[j]));
            affine_levels(xs, t, -u, p.nmax, &mut q[r]);
        }
        if best.as_ref().is_some_and(|b| err >= b.err) {
            break;
        }
        best = Some(AffineBlock {
            d,
            dmin,
            ls,
            lm,
            q,
            err,
        });
        for j in 0..n_sub {
            let r = j * p.sub..(j + 1) * p.sub;
            stats[j] = AffineStats::gather(&x[r.clone()], &w[r.clone()], &q[r]);
            let current = f64::from(dmin) * f64::from(lm[j]);
            hint[j] = stats[j]
                .optimum()
                .map_or(current, |(_, u)| if u >= 0.0 { u } else { current });
        }
        init = (f64::from(d), f64::from(dmin));
    }
    best.expect("the first round always produces a block")
}

/// A quantized symmetric super-block, before packing: `codes` are the signed sub-block
/// scale codes, `q` the signed element levels.
struct SymBlock {
    d: f32,
    codes: [f32; 16],
    q: [f32; QK_K],
}

fn sym_superblock(x: &[f32], w: &[f32], p: &SymK) -> SymBlock {
    const SUB: usize = 16;
    let mut q = [0f32; QK_K];
    let mut scales = [0f32; 16];
    let mut ll = [0f32; 16];
    for j in 0..QK_K / SUB {
        let r = j * SUB..(j + 1) * SUB;
        fit_symmetric(
            &x[r.clone()],
            &w[r.clone()],
            p.code,
            p.grid,
            p.polish,
            &mut q[r.clone()],
        );
        let st = SymStats::gather(&x[r.clone()], &w[r.clone()], &q[r]);
        scales[j] = st.scale();
        ll[j] = st.ll;
    }
    let mut best: Option<(f32, SymBlock)> = None;
    let mut codes = [0f32; 16];
    for _ in 0..ROUNDS {
        let d = quantize_sym_scales(&scales, &ll, p.scale_code, SCALE_GRID, &mut codes);
        let mut err = 0f32;
        for (j, code) in codes.iter_mut().enumerate() {
            let r = j * SUB..(j + 1) * SUB;
            let (xs, ws) = (&x[r.clone()], &w[r.clone()]);
            // As for the affine types: a neighbouring code may do better once the
            // levels are re-rounded.
            let mut best_j = (f32::INFINITY, *code);
            for c in [*code, *code + 1.0, *code - 1.0] {
                if c < p.scale_code.lo || c > p.scale_code.hi {
                    continue;
                }
                let e = sym_error(xs, ws, d * c, p.code);
                if e < best_j.0 {
                    best_j = (e, c);
                }
            }
            *code = best_j.1;
            err += best_j.0;
            sym_levels(xs, d * *code, p.code, &mut q[r]);
        }
        if best.as_ref().is_some_and(|(e, _)| err >= *e) {
            break;
        }
        best = Some((err, SymBlock { d, codes, q }));
        for j in 0..QK_K / SUB {
            let r = j * SUB..(j + 1) * SUB;
            let st = SymStats::gather(&x[r.clone()], &w[r.clone()], &q[r]);
            scales[j] = st.scale();
            ll[j] = st.ll;
        }
    }
    best.expect("the first round always produces a block").1
}

fn put_f16(dst: &mut [u8], v: f32) {
    dst.copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

fn get_f16(src: &[u8]) -> f32 {
    f16::from_le_bytes([src[0], src[1]]).to_f32()
}

/// 2-bit fields as Q2_K and Q3_K store them: in each half of 128 elements, byte `l` of
/// the half's 32 bytes holds elements `l`, `l+32`, `l+64`, `l+96` at bits 0, 2, 4, 6.
fn pack_crumbs(q: &[u8; QK_K], qs: &mut [u8]) {
    for h in 0..2 {
        for l in 0..32 {
            let e = 128 * h + l;
            qs[32 * h + l] = (q[e] & 3)
                | ((q[e + 32] & 3) << 2)
                | ((q[e + 64] & 3) << 4)
                | ((q[e + 96] & 3) << 6);
        }
    }
}

fn crumb(qs: &[u8], i: usize) -> u8 {
    (qs[32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3
}

/// Q4_K/Q5_K's 12 bytes of eight 6-bit scales and eight 6-bit minimums: bytes 0..4 hold
/// scales 0..4 plus the top two bits of scales 4..8; bytes 4..8 the same for minimums;
/// bytes 8..12 the low nibbles of scale and minimum 4..8.
fn pack_scale_min_k4(ls: &[u8], lm: &[u8], out: &mut [u8]) {
    for j in 0..4 {
        out[j] = ls[j] | ((ls[j + 4] >> 4) << 6);
        out[j + 4] = lm[j] | ((lm[j + 4] >> 4) << 6);
        out[j + 8] = (ls[j + 4] & 0x0f) | ((lm[j + 4] & 0x0f) << 4);
    }
}

fn scale_min_k4(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q4_K/Q5_K's low nibbles: in each 64-element chunk, byte `l` of its 32 holds element
/// `l` (low) and `l + 32` (high).
fn pack_k_nibbles(q: &[u8; QK_K], qs: &mut [u8]) {
    for c in 0..4 {
        for l in 0..32 {
            qs[32 * c + l] = (q[64 * c + l] & 0x0f) | ((q[64 * c + l + 32] & 0x0f) << 4);
        }
    }
}

fn k_nibble(qs: &[u8], i: usize) -> u8 {
    (qs[32 * (i / 64) + i % 32] >> (4 * ((i % 64) / 32))) & 0x0f
}

fn levels_u8(q: &[f32; QK_K], bias: f32) -> [u8; QK_K] {
    let mut out = [0u8; QK_K];
    for (o, &l) in out.iter_mut().zip(q) {
        *o = (l + bias) as u8;
    }
    out
}

pub(crate) fn quantize_q2_k(x: &[f32], w: &[f32], out: &mut [u8]) {
    let b = affine_superblock(x, w, &Q2_K);
    for ((o, &ls), &lm) in out[..16].iter_mut().zip(&b.ls).zip(&b.lm) {
        *o = ls | (lm << 4);
    }
    pack_crumbs(&levels_u8(&b.q, 0.0), &mut out[16..80]);
    put_f16(&mut out[80..82], b.d);
    put_f16(&mut out[82..84], b.dmin);
}

pub(crate) fn dequantize_q2_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (get_f16(&b[80..82]), get_f16(&b[82..84]));
    let qs = &b[16..80];
    for (j, ys) in y.chunks_exact_mut(16).enumerate() {
        let dl = d * f32::from(b[j] & 0x0f);
        let ml = dmin * f32::from(b[j] >> 4);
        for (t, v) in ys.iter_mut().enumerate() {
            *v = dl * f32::from(crumb(qs, 16 * j + t)) - ml;
        }
    }
}

pub(crate) fn quantize_q3_k(x: &[f32], w: &[f32], out: &mut [u8]) {
    let b = sym_superblock(x, w, &Q3_K);
    let q = levels_u8(&b.q, 4.0);
    let (hmask, rest) = out.split_at_mut(32);
    let (qs, rest) = rest.split_at_mut(64);
    let (scales, d) = rest.split_at_mut(12);
    hmask.fill(0);
    for (i, &l) in q.iter().enumerate() {
        if l > 3 {
            hmask[i % 32] |= 1 << (i / 32);
        }
    }
    pack_crumbs(&q, qs);
    scales.fill(0);
    for (j, &c) in b.codes.iter().enumerate() {
        let c = (c + 32.0) as u8;
        if j < 8 {
            scales[j] |= c & 0x0f;
        } else {
            scales[j - 8] |= (c & 0x0f) << 4;
        }
        scales[8 + j % 4] |= (c >> 4) << (2 * (j / 4));
    }
    put_f16(d, b.d);
}

fn q3_k_code(scales: &[u8], j: usize) -> i32 {
    let low = if j < 8 {
        scales[j] & 0x0f
    } else {
        scales[j - 8] >> 4
    };
    let high = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
    i32::from(low | (high << 4)) - 32
}

pub(crate) fn dequantize_q3_k(b: &[u8], y: &mut [f32]) {
    let (hmask, qs, scales) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = get_f16(&b[108..110]);
    for (j, ys) in y.chunks_exact_mut(16).enumerate() {
        let dl = d * q3_k_code(scales, j) as f32;
        for (t, v) in ys.iter_mut().enumerate() {
            let i = 16 * j + t;
            let high = (hmask[i % 32] >> (i / 32)) & 1;
            let l = i32::from(crumb(qs, i)) - if high == 1 { 0 } else { 4 };
            *v = dl * l as f32;
        }
    }
}

pub(crate) fn quantize_q4_k(x: &[f32], w: &[f32], out: &mut [u8]) {
    let b = affine_superblock(x, w, &Q4_K);
    put_f16(&mut out[0..2], b.d);
    put_f16(&mut out[2..4], b.dmin);
    pack_scale_min_k4(&b.ls[..8], &b.lm[..8], &mut out[4..16]);
    pack_k_nibbles(&levels_u8(&b.q, 0.0), &mut out[16..144]);
}

pub(crate) fn dequantize_q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (get_f16(&b[0..2]), get_f16(&b[2..4]));
    let qs = &b[16..144];
    for (j, ys) in y.chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(&b[4..16], j);
        let (d1, m1) = (d * f32::from(sc), dmin * f32::from(m));
        for (t, v) in ys.iter_mut().enumerate() {
            *v = d1 * f32::from(k_nibble(qs, 32 * j + t)) - m1;
        }
    }
}

pub(crate) fn quantize_q5_k(x: &[f32], w: &[f32], out: &mut [u8]) {
    let b = affine_superblock(x, w, &Q5_K);
    let q = levels_u8(&b.q, 0.0);
    put_f16(&mut out[0..2], b.d);
    put_f16(&mut out[2..4], b.dmin);
    pack_scale_min_k4(&b.ls[..8], &b.lm[..8], &mut out[4..16]);
    let qh = &mut out[16..48];
    qh.fill(0);
    for (i, &l) in q.iter().enumerate() {
        qh[i % 32] |= (l >> 4) << (i / 32);
    }
    pack_k_nibbles(&q, &mut out[48..176]);
}

pub(crate) fn dequantize_q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (get_f16(&b[0..2]), get_f16(&b[2..4]));
    let (qh, qs) = (&b[16..48], &b[48..176]);
    for (j, ys) in y.chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(&b[4..16], j);
        let (d1, m1) = (d * f32::from(sc), dmin * f32::from(m));
        for (t, v) in ys.iter_mut().enumerate() {
            let i = 32 * j + t;
            let l = k_nibble(qs, i) | (((qh[i % 32] >> j) & 1) << 4);
            *v = d1 * f32::from(l) - m1;
        }
    }
}

pub(crate) fn quantize_q6_k(x: &[f32], w: &[f32], out: &mut [u8]) {
    let b = sym_superblock(x, w, &Q6_K);
    let q = levels_u8(&b.q, 32.0);
    let (ql, rest) = out.split_at_mut(128);
    let (qh, rest) = rest.split_at_mut(64);
    let (scales, d) = rest.split_at_mut(16);
    for h in 0..2 {
        for l in 0..32 {
            let e = 128 * h + l;
            let (q1, q2, q3, q4) = (q[e], q[e + 32], q[e + 64], q[e + 96]);
            ql[64 * h + l] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
            ql[64 * h + l + 32] = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
            qh[32 * h + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
    for (s, &c) in scales.iter_mut().zip(&b.codes) {
        *s = (c as i8) as u8;
    }
    put_f16(d, b.d);
}

pub(crate) fn dequantize_q6_k(b: &[u8], y: &mut [f32]) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = get_f16(&b[208..210]);
    for (j, ys) in y.chunks_exact_mut(16).enumerate() {
        let dl = d * f32::from(scales[j] as i8);
        for (t, v) in ys.iter_mut().enumerate() {
            let i = 16 * j + t;
            let (h, k, l) = (i / 128, (i % 128) / 32, i % 32);
            let low = (ql[64 * h + l + 32 * (k & 1)] >> (4 * (k / 2))) & 0x0f;
            let high = (qh[32 * h + l] >> (2 * k)) & 3;
            *v = dl * (i32::from(low | (high << 4)) - 32) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    /// A level pattern that differs for every element position: catches any permutation.
    fn pattern(i: usize, levels: usize) -> u8 {
        ((i * 7 + i / 32) % levels) as u8
    }

    #[test]
    fn q2_k_layout() {
        let mut b = [0u8; 84];
        for (j, s) in b[..16].iter_mut().enumerate() {
            *s = (j as u8 % 16) | (((15 - j) as u8) << 4);
        }
        let q: [u8; 256] = std::array::from_fn(|i| pattern(i, 4));
        pack_crumbs(&q, &mut b[16..80]);
        b[80..82].copy_from_slice(&f16_bytes(0.5));
        b[82..84].copy_from_slice(&f16_bytes(0.25));
        let mut y = [0f32; 256];
        dequantize_q2_k(&b, &mut y);
        for (i, &v) in y.iter().enumerate() {
            let j = i / 16;
            let expect = 0.5 * j as f32 * f32::from(q[i]) - 0.25 * (15 - j) as f32;
            assert_eq!(v, expect, "{i}");
        }
        // Byte-level check of the crumb order: element 32 sits at bits 2..4 of byte 0.
        let mut q = [0u8; 256];
        q[32] = 3;
        q[128 + 96 + 1] = 2;
        let mut qs = [0u8; 64];
        pack_crumbs(&q, &mut qs);
        assert_eq!(qs[0], 0b1100);
        assert_eq!(qs[33], 0b1000_0000);
    }

    #[test]
    fn q3_k_layout() {
        let mut b = [0u8; 110];
        // Codes: sub-block j has scale code j - 8 (stored j + 24).
        for j in 0..16 {
            let c = (j + 24) as u8;
            if j < 8 {
                b[96 + j] |= c & 0x0f;
            } else {
                b[96 + j - 8] |= (c & 0x0f) << 4;
            }
            b[96 + 8 + j % 4] |= (c >> 4) << (2 * (j / 4));
        }
        let q: [u8; 256] = std::array::from_fn(|i| pattern(i, 8));
        for (i, &l) in q.iter().enumerate() {
            if l > 3 {
                b[i % 32] |= 1 << (i / 32);
            }
        }
        pack_crumbs(&q, &mut b[32..96]);
        b[108..110].copy_from_slice(&f16_bytes(0.125));
        let mut y = [0f32; 256];
        dequantize_q3_k(&b, &mut y);
        for (i, &v) in y.iter().enumerate() {
            let j = i / 16;
            assert_eq!(v, 0.125 * (j as f32 - 8.0) * (f32::from(q[i]) - 4.0), "{i}");
        }
        for j in 0..16 {
            assert_eq!(q3_k_code(&b[96..108], j), j as i32 - 8);
        }
    }

    #[test]
    fn q4_k_and_q5_k_layout() {
        let ls: [u8; 8] = [1, 63, 17, 32, 48, 5, 62, 33];
        let lm: [u8; 8] = [0, 7, 63, 40, 16, 60, 1, 31];
        let mut scales = [0u8; 12];
        pack_scale_min_k4(&ls, &lm, &mut scales);
        for j in 0..8 {
            assert_eq!(scale_min_k4(&scales, j), (ls[j], lm[j]));
        }
        let q: [u8; 256] = std::array::from_fn(|i| pattern(i, 32));
        let mut b5 = [0u8; 176];
        b5[0..2].copy_from_slice(&f16_bytes(0.5));
        b5[2..4].copy_from_slice(&f16_bytes(0.25));
        b5[4..16].copy_from_slice(&scales);
        for (i, &l) in q.iter().enumerate() {
            b5[16 + i % 32] |= (l >> 4) << (i / 32);
        }
        pack_k_nibbles(&q, &mut b5[48..176]);
        let mut y = [0f32; 256];
        dequantize_q5_k(&b5, &mut y);
        for (i, &v) in y.iter().enumerate() {
            let j = i / 32;
            assert_eq!(
                v,
                0.5 * f32::from(ls[j]) * f32::from(q[i]) - 0.25 * f32::from(lm[j]),
                "{i}"
            );
        }
        // Q4_K: same header, nibbles only.
        let q4: [u8; 256] = std::array::from_fn(|i| q[i] & 15);
        let mut b4 = [0u8; 144];
        b4[0..16].copy_from_slice(&b5[0..16]);
        pack_k_nibbles(&q4, &mut b4[16..144]);
        dequantize_q4_k(&b4, &mut y);
        for (i, &v) in y.iter().enumerate() {
            let j = i / 32;
            assert_eq!(
                v,
                0.5 * f32::from(ls[j]) * f32::from(q4[i]) - 0.25 * f32::from(lm[j]),
                "{i}"
            );
        }
        // Byte order: element 32 is the high nibble of byte 0, element 64 starts chunk 1.
        assert_eq!(b4[16], q4[0] | (q4[32] << 4));
        assert_eq!(b4[16 + 32], q4[64] | (q4[96] << 4));
    }

    #[test]
    fn q6_k_layout() {
        let q: [u8; 256] = std::array::from_fn(|i| pattern(i, 64));
        let mut b = [0u8; 210];
        for h in 0..2 {
            for l in 0..32 {
                let e = 128 * h + l;
                b[64 * h + l] = (q[e] & 15) | ((q[e + 64] & 15) << 4);
                b[64 * h + l + 32] = (q[e + 32] & 15) | ((q[e + 96] & 15) << 4);
                b[128 + 32 * h + l] = (q[e] >> 4)
                    | ((q[e + 32] >> 4) << 2)
                    | ((q[e + 64] >> 4) << 4)
                    | ((q[e + 96] >> 4) << 6);
            }
        }
        for j in 0..16 {
            b[192 + j] = ((j as i8 - 8) * 15) as u8;
        }
        b[208..210].copy_from_slice(&f16_bytes(0.5));
        let mut y = [0f32; 256];
        dequantize_q6_k(&b, &mut y);
        for (i, &v) in y.iter().enumerate() {
            let sc = f32::from(((i / 16) as i8 - 8) * 15);
            assert_eq!(v, 0.5 * sc * (f32::from(q[i]) - 32.0), "{i}");
        }
    }
}
