//! A CPU forward pass for dense decoders (llama, SmolLM2, Mistral, Llama 3, qwen2,
//! qwen3, gemma3) in f32, batched over a whole chunk of tokens.
//!
//! - [`WeightSource`] is where tensors come from, by their HuggingFace names;
//!   [`HfSource`] reads an HF folder through `pajamas-model`, [`GgufSource`] dequantizes
//!   a GGUF file (so a quantized model's error is exactly its quantization error),
//!   [`MlxSource`] dequantizes an MLX checkpoint the way `mx.dequantize` does.
//! - [`Model`] holds the weights and computes logits `[n_tokens x vocab]` for a token
//!   sequence at positions `0..n`.
//! - [`LinearHook`] is called with the input activations of every linear layer, before
//!   the product, so an importance matrix can be accumulated.
//! - [`perplexity()`] scores a token stream the way `llama-perplexity` does;
//!   [`evaluate`] adds BOS handling, chunk limits and the KL divergence against a
//!   reference model (`llama-perplexity --kl-divergence`).
//!
//! See `docs/runtime.md`.

pub mod act_quant;
pub mod config;
pub mod deepseek;
pub mod error;
pub mod eval;
pub mod gpt_oss;
pub mod hook;
pub mod mamba;
pub mod mlx_source;
pub mod model;
pub mod moe;
pub mod ops;
pub mod perplexity;
pub mod weights;

pub use act_quant::ActQuant;
pub use config::{BlockKind, Family, HybridConfig, ModelConfig, MoeConfig, Rope};
pub use error::{Result, RuntimeError};
pub use eval::{evaluate, ChunkDone, EvalOptions, EvalReport, KlStats};
pub use hook::{LinearHook, LinearInput, NoHook};
pub use mlx_source::MlxSource;
pub use model::{Ffn, LayerWeights, Linear, Mlp, Model};
pub use perplexity::{perplexity, perplexity_with_hook, Perplexity};
pub use weights::{GgufSource, HfSource, WeightSource};
