//! Quality of a model on a token stream, the way `llama-perplexity` measures it:
//! perplexity over the second half of non-overlapping chunks and, against a reference
//! model, the KL divergence of the token distributions and the top-1 agreement
//! (`llama-perplexity --kl-divergence`).

use rayon::prelude::*;

use crate::error::{Result, RuntimeError};
use crate::hook::LinearHook;
use crate::model::Model;
use crate::perplexity::Perplexity;

/// How a token stream is cut and scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalOptions {
    /// Tokens per chunk (`-c`).
    pub ctx: usize,
    /// Evaluate at most this many chunks (`--chunks`); `None`: every whole chunk.
    pub max_chunks: Option<usize>,
    /// Replace the first token of every chunk by this BOS id, as llama-perplexity does
    /// for vocabularies that add a BOS token.
    pub bos: Option<u32>,
}

impl EvalOptions {
    /// `ctx` tokens per chunk, every chunk, no BOS.
    pub fn new(ctx: usize) -> Self {
        EvalOptions {
            ctx,
            max_chunks: None,
            bos: None,
        }
    }

    /// Number of chunks `n_tokens` gives, or an error saying why there are none.
    pub fn chunks_for(&self, n_tokens: usize) -> Result<usize> {
        if self.ctx < 4 {
            return Err(RuntimeError::Input(format!(
                "context {} is too small (at least 4 tokens)",
                self.ctx
            )));
        }
        if n_tokens == 0 {
            return Err(RuntimeError::Input("the text has no tokens".into()));
        }
        let whole = n_tokens / self.ctx;
        if whole == 0 {
            return Err(RuntimeError::Input(format!(
                "the text has {n_tokens} tokens, fewer than one context of {}; use a longer text or a smaller --ctx",
                self.ctx
            )));
        }
        Ok(self.max_chunks.map_or(whole, |m| m.min(whole)).max(1))
    }
}

/// Distribution of the per-token KL divergence `KL(P_reference || P_model)` (nats).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KlStats {
    pub mean: f64,
    /// Standard error of the mean.
    pub stderr: f64,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    /// Fraction of scored positions where both models' most likely token is the same.
    pub top1_agreement: f64,
    /// Standard error of `top1_agreement`.
    pub top1_stderr: f64,
    pub n: usize,
}

/// The result of [`evaluate`].
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    pub ppl: Perplexity,
    /// The reference's perplexity on the same chunks.
    pub reference_ppl: Option<Perplexity>,
    pub kl: Option<KlStats>,
}

/// What [`evaluate`] reports after each chunk.
#[derive(Debug, Clone, Copy)]
pub struct ChunkDone<'a> {
    /// Chunks done so far (1-based).
    pub done: usize,
    pub total: usize,
    /// The model's logits for the scored positions of this chunk, `[rows x vocab]`
    /// (positions `ctx/2 .. ctx-2`).
    pub logits: &'a [f32],
    pub rows: usize,
}

/// Running sums of negative log-likelihoods.
#[derive(Default)]
struct NllSum {
    sum: f64,
    sum2: f64,
    n: usize,
}

impl NllSum {
    fn add(&mut self, nll: f64) {
        self.sum += nll;
        self.sum2 += nll * nll;
        self.n += 1;
    }

    fn finish(&self, n_chunks: usize) -> Perplexity {
        let mean = self.sum / self.n as f64;
        let var = (self.sum2 / self.n as f64 - mean * mean).max(0.0);
        let se = if self.n > 1 {
            (var / (self.n - 1) as f64).sqrt()
        } else {
            0.0
        };
        let ppl = mean.exp();
        Perplexity {
            ppl,
            stderr: ppl * se,
            mean_nll: mean,
            n_scored: self.n,
            n_chunks,
        }
    }
}

/// Log-softmax of one row in f64 (max-subtracted), and its argmax.
fn log_softmax(row: &[f32]) -> (Vec<f64>, usize) {
    let (mut arg, mut max) = (0usize, f32::NEG_INFINITY);
    for (i, &v) in row.iter().enumerate() {
        if v > max {
            max = v;
            arg = i;
        }
    }
    let max = max as f64;
    let lse = row
        .iter()
        .map(|&v| (v as f64 - max).exp())
        .sum::<f64>()
        .ln();
    (row.iter().map(|&v| v as f64 - max - lse).collect(), arg)
}

/// One scored position: NLL of the model, and against a reference its NLL, the KL
/// divergence and whether the argmaxes agree.
struct Scored {
    nll: f64,
    reference: Option<(f64, f64, bool)>,
}

fn score_row(row: &[f32], reference: Option<&[f32]>, target: usize) -> Scored {
    let (lp, arg) = log_softmax(row);
    let reference = reference.map(|r| {
        let (lq, rarg) = log_softmax(r);
        let kl: f64 = lq
            .iter()
            .zip(&lp)
            .map(|(&q, &p)| if q > -700.0 { q.exp() * (q - p) } else { 0.0 })
            .sum();
        (-lq[target], kl.max(0.0), arg == rarg)
    });
    Scored {
        nll: -lp[target],
        reference,
    }
}

/// The value at `fraction` of the sorted values, interpolating linearly between ranks.
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = fraction * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let t = pos - lo as f64;
    sorted[lo] * (1.0 - t) + sorted[hi] * t
}

fn kl_stats(mut kl: Vec<f64>, agree: usize) -> KlStats {
    let n = kl.len();
    let mean = kl.iter().sum::<f64>() / n as f64;
    let var = kl.iter().map(|k| (k - mean) * (k - mean)).sum::<f64>() / n as f64;
    let stderr = if n > 1 {
        (var / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    kl.sort_by(f64::total_cmp);
    let top = agree as f64 / n as f64;
    KlStats {
        mean,
        stderr,
        median: percentile(&kl, 0.5),
        p90: percentile(&kl, 0.9),
        p99: percentile(&kl, 0.99),
        p999: percentile(&kl, 0.999),
        max: kl[n - 1],
        top1_agreement: top,
        top1_stderr: if n > 1 {
            (top * (1.0 - top) / (n - 1) as f64).sqrt()
        } else {
            0.0
        },
        n,
    }
}

/// Evaluates `model` on `tokens`: each of the chunks is run from position 0 and the
/// logits at positions `ctx/2 .. ctx-2` are scored against the next token. With a
/// `reference` (same vocabulary), its logits on the same chunks give the KL divergence
/// and top-1 agreement. `on_chunk` is called after every chunk (progress, saving
/// logits); `hook` sees the model's (not the reference's) linear inputs.
pub fn evaluate(
    model: &Model,
    reference: Option<&Model>,
    tokens: &[u32],
    opts: &EvalOptions,
    hook: &mut dyn LinearHook,
    on_chunk: &mut dyn FnMut(&ChunkDone<'_>),
) -> Result<EvalReport> {
    let n_chunks = opts.chunks_for(tokens.len())?;
    let vocab = model.config.vocab_size;
    if let Some(r) = reference {
        if r.config.vocab_size != vocab {
            return Err(RuntimeError::Input(format!(
                "the reference has a vocabulary of {} tokens, the model {vocab}: KL divergence needs the same vocabulary",
                r.config.vocab_size
            )));
        }
    }
    let ctx = opts.ctx;
    let first = ctx / 2;
    let (mut ours, mut theirs) = (NllSum::default(), NllSum::default());
    let mut kl = Vec::new();
    let mut agree = 0usize;
    for (c, chunk) in tokens.chunks_exact(ctx).take(n_chunks).enumerate() {
        let mut chunk = chunk.to_vec();
        if let Some(bos) = opts.bos {
            chunk[0] = bos;
        }
        let logits = model.forward_rows(&chunk, first, hook)?;
        let ref_logits = match reference {
            Some(r) => Some(r.forward_rows(&chunk, first, &mut crate::hook::NoHook)?),
            None => None,
        };
        let scored: Vec<Scored> = (first..ctx - 1)
            .into_par_iter()
            .map(|j| {
                let row = &logits[(j - first) * vocab..(j - first + 1) * vocab];
                let r = ref_logits
                    .as_ref()
                    .map(|l| &l[(j - first) * vocab..(j - first + 1) * vocab]);
                score_row(row, r, chunk[j + 1] as usize)
            })
            .collect();
        for s in scored {
            ours.add(s.nll);
            if let Some((nll, k, same)) = s.reference {
                theirs.add(nll);
                kl.push(k);
                agree += usize::from(same);
            }
        }
        let rows = ctx - 1 - first;
        on_chunk(&ChunkDone {
            done: c + 1,
            total: n_chunks,
            logits: &logits[..rows * vocab],
            rows,
        });
    }
    let has_ref = reference.is_some();
    Ok(EvalReport {
        ppl: ours.finish(n_chunks),
        reference_ppl: has_ref.then(|| theirs.finish(n_chunks)),
        kl: has_ref.then(|| kl_stats(kl, agree)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_of_identical_rows_is_zero_and_positive_otherwise() {
        let a = [0.5f32, 1.5, -2.0, 0.0];
        let s = score_row(&a, Some(&a), 1);
        let (nll, k, same) = s.reference.unwrap();
        assert!(k.abs() < 1e-12 && same);
        assert!((nll - s.nll).abs() < 1e-12);
        let b = [0.5f32, 1.4, -2.0, 1.2];
        let (_, k, same) = score_row(&b, Some(&a), 1).reference.unwrap();
        assert!(k > 0.0 && same);
        // hand-computed KL(a || b)
        let sm = |r: &[f32]| {
            let z: f64 = r.iter().map(|&v| (v as f64).exp()).sum();
            r.iter().map(|&v| (v as f64).exp() / z).collect::<Vec<_>>()
        };
        let (p, q) = (sm(&a), sm(&b));
        let e: f64 = p.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum();
        assert!((k - e).abs() < 1e-12, "{k} vs {e}");
        let c = [0.0f32, 0.0, 0.0, 9.0];
        assert!(!score_row(&c, Some(&a), 1).reference.unwrap().2);
    }

    #[test]
    fn percentiles_interpolate() {
        let v = [0.0, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.0);
        assert_eq!(percentile(&v, 0.99), 3.96);
        let s = kl_stats(vec![4.0, 0.0, 2.0, 1.0, 3.0], 4);
        assert_eq!((s.median, s.max, s.n), (2.0, 4.0, 5));
        assert_eq!(s.top1_agreement, 0.8);
    }

    #[test]
    fn chunk_counts_and_errors() {
        let mut o = EvalOptions::new(8);
        assert_eq!(o.chunks_for(17).unwrap(), 2);
        o.max_chunks = Some(1);
        assert_eq!(o.chunks_for(17).unwrap(), 1);
        let e = o.chunks_for(7).unwrap_err().to_string();
        assert!(e.contains("fewer than one context"), "{e}");
        assert!(o
            .chunks_for(0)
            .unwrap_err()
            .to_string()
            .contains("no tokens"));
        assert!(EvalOptions::new(2).chunks_for(100).is_err());
    }
}
