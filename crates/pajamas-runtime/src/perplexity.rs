//! Perplexity the way `llama-perplexity` computes it.

use crate::error::{Result, RuntimeError};
use crate::hook::{LinearHook, NoHook};
use crate::model::Model;
use crate::ops;

/// The result of [`perplexity()`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    /// `exp(mean NLL)`.
    pub ppl: f64,
    /// Standard error of `ppl`, propagated from the standard error of the mean NLL:
    /// `ppl * sqrt(var(NLL) / (N - 1))`.
    pub stderr: f64,
    /// Mean negative log-likelihood (nats per token).
    pub mean_nll: f64,
    /// Number of scored predictions, `N`.
    pub n_scored: usize,
    /// Number of chunks evaluated.
    pub n_chunks: usize,
}

/// Perplexity of `tokens` with context `ctx`: the stream is cut into
/// `len / ctx` non-overlapping chunks (a trailing partial chunk is dropped), each chunk is
/// evaluated from position 0, and only the second half is scored: logits at positions
/// `ctx/2 .. ctx-2` predicting tokens `ctx/2 + 1 .. ctx-1`. Tokens are used as given (no
/// BOS is inserted).
pub fn perplexity(model: &Model, tokens: &[u32], ctx: usize) -> Result<Perplexity> {
    perplexity_with_hook(model, tokens, ctx, &mut NoHook)
}

/// [`perplexity()`], reporting every linear layer's input to `hook` (the head's input
/// only for the scored half of each chunk).
pub fn perplexity_with_hook(
    model: &Model,
    tokens: &[u32],
    ctx: usize,
    hook: &mut dyn LinearHook,
) -> Result<Perplexity> {
    if ctx < 4 {
        return Err(RuntimeError::Input(format!("context {ctx} is too small")));
    }
    let n_chunks = tokens.len() / ctx;
    if n_chunks == 0 {
        return Err(RuntimeError::Input(format!(
            "{} tokens do not fill one context of {ctx}",
            tokens.len()
        )));
    }
    let first = ctx / 2;
    let vocab = model.config.vocab_size;
    let (mut sum, mut sum2, mut count) = (0.0f64, 0.0f64, 0usize);
    for chunk in tokens.chunks_exact(ctx) {
        // Rows first .. ctx-1; the last row predicts past the chunk and is not scored.
        let logits = model.forward_rows(chunk, first, hook)?;
        for j in first..ctx - 1 {
            let row = &logits[(j - first) * vocab..(j - first + 1) * vocab];
            let nll = -ops::log_prob(row, chunk[j + 1] as usize);
            sum += nll;
            sum2 += nll * nll;
            count += 1;
        }
    }
    let mean = sum / count as f64;
    let var = (sum2 / count as f64 - mean * mean).max(0.0);
    let se_mean = if count > 1 {
        (var / (count - 1) as f64).sqrt()
    } else {
        0.0
    };
    let ppl = mean.exp();
    Ok(Perplexity {
        ppl,
        stderr: ppl * se_mean,
        mean_nll: mean,
        n_scored: count,
        n_chunks,
    })
}
