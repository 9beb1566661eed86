//! FP8 checkpoints with block scales (DeepSeek-V3's `quant_method: fp8`): each
//! `F8_E4M3` weight `W` `[rows, cols]` has a sibling `W_scale_inv`
//! `[ceil(rows / br), ceil(cols / bc)]` (`quantization_config.weight_block_size` =
//! `[br, bc]`, 128x128 in the published checkpoints), and the real weight is
//! `fp8(W) * scale_inv` of its block; edge blocks are partial.

use serde_json::Value;

/// The float an E4M3 byte (OCP "fn" variant: no infinities, `S.1111.111` is NaN) stands for.
pub fn e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((b >> 3) & 0x0f) as i32;
    let mant = (b & 0x07) as f32;
    if exp == 0x0f && b & 0x07 == 0x07 {
        return f32::NAN;
    }
    let mag = if exp == 0 {
        mant / 8.0 * 2f32.powi(-6)
    } else {
        (1.0 + mant / 8.0) * 2f32.powi(exp - 7)
    };
    sign * mag
}

/// The sibling tensor holding `weight`'s block scales.
pub fn scale_name(weight: &str) -> String {
    format!("{weight}_scale_inv")
}

/// `quantization_config.weight_block_size` of `config.json`, as `[rows, cols]`.
pub fn block_size(config: &Value) -> Option<[usize; 2]> {
    let b = config
        .get("quantization_config")?
        .get("weight_block_size")?
        .as_array()?;
    match b.as_slice() {
        [r, c] => Some([r.as_u64()? as usize, c.as_u64()? as usize]),
        _ => None,
    }
}

/// Dequantizes `codes` (E4M3 bytes of a `shape` tensor, row-major) with the per-block
/// `scales` of `scale_shape`. Errors (as text) when the shapes do not fit the block size.
pub fn dequantize(
    codes: &[u8],
    shape: &[u64],
    scales: &[f32],
    scale_shape: &[u64],
    block: [usize; 2],
) -> Result<Vec<f32>, String> {
    let (rows, cols) = match shape {
        [r, c] => (*r as usize, *c as usize),
        [c] => (1, *c as usize),
        _ => {
            return Err(format!(
                "block-scaled FP8 weights must be 1-D or 2-D, this one has shape {shape:?}"
            ))
        }
    };
    let [br, bc] = block;
    if br == 0 || bc == 0 {
        return Err(format!("weight_block_size {block:?} has a zero side"));
    }
    let want = [rows.div_ceil(br) as u64, cols.div_ceil(bc) as u64];
    let got: Vec<u64> = if scale_shape.len() == 1 {
        vec![1, scale_shape[0]]
    } else {
        scale_shape.to_vec()
    };
    if got != want || scales.len() as u64 != want[0] * want[1] {
        return Err(format!(
            "scales of shape {scale_shape:?} do not fit a {shape:?} weight in {br}x{bc} blocks (expected {want:?})"
        ));
    }
    let per_row = want[1] as usize;
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let srow = &scales[(r / br) * per_row..(r / br + 1) * per_row];
        for (c, &b) in codes[r * cols..(r + 1) * cols].iter().enumerate() {
            out.push(e4m3_to_f32(b) * srow[c / bc]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_values() {
        assert_eq!(e4m3_to_f32(0x00), 0.0);
        assert_eq!(e4m3_to_f32(0x38), 1.0); // exp 7, mant 0
        assert_eq!(e4m3_to_f32(0xb8), -1.0);
        assert_eq!(e4m3_to_f32(0x7e), 448.0); // the largest finite value
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9)); // smallest subnormal
        assert_eq!(e4m3_to_f32(0x3c), 1.5);
        assert!(e4m3_to_f32(0x7f).is_nan());
        assert!(e4m3_to_f32(0xff).is_nan());
    }

    #[test]
    fn partial_blocks() {
        // 3 x 5 weight in 2 x 4 blocks -> scales 2 x 2.
        let codes = vec![0x38u8; 15]; // all 1.0
        let scales = [1.0, 2.0, 3.0, 4.0];
        let w = dequantize(&codes, &[3, 5], &scales, &[2, 2], [2, 4]).unwrap();
        assert_eq!(&w[0..5], &[1.0, 1.0, 1.0, 1.0, 2.0]);
        assert_eq!(&w[5..10], &[1.0, 1.0, 1.0, 1.0, 2.0]);
        assert_eq!(&w[10..15], &[3.0, 3.0, 3.0, 3.0, 4.0]);
        let err = dequantize(&codes, &[3, 5], &scales, &[1, 4], [2, 4]).unwrap_err();
        assert!(err.contains("expected [2, 2]"), "{err}");
    }
}
