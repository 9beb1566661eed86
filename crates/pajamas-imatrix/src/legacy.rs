//! The legacy `.dat` imatrix format (`llama-imatrix --output-format dat`), little-endian,
//! no magic:
//!
//! ```text
//! i32 n_entries
//! n_entries x { i32 name_len, name bytes, i32 ncall, i32 nval, nval x f32 value }
//! optional trailer: i32 chunk_count, i32 dataset_len, dataset bytes
//! ```
//!
//! `value = sum / count * ncall` per column (per expert `count` for MoE weights), with
//! `ncall = ceil(max(count) / chunk_size)`, so llama-quantize's `value / ncall` is the mean
//! squared activation. We keep the values and `ncall` as they are (`counts = [ncall]`).
//!
//! llama.cpp's own loader is lenient (it ignores a damaged trailer); this reader is strict:
//! a file that is not exactly this layout is an error naming the entry and the byte offset.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{ImatrixError, Result};
use crate::{Entry, Format, Imatrix};

/// Longest weight name accepted (ggml names hold 63 bytes; legacy files came from ggml).
const MAX_NAME_BYTES: usize = 1024;

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.remaining() < n {
            return None;
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Some(s)
    }

    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

pub(crate) fn read(path: &Path) -> Result<Imatrix> {
    let bytes = std::fs::read(path).map_err(|e| ImatrixError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    parse(path, &bytes)
}

pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Imatrix> {
    let not_imatrix = |message: String| ImatrixError::Format {
        path: path.to_path_buf(),
        message: format!(
            "not an importance matrix: no GGUF magic, and not the legacy .dat layout either: \
             {message} (pass a file written by llama-imatrix; if it is one, it is damaged: \
             regenerate it)"
        ),
    };
    let mut c = Cursor { bytes, pos: 0 };
    let n_entries = c.i32().ok_or_else(|| {
        not_imatrix(format!(
            "the file is {} bytes long, too short for the entry count",
            bytes.len()
        ))
    })?;
    // The smallest entry: name length, a 1-byte name, ncall, nval, one value.
    const MIN_ENTRY: usize = 4 + 1 + 4 + 4 + 4;
    if n_entries < 1 || n_entries as usize > c.remaining() / MIN_ENTRY {
        return Err(not_imatrix(format!(
            "the first 4 bytes give {n_entries} entries, which the {}-byte file cannot hold",
            bytes.len()
        )));
    }

    let mut entries = BTreeMap::new();
    for i in 0..n_entries as usize {
        let at = c.pos;
        let truncated = |what: &str, name: &str| {
            let where_ = if name.is_empty() {
                format!("entry #{} (at byte {at})", i + 1)
            } else {
                format!("entry #{} '{name}' (at byte {at})", i + 1)
            };
            ImatrixError::Format {
                path: path.to_path_buf(),
                message: format!(
                    "legacy .dat imatrix: {where_}: the {}-byte file ends inside {what} \
                     (truncated or not an imatrix; regenerate it with llama-imatrix)",
                    bytes.len()
                ),
            }
        };
        let len = c.i32().ok_or_else(|| truncated("the name length", ""))?;
        if len < 1 || len as usize > MAX_NAME_BYTES {
            return Err(not_imatrix(format!(
                "entry #{} (at byte {at}) has a name length of {len} bytes",
                i + 1
            )));
        }
        let raw = c
            .take(len as usize)
            .ok_or_else(|| truncated("the name", ""))?;
        let name = std::str::from_utf8(raw)
            .map_err(|_| {
                not_imatrix(format!(
                    "entry #{} (at byte {at}) has a name that is not UTF-8",
                    i + 1
                ))
            })?
            .to_string();
        let bad = |message: String| ImatrixError::Entry {
            path: path.to_path_buf(),
            entry: name.clone(),
            message: format!("legacy .dat imatrix, entry #{}: {message}", i + 1),
        };
        let ncall = c.i32().ok_or_else(|| truncated("the call count", &name))?;
        let nval = c.i32().ok_or_else(|| truncated("the value count", &name))?;
        if ncall < 1 {
            // llama-imatrix writes ceil(tokens / chunk_size) >= 1 for every stored entry.
            return Err(bad(format!(
                "call count is {ncall}; llama-imatrix never stores less than 1, so the file is corrupt"
            )));
        }
        if nval < 1 {
            return Err(bad(format!(
                "has {nval} values; an entry has one per input column"
            )));
        }
        let raw = c
            .take(nval as usize * 4)
            .ok_or_else(|| truncated(&format!("the {nval} values"), &name))?;
        let entry = Entry {
            in_sum2: raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            counts: vec![ncall as f32],
            n_per_row: nval as usize,
        };
        entry.validate().map_err(bad)?;
        if entries.insert(name.clone(), entry).is_some() {
            return Err(bad(
                "appears twice; every weight has one entry, so the file is corrupt".into(),
            ));
        }
    }

    // Trailer: chunk count and dataset name. llama-imatrix always writes both; older files
    // may end after the entries or after the chunk count.
    let mut chunk_count = 0u32;
    let mut datasets = Vec::new();
    let trailer_at = c.pos;
    let trailer_error = |message: String| ImatrixError::Format {
        path: path.to_path_buf(),
        message: format!(
            "legacy .dat imatrix: the trailer after the last entry (at byte {trailer_at}) \
             {message} (the file is damaged: regenerate it with llama-imatrix)"
        ),
    };
    if c.remaining() > 0 {
        let n = c.i32().ok_or_else(|| {
            trailer_error(format!(
                "has {} bytes, too few for the chunk count",
                c.remaining()
            ))
        })?;
        chunk_count = u32::try_from(n)
            .map_err(|_| trailer_error(format!("gives a negative chunk count ({n})")))?;
        if c.remaining() > 0 {
            let len = c
                .i32()
                .ok_or_else(|| trailer_error("ends inside the dataset name length".to_string()))?;
            if len < 0 || len as usize != c.remaining() {
                return Err(trailer_error(format!(
                    "gives a dataset name of {len} bytes but {} bytes follow",
                    c.remaining()
                )));
            }
            let raw = c.take(len as usize).unwrap_or_default();
            if !raw.is_empty() {
                // A path; llama.cpp stops at a NUL byte.
                let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
                datasets.push(String::from_utf8_lossy(raw).into_owned());
            }
        }
    }

    Ok(Imatrix {
        entries,
        datasets,
        chunk_count,
        chunk_size: 0,
        format: Format::LegacyDat,
        path: Some(path.to_path_buf()),
    })
}
