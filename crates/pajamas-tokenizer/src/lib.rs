//! A byte-level BPE text encoder that tokenizes exactly like llama.cpp.
//!
//! `eval`, `imatrix` and calibration turn text into token ids; the ids must be the ones
//! llama.cpp would feed the model, or perplexities and importance matrices are computed
//! on a different input than the one users run. So this crate reimplements llama.cpp's
//! `llama_tokenize(text, add_special, parse_special)` for GGUF tokenizer model `gpt2`
//! (byte-level BPE), with its quirks rather than HuggingFace's:
//!
//! - words come from llama.cpp's hand-written pre-tokenizer scanners and its own Unicode
//!   15.1 category table, not from the tokenizer.json regexes;
//! - merges apply by rank, leftmost first, and a symbol that is not a token falls back
//!   to its one-byte tokens (other bytes are dropped, never a panic);
//! - user-defined added tokens are matched in the raw text before BPE, even when special
//!   tokens are not parsed; control tokens only when they are;
//! - BOS/EOS defaults and token-type fixes follow llama.cpp's vocabulary loader.
//!
//! No text normalisation is done: llama.cpp does none for byte-level BPE.
//!
//! Not reproduced: llama.cpp's per-model LSTRIP/RSTRIP token attributes (set by model
//! name for phi-3, jina and modern-bert models, which our converter does not handle),
//! and the detail that its FIM-token detection marks only the first matching text of
//! each kind as control (here every listed text is).

use std::collections::HashMap;
use std::path::Path;

use pajamas_convert::tokenizer::{token_type, Vocab};
use pajamas_gguf::GgufFile;

mod bpe;
mod pretokenize;
mod unicode;

use bpe::Bpe;
use pretokenize::{Chars, Split};

/// Errors from loading a tokenizer. Encoding never fails.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(
        "{origin}: tokenizer model '{model}' is not supported: only byte-level BPE \
         (tokenizer.ggml.model \"gpt2\") is"
    )]
    UnsupportedModel { origin: String, model: String },
    #[error(
        "{origin}: pre-tokenizer '{pre}' is not implemented (supported: gpt-2, smollm, \
         llama-bpe, qwen2, default and their llama.cpp aliases)"
    )]
    UnknownPre { origin: String, pre: String },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error(transparent)]
    Convert(#[from] pajamas_convert::TokenizerError),
}

pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;

/// Token attributes, as llama.cpp derives them from `tokenizer.ggml.token_type`.
mod attr {
    pub const UNKNOWN: u8 = 1 << 0;
    pub const UNUSED: u8 = 1 << 1;
    pub const NORMAL: u8 = 1 << 2;
    pub const CONTROL: u8 = 1 << 3;
    pub const USER_DEFINED: u8 = 1 << 4;
    pub const BYTE: u8 = 1 << 5;
}

fn attr_of(token_type: i32) -> u8 {
    match token_type {
        token_type::NORMAL => attr::NORMAL,
        token_type::UNKNOWN => attr::UNKNOWN,
        token_type::CONTROL => attr::CONTROL,
        token_type::USER_DEFINED => attr::USER_DEFINED,
        token_type::UNUSED => attr::UNUSED,
        token_type::BYTE => attr::BYTE,
        _ => 0,
    }
}

/// Texts llama.cpp's loader turns into control tokens whatever their type (its EOT,
/// EOM, FIM and end-of-generation detection), so that unparsed text never matches them.
const FORCED_CONTROL: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
    "<|eom_id|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "</s>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "[e~[",
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "[PAD]",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
];

/// Texts llama.cpp always treats as user-defined (its gpt-oss rendering fix).
const FORCED_USER_DEFINED: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

/// What a `tokenizer.ggml.pre` name selects in llama.cpp.
#[derive(Clone, Copy, Debug)]
struct Pre {
    split: Split,
    /// A word that is a whole token is emitted without merging (llama.cpp's
    /// `ignore_merges`, set for Llama 3).
    ignore_merges: bool,
    /// `add_bos` when the file does not say.
    add_bos: bool,
}

/// Maps a `pre` name to its behaviour, with the names llama.cpp handles identically.
fn pre_of(name: Option<&str>) -> Option<Pre> {
    let pre = |split, ignore_merges, add_bos| {
        Some(Pre {
            split,
            ignore_merges,
            add_bos,
        })
    };
    match name {
        // llama.cpp warns and uses its `default` pre-tokenizer.
        None | Some("default") => pre(Split::Default, false, false),
        Some(
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
            | "a.x-4.0" | "mellum" | "mpt" | "olmo" | "jais" | "exaone4",
        ) => pre(Split::Gpt2, false, false),
        Some(
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b",
        ) => pre(Split::Smollm, false, false),
        Some(
            "llama-bpe" | "llama3" | "llama-v3" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
            | "lfm2",
        ) => pre(Split::Llama3, true, true),
        Some("dbrx" | "smaug-bpe") => pre(Split::Llama3, false, false),
        Some("qwen2" | "deepseek-r1-qwen" | "megrez" | "stablelm2") => {
            pre(Split::Qwen2, false, false)
        }
        Some(_) => None,
    }
}

/// The parts of a vocabulary a tokenizer is built from, wherever they come from.
struct Parts<'a> {
    origin: String,
    model: &'a str,
    pre: Option<&'a str>,
    tokens: &'a [String],
    types: Option<&'a [i32]>,
    merges: &'a [String],
    bos: Option<u64>,
    eos: Option<u64>,
    add_bos: Option<bool>,
    add_eos: Option<bool>,
}

/// A byte-level BPE tokenizer; cheap to share between threads (`&self` everywhere).
pub struct Tokenizer {
    pre_name: String,
    pre: Pre,
    bpe: Bpe,
    /// Token texts by id (empty ones renamed `[EMPTY_i]` as llama.cpp does).
    tokens: Vec<String>,
    attrs: Vec<u8>,
    /// Control, user-defined and unknown tokens, longest text first: the order
    /// llama.cpp matches them in raw text.
    specials: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    /// GPT-2's byte -> character map and its inverse.
    byte_chars: [char; 256],
    char_bytes: HashMap<char, u8>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("pre", &self.pre_name)
            .field("vocab_size", &self.tokens.len())
            .field("bos", &self.bos)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

/// A piece of input: raw text (a byte range) or a token matched in it.
#[derive(Clone, Debug)]
enum Fragment {
    Text(usize, usize),
    Token(u32),
}

impl Tokenizer {
    /// From the `tokenizer.*` keys of a GGUF file (`tokenizer.ggml.model` must be
    /// `gpt2`): tokens, merges, pre, token_type, bos/eos ids and add_bos/add_eos. Reads
    /// only metadata, so a vocab-only or header-only file is enough.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer> {
        let origin = file.path().display().to_string();
        let invalid = |message: &str| TokenizerError::Invalid {
            origin: origin.clone(),
            message: message.to_string(),
        };
        let model = file
            .get_str("tokenizer.ggml.model")
            .ok_or_else(|| invalid("no tokenizer.ggml.model (not a model with a vocabulary)"))?;
        let tokens = file
            .get_str_array("tokenizer.ggml.tokens")
            .ok_or_else(|| invalid("no tokenizer.ggml.tokens string array"))?;
        let merges = file.get_str_array("tokenizer.ggml.merges");
        if model == "gpt2" && merges.is_none() {
            return Err(invalid("no tokenizer.ggml.merges string array"));
        }
        let types = match file.get("tokenizer.ggml.token_type") {
            None => None,
            Some(_) => Some(
                file.get_i32_array("tokenizer.ggml.token_type")
                    .ok_or_else(|| invalid("tokenizer.ggml.token_type is not an i32 array"))?,
            ),
        };
        Tokenizer::build(Parts {
            origin: origin.clone(),
            model,
            pre: file.get_str("tokenizer.ggml.pre"),
            tokens,
            types,
            merges: merges.unwrap_or_default(),
            bos: file.get_uint("tokenizer.ggml.bos_token_id"),
            eos: file.get_uint("tokenizer.ggml.eos_token_id"),
            add_bos: file.get_bool("tokenizer.ggml.add_bos_token"),
            add_eos: file.get_bool("tokenizer.ggml.add_eos_token"),
        })
    }

    /// From a HuggingFace model folder (`tokenizer.json`, `tokenizer_config.json`,
    /// `config.json`), read by the converter's own code so that the result is what the
    /// GGUF file we would write from the folder tokenizes like.
    pub fn from_hf_dir(dir: &Path) -> Result<Tokenizer> {
        let config: serde_json::Value = std::fs::read_to_string(dir.join("config.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(serde_json::Value::Null);
        let vocab_size = config
            .get("vocab_size")
            .or_else(|| config.pointer("/text_config/vocab_size"))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let vocab = pajamas_convert::tokenizer::read_vocab(dir, &config, vocab_size, None)?;
        Tokenizer::from_vocab_at(&vocab, dir.display().to_string())
    }

    /// From a converter [`Vocab`]: the path both loaders share. Missing values get the
    /// defaults llama.cpp applies when the GGUF key is absent.
    pub fn from_vocab(v: &Vocab) -> Result<Tokenizer> {
        Tokenizer::from_vocab_at(v, "vocabulary".to_string())
    }

    fn from_vocab_at(v: &Vocab, origin: String) -> Result<Tokenizer> {
        Tokenizer::build(Parts {
            origin,
            model: &v.model,
            pre: v.pre.as_deref(),
            tokens: &v.tokens,
            types: (!v.types.is_empty()).then_some(v.types.as_slice()),
            merges: &v.merges,
            bos: v.bos.map(u64::from),
            eos: v.eos.map(u64::from),
            add_bos: v.add_bos,
            add_eos: v.add_eos,
        })
    }

    fn build(p: Parts) -> Result<Tokenizer> {
        if p.model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel {
                origin: p.origin,
                model: p.model.to_string(),
            });
        }
        let pre = pre_of(p.pre).ok_or_else(|| TokenizerError::UnknownPre {
            origin: p.origin.clone(),
            pre: p.pre.unwrap_or_default().to_string(),
        })?;
        let n = p.tokens.len();
        if n == 0 || n > i32::MAX as usize {
            return Err(TokenizerError::Invalid {
                origin: p.origin,
                message: format!("{n} tokens"),
            });
        }
        if let Some(t) = p.types {
            if t.len() < n {
                return Err(TokenizerError::Invalid {
                    origin: p.origin,
                    message: format!("{} token types for {n} tokens", t.len()),
                });
            }
        }
        let tokens: Vec<String> = p
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if t.is_empty() {
                    format!("[EMPTY_{i}]")
                } else {
                    t.clone()
                }
            })
            .collect();
        let mut attrs: Vec<u8> = match p.types {
            Some(t) => t[..n].iter().map(|&t| attr_of(t)).collect(),
            None => vec![attr::NORMAL; n],
        };
        // llama.cpp's text-based fixes; where a text occurs twice, its last id counts.
        let mut last_id: HashMap<&str, usize> = HashMap::new();
        for name in FORCED_CONTROL.iter().chain(FORCED_USER_DEFINED) {
            last_id.insert(name, usize::MAX);
        }
        for (i, t) in tokens.iter().enumerate() {
            if let Some(slot) = last_id.get_mut(t.as_str()) {
                *slot = i;
            }
        }
        for name in FORCED_CONTROL {
            if let Some(&i) = last_id.get(name).filter(|&&i| i != usize::MAX) {
                attrs[i] |= attr::CONTROL;
            }
        }
        for name in FORCED_USER_DEFINED {
            if let Some(&i) = last_id.get(name).filter(|&&i| i != usize::MAX) {
                attrs[i] = attr::USER_DEFINED;
            }
        }
        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                attrs[i as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        specials.sort_by_key(|&i| std::cmp::Reverse(tokens[i as usize].len()));
        // GGUF `gpt2` vocabularies default BOS and EOS to id 11; an id outside the
        // vocabulary is ignored in favour of the default.
        let id = |key: Option<u64>| {
            let default = (11 < n).then_some(11u32);
            match key {
                Some(k) if (k as usize) < n => Some(k as u32),
                _ => default,
            }
        };
        let bpe = Bpe::new(&tokens, p.merges);
        let byte_chars = bpe::byte_chars();
        Ok(Tokenizer {
            byte_chars,
            char_bytes: (0..=255u8).map(|b| (byte_chars[b as usize], b)).collect(),
            pre_name: p.pre.unwrap_or("default").to_string(),
            pre,
            bpe,
            specials,
            bos: id(p.bos),
            eos: id(p.eos),
            add_bos: p.add_bos.unwrap_or(pre.add_bos),
            add_eos: p.add_eos.unwrap_or(false),
            tokens,
            attrs,
        })
    }

    /// Encodes like llama.cpp's `llama_tokenize(text, add_special, parse_special=false)`:
    /// special tokens written in the text are tokenized as text, user-defined tokens
    /// are still recognised, and `add_special` adds BOS/EOS when the model asks for
    /// them ([`add_bos`](Self::add_bos)).
    pub fn encode(&self, text: &str, add_special: bool) -> Vec<u32> {
        self.encode_with(text, add_special, false)
    }

    /// [`encode`](Self::encode) with llama.cpp's `parse_special`: when true, control
    /// tokens written in the text (`<|im_start|>`, ...) become those tokens, as for
    /// chat-formatted prompts.
    pub fn encode_with(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        // Words repeat: the BPE of each distinct word is computed once per call.
        let mut cache: HashMap<&[u8], (usize, usize)> = HashMap::new();
        let mut pool: Vec<u32> = Vec::new();
        for frag in self.partition(text, parse_special) {
            match frag {
                Fragment::Token(t) => out.push(t),
                Fragment::Text(a, b) => {
                    self.encode_text(&text[a..b], &mut cache, &mut pool, &mut out)
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    fn encode_text<'t>(
        &self,
        text: &'t str,
        cache: &mut HashMap<&'t [u8], (usize, usize)>,
        pool: &mut Vec<u32>,
        out: &mut Vec<u32>,
    ) {
        let chars = Chars::new(text);
        for (a, b) in pretokenize::split(self.pre.split, &chars) {
            let word = &text.as_bytes()[chars.offsets[a]..chars.offsets[b]];
            let (start, end) = *cache.entry(word).or_insert_with(|| {
                let start = pool.len();
                let whole = self.pre.ignore_merges.then(|| {
                    let encoded: String =
                        word.iter().map(|&b| self.byte_chars[b as usize]).collect();
                    self.bpe.token(&encoded)
                });
                match whole.flatten() {
                    Some(t) => pool.push(t),
                    None => self.bpe.encode_word(word, pool),
                }
                (start, pool.len())
            });
            out.extend_from_slice(&pool[start..end]);
        }
    }

    /// Splits out the special tokens matched in raw text (llama.cpp's
    /// `tokenizer_st_partition`): each in turn, longest first, at every occurrence.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut frags = Vec::new();
        if text.is_empty() {
            return frags;
        }
        frags.push(Fragment::Text(0, text.len()));
        for &id in &self.specials {
            let a = self.attrs[id as usize];
            if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let needle = self.tokens[id as usize].as_str();
            let found = frags.iter().any(|f| match *f {
                Fragment::Text(s, e) => text[s..e].contains(needle),
                Fragment::Token(_) => false,
            });
            if !found {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(mut s, e) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(i) = text[s..e].find(needle) {
                    if i > 0 {
                        next.push(Fragment::Text(s, s + i));
                    }
                    next.push(Fragment::Token(id));
                    s += i + needle.len();
                }
                if s < e {
                    next.push(Fragment::Text(s, e));
                }
            }
            frags = next;
        }
        frags
    }

    /// Token ids back to text, like concatenating llama.cpp's
    /// `token_to_piece(id, special=false)`: control and unknown tokens give nothing,
    /// user-defined tokens their text, ordinary tokens their bytes. Invalid UTF-8 (a
    /// character cut between tokens) becomes U+FFFD; no spaces are cleaned up.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let (Some(text), Some(&a)) =
                (self.tokens.get(id as usize), self.attrs.get(id as usize))
            else {
                continue;
            };
            if a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            if a & attr::USER_DEFINED != 0 {
                bytes.extend_from_slice(text.as_bytes());
            } else if a & attr::NORMAL != 0 {
                for c in text.chars() {
                    match self.char_bytes.get(&c) {
                        Some(&b) => bytes.push(b),
                        None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The BOS token id (llama.cpp's default 11 if the vocabulary names none and has it).
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The EOS token id.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Whether `encode(text, true)` starts with BOS (`tokenizer.ggml.add_bos_token`, or
    /// llama.cpp's default for the pre-tokenizer: true for Llama 3, false otherwise).
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// Whether `encode(text, true)` ends with EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos && self.eos.is_some()
    }

    /// Number of tokens, padding included (the model's vocabulary size).
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The `tokenizer.ggml.pre` name this tokenizer splits text with.
    pub fn pre(&self) -> &str {
        &self.pre_name
    }

    /// The text of token `id` as stored in the vocabulary (byte-level characters).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small vocabulary: the 256 byte characters, then a few merges.
    fn vocab(pre: &str, merges: &[&str], extra: &[(&str, i32)]) -> Vocab {
        let mut tokens: Vec<String> = bpe::byte_chars().iter().map(|c| c.to_string()).collect();
        let mut types = vec![token_type::NORMAL; 256];
        for m in merges {
            tokens.push(m.replace(' ', ""));
            types.push(token_type::NORMAL);
        }
        for (t, ty) in extra {
            tokens.push(t.to_string());
            types.push(*ty);
        }
        Vocab {
            model: "gpt2".into(),
            pre: Some(pre.into()),
            tokens,
            types,
            merges: merges.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn id(t: &Tokenizer, text: &str) -> u32 {
        t.bpe.token(text).unwrap()
    }

    #[test]
    fn merges_within_words_only() {
        let t =
            Tokenizer::from_vocab(&vocab("gpt-2", &["Ġ t", "h e", "Ġt he", "Ġ w"], &[])).unwrap();
        let ids = t.encode(" the the", false);
        assert_eq!(ids, [id(&t, "Ġthe"), id(&t, "Ġthe")]);
        // "e t" is not in one word: no merge across the word boundary.
        let ids = t.encode("he the", false);
        assert_eq!(ids, [id(&t, "he"), id(&t, "Ġthe")]);
        assert_eq!(
            t.decode(&t.encode("hello, wörld 🙂\n", false)),
            "hello, wörld 🙂\n"
        );
    }

    #[test]
    fn empty_text_and_bos() {
        let mut v = vocab("gpt-2", &[], &[("<s>", token_type::CONTROL)]);
        let t = Tokenizer::from_vocab(&v).unwrap();
        assert!(t.encode("", true).is_empty());
        assert!(!t.add_bos());
        // No bos_token_id: llama.cpp's gpt2 default is id 11.
        assert_eq!(t.bos(), Some(11));
        v.bos = Some(256);
        v.add_bos = Some(true);
        let t = Tokenizer::from_vocab(&v).unwrap();
        assert!(t.add_bos());
        assert_eq!(t.encode("", true), [256]);
        assert_eq!(t.encode("a", true), [256, id(&t, "a")]);
        assert_eq!(t.encode("a", false), [id(&t, "a")]);
        // Llama 3 adds BOS unless the file says otherwise.
        v.pre = Some("llama-bpe".into());
        v.add_bos = None;
        assert!(Tokenizer::from_vocab(&v).unwrap().add_bos());
        v.add_bos = Some(false);
        assert!(!Tokenizer::from_vocab(&v).unwrap().add_bos());
    }

    #[test]
    fn special_tokens_in_text() {
        let v = vocab(
            "gpt-2",
            &[],
            &[
                ("<|im_start|>", token_type::CONTROL),
                ("<tool>", token_type::USER_DEFINED),
            ],
        );
        let t = Tokenizer::from_vocab(&v).unwrap();
        let (start, tool) = (256, 257);
        // Control tokens are text unless parsed; user-defined ones always match.
        let plain = t.encode("<|im_start|>x<tool>y", false);
        assert!(!plain.contains(&start));
        assert_eq!(plain[plain.len() - 2..], [tool, id(&t, "y")]);
        assert_eq!(
            t.encode_with("<|im_start|>x<tool>y", false, true),
            [start, id(&t, "x"), tool, id(&t, "y")]
        );
        assert_eq!(t.decode(&[start, id(&t, "x"), tool]), "x<tool>");
    }

    #[test]
    fn eog_texts_become_control() {
        // "<|endoftext|>" typed user-defined would match raw text; llama.cpp makes it a
        // control token, so it does not.
        let v = vocab("gpt-2", &[], &[("<|endoftext|>", token_type::USER_DEFINED)]);
        let t = Tokenizer::from_vocab(&v).unwrap();
        assert!(!t.encode("<|endoftext|>", false).contains(&256));
    }

    #[test]
    fn ignore_merges_for_llama3() {
        // "abc" is a token but no merge sequence reaches it: Llama 3 takes it whole.
        let v = vocab("llama-bpe", &["a b"], &[("abc", token_type::NORMAL)]);
        let t = Tokenizer::from_vocab(&v).unwrap();
        assert_eq!(t.encode("abc", false), [id(&t, "abc")]);
        let mut v2 = v.clone();
        v2.pre = Some("qwen2".into());
        let t2 = Tokenizer::from_vocab(&v2).unwrap();
        assert_eq!(t2.encode("abc", false), [id(&t2, "ab"), id(&t2, "c")]);
    }

    #[test]
    fn pre_names() {
        let mut v = vocab("gpt-2", &[], &[]);
        v.pre = Some("no-such-pre".into());
        let e = Tokenizer::from_vocab(&v).unwrap_err().to_string();
        assert!(e.contains("'no-such-pre'"), "{e}");
        v.pre = None;
        assert_eq!(Tokenizer::from_vocab(&v).unwrap().pre(), "default");
        v.model = "llama".into();
        let e = Tokenizer::from_vocab(&v).unwrap_err().to_string();
        assert!(e.contains("'llama'"), "{e}");
    }

    #[test]
    fn unreachable_bytes_do_not_panic() {
        // A vocabulary without most byte characters: unknown bytes are dropped.
        let v = Vocab {
            model: "gpt2".into(),
            pre: Some("gpt-2".into()),
            tokens: vec!["a".into(), "b".into()],
            merges: vec![],
            ..Default::default()
        };
        let t = Tokenizer::from_vocab(&v).unwrap();
        assert_eq!(t.encode("a é\u{0}b", true), [0, 1]);
        assert_eq!(t.vocab_size(), 2);
        assert_eq!(t.bos(), None);
    }
}
