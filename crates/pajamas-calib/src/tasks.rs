//! Task-shaped samples built from corpus prose: what a model sees when it calls
//! tools, summarizes, or answers over retrieved passages. Everything is derived
//! from the corpus text and the seeded generator, never written by hand per sample.

use crate::corpus::{chars, is_good_sentence, sentence_spans, sentences, tokens};
use crate::Generator;

/// A JSON string literal.
fn js(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON object from already encoded values.
fn obj(fields: &[(&str, String)]) -> String {
    let fields: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}: {v}", js(k)))
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// (name, JSON schema) of the tools the dialogues may call.
const TOOLS: [(&str, &str); 5] = [
    (
        "search_web",
        r#"{"name": "search_web", "description": "Search the web and return matching snippets.", "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "max_results": {"type": "integer"}}, "required": ["query"]}}"#,
    ),
    (
        "calculate",
        r#"{"name": "calculate", "description": "Evaluate an arithmetic expression.", "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}"#,
    ),
    (
        "get_weather",
        r#"{"name": "get_weather", "description": "Current weather for a place.", "parameters": {"type": "object", "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]}}"#,
    ),
    (
        "define_term",
        r#"{"name": "define_term", "description": "Look up how a term is used.", "parameters": {"type": "object", "properties": {"term": {"type": "string"}}, "required": ["term"]}}"#,
    ),
    (
        "set_reminder",
        r#"{"name": "set_reminder", "description": "Schedule a reminder.", "parameters": {"type": "object", "properties": {"text": {"type": "string"}, "minutes": {"type": "integer"}}, "required": ["text", "minutes"]}}"#,
    ),
];

/// One exchange: the request, the call's arguments, the tool's result, the answer.
struct Exchange {
    tool: usize,
    request: String,
    arguments: String,
    result: String,
    answer: String,
}

fn words(s: &str) -> Vec<&str> {
    tokens(s)
        .into_iter()
        .map(|(_, t)| t)
        .filter(|t| t.chars().all(char::is_alphabetic))
        .collect()
}

fn numbers(s: &str) -> Vec<u64> {
    tokens(s)
        .into_iter()
        .filter(|(_, t)| t.len() <= 6 && t.chars().all(|c| c.is_ascii_digit()))
        .filter_map(|(_, t)| t.parse().ok())
        .collect()
}

fn longest_word(s: &str) -> Option<(usize, &str)> {
    tokens(s)
        .into_iter()
        .filter(|(_, t)| chars(t) >= 5 && t.chars().all(char::is_alphabetic))
        .reduce(|a, b| if chars(b.1) > chars(a.1) { b } else { a })
}

/// The first line if it reads as a title (wiki articles start with one).
fn title(passage: &str) -> Option<&str> {
    let line = passage.lines().next()?;
    (chars(line) < 100 && !line.ends_with(['.', '!', '?', ':', ','])).then_some(line)
}

impl Generator {
    /// Prose with at least `n` quotable sentences (or the best of a few tries).
    fn prose_with_sentences(&mut self, n: usize) -> (String, Vec<String>) {
        let mut best = (String::new(), Vec::new());
        for _ in 0..20 {
            let p = self.prose();
            let good: Vec<String> = sentences(&p)
                .into_iter()
                .filter(|s| is_good_sentence(s))
                .map(str::to_string)
                .collect();
            if good.len() >= n {
                return (p, good);
            }
            if good.len() >= best.1.len() {
                best = (p, good);
            }
        }
        if best.1.is_empty() {
            let first = sentences(&best.0).first().map_or("", |s| s).to_string();
            best.1.push(first);
        }
        best
    }

    pub(crate) fn tool_calling(&mut self) -> String {
        let (passage, good) = self.prose_with_sentences(2);
        let turns = self.rng.range(1, 2);
        let exchanges: Vec<Exchange> = (0..turns)
            .map(|_| {
                let tool = self.rng.below(TOOLS.len());
                let sentence = self.rng.pick(&good).clone();
                self.exchange(tool, &passage, &sentence)
            })
            .collect();
        // The tools on offer: those called plus one more, in a fixed order.
        let extra = self.rng.below(TOOLS.len());
        let offered = (0..TOOLS.len())
            .filter(|&t| t == extra || exchanges.iter().any(|e| e.tool == t))
            .map(|t| TOOLS[t].1);

        let mut out = String::from(
            "System: You are a helpful assistant with access to the tools below. To use one, \
             reply with only a JSON object with the keys \"name\" and \"arguments\".\nTools:\n",
        );
        for schema in offered {
            out += schema;
            out.push('\n');
        }
        for e in exchanges {
            let call = obj(&[("name", js(TOOLS[e.tool].0)), ("arguments", e.arguments)]);
            out += &format!(
                "\nUser: {}\nAssistant: {call}\nTool: {}\nAssistant: {}\n",
                e.request, e.result, e.answer
            );
        }
        out.trim_end().to_string()
    }

    /// Arguments come from the passage: its words, numbers and sentences.
    fn exchange(&mut self, tool: usize, passage: &str, sentence: &str) -> Exchange {
        let ws = words(sentence);
        match tool {
            0 => {
                let len = self.rng.range(2, 4).min(ws.len().max(1));
                let start = self.rng.below(ws.len().saturating_sub(len) + 1);
                let query = ws.get(start..start + len).unwrap_or(&[]).join(" ");
                let max_results = self.rng.range(1, 5);
                let mut hit = vec![("snippet", js(sentence))];
                if let Some(t) = title(passage) {
                    hit.insert(0, ("title", js(t)));
                }
                let request = [
                    "Search the web for",
                    "Can you look up",
                    "Find me something about",
                ];
                Exchange {
                    tool,
                    request: format!("{} {query}?", self.rng.pick(&request)),
                    arguments: obj(&[
                        ("query", js(&query)),
                        ("max_results", max_results.to_string()),
                    ]),
                    result: obj(&[("results", format!("[{}]", obj(&hit)))]),
                    answer: format!("Here is what I found about {query}: {sentence}"),
                }
            }
            1 => {
                let mut nums = numbers(passage);
                while nums.len() < 2 {
                    nums.push(self.rng.range(2, 999) as u64);
                }
                // Two different positions: `a - a` would teach nothing.
                let i = self.rng.below(nums.len());
                let j = (i + 1 + self.rng.below(nums.len() - 1)) % nums.len();
                let (a, b) = (nums[i] as i64, nums[j] as i64);
                let (op, value) = *self.rng.pick(&[("+", a + b), ("-", a - b), ("*", a * b)]);
                let expression = format!("{a} {op} {b}");
                Exchange {
                    tool,
                    request: format!("What is {expression}?"),
                    arguments: obj(&[("expression", js(&expression))]),
                    result: obj(&[("result", value.to_string())]),
                    answer: format!("{expression} = {value}."),
                }
            }
            2 => {
                // A capitalised word that does not start its sentence: likely a name.
                let names: Vec<&str> = sentences(passage)
                    .into_iter()
                    .flat_map(|s| words(s).into_iter().skip(1))
                    .filter(|w| chars(w) >= 4 && w.chars().next().is_some_and(char::is_uppercase))
                    .collect();
                let location = if names.is_empty() {
                    "Geneva"
                } else {
                    *self.rng.pick(&names)
                };
                let celsius = self.rng.range(0, 40) as i64 - 5;
                let (unit, temp) = *self
                    .rng
                    .pick(&[("celsius", celsius), ("fahrenheit", celsius * 9 / 5 + 32)]);
                let conditions =
                    *self
                        .rng
                        .pick(&["sunny", "cloudy", "light rain", "windy", "snow"]);
                Exchange {
                    tool,
                    request: format!("What's the weather like in {location} right now?"),
                    arguments: obj(&[("location", js(location)), ("unit", js(unit))]),
                    result: obj(&[
                        ("location", js(location)),
                        ("temperature", temp.to_string()),
                        ("unit", js(unit)),
                        ("conditions", js(conditions)),
                    ]),
                    answer: format!("In {location} it is {temp} degrees {unit}, {conditions}."),
                }
            }
            3 => {
                let term = longest_word(sentence).map_or("term", |(_, w)| w);
                Exchange {
                    tool,
                    request: format!("What does \"{term}\" mean here?"),
                    arguments: obj(&[("term", js(term))]),
                    result: obj(&[
                        ("term", js(term)),
                        ("examples", format!("[{}]", js(sentence))),
                    ]),
                    answer: format!("\"{term}\" is used like this: {sentence}"),
                }
            }
            _ => {
                let text = ws[..ws.len().min(self.rng.range(3, 8))].join(" ");
                let minutes = numbers(passage)
                    .into_iter()
                    .find(|m| (1..=1440).contains(m))
                    .unwrap_or_else(|| self.rng.range(5, 120) as u64);
                Exchange {
                    tool,
                    request: format!("Remind me in {minutes} minutes: {text}."),
                    arguments: obj(&[("text", js(&text)), ("minutes", minutes.to_string())]),
                    result: obj(&[
                        ("status", js("scheduled")),
                        ("minutes", minutes.to_string()),
                    ]),
                    answer: format!("Done: I will remind you in {minutes} minutes."),
                }
            }
        }
    }

    /// The summary is extractive: the passage's first quotable sentences.
    pub(crate) fn summarization(&mut self) -> String {
        let (passage, good) = self.prose_with_sentences(3);
        let k = self.rng.range(1, (good.len() / 3).clamp(1, 3));
        let summary = good[..k].join(" ");
        let plural = if k == 1 { "" } else { "s" };
        match self.rng.below(3) {
            0 => format!(
                "{passage}\n\nSummarize the text above in {k} sentence{plural}.\n\nSummary: {summary}"
            ),
            1 => format!(
                "Summarize the following article in {k} sentence{plural}.\n\nArticle:\n{passage}\n\nSummary: {summary}"
            ),
            _ => format!("{passage}\n\nTL;DR: {summary}"),
        }
    }

    /// Passages cut to a few sentences, a question made from one sentence of
    /// one passage, and an answer that cites and quotes it.
    pub(crate) fn rag(&mut self) -> String {
        let n = self.rng.range(3, 5);
        let passages: Vec<String> = (0..n).map(|_| excerpt(&self.prose(), 600)).collect();
        let first = self.rng.below(n);
        let (j, candidates) = (0..n)
            .map(|d| (first + d) % n)
            .map(|j| {
                let good: Vec<&str> = sentences(&passages[j])
                    .into_iter()
                    .filter(|s| is_good_sentence(s))
                    .collect();
                (j, good)
            })
            .find(|(_, good)| !good.is_empty())
            .unwrap_or_else(|| {
                (
                    first,
                    sentences(&passages[first]).into_iter().take(1).collect(),
                )
            });
        let sentence = candidates
            .get(self.rng.below(candidates.len().max(1)))
            .copied()
            .unwrap_or("");

        let mut out = String::from(
            "Answer the question using only the passages below, and cite the passage you used.\n",
        );
        for (i, p) in passages.iter().enumerate() {
            out += &format!("\n[{}] {p}\n", i + 1);
        }
        // Cloze on a number if there is one, else on the longest word.
        let blank = tokens(sentence)
            .into_iter()
            .find(|(_, t)| t.chars().all(|c| c.is_ascii_digit()))
            .or_else(|| longest_word(sentence));
        let cite = j + 1;
        let cloze = self.rng.below(2) == 0;
        match blank {
            Some((at, word)) if cloze => {
                let cloze = format!("{}____{}", &sentence[..at], &sentence[at + word.len()..]);
                out += &format!(
                    "\nQuestion: Fill in the blank: {cloze}\nAnswer: {word}. Passage [{cite}] says: \"{sentence}\""
                );
            }
            Some((_, word)) => {
                out += &format!(
                    "\nQuestion: Which passage mentions \"{word}\", and what does it say?\nAnswer: Passage [{cite}] says: \"{sentence}\""
                );
            }
            None => {
                out += &format!(
                    "\nQuestion: Which passage contains this statement: {sentence}\nAnswer: Passage [{cite}] says: \"{sentence}\""
                );
            }
        }
        out
    }
}

/// The start of `text`, cut after the last whole sentence within `limit` characters.
fn excerpt(text: &str, limit: usize) -> String {
    let spans = sentence_spans(text);
    let end = spans
        .iter()
        .map(|&(_, b)| b)
        .take_while(|&b| chars(&text[..b]) <= limit)
        .last()
        .or_else(|| spans.first().map(|&(_, b)| b))
        .unwrap_or(text.len());
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(js("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
        assert_eq!(
            obj(&[("k", js("v")), ("n", "1".into())]),
            r#"{"k": "v", "n": 1}"#
        );
    }

    #[test]
    fn excerpts_end_on_a_sentence() {
        assert_eq!(
            excerpt("One two. Three four. Five six.", 20),
            "One two. Three four."
        );
        assert_eq!(
            excerpt("A very long first sentence.", 5),
            "A very long first sentence."
        );
    }
}
