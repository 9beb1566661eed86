//! `quantize ... --evaluate`: every output is scored against the source model on an
//! evaluation text (perplexity, KL divergence, top-1 agreement) and the figures go into
//! its manifest entry.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use pajamas_runtime::NoHook;

use crate::eval::{load_model, prepare_text, run_eval, summarize};
use crate::manifest::Manifest;
use crate::quantize::QuantizeReport;

/// Evaluates each output of `report` against `source` and rewrites the manifest.
pub fn evaluate_outputs(
    report: &mut QuantizeReport,
    source: &str,
    out_root: &Path,
    text: &Path,
    ctx: usize,
    chunks: Option<usize>,
    progress: bool,
) -> Result<()> {
    let reference = load_model(source).context("loading the source model for --evaluate")?;
    let (tokens, opts) = prepare_text(&reference.tokenizer, text, ctx, chunks)?;
    for artifact in &mut report.outputs {
        let path = out_root.join(&artifact.path);
        let model = load_model(&path.display().to_string())?;
        let (r, seconds) = run_eval(
            &model,
            Some(&reference),
            &tokens,
            &opts,
            progress,
            None,
            &mut NoHook,
        )
        .with_context(|| format!("evaluating {}", path.display()))?;
        let s = summarize(&r, &artifact.path, Some(source), text, &opts, seconds);
        let kl = s.kl_divergence.as_ref();
        artifact.quality = Some(json!({
            "text": s.text,
            "ctx": s.ctx,
            "chunks": s.chunks,
            "scored_tokens": s.scored_tokens,
            "perplexity": s.perplexity.ppl,
            "perplexity_stderr": s.perplexity.stderr,
            "reference_perplexity": s.reference_perplexity.as_ref().map(|p| p.ppl),
            "kl_divergence_mean": kl.map(|k| k.mean),
            "kl_divergence_stderr": kl.map(|k| k.stderr),
            "kl_divergence_median": kl.map(|k| k.median),
            "kl_divergence_p99": kl.map(|k| k.p99),
            "top1_agreement": kl.map(|k| k.top1_agreement),
            "measured_by": if artifact.format == "gguf" {
                "llama-pajamas eval (dequantized weights, llama.cpp's CPU activation rounding)"
            } else {
                "llama-pajamas eval (f32 forward pass over mx.dequantize'd weights)"
            },
        }));
    }
    let manifest = Manifest::update(
        out_root,
        &report.model,
        &report.architecture,
        &report.outputs,
    )?;
    report.manifest = Some(manifest);
    Ok(())
}

/// `  PPL 24.12  KLD 0.0341  top-1 94.3%` for the summary line of an output.
pub fn one_line(quality: Option<&Value>) -> String {
    let Some(q) = quality else {
        return String::new();
    };
    let f = |k: &str| q.get(k).and_then(Value::as_f64);
    match (
        f("perplexity"),
        f("kl_divergence_mean"),
        f("top1_agreement"),
    ) {
        (Some(p), Some(k), Some(t)) => {
            format!("  PPL {p:.4}  KLD {k:.5}  top-1 {:.2}%", t * 100.0)
        }
        (Some(p), _, _) => format!("  PPL {p:.4}"),
        _ => String::new(),
    }
}
