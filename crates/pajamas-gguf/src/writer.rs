//! A streaming, atomic GGUF writer.
//!
//! The contract:
//! 1. [`GgufWriter::create`] opens `<final>.partial` next to the final path.
//! 2. Declare every metadata entry ([`GgufWriter::add_metadata`]) and every tensor's name,
//!    dimensions and type ([`GgufWriter::add_tensor_info`]), in the order they will be stored.
//! 3. [`GgufWriter::begin_data`] writes the header, the metadata, the tensor infos (offsets
//!    computed from the declared sizes) and the padding to the data section.
//! 4. [`GgufWriter::write_tensor`] streams each tensor's bytes, in declared order, checking the
//!    name and the exact size, and pads each to the alignment. Only the tensor being written
//!    is ever in memory.
//! 5. [`GgufWriter::finish`] flushes, fsyncs and renames `.partial` to the final name (then
//!    fsyncs the directory), so the final path only ever holds a complete file.
//!
//! Dropping a writer that has not finished removes the `.partial` file.
//!
//! The bytes equal what gguf-py's `GGUFWriter` and ggml's `gguf_write_to_file` produce for
//! the same content: version 3, entries in declaration order, data section aligned, each
//! tensor (the last one included) padded with zeros to the alignment.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use pajamas_quant::GgmlType;

use crate::error::{GgufError, Result};
use crate::format::{
    align_up, check_alignment, check_tensor_name, check_tensor_shape, DEFAULT_ALIGNMENT,
    KEY_ALIGNMENT, MAGIC, VERSION,
};
use crate::reader::MetadataEntry;
use crate::value::{encode_str, Value};

/// A tensor declared to the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredTensor {
    pub name: String,
    /// Innermost first, as GGUF stores them.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Exact data size in bytes (without padding).
    pub nbytes: u64,
    /// Offset in the data section; known once [`GgufWriter::begin_data`] has run.
    pub offset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Declaring,
    /// Header written; `next` is the index of the next tensor to write.
    Data {
        next: usize,
    },
    /// An I/O error happened; the file is unusable.
    Failed,
    Finished,
}

/// Writes one GGUF file; see the module documentation for the contract.
#[derive(Debug)]
pub struct GgufWriter {
    final_path: PathBuf,
    partial_path: PathBuf,
    out: Option<BufWriter<File>>,
    metadata: Vec<MetadataEntry>,
    key_index: HashMap<String, usize>,
    tensors: Vec<DeclaredTensor>,
    tensor_index: HashMap<String, usize>,
    state: State,
    alignment: u64,
    /// Bytes written so far.
    written: u64,
    data_offset: u64,
}

/// `<path>.partial`: the same folder and name with `.partial` appended.
pub fn partial_path_for(path: &Path) -> Option<PathBuf> {
    let mut name = path.file_name()?.to_os_string();
    name.push(".partial");
    Some(path.with_file_name(name))
}

impl GgufWriter {
    /// Starts writing the file that will be `path` once [`GgufWriter::finish`] succeeds.
    /// Creates (or truncates) `<path>.partial` now.
    pub fn create(path: impl AsRef<Path>) -> Result<GgufWriter> {
        let final_path = path.as_ref().to_path_buf();
        let partial_path = partial_path_for(&final_path).ok_or_else(|| GgufError::Write {
            path: final_path.clone(),
            message: "the output path has no file name".into(),
        })?;
        let file = File::create(&partial_path).map_err(|e| GgufError::io(&partial_path, e))?;
        Ok(GgufWriter {
            final_path,
            partial_path,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            metadata: Vec::new(),
            key_index: HashMap::new(),
            tensors: Vec::new(),
            tensor_index: HashMap::new(),
            state: State::Declaring,
            alignment: u64::from(DEFAULT_ALIGNMENT),
            written: 0,
            data_offset: 0,
        })
    }

    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    pub fn partial_path(&self) -> &Path {
        &self.partial_path
    }

    /// The metadata declared so far, in order.
    pub fn metadata(&self) -> &[MetadataEntry] {
        &self.metadata
    }

    /// The tensors declared so far, in order (offsets are set once data has begun).
    pub fn tensors(&self) -> &[DeclaredTensor] {
        &self.tensors
    }

    /// The alignment in force (`general.alignment` if declared, else 32).
    pub fn alignment(&self) -> u32 {
        self.alignment as u32
    }

    fn contract(&self, message: impl Into<String>) -> GgufError {
        GgufError::Write {
            path: self.final_path.clone(),
            message: message.into(),
        }
    }

    fn key_error(&self, key: &str, message: impl Into<String>) -> GgufError {
        GgufError::Key {
            path: self.final_path.clone(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn expect_declaring(&self, what: &str) -> Result<()> {
        match self.state {
            State::Declaring => Ok(()),
            _ => Err(self.contract(format!(
                "{what}: metadata and tensor infos must all be declared before begin_data()"
            ))),
        }
    }

    /// Checks a key/value pair; returns the alignment it sets, if it is `general.alignment`.
    fn check_entry(&self, key: &str, value: &Value) -> Result<Option<u64>> {
        if key.is_empty() {
            return Err(self.key_error(key, "keys must not be empty"));
        }
        if key == KEY_ALIGNMENT {
            let a = check_alignment(value).map_err(|m| self.key_error(key, m))?;
            return Ok(Some(u64::from(a)));
        }
        Ok(None)
    }

    /// Declares a metadata entry; a key may be declared once. `general.alignment` (a u32
    /// power of two) sets the alignment of the data.
    pub fn add_metadata(&mut self, key: &str, value: impl Into<Value>) -> Result<()> {
        self.expect_declaring(&format!("metadata key '{key}'"))?;
        let value = value.into();
        if self.key_index.contains_key(key) {
            return Err(self.key_error(key, "declared twice (use set_metadata to replace a value)"));
        }
        if let Some(a) = self.check_entry(key, &value)? {
            self.alignment = a;
        }
        self.key_index.insert(key.to_string(), self.metadata.len());
        self.metadata.push(MetadataEntry {
            key: key.to_string(),
            value,
        });
        Ok(())
    }

    /// Declares a metadata entry, replacing the value (in place) if the key exists.
    pub fn set_metadata(&mut self, key: &str, value: impl Into<Value>) -> Result<()> {
        self.expect_declaring(&format!("metadata key '{key}'"))?;
        let value = value.into();
        match self.key_index.get(key) {
            None => self.add_metadata(key, value),
            Some(&i) => {
                if let Some(a) = self.check_entry(key, &value)? {
                    self.alignment = a;
                }
                self.metadata[i].value = value;
                Ok(())
            }
        }
    }

    /// Removes a declared metadata entry, returning its value.
    pub fn remove_metadata(&mut self, key: &str) -> Result<Option<Value>> {
        self.expect_declaring(&format!("metadata key '{key}'"))?;
        let Some(i) = self.key_index.remove(key) else {
            return Ok(None);
        };
        let entry = self.metadata.remove(i);
        for e in &self.metadata[i..] {
            if let Some(j) = self.key_index.get_mut(&e.key) {
                *j -= 1;
            }
        }
        if key == KEY_ALIGNMENT {
            self.alignment = u64::from(DEFAULT_ALIGNMENT);
        }
        Ok(Some(entry.value))
    }

    /// Sets `general.alignment` (a power of two; gguf-py's `add_custom_alignment`).
    pub fn set_alignment(&mut self, alignment: u32) -> Result<()> {
        self.set_metadata(KEY_ALIGNMENT, Value::U32(alignment))
    }

    /// Declares a tensor: name (at most 63 bytes, unique), dimensions innermost first (1 to
    /// 4; `dims[0]` a multiple of the type's block size) and type. Returns the exact number
    /// of bytes [`GgufWriter::write_tensor`] will expect for it.
    pub fn add_tensor_info(
        &mut self,
        name: &str,
        dims: &[u64],
        ggml_type: GgmlType,
    ) -> Result<u64> {
        self.expect_declaring(&format!("tensor '{name}'"))?;
        let bad = |message: String| GgufError::Tensor {
            path: self.final_path.clone(),
            tensor: name.to_string(),
            message,
        };
        check_tensor_name(name).map_err(bad)?;
        if self.tensor_index.contains_key(name) {
            return Err(bad("declared twice".into()));
        }
        let (_, nbytes) = check_tensor_shape(dims, ggml_type).map_err(bad)?;
        self.tensor_index
            .insert(name.to_string(), self.tensors.len());
        self.tensors.push(DeclaredTensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            ggml_type,
            nbytes,
            offset: 0,
        });
        Ok(nbytes)
    }

    fn out(&mut self) -> Result<&mut BufWriter<File>> {
        match self.out.as_mut() {
            Some(o) => Ok(o),
            None => Err(GgufError::Write {
                path: self.final_path.clone(),
                message: "the output file is already closed".into(),
            }),
        }
    }

    /// Writes `bytes` to the file, marking the writer failed on an I/O error.
    fn emit(&mut self, bytes: &[u8]) -> Result<()> {
        let result = self.out()?.write_all(bytes);
        if let Err(e) = result {
            self.state = State::Failed;
            return Err(GgufError::io(&self.partial_path, e));
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Writes zeros up to the next multiple of the alignment.
    fn pad(&mut self) -> Result<()> {
        const ZEROS: [u8; 4096] = [0; 4096];
        let target = align_up(self.written, self.alignment)
            .ok_or_else(|| self.contract("file size overflows"))?;
        while self.written < target {
            let n = (target - self.written).min(ZEROS.len() as u64) as usize;
            self.emit(&ZEROS[..n])?;
        }
        Ok(())
    }

    /// Ends the declarations: computes every tensor's offset and writes the header, the
    /// metadata, the tensor infos and the padding up to the data section.
    pub fn begin_data(&mut self) -> Result<()> {
        self.expect_declaring("begin_data()")?;
        let mut offset = 0u64;
        for i in 0..self.tensors.len() {
            self.tensors[i].offset = offset;
            offset = align_up(self.tensors[i].nbytes, self.alignment)
                .and_then(|n| offset.checked_add(n))
                .ok_or_else(|| self.contract("the tensors' total size overflows"))?;
        }
        let mut header = Vec::with_capacity(1 << 16);
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for e in &self.metadata {
            encode_str(&e.key, &mut header);
            header.extend_from_slice(&e.value.value_type().id().to_le_bytes());
            e.value.encode(&mut header);
        }
        for t in &self.tensors {
            encode_str(&t.name, &mut header);
            header.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            header.extend_from_slice(&t.offset.to_le_bytes());
        }
        self.emit(&header)?;
        self.pad()?;
        self.data_offset = self.written;
        self.state = State::Data { next: 0 };
        Ok(())
    }

    /// The name of the tensor [`GgufWriter::write_tensor`] expects next, if any.
    pub fn next_tensor(&self) -> Option<&str> {
        match self.state {
            State::Declaring => self.tensors.first().map(|t| t.name.as_str()),
            State::Data { next } => self.tensors.get(next).map(|t| t.name.as_str()),
            _ => None,
        }
    }

    /// Streams the data of the next declared tensor: `name` must be that tensor and
    /// `bytes` exactly its declared size.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let next = match self.state {
            State::Data { next } => next,
            State::Declaring => {
                return Err(self.contract(format!(
                    "tensor '{name}': call begin_data() before writing tensor data"
                )))
            }
            State::Failed => {
                return Err(self.contract(format!(
                    "tensor '{name}': an earlier write failed; the output is unusable"
                )))
            }
            State::Finished => return Err(self.contract("the file is already finished")),
        };
        let Some(expected) = self.tensors.get(next) else {
            return Err(self.contract(format!(
                "tensor '{name}': all {} declared tensors are already written",
                self.tensors.len()
            )));
        };
        if expected.name != name {
            let message = if self.tensor_index.contains_key(name) {
                format!(
                    "tensor '{name}' written out of order: tensor '{}' (#{next}) comes first",
                    expected.name
                )
            } else {
                format!(
                    "tensor '{name}' was never declared (next expected: '{}')",
                    expected.name
                )
            };
            return Err(self.contract(message));
        }
        if bytes.len() as u64 != expected.nbytes {
            return Err(GgufError::Tensor {
                path: self.final_path.clone(),
                tensor: name.to_string(),
                message: format!(
                    "got {} bytes but {} {:?} (innermost first) is {} bytes",
                    bytes.len(),
                    expected.ggml_type,
                    expected.dims,
                    expected.nbytes
                ),
            });
        }
        debug_assert_eq!(self.written, self.data_offset + expected.offset);
        self.emit(bytes)?;
        self.pad()?;
        self.state = State::Data { next: next + 1 };
        Ok(())
    }

    /// Completes the file: every declared tensor must have been written. Flushes, fsyncs,
    /// renames `.partial` to the final path and fsyncs the folder. Returns the final path.
    pub fn finish(mut self) -> Result<PathBuf> {
        if self.state == State::Declaring {
            self.begin_data()?;
        }
        match self.state {
            State::Data { next } if next == self.tensors.len() => {}
            State::Data { next } => {
                let missing = self.tensors.get(next).map_or("", |t| t.name.as_str());
                return Err(self.contract(format!(
                    "finish() called with {} of {} tensors written (next: '{missing}')",
                    next,
                    self.tensors.len(),
                )));
            }
            _ => return Err(self.contract("an earlier write failed; the output is unusable")),
        }
        let out = self
            .out
            .take()
            .ok_or_else(|| self.contract("output already closed"))?;
        let file = out
            .into_inner()
            .map_err(|e| GgufError::io(&self.partial_path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| GgufError::io(&self.partial_path, e))?;
        drop(file);
        std::fs::rename(&self.partial_path, &self.final_path)
            .map_err(|e| GgufError::io(&self.final_path, e))?;
        self.state = State::Finished;
        if let Some(dir) = self.final_path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            // Makes the rename durable; not every platform can open a folder, so best effort.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(self.final_path.clone())
    }
}

impl Drop for GgufWriter {
    fn drop(&mut self) {
        if self.state != State::Finished {
            drop(self.out.take());
            let _ = std::fs::remove_file(&self.partial_path);
        }
    }
}
