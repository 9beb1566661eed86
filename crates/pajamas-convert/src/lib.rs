//! HuggingFace checkpoints -> GGUF: which tensor goes where and how it is transformed,
//! which metadata llama.cpp needs for each architecture, and the tokenizer vocabulary.

pub mod deepseek;
pub mod from_gguf;
pub mod gpt_oss;
pub mod hybrid;
pub mod metadata;
pub mod names;
pub mod sentencepiece;
pub mod tokenizer;

pub use names::{gguf_arch, gguf_arch_for, map_expert, map_name, sort_key, Transform, CONVERTIBLE};
pub use tokenizer::{read_vocab, TokenizerError, Vocab};
