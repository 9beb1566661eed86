//! Accumulating an imatrix from a forward pass.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{ImatrixError, Result};
use crate::{Entry, Format, Imatrix};

/// Label for errors raised while collecting.
const COLLECTOR: &str = "<imatrix collector>";

#[derive(Debug, Clone)]
struct Accumulator {
    /// Sum over tokens of the squared activation, per input column, matrix-major (one
    /// block of `in_features` per expert of a stacked expert weight).
    sums: Vec<f64>,
    /// Tokens summed, per matrix.
    tokens: Vec<u64>,
    in_features: usize,
}

/// Accumulates the squared inputs of the linear layers during forward passes over
/// calibration text; the runtime calls [`Collector::add`] once per linear layer per batch
/// and [`Collector::finish_chunk`] after each calibration sequence.
///
/// What it records mirrors llama-imatrix: per weight, `sum over tokens of x[i]^2` for every
/// input column `i` and the number of tokens. By default only weights named `blk.*` are
/// kept, as llama-imatrix does; `output.weight` (the output head) only with
/// [`Collector::process_output`], like its `--process-output`. The token embedding is a
/// lookup, not a product, and never has an entry.
///
/// Differences from llama-imatrix, deliberately: sums are accumulated in f64 (llama-imatrix
/// adds into f32), so long runs lose no precision and the result does not depend on how the
/// tokens were batched beyond f64 rounding; they are stored as f32 as the file format
/// requires. llama-imatrix also ignores batches of fewer than 16 tokens (a quirk of its
/// graph callback); this collector records every batch it is given.
#[derive(Debug, Clone)]
pub struct Collector {
    chunk_size: usize,
    process_output: bool,
    stats: BTreeMap<String, Accumulator>,
    chunks: u32,
}

impl Collector {
    /// `chunk_size`: tokens per calibration chunk (the context length), recorded in the
    /// file as `imatrix.chunk_size`.
    pub fn new(chunk_size: usize) -> Collector {
        Collector {
            chunk_size,
            process_output: false,
            stats: BTreeMap::new(),
            chunks: 0,
        }
    }

    /// Also collect `output.weight` (llama-imatrix's `--process-output`).
    pub fn process_output(mut self, yes: bool) -> Collector {
        self.process_output = yes;
        self
    }

    /// Whether [`Collector::add`] records data for this weight: `blk.*` weights, and
    /// `output.weight` when [`Collector::process_output`] is set. Lets the runtime skip
    /// copying activations nobody keeps.
    pub fn wants(&self, gguf_name: &str) -> bool {
        gguf_name.starts_with("blk.") || (self.process_output && gguf_name == "output.weight")
    }

    /// Adds one batch of inputs to the linear layer whose weight is `gguf_name`:
    /// `activations` is row-major `[n_tokens x in_features]`. Returns `Ok(false)` when the
    /// weight is not collected (see [`Collector::wants`]). Errors on a size mismatch, a row
    /// length that differs from earlier batches, or a non-finite activation (llama-imatrix
    /// aborts on those too: they mean the forward pass itself is broken).
    pub fn add(
        &mut self,
        gguf_name: &str,
        activations: &[f32],
        n_tokens: usize,
        in_features: usize,
    ) -> Result<bool> {
        self.add_matrix(gguf_name, 0, 1, activations, n_tokens, in_features)
    }

    /// [`Collector::add`] for expert `expert` of a stacked expert weight
    /// (`blk.N.ffn_*_exps.weight`, `n_experts` matrices): `activations` are the inputs of
    /// the tokens routed to that expert. As llama-imatrix, each expert keeps its own sums
    /// and token count, so an expert that saw no token is known as such.
    pub fn add_expert(
        &mut self,
        gguf_name: &str,
        expert: usize,
        n_experts: usize,
        activations: &[f32],
        n_tokens: usize,
        in_features: usize,
    ) -> Result<bool> {
        self.add_matrix(
            gguf_name,
            expert,
            n_experts,
            activations,
            n_tokens,
            in_features,
        )
    }

    fn add_matrix(
        &mut self,
        gguf_name: &str,
        matrix: usize,
        n_mat: usize,
        activations: &[f32],
        n_tokens: usize,
        in_features: usize,
    ) -> Result<bool> {
        if !self.wants(gguf_name) {
            return Ok(false);
        }
        let bad = |message: String| ImatrixError::Entry {
            path: PathBuf::from(COLLECTOR),
            entry: gguf_name.to_string(),
            message,
        };
        if in_features == 0 || n_tokens.checked_mul(in_features) != Some(activations.len()) {
            return Err(bad(format!(
                "got {} activations for {n_tokens} tokens x {in_features} input features",
                activations.len()
            )));
        }
        if let Some(i) = activations.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "non-finite input activation {} (token {} of the batch, column {}): the \
                 forward pass diverged",
                activations[i],
                i / in_features,
                i % in_features
            )));
        }
        if matrix >= n_mat {
            return Err(bad(format!("expert {matrix} of {n_mat}")));
        }
        let acc = self
            .stats
            .entry(gguf_name.to_string())
            .or_insert_with(|| Accumulator {
                sums: vec![0.0; in_features * n_mat],
                tokens: vec![0; n_mat],
                in_features,
            });
        if acc.in_features != in_features || acc.tokens.len() != n_mat {
            return Err(bad(format!(
                "earlier batches had {} input features (x {} matrices), this one {in_features} (x {n_mat})",
                acc.in_features,
                acc.tokens.len(),
            )));
        }
        let sums = &mut acc.sums[matrix * in_features..(matrix + 1) * in_features];
        for row in activations.chunks_exact(in_features) {
            for (s, &x) in sums.iter_mut().zip(row) {
                let x = f64::from(x);
                *s += x * x;
            }
        }
        acc.tokens[matrix] += n_tokens as u64;
        Ok(true)
    }

    /// Marks the end of one calibration chunk (counted in `imatrix.chunk_count`).
    pub fn finish_chunk(&mut self) {
        self.chunks = self.chunks.saturating_add(1);
    }

    /// Chunks finished so far.
    pub fn chunks(&self) -> u32 {
        self.chunks
    }

    /// The imatrix collected so far. `datasets` names the calibration files.
    pub fn into_imatrix(self, datasets: Vec<String>) -> Imatrix {
        let entries = self
            .stats
            .into_iter()
            .map(|(name, acc)| {
                let in_sum2 = acc.sums.iter().map(|&s| s as f32).collect();
                let entry = Entry {
                    in_sum2,
                    counts: acc.tokens.iter().map(|&t| t as f32).collect(),
                    n_per_row: acc.in_features,
                };
                (name, entry)
            })
            .collect();
        Imatrix {
            entries,
            datasets,
            chunk_count: self.chunks,
            chunk_size: u32::try_from(self.chunk_size).unwrap_or(u32::MAX),
            format: Format::Gguf,
            path: None,
        }
    }
}
