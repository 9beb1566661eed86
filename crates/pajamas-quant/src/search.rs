//! Scale search shared by every block kernel.
//!
//! A ggml block stores small integers ("levels") plus one or two floats that map them
//! back to values: `scale·level` for the symmetric codes (Q4_0, Q5_0, Q8_0, and the
//! sub-blocks of Q3_K and Q6_K) or `scale·level + offset` for the affine codes (Q4_1,
//! Q5_1, and the sub-blocks of Q2_K, Q4_K, Q5_K). Quantizing a block means choosing the
//! floats and the levels that minimise the weighted squared error
//! `Σ wᵢ·(xᵢ − valueᵢ)²`, where `w` is the per-column importance from an imatrix, or 1.
//!
//! Two facts make this tractable:
//! * for a fixed scale (and offset) the best level of each element is the nearest one;
//! * for fixed levels the best scale (and offset) is a weighted least-squares fit.
//!
//! The search therefore starts from a grid of scales around "the largest element maps to
//! the extreme level", rounds, refits by least squares, scores every candidate by the
//! exact objective and then alternates rounding and refitting from the best one (the
//! published method of ggml's `make_qx_quants` / `make_qkx2_quants`, with our own grid
//! and scoring). Symmetric codes also get a coordinate descent over single levels, which
//! escapes the fixed points of the alternation.
//!
//! Two-level formats (the k-quants) quantize the sub-block scales themselves. For fixed
//! levels the error of a sub-block is an exact quadratic in its scale (and offset), kept
//! as [`SymStats`] / [`AffineStats`]; the sub-block codes are chosen to minimise that
//! element-domain error rather than a distance between scales.
//!
//! Nothing here allocates: callers pass slices of stack buffers.

use half::f16;

/// Blocks whose largest magnitude is below this are all-zero for every f16-scaled format
/// (the smallest f16 subnormal is 6e-8), so they quantize to zeros.
pub(crate) const GROUP_EPS: f32 = 1e-15;

/// Adding then subtracting 1.5·2²³ leaves an f32 rounded to the nearest integer (ties to
/// even) whenever |v| < 2²²: the sum lands where the f32 spacing is exactly 1. Unlike
/// `f32::round` it is branch-free and vectorises on plain SSE2.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// Relative difference below which two candidates scored from f32 sums count as equal.
const TIE: f64 = 4e-7;

/// Lane count of the partial sums below: a multiple of every SIMD width we care about,
/// and the fixed summation order keeps the results deterministic.
pub(crate) const LANES: usize = 8;

/// `v > 0`, false for NaN: a guard for sums that must be strictly positive.
#[inline(always)]
pub(crate) fn positive<T: PartialOrd + Default>(v: T) -> bool {
    v > T::default()
}

/// Rounds to the nearest integer, ties to even; valid for |v| < 2²².
#[inline(always)]
pub(crate) fn round_int(v: f32) -> f32 {
    (v + ROUND_MAGIC) - ROUND_MAGIC
}

/// The code in `0..=cmax` nearest to `v` (f64; NaN gives 0). Same trick as [`round_int`]
/// with 1.5·2⁵²: `f64::round` is a libm call on baseline x86-64.
#[inline(always)]
fn nearest_code(v: f64, cmax: f64) -> f64 {
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    let v = if v > 0.0 { v } else { 0.0 };
    let v = if v < cmax { v } else { cmax };
    (v + MAGIC) - MAGIC
}

/// `v` limited to `lo..=hi`; NaN becomes `lo`. Written with comparisons so that it maps
/// to `maxps`/`minps`.
#[inline(always)]
pub(crate) fn clamp(v: f32, lo: f32, hi: f32) -> f32 {
    let v = if v > lo { v } else { lo };
    if v < hi {
        v
    } else {
        hi
    }
}

/// The integer level nearest to `v` among `lo..=hi` (integers, |lo|, |hi| < 2²²).
#[inline(always)]
pub(crate) fn nearest_level(v: f32, lo: f32, hi: f32) -> f32 {
    round_int(clamp(v, lo, hi))
}

#[inline(always)]
fn lane_sum(v: &[f32; LANES]) -> f32 {
    ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]))
}

/// The f16 nearest to `v` (ties to even), saturated at ±65504 so that a scale never
/// becomes infinite.
#[inline]
pub(crate) fn to_f16(v: f32) -> f16 {
    f16::from_f32(clamp(v, -65504.0, 65504.0))
}

/// The f16 value next to `h`, away from or towards +∞; infinities and NaN stay put and
/// the result never overflows to infinity.
fn f16_step(h: f16, up: bool) -> f16 {
    if !h.is_finite() {
        return h;
    }
    let bits = h.to_bits();
    let magnitude = bits & 0x7fff;
    let negative = bits & 0x8000 != 0;
    if magnitude == 0 {
        return f16::from_bits(if up { 0x0001 } else { 0x8001 });
    }
    let grow = up != negative;
    let magnitude = if grow {
        (magnitude + 1).min(0x7bff)
    } else {
        magnitude - 1
    };
    f16::from_bits((bits & 0x8000) | magnitude)
}

/// The f16 rounding of `v` and its two neighbours, as f32: storing a scale in f16 moves it
/// by up to half an f16 step, and the neighbour on the other side is sometimes the better
/// choice once the levels are re-rounded.
pub(crate) fn f16_candidates(v: f32) -> [f32; 3] {
    let h = to_f16(v);
    [
        h.to_f32(),
        f16_step(h, true).to_f32(),
        f16_step(h, false).to_f32(),
    ]
}

/// A set of scale candidates: `start + step·k` for k in `0..=steps`, added to the
/// number of levels that the largest element (or the range) is mapped to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grid {
    pub start: f32,
    pub step: f32,
    pub steps: u16,
}

impl Grid {
    pub(crate) const fn new(start: f32, step: f32, steps: u16) -> Grid {
        Grid { start, step, steps }
    }

    /// δ = 0 comes first: on ties (an isolated outlier fits equally well with any level)
    /// the first candidate stays, and the extreme level gives the smallest scale, which is
    /// what a two-level format needs to keep its other sub-blocks' codes usable. It also
    /// keeps power-of-two mappings (8, 16, 32·128...) that leave f16 mantissas intact.
    fn points(self) -> impl Iterator<Item = f32> {
        std::iter::once(0.0).chain(
            (0..=self.steps)
                .map(move |k| self.start + self.step * f32::from(k))
                .filter(|d| d.abs() > 1e-4),
        )
    }

    /// A finer pass around the best coarse point: quarter steps on either side. Coarse
    /// then fine finds nearly what a 4× denser grid finds, at a third of its cost.
    fn refine(self, around: f32) -> impl Iterator<Item = f32> {
        [-3.0f32, -2.0, -1.0, 1.0, 2.0, 3.0]
            .into_iter()
            .map(move |j| around + self.step * 0.25 * j)
    }
}

// ---------------------------------------------------------------------------------------
// Symmetric codes: value = scale·level, level in lo..=hi.
// ---------------------------------------------------------------------------------------

/// The integer range of a symmetric code. ggml's symmetric formats all have one more
/// negative level than positive ones (`lo = −(hi + 1)`); the sign of the scale is free,
/// so the element of largest magnitude can always use the long side.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SymCode {
    pub lo: f32,
    pub hi: f32,
}

/// A candidate of the symmetric search: `1/iscale` rounded the levels, `sxl = Σ w·x·l`
/// and `sll = Σ w·l²`. For those levels the least-squares scale is `sxl/sll` and the
/// error it leaves is `Σ w·x² − sxl²/sll`, so a larger `sxl²/sll` is a better candidate.
#[derive(Clone, Copy, Debug)]
struct SymTrial {
    iscale: f32,
    sxl: f64,
    sll: f64,
}

impl SymTrial {
    /// Better than `other`. The sums come from f32 lanes, so candidates within a few f32
    /// ulps of each other are ties; a tie goes to the larger levels (smaller scale): for
    /// an isolated outlier every level count fits equally well, and a two-level format
    /// wants the extreme level so that the sub-block's scale stays small.
    fn beats(&self, other: &SymTrial) -> bool {
        if self.sll.is_nan() || self.sll <= 0.0 {
            return false;
        }
        if other.sll.is_nan() || other.sll <= 0.0 {
            return true;
        }
        // explained = sxl²/sll, compared without dividing.
        let a = self.sxl * self.sxl * other.sll;
        let b = other.sxl * other.sxl * self.sll;
        a > b * (1.0 + TIE) || (a >= b * (1.0 - TIE) && self.sll > other.sll * (1.0 + TIE))
    }
}

/// `(Σ w·x·l, Σ w·l²)` for the levels `l = nearest(iscale·x)`; `wx` is `w·x`, computed
/// once per block.
///
/// Three separate loops (levels, then one reduction each) over lane arrays: LLVM turns
/// each into plain 4-wide SSE, where one fused body gets packed into 2-wide pairs.
#[inline]
fn sym_moments(x: &[f32], wx: &[f32], w: &[f32], iscale: f32, code: SymCode) -> (f64, f64) {
    debug_assert!(x.chunks_exact(LANES).remainder().is_empty() && w.len() == x.len());
    let mut buf = [0f32; 32];
    let l = &mut buf[..x.len()];
    for (l, &v) in l.iter_mut().zip(x) {
        *l = nearest_level(iscale * v, code.lo, code.hi);
    }
    (f64::from(dot_lanes(wx, l)), f64::from(dot_lanes_sq(w, l)))
}

/// `Σ a·b` in [`LANES`] partial sums (fixed order, so deterministic).
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    for (ac, bc) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for k in 0..LANES {
            acc[k] += ac[k] * bc[k];
        }
    }
    lane_sum(&acc)
}

/// `Σ a·b²` in [`LANES`] partial sums.
#[inline(always)]
fn dot_lanes_sq(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    for (ac, bc) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for k in 0..LANES {
            acc[k] += ac[k] * (bc[k] * bc[k]);
        }
    }
    lane_sum(&acc)
}

/// Finds a scale for `x` under a symmetric code and writes the matching levels to `q`.
/// Returns the least-squares scale of those levels (0 for an all-zero block).
///
/// `grid` offsets the level the largest element maps to (`−(|lo| + δ)`); `polish` adds
/// the coordinate descent over single levels, worth it for codes with few levels.
pub(crate) fn fit_symmetric(
    x: &[f32],
    w: &[f32],
    code: SymCode,
    grid: Grid,
    polish: bool,
    q: &mut [f32],
) -> f32 {
    let mut pivot = 0f32;
    for &v in x {
        if v.abs() > pivot.abs() {
            pivot = v;
        }
    }
    if pivot.abs() < GROUP_EPS {
        q.fill(0.0);
        return 0.0;
    }
    let mut wx_buf = [0f32; 32];
    let wx = &mut wx_buf[..x.len()];
    for ((p, &v), &wi) in wx.iter_mut().zip(x).zip(w) {
        *p = wi * v;
    }
    let wx = &*wx;
    let reach = -code.lo;
    let mut best: Option<SymTrial> = None;
    let mut best_delta = 0.0;
    let consider = |delta: f32, best: &mut Option<SymTrial>, best_delta: &mut f32| {
        let iscale = -(reach + delta) / pivot;
        let (sxl, sll) = sym_moments(x, wx, w, iscale, code);
        let trial = SymTrial { iscale, sxl, sll };
        let first_or_better = match best {
            None => true,
            Some(b) => trial.beats(b),
        };
        if trial.sll > 0.0 && first_or_better {
            *best = Some(trial);
            *best_delta = delta;
        }
    };
    for delta in grid.points() {
        consider(delta, &mut best, &mut best_delta);
    }
    for delta in grid.refine(best_delta) {
        consider(delta, &mut best, &mut best_delta);
    }
    let Some(mut best) = best else {
        // Every weight is zero: nothing to fit, keep the plain "max to extreme" scale.
        let iscale = -reach / pivot;
        fill_sym_levels(x, iscale, code, q);
        return 1.0 / iscale;
    };
    // Alternate: re-round at the fitted scale, refit, while it keeps improving.
    for _ in 0..4 {
        let iscale = (best.sll / best.sxl) as f32;
        if !iscale.is_finite() {
            break;
        }
        let (sxl, sll) = sym_moments(x, wx, w, iscale, code);
        let trial = SymTrial { iscale, sxl, sll };
        if !trial.beats(&best) {
            break;
        }
        best = trial;
    }
    fill_sym_levels(x, best.iscale, code, q);
    if !polish {
        return (best.sxl / best.sll) as f32;
    }
    // The descent updates its sums one element at a time in f64: start it from exact
    // f64 sums, or the f32 rounding of the lane sums looks like an improvement.
    let (mut sxl, mut sll) = (0f64, 0f64);
    for ((&v, &wi), &l) in x.iter().zip(w).zip(q.iter()) {
        sxl += f64::from(wi) * f64::from(l) * f64::from(v);
        sll += f64::from(wi) * f64::from(l) * f64::from(l);
    }
    descend_symmetric(x, w, code, q, &mut sxl, &mut sll);
    // The descent ends on levels that need not be the nearest ones for their own scale:
    // one more rounding at that scale can only help.
    let iscale = (sll / sxl) as f32;
    if iscale.is_finite() {
        let (nxl, nll) = sym_moments(x, wx, w, iscale, code);
        if (SymTrial {
            iscale,
            sxl: nxl,
            sll: nll,
        })
        .beats(&SymTrial { iscale, sxl, sll })
        {
            fill_sym_levels(x, iscale, code, q);
            sxl = nxl;
            sll = nll;
        }
    }
    (sxl / sll) as f32
}

fn fill_sym_levels(x: &[f32], iscale: f32, code: SymCode, q: &mut [f32]) {
    for (l, &v) in q.iter_mut().zip(x) {
        *l = nearest_level(iscale * v, code.lo, code.hi);
    }
}

/// Coordinate descent: move single levels by ±1 while that raises `sxl²/sll`, i.e. lowers
/// the error after refitting the scale. Cheap (the sums update in O(1)) and it finds the
/// level patterns that no single rounding scale produces.
fn descend_symmetric(
    x: &[f32],
    w: &[f32],
    code: SymCode,
    q: &mut [f32],
    sxl: &mut f64,
    sll: &mut f64,
) {
    for _ in 0..4 {
        let mut changed = false;
        for i in 0..x.len() {
            let wi = f64::from(w[i]);
            if wi <= 0.0 {
                continue;
            }
            let xi = f64::from(x[i]);
            let l = f64::from(q[i]);
            for step in [-1.0, 1.0] {
                let cand = l + step;
                if cand < f64::from(code.lo) || cand > f64::from(code.hi) {
                    continue;
                }
                let nxl = *sxl + wi * xi * step;
                let nll = *sll + wi * (cand * cand - l * l);
                if nll > 0.0 && nxl * nxl * *sll > *sxl * *sxl * nll * (1.0 + 1e-12) {
                    q[i] = cand as f32;
                    *sxl = nxl;
                    *sll = nll;
                    changed = true;
                    break;
                }
            }
        }
        if !changed {
            break;
        }
    }
}

/// Σ w·(x − d·l)² with `l` the nearest level for the scale `d`: the exact error of
/// storing `d` (already an f16 value) with the best levels for it.
pub(crate) fn sym_error(x: &[f32], w: &[f32], d: f32, code: SymCode) -> f32 {
    debug_assert!(x.chunks_exact(LANES).remainder().is_empty());
    let mut acc = [0f32; LANES];
    if d == 0.0 {
        for (xc, wc) in x.chunks_exact(LANES).zip(w.chunks_exact(LANES)) {
            for k in 0..LANES {
                acc[k] += wc[k] * xc[k] * xc[k];
            }
        }
        return lane_sum(&acc);
    }
    for (xc, wc) in x.chunks_exact(LANES).zip(w.chunks_exact(LANES)) {
        for k in 0..LANES {
            let l = nearest_level(xc[k] / d, code.lo, code.hi);
            let e = xc[k] - d * l;
            acc[k] += wc[k] * e * e;
        }
    }
    lane_sum(&acc)
}

/// The nearest levels for the scale `d` (zeros when `d` is 0), the ones [`sym_error`]
/// scores.
pub(crate) fn sym_levels(x: &[f32], d: f32, code: SymCode, q: &mut [f32]) {
    if d == 0.0 {
        q.fill(0.0);
        return;
    }
    for (l, &v) in q.iter_mut().zip(x) {
        *l = nearest_level(v / d, code.lo, code.hi);
    }
}

/// The least-squares scale of fixed levels, `Σ w·x·l / Σ w·l²`, or `None` if all levels
/// (or weights) are zero.
pub(crate) fn sym_refit(x: &[f32], w: &[f32], q: &[f32]) -> Option<f32> {
    let (mut sxl, mut sll) = (0f64, 0f64);
    for ((&v, &wi), &l) in x.iter().zip(w).zip(q) {
        sxl += f64::from(wi * l) * f64::from(v);
        sll += f64::from(wi * l * l);
    }
    (sll > 0.0).then(|| (sxl / sll) as f32)
}

/// Picks the f16 scale of a single-scale symmetric block (Q4_0, Q5_0, Q8_0) among the
/// f16 neighbours of `scale` and the `extra` candidates, then alternates refit and f16
/// rounding from the winner. Leaves the levels of the chosen scale in `q`; returns it.
pub(crate) fn settle_sym_scale(
    x: &[f32],
    w: &[f32],
    code: SymCode,
    scale: f32,
    extra: &[f32],
    q: &mut [f32],
) -> f32 {
    let mut best_d = 0f32;
    let mut best_err = sym_error(x, w, 0.0, code);
    let consider = |d: f32, best_d: &mut f32, best_err: &mut f32| -> bool {
        if d == *best_d {
            return false;
        }
        let e = sym_error(x, w, d, code);
        if e < *best_err {
            *best_err = e;
            *best_d = d;
            true
        } else {
            false
        }
    };
    // The `extra` (ggml's own) scales go first: ours must be strictly better to replace
    // them, so exactly representable blocks come out byte-identical to ggml's.
    for d in extra
        .iter()
        .map(|&v| to_f16(v).to_f32())
        .chain(f16_candidates(scale))
    {
        consider(d, &mut best_d, &mut best_err);
    }
    for _ in 0..3 {
        sym_levels(x, best_d, code, q);
        let Some(refit) = sym_refit(x, w, q) else {
            break;
        };
        let mut improved = false;
        for d in f16_candidates(refit) {
            improved |= consider(d, &mut best_d, &mut best_err);
        }
        if !improved {
            break;
        }
    }
    sym_levels(x, best_d, code, q);
    best_d
}

// ---------------------------------------------------------------------------------------
// Affine codes: value = scale·level + offset, level in 0..=nmax.
// ---------------------------------------------------------------------------------------

/// Result of [`fit_affine`]: `value = scale·level + offset`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AffineFit {
    pub scale: f32,
    pub offset: f32,
}

/// Weighted sums of one affine candidate, on values shifted by the block's anchor.
#[derive(Clone, Copy, Debug, Default)]
struct AffineMoments {
    l: f64,
    ll: f64,
    yl: f64,
}

/// Σ w·l, Σ w·l², Σ w·y·l for the levels `l = nearest((y − shift)·iscale)`; `wy` is
/// `w·y`, computed once per block. Separate loops, as in [`sym_moments`].
#[inline]
fn affine_moments(
    y: &[f32],
    wy: &[f32],
    w: &[f32],
    iscale: f32,
    shift: f32,
    nmax: f32,
) -> AffineMoments {
    debug_assert!(y.chunks_exact(LANES).remainder().is_empty() && w.len() == y.len());
    let mut buf = [0f32; 32];
    let l = &mut buf[..y.len()];
    for (l, &v) in l.iter_mut().zip(y) {
        *l = nearest_level((v - shift) * iscale, 0.0, nmax);
    }
    AffineMoments {
        l: f64::from(dot_lanes(w, l)),
        ll: f64::from(dot_lanes_sq(w, l)),
        yl: f64::from(dot_lanes(wy, l)),
    }
}

/// A solved affine candidate on shifted values `y = x − anchor`: `y ≈ s·l + c`, with
/// `cost = Σ w·(y − s·l − c)² − Σ w·y²` (lower is better).
#[derive(Clone, Copy, Debug)]
struct AffineTrial {
    iscale: f32,
    shift: f32,
    s: f64,
    c: f64,
    cost: f64,
}

/// Least-squares `(s, c)` for the moments `m` (`sw = Σ w`, `sy = Σ w·y`). With
/// `max_c = Some(limit)` the offset may not exceed `limit` (k-quants subtract a
/// non-negative minimum, so in x terms the offset is ≤ 0); the scale must be positive.
fn solve_affine(m: AffineMoments, sw: f64, sy: f64, max_c: Option<f64>) -> Option<(f64, f64, f64)> {
    // det / (sw·ll) is the weighted variance of the levels over their mean square: 0 when
    // every element sits on one level (a constant block), where f32 sums leave noise of
    // ~1e-7 that would "solve" to garbage.
    let det = sw * m.ll - m.l * m.l;
    if det.is_nan() || det <= 1e-5 * sw * m.ll {
        return None;
    }
    let inv_det = 1.0 / det;
    let mut s = (sw * m.yl - sy * m.l) * inv_det;
    let mut c = (m.ll * sy - m.l * m.yl) * inv_det;
    if let Some(limit) = max_c {
        if c > limit {
            c = limit;
            s = (m.yl - c * m.l) / m.ll;
        }
    }
    if s.is_nan() || s <= 0.0 || !s.is_finite() || !c.is_finite() {
        return None;
    }
    let cost = s * s * m.ll + 2.0 * s * c * m.l + c * c * sw - 2.0 * s * m.yl - 2.0 * c * sy;
    Some((s, c, cost))
}

/// Finds scale and offset for `x` under an affine code with levels `0..=nmax` and writes
/// the levels to `q`. With `nonpos_offset` the offset is kept ≤ 0 (k-quants store it as a
/// subtracted non-negative minimum).
pub(crate) fn fit_affine(
    x: &[f32],
    w: &[f32],
    nmax: f32,
    nonpos_offset: bool,
    grid: Grid,
    q: &mut [f32],
) -> AffineFit {
    let n = x.len();
    let (mut xmin, mut xmax) = (x[0], x[0]);
    for &v in &x[1..] {
        xmin = xmin.min(v);
        xmax = xmax.max(v);
    }
    let anchor = if nonpos_offset { xmin.min(0.0) } else { xmin };
    let range = xmax - anchor;
    if range.is_nan() || range < GROUP_EPS {
        q.fill(0.0);
        return AffineFit {
            scale: 0.0,
            offset: anchor,
        };
    }
    let mut ybuf = [0f32; 32];
    let mut wybuf = [0f32; 32];
    let (y, wy) = (&mut ybuf[..n], &mut wybuf[..n]);
    let (mut sw, mut sy) = (0f64, 0f64);
    for (((yi, wyi), &xi), &wi) in y.iter_mut().zip(wy.iter_mut()).zip(x).zip(w) {
        *yi = xi - anchor;
        *wyi = wi * *yi;
        sw += f64::from(wi);
        sy += f64::from(*wyi);
    }
    let (y, wy) = (&*y, &*wy);
    // In y terms the x-offset limit 0 becomes c ≤ −anchor.
    let max_c = nonpos_offset.then_some(-f64::from(anchor));

    let mut best: Option<AffineTrial> = None;
    let try_candidate = |best: &mut Option<AffineTrial>, iscale: f32, shift: f32| -> bool {
        let m = affine_moments(y, wy, w, iscale, shift, nmax);
        let Some((s, c, cost)) = solve_affine(m, sw, sy, max_c) else {
            return false;
        };
        // As for symmetric codes: near-ties (f32 noise) go to the smaller scale.
        let better = match best {
            None => true,
            Some(b) => {
                let tol = TIE * b.cost.abs();
                cost < b.cost - tol || (cost <= b.cost + tol && s < b.s * (1.0 - TIE))
            }
        };
        if better {
            *best = Some(AffineTrial {
                iscale,
                shift,
                s,
                c,
                cost,
            });
        }
        better
    };
    let mut best_delta = 0.0;
    for delta in grid.points() {
        if try_candidate(&mut best, (nmax + delta) / range, 0.0) {
            best_delta = delta;
        }
    }
    for delta in grid.refine(best_delta) {
        try_candidate(&mut best, (nmax + delta) / range, 0.0);
    }
    let Some(mut trial) = best else {
        // Degenerate weights (all zero, or all mass on one level): min/max scaling.
        let iscale = nmax / range;
        for (l, &yi) in q.iter_mut().zip(y.iter()) {
            *l = nearest_level(yi * iscale, 0.0, nmax);
        }
        return AffineFit {
            scale: range / nmax,
            offset: anchor,
        };
    };
    for _ in 0..4 {
        let iscale = (1.0 / trial.s) as f32;
        if !try_candidate(&mut best, iscale, trial.c as f32) {
            break;
        }
        trial = best.unwrap_or(trial);
    }
    for (l, &yi) in q.iter_mut().zip(y.iter()) {
        *l = nearest_level((yi - trial.shift) * trial.iscale, 0.0, nmax);
    }
    AffineFit {
        scale: trial.s as f32,
        offset: (trial.c + f64::from(anchor)) as f32,
    }
}

/// Σ w·(x − (s·l + m))² with `l` the nearest level in `0..=nmax` for the stored scale
/// `s` and offset `m` (both already f16 values). `s·l + m` is computed exactly as ggml
/// and gguf-py dequantize it (`d·q + m`; `d·q − dmin` is the same float operation).
pub(crate) fn affine_error(x: &[f32], w: &[f32], s: f32, m: f32, nmax: f32) -> f32 {
    debug_assert!(x.chunks_exact(LANES).remainder().is_empty());
    let mut acc = [0f32; LANES];
    if s > 0.0 {
        for (xc, wc) in x.chunks_exact(LANES).zip(w.chunks_exact(LANES)) {
            for k in 0..LANES {
                let l = nearest_level((xc[k] - m) / s, 0.0, nmax);
                let e = xc[k] - (s * l + m);
                acc[k] += wc[k] * e * e;
            }
        }
    } else {
        for (xc, wc) in x.chunks_exact(LANES).zip(w.chunks_exact(LANES)) {
            for k in 0..LANES {
                let e = xc[k] - m;
                acc[k] += wc[k] * e * e;
            }
        }
    }
    lane_sum(&acc)
}

/// The levels [`affine_error`] scores.
pub(crate) fn affine_levels(x: &[f32], s: f32, m: f32, nmax: f32, q: &mut [f32]) {
    if s.is_nan() || s <= 0.0 {
        q.fill(0.0);
        return;
    }
    for (l, &v) in q.iter_mut().zip(x) {
        *l = nearest_level((v - m) / s, 0.0, nmax);
    }
}

/// Weighted sums of one (sub-)block for fixed levels. With them the error of any scale
/// `t` and subtracted minimum `u` is exact without touching the elements again:
/// `Σ w·(t·l − u − x)² = cost(t, u) + Σ w·x²`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AffineStats {
    pub w: f64,
    pub l: f64,
    pub ll: f64,
    pub x: f64,
    pub xl: f64,
}

impl AffineStats {
    pub(crate) fn gather(x: &[f32], w: &[f32], q: &[f32]) -> AffineStats {
        let mut s = AffineStats::default();
        for ((&xi, &wi), &l) in x.iter().zip(w).zip(q) {
            let (xi, wi, l) = (f64::from(xi), f64::from(wi), f64::from(l));
            s.w += wi;
            s.l += wi * l;
            s.ll += wi * l * l;
            s.x += wi * xi;
            s.xl += wi * xi * l;
        }
        s
    }

    /// `Σ w·(t·l − u − x)² − Σ w·x²`.
    pub(crate) fn cost(&self, t: f64, u: f64) -> f64 {
        t * t * self.ll - 2.0 * t * u * self.l + u * u * self.w - 2.0 * t * self.xl
            + 2.0 * u * self.x
    }

    /// The unconstrained best `(t, u)`, if the levels are not all equal.
    pub(crate) fn optimum(&self) -> Option<(f64, f64)> {
        let det = self.ll * self.w - self.l * self.l;
        if det.is_nan() || det <= 1e-9 * self.ll * self.w {
            return None;
        }
        let t = (self.w * self.xl - self.l * self.x) / det;
        let u = (self.l * self.xl - self.ll * self.x) / det;
        Some((t, u))
    }
}

/// For fixed super-scales `d`, `dmin`, picks each sub-block's scale code `ls` and min code
/// `lm` (both in `0..=cmax`) to minimise the element-domain error. The min code is
/// searched around `hint[j]` (the sub-block's preferred minimum); for each, the best scale
/// code is the rounding of the best scale, since the cost is a parabola in the scale.
/// Returns the total cost.
pub(crate) fn assign_affine_codes(
    stats: &[AffineStats],
    hint: &[f64],
    d: f64,
    dmin: f64,
    cmax: f64,
    ls: &mut [u8],
    lm: &mut [u8],
) -> f64 {
    let inv_d = if d > 0.0 { 1.0 / d } else { 0.0 };
    let inv_dmin = if dmin > 0.0 { 1.0 / dmin } else { 0.0 };
    let mut total = 0.0;
    for (j, st) in stats.iter().enumerate() {
        let inv_ll = if st.ll > 0.0 { 1.0 / st.ll } else { 0.0 };
        let centre = nearest_code(hint[j] * inv_dmin, cmax);
        let (first, last) = if dmin > 0.0 {
            ((centre - 1.0).max(0.0), (centre + 1.0).min(cmax))
        } else {
            (0.0, 0.0)
        };
        let mut best = (f64::INFINITY, 0.0, 0.0);
        let mut m = first;
        while m <= last {
            let u = dmin * m;
            let s = nearest_code((st.xl + u * st.l) * inv_ll * inv_d, cmax);
            let cost = st.cost(d * s, u);
            if cost < best.0 {
                best = (cost, s, m);
            }
            m += 1.0;
        }
        total += best.0;
        ls[j] = best.1 as u8;
        lm[j] = best.2 as u8;
    }
    total
}

/// The least-squares super-scales `(d, dmin)` for fixed codes, with `dmin ≥ 0`.
pub(crate) fn refit_affine_supers(
    stats: &[AffineStats],
    ls: &[u8],
    lm: &[u8],
) -> Option<(f64, f64)> {
    let (mut p, mut q, mut r, mut u, mut v) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for ((st, &a), &b) in stats.iter().zip(ls).zip(lm) {
        let (a, b) = (f64::from(a), f64::from(b));
        p += a * a * st.ll;
        q += a * b * st.l;
        r += b * b * st.w;
        u += a * st.xl;
        v += b * st.x;
    }
    let det = p * r - q * q;
    let (d, dmin) = if r > 0.0 && det > 1e-9 * p * r {
        let dmin = (q * u - p * v) / det;
        if dmin >= 0.0 {
            ((r * u - q * v) / det, dmin)
        } else if p > 0.0 {
            (u / p, 0.0)
        } else {
            return None;
        }
    } else if p > 0.0 {
        (u / p, 0.0)
    } else if r > 0.0 {
        (0.0, (-v / r).max(0.0))
    } else {
        return None;
    };
    (d >= 0.0 && d.is_finite() && dmin.is_finite()).then_some((d, dmin))
}

/// Quantizes the sub-block scales and minimums of an affine two-level block: codes in
/// `0..=cmax`, super-scales stored as f16. Alternates code assignment and least-squares
/// super-scales from `init`, then picks the best pair among the f16 neighbours.
/// Returns the f16-exact `(d, dmin)`; the codes are left in `ls`, `lm`.
pub(crate) fn quantize_affine_scales(
    stats: &[AffineStats],
    hint: &[f64],
    cmax: f64,
    init: (f64, f64),
    ls: &mut [u8],
    lm: &mut [u8],
) -> (f32, f32) {
    let n = stats.len();
    let (mut d, mut dmin) = init;
    if d.is_nan() || dmin.is_nan() || (d <= 0.0 && dmin <= 0.0) {
        ls.fill(0);
        lm.fill(0);
        return (0.0, 0.0);
    }
    // Alternate codes and least-squares super-scales while the cost keeps dropping
    // (each half-step can only lower it; stop when the gain is noise).
    let mut prev_cost = f64::INFINITY;
    for _ in 0..6 {
        let cost = assign_affine_codes(stats, hint, d, dmin, cmax, ls, lm);
        if cost >= prev_cost - 1e-9 * prev_cost.abs() {
            break;
        }
        prev_cost = cost;
        match refit_affine_supers(stats, ls, lm) {
            Some(next) => (d, dmin) = next,
            None => break,
        }
    }
    // Storing d and dmin in f16 moves them by up to 2^-12 relative; the rounded pair and
    // its four axis neighbours cover the useful alternatives.
    let [d0, d_up, d_down] = f16_candidates(d as f32);
    let [m0, m_up, m_down] = f16_candidates(dmin as f32);
    let mut best = (f64::INFINITY, 0f32, 0f32);
    let mut try_ls = [0u8; 16];
    let mut try_lm = [0u8; 16];
    for (dq, mq) in [(d0, m0), (d_up, m0), (d_down, m0), (d0, m_up), (d0, m_down)] {
        if dq < 0.0 || mq < 0.0 {
            continue;
        }
        let cost = assign_affine_codes(
            stats,
            hint,
            f64::from(dq),
            f64::from(mq),
            cmax,
            &mut try_ls[..n],
            &mut try_lm[..n],
        );
        if cost < best.0 {
            best = (cost, dq, mq);
            ls.copy_from_slice(&try_ls[..n]);
            lm.copy_from_slice(&try_lm[..n]);
        }
    }
    (best.1, best.2)
}

/// Weighted sums of a symmetric sub-block for fixed levels: the error of a scale `t` is
/// `Σ w·x² − 2t·xl + t²·ll`, minimal at `t = xl/ll`, growing as `ll·(t − xl/ll)²`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SymStats {
    pub xl: f32,
    pub ll: f32,
}

impl SymStats {
    pub(crate) fn gather(x: &[f32], w: &[f32], q: &[f32]) -> SymStats {
        let (mut xl, mut ll) = (0f64, 0f64);
        for ((&xi, &wi), &l) in x.iter().zip(w).zip(q) {
            xl += f64::from(wi * l) * f64::from(xi);
            ll += f64::from(wi * l * l);
        }
        SymStats {
            xl: xl as f32,
            ll: ll as f32,
        }
    }

    /// The sub-block's best scale for its levels.
    pub(crate) fn scale(&self) -> f32 {
        if self.ll > 0.0 {
            self.xl / self.ll
        } else {
            0.0
        }
    }
}

/// Quantizes the (signed) sub-block scales of a symmetric two-level block: scales `s[j]`
/// weighted by `ll[j]` (see [`SymStats`]), codes in `code`, super-scale stored as f16.
/// This is itself a symmetric quantization problem, so it reuses [`fit_symmetric`].
/// Returns the f16-exact super-scale; the codes (as levels) are left in `codes`.
pub(crate) fn quantize_sym_scales(
    s: &[f32],
    ll: &[f32],
    code: SymCode,
    grid: Grid,
    codes: &mut [f32],
) -> f32 {
    let d = fit_symmetric(s, ll, code, grid, true, codes);
    if d == 0.0 {
        codes.fill(0.0);
        return 0.0;
    }
    let mut best = (f32::INFINITY, 0f32);
    for dq in f16_candidates(d) {
        let e = sym_error(s, ll, dq, code);
        if e < best.0 {
            best = (e, dq);
        }
    }
    sym_levels(s, best.1, code, codes);
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_rounding_is_ties_to_even() {
        for (v, r) in [
            (0.5, 0.0),
            (1.5, 2.0),
            (2.5, 2.0),
            (-0.5, 0.0),
            (-1.5, -2.0),
            (3.49, 3.0),
            (-7.51, -8.0),
        ] {
            assert_eq!(round_int(v), r, "{v}");
        }
        assert_eq!(nearest_level(f32::NAN, -8.0, 7.0), -8.0);
        assert_eq!(nearest_level(f32::INFINITY, -8.0, 7.0), 7.0);
    }

    #[test]
    fn f16_neighbours() {
        let [r, up, down] = f16_candidates(1.0);
        assert_eq!(r, 1.0);
        assert!(up > 1.0 && down < 1.0);
        assert_eq!(f16_candidates(0.0)[1], f16::from_bits(1).to_f32());
        let [r, up, down] = f16_candidates(-2.0);
        assert_eq!(r, -2.0);
        assert!(up > -2.0 && down < -2.0);
        assert_eq!(f16_candidates(1e9)[0], 65504.0);
        assert_eq!(f16_candidates(1e9)[1], 65504.0);
    }

    #[test]
    fn symmetric_fit_recovers_exact_grid() {
        // Values on a grid of step 0.25 with levels -8..7: the fit must be exact.
        let x: Vec<f32> = (0..32).map(|i| ((i % 16) as f32 - 8.0) * 0.25).collect();
        let w = [1f32; 32];
        let mut q = [0f32; 32];
        let code = SymCode { lo: -8.0, hi: 7.0 };
        let s = fit_symmetric(&x, &w, code, Grid::new(-1.0, 0.1, 20), true, &mut q);
        assert!((s.abs() - 0.25).abs() < 1e-6, "{s}");
        for (&v, &l) in x.iter().zip(&q) {
            assert_eq!(v, s * l);
        }
    }

    #[test]
    fn affine_fit_recovers_exact_grid() {
        let x: Vec<f32> = (0..32).map(|i| 1.0 + (i % 16) as f32 * 0.5).collect();
        let w = [1f32; 32];
        let mut q = [0f32; 32];
        let fit = fit_affine(&x, &w, 15.0, false, Grid::new(-1.0, 0.1, 20), &mut q);
        assert!(
            (fit.scale - 0.5).abs() < 1e-5 && (fit.offset - 1.0).abs() < 1e-5,
            "{fit:?}"
        );
        assert!(affine_error(&x, &w, fit.scale, fit.offset, 15.0) < 1e-9);
        // With a non-positive offset the best it can do is a pure scale.
        let fit = fit_affine(&x, &w, 15.0, true, Grid::new(-1.0, 0.1, 20), &mut q);
        assert!(fit.offset <= 0.0);
    }

    #[test]
    fn affine_stats_cost_matches_direct_error() {
        let x: Vec<f32> = (0..16)
            .map(|i| ((i * 7919) % 13) as f32 * 0.1 - 0.4)
            .collect();
        let w: Vec<f32> = (0..16).map(|i| 0.5 + (i % 3) as f32).collect();
        let q: Vec<f32> = (0..16).map(|i| (i % 4) as f32).collect();
        let st = AffineStats::gather(&x, &w, &q);
        let (t, u) = (0.3, 0.2);
        let direct: f64 = x
            .iter()
            .zip(&w)
            .zip(&q)
            .map(|((&x, &w), &l)| f64::from(w) * (t * f64::from(l) - u - f64::from(x)).powi(2))
            .sum();
        let xx: f64 = x
            .iter()
            .zip(&w)
            .map(|(&x, &w)| f64::from(w) * f64::from(x).powi(2))
            .sum();
        assert!((st.cost(t, u) + xx - direct).abs() < 1e-9);
        let (bt, bu) = st.optimum().unwrap();
        assert!(st.cost(bt, bu) <= st.cost(t, u));
    }
}
