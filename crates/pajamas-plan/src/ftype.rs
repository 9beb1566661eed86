//! llama.cpp file types (`llama_ftype`): the presets a user asks for (`Q4_K_M`), each with
//! a base ggml type that the per-tensor rules then adjust.

use pajamas_quant::GgmlType;

/// A GGUF file type preset. Discriminants are `general.file_type` values.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[repr(u32)]
pub enum Ftype {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q8_0 = 7,
    Q5_0 = 8,
    Q5_1 = 9,
    Q2_K = 10,
    Q3_K_S = 11,
    Q3_K_M = 12,
    Q3_K_L = 13,
    Q4_K_S = 14,
    Q4_K_M = 15,
    Q5_K_S = 16,
    Q5_K_M = 17,
    Q6_K = 18,
    IQ2_XXS = 19,
    IQ2_XS = 20,
    IQ3_XS = 22,
    IQ3_XXS = 23,
    IQ1_S = 24,
    IQ4_NL = 25,
    IQ3_S = 26,
    IQ3_M = 27,
    IQ2_S = 28,
    IQ2_M = 29,
    IQ4_XS = 30,
    IQ1_M = 31,
    BF16 = 32,
    /// llama.cpp's `MXFP4_MOE`: expert tensors in MXFP4, every other matrix Q8_0.
    MXFP4_MOE = 38,
}

use Ftype::*;

pub const ALL_FTYPES: &[Ftype] = &[
    F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M,
    Q5_K_S, Q5_K_M, Q6_K, IQ4_NL, IQ4_XS, IQ3_M, IQ3_S, IQ3_XS, IQ3_XXS, IQ2_M, IQ2_S, IQ2_XS,
    IQ2_XXS, IQ1_M, IQ1_S, MXFP4_MOE,
];

/// The i-quant file types (issue 7): importance-matrix driven, 1.5 to 4.5 bits per weight.
pub const IQ_FTYPES: &[Ftype] = &[
    IQ4_NL, IQ4_XS, IQ3_M, IQ3_S, IQ3_XS, IQ3_XXS, IQ2_M, IQ2_S, IQ2_XS, IQ2_XXS, IQ1_M, IQ1_S,
];

impl Ftype {
    pub fn id(self) -> u32 {
        self as u32
    }

    pub fn name(self) -> &'static str {
        match self {
            F32 => "F32",
            F16 => "F16",
            BF16 => "BF16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q2_K => "Q2_K",
            Q3_K_S => "Q3_K_S",
            Q3_K_M => "Q3_K_M",
            Q3_K_L => "Q3_K_L",
            Q4_K_S => "Q4_K_S",
            Q4_K_M => "Q4_K_M",
            Q5_K_S => "Q5_K_S",
            Q5_K_M => "Q5_K_M",
            Q6_K => "Q6_K",
            IQ2_XXS => "IQ2_XXS",
            IQ2_XS => "IQ2_XS",
            IQ3_XS => "IQ3_XS",
            IQ3_XXS => "IQ3_XXS",
            IQ1_S => "IQ1_S",
            IQ4_NL => "IQ4_NL",
            IQ3_S => "IQ3_S",
            IQ3_M => "IQ3_M",
            IQ2_S => "IQ2_S",
            IQ2_M => "IQ2_M",
            IQ4_XS => "IQ4_XS",
            IQ1_M => "IQ1_M",
            MXFP4_MOE => "MXFP4_MOE",
        }
    }

    pub fn from_name(s: &str) -> Option<Ftype> {
        ALL_FTYPES
            .iter()
            .copied()
            .find(|f| f.name().eq_ignore_ascii_case(s))
    }

    /// The type most tensors get.
    pub fn base_type(self) -> GgmlType {
        match self {
            F32 => GgmlType::F32,
            F16 => GgmlType::F16,
            BF16 => GgmlType::BF16,
            Q4_0 => GgmlType::Q4_0,
            Q4_1 => GgmlType::Q4_1,
            Q5_0 => GgmlType::Q5_0,
            Q5_1 => GgmlType::Q5_1,
            Q8_0 => GgmlType::Q8_0,
            Q2_K => GgmlType::Q2_K,
            Q3_K_S | Q3_K_M | Q3_K_L => GgmlType::Q3_K,
            Q4_K_S | Q4_K_M => GgmlType::Q4_K,
            Q5_K_S | Q5_K_M => GgmlType::Q5_K,
            Q6_K => GgmlType::Q6_K,
            IQ2_XXS => GgmlType::IQ2_XXS,
            // IQ2_S is IQ2_XS with bigger attn_v/ffn_down/attn_output; IQ2_M is IQ2_S-based.
            IQ2_XS | IQ2_S => GgmlType::IQ2_XS,
            IQ2_M => GgmlType::IQ2_S,
            IQ3_XXS => GgmlType::IQ3_XXS,
            IQ3_XS | IQ3_S | IQ3_M => GgmlType::IQ3_S,
            IQ1_S => GgmlType::IQ1_S,
            IQ1_M => GgmlType::IQ1_M,
            IQ4_NL => GgmlType::IQ4_NL,
            IQ4_XS => GgmlType::IQ4_XS,
            MXFP4_MOE => GgmlType::MXFP4,
        }
    }

    /// Whether this is one of the i-quant file types.
    pub fn is_iquant(self) -> bool {
        IQ_FTYPES.contains(&self)
    }
}

impl std::fmt::Display for Ftype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
