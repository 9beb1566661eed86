//! `llama-pajamas-quant`: the command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use clap::{Args, Parser, Subcommand};

use llama_pajamas::quantize::{quantize_gguf, QuantizeOptions};
use pajamas_plan::{Ftype, Overrides, Rules};
use pajamas_quant::GgmlType;

#[derive(Parser)]
#[command(
    name = "llama-pajamas-quant",
    version,
    about = "Architecture-aware quantization: detect a model's architecture, plan its precision, write GGUF"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Detect the architecture of a model and recommend a quantization strategy.
    Detect {
        /// A HuggingFace model folder, a .safetensors file in one, or a hub id (ORG/NAME)
        /// already in the local HuggingFace cache.
        #[arg(long)]
        model: String,
        /// Print the stable JSON document (docs/detect-json.md) instead of the report.
        #[arg(long)]
        json: bool,
        /// Also list every tensor with its role (with --json: include the tensor list).
        #[arg(long)]
        tensors: bool,
    },
    /// Quantize a model.
    #[command(subcommand)]
    Quantize(QuantizeCommand),
    /// List the metadata and tensors of a GGUF file (ours or anyone's).
    Inspect {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Perplexity of a model on a text and, with --reference, the KL divergence and
    /// top-1 agreement against another model (llama-perplexity's figures).
    Eval(EvalCli),
    /// Compute an importance matrix (llama.cpp's GGUF imatrix format) from calibration text.
    Imatrix(ImatrixCli),
    /// Importance-matrix flows: calibration text, i-quant files.
    #[command(subcommand)]
    Iq(IqCommand),
    /// Expert statistics of an MoE model on calibration text (activation frequency and
    /// routing weight per expert, starved experts flagged); --balanced-output writes
    /// calibration text that reaches every expert.
    Profile(ProfileCli),
}

#[derive(Args)]
struct ProfileCli {
    /// HF folder, hub id in the local cache, or GGUF file of an MoE model.
    #[arg(long)]
    model: String,
    /// UTF-8 calibration text.
    #[arg(long)]
    calibration: PathBuf,
    /// Tokens per chunk.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Use at most N chunks.
    #[arg(long)]
    chunks: Option<usize>,
    /// Flag experts routed fewer tokens than this.
    #[arg(long, default_value_t = 32)]
    min_tokens: u64,
    /// Write expert-balanced calibration text here: passages of the bundled corpora
    /// that reach the starved experts first, then your text, same token budget.
    #[arg(long)]
    balanced_output: Option<PathBuf>,
    /// Seed for the candidate passages.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    force: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EvalCli {
    /// The model to score: HF folder, hub id in the local cache, or GGUF file.
    #[arg(long)]
    model: String,
    /// Compare against this model (e.g. the HF original of a quantized GGUF).
    #[arg(long)]
    reference: Option<String>,
    /// UTF-8 text to score.
    #[arg(long)]
    text: PathBuf,
    /// Tokens per chunk.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Evaluate at most N chunks.
    #[arg(long)]
    chunks: Option<usize>,
    /// Save the model's scored logits as .npy (f32, [positions x vocab]).
    #[arg(long)]
    save_logits: Option<PathBuf>,
    /// Compute GGUF files in f32 throughout (weights' quantization error only) instead of
    /// as llama.cpp's CPU backend does (quantized activations, f16 KV cache).
    #[arg(long)]
    f32_activations: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ImatrixCli {
    /// HF folder, hub id in the local cache, or GGUF file (ideally F16/F32).
    #[arg(long)]
    model: String,
    /// UTF-8 calibration text (see `iq generate-calibration`).
    #[arg(long)]
    calibration: PathBuf,
    /// The imatrix file to write (GGUF format, as llama-imatrix writes it).
    #[arg(long)]
    output: PathBuf,
    /// Tokens per chunk.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Use at most N chunks.
    #[arg(long)]
    chunks: Option<usize>,
    /// Also collect output.weight (llama-imatrix --process-output).
    #[arg(long)]
    process_output: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    force: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum IqCommand {
    /// Write calibration text from the bundled corpora (and your own text).
    GenerateCalibration(CalibCli),
    /// I-quant GGUF files (IQ4_XS down to IQ1_S) driven by an importance matrix, from an
    /// HF checkpoint (best) or a GGUF (requantized, with a warning).
    Quantize(IqQuantizeCli),
}

#[derive(Args)]
struct IqQuantizeCli {
    /// HF folder, hub id in the local cache, or GGUF file to requantize.
    #[arg(long)]
    model: String,
    /// Calibration text: the imatrix is computed with our runtime and cached in
    /// OUTPUT/imatrix/ (see `iq generate-calibration`).
    #[arg(long, conflicts_with = "imatrix")]
    calibration: Option<PathBuf>,
    /// An existing importance matrix (ours or llama-imatrix's, GGUF or legacy .dat).
    #[arg(long)]
    imatrix: Option<PathBuf>,
    /// File types, comma-separated: IQ4_NL, IQ4_XS, IQ3_M, IQ3_S, IQ3_XS, IQ3_XXS, IQ2_M,
    /// IQ2_S, IQ2_XS, IQ2_XXS, IQ1_M, IQ1_S (k-quants are accepted too).
    #[arg(long, value_delimiter = ',', required = true)]
    precision: Vec<String>,
    /// Output folder (gguf/<TYPE>/<name>-<TYPE>.gguf, imatrix/, manifest.json inside).
    #[arg(long)]
    output: PathBuf,
    /// Per-tensor rules: architecture-aware (default) or llama.cpp (llama-quantize's stock mix).
    #[arg(long, default_value = "architecture-aware")]
    rules: String,
    /// Tokens per calibration chunk.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Use at most N calibration chunks.
    #[arg(long)]
    chunks: Option<usize>,
    /// Measure every output (perplexity, KL divergence) and record it in the manifest.
    #[arg(long)]
    evaluate: bool,
    /// Score against this model instead of --model (e.g. the HF original of a GGUF).
    #[arg(long)]
    eval_reference: Option<String>,
    /// Text for --evaluate (default: the bundled wiki evaluation text, if found).
    #[arg(long)]
    eval_text: Option<PathBuf>,
    #[arg(long, default_value_t = 512)]
    eval_ctx: usize,
    #[arg(long)]
    eval_chunks: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    force: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CalibCli {
    /// The text file to write.
    #[arg(long)]
    output: PathBuf,
    /// Number of samples (paragraphs, functions, dialogues).
    #[arg(long, default_value_t = 512)]
    num_samples: usize,
    /// general, code, multilingual, technical, stories, tool-calling, summarization, rag,
    /// or mixed (all of them).
    #[arg(long, default_value = "mixed")]
    domain: String,
    /// Mix in your own text (samples split on blank lines).
    #[arg(long)]
    from: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Count the tokens written with this model's tokenizer (HF folder, hub id or GGUF).
    #[arg(long)]
    tokenizer: Option<String>,
    /// Context the imatrix will use, to check there is enough text (at least 2 x ctx).
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    #[arg(long)]
    force: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum QuantizeCommand {
    /// A language model: HuggingFace checkpoint -> GGUF files.
    Llm(LlmArgs),
}

#[derive(Args)]
struct LlmArgs {
    /// HuggingFace folder or hub id in the local cache.
    #[arg(long)]
    model: String,
    /// Output formats (comma-separated): gguf, mlx. Both come from one read of the source.
    #[arg(long, default_value = "gguf", value_delimiter = ',')]
    formats: Vec<String>,
    /// MLX: base bits (2, 3, 4, 5, 6, 8).
    #[arg(long, default_value_t = 4)]
    mlx_bits: u32,
    /// MLX: group size (32, 64, 128; default: 64, or the architecture's recommendation
    /// for the architecture-aware plan).
    #[arg(long)]
    mlx_group_size: Option<usize>,
    /// MLX: one of mlx-lm's mixed recipes (mixed_2_6, mixed_3_4, mixed_3_6, mixed_4_6).
    #[arg(long)]
    mlx_recipe: Option<String>,
    /// MLX: every quantizable module at --mlx-bits (mlx_lm.convert's default) instead of
    /// our architecture-aware plan.
    #[arg(long)]
    mlx_uniform: bool,
    /// GGUF file types, comma-separated (each source tensor is read once for all).
    /// Default: Q4_K_M, or none when --target-bpw/--target-size is given.
    #[arg(long, value_delimiter = ',')]
    gguf_precision: Vec<String>,
    /// Also write the GGUF mix that minimises the measured sensitivity within this many
    /// bits per weight (tensor data over all weights, as llama.cpp's loader prints BPW):
    /// gguf/bpwB/<name>-bpwB.gguf. See docs/budget.md.
    #[arg(long, conflicts_with = "target_size")]
    target_bpw: Option<f64>,
    /// Like --target-bpw with a file size (header included): 5MB, 4.2MiB, 120M, 3GB.
    #[arg(long)]
    target_size: Option<String>,
    /// Output folder (gguf/<TYPE>/<name>-<TYPE>.gguf and manifest.json go inside).
    #[arg(long)]
    output: PathBuf,
    /// Per-tensor rules: architecture-aware (default) or llama.cpp (llama-quantize's stock mix).
    #[arg(long, default_value = "architecture-aware")]
    rules: String,
    /// Force a type on tensors whose GGUF name matches REGEX (first match wins); repeatable.
    #[arg(long = "tensor-type", value_name = "REGEX=TYPE")]
    tensor_type: Vec<String>,
    /// Type of output.weight.
    #[arg(long)]
    output_tensor_type: Option<String>,
    /// Type of token_embd.weight.
    #[arg(long)]
    token_embedding_type: Option<String>,
    /// Every quantizable tensor at the file type's base type (no mixing rules).
    #[arg(long)]
    pure: bool,
    /// Keep output.weight unquantized.
    #[arg(long)]
    leave_output_tensor: bool,
    /// tokenizer.ggml.pre name when the tokenizer's pre-tokenizer is not recognised.
    #[arg(long)]
    pre_tokenizer: Option<String>,
    /// Importance matrix (llama.cpp GGUF imatrix or legacy .dat) for weighted quantization.
    #[arg(long)]
    imatrix: Option<PathBuf>,
    /// Measure every output against the source (perplexity, KL divergence) on this text
    /// and record it in the manifest.
    #[arg(long)]
    evaluate: bool,
    /// Text for --evaluate (default: the bundled wiki evaluation text, if found).
    #[arg(long)]
    eval_text: Option<PathBuf>,
    /// Context for --evaluate.
    #[arg(long, default_value_t = 512)]
    eval_ctx: usize,
    /// Chunks for --evaluate (default: all).
    #[arg(long)]
    eval_chunks: Option<usize>,
    /// Print the plan (tensor, shape, type, bits, reason) and predicted sizes; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Overwrite existing output files.
    #[arg(long)]
    force: bool,
    /// Machine-readable output on stdout; no progress bar.
    #[arg(long)]
    json: bool,
    /// With --dry-run: also list tensors kept unchanged.
    #[arg(long)]
    verbose: bool,
}

fn parse_type(s: &str, what: &str) -> Result<GgmlType> {
    GgmlType::from_name(s)
        .ok_or_else(|| anyhow!("{what}: unknown ggml type '{s}' (e.g. Q4_K, Q6_K, Q8_0, F16)"))
}

fn overrides(a: &LlmArgs) -> Result<Overrides> {
    let mut tensor_types = Vec::new();
    for spec in &a.tensor_type {
        let (re, ty) = spec
            .rsplit_once('=')
            .ok_or_else(|| anyhow!("--tensor-type '{spec}': expected REGEX=TYPE"))?;
        let re = regex::Regex::new(re).map_err(|e| anyhow!("--tensor-type '{spec}': {e}"))?;
        tensor_types.push((re, parse_type(ty, "--tensor-type")?));
    }
    Ok(Overrides {
        tensor_types,
        output_tensor_type: a
            .output_tensor_type
            .as_deref()
            .map(|t| parse_type(t, "--output-tensor-type"))
            .transpose()?,
        token_embedding_type: a
            .token_embedding_type
            .as_deref()
            .map(|t| parse_type(t, "--token-embedding-type"))
            .transpose()?,
        pure: a.pure,
        leave_output_tensor: a.leave_output_tensor,
    })
}

fn mlx_choice(a: &LlmArgs, model: &str) -> Result<pajamas_mlx::MlxChoice> {
    use pajamas_mlx::{MlxChoice, Recipe};
    let group = a.mlx_group_size;
    Ok(match (&a.mlx_recipe, a.mlx_uniform) {
        (Some(_), true) => bail!("--mlx-recipe and --mlx-uniform exclude each other"),
        (Some(r), false) => MlxChoice::Recipe {
            recipe: Recipe::from_name(r).ok_or_else(|| {
                anyhow!("--mlx-recipe {r}: expected mixed_2_6, mixed_3_4, mixed_3_6 or mixed_4_6")
            })?,
            group_size: group.unwrap_or(64),
        },
        (None, true) => MlxChoice::Uniform {
            bits: a.mlx_bits,
            group_size: group.unwrap_or(64),
        },
        (None, false) => {
            let arch = llama_pajamas::detect_model(model)?.architecture;
            match (MlxChoice::architecture_aware(&arch, a.mlx_bits), group) {
                (_, Some(group_size)) => MlxChoice::ArchitectureAware {
                    base_bits: a.mlx_bits,
                    group_size,
                },
                (c, None) => c,
            }
        }
    })
}

fn run_llm(a: LlmArgs) -> Result<()> {
    for f in &a.formats {
        if f != "gguf" && f != "mlx" {
            bail!("--formats {f}: expected gguf and/or mlx");
        }
    }
    let want_gguf = a.formats.iter().any(|f| f == "gguf");
    let mlx = if a.formats.iter().any(|f| f == "mlx") {
        Some(mlx_choice(&a, &a.model)?)
    } else {
        None
    };
    let budget = match (a.target_bpw, &a.target_size) {
        (Some(b), _) => Some(pajamas_plan::budget::BudgetSpec::Bpw(b)),
        (None, Some(s)) => Some(pajamas_plan::budget::BudgetSpec::FileSize(
            pajamas_plan::budget::parse_size(s).map_err(|e| anyhow!("--target-size {e}"))?,
        )),
        (None, None) => None,
    };
    if budget.is_some() && !want_gguf {
        bail!("--target-bpw/--target-size plan a GGUF file: add gguf to --formats");
    }
    let precision = if a.gguf_precision.is_empty() && budget.is_none() {
        vec!["Q4_K_M".to_string()]
    } else {
        a.gguf_precision.clone()
    };
    let ftypes = parse_ftypes(&precision, "--gguf-precision")?;
    let ftypes = if want_gguf { ftypes } else { Vec::new() };
    let budget = if want_gguf { budget } else { None };
    let rules = parse_rules(&a.rules)?;
    let opts = QuantizeOptions {
        model: a.model.clone(),
        output: a.output.clone(),
        ftypes,
        mlx,
        rules,
        overrides: overrides(&a)?,
        pre_tokenizer: a.pre_tokenizer.clone(),
        imatrix: a.imatrix.clone(),
        budget,
        dry_run: a.dry_run,
        verbose_plan: a.verbose,
        force: a.force,
        progress: !a.json && std::io::stderr().is_terminal(),
    };
    let mut report = quantize_gguf(&opts)?;
    if a.evaluate && !a.dry_run {
        let text = match &a.eval_text {
            Some(t) => t.clone(),
            None => default_eval_text()?,
        };
        llama_pajamas::quality::evaluate_outputs(
            &mut report,
            &a.model,
            &a.output,
            &text,
            a.eval_ctx,
            a.eval_chunks,
            !a.json && std::io::stderr().is_terminal(),
        )?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if a.dry_run {
        print!(
            "{}",
            llama_pajamas::report::render_plans(&report.plans, a.verbose)
        );
        if let Some(t) = &report.mlx_plan_text {
            print!("{t}");
        }
    } else {
        print_outputs(&report, &a.output);
    }
    Ok(())
}

fn parse_ftypes(names: &[String], flag: &str) -> Result<Vec<Ftype>> {
    names
        .iter()
        .map(|s| {
            Ftype::from_name(s).ok_or_else(|| {
                anyhow!(
                    "{flag} {s}: unknown file type (supported: {})",
                    pajamas_plan::ALL_FTYPES
                        .iter()
                        .map(|f| f.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        })
        .collect()
}

fn parse_rules(name: &str) -> Result<Rules> {
    Rules::from_name(name)
        .ok_or_else(|| anyhow!("--rules {name}: expected architecture-aware or llama.cpp"))
}

fn print_outputs(report: &llama_pajamas::quantize::QuantizeReport, output: &std::path::Path) {
    for o in &report.outputs {
        println!(
            "{}  {:.1} MB  {:.3} bits/weight  {:.1} s{}",
            output.join(&o.path).display(),
            o.size_bytes as f64 / 1e6,
            o.bits_per_weight,
            o.seconds,
            llama_pajamas::quality::one_line(o.quality.as_ref())
        );
    }
    if let Some(m) = &report.manifest {
        println!("manifest: {}", m.display());
    }
}

fn run_iq_quantize(a: IqQuantizeCli) -> Result<()> {
    use llama_pajamas::iq::{iq_quantize, Importance, IqArgs};
    set_threads(a.threads)?;
    let importance = match (a.calibration, a.imatrix) {
        (Some(text), None) => Importance::Calibration {
            text,
            ctx: a.ctx,
            chunks: a.chunks,
        },
        (None, Some(p)) => Importance::File(p),
        _ => bail!(
            "iq quantize needs importance weights: --calibration TEXT (make one with \
             `llama-pajamas-quant iq generate-calibration --output calibration.txt`) or --imatrix FILE"
        ),
    };
    let mut report = iq_quantize(&IqArgs {
        model: a.model.clone(),
        importance,
        ftypes: parse_ftypes(&a.precision, "--precision")?,
        output: a.output.clone(),
        rules: parse_rules(&a.rules)?,
        force: a.force,
        progress: progress(a.json),
    })?;
    if a.evaluate {
        let text = match &a.eval_text {
            Some(t) => t.clone(),
            None => default_eval_text()?,
        };
        llama_pajamas::quality::evaluate_outputs(
            &mut report.quantize,
            a.eval_reference.as_deref().unwrap_or(&a.model),
            &a.output,
            &text,
            a.eval_ctx,
            a.eval_chunks,
            progress(a.json),
        )?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let how = if report.imatrix_computed {
            "computed"
        } else {
            "used"
        };
        println!("imatrix ({how}): {}", report.imatrix);
        print_outputs(&report.quantize, &a.output);
    }
    Ok(())
}

/// The bundled evaluation text, looked up next to the current directory (a checkout).
fn default_eval_text() -> Result<PathBuf> {
    let p = PathBuf::from("data/corpora/wiki_eval_small.txt");
    if p.is_file() {
        Ok(p)
    } else {
        bail!("--evaluate needs --eval-text FILE (data/corpora/wiki_eval_small.txt is not here)")
    }
}

/// Sets the worker thread count for the whole process.
fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()
            .map_err(|e| anyhow!("--threads {n}: {e}"))?;
    }
    Ok(())
}

fn progress(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

fn run_eval(a: EvalCli) -> Result<()> {
    set_threads(a.threads)?;
    let summary = llama_pajamas::eval::eval_command(&llama_pajamas::eval::EvalArgs {
        model: a.model,
        reference: a.reference,
        text: a.text,
        ctx: a.ctx,
        chunks: a.chunks,
        save_logits: a.save_logits,
        f32_activations: a.f32_activations,
        progress: progress(a.json),
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", llama_pajamas::eval::render(&summary));
    }
    Ok(())
}

fn run_imatrix(a: ImatrixCli) -> Result<()> {
    set_threads(a.threads)?;
    let s = llama_pajamas::imatrix::imatrix_command(&llama_pajamas::imatrix::ImatrixArgs {
        model: a.model,
        calibration: a.calibration,
        output: a.output,
        ctx: a.ctx,
        chunks: a.chunks,
        process_output: a.process_output,
        force: a.force,
        progress: progress(a.json),
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!(
            "{}: {} entries from {} chunks of {} tokens (calibration perplexity {:.4}, {:.1} s)",
            s.output, s.entries, s.chunks, s.chunk_size, s.calibration_ppl, s.seconds
        );
    }
    Ok(())
}

fn run_profile(a: ProfileCli) -> Result<()> {
    set_threads(a.threads)?;
    let r = llama_pajamas::profile::profile_command(&llama_pajamas::profile::ProfileArgs {
        model: a.model,
        calibration: a.calibration,
        ctx: a.ctx,
        chunks: a.chunks,
        min_tokens: a.min_tokens,
        balanced_output: a.balanced_output,
        seed: a.seed,
        force: a.force,
        progress: progress(a.json),
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", llama_pajamas::profile::render(&r));
    }
    Ok(())
}

fn run_calibration(a: CalibCli) -> Result<()> {
    let s = llama_pajamas::calibration::generate_command(&llama_pajamas::calibration::CalibArgs {
        output: a.output,
        num_samples: a.num_samples,
        domain: a.domain,
        from: a.from,
        seed: a.seed,
        tokenizer: a.tokenizer,
        ctx: a.ctx,
        force: a.force,
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", llama_pajamas::calibration::render(&s));
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Detect {
            model,
            json,
            tensors,
        } => {
            let mut report = llama_pajamas::detect_model(&model)?;
            if json {
                if !tensors {
                    if let Some(t) = report.tensors.as_mut() {
                        t.tensors.clear();
                    }
                }
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", llama_pajamas::report::render(&report, tensors));
            }
        }
        Command::Quantize(QuantizeCommand::Llm(a)) => run_llm(a)?,
        Command::Eval(a) => run_eval(a)?,
        Command::Imatrix(a) => run_imatrix(a)?,
        Command::Iq(IqCommand::GenerateCalibration(a)) => run_calibration(a)?,
        Command::Iq(IqCommand::Quantize(a)) => run_iq_quantize(a)?,
        Command::Profile(a) => run_profile(a)?,
        Command::Inspect { file, json } => {
            let f = pajamas_gguf::GgufFile::open(&file)?;
            let report = pajamas_gguf::inspect::report(&f);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", pajamas_gguf::inspect::render_text(&report));
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
