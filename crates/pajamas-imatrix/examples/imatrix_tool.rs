//! Dev tool for importance-matrix files (either format), used by the oracle tests.
//!
//! ```text
//! imatrix_tool dump FILE                 JSON: format, metadata, every entry's sums,
//!                                        counts and llama-quantize importance
//! imatrix_tool rewrite IN OUT.gguf [--chunk-size N]
//!                                        read IN (GGUF or legacy .dat), write GGUF; with
//!                                        N, a .dat becomes raw token sums (x N) as
//!                                        llama-imatrix --in-file -c N converts it
//! imatrix_tool check FILE MODEL.gguf     check the imatrix against a model's tensors
//! ```
//!
//! Exit code 1 with `error: <message>` on stderr for a bad input; 2 for bad usage.

use std::process::ExitCode;

use pajamas_imatrix::{Format, Imatrix, ImatrixError, TensorShape};
use serde_json::{json, Map, Value};

const USAGE: &str = "usage: imatrix_tool dump FILE | imatrix_tool rewrite IN OUT.gguf [--chunk-size N] | imatrix_tool check FILE MODEL.gguf";

/// f32 values as JSON numbers written as f64, so that any reader parsing them as f64 and
/// rounding to f32 gets the exact stored value back.
fn floats(values: &[f32]) -> Value {
    Value::Array(values.iter().map(|&v| json!(f64::from(v))).collect())
}

fn dump(path: &str) -> Result<(), ImatrixError> {
    let im = Imatrix::read(path)?;
    let mut entries = Map::new();
    for (name, e) in &im.entries {
        let importance = im.importance(name).unwrap_or_default();
        entries.insert(
            name.clone(),
            json!({
                "n_per_row": e.n_per_row,
                "n_mat": e.n_mat(),
                "in_sum2": floats(&e.in_sum2),
                "counts": floats(&e.counts),
                "importance": floats(&importance),
            }),
        );
    }
    // The metadata keys as stored (GGUF only; the legacy format has none).
    let keys: Vec<String> = match im.format {
        Format::Gguf => pajamas_gguf::GgufFile::open(path)
            .map(|f| f.metadata().iter().map(|e| e.key.clone()).collect())
            .unwrap_or_default(),
        Format::LegacyDat => Vec::new(),
    };
    let doc = json!({
        "format": match im.format { Format::Gguf => "gguf", Format::LegacyDat => "dat" },
        "metadata_keys": keys,
        "datasets": im.datasets,
        "chunk_count": im.chunk_count,
        "chunk_size": im.chunk_size,
        "entries": entries,
    });
    println!("{doc}");
    Ok(())
}

fn rewrite(input: &str, output: &str, chunk_size: Option<u32>) -> Result<(), ImatrixError> {
    let mut im = Imatrix::read(input)?;
    if let Some(n) = chunk_size {
        im.legacy_to_token_counts(n);
    }
    im.write_gguf(output)?;
    eprintln!("wrote {} entries to {output}", im.entries.len());
    Ok(())
}

fn check(path: &str, model: &str) -> Result<(), Box<dyn std::error::Error>> {
    let im = Imatrix::read(path)?;
    let m = pajamas_gguf::GgufFile::open(model)?;
    let shapes: Vec<TensorShape> = m
        .tensors()
        .iter()
        .filter(|t| t.dims.len() >= 2)
        .map(|t| TensorShape {
            name: &t.name,
            n_per_row: t.dims[0] as usize,
            n_mat: t.dims.get(2).copied().unwrap_or(1) as usize,
        })
        .collect();
    let r = im.check_against(shapes)?;
    println!(
        "{}",
        json!({"matched": r.matched, "missing": r.missing, "unused": r.unused})
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result: Result<(), Box<dyn std::error::Error>> = match args.as_slice() {
        [cmd, file] if cmd == "dump" => dump(file).map_err(Into::into),
        [cmd, input, output] if cmd == "rewrite" => {
            rewrite(input, output, None).map_err(Into::into)
        }
        [cmd, input, output, flag, n] if cmd == "rewrite" && flag == "--chunk-size" => {
            match n.parse::<u32>() {
                Ok(n) if n > 0 => rewrite(input, output, Some(n)).map_err(Into::into),
                _ => {
                    eprintln!("--chunk-size needs a positive integer\n{USAGE}");
                    return ExitCode::from(2);
                }
            }
        }
        [cmd, file, model] if cmd == "check" => check(file, model),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
