//! MXFP4 (OCP microscaling FP4): blocks of 32 FP4 E2M1 codes sharing one E8M0
//! power-of-two scale, as ggml stores them (`block_mxfp4`, 17 bytes): byte 0 is the
//! scale exponent `e`, bytes 1..17 hold the codes, element `j` in the low nibble of
//! byte `1 + j` and element `j + 16` in its high nibble. A code's value is
//! `E2M1(code) * 2^(e - 127)`; ggml keeps the E2M1 values doubled (integers) and halves
//! the scale, which is the same number.
//!
//! HF checkpoints (gpt-oss) store the same codes and scales in another arrangement:
//! `*_blocks` `[.., n_blocks, 16]` with elements `2i` / `2i + 1` in the low / high nibble
//! of byte `i`, and `*_scales` `[.., n_blocks]` with the E8M0 exponents. [`repack_hf`]
//! moves the nibbles without touching a code, so a checkpoint's MXFP4 weights reach
//! GGUF bit for bit.

/// Bytes of one block.
pub const BLOCK_BYTES: usize = 17;
/// Values per block.
pub const BLOCK: usize = 32;

/// The E2M1 values, doubled (ggml's `kvalues_mxfp4`): codes 8..15 are the negatives of
/// codes 0..7 (code 8 is -0).
pub const KVALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Half the E8M0 scale `2^(e - 127)`, i.e. `2^(e - 128)`, the factor of the doubled
/// codes. Built from bits so that it is exact for every `e` (the two smallest are
/// subnormal f32).
pub fn half_scale(e: u8) -> f32 {
    let bits: u32 = if e < 2 {
        0x0020_0000u32 << e
    } else {
        u32::from(e - 1) << 23
    };
    f32::from_bits(bits)
}

/// The code whose value is nearest to `x` at half-scale `d` (ties to the lower code).
fn nearest(x: f32, d: f32) -> u8 {
    let mut best = 0u8;
    let mut best_err = (f32::from(KVALUES[0]) * d - x).abs();
    for (i, &k) in KVALUES.iter().enumerate().skip(1) {
        let err = (f32::from(k) * d - x).abs();
        if err < best_err {
            best = i as u8;
            best_err = err;
        }
    }
    best
}

/// Quantizes one block of 32 values. The scale is ggml's: the largest power of two not
/// above `amax`, divided by 4, so that `amax` lands in the top binade of E2M1 (4 to 6,
/// rounding up to 6 at most 1.5x the power); each value then takes the nearest code.
/// With the scale fixed, the nearest code minimises every column's error whatever its
/// importance, so `_importance` does not change the result.
pub fn quantize_mxfp4(x: &[f32], _importance: &[f32], out: &mut [u8]) {
    debug_assert_eq!(x.len(), BLOCK);
    debug_assert_eq!(out.len(), BLOCK_BYTES);
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let e = if amax > 0.0 {
        (amax.log2().floor() - 2.0 + 127.0).clamp(0.0, 254.0) as u8
    } else {
        0
    };
    let d = half_scale(e);
    out[0] = e;
    for j in 0..BLOCK / 2 {
        out[1 + j] = nearest(x[j], d) | (nearest(x[j + BLOCK / 2], d) << 4);
    }
}

/// Dequantizes one 17-byte block into 32 values.
pub fn dequantize_mxfp4(b: &[u8], y: &mut [f32]) {
    debug_assert_eq!(b.len(), BLOCK_BYTES);
    let d = half_scale(b[0]);
    for j in 0..BLOCK / 2 {
        let q = b[1 + j];
        y[j] = f32::from(KVALUES[usize::from(q & 0x0F)]) * d;
        y[j + BLOCK / 2] = f32::from(KVALUES[usize::from(q >> 4)]) * d;
    }
}

/// Why HF MXFP4 tensors could not be repacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepackError(pub String);

impl std::fmt::Display for RepackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RepackError {}

/// HF `*_blocks` (16 bytes per block, elements `2i`/`2i+1` in the low/high nibble of
/// byte `i`) and `*_scales` (one E8M0 byte per block) -> ggml MXFP4 blocks, in the same
/// block order. Only nibbles move: every code and scale is kept.
pub fn repack_hf(blocks: &[u8], scales: &[u8]) -> Result<Vec<u8>, RepackError> {
    if blocks.len() != scales.len() * 16 {
        return Err(RepackError(format!(
            "{} block bytes for {} scales; MXFP4 needs 16 bytes per scale",
            blocks.len(),
            scales.len()
        )));
    }
    let mut out = Vec::with_capacity(scales.len() * BLOCK_BYTES);
    for (src, &e) in blocks.chunks_exact(16).zip(scales) {
        if e == 0xFF {
            return Err(RepackError(format!(
                "block {} has the E8M0 NaN scale 0xFF",
                out.len() / BLOCK_BYTES
            )));
        }
        let code = |i: usize| -> u8 {
            let byte = src[i / 2];
            if i.is_multiple_of(2) {
                byte & 0x0F
            } else {
                byte >> 4
            }
        };
        out.push(e);
        for j in 0..BLOCK / 2 {
            out.push(code(j) | (code(j + BLOCK / 2) << 4));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_is_a_power_of_two() {
        assert_eq!(half_scale(127), 0.5);
        assert_eq!(half_scale(128), 1.0);
        assert_eq!(half_scale(130), 4.0);
        assert_eq!(half_scale(1), 2f32.powi(-127));
        assert_eq!(half_scale(0), 2f32.powi(-128));
    }

    #[test]
    fn layout_and_round_trip() {
        // e = 127: codes are worth E2M1 exactly (0.5 * doubled value).
        let mut b = [0u8; BLOCK_BYTES];
        b[0] = 127;
        for j in 0..16 {
            b[1 + j] = (j as u8) | (((15 - j) as u8) << 4);
        }
        let mut y = [0f32; BLOCK];
        dequantize_mxfp4(&b, &mut y);
        for j in 0..16 {
            assert_eq!(y[j], f32::from(KVALUES[j]) * 0.5);
            assert_eq!(y[j + 16], f32::from(KVALUES[15 - j]) * 0.5);
        }
        // Values on the grid come back exactly, with the scale ggml picks.
        let x: Vec<f32> = (0..BLOCK)
            .map(|i| {
                [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0][i % 8]
                    * if i % 3 == 0 { -1.0 } else { 1.0 }
                    * 0.25
            })
            .collect();
        let mut q = [0u8; BLOCK_BYTES];
        quantize_mxfp4(&x, &[1.0; BLOCK], &mut q);
        assert_eq!(q[0], 125, "amax 1.5 = 1.5 * 2^0: floor(log2) - 2 + 127");
        dequantize_mxfp4(&q, &mut y);
        assert_eq!(&y[..], &x[..]);
        // Off-grid values go to the nearest code.
        let mut x2 = x.clone();
        x2[1] = 0.13; // between 0.125 and 0.25 at this scale: nearest is 0.125
        quantize_mxfp4(&x2, &[1.0; BLOCK], &mut q);
        dequantize_mxfp4(&q, &mut y);
        assert_eq!(y[1], 0.125);
        let zero = [0f32; BLOCK];
        quantize_mxfp4(&zero, &[1.0; BLOCK], &mut q);
        assert_eq!(q, [0u8; BLOCK_BYTES]);
    }

    #[test]
    fn repacks_hf_nibbles() {
        // HF: element 2i low, 2i+1 high. Element k gets code k % 16.
        let mut blocks = [0u8; 16];
        for (i, b) in blocks.iter_mut().enumerate() {
            *b = ((2 * i) % 16) as u8 | ((((2 * i + 1) % 16) as u8) << 4);
        }
        let g = repack_hf(&blocks, &[120]).unwrap();
        assert_eq!(g.len(), BLOCK_BYTES);
        assert_eq!(g[0], 120);
        for j in 0..16 {
            assert_eq!(g[1 + j] & 0x0F, (j % 16) as u8);
            assert_eq!(g[1 + j] >> 4, ((j + 16) % 16) as u8);
        }
        assert!(repack_hf(&blocks, &[1, 2]).is_err());
        assert!(repack_hf(&blocks, &[0xFF]).is_err());
    }
}
