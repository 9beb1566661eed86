//! Prints the token ids of text files as JSON, one array per file and line.
//!
//!     tokenize MODEL TEXTFILE... [--no-special] [--parse-special]
//!
//! MODEL is a `.gguf` file or a HuggingFace model folder. By default BOS/EOS are added
//! when the model asks for them, like llama-cpp-python's `tokenize(text, add_bos=True,
//! special=False)`; `--no-special` adds none, `--parse-special` turns special-token
//! text into those tokens. The oracle tests compare this output with llama.cpp's.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use pajamas_tokenizer::Tokenizer;

fn run() -> Result<(), String> {
    let mut add_special = true;
    let mut parse_special = false;
    let mut paths = Vec::new();
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--no-special" => add_special = false,
            "--parse-special" => parse_special = true,
            "-h" | "--help" => {
                println!("usage: tokenize MODEL TEXTFILE... [--no-special] [--parse-special]");
                return Ok(());
            }
            _ => paths.push(a),
        }
    }
    if paths.len() < 2 {
        return Err("usage: tokenize MODEL TEXTFILE... [--no-special] [--parse-special]".into());
    }
    let model = Path::new(&paths[0]);
    let tok = if model.is_dir() {
        Tokenizer::from_hf_dir(model).map_err(|e| e.to_string())?
    } else {
        let file = pajamas_gguf::GgufFile::open(model).map_err(|e| e.to_string())?;
        Tokenizer::from_gguf(&file).map_err(|e| e.to_string())?
    };
    let mut out = std::io::stdout().lock();
    for p in &paths[1..] {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"))?;
        let ids = tok.encode_with(&text, add_special, parse_special);
        serde_json::to_writer(&mut out, &ids).map_err(|e| e.to_string())?;
        writeln!(out).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokenize: {e}");
            ExitCode::FAILURE
        }
    }
}
