//! The bundled corpora (see `data/corpora/README.md`) and how text is cut into
//! samples: whole paragraphs, whole code blocks, never a fragment of either.
//!
//! Only calibration files are embedded here; `wiki_eval*.txt` is evaluation
//! data and must never reach calibration.

macro_rules! corpus_file {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/corpora/",
            $name
        ))
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Corpus {
    Wiki,
    Web,
    Code,
    Multilingual,
    Technical,
    Stories,
}

impl Corpus {
    pub(crate) const COUNT: usize = 6;

    pub(crate) fn text(self) -> &'static str {
        match self {
            Corpus::Wiki => corpus_file!("wiki_calib.txt"),
            Corpus::Web => corpus_file!("c4.utf8"),
            Corpus::Code => corpus_file!("code.utf8"),
            Corpus::Multilingual => corpus_file!("multilingual.utf8"),
            Corpus::Technical => corpus_file!("technical.utf8"),
            Corpus::Stories => corpus_file!("tiny.utf8"),
        }
    }

    /// The corpus cut into samples of at least `min_chars` characters.
    pub(crate) fn units(self, min_chars: usize) -> Vec<String> {
        let paras = paragraphs(self.text());
        if self == Corpus::Code {
            pack(code_blocks(&paras), min_chars, false)
        } else {
            // Very long paragraphs (a whole article, or web pages one per line)
            // are cut at line, then sentence, boundaries.
            let max_chars = (4 * min_chars).max(2048);
            let pieces = paras
                .iter()
                .flat_map(|p| split_long(&p.lines, max_chars))
                .collect();
            pack(pieces, min_chars, true)
        }
    }
}

/// User text: split on blank lines, except inside indented blocks (so pasted
/// code stays whole), then packed like a corpus.
pub(crate) fn user_units(text: &str, min_chars: usize) -> Vec<String> {
    pack(code_blocks(&paragraphs(text)), min_chars, false)
}

/// Lines between blank lines, with how many blank lines came before.
struct Para<'a> {
    lines: Vec<&'a str>,
    blank_before: usize,
}

fn paragraphs(text: &str) -> Vec<Para<'_>> {
    let mut out = Vec::new();
    let mut lines = Vec::new();
    let (mut blanks, mut blank_before) = (0, 0);
    for line in text.lines().map(str::trim_end) {
        // tiny.utf8 separates its stories with this marker: treat it as a blank line.
        if line.trim().is_empty() || line == "<|endoftext|>" {
            if !lines.is_empty() {
                let lines = std::mem::take(&mut lines);
                out.push(Para {
                    lines,
                    blank_before,
                });
                blanks = 0;
            }
            blanks += 1;
        } else {
            if lines.is_empty() {
                blank_before = blanks;
            }
            lines.push(line);
        }
    }
    if !lines.is_empty() {
        out.push(Para {
            lines,
            blank_before,
        });
    }
    out
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// A line that continues the construct above it rather than starting a new one.
fn continues(line: &str) -> bool {
    let line = line.trim_start();
    let word = line
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("");
    line.starts_with(['}', ')', ']'])
        || [
            "else", "elif", "except", "finally", "catch", "end", "fi", "done", "esac",
        ]
        .contains(&word)
}

/// Code: two or more blank lines separate documents; inside one, a blank line
/// splits only before a line at the document's outermost indentation that
/// does not continue the previous construct, so functions and classes stay whole.
fn code_blocks(paras: &[Para]) -> Vec<String> {
    let mut blocks: Vec<String> = Vec::new();
    let mut base = 0;
    for (i, p) in paras.iter().enumerate() {
        let text = p.lines.join("\n");
        let new_doc = i == 0 || p.blank_before >= 2;
        if new_doc {
            base = paras[i..]
                .iter()
                .enumerate()
                .take_while(|(k, q)| *k == 0 || q.blank_before < 2)
                .flat_map(|(_, q)| q.lines.iter().map(|l| indent(l)))
                .min()
                .unwrap_or(0);
        }
        match blocks.last_mut() {
            Some(last) if !new_doc && (indent(p.lines[0]) > base || continues(p.lines[0])) => {
                last.push_str("\n\n");
                last.push_str(&text);
            }
            _ => blocks.push(text),
        }
    }
    blocks
}

/// A paragraph as is, or, if longer than `max_chars`, cut into pieces of at
/// most `max_chars` at line boundaries (sentence boundaries for overlong lines).
fn split_long(lines: &[&str], max_chars: usize) -> Vec<String> {
    let mut items = Vec::new(); // (text, separator before it)
    for line in lines {
        if chars(line) > max_chars {
            for (k, s) in sentences(line).into_iter().enumerate() {
                items.push((s, if k == 0 { '\n' } else { ' ' }));
            }
        } else {
            items.push((line, '\n'));
        }
    }
    let mut out = Vec::new();
    let (mut cur, mut n) = (String::new(), 0);
    for (s, sep) in items {
        let m = chars(s);
        if n > 0 && n + 1 + m > max_chars {
            out.push(std::mem::take(&mut cur));
            n = 0;
        }
        if n > 0 {
            cur.push(sep);
            n += 1;
        }
        cur.push_str(s);
        n += m;
    }
    if n > 0 {
        out.push(cur);
    }
    out
}

/// Join consecutive pieces until each sample has at least `min_chars`
/// characters; a short tail joins the previous sample. With `headings`, a
/// heading stays with the text it introduces, and one that introduces nothing
/// (followed by another heading, or last) is dropped: the wiki corpus has many
/// such empty articles.
fn pack(pieces: Vec<String>, min_chars: usize, headings: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let (mut cur, mut n) = (String::new(), 0);
    let mut heading_at = None; // (bytes, chars) of `cur` before a trailing heading
    for p in pieces {
        let heading = headings && is_heading(&p);
        if let (true, Some((len, count))) = (heading, heading_at) {
            cur.truncate(len);
            n = count;
        }
        heading_at = heading.then_some((cur.len(), n));
        if n > 0 {
            cur.push_str("\n\n");
            n += 2;
        }
        cur.push_str(&p);
        n += chars(&p);
        if n >= min_chars && !heading {
            out.push(std::mem::take(&mut cur));
            n = 0;
        }
    }
    if let Some((len, count)) = heading_at {
        cur.truncate(len);
        n = count;
    }
    if n > 0 {
        match out.last_mut() {
            Some(last) => {
                last.push_str("\n\n");
                last.push_str(&cur);
            }
            None => out.push(cur),
        }
    }
    out
}

fn is_heading(p: &str) -> bool {
    !p.contains('\n')
        && chars(p) < 100
        && !p.ends_with(['.', '!', '?', ':', ';', ',', '"', '。', '！', '？'])
}

pub(crate) fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Byte ranges of the sentences (and of lines, which also end a sentence) in `text`, trimmed.
pub(crate) fn sentence_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut push = |a: usize, b: usize| {
        let s = &text[a..b];
        let start = a + (s.len() - s.trim_start().len());
        let len = s.trim().len();
        if len > 0 {
            spans.push((start, start + len));
        }
    };
    let mut start = 0;
    let mut it = text.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        let cut = match c {
            '\n' => Some(i),
            '。' | '！' | '？' => Some(i + c.len_utf8()),
            '.' | '!' | '?' => {
                // Closing quotes and brackets belong to the sentence they end.
                let mut end = i + 1;
                while let Some(&(j, q)) = it.peek() {
                    if !matches!(q, '"' | '\'' | '”' | '’' | ')' | ']') {
                        break;
                    }
                    end = j + q.len_utf8();
                    it.next();
                }
                let at_break = text[end..].chars().next().is_none_or(char::is_whitespace);
                let abbreviation = c == '.' && is_abbreviation(&text[start..i], &text[end..]);
                (at_break && !abbreviation).then_some(end)
            }
            _ => None,
        };
        if let Some(cut) = cut {
            push(start, cut);
            start = cut;
        }
    }
    push(start, text.len());
    spans
}

/// Whether a period after `before` (and followed by `after`) most likely ends
/// an abbreviation or initial rather than a sentence.
fn is_abbreviation(before: &str, after: &str) -> bool {
    const ABBREVIATIONS: [&str; 16] = [
        "mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "inc", "ltd", "co", "no", "vs", "etc",
        "fig", "vol",
    ];
    let word = before
        .rsplit(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("");
    let initial = chars(word) == 1 && word.chars().all(char::is_uppercase);
    initial
        || ABBREVIATIONS.contains(&word.to_lowercase().as_str())
        || after
            .trim_start()
            .chars()
            .next()
            .is_some_and(char::is_lowercase)
}

pub(crate) fn sentences(text: &str) -> Vec<&str> {
    sentence_spans(text)
        .into_iter()
        .map(|(a, b)| &text[a..b])
        .collect()
}

/// A sentence fit to quote: complete, of a readable length, starting like prose.
pub(crate) fn is_good_sentence(s: &str) -> bool {
    let n = chars(s);
    (30..=300).contains(&n)
        && s.trim_end_matches(['"', '\'', '”', '’', ')', ']'])
            .ends_with(['.', '!', '?'])
        && s.chars().next().is_some_and(char::is_uppercase)
        && s.split_whitespace().count() >= 5
}

/// Runs of alphanumeric characters with their byte offsets.
pub(crate) fn tokens(s: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices().chain([(s.len(), ' ')]) {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(a)) => {
                out.push((a, &s[a..i]));
                start = None;
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_blocks_keep_functions_whole() {
        let src = "def f(x):\n    y = x\n\n    return y\n\ndef g():\n    pass\n\n\nint main() {\n  a();\n\n}\n";
        let blocks = code_blocks(&paragraphs(src));
        assert_eq!(
            blocks,
            [
                "def f(x):\n    y = x\n\n    return y",
                "def g():\n    pass",
                "int main() {\n  a();\n\n}"
            ]
        );
    }

    #[test]
    fn headings_stay_with_their_text() {
        let src = "Empty\n\nAlso Empty\n\nSome Title\n\nA body long enough to be a sample.\n\nNext";
        let pieces = paragraphs(src).iter().map(|p| p.lines.join("\n")).collect();
        assert_eq!(
            pack(pieces, 20, true),
            ["Some Title\n\nA body long enough to be a sample."]
        );
    }

    #[test]
    fn long_paragraphs_are_cut_at_sentences() {
        let line = "One sentence here. ".repeat(200);
        let pieces = split_long(&[line.trim_end()], 100);
        assert!(pieces.len() > 30);
        assert!(pieces.iter().all(|p| chars(p) <= 100 && p.ends_with('.')));
    }

    #[test]
    fn sentences_skip_abbreviations_and_keep_quotes() {
        let text =
            "ST. JOHNS, Fla. Mr. J. Smith said \"Go.\" Then he left! Is it 3.5 m. long?\nNext";
        assert_eq!(
            sentences(text),
            [
                "ST. JOHNS, Fla.",
                "Mr. J. Smith said \"Go.\"",
                "Then he left!",
                "Is it 3.5 m. long?",
                "Next"
            ]
        );
    }

    #[test]
    fn every_corpus_cuts_into_samples() {
        for c in [
            Corpus::Wiki,
            Corpus::Web,
            Corpus::Code,
            Corpus::Multilingual,
            Corpus::Technical,
            Corpus::Stories,
        ] {
            let units = c.units(256);
            assert!(units.len() > 50, "{c:?}: {}", units.len());
            assert!(units.iter().all(|u| chars(u) >= 256), "{c:?}");
            assert!(units.iter().all(|u| !u.contains("<|endoftext|>")), "{c:?}");
        }
    }
}
