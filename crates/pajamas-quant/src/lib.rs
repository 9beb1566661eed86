//! Quantization kernels for llama-pajamas: pure functions over rows of f32, no I/O.
//!
//! One module per block family. Every kernel has a quantize (optionally weighted by
//! per-column importance from an imatrix) and a dequantize, with byte layouts equal to
//! ggml's so that llama.cpp and gguf-py read our output.

pub mod types;

pub use types::{GgmlType, ALL_TYPES, QK_K};
