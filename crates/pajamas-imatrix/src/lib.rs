//! llama.cpp importance matrices ("imatrix"): per weight matrix, the sum over calibration
//! tokens of the squared input activation of every column. Quantizers weight each column's
//! rounding error by it, so the columns that see large inputs are reproduced best.
//!
//! This crate reads both file formats llama-imatrix writes (GGUF, the default since 2025,
//! and the legacy `.dat`), writes the GGUF format byte for byte as llama-imatrix does,
//! derives the per-column importance exactly as llama-quantize does, checks an imatrix
//! against a model's tensors, and accumulates new ones from a forward pass ([`Collector`]).
//!
//! # What llama-imatrix collects
//!
//! For every matrix product whose weight is named `blk.*` (and `output.weight` only with
//! `--process-output`), per weight: `in_sum2[j][i] = sum over tokens of x[i]^2` for input
//! column `i` (`n_per_row` = the weight's `ne[0]`) of matrix `j` (`n_mat` = `ne[2]`, the
//! experts of a 3-D MoE weight, each counting the tokens routed to it; 1 otherwise), and
//! `counts[j]` = the tokens summed. `token_embd.weight` is a lookup and is never collected,
//! so neither is a tied output head. Sums are accumulated in f32 by llama-imatrix.
//!
//! # GGUF format (default)
//!
//! Metadata in this order: `general.type = "imatrix"`, `imatrix.datasets` (string array),
//! `imatrix.chunk_count` (u32, chunks processed), `imatrix.chunk_size` (u32, tokens per
//! chunk). Tensors sorted by weight name, two per weight: `<name>.in_sum2` F32
//! `[n_per_row, n_mat]` and `<name>.counts` F32 `[1, n_mat]` (trailing 1s dropped, so
//! `[n_per_row]` and `[1]` for a 2-D weight). Raw sums and counts, default alignment 32.
//! llama-quantize refuses the file unless all three `imatrix.*` keys are present.
//!
//! # Legacy `.dat` format (`--output-format dat`)
//!
//! Little-endian, no magic: `i32 n_entries`; per entry (sorted) `i32 len, name, i32 ncall,
//! i32 nval, nval x f32`; then `i32 chunk_count, i32 len, dataset name`. The values are
//! `sum / count[j] * ncall` with `ncall = ceil(max_j count[j] / chunk_size)` (`ncall` for
//! a matrix without data, i.e. importance 1), so per-token means scaled by the call count;
//! entries with no data at all are left out.
//!
//! # Importance (llama-quantize's `load_imatrix`)
//!
//! GGUF: `in_sum2[j][i] / float(lround(counts[j]))`, or 1 for a matrix whose count is 0.
//! `.dat`: `value / ncall`. Both are the mean squared activation, in f32; we store the
//! `.dat` call count as the count, so one formula ([`Imatrix::importance`]) serves both.
//! llama-quantize then requires `len == ne[0] * ne[2]` for every tensor it finds an entry
//! for (aborting otherwise, except for `token_embd`) and refuses non-finite values.
//!
//! ```no_run
//! use pajamas_imatrix::Imatrix;
//! # fn main() -> pajamas_imatrix::Result<()> {
//! let im = Imatrix::read("imatrix.dat")?; // either format
//! im.check_against([("blk.0.attn_q.weight", 576)])?;
//! let w = im.importance("blk.0.attn_q.weight"); // Some(576 weights)
//! im.write_gguf("imatrix.gguf")?;
//! # let _ = w; Ok(()) }
//! ```

mod collector;
pub mod error;
mod gguf;
mod legacy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use collector::Collector;
pub use error::{ImatrixError, Result};

/// `general.type` of a GGUF imatrix.
pub const GENERAL_TYPE: &str = "imatrix";
/// String array: the calibration files the sums were computed on.
pub const KEY_DATASETS: &str = "imatrix.datasets";
/// u32: number of chunks (calibration sequences) processed.
pub const KEY_CHUNK_COUNT: &str = "imatrix.chunk_count";
/// u32: tokens per chunk (llama-imatrix's context size).
pub const KEY_CHUNK_SIZE: &str = "imatrix.chunk_size";
/// Suffix of the tensor holding an entry's sums of squared activations.
pub const SUFFIX_IN_SUM2: &str = ".in_sum2";
/// Suffix of the tensor holding an entry's token counts.
pub const SUFFIX_COUNTS: &str = ".counts";

/// Label used in errors for an imatrix that was not read from a file.
const IN_MEMORY: &str = "<in-memory imatrix>";

/// Which file format an [`Imatrix`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// GGUF with `<weight>.in_sum2` / `<weight>.counts` tensors (raw sums and token counts).
    Gguf,
    /// The legacy `.dat` layout (per-call averages scaled by the call count; see the crate
    /// documentation). What llama-imatrix writes with `--output-format dat`.
    LegacyDat,
}

/// The data of one weight matrix (or one stack of expert matrices).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// `n_mat * n_per_row` sums of squared activations, matrix-major: column `i` of matrix
    /// `j` is at `j * n_per_row + i`.
    pub in_sum2: Vec<f32>,
    /// One count per matrix: the number of tokens summed (GGUF), or the legacy call count
    /// by which the `.dat` values were scaled. Stored as f32 as in the GGUF file.
    pub counts: Vec<f32>,
    /// Row length of the weight (its input features, GGUF `ne[0]`).
    pub n_per_row: usize,
}

impl Entry {
    /// An entry for a 2-D weight (one matrix).
    pub fn new(in_sum2: Vec<f32>, count: f32) -> Entry {
        let n_per_row = in_sum2.len();
        Entry {
            in_sum2,
            counts: vec![count],
            n_per_row,
        }
    }

    /// Number of matrices (experts) the entry covers; 1 for a 2-D weight.
    pub fn n_mat(&self) -> usize {
        self.counts.len()
    }

    /// Checks the invariants a file must satisfy (shape, finite non-negative values).
    /// Returns a message for the caller to wrap with the file and entry name.
    fn validate(&self) -> std::result::Result<(), String> {
        if self.n_per_row == 0 {
            return Err("n_per_row is 0; an entry covers at least one column".into());
        }
        if self.counts.is_empty() {
            return Err("has no counts; every matrix needs one".into());
        }
        if self.in_sum2.len() != self.n_per_row * self.counts.len() {
            return Err(format!(
                "has {} sums but {} matrices x {} columns need {}",
                self.in_sum2.len(),
                self.counts.len(),
                self.n_per_row,
                self.n_per_row * self.counts.len()
            ));
        }
        if let Some((i, v)) = first_bad(&self.in_sum2) {
            let (mat, col) = (i / self.n_per_row, i % self.n_per_row);
            return Err(format!(
                "sum of squared activations #{i} (matrix {mat}, column {col}) is {v}; sums of \
                 squares are finite and non-negative, so the data is corrupt (recompute the imatrix)"
            ));
        }
        if let Some((j, v)) = first_bad(&self.counts) {
            return Err(format!(
                "count #{j} is {v}; counts are finite and non-negative, so the data is corrupt \
                 (recompute the imatrix)"
            ));
        }
        Ok(())
    }
}

/// The first value that is NaN, infinite or negative.
fn first_bad(values: &[f32]) -> Option<(usize, f32)> {
    values
        .iter()
        .copied()
        .enumerate()
        .find(|&(_, v)| !v.is_finite() || v < 0.0)
}

/// An importance matrix: entries keyed by GGUF weight name (`blk.0.attn_q.weight`).
#[derive(Debug, Clone, PartialEq)]
pub struct Imatrix {
    /// Sorted by name, which is also the order llama-imatrix stores them in.
    pub entries: BTreeMap<String, Entry>,
    /// Calibration files (`imatrix.datasets`; the `.dat` trailer holds at most one).
    pub datasets: Vec<String>,
    /// Chunks processed (`imatrix.chunk_count`, or the `.dat` trailer's call count).
    pub chunk_count: u32,
    /// Tokens per chunk (`imatrix.chunk_size`; 0 for `.dat`, which does not record it).
    pub chunk_size: u32,
    /// The format it was read from ([`Format::Gguf`] for one built in memory).
    pub format: Format,
    /// The file it was read from, named in error messages.
    pub path: Option<PathBuf>,
}

/// A model tensor to check an imatrix against: its GGUF name, row length (`ne[0]`) and
/// number of matrices (`ne[2]`, the experts of a 3-D MoE weight; 1 for a 2-D weight).
/// Built from `(name, n_per_row)` or `(name, n_per_row, n_mat)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorShape<'a> {
    pub name: &'a str,
    pub n_per_row: usize,
    pub n_mat: usize,
}

impl<'a> From<(&'a str, usize)> for TensorShape<'a> {
    fn from((name, n_per_row): (&'a str, usize)) -> Self {
        TensorShape {
            name,
            n_per_row,
            n_mat: 1,
        }
    }
}

impl<'a> From<(&'a str, usize, usize)> for TensorShape<'a> {
    fn from((name, n_per_row, n_mat): (&'a str, usize, usize)) -> Self {
        TensorShape {
            name,
            n_per_row,
            n_mat,
        }
    }
}

/// What [`Imatrix::check_against`] found besides errors. Neither list is an error:
/// llama-imatrix never collects `token_embd.weight` (a lookup, not a product) nor, without
/// `--process-output`, `output.weight`; llama-quantize quantizes those without importance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Tensors that have an entry (checked).
    pub matched: usize,
    /// Tensors without an entry, in the order given.
    pub missing: Vec<String>,
    /// Entries that name no given tensor (llama-quantize ignores them), sorted.
    pub unused: Vec<String>,
}

impl Imatrix {
    /// An empty imatrix (no entries), e.g. to fill in by hand.
    pub fn new(datasets: Vec<String>, chunk_count: u32, chunk_size: u32) -> Imatrix {
        Imatrix {
            entries: BTreeMap::new(),
            datasets,
            chunk_count,
            chunk_size,
            format: Format::Gguf,
            path: None,
        }
    }

    /// Reads an imatrix in either format: a file starting with the GGUF magic is read as
    /// GGUF, anything else as the legacy `.dat` layout (which has no magic). Every value is
    /// validated; errors name the file and the entry or key at fault.
    pub fn read(path: impl AsRef<Path>) -> Result<Imatrix> {
        let path = path.as_ref();
        let mut magic = [0u8; 4];
        let n = {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| ImatrixError::Io {
                path: path.to_path_buf(),
                source: e,
            })?;
            let mut n = 0;
            while n < 4 {
                match f.read(&mut magic[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(ImatrixError::Io {
                            path: path.to_path_buf(),
                            source: e,
                        })
                    }
                }
            }
            n
        };
        if n == 4 && magic == pajamas_gguf::format::MAGIC {
            gguf::read(path)
        } else {
            legacy::read(path)
        }
    }

    /// Writes the GGUF format exactly as llama-imatrix does (same keys, order, shapes and
    /// alignment, so the bytes are identical for the same content), atomically: the data
    /// goes to `<path>.partial`, renamed once complete. Validates every entry first.
    pub fn write_gguf(&self, path: impl AsRef<Path>) -> Result<()> {
        self.validate()?;
        gguf::write(self, path.as_ref())
    }

    /// The per-column importance llama-quantize passes to the quantizer for weight `name`:
    /// for each matrix `j`, `in_sum2[j] / count[j]` (the mean squared activation) computed
    /// in f32, or all ones when the count is 0 (an expert no token was routed to). The
    /// count is first rounded to an integer as llama.cpp's loader does. For a legacy `.dat`
    /// the stored values are divided by the stored call count, which is the same formula.
    /// `None` if there is no such entry.
    pub fn importance(&self, name: &str) -> Option<Vec<f32>> {
        let e = self.entries.get(name)?;
        let n_mat = e.counts.len();
        if n_mat == 0 {
            return None;
        }
        let ne0 = e.in_sum2.len() / n_mat;
        let mut out = vec![0f32; e.in_sum2.len()];
        for (j, &count) in e.counts.iter().enumerate() {
            // llama.cpp: std::lround(float) into an int64, then back to float to divide.
            let count = count.round() as i64 as f32;
            let (src, dst) = (
                &e.in_sum2[j * ne0..(j + 1) * ne0],
                &mut out[j * ne0..(j + 1) * ne0],
            );
            if count > 0.0 {
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = s / count;
                }
            } else {
                dst.fill(1.0);
            }
        }
        Some(out)
    }

    /// Checks the imatrix against a model's tensors: each entry's length must equal the
    /// tensor's `n_per_row * n_mat` (llama-quantize aborts otherwise), per-matrix counts
    /// must match the number of matrices, and every value must be finite and non-negative.
    /// Errors name the tensor and the file.
    pub fn check_against<'a, T: Into<TensorShape<'a>>>(
        &self,
        tensors: impl IntoIterator<Item = T>,
    ) -> Result<CheckReport> {
        self.validate()?;
        let mut report = CheckReport::default();
        let mut seen = std::collections::BTreeSet::new();
        for t in tensors {
            let t: TensorShape = t.into();
            let Some(e) = self.entries.get(t.name) else {
                report.missing.push(t.name.to_string());
                continue;
            };
            seen.insert(t.name);
            report.matched += 1;
            let want = t.n_per_row * t.n_mat;
            let bad = |message: String| self.entry_error(t.name, message);
            if e.in_sum2.len() != want {
                return Err(bad(format!(
                    "has {} values but the model's tensor has {} x {} = {want} columns \
                     (n_per_row x matrices): this imatrix was computed for a different model; \
                     compute one for this model",
                    e.in_sum2.len(),
                    t.n_per_row,
                    t.n_mat
                )));
            }
            if e.counts.len() > 1 && (e.counts.len() != t.n_mat || e.n_per_row != t.n_per_row) {
                return Err(bad(format!(
                    "covers {} matrices of {} columns but the model's tensor has {} of {}: \
                     this imatrix was computed for a different model; compute one for this model",
                    e.counts.len(),
                    e.n_per_row,
                    t.n_mat,
                    t.n_per_row
                )));
            }
        }
        report.unused = self
            .entries
            .keys()
            .filter(|k| !seen.contains(k.as_str()))
            .cloned()
            .collect();
        Ok(report)
    }

    /// Converts legacy `.dat` content to raw token sums as llama-imatrix does when it loads
    /// a `.dat` to merge it (`--in-file`): values and counts times `chunk_size` (its
    /// context length), which the `.dat` does not record. Without this, a `.dat` written
    /// as GGUF keeps its call counts as counts: llama-quantize derives the same importance
    /// from it, but merging it with token-count imatrices would weight it wrongly. The
    /// importance is unchanged (bit for bit when `chunk_size` is a power of two). Does
    /// nothing to an imatrix that is not [`Format::LegacyDat`].
    pub fn legacy_to_token_counts(&mut self, chunk_size: u32) {
        if self.format != Format::LegacyDat {
            return;
        }
        let s = chunk_size as f32;
        for e in self.entries.values_mut() {
            e.in_sum2.iter_mut().for_each(|v| *v *= s);
            // llama.cpp multiplies the integer call count: exact for any realistic size.
            e.counts
                .iter_mut()
                .for_each(|c| *c = (f64::from(*c) * f64::from(chunk_size)) as f32);
        }
        self.chunk_size = chunk_size;
        self.format = Format::Gguf;
    }

    /// Validates every entry and the metadata (what [`Imatrix::read`] guarantees, for an
    /// imatrix built or modified in memory).
    pub fn validate(&self) -> Result<()> {
        if self.entries.is_empty() {
            return Err(ImatrixError::Format {
                path: self.display_path(),
                message: "the imatrix has no entries (llama-quantize refuses an empty one)".into(),
            });
        }
        for (name, e) in &self.entries {
            if name.is_empty() {
                return Err(self.entry_error(name, "the weight name is empty".into()));
            }
            e.validate().map_err(|m| self.entry_error(name, m))?;
        }
        Ok(())
    }

    /// The file for messages, or a label saying the imatrix is in memory.
    fn display_path(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| PathBuf::from(IN_MEMORY))
    }

    fn entry_error(&self, entry: &str, message: String) -> ImatrixError {
        ImatrixError::Entry {
            path: self.display_path(),
            entry: entry.to_string(),
            message,
        }
    }
}

#[cfg(test)]
mod tests;
