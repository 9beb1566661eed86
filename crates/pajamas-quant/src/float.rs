//! Unquantized element types: F32, F16 and BF16, stored little-endian one element at a
//! time. No search here: each value maps to the nearest representable one.

use half::f16;

pub(crate) fn quantize_f32(src: &[f32], dst: &mut [u8]) {
    for (b, v) in dst.chunks_exact_mut(4).zip(src) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}

pub(crate) fn dequantize_f32(src: &[u8], dst: &mut [f32]) {
    for (v, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// IEEE binary16 with round-to-nearest-even (what ggml's `GGML_FP32_TO_FP16` and F16C
/// produce); values beyond ±65504 become infinities, as in ggml.
pub(crate) fn quantize_f16(src: &[f32], dst: &mut [u8]) {
    for (b, &v) in dst.chunks_exact_mut(2).zip(src) {
        b.copy_from_slice(&f16::from_f32(v).to_le_bytes());
    }
}

pub(crate) fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    for (v, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *v = f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

/// bfloat16 exactly as ggml's `ggml_compute_fp32_to_bf16`: the top 16 bits of the f32,
/// rounded to nearest even by adding 0x7fff plus the lowest kept bit; a NaN keeps its top
/// bits with the quiet bit forced, so rounding can never turn it into an infinity.
pub(crate) fn f32_to_bf16_bits(v: f32) -> u16 {
    let u = v.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 0x40) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

pub(crate) fn quantize_bf16(src: &[f32], dst: &mut [u8]) {
    for (b, &v) in dst.chunks_exact_mut(2).zip(src) {
        b.copy_from_slice(&f32_to_bf16_bits(v).to_le_bytes());
    }
}

pub(crate) fn dequantize_bf16(src: &[u8], dst: &mut [f32]) {
    for (v, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *v = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even_and_keeps_nan_quiet() {
        // 1 + 2^-8 is exactly half-way between two bf16 values: ties go to the even one.
        assert_eq!(f32_to_bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(f32_to_bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(f32_to_bf16_bits(1.0 + 1.0 / 256.0 + 1e-6), 0x3f81);
        assert_eq!(f32_to_bf16_bits(-2.0), 0xc000);
        assert_eq!(f32_to_bf16_bits(f32::INFINITY), 0x7f80);
        // A signalling NaN whose payload lives in the low bits only: must stay a NaN.
        let snan = f32::from_bits(0x7f80_0001);
        let b = f32_to_bf16_bits(snan);
        assert_eq!(b, 0x7fc0);
        assert!(f32::from_bits(u32::from(b) << 16).is_nan());
        // The largest finite f32 rounds up to infinity, as in ggml.
        assert_eq!(f32_to_bf16_bits(f32::MAX), 0x7f80);
    }

    #[test]
    fn f16_round_trip() {
        let src = [0.0f32, -0.0, 1.0, 65504.0, 1e-8, 0.1, 70000.0];
        let mut bytes = [0u8; 14];
        quantize_f16(&src, &mut bytes);
        let mut back = [0f32; 7];
        dequantize_f16(&bytes, &mut back);
        assert_eq!(back[..4], [0.0, -0.0, 1.0, 65504.0]);
        assert_eq!(back[4], 0.0); // below half the smallest subnormal
        assert!((back[5] - 0.1).abs() < 1e-4);
        assert!(back[6].is_infinite());
        assert_eq!(&bytes[4..6], &[0x00, 0x3c]);
    }

    #[test]
    fn f32_is_bitwise() {
        let src = [1.5f32, f32::NAN, -0.0];
        let mut bytes = [0u8; 12];
        quantize_f32(&src, &mut bytes);
        let mut back = [0f32; 3];
        dequantize_f32(&bytes, &mut back);
        for (a, b) in src.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }
}
