//! A report of any GGUF file: header facts, every metadata entry, every tensor, totals.
//!
//! [`report`] builds an [`InspectReport`], which serializes to JSON with full values (what
//! `--json` prints; see [`render_json`]); [`render_text`] renders it for people, shortening
//! long arrays and strings.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::reader::GgufFile;
use crate::value::{Array, Value};

/// Everything known about one GGUF file.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub path: String,
    pub file_size: u64,
    pub version: u32,
    pub alignment: u32,
    /// Byte offset of the data section in the file.
    pub data_offset: u64,
    pub architecture: Option<String>,
    /// In file order, with full values.
    pub metadata: Vec<MetadataReport>,
    /// In file order.
    pub tensors: Vec<TensorReport>,
    pub totals: Totals,
    /// Legal GGUF that some readers refuse (see [`GgufFile::warnings`]).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetadataReport {
    pub key: String,
    /// Value type name: `u8` `i8` `u16` `i16` `u32` `i32` `f32` `bool` `string` `array`
    /// `u64` `i64` `f64`.
    #[serde(rename = "type")]
    pub value_type: String,
    /// For arrays: the element type name (`array` for nested arrays).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub element_type: Option<String>,
    /// For arrays: the number of elements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// The value as plain JSON (nested arrays as nested lists; NaN and infinities as null).
    pub value: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct TensorReport {
    pub name: String,
    /// ggml type name (`Q4_K`, `F32`, ...).
    #[serde(rename = "type")]
    pub ggml_type: String,
    pub type_id: u32,
    /// Dimensions innermost first, as GGUF stores them (`ne[0]` is the row length).
    pub shape: Vec<u64>,
    pub elements: u64,
    pub bytes: u64,
    /// Offset relative to the data section, as stored in the file.
    pub offset: u64,
    /// Absolute offset in the file.
    pub file_offset: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub tensors: u64,
    pub elements: u64,
    pub bytes: u64,
    /// Over all tensors: bytes * 8 / elements.
    pub bits_per_weight: Option<f64>,
    pub quantized_tensors: u64,
    pub quantized_elements: u64,
    pub quantized_bytes: u64,
    /// Over quantized tensors only (the number llama.cpp's tables quote for a type).
    pub quantized_bits_per_weight: Option<f64>,
    /// One entry per tensor type present, by type id.
    pub by_type: Vec<TypeTotals>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TypeTotals {
    #[serde(rename = "type")]
    pub ggml_type: String,
    pub tensors: u64,
    pub elements: u64,
    pub bytes: u64,
}

fn bpw(bytes: u64, elements: u64) -> Option<f64> {
    (elements > 0).then(|| bytes as f64 * 8.0 / elements as f64)
}

/// Builds the report of an opened file (metadata values are cloned).
pub fn report(file: &GgufFile) -> InspectReport {
    let metadata = file
        .metadata()
        .iter()
        .map(|e| {
            let array = e.value.as_array();
            MetadataReport {
                key: e.key.clone(),
                value_type: e.value.value_type().name().to_string(),
                element_type: array.map(|a| a.element_type().name().to_string()),
                count: array.map(|a| a.len() as u64),
                value: e.value.clone(),
            }
        })
        .collect();
    let tensors = file
        .tensors()
        .iter()
        .map(|t| TensorReport {
            name: t.name.clone(),
            ggml_type: t.ggml_type.name().to_string(),
            type_id: t.ggml_type.id(),
            shape: t.dims.clone(),
            elements: t.n_elements,
            bytes: t.nbytes,
            offset: t.offset,
            file_offset: file.tensor_file_offset(t),
        })
        .collect();
    let mut by_type: BTreeMap<u32, TypeTotals> = BTreeMap::new();
    let (mut elements, mut bytes) = (0u64, 0u64);
    let (mut q_tensors, mut q_elements, mut q_bytes) = (0u64, 0u64, 0u64);
    for t in file.tensors() {
        // Sums of values each below 2^63, over at most 2^58 tensors: saturate to be safe.
        elements = elements.saturating_add(t.n_elements);
        bytes = bytes.saturating_add(t.nbytes);
        if t.ggml_type.is_quantized() {
            q_tensors += 1;
            q_elements = q_elements.saturating_add(t.n_elements);
            q_bytes = q_bytes.saturating_add(t.nbytes);
        }
        let e = by_type
            .entry(t.ggml_type.id())
            .or_insert_with(|| TypeTotals {
                ggml_type: t.ggml_type.name().to_string(),
                tensors: 0,
                elements: 0,
                bytes: 0,
            });
        e.tensors += 1;
        e.elements = e.elements.saturating_add(t.n_elements);
        e.bytes = e.bytes.saturating_add(t.nbytes);
    }
    InspectReport {
        path: file.path().display().to_string(),
        file_size: file.file_size(),
        version: file.version(),
        alignment: file.alignment(),
        data_offset: file.data_offset(),
        architecture: file.architecture().map(str::to_string),
        metadata,
        tensors,
        totals: Totals {
            tensors: file.tensors().len() as u64,
            elements,
            bytes,
            bits_per_weight: bpw(bytes, elements),
            quantized_tensors: q_tensors,
            quantized_elements: q_elements,
            quantized_bytes: q_bytes,
            quantized_bits_per_weight: bpw(q_bytes, q_elements),
            by_type: by_type.into_values().collect(),
        },
        warnings: file.warnings().to_vec(),
    }
}

/// Opens `path` and builds its report (for callers that have only a path).
pub fn report_path(path: impl AsRef<std::path::Path>) -> crate::Result<InspectReport> {
    Ok(report(&GgufFile::open(path)?))
}

/// The report as pretty-printed JSON, full values included.
pub fn render_json(report: &InspectReport) -> String {
    // Serializing plain structs of strings, numbers and vectors cannot fail.
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Strings longer than this are cut in the text rendering.
const MAX_SHOWN_CHARS: usize = 60;
/// Arrays longer than this show only their first [`SHOWN_ITEMS`] elements.
const MAX_FULL_ARRAY: usize = 8;
const SHOWN_ITEMS: usize = 3;

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.2} {}", UNITS[u])
    }
}

/// A string quoted and escaped, cut to [`MAX_SHOWN_CHARS`] characters.
fn show_str(s: &str) -> String {
    let count = s.chars().count();
    if count <= MAX_SHOWN_CHARS {
        return format!("{s:?}");
    }
    let cut: String = s.chars().take(MAX_SHOWN_CHARS).collect();
    format!("{cut:?}... ({} bytes)", s.len())
}

fn show_value(v: &Value) -> String {
    match v {
        Value::String(s) => show_str(s),
        Value::Array(a) => show_array(a),
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::F32(x) => x.to_string(),
        Value::Bool(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::F64(x) => x.to_string(),
    }
}

fn show_array(a: &Array) -> String {
    let n = a.len();
    let shown = if n <= MAX_FULL_ARRAY { n } else { SHOWN_ITEMS };
    let items: Vec<String> = (0..shown)
        .filter_map(|i| a.get(i))
        .map(|v| show_value(&v))
        .collect();
    let mut body = items.join(", ");
    if shown < n {
        body.push_str(", ...");
    }
    if n <= MAX_FULL_ARRAY {
        return format!("[{body}]");
    }
    let kind = match a {
        Array::String(_) => "strings".to_string(),
        Array::Array(_) => "arrays".to_string(),
        other => other.element_type().name().to_string(),
    };
    format!("[{n} {kind}: {body}]")
}

/// Renders the report for people: header facts, metadata (long arrays and strings cut),
/// tensors, totals.
pub fn render_text(report: &InspectReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}", report.path);
    let _ = writeln!(
        s,
        "GGUF v{}, {} ({} bytes), alignment {}, data section at byte {}",
        report.version,
        human_bytes(report.file_size),
        report.file_size,
        report.alignment,
        report.data_offset
    );
    if let Some(arch) = &report.architecture {
        let _ = writeln!(s, "architecture: {arch}");
    }

    let _ = writeln!(s, "\nmetadata ({} entries):", report.metadata.len());
    let key_w = report
        .metadata
        .iter()
        .map(|m| m.key.len())
        .max()
        .unwrap_or(0)
        .min(48);
    for m in &report.metadata {
        let ty = match &m.element_type {
            Some(e) => format!("{}[{}]", m.value_type, e),
            None => m.value_type.clone(),
        };
        let _ = writeln!(s, "  {:key_w$}  {:13}  {}", m.key, ty, show_value(&m.value));
    }

    let _ = writeln!(
        s,
        "\ntensors ({}; shape innermost first, offset relative to the data section):",
        report.tensors.len()
    );
    if !report.tensors.is_empty() {
        let name_w = report
            .tensors
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let shapes: Vec<String> = report
            .tensors
            .iter()
            .map(|t| format!("{:?}", t.shape))
            .collect();
        let shape_w = shapes.iter().map(String::len).max().unwrap_or(5).max(5);
        let _ = writeln!(
            s,
            "  {:name_w$}  {:8}  {:shape_w$}  {:>12}  {:>12}",
            "name", "type", "shape", "bytes", "offset"
        );
        for (t, shape) in report.tensors.iter().zip(&shapes) {
            let _ = writeln!(
                s,
                "  {:name_w$}  {:8}  {:shape_w$}  {:>12}  {:>12}",
                t.name, t.ggml_type, shape, t.bytes, t.offset
            );
        }
    }

    let t = &report.totals;
    let _ = writeln!(s, "\ntotals:");
    let bpw_text = |b: Option<f64>| {
        b.map(|b| format!(", {b:.3} bits per weight"))
            .unwrap_or_default()
    };
    let _ = writeln!(
        s,
        "  {} tensors, {} elements, {} ({} bytes){}",
        t.tensors,
        t.elements,
        human_bytes(t.bytes),
        t.bytes,
        bpw_text(t.bits_per_weight)
    );
    if t.quantized_tensors > 0 {
        let _ = writeln!(
            s,
            "  quantized: {} tensors, {} elements, {}{}",
            t.quantized_tensors,
            t.quantized_elements,
            human_bytes(t.quantized_bytes),
            bpw_text(t.quantized_bits_per_weight)
        );
    }
    for b in &t.by_type {
        let _ = writeln!(
            s,
            "  {:8} {:5} tensors  {:>14} elements  {:>12}",
            b.ggml_type,
            b.tensors,
            b.elements,
            human_bytes(b.bytes)
        );
    }
    if !report.warnings.is_empty() {
        let _ = writeln!(s, "\nwarnings:");
        for w in &report.warnings {
            let _ = writeln!(s, "  {w}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_arrays_are_cut() {
        let tokens: Vec<String> = [
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "a",
            "b",
            "c",
            "d",
            "e",
            "f",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            show_value(&Value::from(tokens)),
            r#"[9 strings: "<|endoftext|>", "<|im_start|>", "<|im_end|>", ...]"#
        );
        assert_eq!(show_value(&Value::from(vec![1i32, 2])), "[1, 2]");
        assert_eq!(
            show_value(&Value::from(vec![0u32; 10])),
            "[10 u32: 0, 0, 0, ...]"
        );
        let long = "x\n".repeat(100);
        let shown = show_value(&Value::from(long.as_str()));
        assert!(
            shown.starts_with("\"x\\nx\\n") && shown.ends_with("... (200 bytes)"),
            "{shown}"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
    }
}
