//! Dev tool over the kernels, driven by the Python oracle tests (tests/oracle/test_kernels.py).
//! Files are raw little-endian arrays: f32 rows in, ggml blocks out, and back.
//!
//!     kernels types
//!     kernels quantize   --type Q4_K --cols N --input rows.f32 --output out.bin [--importance imp.f32]
//!     kernels dequantize --type Q4_K --cols N --input out.bin  --output back.f32

use std::collections::HashMap;
use std::process::ExitCode;

use pajamas_quant::{
    dequantize_rows, is_supported, quantize_rows_with, GgmlType, Objective, ALL_TYPES,
};

const USAGE: &str = "usage:
  kernels types
  kernels quantize   --type TYPE --cols N --input ROWS.f32 --output OUT.bin [--importance IMP.f32]
                     [--objective model|row-error]
  kernels dequantize --type TYPE --cols N --input IN.bin --output ROWS.f32";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kernels: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let Some((command, rest)) = args.split_first() else {
        return Err(USAGE.into());
    };
    match command.as_str() {
        "types" => {
            for ty in ALL_TYPES.iter().filter(|t| is_supported(**t)) {
                println!("{ty}");
            }
            Ok(())
        }
        "quantize" => {
            let opts = Options::parse(
                rest,
                &["--type", "--cols", "--input", "--output"],
                &["--importance", "--objective"],
            )?;
            let (ty, cols) = (opts.ty()?, opts.cols()?);
            let data = read_f32(opts.get("--input"))?;
            let importance = opts.optional("--importance").map(read_f32).transpose()?;
            let objective = match opts.optional("--objective") {
                None | Some("model") => Objective::Model,
                Some("row-error") => Objective::RowError,
                Some(o) => return Err(format!("--objective {o}: expected model or row-error")),
            };
            let bytes = quantize_rows_with(ty, &data, cols, importance.as_deref(), objective)
                .map_err(|e| e.to_string())?;
            write(opts.get("--output"), &bytes)
        }
        "dequantize" => {
            let opts = Options::parse(rest, &["--type", "--cols", "--input", "--output"], &[])?;
            let (ty, cols) = (opts.ty()?, opts.cols()?);
            let bytes = std::fs::read(opts.get("--input"))
                .map_err(|e| format!("{}: {e}", opts.get("--input")))?;
            let values = dequantize_rows(ty, &bytes, cols).map_err(|e| e.to_string())?;
            let out: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            write(opts.get("--output"), &out)
        }
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    }
}

/// `--flag value` pairs, checked against the required and optional flags of a command.
struct Options(HashMap<String, String>);

impl Options {
    fn parse(args: &[String], required: &[&str], optional: &[&str]) -> Result<Options, String> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if !required.contains(&flag.as_str()) && !optional.contains(&flag.as_str()) {
                return Err(format!("unknown option {flag:?}\n{USAGE}"));
            }
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            map.insert(flag.clone(), value.clone());
        }
        if let Some(missing) = required.iter().find(|f| !map.contains_key(**f)) {
            return Err(format!("missing {missing}\n{USAGE}"));
        }
        Ok(Options(map))
    }

    fn get(&self, flag: &str) -> &str {
        &self.0[flag]
    }

    fn optional(&self, flag: &str) -> Option<&str> {
        self.0.get(flag).map(String::as_str)
    }

    fn ty(&self) -> Result<GgmlType, String> {
        let name = self.get("--type");
        GgmlType::from_name(name).ok_or_else(|| format!("unknown type {name:?}"))
    }

    fn cols(&self) -> Result<usize, String> {
        let v = self.get("--cols");
        v.parse()
            .map_err(|_| format!("--cols {v:?} is not a number"))
    }
}

fn read_f32(path: &str) -> Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    if bytes.len() % 4 != 0 {
        return Err(format!(
            "{path}: {} bytes is not a whole number of f32",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn write(path: &str, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{path}: {e}"))
}
