//! gpt-oss from its HF folders against transformers' logits: attention sinks, biases,
//! the sliding window (8) over 32 tokens, YaRN with the config's `truncate: false`, the
//! biased router and clamped SwiGLU experts; float32 experts and MXFP4 ones (decoded
//! from `*_blocks` / `*_scales`).

mod common;

use pajamas_runtime::Model;

fn check(name: &str) -> f32 {
    let dir = common::fixture(name);
    let model = Model::from_hf_dir(&dir).unwrap();
    let ids = common::read_ids(&dir.join("reference_ids.json"));
    let (shape, reference) = common::read_npy_f32(&dir.join("reference_logits.npy"));
    let vocab = model.config.vocab_size;
    assert_eq!(shape, vec![ids.len(), vocab]);
    let ours = model.forward(&ids).unwrap();
    let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let max_diff = ours
        .iter()
        .zip(&reference)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("{name}: max |diff| {max_diff:.3e}, logit scale {scale:.3}");
    assert!(max_diff < 1e-4 * scale, "{name}: max |diff| {max_diff}");
    for (t, (a, b)) in ours
        .chunks_exact(vocab)
        .zip(reference.chunks_exact(vocab))
        .enumerate()
    {
        assert_eq!(
            common::argmax(a),
            common::argmax(b),
            "{name}: argmax at {t}"
        );
    }
    max_diff
}

#[test]
fn tiny_gpt_oss_matches_transformers() {
    check("tiny-gpt_oss");
}

#[test]
fn tiny_gpt_oss_mxfp4_matches_transformers() {
    check("tiny-gpt_oss-mxfp4");
}

#[test]
fn without_sinks_the_logits_move() {
    // The sinks are read and used: dropping them changes the output.
    let dir = common::fixture("tiny-gpt_oss");
    let mut model = Model::from_hf_dir(&dir).unwrap();
    let ids = common::read_ids(&dir.join("reference_ids.json"));
    let with = model.forward(&ids).unwrap();
    for l in &mut model.layers {
        assert!(l.sinks.is_some());
        l.sinks = None;
    }
    let without = model.forward(&ids).unwrap();
    let diff = with
        .iter()
        .zip(&without)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff > 1e-2, "sinks changed the logits by only {diff}");
}
