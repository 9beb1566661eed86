//! The GGUF imatrix format (llama-imatrix's default output).
//!
//! Metadata, in this order: `general.type = "imatrix"`, `imatrix.datasets` (string array),
//! `imatrix.chunk_count` (u32), `imatrix.chunk_size` (u32). Tensors, sorted by weight name,
//! two per weight: `<name>.in_sum2` F32 `[n_per_row, n_mat]` and `<name>.counts` F32
//! `[1, n_mat]`, with trailing dimensions of 1 dropped as ggml does (`[n_per_row]` and `[1]`
//! for a 2-D weight). Default alignment (32), data packed in tensor-info order.

use std::collections::BTreeMap;
use std::path::Path;

use pajamas_gguf::{GgmlType, GgufFile, GgufWriter, Value};

use crate::error::{ImatrixError, Result};
use crate::{
    Entry, Format, Imatrix, GENERAL_TYPE, KEY_CHUNK_COUNT, KEY_CHUNK_SIZE, KEY_DATASETS,
    SUFFIX_COUNTS, SUFFIX_IN_SUM2,
};

const KEY_GENERAL_TYPE: &str = "general.type";

pub(crate) fn read(path: &Path) -> Result<Imatrix> {
    let f = GgufFile::open(path).map_err(ImatrixError::ReadGguf)?;
    // ggml loads an imatrix by reading the whole data section, the padding after the last
    // tensor included; a file cut inside that padding fails there, so it fails here.
    let align = u64::from(f.alignment());
    let data_end = f
        .tensors()
        .iter()
        .filter_map(|t| pajamas_gguf::format::align_up(t.offset.checked_add(t.nbytes)?, align))
        .max()
        .unwrap_or(0);
    if f.data_offset().saturating_add(data_end) > f.file_size() {
        return Err(ImatrixError::Format {
            path: path.to_path_buf(),
            message: format!(
                "the file is {} bytes but its padded data section ends at byte {} (truncated \
                 file: regenerate it with llama-imatrix)",
                f.file_size(),
                f.data_offset().saturating_add(data_end)
            ),
        });
    }
    let key_error = |key: &str, message: String| ImatrixError::Key {
        path: path.to_path_buf(),
        key: key.to_string(),
        message,
    };

    // A GGUF that says it is something else (a model) is the wrong file, not a damaged one.
    if let Some(v) = f.get(KEY_GENERAL_TYPE) {
        match v.as_str() {
            Some(GENERAL_TYPE) => {}
            Some(other) => {
                return Err(key_error(
                    KEY_GENERAL_TYPE,
                    format!(
                        "is '{other}', not '{GENERAL_TYPE}': this GGUF is not an importance \
                         matrix (pass the file llama-imatrix wrote, not the model)"
                    ),
                ))
            }
            None => {
                return Err(key_error(
                    KEY_GENERAL_TYPE,
                    format!("must be a string but is a {}", v.value_type()),
                ))
            }
        }
    }

    // llama-quantize refuses a GGUF imatrix without all three keys.
    let missing = |key: &str| {
        key_error(
            key,
            "is missing; llama-quantize refuses a GGUF imatrix without imatrix.datasets, \
             imatrix.chunk_count and imatrix.chunk_size (regenerate it with a current llama-imatrix)"
                .into(),
        )
    };
    let datasets = match f.get(KEY_DATASETS) {
        None => return Err(missing(KEY_DATASETS)),
        Some(v) => v
            .as_array()
            .and_then(|a| a.as_strings())
            .map(<[String]>::to_vec)
            .ok_or_else(|| {
                key_error(
                    KEY_DATASETS,
                    format!("must be an array of strings but is a {}", v.value_type()),
                )
            })?,
    };
    let get_u32 = |key: &str| -> Result<u32> {
        match f.get(key) {
            None => Err(missing(key)),
            Some(Value::U32(v)) => Ok(*v),
            // ggml's gguf_get_val_u32 aborts on any other type.
            Some(v) => Err(key_error(
                key,
                format!("must be a u32 but is a {}", v.value_type()),
            )),
        }
    };
    let chunk_count = get_u32(KEY_CHUNK_COUNT)?;
    let chunk_size = get_u32(KEY_CHUNK_SIZE)?;

    let entry_error = |entry: &str, message: String| ImatrixError::Entry {
        path: path.to_path_buf(),
        entry: entry.to_string(),
        message,
    };

    // weight name -> (in_sum2, counts)
    let mut pairs: BTreeMap<&str, (Option<_>, Option<_>)> = BTreeMap::new();
    for t in f.tensors() {
        let (name, is_sums) = if let Some(n) = t.name.strip_suffix(SUFFIX_IN_SUM2) {
            (n, true)
        } else if let Some(n) = t.name.strip_suffix(SUFFIX_COUNTS) {
            (n, false)
        } else {
            return Err(ImatrixError::Format {
                path: path.to_path_buf(),
                message: format!(
                    "tensor '{}' is neither '<weight>{SUFFIX_IN_SUM2}' nor \
                     '<weight>{SUFFIX_COUNTS}': this GGUF is not an importance matrix",
                    t.name
                ),
            });
        };
        if name.is_empty() {
            return Err(entry_error(
                &t.name,
                "tensor name has a suffix but no weight name".into(),
            ));
        }
        let slot = pairs.entry(name).or_default();
        if is_sums {
            slot.0 = Some(t);
        } else {
            slot.1 = Some(t);
        }
    }
    if pairs.is_empty() {
        return Err(ImatrixError::Format {
            path: path.to_path_buf(),
            message: "the GGUF imatrix has no entries (no tensors); llama-quantize refuses it"
                .into(),
        });
    }

    let mut entries = BTreeMap::new();
    for (name, pair) in pairs {
        let bad = |message: String| entry_error(name, message);
        let (sums, counts) = match pair {
            (Some(s), Some(c)) => (s, c),
            (Some(_), None) => {
                return Err(bad(format!(
                    "has '{name}{SUFFIX_IN_SUM2}' but no '{name}{SUFFIX_COUNTS}' tensor \
                     (llama.cpp: mismatched sums and counts); the file is incomplete"
                )))
            }
            (None, _) => {
                return Err(bad(format!(
                    "has '{name}{SUFFIX_COUNTS}' but no '{name}{SUFFIX_IN_SUM2}' tensor \
                     (llama.cpp: mismatched sums and counts); the file is incomplete"
                )))
            }
        };
        for t in [sums, counts] {
            if t.ggml_type != GgmlType::F32 {
                return Err(bad(format!(
                    "tensor '{}' is {:?}; imatrix sums and counts must be F32",
                    t.name, t.ggml_type
                )));
            }
        }
        let n_per_row = sums.dims[0] as usize;
        let n_mat: u64 = sums.dims[1..].iter().product();
        let counts_ok = counts.dims[0] == 1 && counts.dims[1..].iter().product::<u64>() == n_mat;
        if !counts_ok {
            return Err(bad(format!(
                "'{}' has dims {:?} (innermost first), so '{}' should be [1, {n_mat}], \
                 but it is {:?}: one count per matrix; the file is corrupt",
                sums.name, sums.dims, counts.name, counts.dims
            )));
        }
        let entry = Entry {
            in_sum2: decode_f32(f.data_of(sums).map_err(ImatrixError::ReadGguf)?),
            counts: decode_f32(f.data_of(counts).map_err(ImatrixError::ReadGguf)?),
            n_per_row,
        };
        entry.validate().map_err(bad)?;
        entries.insert(name.to_string(), entry);
    }

    Ok(Imatrix {
        entries,
        datasets,
        chunk_count,
        chunk_size,
        format: Format::Gguf,
        path: Some(path.to_path_buf()),
    })
}

fn decode_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn encode_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// ggml writes the dimensions up to the last one greater than 1 (`ggml_n_dims`).
fn ggml_dims(ne0: u64, ne1: u64) -> Vec<u64> {
    if ne1 > 1 {
        vec![ne0, ne1]
    } else {
        vec![ne0]
    }
}

pub(crate) fn write(im: &Imatrix, path: &Path) -> Result<()> {
    let mut w = GgufWriter::create(path).map_err(ImatrixError::WriteGguf)?;
    let datasets: Vec<&str> = im.datasets.iter().map(String::as_str).collect();
    w.add_metadata(KEY_GENERAL_TYPE, GENERAL_TYPE)
        .and_then(|_| w.add_metadata(KEY_DATASETS, datasets))
        .and_then(|_| w.add_metadata(KEY_CHUNK_COUNT, Value::U32(im.chunk_count)))
        .and_then(|_| w.add_metadata(KEY_CHUNK_SIZE, Value::U32(im.chunk_size)))
        .map_err(ImatrixError::WriteGguf)?;
    // BTreeMap order is byte order, as std::sort over std::string in llama-imatrix.
    for (name, e) in &im.entries {
        let n_mat = e.counts.len() as u64;
        let sums = ggml_dims(e.n_per_row as u64, n_mat);
        let counts = ggml_dims(1, n_mat);
        w.add_tensor_info(&format!("{name}{SUFFIX_IN_SUM2}"), &sums, GgmlType::F32)
            .and_then(|_| {
                w.add_tensor_info(&format!("{name}{SUFFIX_COUNTS}"), &counts, GgmlType::F32)
            })
            .map_err(ImatrixError::WriteGguf)?;
    }
    w.begin_data().map_err(ImatrixError::WriteGguf)?;
    for (name, e) in &im.entries {
        w.write_tensor(&format!("{name}{SUFFIX_IN_SUM2}"), &encode_f32(&e.in_sum2))
            .and_then(|_| w.write_tensor(&format!("{name}{SUFFIX_COUNTS}"), &encode_f32(&e.counts)))
            .map_err(ImatrixError::WriteGguf)?;
    }
    w.finish().map_err(ImatrixError::WriteGguf)?;
    Ok(())
}
