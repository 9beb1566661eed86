//! `llama-pajamas-quant`: the command line.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "llama-pajamas-quant",
    version,
    about = "Architecture-aware quantization: detect a model's architecture and plan its precision"
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
