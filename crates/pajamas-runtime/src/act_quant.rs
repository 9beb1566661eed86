//! llama.cpp's CPU backend does not multiply quantized weights by f32 activations: it
//! first converts each activation row to the weight type's "vec_dot" type (Q8_0 for the
//! legacy 32-blocks, Q8_1 for Q4_1/Q5_1, Q8_K for the k-quants, f16/bf16 for half
//! weights) and takes integer dot products. The result equals the dot product of the
//! dequantized weights with the *round-tripped* activations, so emulating that round
//! trip makes our evaluation of a GGUF file measure what llama.cpp users get.

use pajamas_quant::GgmlType;
use rayon::prelude::*;

/// The activation format llama.cpp converts to before a product with a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActQuant {
    F16,
    BF16,
    /// 32-value blocks, f16 scale `amax / 127`, round half to even (also Q8_1's values).
    Q8_0,
    /// 256-value blocks, f32 scale `-max / 127` of the signed maximum, values clamped to 127.
    Q8K,
}

impl ActQuant {
    /// The conversion llama.cpp applies to activations multiplied by a weight of type `w`
    /// (`None`: f32, no conversion).
    pub fn for_weight(w: GgmlType) -> Option<ActQuant> {
        use GgmlType::*;
        Some(match w {
            F16 => ActQuant::F16,
            BF16 => ActQuant::BF16,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | IQ4_NL | MXFP4 => ActQuant::Q8_0,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K => ActQuant::Q8K,
            IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ1_S | IQ1_M | IQ4_XS => ActQuant::Q8K,
            _ => return None,
        })
    }

    /// Block length a row must be a multiple of.
    fn block(self) -> usize {
        match self {
            ActQuant::F16 | ActQuant::BF16 => 1,
            ActQuant::Q8_0 => 32,
            ActQuant::Q8K => 256,
        }
    }

    /// Rounds every `row_len`-wide row of `x` through the format, in place. Rows whose
    /// length is not a multiple of the block are left in f32.
    pub fn round_trip(self, x: &mut [f32], row_len: usize) {
        if row_len == 0 || !row_len.is_multiple_of(self.block()) {
            return;
        }
        x.par_chunks_mut(row_len).for_each(|row| match self {
            ActQuant::F16 => row
                .iter_mut()
                .for_each(|v| *v = half::f16::from_f32(*v).to_f32()),
            ActQuant::BF16 => row
                .iter_mut()
                .for_each(|v| *v = half::bf16::from_f32(*v).to_f32()),
            ActQuant::Q8_0 => row.chunks_mut(32).for_each(q8_0_block),
            ActQuant::Q8K => row.chunks_mut(256).for_each(q8_k_block),
        });
    }
}

fn q8_0_block(b: &mut [f32]) {
    let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = half::f16::from_f32(amax / 127.0).to_f32();
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    for v in b.iter_mut() {
        *v = (*v * id).round_ties_even() * d;
    }
}

fn q8_k_block(b: &mut [f32]) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in b.iter() {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        b.fill(0.0);
        return;
    }
    let iscale = -127.0 / max;
    let d = 1.0 / iscale;
    for v in b.iter_mut() {
        *v = (iscale * *v).round_ties_even().min(127.0) * d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_round_trip_is_close_and_keeps_the_maximum() {
        let mut x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let orig = x.clone();
        ActQuant::Q8_0.round_trip(&mut x, 64);
        for (blk, ob) in x.chunks(32).zip(orig.chunks(32)) {
            let amax = ob.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, b) in blk.iter().zip(ob) {
                assert!((a - b).abs() <= amax / 127.0 * 0.5 + 1e-3, "{a} {b}");
            }
        }
        assert_ne!(x, orig);
    }

    #[test]
    fn q8_k_uses_the_signed_maximum_and_zero_blocks_stay_zero() {
        let mut x = vec![0.0f32; 512];
        x[3] = -2.0;
        x[7] = 1.0;
        ActQuant::Q8K.round_trip(&mut x, 512);
        assert_eq!(x[3], -2.0);
        assert!((x[7] - 1.0).abs() < 2.0 / 127.0);
        assert!(x[256..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn types_map_like_ggml_cpu() {
        assert_eq!(ActQuant::for_weight(GgmlType::Q4_K), Some(ActQuant::Q8K));
        assert_eq!(ActQuant::for_weight(GgmlType::Q4_1), Some(ActQuant::Q8_0));
        assert_eq!(ActQuant::for_weight(GgmlType::F32), None);
    }
}
