//! MLX affine quantization, bit for bit as `mx.quantize(w, group_size, bits)` computes it
//! on the CPU (mlx 0.32.4), and `mx.dequantize` of the result.
//!
//! Per group of `group_size` consecutive values of a row, in f32 arithmetic:
//!
//! ```text
//! n_bins = 2^bits - 1
//! s      = max((max - min) / n_bins, 1e-7)
//! edge   = the extreme of larger magnitude (min when |min| > |max|, else max)
//! s      = s when edge is min, -s when edge is max      (so q counts away from edge)
//! q0     = rint(edge / s)
//! if q0 != 0 { s = edge / q0; bias = edge } else { bias = 0 }
//! q      = clamp(rint((w - bias) / s), 0, n_bins)
//! ```
//!
//! The values are quantized with the f32 `s` and `bias`; only then are both rounded to
//! the model dtype for storage. `bias = edge` is an input value, so it is stored exactly
//! and the extreme of larger magnitude dequantizes to itself. When the max is the edge
//! the stored scale is negative: that is mlx's convention, not a bug.
//!
//! Packing: row `r`'s codes form one little-endian bit stream, code `j` at bit offset
//! `bits * j`, cut into u32 words (`n_per_row * bits / 32` per row). For 3, 5 and 6
//! bits codes straddle word boundaries (mlx writes them as 3- or 5-byte packs of 8 or 4
//! codes, which is the same stream).
//!
//! `mx.dequantize` computes `w = round(round(s * q) + bias)` in the model dtype: two
//! roundings, no fused multiply-add. [`dequantize`] does the same.

use half::{bf16, f16};
use rayon::prelude::*;
use serde::Serialize;

use crate::MlxError;

/// Bit widths mlx's affine mode supports.
pub const BITS: [u32; 6] = [2, 3, 4, 5, 6, 8];
/// Group sizes mlx's affine mode supports.
pub const GROUP_SIZES: [usize; 3] = [32, 64, 128];

/// mx.quantize's floor on the scale (a constant group would otherwise divide by zero).
const EPS: f32 = 1e-7;

/// The float type of an MLX checkpoint's scales, biases and unquantized tensors: the
/// model's dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MlxDtype {
    F32,
    F16,
    BF16,
}

impl MlxDtype {
    /// The safetensors spelling (`"BF16"`).
    pub fn safetensors_name(self) -> &'static str {
        match self {
            MlxDtype::F32 => "F32",
            MlxDtype::F16 => "F16",
            MlxDtype::BF16 => "BF16",
        }
    }

    /// The `torch_dtype` / mlx spelling (`"bfloat16"`).
    pub fn config_name(self) -> &'static str {
        match self {
            MlxDtype::F32 => "float32",
            MlxDtype::F16 => "float16",
            MlxDtype::BF16 => "bfloat16",
        }
    }

    /// Parses a config `torch_dtype` value; `None` for anything but the three float types
    /// (mlx-lm's convert casts only to those).
    pub fn from_config_name(s: &str) -> Option<MlxDtype> {
        match s {
            "float32" => Some(MlxDtype::F32),
            "float16" => Some(MlxDtype::F16),
            "bfloat16" => Some(MlxDtype::BF16),
            _ => None,
        }
    }

    /// The MLX dtype of a checkpoint dtype, for the float types MLX stores.
    pub fn from_dtype(d: pajamas_model::Dtype) -> Option<MlxDtype> {
        match d {
            pajamas_model::Dtype::F32 => Some(MlxDtype::F32),
            pajamas_model::Dtype::F16 => Some(MlxDtype::F16),
            pajamas_model::Dtype::BF16 => Some(MlxDtype::BF16),
            _ => None,
        }
    }

    pub fn size(self) -> usize {
        match self {
            MlxDtype::F32 => 4,
            MlxDtype::F16 | MlxDtype::BF16 => 2,
        }
    }

    /// `x` rounded to this type (round to nearest, ties to even, as `astype` does).
    #[inline]
    pub fn round(self, x: f32) -> f32 {
        match self {
            MlxDtype::F32 => x,
            MlxDtype::F16 => f16::from_f32(x).to_f32(),
            MlxDtype::BF16 => bf16::from_f32(x).to_f32(),
        }
    }

    /// Little-endian bytes of `values` in this type (each rounded as [`MlxDtype::round`]).
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(values.len() * self.size());
        match self {
            MlxDtype::F32 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            MlxDtype::F16 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
            MlxDtype::BF16 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
        }
        out
    }

    /// Decodes little-endian bytes of this type.
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            MlxDtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            MlxDtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            MlxDtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        }
    }
}

impl std::fmt::Display for MlxDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.config_name())
    }
}

/// One quantized matrix: what `mx.quantize` returns, flattened row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    pub bits: u32,
    pub group_size: usize,
    pub dtype: MlxDtype,
    pub rows: usize,
    pub n_per_row: usize,
    /// `rows * n_per_row * bits / 32` words (`[rows, n_per_row * bits / 32]`).
    pub packed: Vec<u32>,
    /// One per group (`[rows, n_per_row / group_size]`), exact values of `dtype`.
    pub scales: Vec<f32>,
    /// One per group, exact values of `dtype`.
    pub biases: Vec<f32>,
}

impl Quantized {
    /// u32 words per row of the packed weight.
    pub fn words_per_row(&self) -> usize {
        words_per_row(self.n_per_row, self.bits)
    }

    pub fn packed_bytes(&self) -> Vec<u8> {
        self.packed.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    pub fn scales_bytes(&self) -> Vec<u8> {
        self.dtype.encode(&self.scales)
    }

    pub fn biases_bytes(&self) -> Vec<u8> {
        self.dtype.encode(&self.biases)
    }

    /// The values mlx reconstructs from this (`mx.dequantize`).
    pub fn dequantize(&self) -> Vec<f32> {
        dequantize(
            &self.packed,
            &self.scales,
            &self.biases,
            self.n_per_row,
            self.bits,
            self.group_size,
            self.dtype,
        )
        .expect("a Quantized is consistent by construction")
    }
}

/// u32 words one packed row of `n_per_row` codes takes.
pub fn words_per_row(n_per_row: usize, bits: u32) -> usize {
    n_per_row * bits as usize / 32
}

/// Checks bits, group size and row length against what mlx accepts.
pub fn check_params(n_per_row: usize, bits: u32, group_size: usize) -> Result<(), MlxError> {
    if !BITS.contains(&bits) {
        return Err(MlxError::UnsupportedBits(bits));
    }
    if !GROUP_SIZES.contains(&group_size) {
        return Err(MlxError::UnsupportedGroupSize(group_size));
    }
    if n_per_row == 0 || !n_per_row.is_multiple_of(group_size) {
        return Err(MlxError::RowNotMultiple {
            n_per_row,
            group_size,
        });
    }
    Ok(())
}

/// Rows handed to one rayon task: enough work to amortise scheduling on small rows.
fn rows_per_task(n_per_row: usize) -> usize {
    (16384 / n_per_row.max(1)).max(1)
}

/// Quantizes `data` (rows of `n_per_row` values) as `mx.quantize` does after
/// `astype(dtype)`: each value is first rounded to `dtype`, so f32 data from a bf16 or
/// f16 checkpoint gives exactly mlx's result, and f32 data from an f32 checkpoint gives
/// what mlx-lm's convert produces after casting the model to `dtype`. Rows run in
/// parallel; the result does not depend on the thread count.
pub fn quantize(
    data: &[f32],
    n_per_row: usize,
    bits: u32,
    group_size: usize,
    dtype: MlxDtype,
) -> Result<Quantized, MlxError> {
    check_params(n_per_row, bits, group_size)?;
    if !data.len().is_multiple_of(n_per_row) {
        return Err(MlxError::LengthMismatch {
            what: "data",
            expected: data.len().div_ceil(n_per_row) * n_per_row,
            got: data.len(),
        });
    }
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        return Err(MlxError::NonFinite {
            index: i,
            value: data[i],
        });
    }
    let rows = data.len() / n_per_row;
    let wpr = words_per_row(n_per_row, bits);
    let gpr = n_per_row / group_size;
    let mut packed = vec![0u32; rows * wpr];
    let mut scales = vec![0f32; rows * gpr];
    let mut biases = vec![0f32; rows * gpr];
    let chunk = rows_per_task(n_per_row);
    packed
        .par_chunks_mut(wpr * chunk)
        .zip(scales.par_chunks_mut(gpr * chunk))
        .zip(biases.par_chunks_mut(gpr * chunk))
        .zip(data.par_chunks(n_per_row * chunk))
        .for_each(|(((p, s), b), x)| {
            for r in 0..x.len() / n_per_row {
                quantize_row(
                    &x[r * n_per_row..(r + 1) * n_per_row],
                    bits,
                    group_size,
                    dtype,
                    &mut p[r * wpr..(r + 1) * wpr],
                    &mut s[r * gpr..(r + 1) * gpr],
                    &mut b[r * gpr..(r + 1) * gpr],
                );
            }
        });
    Ok(Quantized {
        bits,
        group_size,
        dtype,
        rows,
        n_per_row,
        packed,
        scales,
        biases,
    })
}

/// One row: groups quantized in order, codes appended to the row's bit stream.
fn quantize_row(
    x: &[f32],
    bits: u32,
    group_size: usize,
    dtype: MlxDtype,
    packed: &mut [u32],
    scales: &mut [f32],
    biases: &mut [f32],
) {
    let n_bins = ((1u32 << bits) - 1) as f32;
    let mut acc: u64 = 0;
    let mut filled: u32 = 0;
    let mut word = 0usize;
    let mut group = [0f32; 128];
    for (g, values) in x.chunks_exact(group_size).enumerate() {
        let group = &mut group[..group_size];
        for (dst, &v) in group.iter_mut().zip(values) {
            *dst = dtype.round(v);
        }
        let (mut w_min, mut w_max) = (f32::INFINITY, f32::NEG_INFINITY);
        // std::max / std::min as mlx writes them (the first operand wins ties).
        for &v in group.iter() {
            if w_max < v {
                w_max = v;
            }
            if v < w_min {
                w_min = v;
            }
        }
        let min_is_edge = w_min.abs() > w_max.abs();
        let mut scale = ((w_max - w_min) / n_bins).max(EPS);
        if !min_is_edge {
            scale = -scale;
        }
        let edge = if min_is_edge { w_min } else { w_max };
        let q0 = (edge / scale).round_ties_even();
        let mut bias = 0.0f32;
        if q0 != 0.0 {
            scale = edge / q0;
            bias = edge;
        }
        for &v in group.iter() {
            let q = ((v - bias) / scale).round_ties_even().clamp(0.0, n_bins) as u64;
            acc |= q << filled;
            filled += bits;
            if filled >= 32 {
                packed[word] = acc as u32;
                word += 1;
                acc >>= 32;
                filled -= 32;
            }
        }
        scales[g] = dtype.round(scale);
        biases[g] = dtype.round(bias);
    }
    debug_assert_eq!(filled, 0, "group_size * bits is a multiple of 32");
    debug_assert_eq!(word, packed.len());
}

/// Unpacks row-major codes (`rows * n_per_row` of them) from packed words.
pub fn unpack(packed: &[u32], n_per_row: usize, bits: u32) -> Vec<u8> {
    let wpr = words_per_row(n_per_row, bits);
    let rows = packed.len().checked_div(wpr).unwrap_or(0);
    let mask = (1u64 << bits) - 1;
    let mut out = Vec::with_capacity(rows * n_per_row);
    for row in packed.chunks_exact(wpr.max(1)).take(rows) {
        let mut acc: u64 = 0;
        let mut filled: u32 = 0;
        let mut words = row.iter();
        for _ in 0..n_per_row {
            if filled < bits {
                acc |= (*words.next().expect("row holds n_per_row codes") as u64) << filled;
                filled += 32;
            }
            out.push((acc & mask) as u8);
            acc >>= bits;
            filled -= bits;
        }
    }
    out
}

/// `mx.dequantize`: `round(round(scale * q) + bias)` in `dtype`, per element.
pub fn dequantize(
    packed: &[u32],
    scales: &[f32],
    biases: &[f32],
    n_per_row: usize,
    bits: u32,
    group_size: usize,
    dtype: MlxDtype,
) -> Result<Vec<f32>, MlxError> {
    check_params(n_per_row, bits, group_size)?;
    let wpr = words_per_row(n_per_row, bits);
    if !packed.len().is_multiple_of(wpr) {
        return Err(MlxError::LengthMismatch {
            what: "packed",
            expected: packed.len().div_ceil(wpr) * wpr,
            got: packed.len(),
        });
    }
    let rows = packed.len() / wpr;
    let groups = rows * (n_per_row / group_size);
    for (what, v) in [("scales", scales), ("biases", biases)] {
        if v.len() != groups {
            return Err(MlxError::LengthMismatch {
                what,
                expected: groups,
                got: v.len(),
            });
        }
    }
    let mut out = vec![0f32; rows * n_per_row];
    let chunk = rows_per_task(n_per_row);
    out.par_chunks_mut(n_per_row * chunk)
        .zip(packed.par_chunks(wpr * chunk))
        .enumerate()
        .for_each(|(c, (o, p))| {
            let codes = unpack(p, n_per_row, bits);
            let g0 = c * chunk * (n_per_row / group_size);
            for (i, (dst, &q)) in o.iter_mut().zip(&codes).enumerate() {
                let g = g0 + i / group_size;
                *dst = dtype.round(dtype.round(scales[g] * q as f32) + biases[g]);
            }
        });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-gaussian sequence (no rand dependency).
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                let mut sum = 0.0f32;
                for _ in 0..4 {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    sum += (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                }
                sum
            })
            .collect()
    }

    #[test]
    fn rejects_what_mlx_rejects() {
        assert!(matches!(
            quantize(&[0.0; 64], 64, 7, 64, MlxDtype::F32),
            Err(MlxError::UnsupportedBits(7))
        ));
        assert!(matches!(
            quantize(&[0.0; 64], 64, 4, 16, MlxDtype::F32),
            Err(MlxError::UnsupportedGroupSize(16))
        ));
        assert!(matches!(
            quantize(&[0.0; 96], 96, 4, 64, MlxDtype::F32),
            Err(MlxError::RowNotMultiple { .. })
        ));
        assert!(matches!(
            quantize(&[f32::NAN; 64], 64, 4, 64, MlxDtype::F32),
            Err(MlxError::NonFinite { index: 0, .. })
        ));
    }

    #[test]
    fn shapes_and_round_trip_for_every_width() {
        let x = noise(4 * 256, 1);
        for bits in BITS {
            for gs in GROUP_SIZES {
                for dt in [MlxDtype::F32, MlxDtype::F16, MlxDtype::BF16] {
                    let q = quantize(&x, 256, bits, gs, dt).unwrap();
                    assert_eq!(q.packed.len(), 4 * 256 * bits as usize / 32);
                    assert_eq!(q.scales.len(), 4 * 256 / gs);
                    let codes = unpack(&q.packed, 256, bits);
                    assert!(codes.iter().all(|&c| (c as u32) < (1 << bits)));
                    let d = q.dequantize();
                    // Half a step inside the grid; up to a step at the far end, where the
                    // grid anchored on the edge can stop short (plus dtype rounding).
                    for (i, (&a, &b)) in x.iter().zip(&d).enumerate() {
                        let s = q.scales[i / gs].abs();
                        assert!((a - b).abs() <= s * 1.01 + 0.02, "{bits} {gs} {dt} {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn edge_is_exact_and_constant_groups_work() {
        // The larger-magnitude extreme is stored as the bias and comes back exactly.
        let mut x = noise(64, 2);
        x[5] = -3.0;
        let q = quantize(&x, 64, 4, 64, MlxDtype::F32).unwrap();
        assert_eq!(q.biases[0], -3.0);
        assert!(q.scales[0] > 0.0);
        assert_eq!(q.dequantize()[5], -3.0);
        // Max as edge: negative scale.
        x[5] = 3.0;
        let q = quantize(&x, 64, 4, 64, MlxDtype::F32).unwrap();
        assert_eq!(q.biases[0], 3.0);
        assert!(q.scales[0] < 0.0);
        // All zeros: scale = -eps, bias 0, codes 0.
        let q = quantize(&[0.0; 32], 32, 3, 32, MlxDtype::BF16).unwrap();
        assert_eq!(q.biases[0], 0.0);
        assert_eq!(q.scales[0], MlxDtype::BF16.round(-1e-7));
        assert!(q.packed.iter().all(|&w| w == 0));
        // A constant group dequantizes to itself.
        let q = quantize(&[0.37; 32], 32, 2, 32, MlxDtype::F16).unwrap();
        let want = MlxDtype::F16.round(0.37);
        assert!(q.dequantize().iter().all(|&v| v == want));
    }

    #[test]
    fn bit_stream_layout() {
        // Codes 0..7 at 3 bits: code j sits at bit 3j of the row's stream.
        let x: Vec<f32> = (0..32).map(|i| (i % 8) as f32).collect();
        let q = quantize(&x, 32, 3, 32, MlxDtype::F32).unwrap();
        let mut stream: u128 = 0;
        for (k, w) in q.packed.iter().enumerate() {
            stream |= (*w as u128) << (32 * k);
        }
        // max 7 is the edge, scale -1, bias 7: code = 7 - x.
        for j in 0..32 {
            assert_eq!((stream >> (3 * j)) & 7, 7 - (j as u128 % 8), "{j}");
        }
    }

    #[test]
    fn deterministic_across_thread_counts() {
        let x = noise(300 * 128, 3);
        let a = quantize(&x, 128, 5, 32, MlxDtype::BF16).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let b = pool.install(|| quantize(&x, 128, 5, 32, MlxDtype::BF16).unwrap());
        assert_eq!(a, b);
    }

    #[test]
    fn input_is_rounded_to_the_dtype_first() {
        let x = noise(64, 4);
        let rounded: Vec<f32> = x.iter().map(|&v| MlxDtype::BF16.round(v)).collect();
        assert_eq!(
            quantize(&x, 64, 4, 64, MlxDtype::BF16).unwrap(),
            quantize(&rounded, 64, 4, 64, MlxDtype::BF16).unwrap()
        );
    }
}
