//! The tokenizer on the repository's model folders: llama.cpp's ids for `models/demo`
//! under every pre-tokenizer (tests/data/llama_cpp_golden.json, which
//! tests/oracle/test_tokenizer.py checks against llama.cpp itself), the tiny fixtures,
//! GGUF vs HF-folder loading, and byte-exact decode round trips.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pajamas_convert::metadata::tokenizer_metadata;
use pajamas_convert::tokenizer::read_vocab;
use pajamas_gguf::{GgufFile, GgufWriter, Value};
use pajamas_tokenizer::{Tokenizer, TokenizerError};
use serde_json::Value as Json;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn demo() -> PathBuf {
    repo().join("models/demo")
}

fn config(dir: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

/// The demo vocabulary as our converter writes it with `--pre-tokenizer pre`.
fn demo_with_pre(pre: &str) -> Tokenizer {
    let dir = demo();
    let vocab = read_vocab(&dir, &config(&dir), 4096, Some(pre)).unwrap();
    Tokenizer::from_vocab(&vocab).unwrap()
}

/// (pre, text, llama.cpp's ids).
fn golden() -> Vec<(String, String, Vec<u32>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/llama_cpp_golden.json");
    let doc: Json = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["pre"].as_str().unwrap().to_string(),
                c["text"].as_str().unwrap().to_string(),
                serde_json::from_value(c["ids"].clone()).unwrap(),
            )
        })
        .collect()
}

fn corpora() -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(repo().join("data/corpora"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn golden_ids_are_llama_cpps() {
    let cases = golden();
    let mut by_pre: BTreeMap<&str, usize> = BTreeMap::new();
    let mut tokenizers: BTreeMap<String, Tokenizer> = BTreeMap::new();
    for (pre, text, want) in &cases {
        let tok = tokenizers
            .entry(pre.clone())
            .or_insert_with(|| demo_with_pre(pre));
        assert_eq!(&tok.encode(text, true), want, "pre {pre}, text {text:?}");
        *by_pre.entry(pre).or_default() += 1;
    }
    let pres: Vec<_> = by_pre.keys().copied().collect();
    assert_eq!(pres, ["default", "gpt-2", "llama-bpe", "qwen2", "smollm"]);
    assert!(by_pre.values().all(|&n| n >= 20), "{by_pre:?}");
}

#[test]
fn tiny_fixtures_tokenize_like_the_demo() {
    let gpt2: Vec<_> = golden()
        .into_iter()
        .filter(|(pre, _, _)| pre == "gpt-2")
        .collect();
    let mut n = 0;
    for entry in std::fs::read_dir(repo().join("tests/fixtures")).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.join("tokenizer.json").is_file() {
            continue;
        }
        n += 1;
        let tok = Tokenizer::from_hf_dir(&dir).unwrap();
        assert_eq!(tok.vocab_size(), 4096, "{}", dir.display());
        assert_eq!(tok.pre(), "gpt-2");
        // tokenizer_config.json: bos "<|endoftext|>" (id 0), add_bos_token false.
        assert_eq!(tok.bos(), Some(0));
        assert!(!tok.add_bos());
        for (_, text, want) in &gpt2 {
            assert_eq!(&tok.encode(text, true), want, "{}: {text:?}", dir.display());
        }
        // reference_ids.json holds random ids (3..4095), not a tokenized text: their
        // text must survive encode/decode.
        let ids: Vec<u32> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference_ids.json")).unwrap())
                .unwrap();
        let text = tok.decode(&ids);
        assert!(!text.is_empty());
        assert_eq!(tok.decode(&tok.encode(&text, false)), text);
    }
    assert!(n >= 6, "only {n} fixtures with a tokenizer");
}

#[test]
fn corpora_round_trip_through_decode() {
    let tok = Tokenizer::from_hf_dir(&demo()).unwrap();
    for (name, text) in corpora() {
        let ids = tok.encode(&text, true);
        assert!(ids.len() > text.len() / 8, "{name}: {} ids", ids.len());
        assert!(ids.iter().all(|&i| (i as usize) < tok.vocab_size()));
        assert_eq!(tok.decode(&ids), text, "{name}");
    }
}

#[test]
fn gguf_and_hf_folder_agree() {
    let dir = demo();
    let vocab = read_vocab(&dir, &config(&dir), 4096, None).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("vocab.gguf");
    let mut w = GgufWriter::create(&path).unwrap();
    w.add_metadata("general.architecture", Value::String("llama".into()))
        .unwrap();
    for (k, v) in tokenizer_metadata(&vocab) {
        w.add_metadata(&k, v).unwrap();
    }
    w.finish().unwrap();
    let file = GgufFile::open(&path).unwrap();
    let from_gguf = Tokenizer::from_gguf(&file).unwrap();
    let from_hf = Tokenizer::from_hf_dir(&dir).unwrap();
    assert_eq!(from_gguf.vocab_size(), from_hf.vocab_size());
    assert_eq!(from_gguf.bos(), from_hf.bos());
    assert_eq!(from_gguf.add_bos(), from_hf.add_bos());
    for (name, text) in corpora() {
        assert_eq!(
            from_gguf.encode(&text, true),
            from_hf.encode(&text, true),
            "{name}"
        );
    }
}

#[test]
fn gguf_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, meta: Vec<(&str, Value)>| {
        let path = tmp.path().join(name);
        let mut w = GgufWriter::create(&path).unwrap();
        for (k, v) in meta {
            w.add_metadata(k, v).unwrap();
        }
        w.finish().unwrap();
        GgufFile::open(&path).unwrap()
    };
    let tokens = Value::Array(pajamas_gguf::Array::String(vec!["a".into(), "b".into()]));
    let merges = Value::Array(pajamas_gguf::Array::String(vec!["a b".into()]));

    let none = write("none.gguf", vec![]);
    let e = Tokenizer::from_gguf(&none).unwrap_err().to_string();
    assert!(e.contains("tokenizer.ggml.model"), "{e}");

    let spm = write(
        "spm.gguf",
        vec![
            ("tokenizer.ggml.model", Value::String("llama".into())),
            ("tokenizer.ggml.tokens", tokens.clone()),
        ],
    );
    assert!(matches!(
        Tokenizer::from_gguf(&spm),
        Err(TokenizerError::UnsupportedModel { .. })
    ));

    let odd_pre = write(
        "pre.gguf",
        vec![
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String("tekken".into())),
            ("tokenizer.ggml.tokens", tokens.clone()),
            ("tokenizer.ggml.merges", merges.clone()),
        ],
    );
    let e = Tokenizer::from_gguf(&odd_pre).unwrap_err().to_string();
    assert!(e.contains("'tekken'") && e.contains("pre.gguf"), "{e}");

    let ok = write(
        "ok.gguf",
        vec![
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String("qwen2".into())),
            ("tokenizer.ggml.tokens", tokens),
            ("tokenizer.ggml.merges", merges),
            ("tokenizer.ggml.bos_token_id", Value::U32(1)),
            ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
        ],
    );
    let tok = Tokenizer::from_gguf(&ok).unwrap();
    // BOS; "ab" merges but is no token: its bytes; " a": 'Ġ' is no token and vanishes.
    assert_eq!(tok.encode("ab a", true), [1, 0, 1, 0]);
    assert_eq!(tok.bos(), Some(1));
}

#[test]
fn tokenizer_is_shareable() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
}
