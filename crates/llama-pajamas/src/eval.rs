//! `eval`: perplexity of a model on a text, and with `--reference` the KL divergence and
//! top-1 agreement against another model (e.g. a quantized GGUF against its HF
//! original), computed by our own forward pass the way `llama-perplexity` does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use pajamas_model::{locate, CacheEnv, ModelLocation};
use pajamas_runtime::{evaluate, EvalOptions, EvalReport, LinearHook, Model, NoHook};
use pajamas_tokenizer::Tokenizer;

/// A model ready to run: weights in f32 and its tokenizer.
pub struct LoadedModel {
    /// What the user named (path or hub id).
    pub input: String,
    /// The HF folder or GGUF file it resolved to.
    pub path: PathBuf,
    pub model: Model,
    pub tokenizer: Tokenizer,
}

/// Opens an HF folder, a hub id in the local cache, or a GGUF file, with its tokenizer.
/// A GGUF computes as llama.cpp's CPU backend does (quantized activations, f16
/// attention); see [`LoadedModel::exact_f32`].
pub fn load_model(input: &str) -> Result<LoadedModel> {
    let loc = locate(input, &CacheEnv::from_process())?;
    let (path, model, tokenizer) = match loc {
        ModelLocation::HfFolder(dir) => {
            // `Model::open` tells an MLX checkpoint (a `quantization` block) from an HF one.
            let model = Model::open(&dir).with_context(|| dir.display().to_string())?;
            let tok = Tokenizer::from_hf_dir(&dir)
                .with_context(|| format!("{}: reading the tokenizer", dir.display()))?;
            (dir, model, tok)
        }
        ModelLocation::Gguf(file) => {
            let model = Model::from_gguf(&file).with_context(|| file.display().to_string())?;
            let gguf = pajamas_gguf::GgufFile::open(&file)?;
            let tok = Tokenizer::from_gguf(&gguf)
                .with_context(|| format!("{}: reading the tokenizer", file.display()))?;
            (file, model, tok)
        }
    };
    Ok(LoadedModel {
        input: input.to_string(),
        path,
        model,
        tokenizer,
    })
}

impl LoadedModel {
    /// Computes in f32 throughout: measures the weights' quantization error alone instead
    /// of what llama.cpp computes with the file.
    pub fn exact_f32(&mut self) {
        self.model.llama_cpp_activations = false;
        self.model.f16_attention = false;
    }
}

/// Only the tokenizer of an HF folder, hub id or GGUF file (no weights are read).
pub fn load_tokenizer(input: &str) -> Result<Tokenizer> {
    match locate(input, &CacheEnv::from_process())? {
        ModelLocation::HfFolder(dir) => Tokenizer::from_hf_dir(&dir)
            .with_context(|| format!("{}: reading the tokenizer", dir.display())),
        ModelLocation::Gguf(file) => {
            let gguf = pajamas_gguf::GgufFile::open(&file)?;
            Tokenizer::from_gguf(&gguf)
                .with_context(|| format!("{}: reading the tokenizer", file.display()))
        }
    }
}

/// Reads a text file and tokenizes it the way llama-perplexity does (with the
/// vocabulary's BOS when it adds one). Empty text is an error.
pub fn tokenize_file(tok: &Tokenizer, text: &Path) -> Result<Vec<u32>> {
    let s = std::fs::read_to_string(text)
        .with_context(|| format!("{}: reading the text (UTF-8 expected)", text.display()))?;
    if s.trim().is_empty() {
        bail!("{}: the text is empty", text.display());
    }
    Ok(tok.encode(&s, true))
}

/// Tokenizes `text` and cuts it the way llama-perplexity would (BOS per chunk when the
/// vocabulary adds one); errors, naming the file, when the text does not fill one chunk.
pub fn prepare_text(
    tok: &Tokenizer,
    text: &Path,
    ctx: usize,
    chunks: Option<usize>,
) -> Result<(Vec<u32>, EvalOptions)> {
    let tokens = tokenize_file(tok, text)?;
    let opts = EvalOptions {
        ctx,
        max_chunks: chunks,
        bos: chunk_bos(tok),
    };
    opts.chunks_for(tokens.len())
        .with_context(|| text.display().to_string())?;
    Ok((tokens, opts))
}

/// Options of `eval`.
#[derive(Debug, Clone)]
pub struct EvalArgs {
    pub model: String,
    pub reference: Option<String>,
    pub text: PathBuf,
    pub ctx: usize,
    pub chunks: Option<usize>,
    /// Write the model's scored logits here (`.npy`, f32 `[positions x vocab]`).
    pub save_logits: Option<PathBuf>,
    /// Compute GGUF models in f32 (no llama.cpp activation/attention emulation).
    pub f32_activations: bool,
    pub progress: bool,
}

/// Perplexity figures for the report.
#[derive(Debug, Clone, Serialize)]
pub struct PplFigures {
    pub ppl: f64,
    pub stderr: f64,
    pub mean_nll: f64,
}

/// KL divergence figures for the report (nats).
#[derive(Debug, Clone, Serialize)]
pub struct KlFigures {
    pub mean: f64,
    pub stderr: f64,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
    pub top1_agreement: f64,
    pub top1_stderr: f64,
    /// `ln(PPL / PPL_reference)`.
    pub ln_ppl_ratio: f64,
}

/// What `eval --json` prints (and `--evaluate` stores in the manifest).
#[derive(Debug, Clone, Serialize)]
pub struct EvalSummary {
    pub model: String,
    pub reference: Option<String>,
    pub text: String,
    pub ctx: usize,
    pub chunks: usize,
    pub scored_tokens: usize,
    pub bos: Option<u32>,
    pub perplexity: PplFigures,
    pub reference_perplexity: Option<PplFigures>,
    pub kl_divergence: Option<KlFigures>,
    /// Tokens run through the model (and the reference) per second of evaluation.
    pub tokens_per_second: f64,
    pub seconds: f64,
}

fn figures(p: &pajamas_runtime::Perplexity) -> PplFigures {
    PplFigures {
        ppl: p.ppl,
        stderr: p.stderr,
        mean_nll: p.mean_nll,
    }
}

/// Summarises an [`EvalReport`].
pub fn summarize(
    r: &EvalReport,
    model: &str,
    reference: Option<&str>,
    text: &Path,
    opts: &EvalOptions,
    seconds: f64,
) -> EvalSummary {
    let kl =
        r.kl.as_ref()
            .zip(r.reference_ppl.as_ref())
            .map(|(k, rp)| KlFigures {
                mean: k.mean,
                stderr: k.stderr,
                median: k.median,
                p90: k.p90,
                p99: k.p99,
                p99_9: k.p999,
                max: k.max,
                top1_agreement: k.top1_agreement,
                top1_stderr: k.top1_stderr,
                ln_ppl_ratio: r.ppl.mean_nll - rp.mean_nll,
            });
    let evaluated = r.ppl.n_chunks * opts.ctx;
    EvalSummary {
        model: model.to_string(),
        reference: reference.map(str::to_string),
        text: text.display().to_string(),
        ctx: opts.ctx,
        chunks: r.ppl.n_chunks,
        scored_tokens: r.ppl.n_scored,
        bos: opts.bos,
        perplexity: figures(&r.ppl),
        reference_perplexity: r.reference_ppl.as_ref().map(figures),
        kl_divergence: kl,
        tokens_per_second: evaluated as f64 / seconds.max(1e-9),
        seconds,
    }
}

/// Runs `model` (and `reference`) over the text; `hook` sees the model's linear inputs.
pub fn run_eval(
    model: &LoadedModel,
    reference: Option<&LoadedModel>,
    tokens: &[u32],
    opts: &EvalOptions,
    progress: bool,
    save_logits: Option<&Path>,
    hook: &mut dyn LinearHook,
) -> Result<(EvalReport, f64)> {
    let n_chunks = opts.chunks_for(tokens.len())?;
    let bar = if progress {
        let b = ProgressBar::new(n_chunks as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} chunk {pos}/{len} ({eta}) {msg}",
            )
            .expect("static template"),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let mut logits_out = match save_logits {
        Some(p) => Some(NpyWriter::create(
            p,
            n_chunks * (opts.ctx - 1 - opts.ctx / 2),
            model.model.config.vocab_size,
        )?),
        None => None,
    };
    let mut write_err = None;
    let started = Instant::now();
    let report = evaluate(
        &model.model,
        reference.map(|r| &r.model),
        tokens,
        opts,
        hook,
        &mut |c| {
            bar.set_position(c.done as u64);
            if let Some(w) = logits_out.as_mut() {
                if let Err(e) = w.write(c.logits) {
                    write_err.get_or_insert(e);
                }
            }
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    if let Some(e) = write_err {
        return Err(e);
    }
    if let Some(w) = logits_out {
        w.finish()?;
    }
    Ok((report, seconds))
}

/// The BOS id llama-perplexity would put at the start of every chunk.
pub fn chunk_bos(tok: &Tokenizer) -> Option<u32> {
    if tok.add_bos() {
        tok.bos()
    } else {
        None
    }
}

/// `eval`: loads, tokenizes, evaluates, summarises.
pub fn eval_command(a: &EvalArgs) -> Result<EvalSummary> {
    let mut model = load_model(&a.model)?;
    let mut reference = a.reference.as_deref().map(load_model).transpose()?;
    if a.f32_activations {
        model.exact_f32();
        if let Some(r) = reference.as_mut() {
            r.exact_f32();
        }
    }
    let (tokens, opts) = prepare_text(&model.tokenizer, &a.text, a.ctx, a.chunks)?;
    let (report, seconds) = run_eval(
        &model,
        reference.as_ref(),
        &tokens,
        &opts,
        a.progress,
        a.save_logits.as_deref(),
        &mut NoHook,
    )?;
    Ok(summarize(
        &report,
        &a.model,
        a.reference.as_deref(),
        &a.text,
        &opts,
        seconds,
    ))
}

/// The human-readable report.
pub fn render(s: &EvalSummary) -> String {
    let mut out = String::new();
    out += &format!(
        "model: {}\ntext: {} ({} chunks of {} tokens, {} scored{})\n",
        s.model,
        s.text,
        s.chunks,
        s.ctx,
        s.scored_tokens,
        if s.bos.is_some() {
            ", BOS at each chunk start"
        } else {
            ""
        }
    );
    out += &format!(
        "perplexity: {:.4} +/- {:.4}\n",
        s.perplexity.ppl, s.perplexity.stderr
    );
    if let (Some(r), Some(rp)) = (&s.reference, &s.reference_perplexity) {
        out += &format!(
            "reference: {r}\nreference perplexity: {:.4} +/- {:.4}\n",
            rp.ppl, rp.stderr
        );
    }
    if let Some(k) = &s.kl_divergence {
        out += &format!(
            "ln(PPL/PPL_ref): {:.6}\nKL divergence: mean {:.6} +/- {:.6}, median {:.6}, 90% {:.6}, 99% {:.6}, 99.9% {:.6}, max {:.6}\nsame top token: {:.3} +/- {:.3} %\n",
            k.ln_ppl_ratio,
            k.mean,
            k.stderr,
            k.median,
            k.p90,
            k.p99,
            k.p99_9,
            k.max,
            k.top1_agreement * 100.0,
            k.top1_stderr * 100.0
        );
    }
    out += &format!(
        "speed: {:.1} tokens/s ({:.1} s)\n",
        s.tokens_per_second, s.seconds
    );
    out
}

/// Streams f32 rows into a `.npy` file (numpy format 1.0), written under a temporary
/// name and renamed when complete.
struct NpyWriter {
    tmp: PathBuf,
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    expected: usize,
    written: usize,
}

impl NpyWriter {
    fn create(path: &Path, rows: usize, cols: usize) -> Result<NpyWriter> {
        let tmp = path.with_extension("npy.partial");
        let f = std::fs::File::create(&tmp).with_context(|| tmp.display().to_string())?;
        let mut file = std::io::BufWriter::new(f);
        let mut header =
            format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
        // magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        file.write_all(b"\x93NUMPY\x01\x00")?;
        file.write_all(&(header.len() as u16).to_le_bytes())?;
        file.write_all(header.as_bytes())?;
        Ok(NpyWriter {
            tmp,
            path: path.to_path_buf(),
            file,
            expected: rows * cols,
            written: 0,
        })
    }

    fn write(&mut self, values: &[f32]) -> Result<()> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.file.write_all(&bytes)?;
        self.written += values.len();
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        if self.written != self.expected {
            bail!(
                "{}: wrote {} values, expected {}",
                self.path.display(),
                self.written,
                self.expected
            );
        }
        self.file.flush()?;
        self.file.get_ref().sync_all()?;
        std::fs::rename(&self.tmp, &self.path).with_context(|| self.path.display().to_string())?;
        Ok(())
    }
}
