//! A small, strict reader of the safetensors format.
//!
//! Layout: `u64` little-endian header length `N`, `N` bytes of JSON (tensor name ->
//! `{dtype, shape, data_offsets}` plus an optional `__metadata__` string map), then the
//! data section. Opening a file reads only the header; tensor bytes are reached through a
//! memory map created on first use, so listing a 100 GB checkpoint costs a few kilobytes
//! of reads.
//!
//! Every size comes from an untrusted header, so each one is checked against the real file
//! length before anything is allocated or sliced.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use memmap2::Mmap;
use serde_json::Value;

use crate::dtype::{decode_f32, Dtype};
use crate::error::{ModelError, Result};

/// The largest header we accept (the safetensors reference implementation uses the same
/// bound). Larger claims are corrupt files, not models.
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

/// One tensor's entry in a safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    /// Shape as the checkpoint stores it (PyTorch order: outermost first).
    pub shape: Vec<u64>,
    /// Byte range within the data section, `[begin, end)`.
    pub data_offsets: (u64, u64),
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Size of the tensor's data in bytes.
    pub fn nbytes(&self) -> u64 {
        self.data_offsets.1 - self.data_offsets.0
    }
}

/// An opened safetensors file: its validated header, and its data on demand.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    /// Tensors in data order.
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
    data_start: u64,
    header_bytes_read: u64,
    mmap: OnceLock<Mmap>,
}

/// A tensor's raw bytes, borrowed from the memory map.
#[derive(Debug, Clone, Copy)]
pub struct TensorData<'a> {
    pub info: &'a TensorInfo,
    pub bytes: &'a [u8],
}

impl TensorData<'_> {
    /// Decodes the tensor to f32 (F32, F16, BF16 and F64 inputs).
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        decode_f32(self.info.dtype, self.bytes)
    }
}

impl SafetensorsFile {
    /// Opens `path` and validates its header. Reads only the header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut file = File::open(&path).map_err(|e| ModelError::io(&path, e))?;
        let file_len = file.metadata().map_err(|e| ModelError::io(&path, e))?.len();
        let bad = |message: String| ModelError::Safetensors {
            path: path.clone(),
            message,
        };
        if file_len < 8 {
            return Err(bad(format!(
                "file is {file_len} bytes, too short for the 8-byte header length (truncated download?)"
            )));
        }
        let mut len_bytes = [0u8; 8];
        file.read_exact(&mut len_bytes)
            .map_err(|e| ModelError::io(&path, e))?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER_BYTES {
            return Err(bad(format!(
                "header claims {header_len} bytes, more than the {MAX_HEADER_BYTES}-byte limit (corrupt file)"
            )));
        }
        if header_len > file_len - 8 {
            return Err(bad(format!(
                "header claims {header_len} bytes but only {} follow the length field (truncated file)",
                file_len - 8
            )));
        }
        // Bounded by both the limit and the real file size, so this allocation is safe.
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header)
            .map_err(|e| ModelError::io(&path, e))?;
        let data_start = 8 + header_len;
        let data_len = file_len - data_start;
        let (tensors, metadata) = parse_header(&header, data_len).map_err(bad)?;
        let by_name = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(SafetensorsFile {
            path,
            tensors,
            by_name,
            metadata,
            data_start,
            header_bytes_read: data_start,
            mmap: OnceLock::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensors in the order their data is stored.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The `__metadata__` map (e.g. `{"format": "pt"}`).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Bytes read from disk so far through `read` calls (the header); data access goes
    /// through the memory map and is reported by [`SafetensorsFile::is_mapped`].
    pub fn header_bytes_read(&self) -> u64 {
        self.header_bytes_read
    }

    /// Whether the data section has been memory-mapped (i.e. any tensor data requested).
    pub fn is_mapped(&self) -> bool {
        self.mmap.get().is_some()
    }

    fn map(&self) -> Result<&Mmap> {
        if let Some(m) = self.mmap.get() {
            return Ok(m);
        }
        let file = File::open(&self.path).map_err(|e| ModelError::io(&self.path, e))?;
        // SAFETY: the mapping is read-only; we never modify the input, and a checkpoint
        // changing under us while we quantize it is outside what any tool can guard against.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(&self.path, e))?;
        let _ = self.mmap.set(mmap);
        Ok(self.mmap.get().expect("just set"))
    }

    /// The raw bytes of tensor `name`, mapping the file on first use.
    pub fn data(&self, name: &str) -> Result<TensorData<'_>> {
        let info = self.tensor(name).ok_or_else(|| ModelError::NoSuchTensor {
            model: self.path.clone(),
            tensor: name.to_string(),
        })?;
        let map = self.map()?;
        let begin = (self.data_start + info.data_offsets.0) as usize;
        let end = (self.data_start + info.data_offsets.1) as usize;
        let bytes = map.get(begin..end).ok_or_else(|| ModelError::Tensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            message: "data lies past the end of the file (was it truncated after opening?)".into(),
        })?;
        Ok(TensorData { info, bytes })
    }

    /// Reads tensor `name`'s bytes with a positioned read, without memory-mapping the
    /// file. Used by streaming conversion so that resident memory holds one tensor at a
    /// time instead of every page of the checkpoint touched so far.
    pub fn read_bytes(&self, name: &str) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let info = self.tensor(name).ok_or_else(|| ModelError::NoSuchTensor {
            model: self.path.clone(),
            tensor: name.to_string(),
        })?;
        let file = File::open(&self.path).map_err(|e| ModelError::io(&self.path, e))?;
        let mut buf = vec![0u8; info.nbytes() as usize];
        file.read_exact_at(&mut buf, self.data_start + info.data_offsets.0)
            .map_err(|e| ModelError::io(&self.path, e))?;
        Ok(buf)
    }

    /// Tensor `name` read (not mapped) and decoded to f32.
    pub fn read_f32_streaming(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.tensor(name).ok_or_else(|| ModelError::NoSuchTensor {
            model: self.path.clone(),
            tensor: name.to_string(),
        })?;
        let bytes = self.read_bytes(name)?;
        decode_f32(info.dtype, &bytes).ok_or_else(|| ModelError::Tensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            message: format!(
                "dtype {} cannot be read as floating point yet (supported: F32, F16, BF16, F64)",
                info.dtype
            ),
        })
    }

    /// Tensor `name` decoded to f32, with an error that names the tensor when its dtype
    /// cannot be decoded.
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let data = self.data(name)?;
        data.to_f32().ok_or_else(|| ModelError::Tensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            message: format!(
                "dtype {} cannot be read as floating point yet (supported: F32, F16, BF16, F64)",
                data.info.dtype
            ),
        })
    }
}

type Header = (Vec<TensorInfo>, BTreeMap<String, String>);

/// Parses and validates a header against a data section of `data_len` bytes.
fn parse_header(bytes: &[u8], data_len: u64) -> std::result::Result<Header, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("header is not UTF-8: {e}"))?;
    let value: Value = serde_json::from_str(text.trim_end_matches(' '))
        .map_err(|e| format!("header is not valid JSON: {e}"))?;
    let Value::Object(entries) = value else {
        return Err("header is not a JSON object".into());
    };
    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, entry) in entries {
        if name == "__metadata__" {
            let Value::Object(m) = entry else {
                return Err("__metadata__ is not an object".into());
            };
            for (k, v) in m {
                let Value::String(s) = v else {
                    return Err(format!("__metadata__ key '{k}' is not a string"));
                };
                metadata.insert(k, s);
            }
            continue;
        }
        tensors.push(
            parse_entry(&name, &entry, data_len).map_err(|m| format!("tensor '{name}': {m}"))?,
        );
    }
    tensors.sort_by_key(|t| (t.data_offsets.0, t.data_offsets.1));
    for pair in tensors.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.data_offsets.0 < a.data_offsets.1 {
            return Err(format!(
                "tensor '{}' (bytes {}..{}) overlaps tensor '{}' (bytes {}..{})",
                b.name,
                b.data_offsets.0,
                b.data_offsets.1,
                a.name,
                a.data_offsets.0,
                a.data_offsets.1
            ));
        }
    }
    Ok((tensors, metadata))
}

fn parse_entry(
    name: &str,
    entry: &Value,
    data_len: u64,
) -> std::result::Result<TensorInfo, String> {
    let obj = entry.as_object().ok_or("entry is not an object")?;
    let dtype_name = obj
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or("missing string field 'dtype'")?;
    let dtype = Dtype::from_safetensors(dtype_name).ok_or_else(|| {
        format!("unknown dtype '{dtype_name}' (known: BOOL, U8..U64, I8..I64, F16, BF16, F32, F64, F8_E4M3, F8_E5M2, F8_E8M0)")
    })?;
    let shape = obj
        .get("shape")
        .and_then(Value::as_array)
        .ok_or("missing array field 'shape'")?
        .iter()
        .map(|d| {
            d.as_u64()
                .ok_or("shape holds a value that is not a non-negative integer")
        })
        .collect::<std::result::Result<Vec<u64>, _>>()?;
    let offsets = obj
        .get("data_offsets")
        .and_then(Value::as_array)
        .ok_or("missing array field 'data_offsets'")?;
    let (begin, end) = match offsets.as_slice() {
        [b, e] => (
            b.as_u64()
                .ok_or("data_offsets must be non-negative integers")?,
            e.as_u64()
                .ok_or("data_offsets must be non-negative integers")?,
        ),
        _ => return Err("data_offsets must hold exactly two integers".into()),
    };
    if begin > end {
        return Err(format!("data_offsets [{begin}, {end}] run backwards"));
    }
    let numel = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or("shape overflows")?;
    let need = numel
        .checked_mul(dtype.size() as u64)
        .ok_or("shape overflows")?;
    if end - begin != need {
        return Err(format!(
            "data_offsets [{begin}, {end}] hold {} bytes but shape {shape:?} of {dtype} needs {need}",
            end - begin
        ));
    }
    if end > data_len {
        return Err(format!(
            "data_offsets end at byte {end} but the data section holds only {data_len} bytes (truncated file?)"
        ));
    }
    Ok(TensorInfo {
        name: name.to_string(),
        dtype,
        shape,
        data_offsets: (begin, end),
    })
}

/// Serialises tensors into safetensors bytes. Used by tests and small tools; the real
/// writers stream.
pub fn serialize(
    tensors: &[(&str, Dtype, &[u64], &[u8])],
    metadata: Option<&BTreeMap<String, String>>,
) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if let Some(m) = metadata {
        header.insert(
            "__metadata__".into(),
            Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            ),
        );
    }
    let mut offset = 0u64;
    for (name, dtype, shape, data) in tensors {
        let end = offset + data.len() as u64;
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype.name(), "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&Value::Object(header)).expect("plain JSON");
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + offset as usize);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for (_, _, _, data) in tensors {
        out.extend_from_slice(data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }

    fn sample() -> Vec<u8> {
        let a: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let b: Vec<u8> = [0.5f32, -1.0]
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect();
        serialize(
            &[("a", Dtype::F32, &[2, 2], &a), ("b", Dtype::BF16, &[2], &b)],
            None,
        )
    }

    fn raw(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn err(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "m.safetensors", bytes);
        SafetensorsFile::open(&p).unwrap_err().to_string()
    }

    #[test]
    fn reads_valid_file_lazily() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "m.safetensors", &sample());
        let f = SafetensorsFile::open(&p).unwrap();
        assert!(!f.is_mapped());
        assert_eq!(f.tensors().len(), 2);
        assert_eq!(f.tensor("a").unwrap().shape, vec![2, 2]);
        assert_eq!(f.read_f32_streaming("b").unwrap(), vec![0.5, -1.0]);
        assert!(!f.is_mapped());
        assert_eq!(f.read_f32("a").unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        assert!(f.is_mapped());
        assert_eq!(f.read_f32("b").unwrap(), vec![0.5, -1.0]);
        assert!(matches!(f.data("zz"), Err(ModelError::NoSuchTensor { .. })));
    }

    #[test]
    fn rejects_truncated_header() {
        let bytes = sample();
        let e = err(&bytes[..20]);
        assert!(e.contains("truncated"), "{e}");
        assert!(err(&bytes[..4]).contains("too short"));
    }

    #[test]
    fn rejects_oversized_header() {
        let mut bytes = (MAX_HEADER_BYTES + 1).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        assert!(err(&bytes).contains("limit"));
    }

    #[test]
    fn rejects_bad_json_and_shapes() {
        assert!(err(&raw("{not json", b"")).contains("not valid JSON"));
        assert!(err(&raw("[1,2]", b"")).contains("not a JSON object"));
        let e = err(&raw(
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ));
        assert!(e.contains("tensor 'a'") && e.contains("needs 12"), "{e}");
        let e = err(&raw(
            r#"{"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}}"#,
            &[0; 1],
        ));
        assert!(e.contains("unknown dtype 'Q9'"), "{e}");
        let e = err(&raw(
            r#"{"a":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ));
        assert!(e.contains("overflow"), "{e}");
    }

    #[test]
    fn rejects_out_of_bounds_and_overlap() {
        let e = err(&raw(
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            &[0; 8],
        ));
        assert!(e.contains("data section holds only 8 bytes"), "{e}");
        let e = err(&raw(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            &[0; 12],
        ));
        assert!(e.contains("overlaps"), "{e}");
    }

    #[test]
    fn keeps_metadata() {
        let mut m = BTreeMap::new();
        m.insert("format".to_string(), "pt".to_string());
        let bytes = serialize(&[("x", Dtype::F32, &[1], &1f32.to_le_bytes())], Some(&m));
        let dir = tempfile::tempdir().unwrap();
        let f = SafetensorsFile::open(write(dir.path(), "m.safetensors", &bytes)).unwrap();
        assert_eq!(f.metadata().get("format").map(String::as_str), Some("pt"));
        assert_eq!(f.header_bytes_read(), 8 + (bytes.len() as u64 - 8 - 4));
    }
}
