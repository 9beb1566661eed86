//! Perplexity of the bf16 demo model on the first 2048 tokens of
//! `data/corpora/wiki_eval_small.txt`, against the numpy reference.
//!
//! `tests/data/wiki_eval_small_demo_ids.json` holds the ids: the demo tokenizer
//! (`models/demo/tokenizer.json`, `add_special_tokens=False`) applied to the whole file,
//! first 2048 kept. The expected value is `tests/oracle/np_llama.py`'s
//! `perplexity(Model("models/demo").logits, ids, 256)` on those ids.

mod common;

use pajamas_runtime::{perplexity, Model};

const NUMPY_PPL_CTX256: f64 = 157.6216742888634;

#[test]
fn demo_model_perplexity_matches_numpy_reference() {
    let model = Model::from_hf_dir(common::repo_root().join("models/demo")).unwrap();
    let ids = common::read_ids(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/wiki_eval_small_demo_ids.json"),
    );
    assert_eq!(ids.len(), 2048);
    let start = std::time::Instant::now();
    let p = perplexity(&model, &ids, 256).unwrap();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "demo ppl {:.4} +/- {:.4} ({} scored, {} chunks), {:.0} tokens/s",
        p.ppl,
        p.stderr,
        p.n_scored,
        p.n_chunks,
        ids.len() as f64 / secs
    );
    assert_eq!((p.n_chunks, p.n_scored), (8, 8 * 127));
    let rel = (p.ppl - NUMPY_PPL_CTX256).abs() / NUMPY_PPL_CTX256;
    assert!(rel < 1e-3, "ppl {} vs numpy {NUMPY_PPL_CTX256}", p.ppl);
    assert!(p.stderr > 0.0 && p.stderr < p.ppl);
}
