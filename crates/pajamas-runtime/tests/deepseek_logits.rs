//! Our DeepSeek forward pass against transformers' logits on the tiny fixtures: V3 (MLA
//! with a query LoRA, grouped sigmoid routing with correction bias, shared expert,
//! leading dense layer, YaRN) and V2-Lite style (plain q_proj, softmax routing without
//! renormalisation, YaRN with mscale 0.707).

mod common;

use pajamas_runtime::Model;

fn check(name: &str) {
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
    assert!(
        max_diff < 1e-4 * scale,
        "max |diff| {max_diff} vs scale {scale}"
    );
    for (t, (a, b)) in ours
        .chunks_exact(vocab)
        .zip(reference.chunks_exact(vocab))
        .enumerate()
    {
        assert_eq!(common::argmax(a), common::argmax(b), "argmax at {t}");
    }
}

#[test]
fn tiny_deepseek_v3_matches_transformers() {
    check("tiny-deepseek_v3");
}

#[test]
fn tiny_deepseek_v2_matches_transformers() {
    check("tiny-deepseek_v2");
}
