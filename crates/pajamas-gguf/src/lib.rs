//! GGUF, llama.cpp's file format: a strict lazy reader ([`GgufFile`]), a streaming atomic
//! writer ([`GgufWriter`]) and an inspect report ([`inspect`]).
//!
//! Layout (little-endian): magic `GGUF`, u32 version, u64 tensor count, u64 metadata count,
//! the metadata entries (key string, u32 value type, value), the tensor infos (name string,
//! u32 n_dims, u64 dims innermost first, u32 ggml type, u64 offset into the data section),
//! zero padding to `general.alignment` (default 32), then the tensor data, each tensor
//! padded to the alignment. See docs/gguf.md for what the reader checks and what the
//! writer promises.
//!
//! ```no_run
//! use pajamas_gguf::{GgufFile, GgufWriter, GgmlType};
//! # fn main() -> Result<(), pajamas_gguf::GgufError> {
//! let f = GgufFile::open("model.gguf")?;
//! println!("{:?} has {} tensors", f.architecture(), f.tensors().len());
//!
//! let mut w = GgufWriter::create("out.gguf")?;
//! w.add_metadata("general.architecture", "llama")?;
//! w.add_tensor_info("output_norm.weight", &[576], GgmlType::F32)?;
//! w.begin_data()?;
//! w.write_tensor("output_norm.weight", &[0u8; 576 * 4])?;
//! w.finish()?;
//! # Ok(()) }
//! ```

pub mod error;
pub mod format;
pub mod inspect;
pub mod reader;
pub mod size;
pub mod value;
pub mod writer;

pub use error::{GgufError, Result};
pub use pajamas_quant::GgmlType;
pub use reader::{GgufFile, MetadataEntry, TensorInfo};
pub use value::{Array, Value, ValueType};
pub use writer::{DeclaredTensor, GgufWriter};
