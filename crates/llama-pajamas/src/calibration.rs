//! `iq generate-calibration`: calibration text for `imatrix`, from the corpora bundled in
//! the binary (`pajamas-calib`) and optionally the user's own text.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::eval::load_tokenizer;

/// Options of `iq generate-calibration`.
#[derive(Debug, Clone)]
pub struct CalibArgs {
    pub output: PathBuf,
    pub num_samples: usize,
    pub domain: String,
    pub from: Option<PathBuf>,
    pub seed: u64,
    /// Count tokens with this model's tokenizer.
    pub tokenizer: Option<String>,
    /// The imatrix context the text is meant for.
    pub ctx: usize,
    pub force: bool,
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct CalibSummary {
    pub output: String,
    pub domain: String,
    pub seed: u64,
    pub samples: usize,
    /// Samples per domain (`user` for `--from` text).
    pub per_domain: BTreeMap<String, usize>,
    pub bytes: usize,
    /// Tokens with `--tokenizer` (with its BOS if it adds one).
    pub tokens: Option<usize>,
    pub tokenizer: Option<String>,
    /// Whole chunks of `ctx` tokens an imatrix run gets from this text.
    pub chunks: Option<usize>,
    pub ctx: usize,
}

/// Generates, counts and writes (atomically) the calibration text.
pub fn generate_command(a: &CalibArgs) -> Result<CalibSummary> {
    if a.output.exists() && !a.force {
        bail!(
            "{} exists; pass --force to overwrite it",
            a.output.display()
        );
    }
    let domain: pajamas_calib::Domain = a.domain.parse().map_err(|e| anyhow!("--domain: {e}"))?;
    let user_text =
        match &a.from {
            Some(p) => Some(std::fs::read_to_string(p).with_context(|| {
                format!("{}: reading --from text (UTF-8 expected)", p.display())
            })?),
            None => None,
        };
    let opts = pajamas_calib::Options {
        domain,
        num_samples: a.num_samples,
        seed: a.seed,
        user_text,
        ..Default::default()
    };
    let samples = pajamas_calib::generate(&opts).map_err(|e| anyhow!("{e}"))?;
    let text = pajamas_calib::render(&samples);
    let mut per_domain = BTreeMap::new();
    for s in &samples {
        *per_domain.entry(s.domain.to_string()).or_insert(0) += 1;
    }
    let tokens = match &a.tokenizer {
        Some(m) => Some(load_tokenizer(m)?.encode(&text, true).len()),
        None => None,
    };
    if let Some(parent) = a.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
    }
    let tmp = a.output.with_extension("partial");
    {
        let mut f = std::fs::File::create(&tmp).with_context(|| tmp.display().to_string())?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &a.output).with_context(|| a.output.display().to_string())?;
    Ok(CalibSummary {
        output: a.output.display().to_string(),
        domain: domain.name().to_string(),
        seed: a.seed,
        samples: samples.len(),
        per_domain,
        bytes: text.len(),
        tokens,
        tokenizer: a.tokenizer.clone(),
        chunks: tokens.map(|t| t / a.ctx.max(1)),
        ctx: a.ctx,
    })
}

/// The human-readable summary, with a warning when the text is too short for an imatrix.
pub fn render(s: &CalibSummary) -> String {
    let mut out = format!(
        "{}: {} samples ({}), {} bytes, domain {} seed {}\n",
        s.output,
        s.samples,
        s.per_domain
            .iter()
            .map(|(d, n)| format!("{d} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        s.bytes,
        s.domain,
        s.seed
    );
    if let (Some(t), Some(tok)) = (s.tokens, &s.tokenizer) {
        out += &format!(
            "{t} tokens with the tokenizer of {tok}: {} chunks of {}\n",
            t / s.ctx.max(1),
            s.ctx
        );
        if t < 2 * s.ctx {
            out += &format!(
                "warning: an imatrix needs at least 2 x ctx = {} tokens; raise --num-samples\n",
                2 * s.ctx
            );
        }
    }
    out
}
