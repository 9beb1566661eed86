//! The runtime's MLX weight source: every dense family written as an MLX checkpoint by
//! our writer and read back through `MlxSource` gives exactly `mx.dequantize` of the
//! quantized modules (the same values `pajamas_mlx` computes from the original), the
//! original floats for everything kept, and logits close to the HF original's.

use std::path::{Path, PathBuf};

use llama_pajamas::quantize::{quantize_gguf, QuantizeOptions};
use pajamas_mlx::{MlxChoice, MlxDtype};
use pajamas_plan::{Overrides, Rules};
use pajamas_runtime::{HfSource, MlxSource, Model, WeightSource};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn convert(name: &str, choice: MlxChoice, out: &Path) -> PathBuf {
    let opts = QuantizeOptions {
        model: fixture(name).display().to_string(),
        output: out.to_path_buf(),
        ftypes: vec![],
        mlx: Some(choice),
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

/// Checks `name` at `bits`; returns the logits' max relative difference to the original.
fn check(name: &str, bits: u32, tolerance: f32) -> f32 {
    let dir = tempfile::tempdir().unwrap();
    let choice = MlxChoice::Uniform {
        bits,
        group_size: 32,
    };
    let out = convert(name, choice, dir.path());
    assert!(out.join("config.json").is_file(), "{}", out.display());

    // The quantized q_proj reads back as mx.dequantize(mx.quantize(original)).
    let hf = HfSource::open(fixture(name)).unwrap();
    let mlx = MlxSource::open(&out).unwrap();
    let q = "model.layers.0.self_attn.q_proj.weight";
    let (shape, original) = hf.read_tensor(q).unwrap();
    let dtype = MlxDtype::from_dtype(hf.hf_model().tensor(q).unwrap().dtype).unwrap();
    let want = pajamas_mlx::quantize(&original, shape[1], bits, 32, dtype)
        .unwrap()
        .dequantize();
    let (got_shape, got) = mlx.read_tensor(q).unwrap();
    assert_eq!(got_shape, shape, "{name}");
    assert!(
        got.iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "{name}: dequantized q_proj differs from mx.dequantize(mx.quantize(w))"
    );
    // Norms are kept as they are.
    let n = "model.norm.weight";
    assert_eq!(mlx.read_tensor(n).unwrap(), hf.read_tensor(n).unwrap());

    let ids: Vec<u32> = (0..40u32).map(|i| (i * 97 + 13) % 4096).collect();
    let reference = Model::from_hf_dir(fixture(name)).unwrap();
    let model = Model::open(&out).unwrap();
    assert_eq!(model.config.family, reference.config.family, "{name}");
    let d = max_rel_diff(
        &model.forward(&ids).unwrap(),
        &reference.forward(&ids).unwrap(),
    );
    eprintln!("{name}: MLX {bits}-bit g32 vs HF max rel diff {d:.2e}");
    assert!(
        d > 0.0 && d < tolerance,
        "{name}: {bits}-bit logits differ by {d}"
    );
    d
}

#[test]
fn llama_from_mlx() {
    let d8 = check("tiny-llama", 8, 0.05);
    // Random tiny weights have no structure to spare: 4 bits lose much more.
    let d4 = check("tiny-llama", 4, 1.0);
    assert!(d4 > 2.0 * d8, "4-bit {d4} vs 8-bit {d8}");
}

#[test]
fn llama3_from_mlx() {
    check("tiny-llama3", 8, 0.05);
}

#[test]
fn mistral_from_mlx() {
    check("tiny-mistral", 8, 0.05);
}

#[test]
fn qwen2_from_mlx() {
    check("tiny-qwen2", 8, 0.05);
}

#[test]
fn qwen3_from_mlx() {
    check("tiny-qwen3", 8, 0.05);
}

#[test]
fn gemma3_from_mlx() {
    check("tiny-gemma3", 8, 0.05);
}

#[test]
fn not_an_mlx_folder_is_a_clear_error() {
    let err = MlxSource::open(fixture("tiny-llama"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("quantization"),
        "{err}"
    );
}
