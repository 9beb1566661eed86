//! The linear-layer hook, the partial-head forward, and thread-count independence.

mod common;

use pajamas_runtime::{ops, LinearInput, Model};

#[test]
fn hook_sees_every_linear_input_in_order() {
    let model = Model::from_hf_dir(common::fixture("tiny-qwen3")).unwrap();
    let c = model.config.clone();
    let ids: Vec<u32> = vec![5, 17, 300, 4000, 42, 7];
    let n = ids.len();
    let mut seen: Vec<(usize, &'static str, String, usize, usize)> = Vec::new();
    let mut first_q_input = Vec::new();
    let mut hook = |x: &LinearInput<'_>| {
        assert_eq!(x.data.len(), x.n_tokens * x.in_features);
        if x.layer == 0 && x.name == "q_proj" {
            first_q_input = x.data.to_vec();
        }
        seen.push((
            x.layer,
            x.name,
            x.tensor.to_string(),
            x.n_tokens,
            x.in_features,
        ));
    };
    let with_hook = model.forward_with_hook(&ids, &mut hook).unwrap();
    assert_eq!(with_hook, model.forward(&ids).unwrap());

    let per_layer = [
        ("q_proj", "self_attn", c.hidden_size),
        ("k_proj", "self_attn", c.hidden_size),
        ("v_proj", "self_attn", c.hidden_size),
        ("o_proj", "self_attn", c.q_dim()),
        ("gate_proj", "mlp", c.hidden_size),
        ("up_proj", "mlp", c.hidden_size),
        ("down_proj", "mlp", c.intermediate_size),
    ];
    assert_eq!(seen.len(), c.n_layers * per_layer.len() + 1);
    for l in 0..c.n_layers {
        for (j, (name, block, inp)) in per_layer.iter().enumerate() {
            let s = &seen[l * per_layer.len() + j];
            let tensor = format!("model.layers.{l}.{block}.{name}.weight");
            assert_eq!((s.0, s.1, &s.2, s.3, s.4), (l, *name, &tensor, n, *inp));
        }
    }
    let head = seen.last().unwrap();
    assert_eq!(
        (head.0, head.1, head.2.as_str(), head.3, head.4),
        (
            c.n_layers,
            "lm_head",
            "model.embed_tokens.weight",
            n,
            c.hidden_size
        )
    );

    // The first q_proj input is the input RMSNorm of the embeddings.
    let h = c.hidden_size;
    let emb: Vec<f32> = ids
        .iter()
        .flat_map(|&t| model.embed_tokens[t as usize * h..(t as usize + 1) * h].to_vec())
        .collect();
    let mut expect = vec![0.0; emb.len()];
    ops::rms_norm(
        &emb,
        &model.layers[0].attn_norm,
        c.rms_norm_eps,
        &mut expect,
    );
    assert_eq!(first_q_input, expect);
}

#[test]
fn forward_rows_returns_the_tail_of_the_full_logits() {
    let model = Model::from_hf_dir(common::fixture("tiny-llama")).unwrap();
    let ids: Vec<u32> = (0..20).map(|i| (i * 191 + 3) % 4096).collect();
    let full = model.forward(&ids).unwrap();
    let mut head_rows = 0;
    let mut hook = |x: &LinearInput<'_>| {
        if x.name == "lm_head" {
            head_rows = x.n_tokens;
        }
    };
    let tail = model.forward_rows(&ids, 12, &mut hook).unwrap();
    assert_eq!(head_rows, 8);
    assert_eq!(tail, full[12 * 4096..]);
    assert!(model
        .forward_rows(&ids, 20, &mut |_: &LinearInput<'_>| {})
        .is_err());
    assert!(model.forward(&[]).is_err());
    assert!(model.forward(&[4096]).is_err());
}

#[test]
fn logits_do_not_depend_on_the_thread_count() {
    let model = Model::from_hf_dir(common::repo_root().join("models/demo")).unwrap();
    let ids: Vec<u32> = (0..80).map(|i| (i * 37 + 11) % 4096).collect();
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| model.forward(&ids).unwrap())
    };
    let one = run(1);
    for threads in [2, 3, 4] {
        let other = run(threads);
        let identical = one
            .iter()
            .zip(&other)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(identical, "logits differ between 1 and {threads} threads");
    }
}
