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
    /// Output formats (comma-separated). Today: gguf.
    #[arg(long, default_value = "gguf", value_delimiter = ',')]
    formats: Vec<String>,
    /// GGUF file types, comma-separated (each source tensor is read once for all).
    #[arg(long, default_value = "Q4_K_M", value_delimiter = ',')]
    gguf_precision: Vec<String>,
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

fn run_llm(a: LlmArgs) -> Result<()> {
    for f in &a.formats {
        if f != "gguf" {
            bail!("--formats {f}: only gguf is implemented so far (mlx is next)");
        }
    }
    let ftypes = a
        .gguf_precision
        .iter()
        .map(|s| {
            Ftype::from_name(s).ok_or_else(|| {
                anyhow!(
                    "--gguf-precision {s}: unknown file type (supported: {})",
                    pajamas_plan::ALL_FTYPES
                        .iter()
                        .map(|f| f.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let rules = Rules::from_name(&a.rules).ok_or_else(|| {
        anyhow!(
            "--rules {}: expected architecture-aware or llama.cpp",
            a.rules
        )
    })?;
    let opts = QuantizeOptions {
        model: a.model.clone(),
        output: a.output.clone(),
        ftypes,
        rules,
        overrides: overrides(&a)?,
        pre_tokenizer: a.pre_tokenizer.clone(),
        dry_run: a.dry_run,
        force: a.force,
        progress: !a.json && std::io::stderr().is_terminal(),
    };
    let report = quantize_gguf(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if a.dry_run {
        print!(
            "{}",
            llama_pajamas::report::render_plans(&report.plans, a.verbose)
        );
    } else {
        for o in &report.outputs {
            println!(
                "{}  {:.1} MB  {:.3} bits/weight  {:.1} s",
                a.output.join(&o.path).display(),
                o.size_bytes as f64 / 1e6,
                o.bits_per_weight,
                o.seconds
            );
        }
        if let Some(m) = &report.manifest {
            println!("manifest: {}", m.display());
        }
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
