//! Element types a checkpoint can store, and their conversion to f32.

use std::fmt;

/// A safetensors element type. Names follow the safetensors spec (`"BF16"`, `"F8_E4M3"`...).
///
/// Every type is listed so that a checkpoint with, say, FP8 weights can still be *listed*
/// and detected; [`Dtype::is_float_readable`] says which ones we can decode to f32 today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F16,
    BF16,
    F32,
    F64,
    /// FP8 e4m3 (DeepSeek-V3 style checkpoints, with block scales in a sibling tensor).
    F8E4M3,
    /// FP8 e5m2.
    F8E5M2,
    /// E8M0 power-of-two scales (MXFP4 companions).
    F8E8M0,
}

impl Dtype {
    /// Parses a safetensors dtype string. `None` for a name we do not know.
    pub fn from_safetensors(name: &str) -> Option<Dtype> {
        Some(match name {
            "BOOL" => Dtype::Bool,
            "U8" => Dtype::U8,
            "I8" => Dtype::I8,
            "U16" => Dtype::U16,
            "I16" => Dtype::I16,
            "U32" => Dtype::U32,
            "I32" => Dtype::I32,
            "U64" => Dtype::U64,
            "I64" => Dtype::I64,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "F32" => Dtype::F32,
            "F64" => Dtype::F64,
            "F8_E4M3" => Dtype::F8E4M3,
            "F8_E5M2" => Dtype::F8E5M2,
            "F8_E8M0" | "E8M0" => Dtype::F8E8M0,
            _ => return None,
        })
    }

    /// The safetensors spelling of this type.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::U16 => "U16",
            Dtype::I16 => "I16",
            Dtype::U32 => "U32",
            Dtype::I32 => "I32",
            Dtype::U64 => "U64",
            Dtype::I64 => "I64",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::F8E8M0 => "F8_E8M0",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 => 1,
            Dtype::F8E4M3 | Dtype::F8E5M2 | Dtype::F8E8M0 => 1,
            Dtype::U16 | Dtype::I16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 => 8,
        }
    }

    /// Whether [`crate::TensorData::to_f32`] can decode this type.
    pub fn is_float_readable(self) -> bool {
        matches!(self, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Decodes little-endian elements of `dtype` into f32. `bytes.len()` must be a multiple of
/// the element size (the safetensors header check guarantees it). Returns `None` for types
/// that are not plain floats.
pub fn decode_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let out = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                f64::from_le_bytes(a) as f32
            })
            .collect(),
        _ => return None,
    };
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in [
            Dtype::Bool,
            Dtype::U8,
            Dtype::I8,
            Dtype::U16,
            Dtype::I16,
            Dtype::U32,
            Dtype::I32,
            Dtype::U64,
            Dtype::I64,
            Dtype::F16,
            Dtype::BF16,
            Dtype::F32,
            Dtype::F64,
            Dtype::F8E4M3,
            Dtype::F8E5M2,
            Dtype::F8E8M0,
        ] {
            assert_eq!(Dtype::from_safetensors(d.name()), Some(d));
        }
        assert_eq!(Dtype::from_safetensors("Q4"), None);
    }

    #[test]
    fn decodes_halves() {
        let bytes: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect();
        assert_eq!(decode_f32(Dtype::BF16, &bytes).unwrap(), vec![1.5, -2.0]);
        let bytes: Vec<u8> = [0.25f32, 65504.0]
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        assert_eq!(decode_f32(Dtype::F16, &bytes).unwrap(), vec![0.25, 65504.0]);
        assert!(decode_f32(Dtype::I8, &[1]).is_none());
    }
}
