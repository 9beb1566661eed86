//! Tokenizer -> GGUF vocabulary: byte-level BPE from `tokenizer.json` (GGUF model
//! `gpt2`) and SentencePiece from `tokenizer.model` (GGUF model `llama`).
//!
//! llama.cpp needs to know which pre-tokenizer (the regex that splits text before BPE) a
//! BPE vocabulary uses: `tokenizer.ggml.pre`. Upstream's converter finds it by encoding
//! a check string and hashing the ids; we read the pre-tokenizer definition in
//! `tokenizer.json` directly and match it against the definitions llama.cpp implements.
//! An unknown definition is an error that names `--pre-tokenizer`, never a guess.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

/// GGUF token types.
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Everything the `tokenizer.*` GGUF keys need.
#[derive(Debug, Clone, Default)]
pub struct Vocab {
    /// `gpt2` (byte-level BPE) or `llama` (SentencePiece).
    pub model: String,
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    /// SentencePiece scores (empty for BPE).
    pub scores: Vec<f32>,
    /// BPE merges as `"a b"`.
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub chat_template: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error(
        "{path}: unrecognised pre-tokenizer ({summary}). llama.cpp needs its name in \
         tokenizer.ggml.pre; pass it with --pre-tokenizer NAME (e.g. gpt-2, llama-bpe, qwen2, \
         smollm, deepseek-v3) after checking which one the model's tokenizer matches"
    )]
    UnknownPre { path: String, summary: String },
    #[error("{dir}: no tokenizer.json or tokenizer.model; GGUF files need the vocabulary. Copy the tokenizer files into the model folder")]
    Missing { dir: String },
}

fn invalid(path: &Path, message: impl Into<String>) -> TokenizerError {
    TokenizerError::Invalid {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// The splitting regexes llama.cpp implements, by the GGUF `pre` name that selects them.
const KNOWN_SPLITS: &[(&str, &str)] = &[
    (
        "llama-bpe",
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    (
        "qwen2",
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
];

/// Names the pre-tokenizer of a `tokenizer.json`.
fn identify_pre(pre: &Value) -> Result<String, String> {
    let mut digits_individual = false;
    let mut splits: Vec<String> = Vec::new();
    let mut byte_level_regex = None;
    let mut other: Vec<String> = Vec::new();
    let mut visit = |p: &Value| match p.get("type").and_then(Value::as_str) {
        Some("Digits") => {
            digits_individual = p
                .get("individual_digits")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        }
        Some("Split") => {
            if let Some(r) = p.pointer("/pattern/Regex").and_then(Value::as_str) {
                splits.push(r.to_string());
            } else {
                other.push("Split(non-regex)".into());
            }
        }
        Some("ByteLevel") => {
            byte_level_regex = Some(p.get("use_regex").and_then(Value::as_bool).unwrap_or(true))
        }
        Some(t) => other.push(t.to_string()),
        None => other.push("?".into()),
    };
    match pre.get("type").and_then(Value::as_str) {
        Some("Sequence") => {
            for p in pre
                .get("pretokenizers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                visit(p);
            }
        }
        Some(_) => visit(pre),
        None => return Err("no pre_tokenizer".into()),
    }
    let summary = format!(
        "splits {:?}, individual digits {}, byte-level regex {:?}, other {:?}",
        splits, digits_individual, byte_level_regex, other
    );
    if !other.is_empty() || byte_level_regex.is_none() {
        return Err(summary);
    }
    match (splits.as_slice(), digits_individual, byte_level_regex) {
        ([], false, Some(true)) => Ok("gpt-2".into()),
        ([], true, Some(true)) => Ok("smollm".into()),
        ([one], false, Some(false)) => KNOWN_SPLITS
            .iter()
            .find(|(_, r)| r == one)
            .map(|(n, _)| n.to_string())
            .ok_or(summary),
        _ => Err(summary),
    }
}

/// Whether an added token looks like a control token even if not marked special.
fn looks_special(t: &str) -> bool {
    (t.starts_with("<|") && t.ends_with("|>"))
        || matches!(
            t,
            "<s>" | "</s>" | "<pad>" | "<unk>" | "<mask>" | "<bos>" | "<eos>"
        )
        || (t.starts_with("<｜") && t.ends_with("｜>"))
}

/// A token id given in tokenizer_config.json as a string or `{content: ...}`.
fn special_id(cfg: &Value, key: &str, ids: &HashMap<String, u32>) -> Option<u32> {
    let v = cfg.get(key)?;
    let text = v
        .as_str()
        .or_else(|| v.get("content").and_then(Value::as_str))?;
    ids.get(text).copied()
}

fn id_from_config(config: &Value, key: &str) -> Option<u32> {
    let v = config.get(key)?;
    v.as_u64()
        .or_else(|| v.as_array()?.first()?.as_u64())
        .map(|x| x as u32)
}

/// Reads the vocabulary of the model folder `dir`. `vocab_size` (from config.json) pads
/// BPE vocabularies with `[PAD{i}]` tokens as llama.cpp's converter does.
pub fn read_vocab(
    dir: &Path,
    config: &Value,
    vocab_size: u64,
    pre_override: Option<&str>,
) -> Result<Vocab, TokenizerError> {
    let tj = dir.join("tokenizer.json");
    let tc_path = dir.join("tokenizer_config.json");
    let tc: Value = std::fs::read_to_string(&tc_path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    let mut vocab = if tj.is_file() {
        bpe_vocab(&tj, vocab_size, pre_override)?
    } else {
        let sp = dir.join("tokenizer.model");
        if !sp.is_file() {
            return Err(TokenizerError::Missing {
                dir: dir.display().to_string(),
            });
        }
        crate::sentencepiece::spm_vocab(&sp, vocab_size)?
    };
    let ids: HashMap<String, u32> = vocab
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    vocab.bos =
        special_id(&tc, "bos_token", &ids).or_else(|| id_from_config(config, "bos_token_id"));
    vocab.eos =
        special_id(&tc, "eos_token", &ids).or_else(|| id_from_config(config, "eos_token_id"));
    vocab.unk = special_id(&tc, "unk_token", &ids).or(vocab.unk);
    vocab.pad =
        special_id(&tc, "pad_token", &ids).or_else(|| id_from_config(config, "pad_token_id"));
    vocab.add_bos = tc
        .get("add_bos_token")
        .and_then(Value::as_bool)
        .or(vocab.add_bos);
    vocab.add_eos = tc
        .get("add_eos_token")
        .and_then(Value::as_bool)
        .or(vocab.add_eos);
    vocab.chat_template = match tc.get("chat_template") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
    };
    Ok(vocab)
}

fn bpe_vocab(
    path: &Path,
    vocab_size: u64,
    pre_override: Option<&str>,
) -> Result<Vocab, TokenizerError> {
    let text = std::fs::read_to_string(path).map_err(|e| invalid(path, e.to_string()))?;
    let tj: Value =
        serde_json::from_str(&text).map_err(|e| invalid(path, format!("invalid JSON: {e}")))?;
    let model = tj.get("model").ok_or_else(|| invalid(path, "no 'model'"))?;
    if model.get("type").and_then(Value::as_str) != Some("BPE") {
        return Err(invalid(
            path,
            format!(
                "tokenizer model {:?} is not supported yet (byte-level BPE and SentencePiece are)",
                model.get("type")
            ),
        ));
    }
    let map = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid(path, "model.vocab is not an object"))?;
    let mut by_id: HashMap<u32, String> = HashMap::with_capacity(map.len());
    for (tok, id) in map {
        let id = id
            .as_u64()
            .ok_or_else(|| invalid(path, format!("token '{tok}' has a non-integer id")))?
            as u32;
        by_id.insert(id, tok.clone());
    }
    let mut added: HashMap<u32, (String, bool)> = HashMap::new();
    for a in tj
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(content)) = (
            a.get("id").and_then(Value::as_u64),
            a.get("content").and_then(Value::as_str),
        ) else {
            continue;
        };
        let special = a.get("special").and_then(Value::as_bool).unwrap_or(false);
        added.insert(id as u32, (content.to_string(), special));
    }
    let max_id = by_id.keys().chain(added.keys()).copied().max().unwrap_or(0) as u64;
    let n = vocab_size.max(max_id + 1);
    if n > 10_000_000 {
        return Err(invalid(
            path,
            format!("vocabulary of {n} tokens is implausible"),
        ));
    }
    let mut tokens = Vec::with_capacity(n as usize);
    let mut types = Vec::with_capacity(n as usize);
    for i in 0..n as u32 {
        if let Some((content, special)) = added.get(&i) {
            tokens.push(content.clone());
            types.push(if *special || looks_special(content) {
                token_type::CONTROL
            } else {
                token_type::USER_DEFINED
            });
        } else if let Some(t) = by_id.get(&i) {
            tokens.push(t.clone());
            types.push(token_type::NORMAL);
        } else {
            tokens.push(format!("[PAD{i}]"));
            types.push(token_type::UNUSED);
        }
    }
    let merges = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(path, "model.merges missing"))?
        .iter()
        .map(|m| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(pair) if pair.len() == 2 => Ok(format!(
                "{} {}",
                pair[0].as_str().unwrap_or_default(),
                pair[1].as_str().unwrap_or_default()
            )),
            _ => Err(invalid(path, "a merge is neither \"a b\" nor [a, b]")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pre =
        match pre_override {
            Some(p) => p.to_string(),
            None => identify_pre(tj.get("pre_tokenizer").unwrap_or(&Value::Null)).map_err(
                |summary| TokenizerError::UnknownPre {
                    path: path.display().to_string(),
                    summary,
                },
            )?,
        };
    Ok(Vocab {
        model: "gpt2".into(),
        pre: Some(pre),
        tokens,
        types,
        merges,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_pre_tokenizers() {
        let gpt2 = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        assert_eq!(identify_pre(&gpt2).unwrap(), "gpt-2");
        let smollm = serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]});
        assert_eq!(identify_pre(&smollm).unwrap(), "smollm");
        let qwen = serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": KNOWN_SPLITS[1].1}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]});
        assert_eq!(identify_pre(&qwen).unwrap(), "qwen2");
        let odd = serde_json::json!({"type": "Whitespace"});
        assert!(identify_pre(&odd).is_err());
    }
}
