//! llama-pajamas: architecture-aware quantization.
//!
//! The library facade. The data flows one way: a model *source* is opened
//! ([`pajamas_model`]), its architecture *detected* ([`pajamas_arch`]), a plan made, the
//! outputs written, then a manifest. This crate ties the stages together for the
//! `llama-pajamas-quant` command and for Rust callers:
//!
//! ```no_run
//! let report = llama_pajamas::detect_model("Qwen/Qwen3-8B").unwrap();
//! println!("{} with {} parameters", report.architecture.model_type, report.architecture.params.total);
//! ```

pub mod calibration;
pub mod detect;
pub mod eval;
pub mod imatrix;
pub mod imatrix_hybrid;
pub mod iq;
pub mod manifest;
pub mod profile;
pub mod quality;
pub mod quantize;
pub mod report;

pub use detect::{detect_model, detect_model_with_env, DetectReport, TensorSummary};
pub use pajamas_arch::{ArchitectureInfo, Strategy};
pub use pajamas_model::CacheEnv;
