//! Lattice i-quants: 256-element super-blocks whose elements are coded in cells of eight
//! (or four) as a point of a fixed grid times a sub-block scale, with signs (ggml-common.h
//! `block_iq3_xxs` ... `block_iq1_m`; the grids are in [`crate::iq_grids`]):
//!
//! | type    | bytes | layout                                  | value                      |
//! |---------|-------|-----------------------------------------|----------------------------|
//! | IQ3_XXS | 98    | d, qs[64], u32[8] (signs + scale)       | d·(0.5+ls)/2 · g · ±1      |
//! | IQ3_S   | 110   | d, qs[64], qh[8], signs[32], scales[4]  | d·(1+2ls) · g · ±1         |
//! | IQ2_XXS | 66    | d, u32[16] (4 points, signs + scale)    | d·(0.5+ls)/4 · g · ±1      |
//! | IQ2_XS  | 74    | d, u16 qs[32] (9-bit point, 7 signs), scales[8] | d·(0.5+ls)/4 · g · ±1 |
//! | IQ2_S   | 82    | d, qs[32], signs[32], qh[8], scales[8]  | d·(0.5+ls)/4 · g · ±1      |
//! | IQ1_S   | 50    | d, qs[32], u16 qh[8] (3-bit scale, shift sign) | d·(1+2ls) · (g ± 1/8) |
//! | IQ1_M   | 56    | qs[32], qh[16] (shift sign per 8), scales[8] (d in the top nibbles) | d·(1+2ls) · (g ± 1/8) |
//!
//! Points of IQ3_XXS/IQ3_S cover 4 elements (grids of 256/512), the others 8 (256, 512,
//! 1024, and IQ1's 2048 points of −1, 0, 1). The XXS/XS types spend 7 bits on the signs
//! of 8 elements, the eighth being implied so that every group has an even number of
//! negatives ([`KSIGNS`]); the S types store all 8. Scale codes `ls` have 4 bits (3 for
//! IQ1) per 32 elements, or per 16 (IQ2_XS, IQ2_S, IQ1_M).
//!
//! Quantization. Fold every group's signs into the elements (`|x|`; IQ1 points carry their
//! own signs); with an odd number of negatives one element must take the wrong sign. For
//! a cell (the elements one point covers) and a point `g` the weighted sums
//! `A = Σ w·|x|·g`, `B = Σ w·g²` and `C = min w·|x|·g` give the exact error of scale `t`
//! as `Σ w·x² − 2tA + t²B`, plus `4tC` when the cell carries the group's forced flip (on
//! its cheapest element). They are computed once per super-block, and with them each
//! cell's lower envelope of the lines `t ↦ t·B − 2A` (the upper-left convex chain of the
//! points `(B, A)`, by quickhull): only its few lines (typically 4-8 of 256-4096 points)
//! can be best at any scale, so every candidate scale is scored exactly for the price of
//! scanning them (IQ1's ±1/8 shifts are two halves of one doubled grid, each with its
//! envelope; a cell that may carry its group's flip has a second envelope, of `A − 2C`):
//! 1. each scale sub-block gets its best float scale: a scan of scales that map the
//!    largest element onto the grid's range, then least-squares refits of the winner;
//! 2. the sub-block scales are coded against the f16 super-scale (odd multiples),
//!    minimising the error model `Σ B·(T − t)²` with the f16 rounding included, then
//!    every sub-block is re-solved at its stored scale with the neighbouring codes tried
//!    exactly, and stage 2 repeats on the refitted sub-block scales while the exact error
//!    drops.

use std::sync::OnceLock;

use half::f16;

use crate::iq_grids::{
    IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID, KSIGNS,
};
use crate::search::{positive, GROUP_EPS};

const QK_K: usize = 256;
/// Elements per sign group.
const GROUP: usize = 8;

/// One lattice type.
struct Lattice {
    /// Elements per grid point (8, or 4 for IQ3).
    width: usize,
    /// Elements per scale code.
    sub: usize,
    /// `T = d·(0.5 + ls)·factor`.
    factor: f32,
    /// The stored scale of code `ls`, computed as ggml's dequantizer does.
    scale: fn(f32, u8) -> f32,
    /// Groups carry 7 sign bits and an even number of negatives (the XXS/XS types);
    /// otherwise 8 free sign bits.
    parity: bool,
    /// The grid holds signed values (IQ1): no sign bits, nothing folded.
    signed: bool,
    /// IQ1_S: the points are two halves (grid + 1/8, grid − 1/8) and all cells of a
    /// sub-block take theirs from the same half.
    shared_shift: bool,
    /// Largest scale code.
    ls_max: u8,
    /// The smallest and largest grid magnitude the largest element maps to.
    reach: (f32, f32),
    /// The grid's values, `width` per point.
    grid: fn() -> &'static [f32],
}

fn decode<const W: usize>(words: impl Iterator<Item = u64>) -> Vec<f32> {
    let mut out = Vec::new();
    for w in words {
        for i in 0..W {
            out.push(((w >> (8 * i)) & 0xff) as f32);
        }
    }
    out
}

fn iq2xxs_grid() -> &'static [f32] {
    static G: OnceLock<Vec<f32>> = OnceLock::new();
    G.get_or_init(|| decode::<8>(IQ2XXS_GRID.iter().copied()))
}

fn iq2xs_grid() -> &'static [f32] {
    static G: OnceLock<Vec<f32>> = OnceLock::new();
    G.get_or_init(|| decode::<8>(IQ2XS_GRID.iter().copied()))
}

fn iq3xxs_grid() -> &'static [f32] {
    static G: OnceLock<Vec<f32>> = OnceLock::new();
    G.get_or_init(|| decode::<4>(IQ3XXS_GRID.iter().map(|&w| u64::from(w))))
}

fn iq2s_grid() -> &'static [f32] {
    static G: OnceLock<Vec<f32>> = OnceLock::new();
    G.get_or_init(|| decode::<8>(IQ2S_GRID.iter().copied()))
}

fn iq3s_grid() -> &'static [f32] {
    static G: OnceLock<Vec<f32>> = OnceLock::new();
    G.get_or_init(|| decode::<4>(IQ3S_GRID.iter().map(|&w| u64::from(w))))
}

/// ggml's `IQ1S_DELTA`: the shift of IQ1 points.
const IQ1_DELTA: f32 = 0.125;

/// IQ1's points: the 2048 of `iq1s_grid` shifted by +1/8, then the same by −1/8 (point
/// `p ≥ 2048` has the shift bit set), computed as the dequantizer does (`g + delta`).
fn iq1_grid() -> &'static [f32] {
    static G: OnceLock<Vec<f32>> = OnceLock::new();
    G.get_or_init(|| {
        let mut out = Vec::with_capacity(2 * 2048 * 8);
        for delta in [IQ1_DELTA, -IQ1_DELTA] {
            for &w in IQ1S_GRID.iter() {
                for i in 0..8 {
                    out.push(f32::from(((w >> (8 * i)) & 0xff) as u8 as i8) + delta);
                }
            }
        }
        out
    })
}

fn scale_quarter(d: f32, ls: u8) -> f32 {
    d * (0.5 + f32::from(ls)) * 0.25
}

fn scale_half(d: f32, ls: u8) -> f32 {
    d * (0.5 + f32::from(ls)) * 0.5
}

fn scale_odd(d: f32, ls: u8) -> f32 {
    d * f32::from(1 + 2 * ls)
}

const IQ2_XXS: Lattice = Lattice {
    width: 8,
    sub: 32,
    factor: 0.25,
    scale: scale_quarter,
    parity: true,
    signed: false,
    shared_shift: false,
    ls_max: 15,
    reach: (8.0, 43.0),
    grid: iq2xxs_grid,
};
const IQ2_XS: Lattice = Lattice {
    width: 8,
    sub: 16,
    factor: 0.25,
    scale: scale_quarter,
    parity: true,
    signed: false,
    shared_shift: false,
    ls_max: 15,
    reach: (8.0, 43.0),
    grid: iq2xs_grid,
};
const IQ2_S: Lattice = Lattice {
    width: 8,
    sub: 16,
    factor: 0.25,
    scale: scale_quarter,
    parity: false,
    signed: false,
    shared_shift: false,
    ls_max: 15,
    reach: (8.0, 43.0),
    grid: iq2s_grid,
};
const IQ3_XXS: Lattice = Lattice {
    width: 4,
    sub: 32,
    factor: 0.5,
    scale: scale_half,
    parity: true,
    signed: false,
    shared_shift: false,
    ls_max: 15,
    reach: (4.0, 62.0),
    grid: iq3xxs_grid,
};
const IQ3_S: Lattice = Lattice {
    width: 4,
    sub: 32,
    factor: 2.0,
    scale: scale_odd,
    parity: false,
    signed: false,
    shared_shift: false,
    ls_max: 15,
    reach: (1.0, 15.0),
    grid: iq3s_grid,
};
const IQ1_S: Lattice = Lattice {
    width: 8,
    sub: 32,
    factor: 2.0,
    scale: scale_odd,
    parity: false,
    signed: true,
    shared_shift: true,
    ls_max: 7,
    reach: (0.875, 1.125),
    grid: iq1_grid,
};
const IQ1_M: Lattice = Lattice {
    width: 8,
    sub: 16,
    factor: 2.0,
    scale: scale_odd,
    parity: false,
    signed: true,
    shared_shift: false,
    ls_max: 7,
    reach: (0.875, 1.125),
    grid: iq1_grid,
};

/// Rounds of stage 2.
const ROUNDS: usize = 3;

impl Lattice {
    #[cfg(test)]
    fn points(&self) -> usize {
        (self.grid)().len() / self.width
    }

    fn point(&self, p: usize) -> &'static [f32] {
        &(self.grid)()[p * self.width..(p + 1) * self.width]
    }
}

/// A grid point chosen for a cell, with its sums `A = Σ w·|x|·g`, `B = Σ w·g²` and
/// `C = min w·|x|·g` over the cell.
#[derive(Clone, Copy, Debug)]
struct Line {
    point: u16,
    a: f32,
    b: f32,
    c: f32,
}

/// The grid coordinate-major (`width` rows of `points` values) with its squares, so that
/// the sums of a cell over every point vectorise across points. IQ1 keeps its 2048
/// unshifted points (the shift is added to the sums, see [`Folded::new`]).
struct Columns {
    points: usize,
    g: Vec<f32>,
    g2: Vec<f32>,
}

fn columns_of(width: usize, values: impl Fn(usize, usize) -> f32, points: usize) -> Columns {
    let mut g = vec![0f32; width * points];
    let mut g2 = vec![0f32; width * points];
    for i in 0..width {
        for p in 0..points {
            let v = values(p, i);
            g[i * points + p] = v;
            g2[i * points + p] = v * v;
        }
    }
    Columns { points, g, g2 }
}

fn columns(lat: &Lattice) -> &'static Columns {
    static C: [OnceLock<Columns>; 6] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    if lat.signed {
        return C[5].get_or_init(|| {
            columns_of(
                8,
                |p, i| f32::from(((IQ1S_GRID[p] >> (8 * i)) & 0xff) as u8 as i8),
                2048,
            )
        });
    }
    let grid = (lat.grid)();
    let slot = [
        iq2xxs_grid(),
        iq2xs_grid(),
        iq2s_grid(),
        iq3xxs_grid(),
        iq3s_grid(),
    ]
    .iter()
    .position(|g| std::ptr::eq(g.as_ptr(), grid.as_ptr()))
    .expect("a lattice grid");
    C[slot].get_or_init(|| {
        let w = lat.width;
        columns_of(w, |p, i| grid[p * w + i], grid.len() / w)
    })
}

/// Points per block of the vectorised sums (every grid size is a multiple).
const BLOCK: usize = 16;
/// Lane count of the vectorised folds (fixed, so results do not depend on the target).
const LANES: usize = 8;

/// `Σ wa·g` and `Σ ws·g²` over a cell's coordinates for the points `p0..p0 + BLOCK`, and
/// a third sum by `MODE`: 1 `Σ ws·g` (IQ1's shift), 2 `min wa·g` (the flip), 0 nothing.
#[inline(always)]
fn block_sums<const MODE: u8>(
    cols: &Columns,
    p0: usize,
    wa: &[f32],
    ws: &[f32],
) -> ([f32; BLOCK], [f32; BLOCK], [f32; BLOCK]) {
    let np = cols.points;
    let mut sa = [0f32; BLOCK];
    let mut sb = [0f32; BLOCK];
    let mut s3 = [if MODE == 2 { f32::INFINITY } else { 0.0 }; BLOCK];
    for (i, (&wai, &wsi)) in wa.iter().zip(ws).enumerate() {
        let g = &cols.g[i * np + p0..i * np + p0 + BLOCK];
        let g2 = &cols.g2[i * np + p0..i * np + p0 + BLOCK];
        for k in 0..BLOCK {
            let v = wai * g[k];
            sa[k] += v;
            sb[k] += wsi * g2[k];
            if MODE == 1 {
                s3[k] += wsi * g[k];
            } else if MODE == 2 {
                s3[k] = if v < s3[k] { v } else { s3[k] };
            }
        }
    }
    (sa, sb, s3)
}

/// The lower envelopes of every cell of a super-block. For a cell and a scale `t > 0`
/// the best point minimises `t·(t·B − 2A)`: over `t` these are lines, and only those on
/// their lower envelope can ever win, typically a dozen of the 256-4096 points. Each cell
/// keeps its envelope per half of the grid (IQ1's two shifts; one half otherwise) and,
/// when its group has an odd number of negatives, a second one for the flipped cost
/// `t·(t·B − 2(A − 2C))`. A query scans the few lines of an envelope.
struct Hulls {
    lines: Vec<Line>,
    /// `lines[off[k]..off[k + 1]]` is envelope `k = (cell·halves + half)·2 + flipped`.
    off: Vec<u32>,
    halves: usize,
}

/// `(A − Pa)(Qb − Pb) − (Qa − Pa)(B − Pb)`: positive when point `(B, A)` lies above the
/// chord from `P` to `Q` (`Pb < Qb`), proportional to its distance from it.
#[inline(always)]
fn above(a: f32, b: f32, p: (f64, f64), q: (f64, f64)) -> f64 {
    (f64::from(a) - p.0) * (q.1 - p.1) - (q.0 - p.0) * (f64::from(b) - p.1)
}

/// Quickhull on the points `s` (indices into `a`, `b`), all above the chord from point
/// `p` to point `q`: pushes the chain's points strictly between them to `out`, from `p`'s
/// side. `s` is reordered.
fn chain(a: &[f32], b: &[f32], s: &mut [u32], p: usize, q: usize, out: &mut Vec<u32>) {
    if s.is_empty() {
        return;
    }
    let pt = |i: usize| (f64::from(a[i]), f64::from(b[i]));
    let (pp, pq) = (pt(p), pt(q));
    let mut far = (f64::NEG_INFINITY, 0usize);
    for (k, &i) in s.iter().enumerate() {
        let v = above(a[i as usize], b[i as usize], pp, pq);
        if v > far.0 {
            far = (v, k);
        }
    }
    let f = s[far.1] as usize;
    let pf = pt(f);
    // The points above p→f to the front, then those above f→q; the rest are inside.
    let mut n1 = 0;
    for k in 0..s.len() {
        let i = s[k] as usize;
        if above(a[i], b[i], pp, pf) > 0.0 {
            s.swap(n1, k);
            n1 += 1;
        }
    }
    let mut n2 = n1;
    for k in n1..s.len() {
        let i = s[k] as usize;
        if above(a[i], b[i], pf, pq) > 0.0 {
            s.swap(n2, k);
            n2 += 1;
        }
    }
    let (s1, rest) = s.split_at_mut(n1);
    chain(a, b, s1, p, f, out);
    out.push(f as u32);
    chain(a, b, &mut rest[..n2 - n1], f, q, out);
}

/// Lower envelope of the lines `B·t − 2A` (`t > 0`) of `n` points (sums in `a`, `b`, `c`;
/// point indices offset by `first`): the upper-left convex chain of the points `(B, A)`,
/// from the smallest B (winner as t → ∞; ties: largest A) to the largest A (winner as
/// t → 0; ties: smallest B), found by quickhull. `ext`: the extremes of `a`, `b`;
/// `scratch` is reused.
#[inline(always)]
fn envelope(
    a: &[f32],
    b: &[f32],
    c: &[f32],
    first: usize,
    ext: &Extremes,
    scratch: &mut Scratch,
    out: &mut Vec<Line>,
) {
    let n = a.len();
    // The first points at the extremes (folded while the sums were made). A tie on A (or
    // B) with a worse B (or A) only adds a line that never wins alone.
    let (amax, bmin, aabs, bmax) = ext.finish();
    let hi = first_where(&a[..n], |v| v == amax);
    let lo = first_where(&b[..n], |v| v == bmin);
    let line = |p: usize| Line {
        point: (first + p) as u16,
        a: a[p],
        b: b[p],
        c: c[p],
    };
    out.push(line(lo));
    if hi == lo {
        return;
    }
    // Two rounds of quickhull in f32 over all points, vectorised: the point farthest
    // above the chord lo→hi, then the farthest above each of the two new chords. Then the
    // points above any of the (up to four) chords, by an f32 test with a margin, and the
    // rest of the chain found per chord in f64. A point the f32 rounding keeps needlessly
    // (or a polygon vertex slightly inside the true chain) only adds a line that never
    // wins alone.
    let mut poly = [0usize; MAX_EDGES + 1];
    poly[0] = lo;
    poly[1] = hi;
    let mut len = 2;
    let dist =
        |(pa, pb, da, db): (f32, f32, f32, f32), a: f32, b: f32| (a - pa) * db - da * (b - pb);
    for _ in 0..if n >= 2048 { 1 } else { 2 } {
        let edges = len - 1;
        let mut ec = [(0f32, 0f32, 0f32, 0f32); MAX_EDGES];
        for e in 0..edges {
            let (p, q) = (poly[e], poly[e + 1]);
            ec[e] = (a[p], b[p], a[q] - a[p], b[q] - b[p]);
        }
        let mut fmax = [[0f32; LANES]; MAX_EDGES];
        for (ca, cb) in a[..n].chunks_exact(LANES).zip(b[..n].chunks_exact(LANES)) {
            for (m, &c) in fmax.iter_mut().zip(&ec).take(edges) {
                for k in 0..LANES {
                    let d = dist(c, ca[k], cb[k]);
                    m[k] = if d > m[k] { d } else { m[k] };
                }
            }
        }
        let mut next = [0usize; MAX_EDGES + 1];
        let mut nl = 0;
        for e in 0..edges {
            next[nl] = poly[e];
            nl += 1;
            let best = fmax[e].iter().copied().fold(0f32, f32::max);
            if best > 0.0 {
                let f = first_pair(&a[..n], &b[..n], |a, b| dist(ec[e], a, b) == best);
                if f != poly[e] && f != poly[e + 1] {
                    next[nl] = f;
                    nl += 1;
                }
            }
        }
        next[nl] = poly[len - 1];
        nl += 1;
        if nl == len {
            break;
        }
        poly = next;
        len = nl;
    }
    let edges = len - 1;
    // Point (A, B) is above the chord p→q when A·dB − dA·B > pA·dB − dA·pB; the margin
    // covers the f32 rounding of both sides (|A| ≤ aabs, 0 ≤ B ≤ bmax).
    let mut ec = [(0f32, 0f32, 0f32); MAX_EDGES];
    for e in 0..edges {
        let (p, q) = (poly[e], poly[e + 1]);
        let (da, db) = (a[q] - a[p], b[q] - b[p]);
        let tol = 1e-5 * (aabs * db.abs() + da.abs() * bmax);
        ec[e] = (db, da, a[p] * db - da * b[p] - tol);
    }
    for list in scratch.0.iter_mut() {
        list.clear();
    }
    for (ch, (ca, cb)) in a[..n]
        .chunks_exact(LANES)
        .zip(b[..n].chunks_exact(LANES))
        .enumerate()
    {
        // Most chunks have no point above any chord: a vectorised test first.
        let above = |k: usize, (db, da, rhs): (f32, f32, f32)| ca[k] * db - da * cb[k] - rhs;
        let keep = |k: usize, e: (f32, f32, f32)| above(k, e) > 0.0;
        let mut m = [f32::NEG_INFINITY; LANES];
        for &c in &ec[..edges] {
            for (k, mk) in m.iter_mut().enumerate() {
                let v = above(k, c);
                *mk = if v > *mk { v } else { *mk };
            }
        }
        if m.iter().all(|&v| v <= 0.0) {
            continue;
        }
        for (e, list) in scratch.0.iter_mut().enumerate().take(edges) {
            let mut mask = 0u32;
            for k in 0..LANES {
                mask |= u32::from(keep(k, ec[e])) << k;
            }
            while mask != 0 {
                let p = ch * LANES + mask.trailing_zeros() as usize;
                mask &= mask - 1;
                if p != poly[e] && p != poly[e + 1] {
                    list.push(p as u32);
                }
            }
        }
    }
    let idx = &mut scratch.1;
    idx.clear();
    for e in 0..edges {
        if e > 0 {
            idx.push(poly[e] as u32);
        }
        chain(a, b, &mut scratch.0[e], poly[e], poly[e + 1], idx);
    }
    out.extend(idx.iter().map(|&p| line(p as usize)));
    out.push(line(hi));
}

/// Per-lane extremes of the sums of a set of points: the largest A, the smallest B, the
/// largest |A| and the largest B (vectorised folds, fed a block at a time).
#[derive(Clone, Copy)]
struct Extremes {
    amax: [f32; LANES],
    bmin: [f32; LANES],
    aabs: [f32; LANES],
    bmax: [f32; LANES],
}

impl Extremes {
    fn new() -> Extremes {
        Extremes {
            amax: [f32::NEG_INFINITY; LANES],
            bmin: [f32::INFINITY; LANES],
            aabs: [0.0; LANES],
            bmax: [0.0; LANES],
        }
    }

    #[inline(always)]
    fn add(&mut self, a: &[f32], b: &[f32]) {
        for (ca, cb) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
            for k in 0..LANES {
                self.amax[k] = if ca[k] > self.amax[k] {
                    ca[k]
                } else {
                    self.amax[k]
                };
                self.bmin[k] = if cb[k] < self.bmin[k] {
                    cb[k]
                } else {
                    self.bmin[k]
                };
                let m = ca[k].abs();
                self.aabs[k] = if m > self.aabs[k] { m } else { self.aabs[k] };
                self.bmax[k] = if cb[k] > self.bmax[k] {
                    cb[k]
                } else {
                    self.bmax[k]
                };
            }
        }
    }

    fn finish(&self) -> (f32, f32, f32, f32) {
        let max = |v: &[f32; LANES]| v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let min = |v: &[f32; LANES]| v.iter().copied().fold(f32::INFINITY, f32::min);
        (
            max(&self.amax),
            min(&self.bmin),
            max(&self.aabs),
            max(&self.bmax),
        )
    }
}

/// Chords of the f32 rounds of [`envelope`].
const MAX_EDGES: usize = 4;

/// The first index of `v` whose value passes `hit`, searched a chunk at a time (0 if none).
#[inline(always)]
fn first_where(v: &[f32], hit: impl Fn(f32) -> bool) -> usize {
    for (ch, c) in v.chunks_exact(LANES).enumerate() {
        let mut m = 0u32;
        for (k, &v) in c.iter().enumerate() {
            m |= u32::from(hit(v)) << k;
        }
        if m != 0 {
            return ch * LANES + m.trailing_zeros() as usize;
        }
    }
    0
}

/// [`first_where`] over pairs `(a[p], b[p])`.
#[inline(always)]
fn first_pair(a: &[f32], b: &[f32], hit: impl Fn(f32, f32) -> bool) -> usize {
    for (ch, (ca, cb)) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)).enumerate() {
        let mut m = 0u32;
        for k in 0..LANES {
            m |= u32::from(hit(ca[k], cb[k])) << k;
        }
        if m != 0 {
            return ch * LANES + m.trailing_zeros() as usize;
        }
    }
    0
}

/// Buffers of [`envelope`].
type Scratch = ([Vec<u32>; MAX_EDGES], Vec<u32>);

impl Hulls {
    fn range(&self, cell: usize, half: usize, flipped: bool) -> &[Line] {
        let k = (cell * self.halves + half) * 2 + usize::from(flipped);
        &self.lines[self.off[k] as usize..self.off[k + 1] as usize]
    }

    /// Best point of `cell` at scale `t` from grid half `half` (both halves when `None`):
    /// the cost `t·(t·B − 2A)`, and (when `flip`) the best with the group's forced flip,
    /// cost plus `4t·C` (ties: the lower point). Without `flip` the flipped choice is the
    /// plain one.
    fn best(&self, cell: usize, t: f32, half: Option<usize>, flip: bool) -> CellBest {
        let (h0, h1) = match half {
            Some(h) => (h, h + 1),
            None => (0, self.halves),
        };
        let pick = |flipped: bool| {
            let k0 = (cell * self.halves + h0) * 2 + usize::from(flipped);
            let first = self.lines[self.off[k0] as usize];
            let mut best = (first, f32::INFINITY);
            let four_t = if flipped { 4.0 * t } else { 0.0 };
            for h in h0..h1 {
                for &l in self.range(cell, h, flipped) {
                    let mut e = t * (t * l.b - 2.0 * l.a);
                    if flipped {
                        e += four_t * l.c;
                    }
                    if e < best.1 || (e == best.1 && l.point < best.0.point) {
                        best = (l, e);
                    }
                }
            }
            best
        };
        let plain = pick(false);
        let flipped = if flip { pick(true) } else { plain };
        CellBest { plain, flipped }
    }
}

/// Range of the sub-block scale scan: the largest element maps from `SCAN_LO` times the
/// smallest grid value to `SCAN_HI` times the largest.
const SCAN_LO: f32 = 0.8;
const SCAN_HI: f32 = 2.0;
/// Ratio between neighbouring scales of the scan.
const SCAN_STEP: f32 = 1.12;

/// A super-block with its signs folded: `odd[g]` when group `g` has an odd number of
/// negative elements; the envelopes of every cell.
struct Folded<'a> {
    x: &'a [f32],
    w: &'a [f32],
    odd: [bool; QK_K / GROUP],
    hulls: Hulls,
}

impl<'a> Folded<'a> {
    /// The same arithmetic (no FMA) with AVX2 where the CPU has it: the sums and
    /// envelopes are bit for bit those of the baseline build, only faster.
    fn new(lat: &Lattice, x: &'a [f32], w: &'a [f32]) -> Folded<'a> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { Self::new_avx2(lat, x, w) };
        }
        Self::build(lat, x, w)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn new_avx2(lat: &Lattice, x: &'a [f32], w: &'a [f32]) -> Folded<'a> {
        Self::build(lat, x, w)
    }

    #[inline(always)]
    fn build(lat: &Lattice, x: &'a [f32], w: &'a [f32]) -> Folded<'a> {
        let mut odd = [false; QK_K / GROUP];
        for (g, xs) in x.chunks_exact(GROUP).enumerate() {
            odd[g] = lat.parity && xs.iter().filter(|&&v| v < 0.0).count() % 2 == 1;
        }
        let cols = columns(lat);
        let np = cols.points;
        let width = lat.width;
        let cells = QK_K / width;
        let halves = if lat.signed { 2 } else { 1 };
        let per_half = np; // IQ1: each half is the 2048 base points, shifted
        let mut a = vec![0f32; halves * per_half];
        let mut b = vec![0f32; halves * per_half];
        let mut c = vec![0f32; halves * per_half];
        let mut hulls = Hulls {
            lines: Vec::with_capacity(cells * halves * 32),
            off: Vec::with_capacity(cells * halves * 2 + 1),
            halves,
        };
        hulls.off.push(0);
        let mut scratch: Scratch = Default::default();
        let mut flip_a = vec![0f32; np];
        let mut wa = [0f32; 8];
        let mut ws = [0f32; 8];
        for cell in 0..cells {
            let r = cell * width..(cell + 1) * width;
            for i in 0..width {
                let v = x[r.start + i];
                ws[i] = w[r.start + i];
                wa[i] = ws[i] * if lat.signed { v } else { v.abs() };
            }
            let need_c = odd[cell * width / GROUP];
            // Σ over the cell's coordinates, in blocks of points (vectorised across points),
            // folding the extremes of each half on the way.
            let mut ext = [Extremes::new(); 2];
            if lat.signed {
                // Point g ± 1/8 from the sums of g: A ± δ·Σw·x and B ± 2δ·Σw·g + δ²·Σw
                // (the first half is the +1/8 shift, as in `iq1_grid`).
                let (mut sx, mut sw) = (0f32, 0f32);
                for (&wai, &wsi) in wa.iter().zip(&ws).take(width) {
                    sx += wai;
                    sw += wsi;
                }
                let d = IQ1_DELTA;
                for p0 in (0..np).step_by(BLOCK) {
                    let (sa, sb, sg) = block_sums::<1>(cols, p0, &wa[..width], &ws[..width]);
                    let mut h = [[0f32; BLOCK]; 4];
                    for k in 0..BLOCK {
                        h[0][k] = sa[k] + d * sx;
                        h[1][k] = sb[k] + 2.0 * d * sg[k] + d * d * sw;
                        h[2][k] = sa[k] - d * sx;
                        h[3][k] = sb[k] - 2.0 * d * sg[k] + d * d * sw;
                    }
                    ext[0].add(&h[0], &h[1]);
                    ext[1].add(&h[2], &h[3]);
                    a[p0..p0 + BLOCK].copy_from_slice(&h[0]);
                    b[p0..p0 + BLOCK].copy_from_slice(&h[1]);
                    a[np + p0..np + p0 + BLOCK].copy_from_slice(&h[2]);
                    b[np + p0..np + p0 + BLOCK].copy_from_slice(&h[3]);
                }
            } else if need_c {
                for p0 in (0..np).step_by(BLOCK) {
                    let (sa, sb, mc) = block_sums::<2>(cols, p0, &wa[..width], &ws[..width]);
                    ext[0].add(&sa, &sb);
                    let mut af = [0f32; BLOCK];
                    for k in 0..BLOCK {
                        af[k] = sa[k] - 2.0 * mc[k];
                    }
                    ext[1].add(&af, &sb);
                    a[p0..p0 + BLOCK].copy_from_slice(&sa);
                    b[p0..p0 + BLOCK].copy_from_slice(&sb);
                    c[p0..p0 + BLOCK].copy_from_slice(&mc);
                    flip_a[p0..p0 + BLOCK].copy_from_slice(&af);
                }
            } else {
                for p0 in (0..np).step_by(BLOCK) {
                    let (sa, sb, _) = block_sums::<0>(cols, p0, &wa[..width], &ws[..width]);
                    ext[0].add(&sa, &sb);
                    a[p0..p0 + BLOCK].copy_from_slice(&sa);
                    b[p0..p0 + BLOCK].copy_from_slice(&sb);
                }
            }
            for h in 0..halves {
                let s = h * np..(h + 1) * np;
                envelope(
                    &a[s.clone()],
                    &b[s.clone()],
                    &c[s.clone()],
                    h * np,
                    &ext[h],
                    &mut scratch,
                    &mut hulls.lines,
                );
                hulls.off.push(hulls.lines.len() as u32);
                if need_c {
                    // Parity types have one half: the flipped sums are A − 2C.
                    let from = hulls.lines.len();
                    envelope(
                        &flip_a,
                        &b[s.clone()],
                        &c[s.clone()],
                        h * np,
                        &ext[1],
                        &mut scratch,
                        &mut hulls.lines,
                    );
                    // Keep the true A in the lines (the cost adds 4t·C itself).
                    for l in &mut hulls.lines[from..] {
                        l.a = a[usize::from(l.point)];
                    }
                }
                hulls.off.push(hulls.lines.len() as u32);
            }
        }
        Folded { x, w, odd, hulls }
    }
    /// Σ w·x² over `range`.
    fn energy(&self, range: std::ops::Range<usize>) -> f64 {
        self.x[range.clone()]
            .iter()
            .zip(&self.w[range])
            .map(|(&v, &wi)| f64::from(wi) * f64::from(v) * f64::from(v))
            .sum()
    }
}

/// The choice for one cell at a scale: best point and cost without and with the flip.
#[derive(Clone, Copy)]
struct CellBest {
    plain: (Line, f32),
    flipped: (Line, f32),
}

/// Points (and which cell takes its group's flip) of a range of groups at one scale.
#[derive(Clone, Copy)]
struct Choice {
    point: u16,
    flip: bool,
}

/// Solves the groups `groups` at `scale`: writes the choice of each of their cells to
/// `out` (indexed by cell) and returns `(cost, a, b)`: the error minus `Σ w·x²`, and the
/// sums that make the error of these choices `Σ w·x² − 2·s·a + s²·b` at any scale `s`.
fn solve_groups(
    lat: &Lattice,
    f: &Folded,
    groups: std::ops::Range<usize>,
    scale: f32,
    out: &mut [Choice],
) -> (f64, f64, f64) {
    if !lat.shared_shift {
        return solve_in(lat, f, groups, scale, None, out);
    }
    // One shift for the whole range (a sub-block): the better half.
    let per = GROUP / lat.width;
    let cells = groups.start * per..groups.end * per;
    let first = solve_in(lat, f, groups.clone(), scale, Some(0), out);
    let mut keep = [out[0]; 8];
    keep[..cells.len()].copy_from_slice(&out[cells.clone()]);
    let second = solve_in(lat, f, groups, scale, Some(1), out);
    if first.0 <= second.0 {
        out[cells.clone()].copy_from_slice(&keep[..cells.len()]);
        first
    } else {
        second
    }
}

/// [`solve_groups`] with every cell's point taken from grid half `half` (all if `None`).
fn solve_in(
    lat: &Lattice,
    f: &Folded,
    groups: std::ops::Range<usize>,
    scale: f32,
    half: Option<usize>,
    out: &mut [Choice],
) -> (f64, f64, f64) {
    let per = GROUP / lat.width;
    let (mut cost, mut sa, mut sb) = (0f64, 0f64, 0f64);
    let mut cells = [None; 2];
    for g in groups {
        for (k, c) in cells.iter_mut().enumerate().take(per) {
            *c = Some(f.hulls.best(g * per + k, scale, half, f.odd[g]));
        }
        // Which cell (if any) carries the flip: the one where it costs least.
        let flip_cell = if f.odd[g] {
            let mut best = (0usize, f32::INFINITY);
            for (k, cb) in cells.iter().flatten().enumerate().take(per) {
                let extra = cb.flipped.1 - cb.plain.1;
                if extra < best.1 {
                    best = (k, extra);
                }
            }
            Some(best.0)
        } else {
            None
        };
        for (k, cb) in cells.iter().flatten().enumerate().take(per) {
            let flip = flip_cell == Some(k);
            let (line, e) = if flip { cb.flipped } else { cb.plain };
            out[g * per + k] = Choice {
                point: line.point,
                flip,
            };
            cost += f64::from(e);
            sa += f64::from(line.a) - if flip { 2.0 * f64::from(line.c) } else { 0.0 };
            sb += f64::from(line.b);
        }
    }
    (cost, sa, sb)
}

/// Best float scale of sub-block `j` with its error model `(t, a, b)` (`t = a/b`).
fn fit_sub(lat: &Lattice, f: &Folded, j: usize, choices: &mut [Choice]) -> (f32, f64, f64) {
    let r = j * lat.sub..(j + 1) * lat.sub;
    let groups = r.start / GROUP..r.end / GROUP;
    let amax = f.x[r.clone()].iter().fold(0f32, |m, &v| m.max(v.abs()));
    if amax < GROUP_EPS {
        return (0.0, 0.0, 0.0);
    }
    let (gmin, gmax) = lat.reach;
    // Score of a candidate: the error left after refitting its points' scale, `−a²/b`.
    let mut best: Option<(f32, f64, f64)> = None;
    let mut try_scale = |s: f32, best: &mut Option<(f32, f64, f64)>| -> bool {
        if !positive(s) || !s.is_finite() {
            return false;
        }
        let (_, a, b) = solve_groups(lat, f, groups.clone(), s, choices);
        if !positive(b) || !positive(a) {
            return false;
        }
        let better = match best {
            None => true,
            // Sums of f32 terms: a relative margin keeps exact ties with the first.
            Some((_, ba, bb)) => a * a * *bb > *ba * *ba * b * (1.0 + 1e-6),
        };
        if better {
            *best = Some(((a / b) as f32, a, b));
        }
        better
    };
    // The largest element mapped from just under the smallest grid value to well past the
    // largest (clipping it: with importance it may matter little), geometric steps.
    let (lo, hi) = (gmin * SCAN_LO, gmax * SCAN_HI);
    let steps = ((hi / lo).ln() / SCAN_STEP.ln()).ceil() as usize;
    let ratio = (hi / lo).powf(1.0 / steps as f32);
    let mut m = lo;
    for _ in 0..=steps {
        try_scale(amax / m, &mut best);
        m *= ratio;
    }
    // Re-solve at the refitted scale while that helps.
    for _ in 0..6 {
        let Some((s, _, _)) = best else { break };
        if !try_scale(s, &mut best) {
            break;
        }
    }
    best.unwrap_or((0.0, 0.0, 0.0))
}

/// The stored scale of code `ls`, computed as the dequantizer does.
#[inline(always)]
fn stored_scale(lat: &Lattice, d: f32, ls: u8) -> f32 {
    (lat.scale)(d, ls)
}

/// A solved super-block.
struct Solved {
    d: f32,
    ls: [u8; 16],
    choices: [Choice; 64],
    err: f64,
}

/// Codes the float sub-block scales `t[j]` (curvatures `b[j]`) as `u·(0.5 + ls)` with
/// `u = d·factor` and returns the super-scale `d`, already an f16 value: rounding it is
/// part of the model, which matters when `d` lands among the f16 subnormals.
fn code_scales(lat: &Lattice, t: &[f32], b: &[f64]) -> f32 {
    let tmax = t.iter().copied().fold(0f32, f32::max);
    if !positive(tmax) {
        return 0.0;
    }
    let stored = |d: f32| f16::from_f32(d).to_f32();
    let mut best = (f64::INFINITY, 0f32);
    // The largest scale on code `m` (give or take), for every `m`: with few sub-blocks
    // that matter, a coarse super-scale can fit them all exactly.
    for k in 0..(usize::from(lat.ls_max) + 1) * 5 {
        let (m, frac) = ((k / 5) as f32, (k % 5) as f32 * 0.2 - 0.4);
        let mut d = stored(tmax / (m + 0.5 + frac) / lat.factor);
        for _ in 0..3 {
            if !positive(d) || !d.is_finite() {
                break;
            }
            let (mut err, mut num, mut den) = (0f64, 0f64, 0f64);
            for (&tj, &bj) in t.iter().zip(b) {
                let ls = (tj / (d * lat.factor) - 0.5)
                    .round()
                    .clamp(0.0, f32::from(lat.ls_max)) as u8;
                let e = f64::from(stored_scale(lat, d, ls)) - f64::from(tj);
                err += bj * e * e;
                let m = f64::from(0.5 + f32::from(ls)) * f64::from(lat.factor);
                num += bj * f64::from(tj) * m;
                den += bj * m * m;
            }
            if err < best.0 {
                best = (err, d);
            }
            if !positive(den) {
                break;
            }
            let nd = stored((num / den) as f32);
            if nd == d {
                break;
            }
            d = nd;
        }
    }
    best.1
}

fn solve_superblock(lat: &Lattice, x: &[f32], w: &[f32]) -> Solved {
    let f = Folded::new(lat, x, w);
    let n_sub = QK_K / lat.sub;
    debug_assert!(QK_K / lat.width <= 64 && n_sub <= 16);
    let mut choices = [Choice {
        point: 0,
        flip: false,
    }; 64];
    let mut t = [0f32; 16];
    let mut b = [0f64; 16];
    let mut energy = [0f64; 16];
    for j in 0..n_sub {
        let (s, _, bj) = fit_sub(lat, &f, j, &mut choices);
        t[j] = s;
        b[j] = bj;
        energy[j] = f.energy(j * lat.sub..(j + 1) * lat.sub);
    }
    let total_energy: f64 = energy[..n_sub].iter().sum();
    let mut best = Solved {
        d: 0.0,
        ls: [0; 16],
        choices,
        err: total_energy,
    };
    if t[..n_sub].iter().all(|&v| v == 0.0) {
        return best;
    }
    let groups_per_sub = lat.sub / GROUP;
    let per = GROUP / lat.width;
    let mut trial = choices;
    for _ in 0..ROUNDS {
        // The super-scale of the model, then every sub-block re-solved at its stored
        // scale, with the neighbouring codes tried on the exact error.
        let d = code_scales(lat, &t[..n_sub], &b[..n_sub]);
        if !positive(d) {
            break;
        }
        let mut ls = [0u8; 16];
        let mut err = total_energy;
        for j in 0..n_sub {
            let groups = j * groups_per_sub..(j + 1) * groups_per_sub;
            let near = (t[j] / (d * lat.factor) - 0.5)
                .round()
                .clamp(0.0, f32::from(lat.ls_max)) as i32;
            let cells = groups.start * per..groups.end * per;
            let mut best_j = (f64::INFINITY, 0u8);
            let mut keep = [trial[0]; 8];
            for c in [near, near - 1, near + 1] {
                if !(0..=i32::from(lat.ls_max)).contains(&c) {
                    continue;
                }
                let s = stored_scale(lat, d, c as u8);
                let (cost, _, _) = solve_groups(lat, &f, groups.clone(), s, &mut trial);
                if cost < best_j.0 {
                    best_j = (cost, c as u8);
                    keep[..cells.len()].copy_from_slice(&trial[cells.clone()]);
                }
            }
            ls[j] = best_j.1;
            err += best_j.0;
            trial[cells.clone()].copy_from_slice(&keep[..cells.len()]);
        }
        if err >= best.err {
            break;
        }
        best = Solved {
            d,
            ls,
            choices: trial,
            err,
        };
        // Refit every sub-block's float scale to its current points, then re-solve there.
        for j in 0..n_sub {
            let groups = j * groups_per_sub..(j + 1) * groups_per_sub;
            let s = stored_scale(lat, best.d, best.ls[j]);
            let (_, a, bj) = solve_groups(lat, &f, groups.clone(), s, &mut trial);
            if bj > 0.0 && a > 0.0 {
                let s2 = (a / bj) as f32;
                let (_, a2, b2) = solve_groups(lat, &f, groups, s2, &mut trial);
                if b2 > 0.0 && a2 > 0.0 {
                    t[j] = (a2 / b2) as f32;
                    b[j] = b2;
                }
            }
        }
    }
    best
}

/// The 8 sign bits of group `g` for its chosen cells (with `lat.parity`, an even number
/// of negatives).
fn group_signs(lat: &Lattice, x: &[f32], w: &[f32], g: usize, choices: &[Choice]) -> u8 {
    let mut mask = 0u8;
    for i in 0..GROUP {
        if x[GROUP * g + i] < 0.0 {
            mask |= 1 << i;
        }
    }
    let per = GROUP / lat.width;
    for k in 0..per {
        let cell = g * per + k;
        if !choices[cell].flip {
            continue;
        }
        // The element where the wrong sign costs least (the one `C` picked).
        let pt = lat.point(usize::from(choices[cell].point));
        let mut best = (0usize, f32::INFINITY);
        for (i, &g) in pt.iter().enumerate() {
            let e = cell * lat.width + i;
            let v = w[e] * x[e].abs() * g;
            if v < best.1 {
                best = (i, v);
            }
        }
        mask ^= 1 << (k * lat.width + best.0);
    }
    // The XXS/XS types imply the eighth sign from the even parity. A group the search
    // never solved (a super-block of zeros, or sums that overflowed) flips its cheapest
    // element so that the stored signs still describe it.
    if lat.parity && mask.count_ones() % 2 == 1 {
        let xs = &x[GROUP * g..GROUP * (g + 1)];
        let ws = &w[GROUP * g..GROUP * (g + 1)];
        let mut best = (0usize, f32::INFINITY);
        for (i, (&v, &wi)) in xs.iter().zip(ws).enumerate() {
            if wi * v.abs() < best.1 {
                best = (i, wi * v.abs());
            }
        }
        mask ^= 1 << best.0;
    }
    mask
}

fn put_f16(dst: &mut [u8], v: f32) {
    dst.copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

fn get_f16(src: &[u8]) -> f32 {
    f16::from_le_bytes([src[0], src[1]]).to_f32()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Writes 8 values `db·g·sign` of one group.
fn put_group(y: &mut [f32], db: f32, points: [&[f32]; 2], signs: u8, width: usize) {
    for i in 0..GROUP {
        let g = points[i / width][i % width];
        let v = db * g;
        y[i] = if signs & (1 << i) != 0 { -v } else { v };
    }
}

pub(crate) fn quantize_iq2_xxs(x: &[f32], w: &[f32], out: &mut [u8]) {
    let lat = &IQ2_XXS;
    let s = solve_superblock(lat, x, w);
    put_f16(&mut out[0..2], s.d);
    for ib in 0..QK_K / 32 {
        let mut aux1 = u32::from(s.ls[ib]) << 28;
        for l in 0..4 {
            let g = 4 * ib + l;
            out[2 + 8 * ib + l] = s.choices[g].point as u8;
            aux1 |= u32::from(group_signs(lat, x, w, g, &s.choices) & 0x7f) << (7 * l);
        }
        out[2 + 8 * ib + 4..2 + 8 * ib + 8].copy_from_slice(&aux1.to_le_bytes());
    }
}

pub(crate) fn dequantize_iq2_xxs(b: &[u8], y: &mut [f32]) {
    let d = get_f16(&b[0..2]);
    let grid = iq2xxs_grid();
    for ib in 0..QK_K / 32 {
        let aux1 = u32_at(b, 2 + 8 * ib + 4);
        let db = scale_quarter(d, (aux1 >> 28) as u8);
        for l in 0..4 {
            let p = usize::from(b[2 + 8 * ib + l]);
            let signs = KSIGNS[((aux1 >> (7 * l)) & 127) as usize];
            let pt = &grid[8 * p..8 * p + 8];
            put_group(&mut y[32 * ib + 8 * l..], db, [pt, pt], signs, 8);
        }
    }
}

pub(crate) fn quantize_iq2_xs(x: &[f32], w: &[f32], out: &mut [u8]) {
    let lat = &IQ2_XS;
    let s = solve_superblock(lat, x, w);
    put_f16(&mut out[0..2], s.d);
    for g in 0..QK_K / GROUP {
        let signs = u16::from(group_signs(lat, x, w, g, &s.choices) & 0x7f);
        let v = s.choices[g].point | (signs << 9);
        out[2 + 2 * g..4 + 2 * g].copy_from_slice(&v.to_le_bytes());
    }
    for ib in 0..QK_K / 32 {
        out[66 + ib] = s.ls[2 * ib] | (s.ls[2 * ib + 1] << 4);
    }
}

pub(crate) fn dequantize_iq2_xs(b: &[u8], y: &mut [f32]) {
    let d = get_f16(&b[0..2]);
    let grid = iq2xs_grid();
    for ib in 0..QK_K / 32 {
        let sc = b[66 + ib];
        let db = [scale_quarter(d, sc & 0x0f), scale_quarter(d, sc >> 4)];
        for l in 0..4 {
            let g = 4 * ib + l;
            let v = u16::from_le_bytes([b[2 + 2 * g], b[3 + 2 * g]]);
            let p = usize::from(v & 511);
            let pt = &grid[8 * p..8 * p + 8];
            put_group(
                &mut y[8 * g..],
                db[l / 2],
                [pt, pt],
                KSIGNS[usize::from(v >> 9)],
                8,
            );
        }
    }
}

pub(crate) fn quantize_iq3_xxs(x: &[f32], w: &[f32], out: &mut [u8]) {
    let lat = &IQ3_XXS;
    let s = solve_superblock(lat, x, w);
    put_f16(&mut out[0..2], s.d);
    for ib in 0..QK_K / 32 {
        let mut aux = u32::from(s.ls[ib]) << 28;
        for l in 0..4 {
            let g = 4 * ib + l;
            out[2 + 8 * ib + 2 * l] = s.choices[2 * g].point as u8;
            out[2 + 8 * ib + 2 * l + 1] = s.choices[2 * g + 1].point as u8;
            aux |= u32::from(group_signs(lat, x, w, g, &s.choices) & 0x7f) << (7 * l);
        }
        out[66 + 4 * ib..70 + 4 * ib].copy_from_slice(&aux.to_le_bytes());
    }
}

pub(crate) fn dequantize_iq3_xxs(b: &[u8], y: &mut [f32]) {
    let d = get_f16(&b[0..2]);
    let grid = iq3xxs_grid();
    for ib in 0..QK_K / 32 {
        let aux = u32_at(b, 66 + 4 * ib);
        let db = scale_half(d, (aux >> 28) as u8);
        for l in 0..4 {
            let p1 = usize::from(b[2 + 8 * ib + 2 * l]);
            let p2 = usize::from(b[2 + 8 * ib + 2 * l + 1]);
            let signs = KSIGNS[((aux >> (7 * l)) & 127) as usize];
            put_group(
                &mut y[32 * ib + 8 * l..],
                db,
                [&grid[4 * p1..4 * p1 + 4], &grid[4 * p2..4 * p2 + 4]],
                signs,
                4,
            );
        }
    }
}

pub(crate) fn quantize_iq3_s(x: &[f32], w: &[f32], out: &mut [u8]) {
    let lat = &IQ3_S;
    let s = solve_superblock(lat, x, w);
    let (d, rest) = out.split_at_mut(2);
    let (qs, rest) = rest.split_at_mut(64);
    let (qh, rest) = rest.split_at_mut(8);
    let (signs, scales) = rest.split_at_mut(32);
    put_f16(d, s.d);
    qh.fill(0);
    for (i, c) in s.choices.iter().enumerate() {
        qs[i] = c.point as u8;
        qh[i / 8] |= ((c.point >> 8) as u8 & 1) << (i % 8);
    }
    for (g, b) in signs.iter_mut().enumerate() {
        *b = group_signs(lat, x, w, g, &s.choices);
    }
    for (j, b) in scales.iter_mut().enumerate() {
        *b = s.ls[2 * j] | (s.ls[2 * j + 1] << 4);
    }
}

pub(crate) fn dequantize_iq3_s(b: &[u8], y: &mut [f32]) {
    let d = get_f16(&b[0..2]);
    let (qs, qh, signs, scales) = (&b[2..66], &b[66..74], &b[74..106], &b[106..110]);
    let grid = iq3s_grid();
    for ib in 0..QK_K / 32 {
        let ls = (scales[ib / 2] >> (4 * (ib % 2))) & 0x0f;
        let db = scale_odd(d, ls);
        for l in 0..4 {
            let point = |i: usize| {
                let p = usize::from(qs[i]) | (usize::from((qh[i / 8] >> (i % 8)) & 1) << 8);
                &grid[4 * p..4 * p + 4]
            };
            let i = 8 * ib + 2 * l;
            put_group(
                &mut y[32 * ib + 8 * l..],
                db,
                [point(i), point(i + 1)],
                signs[4 * ib + l],
                4,
            );
        }
    }
}

pub(crate) fn quantize_iq2_s(x: &[f32], w: &[f32], out: &mut [u8]) {
    let lat = &IQ2_S;
    let s = solve_superblock(lat, x, w);
    let (d, rest) = out.split_at_mut(2);
    let (qs, rest) = rest.split_at_mut(32);
    let (signs, rest) = rest.split_at_mut(32);
    let (qh, scales) = rest.split_at_mut(8);
    put_f16(d, s.d);
    qh.fill(0);
    for (g, c) in s.choices[..QK_K / GROUP].iter().enumerate() {
        qs[g] = c.point as u8;
        qh[g / 4] |= ((c.point >> 8) as u8 & 3) << (2 * (g % 4));
        signs[g] = group_signs(lat, x, w, g, &s.choices);
    }
    for (j, b) in scales.iter_mut().enumerate() {
        *b = s.ls[2 * j] | (s.ls[2 * j + 1] << 4);
    }
}

pub(crate) fn dequantize_iq2_s(b: &[u8], y: &mut [f32]) {
    let d = get_f16(&b[0..2]);
    let (qs, signs, qh, scales) = (&b[2..34], &b[34..66], &b[66..74], &b[74..82]);
    let grid = iq2s_grid();
    for g in 0..QK_K / GROUP {
        let ib = g / 4;
        let ls = (scales[ib] >> (4 * ((g % 4) / 2))) & 0x0f;
        let db = scale_quarter(d, ls);
        let p = usize::from(qs[g]) | (usize::from((qh[ib] >> (2 * (g % 4))) & 3) << 8);
        let pt = &grid[8 * p..8 * p + 8];
        put_group(&mut y[8 * g..], db, [pt, pt], signs[g], 8);
    }
}

pub(crate) fn quantize_iq1_s(x: &[f32], w: &[f32], out: &mut [u8]) {
    let s = solve_superblock(&IQ1_S, x, w);
    put_f16(&mut out[0..2], s.d);
    for ib in 0..QK_K / 32 {
        let mut qh = u16::from(s.ls[ib]) << 12;
        for l in 0..4 {
            let p = s.choices[4 * ib + l].point;
            out[2 + 4 * ib + l] = (p & 0xff) as u8;
            qh |= ((p >> 8) & 7) << (3 * l);
        }
        // The shift is shared: every cell of the sub-block is in the same half.
        if s.choices[4 * ib].point >= 2048 {
            qh |= 0x8000;
        }
        out[34 + 2 * ib..36 + 2 * ib].copy_from_slice(&qh.to_le_bytes());
    }
}

pub(crate) fn dequantize_iq1_s(b: &[u8], y: &mut [f32]) {
    let d = get_f16(&b[0..2]);
    let grid = iq1_grid();
    for ib in 0..QK_K / 32 {
        let qh = u16::from_le_bytes([b[34 + 2 * ib], b[35 + 2 * ib]]);
        let dl = scale_odd(d, ((qh >> 12) & 7) as u8);
        let half = if qh & 0x8000 != 0 { 2048 } else { 0 };
        for l in 0..4 {
            let p =
                half + (usize::from(b[2 + 4 * ib + l]) | (usize::from((qh >> (3 * l)) & 7) << 8));
            for (v, &g) in y[32 * ib + 8 * l..32 * ib + 8 * l + 8]
                .iter_mut()
                .zip(&grid[8 * p..8 * p + 8])
            {
                *v = dl * g;
            }
        }
    }
}

pub(crate) fn quantize_iq1_m(x: &[f32], w: &[f32], out: &mut [u8]) {
    let s = solve_superblock(&IQ1_M, x, w);
    let (qs, rest) = out.split_at_mut(32);
    let (qh, scales) = rest.split_at_mut(16);
    for (cell, c) in s.choices[..QK_K / GROUP].iter().enumerate() {
        let p = c.point % 2048;
        qs[cell] = (p & 0xff) as u8;
        let nibble = ((p >> 8) as u8 & 7) | (u8::from(c.point >= 2048) << 3);
        if cell % 2 == 0 {
            qh[cell / 2] = nibble;
        } else {
            qh[cell / 2] |= nibble << 4;
        }
    }
    let dbits = f16::from_f32(s.d).to_bits();
    for (k, sc) in scales.chunks_exact_mut(2).enumerate() {
        let mut v = ((dbits >> (4 * k)) & 0x0f) << 12;
        for h in 0..4 {
            v |= u16::from(s.ls[4 * k + h]) << (3 * h);
        }
        sc.copy_from_slice(&v.to_le_bytes());
    }
}

pub(crate) fn dequantize_iq1_m(b: &[u8], y: &mut [f32]) {
    let (qs, qh, scales) = (&b[0..32], &b[32..48], &b[48..56]);
    let sc: [u16; 4] =
        std::array::from_fn(|k| u16::from_le_bytes([scales[2 * k], scales[2 * k + 1]]));
    let mut dbits = 0u16;
    for (k, &v) in sc.iter().enumerate() {
        dbits |= (v >> 12) << (4 * k);
    }
    let d = f16::from_bits(dbits).to_f32();
    let grid = iq1_grid();
    for cell in 0..QK_K / GROUP {
        let j = cell / 2; // 16-element sub-block
        let ls = ((sc[j / 4] >> (3 * (j % 4))) & 7) as u8;
        let dl = scale_odd(d, ls);
        let nibble = (qh[cell / 2] >> (4 * (cell % 2))) & 0x0f;
        let p = usize::from(qs[cell]) | (usize::from(nibble & 7) << 8);
        let p = p + if nibble & 8 != 0 { 2048 } else { 0 };
        for (v, &g) in y[8 * cell..8 * cell + 8]
            .iter_mut()
            .zip(&grid[8 * p..8 * p + 8])
        {
            *v = dl * g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian_block(seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut state = seed;
        let mut rnd = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 11) as f64 / (1u64 << 53) as f64).max(1e-12)
        };
        let mut gauss = || (-2.0 * rnd().ln()).sqrt() * (std::f64::consts::TAU * rnd()).cos();
        let x = (0..256).map(|_| (0.02 * gauss()) as f32).collect();
        let w = (0..256).map(|_| (1.5 * gauss()).exp() as f32).collect();
        (x, w)
    }

    /// The envelopes give, at any scale, the cost of the exhaustive search over every
    /// grid point (to rounding), for both the plain and the flipped cost.
    #[test]
    fn envelopes_match_the_exhaustive_search() {
        for lat in [&IQ2_XXS, &IQ2_XS, &IQ2_S, &IQ3_XXS, &IQ3_S, &IQ1_S, &IQ1_M] {
            let grid = (lat.grid)();
            for seed in 0..4 {
                let (x, w) = gaussian_block(seed);
                let f = Folded::new(lat, &x, &w);
                for cell in 0..QK_K / lat.width {
                    let r = cell * lat.width..(cell + 1) * lat.width;
                    let flip = f.odd[cell * lat.width / GROUP];
                    for t in [1e-4f32, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 3e-2] {
                        let (mut plain, mut flipped) = (f32::INFINITY, f32::INFINITY);
                        // The size of the terms, for the rounding tolerance.
                        let mut size = 0f32;
                        for g in grid.chunks_exact(lat.width) {
                            let (mut a, mut b, mut c) = (0f32, 0f32, f32::INFINITY);
                            for ((&xi, &wi), &gi) in x[r.clone()].iter().zip(&w[r.clone()]).zip(g) {
                                let v = wi * if lat.signed { xi } else { xi.abs() } * gi;
                                a += v;
                                b += wi * gi * gi;
                                c = c.min(v);
                            }
                            size = size.max(t * (t * b + 2.0 * a.abs() + 4.0 * c.abs()));
                            plain = plain.min(t * (t * b - 2.0 * a));
                            flipped = flipped.min(t * (t * b - 2.0 * a) + 4.0 * t * c);
                        }
                        let got = f.hulls.best(cell, t, None, flip);
                        let tol = |_: f32| 1e-5 * size;
                        assert!(
                            got.plain.1 <= plain + tol(plain),
                            "plain {} > {plain}",
                            got.plain.1
                        );
                        if flip {
                            assert!(
                                got.flipped.1 <= flipped + tol(flipped),
                                "flipped {} > {flipped}",
                                got.flipped.1
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn grids_have_ggml_shapes_and_values() {
        for (lat, n) in [
            (&IQ2_XXS, 256),
            (&IQ2_XS, 512),
            (&IQ2_S, 1024),
            (&IQ3_XXS, 256),
            (&IQ3_S, 512),
        ] {
            assert_eq!(lat.points(), n);
            let g = (lat.grid)();
            let lo = g.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = g.iter().copied().fold(0f32, f32::max);
            assert_eq!((lo, hi), lat.reach);
        }
        // IQ1: 2048 signed points, shifted by +1/8 then by -1/8.
        assert_eq!(IQ1_S.points(), 4096);
        let g = iq1_grid();
        for (i, &v) in g.iter().enumerate() {
            let shift = if i < 2048 * 8 { 0.125 } else { -0.125 };
            assert!([-1.0, 0.0, 1.0].contains(&(v - shift)), "{i}: {v}");
        }
        assert_eq!(&g[..8], &[-0.875; 8]); // iq1s_grid[0] is all -1
                                           // Every sign byte has an even number of bits set, and its low 7 bits are its index.
        for (i, &s) in KSIGNS.iter().enumerate() {
            assert_eq!(s.count_ones() % 2, 0);
            assert_eq!(usize::from(s & 0x7f), i);
        }
    }

    #[test]
    fn iq2_xxs_layout() {
        // d = 1, sub-block 0: ls = 3 (db = 0.875), group 0 = point 1, signs index 1.
        let mut b = [0u8; 66];
        b[0..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        b[2] = 1;
        b[6..10].copy_from_slice(&((3u32 << 28) | 1).to_le_bytes());
        let mut y = [0f32; 256];
        dequantize_iq2_xxs(&b, &mut y);
        let pt = IQ2_XXS.point(1);
        let signs = KSIGNS[1];
        for i in 0..8 {
            let s = if signs & (1 << i) != 0 { -1.0 } else { 1.0 };
            assert_eq!(y[i], 0.875 * pt[i] * s, "{i}");
        }
        // Sub-block 1 has ls = 0: db = 0.125, point 0 is all 8s.
        assert!(y[32..64].iter().all(|&v| v == 1.0));
    }

    #[test]
    fn iq3_xxs_layout() {
        let mut b = [0u8; 98];
        b[0..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b[2] = 5;
        b[3] = 7;
        b[66..70].copy_from_slice(&((15u32 << 28) | 2).to_le_bytes());
        let mut y = [0f32; 256];
        dequantize_iq3_xxs(&b, &mut y);
        let db = 0.5 * 15.5 * 0.5;
        let (p1, p2) = (IQ3_XXS.point(5), IQ3_XXS.point(7));
        let signs = KSIGNS[2];
        for i in 0..8 {
            let g = if i < 4 { p1[i] } else { p2[i - 4] };
            let s = if signs & (1 << i) != 0 { -1.0 } else { 1.0 };
            assert_eq!(y[i], db * g * s, "{i}");
        }
    }

    #[test]
    fn grid_points_round_trip_exactly() {
        // A super-block built from grid points, signs and stored scales comes back as is.
        let lat = &IQ2_XXS;
        let mut x = [0f32; 256];
        for g in 0..32 {
            let pt = lat.point((g * 37) % 256);
            let signs = KSIGNS[(g * 11) % 128];
            let db = stored_scale(lat, 0.25, (g / 4) as u8 % 16);
            for i in 0..8 {
                let v = db * pt[i];
                x[8 * g + i] = if signs & (1 << i) != 0 { -v } else { v };
            }
        }
        let w = [1f32; 256];
        let mut b = [0u8; 66];
        quantize_iq2_xxs(&x, &w, &mut b);
        let mut y = [0f32; 256];
        dequantize_iq2_xxs(&b, &mut y);
        let err: f32 = x.iter().zip(&y).map(|(a, b)| (a - b).powi(2)).sum();
        assert!(err < 1e-10, "{err}");
    }
}
