//! Architecture detection for llama-pajamas.
//!
//! `config.json` in, [`ArchitectureInfo`] out: family (dense, MoE, hybrid Mamba-2, vision,
//! speech), attention layout, MoE and hybrid layer patterns, exact parameter counts; plus
//! the role of every tensor name ([`roles`]) and the quantization strategy derived from
//! the architecture ([`strategy`]). No weights are needed for any of it.

mod config;
pub mod detect;
mod encoders;
pub mod info;
pub mod roles;
pub mod strategy;

pub use detect::{detect, DetectError};
pub use info::*;
pub use roles::{classify, Part, Role, TensorRole};
pub use strategy::{Precision, Strategy};
