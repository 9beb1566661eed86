//! Dev tool: reads a GGUF file with our reader and writes it again with our writer.
//!
//! ```text
//! gguf_copy IN.gguf OUT.gguf        copy every metadata entry and tensor
//! gguf_copy --inspect-json IN.gguf  print the inspect report as JSON
//! gguf_copy --inspect IN.gguf       print the inspect report as text
//! ```
//!
//! Exit code 1 with the error on stderr for a bad input; 2 for bad usage.

use std::process::ExitCode;

use pajamas_gguf::{inspect, GgufFile, GgufWriter, Result};

const USAGE: &str = "usage: gguf_copy IN.gguf OUT.gguf | gguf_copy --inspect-json IN.gguf | gguf_copy --inspect IN.gguf";

fn copy(input: &str, output: &str) -> Result<()> {
    let src = GgufFile::open(input)?;
    let mut w = GgufWriter::create(output)?;
    for e in src.metadata() {
        w.add_metadata(&e.key, e.value.clone())?;
    }
    for t in src.tensors() {
        w.add_tensor_info(&t.name, &t.dims, t.ggml_type)?;
    }
    w.begin_data()?;
    for t in src.tensors() {
        w.write_tensor(&t.name, src.data_of(t)?)?;
    }
    w.finish()?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [flag, input] if flag == "--inspect-json" => GgufFile::open(input)
            .map(|f| println!("{}", inspect::render_json(&inspect::report(&f)))),
        [flag, input] if flag == "--inspect" => {
            GgufFile::open(input).map(|f| print!("{}", inspect::render_text(&inspect::report(&f))))
        }
        [input, output] if !input.starts_with("--") && !output.starts_with("--") => {
            copy(input, output)
        }
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
