//! Constants and rules of the GGUF format shared by the reader and the writer, so that the
//! writer never produces a file the reader would reject.

use pajamas_quant::GgmlType;

use crate::value::Value;

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The version the writer produces (v3; v2 has the same little-endian layout).
pub const VERSION: u32 = 3;
/// Alignment of the data section and of each tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u32 = 32;
/// The largest alignment accepted (ggml's loader refuses larger ones too).
pub const MAX_ALIGNMENT: u32 = 1 << 20;
/// ggml keeps names in a 64-byte buffer with a terminating NUL.
pub const MAX_TENSOR_NAME_BYTES: usize = 63;
/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: usize = 4;
/// Longest string accepted in metadata (a chat template or an embedded tokenizer.json is
/// far smaller); bounds what a corrupt length can make the reader allocate.
pub const MAX_STRING_BYTES: u64 = 256 << 20;
/// Most elements accepted in one metadata array (vocabularies have a few hundred thousand).
pub const MAX_ARRAY_ELEMENTS: u64 = 64 << 20;
/// Deepest nesting of arrays accepted (each level costs a stack frame when reading).
pub const MAX_ARRAY_DEPTH: usize = 16;

pub const KEY_ALIGNMENT: &str = "general.alignment";
pub const KEY_ARCHITECTURE: &str = "general.architecture";

/// Rounds `x` up to a multiple of `align` (a power of two); `None` on overflow.
pub fn align_up(x: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    Some(x.checked_add(align - 1)? & !(align - 1))
}

/// Validates a `general.alignment` value: a u32 power of two, at most [`MAX_ALIGNMENT`].
pub(crate) fn check_alignment(value: &Value) -> Result<u32, String> {
    let Value::U32(a) = *value else {
        return Err(format!(
            "must be a u32 (the power-of-two alignment of tensor data) but is a {}",
            value.value_type()
        ));
    };
    if !a.is_power_of_two() {
        return Err(format!("alignment {a} is not a power of two"));
    }
    if a > MAX_ALIGNMENT {
        return Err(format!(
            "alignment {a} is larger than the {MAX_ALIGNMENT} bytes ggml accepts"
        ));
    }
    Ok(a)
}

/// Validates a tensor name as ggml does.
pub(crate) fn check_tensor_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_TENSOR_NAME_BYTES {
        return Err(format!(
            "name is {} bytes long; ggml allows at most {MAX_TENSOR_NAME_BYTES}",
            name.len()
        ));
    }
    Ok(())
}

/// Validates a tensor's dimensions (innermost first) for `ty`; returns `(elements, bytes)`.
pub(crate) fn check_tensor_shape(dims: &[u64], ty: GgmlType) -> Result<(u64, u64), String> {
    if dims.is_empty() || dims.len() > MAX_DIMS {
        return Err(format!(
            "has {} dimensions; GGUF tensors have 1 to {MAX_DIMS}",
            dims.len()
        ));
    }
    let mut elements: u64 = 1;
    for (i, &d) in dims.iter().enumerate() {
        if d > i64::MAX as u64 {
            return Err(format!(
                "dimension {i} is {d}, larger than ggml's limit of {}",
                i64::MAX
            ));
        }
        elements = elements
            .checked_mul(d)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| {
                format!(
                    "shape {dims:?} has more elements than ggml can count ({})",
                    i64::MAX
                )
            })?;
    }
    let block = ty.block_size() as u64;
    if !dims[0].is_multiple_of(block) {
        return Err(format!(
            "type {ty} packs {block} elements per block but the row length ne[0] = {} is not a multiple of {block}",
            dims[0]
        ));
    }
    let bytes = (elements / block)
        .checked_mul(ty.type_size() as u64)
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| {
            format!("shape {dims:?} of type {ty} needs more bytes than fit in 63 bits")
        })?;
    Ok((elements, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns() {
        assert_eq!(align_up(0, 32), Some(0));
        assert_eq!(align_up(1, 32), Some(32));
        assert_eq!(align_up(64, 32), Some(64));
        assert_eq!(align_up(u64::MAX - 3, 32), None);
    }

    #[test]
    fn shapes() {
        assert_eq!(check_tensor_shape(&[64, 2], GgmlType::Q8_0), Ok((128, 136)));
        assert!(check_tensor_shape(&[48, 2], GgmlType::Q8_0)
            .unwrap_err()
            .contains("not a multiple of 32"));
        assert!(check_tensor_shape(&[], GgmlType::F32).is_err());
        assert!(check_tensor_shape(&[1, 1, 1, 1, 1], GgmlType::F32).is_err());
        assert!(check_tensor_shape(&[1 << 40, 1 << 40], GgmlType::F32)
            .unwrap_err()
            .contains("more elements"));
        assert!(check_tensor_shape(&[1 << 62], GgmlType::F32)
            .unwrap_err()
            .contains("more bytes"));
        assert_eq!(check_tensor_shape(&[0, 7], GgmlType::Q4_K), Ok((0, 0)));
    }

    #[test]
    fn alignment_values() {
        assert_eq!(check_alignment(&Value::U32(64)), Ok(64));
        assert!(check_alignment(&Value::U32(48)).is_err());
        assert!(check_alignment(&Value::U32(0)).is_err());
        assert!(check_alignment(&Value::U64(32)).is_err());
        assert!(check_alignment(&Value::U32(1 << 21)).is_err());
    }
}
