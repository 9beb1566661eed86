//! Non-linear 4-bit i-quants (ggml-common.h `block_iq4_nl`, `block_iq4_xs`):
//!
//! | type   | block | bytes | layout                                            | value          |
//! |--------|-------|-------|---------------------------------------------------|----------------|
//! | IQ4_NL | 32    | 18    | d: f16, qs[16]                                    | d·K[q]         |
//! | IQ4_XS | 256   | 136   | d: f16, scales_h: u16, scales_l[4], qs[128]       | d·(ls−32)·K[q] |
//!
//! `K` is the fixed 16-entry table [`KVALUES`] (denser near zero, like a gaussian's
//! quantiles). Nibbles pair element `j` (low) with `j + 16` (high) of each 32 elements, as
//! in Q4_0. IQ4_XS has eight 32-element sub-blocks whose 6-bit scale codes `ls` keep their
//! low nibble in `scales_l` (sub-block `2i` low, `2i + 1` high) and their top two bits at
//! bits `2j..2j+2` of `scales_h`.
//!
//! For a fixed scale `d` the best code of every element is the table entry nearest to
//! `x/d`, so the error of a block is a function of `d` alone. The search scans scales
//! that map the block's largest element to either end of the table (the table is not
//! symmetric, so both signs of `d` are tried), refits the winner by weighted least squares
//! while that helps, and finally picks among the f16 neighbours of the fit by the exact
//! error of the stored value. IQ4_XS then codes the sub-block scales against an f16
//! super-scale (minimising `Σ B·(d·l − s)²` for sub-block scales `s` and curvatures
//! `B = Σ w·K²`, with `d` rounded to f16 inside the model: for typical weights `d` is an
//! f16 subnormal, where mapping the largest scale to fewer than 32 codes keeps more of
//! its precision), re-rounds every sub-block at its stored scale and tries neighbouring
//! codes.

use half::f16;

use crate::search::{f16_candidates, positive, to_f16, SymCode, SymStats, GROUP_EPS};

/// ggml's `kvalues_iq4nl`.
pub(crate) const KVALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Elements per IQ4_NL block and per IQ4_XS sub-block.
const QK: usize = 32;

/// Sub-block scale codes of IQ4_XS (stored as `ls + 32` in 6 bits).
const XS_SCALE_CODE: SymCode = SymCode {
    lo: -32.0,
    hi: 31.0,
};

/// Rounds of "code the sub-block scales, re-round the elements" for IQ4_XS.
const XS_ROUNDS: usize = 3;

/// Table value of code `i`, as f32.
#[inline(always)]
fn kv(i: usize) -> f32 {
    f32::from(KVALUES[i])
}

/// Midpoints between neighbouring table values, and +∞ after the last: the code of `v`
/// is the number of midpoints at or below it (a tie goes to the larger value, as in ggml).
const MIDPOINTS: [f32; 16] = {
    let mut m = [f32::INFINITY; 16];
    let mut i = 0;
    while i < 15 {
        m[i] = (KVALUES[i] as f32 + KVALUES[i + 1] as f32) * 0.5;
        i += 1;
    }
    m
};

/// Inputs are clamped to `±LUT_REACH`, beyond the table's ends.
const LUT_REACH: i32 = 200;

/// `FLOOR_CODE[k]`: the number of midpoints at or below the integer `k − LUT_REACH`.
const FLOOR_CODE: [u8; 2 * LUT_REACH as usize + 1] = {
    let mut t = [0u8; 2 * LUT_REACH as usize + 1];
    let mut k = 0;
    while k < t.len() {
        let v = (k as i32 - LUT_REACH) as f32;
        let mut n = 0;
        while n < 15 && MIDPOINTS[n] <= v {
            n += 1;
        }
        t[k] = n as u8;
        k += 1;
    }
    t
};

/// The code whose table value is nearest to `v` (NaN gives 0). Midpoints are more than
/// one apart, so at most one lies between `floor(v)` and `v`: a table lookup on the
/// integer part and one comparison.
#[inline(always)]
fn nearest_code(v: f32) -> usize {
    let reach = LUT_REACH as f32;
    let v = if v > -reach { v } else { -reach };
    let v = if v < reach { v } else { reach };
    // v + 256 > 0, so the truncating cast is a floor.
    let k = (v + 256.0) as usize - (256 - LUT_REACH as usize);
    let n = usize::from(FLOOR_CODE[k]);
    n + usize::from(v >= MIDPOINTS[n])
}

/// `(Σ w·x·K, Σ w·K²)` for the codes nearest to `iscale·x`.
fn moments(x: &[f32], w: &[f32], iscale: f32) -> (f32, f32) {
    let (mut sxq, mut sqq) = (0f32, 0f32);
    for (&v, &wi) in x.iter().zip(w) {
        let q = kv(nearest_code(iscale * v));
        sxq += wi * v * q;
        sqq += wi * q * q;
    }
    (sxq, sqq)
}

/// Relative margin by which a candidate must beat the best so far: the sums are f32, and
/// equally good candidates (every element of a constant block fits any table entry) must
/// not be told apart by their rounding noise, or neighbouring blocks pick different ones.
const TIE: f64 = 1e-6;

/// `(sxq, sqq)` is a better candidate than `(bxq, bqq)`: it leaves a smaller error after
/// the least-squares refit (`Σ w·x² − sxq²/sqq`).
fn explains_more(sxq: f32, sqq: f32, bxq: f32, bqq: f32) -> bool {
    if !positive(sqq) {
        return false;
    }
    if !positive(bqq) {
        return true;
    }
    f64::from(sxq) * f64::from(sxq) * f64::from(bqq)
        > f64::from(bxq) * f64::from(bxq) * f64::from(sqq) * (1.0 + TIE)
}

/// Σ w·(x − d·K[q])² with every `q` nearest for the scale `d`.
pub(crate) fn nl_error(x: &[f32], w: &[f32], d: f32) -> f32 {
    if d == 0.0 {
        return x.iter().zip(w).map(|(&v, &wi)| wi * v * v).sum();
    }
    let id = 1.0 / d;
    let mut e = 0f32;
    for (&v, &wi) in x.iter().zip(w) {
        let r = v - d * kv(nearest_code(id * v));
        e += wi * r * r;
    }
    e
}

/// The nearest codes for the scale `d` (the code of value 1 when `d` is 0, as ggml).
fn nl_codes(x: &[f32], d: f32, q: &mut [u8]) {
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    for (c, &v) in q.iter_mut().zip(x) {
        *c = nearest_code(id * v) as u8;
    }
}

/// The float scale of a block under the table: the least-squares scale of the best code
/// assignment found (0 for an all-zero block). Not yet rounded to f16.
fn fit_nl(x: &[f32], w: &[f32]) -> f32 {
    let mut max = 0f32;
    for &v in x {
        if v.abs() > max.abs() {
            max = v;
        }
    }
    if max.abs() < GROUP_EPS {
        return 0.0;
    }
    // The largest element mapped to the table's most negative entry (ggml's choice) or to
    // its most positive one, give or take a few levels; 0.5 steps, then finer around the
    // winner.
    let mut best = (0f32, 0f32, 0f32); // (iscale, sxq, sqq)
    let consider = |iscale: f32, best: &mut (f32, f32, f32)| {
        let (sxq, sqq) = moments(x, w, iscale);
        if explains_more(sxq, sqq, best.1, best.2) {
            *best = (iscale, sxq, sqq);
        }
    };
    let mut best_t = (0f32, 0f32);
    for end in [kv(0), kv(15)] {
        for k in 0..=32 {
            let t = -8.0 + 0.5 * k as f32;
            let before = best.0;
            consider((end + t) / max, &mut best);
            if best.0 != before {
                best_t = (end, t);
            }
        }
    }
    for j in [-0.375f32, -0.25, -0.125, 0.125, 0.25, 0.375] {
        consider((best_t.0 + best_t.1 + j) / max, &mut best);
    }
    if !positive(best.2) {
        return 0.0;
    }
    // Re-round at the fitted scale and refit, while it helps.
    for _ in 0..4 {
        let iscale = best.2 / best.1;
        if !iscale.is_finite() {
            break;
        }
        let before = best.0;
        consider(iscale, &mut best);
        if best.0 == before {
            break;
        }
    }
    best.1 / best.2
}

/// The f16 scale with the smallest exact error among the neighbours of `scale` and of
/// the refits from their codes.
fn settle_nl(x: &[f32], w: &[f32], scale: f32) -> f32 {
    let mut best = (nl_error(x, w, 0.0), 0f32);
    let consider = |d: f32, best: &mut (f32, f32)| -> bool {
        if d == best.1 {
            return false;
        }
        let e = nl_error(x, w, d);
        if e < best.0 {
            *best = (e, d);
            true
        } else {
            false
        }
    };
    for d in f16_candidates(scale) {
        consider(d, &mut best);
    }
    let mut q = [0u8; QK];
    for _ in 0..3 {
        if best.1 == 0.0 {
            break;
        }
        nl_codes(x, best.1, &mut q[..x.len()]);
        let (mut sxq, mut sqq) = (0f32, 0f32);
        for ((&v, &wi), &c) in x.iter().zip(w).zip(&q) {
            sxq += wi * v * kv(usize::from(c));
            sqq += wi * kv(usize::from(c)) * kv(usize::from(c));
        }
        if !positive(sqq) {
            break;
        }
        let mut improved = false;
        for d in f16_candidates(sxq / sqq) {
            improved |= consider(d, &mut best);
        }
        if !improved {
            break;
        }
    }
    best.1
}

fn put_f16(dst: &mut [u8], v: f32) {
    dst.copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

fn get_f16(src: &[u8]) -> f32 {
    f16::from_le_bytes([src[0], src[1]]).to_f32()
}

/// Packs the 32 codes of a block: byte `j` holds element `j` (low) and `j + 16` (high).
fn pack_codes(q: &[u8], qs: &mut [u8]) {
    for j in 0..QK / 2 {
        qs[j] = (q[j] & 0x0f) | ((q[j + QK / 2] & 0x0f) << 4);
    }
}

/// `y[j] = d·K[code of element j]` for the 16 bytes of one block.
fn unpack_block(qs: &[u8], d: f32, y: &mut [f32]) {
    for j in 0..QK / 2 {
        y[j] = d * kv(usize::from(qs[j] & 0x0f));
        y[j + QK / 2] = d * kv(usize::from(qs[j] >> 4));
    }
}

pub(crate) fn quantize_iq4_nl(x: &[f32], w: &[f32], out: &mut [u8]) {
    let d = settle_nl(x, w, fit_nl(x, w));
    let mut q = [0u8; QK];
    nl_codes(x, d, &mut q);
    put_f16(&mut out[0..2], d);
    pack_codes(&q, &mut out[2..18]);
}

pub(crate) fn dequantize_iq4_nl(b: &[u8], y: &mut [f32]) {
    unpack_block(&b[2..18], get_f16(&b[0..2]), y);
}

/// The f16 super-scale `d` and codes `l` (in [`XS_SCALE_CODE`]) minimising
/// `Σ ll·(d·l − s)²`: the largest scale mapped to every code count (give or take a
/// fraction, either sign), each followed by least-squares refits of `d`.
fn code_xs_scales(s: &[f32], ll: &[f32], codes: &mut [f32]) -> f32 {
    let mut pivot = 0f32;
    for &v in s {
        if v.abs() > pivot.abs() {
            pivot = v;
        }
    }
    if pivot == 0.0 {
        codes.fill(0.0);
        return 0.0;
    }
    let code = XS_SCALE_CODE;
    let model = |d: f32| -> (f64, f64, f64) {
        let (mut err, mut num, mut den) = (0f64, 0f64, 0f64);
        for (&sj, &lj) in s.iter().zip(ll) {
            let l = (sj / d).round().clamp(code.lo, code.hi);
            let e = f64::from(d * l) - f64::from(sj);
            err += f64::from(lj) * e * e;
            num += f64::from(lj) * f64::from(sj) * f64::from(l);
            den += f64::from(lj) * f64::from(l) * f64::from(l);
        }
        (err, num, den)
    };
    let mut best = (f64::INFINITY, 0f32);
    for k in 0..2 * 32 * 4 {
        // Pivot on code ±m, m = 1..32, with quarter-code offsets.
        let m = (k / 8 + 1) as f32 - 0.25 * ((k % 4) as f32);
        let target = if (k / 4) % 2 == 0 { -m } else { m };
        if target < code.lo - 0.5 || target > code.hi + 0.5 {
            continue;
        }
        let mut d = to_f16(pivot / target).to_f32();
        for _ in 0..3 {
            if d == 0.0 || !d.is_finite() {
                break;
            }
            let (err, num, den) = model(d);
            if err < best.0 {
                best = (err, d);
            }
            if !positive(den) {
                break;
            }
            let nd = to_f16((num / den) as f32).to_f32();
            if nd == d {
                break;
            }
            d = nd;
        }
    }
    let d = best.1;
    for (c, &sj) in codes.iter_mut().zip(s) {
        *c = if d == 0.0 {
            0.0
        } else {
            (sj / d).round().clamp(code.lo, code.hi)
        };
    }
    d
}

/// IQ4_XS: the super-scale and the signed sub-block codes (`ls − 32`).
fn iq4_xs_superblock(x: &[f32], w: &[f32]) -> (f32, [f32; 8]) {
    let mut scales = [0f32; 8];
    let mut ll = [0f32; 8];
    let mut levels = [0f32; QK];
    let mut q = [0u8; QK];
    let gather = |xs: &[f32], ws: &[f32], s: f32, levels: &mut [f32; QK], q: &mut [u8; QK]| {
        nl_codes(xs, s, q);
        for (l, &c) in levels.iter_mut().zip(q.iter()) {
            *l = kv(usize::from(c));
        }
        SymStats::gather(xs, ws, levels)
    };
    for j in 0..8 {
        let r = j * QK..(j + 1) * QK;
        let s = fit_nl(&x[r.clone()], &w[r.clone()]);
        let st = gather(&x[r.clone()], &w[r], s, &mut levels, &mut q);
        scales[j] = if s == 0.0 { 0.0 } else { st.scale() };
        ll[j] = if s == 0.0 { 0.0 } else { st.ll };
    }
    let mut best: Option<(f32, f32, [f32; 8])> = None;
    let mut codes = [0f32; 8];
    for _ in 0..XS_ROUNDS {
        let d = code_xs_scales(&scales, &ll, &mut codes);
        let mut err = 0f32;
        for (j, code) in codes.iter_mut().enumerate() {
            let r = j * QK..(j + 1) * QK;
            let (xs, ws) = (&x[r.clone()], &w[r]);
            // The codes came from the fixed-level model: with the elements re-rounded a
            // neighbouring code can do better. Check them on the exact error.
            let mut best_j = (f32::INFINITY, *code);
            for c in [*code, *code + 1.0, *code - 1.0] {
                if !(XS_SCALE_CODE.lo..=XS_SCALE_CODE.hi).contains(&c) {
                    continue;
                }
                let e = nl_error(xs, ws, d * c);
                if e < best_j.0 {
                    best_j = (e, c);
                }
            }
            *code = best_j.1;
            err += best_j.0;
        }
        if best.as_ref().is_some_and(|(e, _, _)| err >= *e) {
            break;
        }
        best = Some((err, d, codes));
        for j in 0..8 {
            let r = j * QK..(j + 1) * QK;
            let t = d * codes[j];
            if t == 0.0 {
                continue;
            }
            let st = gather(&x[r.clone()], &w[r], t, &mut levels, &mut q);
            if st.ll > 0.0 {
                scales[j] = st.scale();
                ll[j] = st.ll;
            }
        }
    }
    let (_, d, codes) = best.expect("the first round always produces a block");
    (d, codes)
}

pub(crate) fn quantize_iq4_xs(x: &[f32], w: &[f32], out: &mut [u8]) {
    let (d, codes) = iq4_xs_superblock(x, w);
    put_f16(&mut out[0..2], d);
    let mut scales_h = 0u16;
    out[4..8].fill(0);
    let mut q = [0u8; QK];
    for (j, &c) in codes.iter().enumerate() {
        let ls = (c + 32.0) as u8;
        out[4 + j / 2] |= (ls & 0x0f) << (4 * (j % 2));
        scales_h |= u16::from(ls >> 4) << (2 * j);
        let r = j * QK..(j + 1) * QK;
        nl_codes(&x[r], d * c, &mut q);
        pack_codes(&q, &mut out[8 + 16 * j..8 + 16 * (j + 1)]);
    }
    out[2..4].copy_from_slice(&scales_h.to_le_bytes());
}

/// The signed scale code (`ls − 32`) of sub-block `j`.
fn iq4_xs_code(b: &[u8], j: usize) -> i32 {
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    let low = (b[4 + j / 2] >> (4 * (j % 2))) & 0x0f;
    let high = ((scales_h >> (2 * j)) & 3) as u8;
    i32::from(low | (high << 4)) - 32
}

pub(crate) fn dequantize_iq4_xs(b: &[u8], y: &mut [f32]) {
    let d = get_f16(&b[0..2]);
    for (j, ys) in y.chunks_exact_mut(QK).enumerate() {
        let dl = d * iq4_xs_code(b, j) as f32;
        unpack_block(&b[8 + 16 * j..8 + 16 * (j + 1)], dl, ys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_code_matches_a_linear_scan() {
        let special = [1e6, -1e6, 199.99, -200.01, -115.5, 7.0, 101.0, 112.999];
        for v in (-30000..=30000).map(|i| i as f32 * 0.01).chain(special) {
            let mut best = 0;
            for k in 1..16 {
                // Strictly closer wins; a tie goes to the larger value.
                let (v, a, b) = (f64::from(v), f64::from(kv(k)), f64::from(kv(best)));
                if (v - a).abs() <= (v - b).abs() {
                    best = k;
                }
            }
            assert_eq!(nearest_code(v), best, "{v}");
        }
        assert_eq!(nearest_code(f32::INFINITY), 15);
        assert_eq!(nearest_code(f32::NEG_INFINITY), 0);
        assert_eq!(nearest_code(f32::NAN), 0);
    }

    #[test]
    fn iq4_nl_layout() {
        // d = 0.5, element j has code j % 16, element j + 16 code 15 - j.
        let mut b = [0u8; 18];
        b[0..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        for j in 0..16 {
            b[2 + j] = (j as u8) | ((15 - j as u8) << 4);
        }
        let mut y = [0f32; 32];
        dequantize_iq4_nl(&b, &mut y);
        for j in 0..16 {
            assert_eq!(y[j], 0.5 * kv(j));
            assert_eq!(y[j + 16], 0.5 * kv(15 - j));
        }
    }

    #[test]
    fn iq4_xs_layout() {
        // Sub-block j has ls = 32 + j - 4 except sub-block 7 (ls = 63, the top bits set);
        // every element has code 15 (value 113).
        let mut b = [0u8; 136];
        b[0..2].copy_from_slice(&f16::from_f32(0.25).to_le_bytes());
        let ls: Vec<u8> = (0..8)
            .map(|j| if j == 7 { 63 } else { 28 + j as u8 })
            .collect();
        let mut h = 0u16;
        for (j, &l) in ls.iter().enumerate() {
            b[4 + j / 2] |= (l & 0x0f) << (4 * (j % 2));
            h |= u16::from(l >> 4) << (2 * j);
        }
        b[2..4].copy_from_slice(&h.to_le_bytes());
        b[8..].fill(0xff);
        let mut y = [0f32; 256];
        dequantize_iq4_xs(&b, &mut y);
        for (j, &l) in ls.iter().enumerate() {
            let expect = 0.25 * (i32::from(l) - 32) as f32 * 113.0;
            assert!(y[32 * j..32 * (j + 1)].iter().all(|&v| v == expect), "{j}");
        }
    }

    #[test]
    fn table_values_round_trip_exactly() {
        // Every element on the table at an f16-exact scale: the block comes back as is.
        let ones = [1f32; 32];
        let x: Vec<f32> = (0..32).map(|j| kv((j * 7) % 16) * 0.0625).collect();
        let mut b = [0u8; 18];
        quantize_iq4_nl(&x, &ones, &mut b);
        let mut y = [0f32; 32];
        dequantize_iq4_nl(&b, &mut y);
        assert_eq!(&y[..], &x[..]);
    }
}
