//! Pre-tokenizers: the splitting of text into words before BPE, as llama.cpp does it.
//!
//! llama.cpp does not run the tokenizer.json regexes for the common pre-tokenizers; it
//! runs hand-written scanners (`unicode_regex_split_custom_gpt2/llama3/qwen2` in
//! `unicode.cpp`) and, for the remaining regexes of a pre-tokenizer, `std::regex` over a
//! text where each non-ASCII codepoint is replaced by a byte naming its class. The
//! scanners differ from the regexes they stand for in corner cases (for example a
//! space before an unassigned codepoint), so this module follows the scanners step by
//! step rather than the regexes. Each rule of a pre-tokenizer splits the spans the
//! previous rule produced and never looks across their ends.

use crate::unicode::{class, Class};

/// A text as codepoints, with each codepoint's class and byte offset.
pub(crate) struct Chars {
    pub chars: Vec<char>,
    pub classes: Vec<Class>,
    /// Byte offset of each codepoint, plus the text length at the end.
    pub offsets: Vec<usize>,
}

impl Chars {
    pub fn new(text: &str) -> Chars {
        let n = text.len();
        let mut chars = Vec::with_capacity(n);
        let mut classes = Vec::with_capacity(n);
        let mut offsets = Vec::with_capacity(n + 1);
        for (i, c) in text.char_indices() {
            chars.push(c);
            classes.push(class(c));
            offsets.push(i);
        }
        offsets.push(n);
        Chars {
            chars,
            classes,
            offsets,
        }
    }

    pub fn len(&self) -> usize {
        self.chars.len()
    }
}

/// Codepoint range `[start, end)`.
pub(crate) type Span = (usize, usize);

/// The pre-tokenizers implemented, by what llama.cpp runs for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Split {
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`.
    Gpt2,
    /// `\p{N}` (every digit alone), then GPT-2 (SmolLM, StarCoder).
    Smollm,
    /// Llama 3: case-insensitive contractions, `\p{N}{1,3}`, newline-aware whitespace.
    Llama3,
    /// Qwen2: Llama 3's rules with `\p{N}` (one digit per word).
    Qwen2,
    /// llama.cpp's `default` (no or unknown-to-converter `pre`): runs of punctuation,
    /// GPT-2, runs of numbers, then ASCII digit triples.
    Default,
}

/// Splits `t` into words (codepoint spans, in order, covering the text).
pub(crate) fn split(kind: Split, t: &Chars) -> Vec<Span> {
    let whole = vec![(0, t.len())];
    let mut out = Vec::with_capacity(t.len() / 3 + 1);
    match kind {
        Split::Gpt2 => each(t, &whole, &mut out, gpt2),
        Split::Smollm => {
            let digits = isolate_all(t, &whole, |t, i, _| {
                (t.classes[i] == Class::Number).then_some(i + 1)
            });
            each(t, &digits, &mut out, gpt2);
        }
        Split::Llama3 => each(t, &whole, &mut out, |t, s, o| llama3(t, s, 3, o)),
        Split::Qwen2 => each(t, &whole, &mut out, |t, s, o| llama3(t, s, 1, o)),
        Split::Default => {
            // [\p{P}\$\+<=>\^~\|]+
            let punct = |t: &Chars, i: usize| {
                t.classes[i] == Class::Punct
                    || matches!(t.chars[i], '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|')
            };
            let a = isolate_all(t, &whole, |t, i, end| {
                punct(t, i).then(|| run_end(i, end, |j| punct(t, j)))
            });
            let mut b = Vec::with_capacity(a.len() * 2);
            each(t, &a, &mut b, gpt2);
            // \p{N}+
            let c = isolate_all(t, &b, |t, i, end| {
                (t.classes[i] == Class::Number)
                    .then(|| run_end(i, end, |j| t.classes[j] == Class::Number))
            });
            // [0-9][0-9][0-9]
            out = isolate_all(t, &c, |t, i, end| {
                (i + 3 <= end && t.chars[i..i + 3].iter().all(char::is_ascii_digit))
                    .then_some(i + 3)
            });
        }
    }
    out
}

fn each(t: &Chars, spans: &[Span], out: &mut Vec<Span>, f: impl Fn(&Chars, Span, &mut Vec<Span>)) {
    for &s in spans {
        f(t, s, out);
    }
}

/// First index at or after `i` (below `end`) where `pred` fails.
fn run_end(mut i: usize, end: usize, pred: impl Fn(usize) -> bool) -> usize {
    while i < end && pred(i) {
        i += 1;
    }
    i
}

/// A `std::regex` split as llama.cpp's `unicode_regex_split_stl` does it: every match
/// (leftmost first, then searching on after it) and every non-empty stretch between
/// matches becomes its own span. `find(t, i, end)` returns the end of a match starting
/// at `i`, if one does.
fn isolate_all(
    t: &Chars,
    spans: &[Span],
    find: impl Fn(&Chars, usize, usize) -> Option<usize>,
) -> Vec<Span> {
    let mut out = Vec::with_capacity(spans.len());
    for &(start, end) in spans {
        let mut gap = start;
        let mut i = start;
        while i < end {
            match find(t, i, end) {
                Some(e) if e > i => {
                    if gap < i {
                        out.push((gap, i));
                    }
                    out.push((i, e));
                    i = e;
                    gap = e;
                }
                _ => i += 1,
            }
        }
        if gap < end {
            out.push((gap, end));
        }
    }
    out
}

/// `'s|'t|'re|'ve|'m|'ll|'d` at `pos`: the length matched. llama.cpp lowercases with
/// its Unicode table for Llama 3 / Qwen2; only ASCII capitals lowercase to these
/// letters, so ASCII lowercasing is the same.
fn contraction(t: &Chars, pos: usize, end: usize, any_case: bool) -> Option<usize> {
    if t.chars[pos] != '\'' || pos + 1 >= end {
        return None;
    }
    let low = |c: char| if any_case { c.to_ascii_lowercase() } else { c };
    let a = low(t.chars[pos + 1]);
    if matches!(a, 's' | 't' | 'm' | 'd') {
        return Some(2);
    }
    if pos + 2 < end {
        let b = low(t.chars[pos + 2]);
        if matches!((a, b), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
            return Some(3);
        }
    }
    None
}

/// `[^\s\p{L}\p{N}]`
fn is_other(k: Class) -> bool {
    matches!(k, Class::Punct | Class::Other)
}

/// llama.cpp's `unicode_regex_split_custom_gpt2` on one span.
fn gpt2(t: &Chars, (start, end): Span, out: &mut Vec<Span>) {
    // The class at `i`, or None past the span (llama.cpp's empty flags).
    let cls = |i: usize| (i < end).then(|| t.classes[i]);
    let mut pos = start;
    while pos < end {
        let c = t.chars[pos];
        let next = if let Some(n) = contraction(t, pos, end, false) {
            pos + n
        } else {
            let space = usize::from(c == ' ');
            // The class that decides: the next codepoint's after a space.
            let k = if c == ' ' { cls(pos + 1) } else { cls(pos) };
            match k {
                // ` ?\p{L}+` and ` ?\p{N}+`
                Some(k @ (Class::Letter | Class::Number)) => {
                    run_end(pos + space, end, |j| t.classes[j] == k)
                }
                // ` ?[^\s\p{L}\p{N}]+`
                Some(k) if is_other(k) => run_end(pos + space, end, |j| is_other(t.classes[j])),
                _ => {
                    let n = run_end(pos, end, |j| t.classes[j] == Class::Whitespace) - pos;
                    if n > 1 && pos + n < end {
                        // `\s+(?!\S)`: leave the last space to the next word.
                        pos + n - 1
                    } else if n > 0 {
                        pos + n
                    } else {
                        pos + 1
                    }
                }
            }
        };
        out.push((pos, next));
        pos = next;
    }
}

/// llama.cpp's `unicode_regex_split_custom_llama3` (`max_digits` 3) and
/// `unicode_regex_split_custom_qwen2` (`max_digits` 1) on one span.
fn llama3(t: &Chars, (start, end): Span, max_digits: usize, out: &mut Vec<Span>) {
    let cls = |i: usize| (i < end).then(|| t.classes[i]);
    let is_rn = |c: char| c == '\r' || c == '\n';
    let mut pos = start;
    while pos < end {
        let c = t.chars[pos];
        let k = t.classes[pos];
        if let Some(n) = contraction(t, pos, end, true) {
            out.push((pos, pos + n));
            pos += n;
            continue;
        }
        // `[^\r\n\p{L}\p{N}]?\p{L}+`
        if !(is_rn(c) || k == Class::Number)
            && (k == Class::Letter || cls(pos + 1) == Some(Class::Letter))
        {
            let next = run_end(pos + 1, end, |j| t.classes[j] == Class::Letter);
            out.push((pos, next));
            pos = next;
            continue;
        }
        // `\p{N}{1,3}` / `\p{N}`: a run of numbers in pieces of `max_digits`.
        if k == Class::Number {
            let run = run_end(pos, end, |j| t.classes[j] == Class::Number);
            while pos < run {
                let next = (pos + max_digits).min(run);
                out.push((pos, next));
                pos = next;
            }
            continue;
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`. llama.cpp tests the current codepoint's flags
        // for "inside the span", so a space that ends the span takes this branch.
        let k2 = if c == ' ' { cls(pos + 1) } else { Some(k) };
        if k2.is_none_or(is_other) {
            let p = run_end(pos + usize::from(c == ' '), end, |j| is_other(t.classes[j]));
            let next = run_end(p, end, |j| is_rn(t.chars[j]));
            out.push((pos, next));
            pos = next;
            continue;
        }
        // `\s*[\r\n]+`, `\s+(?!\S)`, `\s+`
        let ws_end = run_end(pos, end, |j| t.classes[j] == Class::Whitespace);
        let last_rn = (pos..ws_end).rev().find(|&j| is_rn(t.chars[j]));
        let n = ws_end - pos;
        let next = if let Some(j) = last_rn {
            j + 1
        } else if n > 1 && ws_end < end {
            ws_end - 1
        } else if n > 0 {
            ws_end
        } else {
            pos + 1
        };
        out.push((pos, next));
        pos = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(kind: Split, text: &str) -> Vec<String> {
        let t = Chars::new(text);
        let spans = split(kind, &t);
        // Spans cover the text in order.
        let mut at = 0;
        for &(a, b) in &spans {
            assert_eq!(a, at);
            assert!(b > a);
            at = b;
        }
        assert_eq!(at, t.len());
        spans
            .iter()
            .map(|&(a, b)| text[t.offsets[a]..t.offsets[b]].to_string())
            .collect()
    }

    #[test]
    fn gpt2_rules() {
        assert_eq!(
            words(Split::Gpt2, "Hello world's  end!!\n\n  42x"),
            ["Hello", " world", "'s", " ", " end", "!!", "\n\n ", " 42", "x"]
        );
        // Case-sensitive contractions; trailing whitespace is one word.
        assert_eq!(words(Split::Gpt2, "DON'T  "), ["DON", "'", "T", "  "]);
        assert_eq!(words(Split::Gpt2, "a\tb"), ["a", "\t", "b"]);
        assert_eq!(words(Split::Gpt2, " ,x"), [" ,", "x"]);
        assert_eq!(words(Split::Gpt2, ""), Vec::<String>::new());
        // Non-ASCII letters, numbers and whitespace use llama.cpp's classes.
        assert_eq!(
            words(Split::Gpt2, "naïve 中文 ٣٤\u{3000}x"),
            ["naïve", " 中文", " ٣٤", "\u{3000}", "x"]
        );
    }

    #[test]
    fn smollm_isolates_digits() {
        assert_eq!(
            words(Split::Smollm, "abc 123x"),
            ["abc", " ", "1", "2", "3", "x"]
        );
    }

    #[test]
    fn llama3_rules() {
        assert_eq!(
            words(Split::Llama3, "DON'T 1234567 x\n\n  y"),
            ["DON", "'T", " ", "123", "456", "7", " x", "\n\n", " ", " y"]
        );
        assert_eq!(words(Split::Llama3, "a  \n b"), ["a", "  \n", " b"]);
        assert_eq!(words(Split::Llama3, "(hi)\n\nok"), ["(hi", ")\n\n", "ok"]);
        assert_eq!(words(Split::Llama3, "x ."), ["x", " ."]);
        assert_eq!(words(Split::Llama3, "x "), ["x", " "]);
    }

    #[test]
    fn qwen2_rules() {
        assert_eq!(words(Split::Qwen2, "v12 'Ll"), ["v", "1", "2", " '", "Ll"]);
        assert_eq!(words(Split::Qwen2, "'LL"), ["'LL"]);
    }

    #[test]
    fn default_rules() {
        assert_eq!(
            words(Split::Default, "x=12345, y"),
            ["x", "=", "123", "45", ",", " y"]
        );
    }
}
