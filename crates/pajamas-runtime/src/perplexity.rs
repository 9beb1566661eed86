//! Perplexity the way `llama-perplexity` computes it.

use crate::error::Result;
use crate::eval::{evaluate, EvalOptions};
use crate::hook::{LinearHook, NoHook};
use crate::model::Model;

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
/// BOS is inserted; see [`crate::evaluate`] for that and for KL divergence).
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
    let opts = EvalOptions::new(ctx);
    Ok(evaluate(model, None, tokens, &opts, hook, &mut |_| {})?.ppl)
}
