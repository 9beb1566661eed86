//! The runtime's GGUF weight source: every dense family converted to F32 GGUF by our
//! writer and read back through `GgufSource` gives the logits of the HF original (the
//! name mapping, q/k row order and Gemma norm offset are undone exactly), and a Q8_0
//! file gives close logits.

use std::path::PathBuf;

use llama_pajamas::quantize::{quantize_gguf, QuantizeOptions};
use pajamas_plan::{Ftype, Overrides, Rules};
use pajamas_runtime::Model;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn convert(name: &str, ftype: Ftype, out: &std::path::Path) -> PathBuf {
    let opts = QuantizeOptions {
        model: fixture(name).display().to_string(),
        output: out.to_path_buf(),
        ftypes: vec![ftype],
        mlx: None,
        rules: Rules::ArchitectureAware,
        overrides: Overrides::default(),
        pre_tokenizer: None,
        imatrix: None,
        budget: None,
        dry_run: false,
        verbose_plan: false,
        force: true,
        progress: false,
    };
    let report = quantize_gguf(&opts).unwrap();
    out.join(&report.outputs[0].path)
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn check(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let hf = Model::from_hf_dir(fixture(name)).unwrap();
    let ids: Vec<u32> = (0..40u32).map(|i| (i * 97 + 13) % 4096).collect();
    let want = hf.forward(&ids).unwrap();
    let f32_file = convert(name, Ftype::F32, &dir.path().join("f32"));
    let from_gguf = Model::open(&f32_file).unwrap();
    assert_eq!(from_gguf.config.family, hf.config.family, "{name}");
    // llama.cpp's `llama` architecture ignores Mistral's window (128 here, longer than
    // the test sequence); the GGUF source reads the file as llama.cpp does.
    if name != "tiny-mistral" {
        assert_eq!(from_gguf.config.layer_sliding, hf.config.layer_sliding);
    }
    // As llama.cpp computes it (f16 KV cache): close to the original.
    let got = from_gguf.forward(&ids).unwrap();
    let d16 = max_rel_diff(&got, &want);
    eprintln!("{name}: F32 GGUF (llama.cpp numerics) vs HF max rel diff {d16:.2e}");
    assert!(
        d16 > 0.0 && d16 < 5e-3,
        "{name}: F32 GGUF logits differ by {d16}"
    );
    // In f32 throughout: the weights are exactly the original's.
    let mut exact = from_gguf;
    exact.llama_cpp_activations = false;
    let got = exact.forward(&ids).unwrap();
    let d = max_rel_diff(&got, &want);
    eprintln!("{name}: F32 GGUF (f32 numerics) vs HF max rel diff {d:.2e}");
    assert!(d < 1e-5, "{name}: F32 GGUF logits differ by {d}");
    let q8 = Model::open(convert(name, Ftype::Q8_0, &dir.path().join("q8"))).unwrap();
    let d8 = max_rel_diff(&q8.forward(&ids).unwrap(), &want);
    eprintln!("{name}: Q8_0 GGUF vs HF max rel diff {d8:.2e}");
    assert!(d8 > 0.0 && d8 < 0.05, "{name}: Q8_0 logits differ by {d8}");
}

#[test]
fn llama_from_gguf() {
    check("tiny-llama");
}

#[test]
fn llama3_from_gguf() {
    check("tiny-llama3");
}

#[test]
fn mistral_from_gguf() {
    check("tiny-mistral");
}

#[test]
fn qwen2_from_gguf() {
    check("tiny-qwen2");
}

#[test]
fn qwen3_from_gguf() {
    check("tiny-qwen3");
}

#[test]
fn gemma3_from_gguf() {
    check("tiny-gemma3");
}
