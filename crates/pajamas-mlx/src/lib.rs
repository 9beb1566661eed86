//! MLX output for llama-pajamas: checkpoints that `mlx_lm.load` reads, written natively.
//!
//! - [`affine`]: the affine kernels, bit for bit what `mx.quantize` computes on the CPU
//!   (bits 2, 3, 4, 5, 6, 8; group size 32, 64, 128; scales and biases in the model
//!   dtype), and `mx.dequantize`. Pure functions over rows, parallel and deterministic.
//! - [`names`]: HF tensor names -> mlx-lm parameter paths for llama (Mistral, SmolLM2,
//!   Llama 3), qwen2, qwen3 and gemma3, what mlx-lm's `sanitize` drops, and which modules
//!   mlx-lm can quantize.
//! - [`plan`]: bits and group size per module with a reason: uniform, mlx-lm's mixed
//!   recipes, or our architecture-aware choice; the config.json `quantization` block.
//! - [`writer`]: the streaming, atomic folder writer (shards of at most 5 GiB, index,
//!   config.json, tokenizer files).
//!
//! The caller's loop, one source tensor in memory at a time:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use pajamas_mlx::{plan_mlx, MlxChoice, MlxWriter, SourceTensor, DEFAULT_MAX_SHARD_BYTES};
//! let model = pajamas_model::HfModel::open("models/demo")?;
//! let arch = pajamas_arch::detect(model.config())?;
//! let sources: Vec<SourceTensor> = model
//!     .tensors()
//!     .map(|t| SourceTensor { name: t.info.name.clone(), shape: t.info.shape.clone(), dtype: t.info.dtype })
//!     .collect();
//! let plan = plan_mlx(&sources, model.config(), &arch, MlxChoice::architecture_aware(&arch, 4))?;
//! let dir = std::path::Path::new("out/mlx").join(plan.choice.dir_name());
//! let mut w = MlxWriter::create(&dir, &plan.output_tensors(), DEFAULT_MAX_SHARD_BYTES)?;
//! for t in &sources {
//!     let data = model.read_f32_streaming(&t.name)?; // HF layout, no GGUF transforms
//!     for (name, bytes) in plan.encode(&t.name, &data)? {
//!         w.write_tensor(&name, &bytes)?;
//!     }
//! }
//! w.finish(&plan.config_json(model.config()), plan.parameters(), model.tokenizer_files())?;
//! # Ok(()) }
//! ```

use std::path::PathBuf;

pub mod affine;
pub mod deepseek;
pub mod gpt_oss;
pub mod names;
pub mod nemotron_h;
pub mod plan;
pub mod writer;

pub use affine::{dequantize, quantize, MlxDtype, Quantized};
pub use names::{map_name, Mapped, MlxFamily, ModuleKind, MLX_MODEL_TYPES};
pub use plan::{
    model_dtype, plan_mlx, DroppedTensor, MlxChoice, MlxPlan, MlxPlanSummary, PlannedTensor,
    QuantSpec, Recipe, SourceTensor, AWARE_BUDGET_BITS_PER_WEIGHT,
};
pub use writer::{MlxOutput, MlxWriter, OutputTensor, DEFAULT_MAX_SHARD_BYTES, INDEX_FILE};

/// Everything that can go wrong making an MLX checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum MlxError {
    #[error("MLX affine quantization supports 2, 3, 4, 5, 6 or 8 bits, not {0}")]
    UnsupportedBits(u32),
    #[error("MLX affine quantization supports group sizes 32, 64 and 128, not {0}")]
    UnsupportedGroupSize(usize),
    #[error("rows of {n_per_row} values are not a multiple of the group size {group_size}")]
    RowNotMultiple { n_per_row: usize, group_size: usize },
    #[error("{what}: expected {expected} elements, got {got}")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("non-finite value {value} at element {index}")]
    NonFinite { index: usize, value: f32 },
    #[error("writing MLX checkpoints of model_type '{0}' is not supported yet (supported: {list})", list = MLX_MODEL_TYPES.join(", "))]
    UnsupportedModelType(String),
    #[error("tensor '{name}' is not a parameter of mlx-lm's {family} model; this checkpoint has a layout we do not convert to MLX yet")]
    UnknownTensor { name: String, family: &'static str },
    #[error("tensor '{name}' is {dtype}; only F32/F16/BF16 checkpoints convert to MLX")]
    NotFloat { name: String, dtype: String },
    #[error("the config says the output head is not tied to the embedding, but the checkpoint has no lm_head.weight")]
    MissingOutputHead,
    #[error("stacked expert parameter '{name}': expert {expert} is missing from the checkpoint")]
    ExpertMissing { name: String, expert: usize },
    #[error("expert tensor '{name}' has shape {shape:?}, the other experts {expected:?}")]
    ExpertShape {
        name: String,
        shape: Vec<u64>,
        expected: Vec<u64>,
    },
    #[error("tensor '{0}' is not in the MLX plan")]
    NotPlanned(String),
    #[error("quantizing '{name}': {source}")]
    Tensor {
        name: String,
        #[source]
        source: Box<MlxError>,
    },
    #[error("tensor '{0}' is declared or written twice")]
    DuplicateTensor(String),
    #[error("tensor '{0}' was not declared when the writer was created")]
    UndeclaredTensor(String),
    #[error("{count} declared tensors were never written (first: '{first}')")]
    MissingTensors { count: usize, first: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
