//! A strict, lazy GGUF reader.
//!
//! Opening a file reads the header (metadata and tensor infos) through a buffered reader and
//! validates all of it; tensor bytes are reached through a memory map created on first use,
//! so listing a 100 GB model costs a few megabytes of reads.
//!
//! Every count, length, dimension and offset comes from an untrusted header, so each one is
//! checked against what is left of the real file before anything is allocated or sliced. No
//! input makes the reader panic; every rejection is a [`GgufError`] naming the file and the
//! key or tensor at fault.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use memmap2::Mmap;
use pajamas_quant::GgmlType;

use crate::error::{GgufError, Result};
use crate::format::{
    align_up, check_alignment, check_tensor_name, check_tensor_shape, DEFAULT_ALIGNMENT,
    KEY_ALIGNMENT, KEY_ARCHITECTURE, MAGIC, MAX_ARRAY_DEPTH, MAX_ARRAY_ELEMENTS, MAX_DIMS,
    MAX_STRING_BYTES,
};
use crate::value::{Array, Value, ValueType};

/// Fewest bytes a metadata entry can take: key length (8), a one-byte key, type (4), a
/// one-byte value.
const MIN_KV_BYTES: u64 = 8 + 1 + 4 + 1;
/// Fewest bytes a tensor info can take: name length (8), n_dims (4), one dimension (8),
/// type (4), offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

/// One metadata entry, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataEntry {
    pub key: String,
    pub value: Value,
}

/// One tensor's info, as the file declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions innermost first, as GGUF stores them (`ne[0]` is the row length): an HF
    /// `[out, in]` weight is `[in, out]` here.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data relative to the start of the data section (a multiple of the
    /// alignment).
    pub offset: u64,
    /// Number of elements (product of `dims`).
    pub n_elements: u64,
    /// Size of the data in bytes (without padding).
    pub nbytes: u64,
}

impl TensorInfo {
    /// Dimensions outermost first (PyTorch / numpy order).
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }
}

/// An opened GGUF file: its validated header, and its tensor data on demand.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    alignment: u32,
    metadata: Vec<MetadataEntry>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    /// End of the tensor infos (start of the padding before the data section).
    header_len: u64,
    data_offset: u64,
    file_size: u64,
    warnings: Vec<String>,
    mmap: OnceLock<Mmap>,
}

macro_rules! typed_getters {
    ($($fn_name:ident => $as:ident : $ty:ty),* $(,)?) => {
        $(
            #[doc = concat!("The value of `key` if present and of exactly this type (`", stringify!($ty), "`).")]
            pub fn $fn_name(&self, key: &str) -> Option<$ty> {
                self.get(key)?.$as()
            }
        )*
    };
}

macro_rules! array_getters {
    ($($fn_name:ident => $as:ident : $ty:ty),* $(,)?) => {
        $(
            #[doc = concat!("The elements of array `key` if present and of exactly this element type (`", stringify!($ty), "`).")]
            pub fn $fn_name(&self, key: &str) -> Option<&[$ty]> {
                self.get(key)?.as_array()?.$as()
            }
        )*
    };
}

impl GgufFile {
    /// Opens `path` and validates its header. Reads only the header; tensor data is mapped
    /// on first use.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| GgufError::io(&path, e))?;
        let file_size = file.metadata().map_err(|e| GgufError::io(&path, e))?.len();
        let header = {
            let mut p = Parser {
                path: &path,
                r: BufReader::with_capacity(1 << 16, file),
                pos: 0,
                len: file_size,
            };
            p.parse()?
        };
        let key_index = header
            .metadata
            .iter()
            .enumerate()
            .map(|(i, e)| (e.key.clone(), i))
            .collect();
        let tensor_index = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            path,
            version: header.version,
            alignment: header.alignment,
            metadata: header.metadata,
            key_index,
            tensors: header.tensors,
            tensor_index,
            header_len: header.header_len,
            data_offset: header.data_offset,
            file_size,
            warnings: header.warnings,
            mmap: OnceLock::new(),
        })
    }

    /// Runs every check [`GgufFile::open`] makes on an in-memory file image (header,
    /// metadata, tensor infos, data layout) without touching the disk. `name` is used in
    /// error messages in place of a path.
    pub fn validate_bytes(name: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
        let mut p = Parser {
            path: name.as_ref(),
            r: bytes,
            pos: 0,
            len: bytes.len() as u64,
        };
        p.parse().map(|_| ())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version of the file (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// `general.alignment`, or 32 when absent.
    pub fn alignment(&self) -> u32 {
        self.alignment
    }

    /// Byte offset of the data section from the start of the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Byte offset where the tensor infos end (before the padding to the data section).
    pub fn header_len(&self) -> u64 {
        self.header_len
    }

    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Things that are legal GGUF but that some readers (named in the text) refuse.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// All metadata entries, in file order.
    pub fn metadata(&self) -> &[MetadataEntry] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].value)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.key_index.contains_key(key)
    }

    /// The value of `key`, or an error naming the file and key.
    pub fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
        })
    }

    typed_getters! {
        get_u8 => as_u8: u8,
        get_i8 => as_i8: i8,
        get_u16 => as_u16: u16,
        get_i16 => as_i16: i16,
        get_u32 => as_u32: u32,
        get_i32 => as_i32: i32,
        get_f32 => as_f32: f32,
        get_bool => as_bool: bool,
        get_u64 => as_u64: u64,
        get_i64 => as_i64: i64,
        get_f64 => as_f64: f64,
        get_uint => as_uint: u64,
        get_int => as_int: i64,
        get_float => as_float: f64,
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    pub fn get_array(&self, key: &str) -> Option<&Array> {
        self.get(key)?.as_array()
    }

    array_getters! {
        get_str_array => as_strings: String,
        get_u8_array => as_u8: u8,
        get_i32_array => as_i32: i32,
        get_u32_array => as_u32: u32,
        get_f32_array => as_f32: f32,
        get_u64_array => as_u64: u64,
        get_i64_array => as_i64: i64,
        get_f64_array => as_f64: f64,
        get_bool_array => as_bool: bool,
    }

    /// `general.architecture` (e.g. `llama`), if present and a string.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str(KEY_ARCHITECTURE)
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Absolute byte offset of a tensor's data in the file.
    pub fn tensor_file_offset(&self, info: &TensorInfo) -> u64 {
        self.data_offset + info.offset
    }

    /// Whether the file has been memory-mapped (i.e. any tensor data requested).
    pub fn is_mapped(&self) -> bool {
        self.mmap.get().is_some()
    }

    fn map(&self) -> Result<&Mmap> {
        if let Some(m) = self.mmap.get() {
            return Ok(m);
        }
        let file = File::open(&self.path).map_err(|e| GgufError::io(&self.path, e))?;
        // SAFETY: the mapping is read-only and we never write the input; a model file changing
        // under us while we read it is outside what any reader can guard against (slices are
        // still bounds-checked against the mapping's length below).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| GgufError::io(&self.path, e))?;
        let _ = self.mmap.set(mmap);
        self.mmap
            .get()
            .ok_or_else(|| GgufError::io(&self.path, std::io::Error::other("memory map lost")))
    }

    /// The raw bytes of tensor `name` (exactly `nbytes`, without padding), mapping the file
    /// on first use.
    pub fn tensor_data(&self, name: &str) -> Result<&[u8]> {
        let info = self.tensor(name).ok_or_else(|| GgufError::NoSuchTensor {
            path: self.path.clone(),
            tensor: name.to_string(),
        })?;
        self.data_of(info)
    }

    /// The raw bytes of a tensor of this file.
    pub fn data_of(&self, info: &TensorInfo) -> Result<&[u8]> {
        let bad = |message: &str| GgufError::Tensor {
            path: self.path.clone(),
            tensor: info.name.clone(),
            message: message.to_string(),
        };
        if info.nbytes == 0 {
            return Ok(&[]);
        }
        let map = self.map()?;
        let begin = self
            .data_offset
            .checked_add(info.offset)
            .and_then(|b| usize::try_from(b).ok());
        let end = begin.and_then(|b| b.checked_add(usize::try_from(info.nbytes).ok()?));
        match (begin, end) {
            (Some(b), Some(e)) => map.get(b..e).ok_or_else(|| {
                bad("data lies past the end of the file (was it truncated after opening?)")
            }),
            _ => Err(bad(
                "data offset does not fit in this machine's address space",
            )),
        }
    }
}

/// What parsing the header yields.
struct Header {
    version: u32,
    alignment: u32,
    metadata: Vec<MetadataEntry>,
    tensors: Vec<TensorInfo>,
    header_len: u64,
    data_offset: u64,
    warnings: Vec<String>,
}

/// Why a low-level read failed; turned into a [`GgufError`] with context by the caller.
enum Fail {
    /// `need` bytes were needed at offset `at` but the file ends at `len`.
    Short {
        need: u64,
        at: u64,
        len: u64,
    },
    Io(std::io::Error),
    Bad(String),
}

impl Fail {
    fn describe(self, what: &str) -> std::result::Result<String, std::io::Error> {
        match self {
            Fail::Short { need, at, len } => Ok(format!(
                "{what} needs {need} bytes at offset {at} but the file ends at byte {len} (truncated file?)"
            )),
            Fail::Bad(m) => Ok(format!("{what}: {m}")),
            Fail::Io(e) => Err(e),
        }
    }
}

type Step<T> = std::result::Result<T, Fail>;

/// A header parser over any byte source of known length. `pos <= len` always holds.
struct Parser<'p, R> {
    path: &'p Path,
    r: R,
    pos: u64,
    len: u64,
}

impl<R: Read> Parser<'_, R> {
    fn remaining(&self) -> u64 {
        self.len - self.pos
    }

    fn format_err(&self, message: String) -> GgufError {
        GgufError::Format {
            path: self.path.to_path_buf(),
            message,
        }
    }

    /// Maps a low-level failure to a file-level error, `what` saying what was being read.
    fn in_file(&self, what: &str) -> impl Fn(Fail) -> GgufError + '_ {
        let what = what.to_string();
        move |f| match f.describe(&what) {
            Ok(message) => self.format_err(message),
            Err(e) => GgufError::io(self.path, e),
        }
    }

    fn in_key<'a>(&'a self, key: &'a str, what: &'a str) -> impl Fn(Fail) -> GgufError + 'a {
        move |f| match f.describe(what) {
            Ok(message) => GgufError::Key {
                path: self.path.to_path_buf(),
                key: key.to_string(),
                message,
            },
            Err(e) => GgufError::io(self.path, e),
        }
    }

    fn in_tensor<'a>(&'a self, name: &'a str, what: &'a str) -> impl Fn(Fail) -> GgufError + 'a {
        move |f| match f.describe(what) {
            Ok(message) => GgufError::Tensor {
                path: self.path.to_path_buf(),
                tensor: name.to_string(),
                message,
            },
            Err(e) => GgufError::io(self.path, e),
        }
    }

    fn need(&self, n: u64) -> Step<()> {
        if n > self.remaining() {
            return Err(Fail::Short {
                need: n,
                at: self.pos,
                len: self.len,
            });
        }
        Ok(())
    }

    fn fill(&mut self, buf: &mut [u8]) -> Step<()> {
        let n = buf.len() as u64;
        self.need(n)?;
        self.r.read_exact(buf).map_err(Fail::Io)?;
        self.pos += n;
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Step<[u8; N]> {
        let mut b = [0u8; N];
        self.fill(&mut b)?;
        Ok(b)
    }

    fn u32(&mut self) -> Step<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Step<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads `n` bytes, allocating only after checking they are there.
    fn bytes(&mut self, n: u64) -> Step<Vec<u8>> {
        self.need(n)?;
        let size =
            usize::try_from(n).map_err(|_| Fail::Bad(format!("{n} bytes do not fit in memory")))?;
        let mut v = vec![0u8; size];
        self.fill(&mut v)?;
        Ok(v)
    }

    fn string(&mut self) -> Step<String> {
        let n = self.u64()?;
        if n > MAX_STRING_BYTES {
            return Err(Fail::Bad(format!(
                "string length {n} is larger than the {MAX_STRING_BYTES}-byte limit (corrupt file)"
            )));
        }
        if n > self.remaining() {
            return Err(Fail::Bad(format!(
                "string length {n} at offset {} runs past the end of the file: only {} bytes remain (corrupt or truncated file)",
                self.pos - 8,
                self.remaining()
            )));
        }
        let bytes = self.bytes(n)?;
        String::from_utf8(bytes).map_err(|e| {
            Fail::Bad(format!(
                "string at offset {} is not valid UTF-8 ({e})",
                self.pos - n
            ))
        })
    }

    fn parse(&mut self) -> Result<Header> {
        if self.len < 4 {
            return Err(self.format_err(format!(
                "file is {} bytes, too short for the 4-byte GGUF magic",
                self.len
            )));
        }
        let magic: [u8; 4] = self.array().map_err(self.in_file("magic"))?;
        if magic != MAGIC {
            return Err(self.format_err(format!(
                "bad magic {:02x} {:02x} {:02x} {:02x} ({:?}): GGUF files start with \"GGUF\" (47 47 55 46)",
                magic[0],
                magic[1],
                magic[2],
                magic[3],
                String::from_utf8_lossy(&magic)
            )));
        }
        let version = self.u32().map_err(self.in_file("version"))?;
        match version {
            2 | 3 => {}
            0 => return Err(self.format_err("version is 0, which no GGUF writer produces".into())),
            1 => return Err(self.format_err(
                "GGUF version 1 is obsolete and no longer supported (llama.cpp dropped it too); \
                     convert the model again with a current converter"
                    .into(),
            )),
            v if v & 0xFFFF == 0 => {
                return Err(self.format_err(format!(
                "version field reads {v:#010x}: this looks like a big-endian GGUF file, and only \
                     little-endian files are supported"
            )))
            }
            v => {
                return Err(self.format_err(format!(
                    "unsupported GGUF version {v} (this reader knows versions 2 and 3)"
                )))
            }
        }
        let tensor_count = self.u64().map_err(self.in_file("tensor count"))?;
        let kv_count = self.u64().map_err(self.in_file("metadata count"))?;
        let left = self.remaining();
        if tensor_count > left / MIN_TENSOR_INFO_BYTES {
            return Err(self.format_err(format!(
                "header claims {tensor_count} tensors, but each tensor info takes at least \
                 {MIN_TENSOR_INFO_BYTES} bytes and only {left} bytes follow the header (corrupt or truncated file)"
            )));
        }
        if kv_count > left / MIN_KV_BYTES {
            return Err(self.format_err(format!(
                "header claims {kv_count} metadata entries, but each takes at least {MIN_KV_BYTES} \
                 bytes and only {left} bytes follow the header (corrupt or truncated file)"
            )));
        }
        // Both products are now bounded by `left`, so neither the sum nor the allocations
        // below can be absurd.
        if tensor_count * MIN_TENSOR_INFO_BYTES + kv_count * MIN_KV_BYTES > left {
            return Err(self.format_err(format!(
                "header claims {tensor_count} tensors and {kv_count} metadata entries, more than the \
                 {left} remaining bytes can hold (corrupt or truncated file)"
            )));
        }

        let mut metadata: Vec<MetadataEntry> = Vec::with_capacity(kv_count as usize);
        let mut seen_keys: HashMap<String, usize> = HashMap::with_capacity(kv_count as usize);
        for i in 0..kv_count {
            let what = format!("key of metadata entry #{i}");
            let key = self.string().map_err(self.in_file(&what))?;
            if key.is_empty() {
                return Err(self.format_err(format!("metadata entry #{i} has an empty key")));
            }
            if let Some(&first) = seen_keys.get(&key) {
                return Err(GgufError::Key {
                    path: self.path.to_path_buf(),
                    key,
                    message: format!("appears twice (metadata entries #{first} and #{i})"),
                });
            }
            let value = self
                .value_with_type(0)
                .map_err(self.in_key(&key, "value"))?;
            seen_keys.insert(key.clone(), metadata.len());
            metadata.push(MetadataEntry { key, value });
        }

        let alignment = match seen_keys.get(KEY_ALIGNMENT) {
            None => DEFAULT_ALIGNMENT,
            Some(&i) => check_alignment(&metadata[i].value).map_err(|message| GgufError::Key {
                path: self.path.to_path_buf(),
                key: KEY_ALIGNMENT.into(),
                message,
            })?,
        };
        let align = u64::from(alignment);

        let mut tensors: Vec<TensorInfo> = Vec::with_capacity(tensor_count as usize);
        let mut seen_names: HashMap<String, usize> = HashMap::with_capacity(tensor_count as usize);
        for i in 0..tensor_count {
            let what = format!("name of tensor info #{i}");
            let name = self.string().map_err(self.in_file(&what))?;
            let info = self.tensor_info(name, align)?;
            if let Some(&first) = seen_names.get(&info.name) {
                return Err(GgufError::Tensor {
                    path: self.path.to_path_buf(),
                    tensor: info.name,
                    message: format!("appears twice (tensor infos #{first} and #{i})"),
                });
            }
            seen_names.insert(info.name.clone(), tensors.len());
            tensors.push(info);
        }

        let header_len = self.pos;
        let data_offset = align_up(header_len, align)
            .ok_or_else(|| self.format_err("data section offset overflows".into()))?;
        if !tensors.is_empty() && data_offset > self.len {
            return Err(self.format_err(format!(
                "the data section should start at byte {data_offset} but the file ends at byte {} (truncated file?)",
                self.len
            )));
        }
        let data_len = self.len.saturating_sub(data_offset);
        check_data_layout(self.path, &tensors, data_len)?;
        let warnings = layout_warnings(&tensors, align);
        Ok(Header {
            version,
            alignment,
            metadata,
            tensors,
            header_len,
            data_offset,
            warnings,
        })
    }

    /// Reads one tensor info after its name.
    fn tensor_info(&mut self, name: String, align: u64) -> Result<TensorInfo> {
        let path = self.path;
        let bad = |message: String| GgufError::Tensor {
            path: path.to_path_buf(),
            tensor: name.clone(),
            message,
        };
        check_tensor_name(&name).map_err(bad)?;
        let n_dims = self
            .u32()
            .map_err(self.in_tensor(&name, "dimension count"))?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(bad(format!(
                "has {n_dims} dimensions; GGUF tensors have 1 to {MAX_DIMS}"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64().map_err(self.in_tensor(&name, "dimensions"))?);
        }
        let type_id = self.u32().map_err(self.in_tensor(&name, "type"))?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| bad(unknown_type(type_id)))?;
        let (n_elements, nbytes) = check_tensor_shape(&dims, ggml_type).map_err(bad)?;
        let offset = self.u64().map_err(self.in_tensor(&name, "data offset"))?;
        if !offset.is_multiple_of(align) {
            return Err(bad(format!(
                "data offset {offset} is not a multiple of the alignment {align}"
            )));
        }
        Ok(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_elements,
            nbytes,
        })
    }

    /// Reads a value type id and the value after it.
    fn value_with_type(&mut self, depth: usize) -> Step<Value> {
        let id = self.u32()?;
        let ty = ValueType::from_id(id).ok_or_else(|| {
            Fail::Bad(format!("unknown value type id {id} (GGUF defines 0 to 12)"))
        })?;
        self.value(ty, depth)
    }

    fn value(&mut self, ty: ValueType, depth: usize) -> Step<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.array()?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array()?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array()?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array()?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array()?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array()?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array()?)),
            ValueType::Bool => Value::Bool(to_bool(u8::from_le_bytes(self.array()?))?),
            ValueType::String => Value::String(self.string()?),
            ValueType::Array => Value::Array(self.array_value(depth + 1)?),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array()?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array()?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array()?)),
        })
    }

    /// Reads an array (element type, count, elements); `depth` counts nesting from 1.
    fn array_value(&mut self, depth: usize) -> Step<Array> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(Fail::Bad(format!(
                "arrays nested more than {MAX_ARRAY_DEPTH} levels deep"
            )));
        }
        let id = self.u32()?;
        let ty = ValueType::from_id(id).ok_or_else(|| {
            Fail::Bad(format!(
                "unknown array element type id {id} (GGUF defines 0 to 12)"
            ))
        })?;
        let count = self.u64()?;
        if count > MAX_ARRAY_ELEMENTS {
            return Err(Fail::Bad(format!(
                "array of {count} elements is longer than the {MAX_ARRAY_ELEMENTS}-element limit (corrupt file)"
            )));
        }
        let min = ty.min_encoded_size();
        if count > self.remaining() / min {
            return Err(Fail::Bad(format!(
                "array of {count} {ty} elements needs at least {} bytes but only {} remain (corrupt or truncated file)",
                count.saturating_mul(min),
                self.remaining()
            )));
        }
        // `count * min <= remaining` holds from here on.
        let n = count as usize;
        Ok(match ty {
            ValueType::U8 => Array::U8(self.bytes(count)?),
            ValueType::I8 => Array::I8(self.numbers(n, i8::from_le_bytes)?),
            ValueType::U16 => Array::U16(self.numbers(n, u16::from_le_bytes)?),
            ValueType::I16 => Array::I16(self.numbers(n, i16::from_le_bytes)?),
            ValueType::U32 => Array::U32(self.numbers(n, u32::from_le_bytes)?),
            ValueType::I32 => Array::I32(self.numbers(n, i32::from_le_bytes)?),
            ValueType::F32 => Array::F32(self.numbers(n, f32::from_le_bytes)?),
            ValueType::U64 => Array::U64(self.numbers(n, u64::from_le_bytes)?),
            ValueType::I64 => Array::I64(self.numbers(n, i64::from_le_bytes)?),
            ValueType::F64 => Array::F64(self.numbers(n, f64::from_le_bytes)?),
            ValueType::Bool => Array::Bool(
                self.bytes(count)?
                    .into_iter()
                    .map(to_bool)
                    .collect::<Step<Vec<bool>>>()?,
            ),
            ValueType::String => {
                // Grow as strings arrive: a String costs 24 bytes against the 8 of a length
                // prefix, so reserving `count` up front would amplify a corrupt count.
                let mut v = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    v.push(self.string()?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n.min(1 << 12));
                for _ in 0..n {
                    v.push(self.array_value(depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }

    /// Reads `n` fixed-size little-endian numbers in bounded chunks.
    fn numbers<T, const N: usize>(&mut self, n: usize, from: fn([u8; N]) -> T) -> Step<Vec<T>> {
        const CHUNK: usize = 1 << 14;
        let mut out = Vec::with_capacity(n);
        let mut buf = vec![0u8; CHUNK.min(n) * N];
        let mut left = n;
        while left > 0 {
            let take = left.min(CHUNK);
            let chunk = &mut buf[..take * N];
            self.fill(chunk)?;
            for c in chunk.chunks_exact(N) {
                let mut b = [0u8; N];
                b.copy_from_slice(c);
                out.push(from(b));
            }
            left -= take;
        }
        Ok(out)
    }
}

fn to_bool(b: u8) -> Step<bool> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(Fail::Bad(format!(
            "bool byte is {other}; GGUF booleans are 0 or 1"
        ))),
    }
}

fn unknown_type(id: u32) -> String {
    let note = match id {
        4 | 5 => " (Q4_2/Q4_3, removed from ggml in 2023)",
        31..=33 => " (Q4_0_4_4/Q4_0_4_8/Q4_0_8_8, removed from GGUF files; requantize from Q4_0)",
        36..=38 => " (IQ4_NL_4_4/4_8/8_8, removed from GGUF files)",
        _ => "",
    };
    format!("unknown ggml type id {id}{note}")
}

/// Every tensor's data must lie inside the data section, and no two may overlap.
fn check_data_layout(path: &Path, tensors: &[TensorInfo], data_len: u64) -> Result<()> {
    let bad = |t: &TensorInfo, message: String| GgufError::Tensor {
        path: path.to_path_buf(),
        tensor: t.name.clone(),
        message,
    };
    for t in tensors {
        match t.offset.checked_add(t.nbytes) {
            Some(end) if end <= data_len => {}
            _ => {
                return Err(bad(
                    t,
                    format!(
                        "data ({} bytes of {} {:?}) spans bytes {}..{} of the data section, which holds only {data_len} bytes (truncated file?)",
                        t.nbytes,
                        t.ggml_type,
                        t.dims,
                        t.offset,
                        t.offset as u128 + t.nbytes as u128
                    ),
                ))
            }
        }
    }
    let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| t.nbytes > 0).collect();
    order.sort_by_key(|t| (t.offset, t.nbytes));
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.offset < a.offset + a.nbytes {
            return Err(bad(
                b,
                format!(
                    "data (bytes {}..{}) overlaps tensor '{}' (bytes {}..{})",
                    b.offset,
                    b.offset + b.nbytes,
                    a.name,
                    a.offset,
                    a.offset + a.nbytes
                ),
            ));
        }
    }
    Ok(())
}

/// ggml's loader demands that tensor data follow the infos' order, each padded to the
/// alignment (what every known writer does); other layouts are legal GGUF but worth a note.
fn layout_warnings(tensors: &[TensorInfo], align: u64) -> Vec<String> {
    let mut expected = 0u64;
    for t in tensors {
        if t.offset != expected {
            return vec![format!(
                "tensor '{}' has data offset {} where ggml's packed layout expects {expected}; \
                 llama.cpp refuses files whose tensor data is not stored in tensor-info order",
                t.name, t.offset
            )];
        }
        // Bounded by the data section length (checked before), so no overflow.
        expected = expected.saturating_add(align_up(t.nbytes, align).unwrap_or(u64::MAX));
    }
    Vec::new()
}
