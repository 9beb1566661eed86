//! `imatrix`: runs calibration text through our forward pass and records, for every
//! linear weight, the sum of squared inputs per column (llama.cpp's importance matrix),
//! written in llama.cpp's GGUF imatrix format.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use pajamas_convert::{map_expert, map_name};
use pajamas_imatrix::{Collector, Imatrix};
use pajamas_runtime::{LinearHook, LinearInput, ModelConfig};

use crate::eval::{load_model, prepare_text, run_eval};
use crate::imatrix_hybrid::hybrid_target;

/// Options of `imatrix`.
#[derive(Debug, Clone)]
pub struct ImatrixArgs {
    pub model: String,
    pub calibration: PathBuf,
    pub output: PathBuf,
    pub ctx: usize,
    pub chunks: Option<usize>,
    /// Also collect the output head (llama-imatrix's `--process-output`).
    pub process_output: bool,
    pub force: bool,
    pub progress: bool,
}

/// What `imatrix --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ImatrixSummary {
    pub output: String,
    pub entries: usize,
    pub chunks: u32,
    pub chunk_size: u32,
    pub tokens: usize,
    /// Perplexity of the model on the calibration chunks (a sanity check, as
    /// llama-imatrix prints it).
    pub calibration_ppl: f64,
    pub seconds: f64,
}

/// Feeds every linear input to the collector under its GGUF weight name.
struct CollectHook<'a> {
    config: &'a ModelConfig,
    collector: Collector,
    error: Option<anyhow::Error>,
}

impl CollectHook<'_> {
    fn gguf_name(&self, input: &LinearInput<'_>) -> String {
        // A tied head multiplies by `token_embd.weight`, which (as in llama-imatrix) is
        // not collected; an untied one is `output.weight`.
        let c = self.config;
        map_name(
            input.tensor,
            &c.model_type,
            c.n_heads as u64,
            c.n_kv_heads as u64,
        )
        .map(|(g, _)| g)
        .unwrap_or_else(|| input.tensor.to_string())
    }
}

impl LinearHook for CollectHook<'_> {
    fn before_linear(&mut self, input: &LinearInput<'_>) {
        if self.error.is_some() {
            return;
        }
        let n_experts = self.config.moe.as_ref().map(|m| m.n_experts);
        // An expert's matrix is one slice of its layer's stacked `*_exps` weight.
        let expert = match hybrid_target(self.config, input.tensor, input.name) {
            Some(t) => match t.expert {
                Some(e) => Some((t.gguf, e)).zip(n_experts),
                None => {
                    self.add(&t.gguf, input, None);
                    return;
                }
            },
            None => map_expert(input.tensor).zip(n_experts),
        };
        let name = match &expert {
            Some(((stacked, _), _)) => stacked.clone(),
            None => self.gguf_name(input),
        };
        self.add(&name, input, expert.map(|((_, e), n)| (e as usize, n)));
    }
}

impl CollectHook<'_> {
    /// Records `input` under `name`, as matrix `e` of `n` when `expert` is `(e, n)`.
    fn add(&mut self, name: &str, input: &LinearInput<'_>, expert: Option<(usize, usize)>) {
        if !self.collector.wants(name) {
            return;
        }
        let added = match expert {
            Some((e, n_experts)) => self.collector.add_expert(
                name,
                e,
                n_experts,
                input.data,
                input.n_tokens,
                input.in_features,
            ),
            None => self
                .collector
                .add(name, input.data, input.n_tokens, input.in_features),
        };
        if let Err(e) = added {
            self.error = Some(e.into());
        }
    }
}

/// `imatrix`: collects and writes the file (atomically).
pub fn imatrix_command(a: &ImatrixArgs) -> Result<ImatrixSummary> {
    if a.output.exists() && !a.force {
        anyhow::bail!(
            "{} exists; pass --force to overwrite it",
            a.output.display()
        );
    }
    let model = load_model(&a.model)?;
    let (tokens, opts) = prepare_text(&model.tokenizer, &a.calibration, a.ctx, a.chunks)?;
    let mut hook = CollectHook {
        config: &model.model.config,
        collector: Collector::new(a.ctx).process_output(a.process_output),
        error: None,
    };
    let (report, seconds) = run_eval(&model, None, &tokens, &opts, a.progress, None, &mut hook)?;
    if let Some(e) = hook.error.take() {
        return Err(e.context(format!("collecting activations of {}", a.model)));
    }
    // One forward pass per chunk.
    let mut collector = hook.collector;
    for _ in 0..report.ppl.n_chunks {
        collector.finish_chunk();
    }
    let dataset = dataset_name(&a.calibration);
    let imatrix: Imatrix = collector.into_imatrix(vec![dataset]);
    if let Some(parent) = a.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
    }
    imatrix.write_gguf(&a.output)?;
    Ok(ImatrixSummary {
        output: a.output.display().to_string(),
        entries: imatrix.entries.len(),
        chunks: imatrix.chunk_count,
        chunk_size: imatrix.chunk_size,
        tokens: report.ppl.n_chunks * a.ctx,
        calibration_ppl: report.ppl.ppl,
        seconds,
    })
}

/// The dataset name recorded in the file: the calibration file's name, as llama-imatrix
/// records the path it was given.
fn dataset_name(p: &Path) -> String {
    p.display().to_string()
}
