//! `cargo run --release -p pajamas-runtime --example perplexity -- MODEL_DIR IDS.json [CTX]`
//!
//! Perplexity of a JSON list of token ids, with throughput.

use std::time::Instant;

use pajamas_runtime::{perplexity, Model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: perplexity MODEL_DIR IDS.json [CTX]".into());
    }
    let ctx: usize = args.get(2).map_or(Ok(256), |s| s.parse())?;
    let t0 = Instant::now();
    let model = Model::from_hf_dir(&args[0])?;
    let load = t0.elapsed().as_secs_f64();
    let ids: Vec<u32> = serde_json::from_str(&std::fs::read_to_string(&args[1])?)?;
    let t1 = Instant::now();
    let p = perplexity(&model, &ids, ctx)?;
    let secs = t1.elapsed().as_secs_f64();
    let evaluated = p.n_chunks * ctx;
    println!(
        "ppl {:.4} +/- {:.4} over {} predictions ({} chunks of {ctx}); load {load:.2}s; \
         {evaluated} tokens in {secs:.2}s = {:.0} tokens/s on {} threads",
        p.ppl,
        p.stderr,
        p.n_scored,
        p.n_chunks,
        evaluated as f64 / secs,
        rayon::current_num_threads()
    );
    Ok(())
}
