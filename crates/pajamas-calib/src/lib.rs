//! Calibration text for importance matrices (`llama-pajamas-quant iq generate-calibration`).
//!
//! An importance matrix records which weights the activations lean on, so the
//! calibration text should look like what the model will be asked to do. It
//! is built here, offline and deterministically, from the corpora bundled in
//! `data/corpora/` (embedded in the binary, so it works from any directory):
//! plain domains sample those texts, and task-shaped domains (tool calling,
//! summarization, retrieval QA) wrap them in the shape of those tasks.

mod corpus;
mod rng;
mod tasks;

use corpus::Corpus;
use rng::Rng;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("unknown calibration domain `{0}`; valid domains: {names}", names = Domain::names())]
    UnknownDomain(String),
    #[error("the number of samples must be at least 1")]
    NoSamples,
    #[error("the user text has no non-blank paragraph")]
    EmptyUserText,
}

pub type Result<T> = std::result::Result<T, Error>;

/// What kind of text to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Domain {
    /// Wikipedia and web pages, alternately.
    General,
    Code,
    Multilingual,
    Technical,
    /// Short simple stories.
    Stories,
    /// Tool schemas, JSON function calls, tool results and answers.
    ToolCalling,
    /// A passage, an instruction and an extractive (lead sentences) summary.
    Summarization,
    /// Numbered passages, a question about one sentence, an answer quoting it.
    Rag,
    /// All of the above in equal shares.
    #[default]
    Mixed,
}

impl Domain {
    pub const ALL: [Domain; 9] = [
        Domain::General,
        Domain::Code,
        Domain::Multilingual,
        Domain::Technical,
        Domain::Stories,
        Domain::ToolCalling,
        Domain::Summarization,
        Domain::Rag,
        Domain::Mixed,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Domain::General => "general",
            Domain::Code => "code",
            Domain::Multilingual => "multilingual",
            Domain::Technical => "technical",
            Domain::Stories => "stories",
            Domain::ToolCalling => "tool-calling",
            Domain::Summarization => "summarization",
            Domain::Rag => "rag",
            Domain::Mixed => "mixed",
        }
    }

    fn names() -> String {
        Domain::ALL.map(Domain::name).join(", ")
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Domain {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        Domain::ALL
            .into_iter()
            .find(|d| d.name() == wanted)
            .ok_or_else(|| Error::UnknownDomain(s.to_string()))
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub domain: Domain,
    pub num_samples: usize,
    pub seed: u64,
    /// The user's own text (`--from FILE`): its paragraphs make up to half of
    /// the samples, each used once, spread evenly among the domain's samples.
    pub user_text: Option<String>,
    /// Minimum length in characters of each excerpt taken from a corpus;
    /// shorter paragraphs are joined with the ones that follow.
    pub min_chars: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            domain: Domain::Mixed,
            num_samples: 512,
            seed: 0,
            user_text: None,
            min_chars: 256,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The domain name it came from (`"user"` for the user's text).
    pub domain: &'static str,
    pub text: String,
}

/// `opts.num_samples` samples, the same bytes for the same options on every platform.
pub fn generate(opts: &Options) -> Result<Vec<Sample>> {
    let n = opts.num_samples;
    if n == 0 {
        return Err(Error::NoSamples);
    }
    let mut g = Generator::new(opts.seed, opts.min_chars);
    let mut user = match &opts.user_text {
        Some(text) => match corpus::user_units(text, opts.min_chars) {
            units if units.is_empty() => return Err(Error::EmptyUserText),
            units => Some(Pool::new(units)),
        },
        None => None,
    };
    let k = user
        .as_ref()
        .map_or(0, |u| u.units.len().min(n.div_ceil(2)));
    let mut out = Vec::with_capacity(n);
    let mut j = 0; // domain samples so far
    for i in 0..n {
        // Spreads the k user samples evenly over the n slots.
        match user.as_mut() {
            Some(u) if (i + 1) * k / n > i * k / n => out.push(Sample {
                domain: "user",
                text: u.draw(&mut g.rng).to_string(),
            }),
            _ => {
                let d = match opts.domain {
                    Domain::Mixed => Domain::ALL[j % (Domain::ALL.len() - 1)],
                    d => d,
                };
                out.push(Sample {
                    domain: d.name(),
                    text: g.sample(d),
                });
                j += 1;
            }
        }
    }
    Ok(out)
}

/// The samples as one text file, separated by blank lines (what `llama-imatrix -f` reads).
pub fn render(samples: &[Sample]) -> String {
    let mut out = String::new();
    for s in samples {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(&s.text);
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// Units of one source, drawn without replacement; reshuffled once exhausted.
struct Pool {
    units: Vec<String>,
    order: Vec<usize>,
    next: usize,
}

impl Pool {
    fn new(units: Vec<String>) -> Self {
        Pool {
            units,
            order: Vec::new(),
            next: 0,
        }
    }

    fn draw(&mut self, rng: &mut Rng) -> &str {
        if self.units.is_empty() {
            return "";
        }
        if self.next == self.order.len() {
            self.order = (0..self.units.len()).collect();
            rng.shuffle(&mut self.order);
            self.next = 0;
        }
        self.next += 1;
        &self.units[self.order[self.next - 1]]
    }
}

struct Generator {
    rng: Rng,
    min_chars: usize,
    /// Cut lazily: only the corpora a domain needs.
    pools: [Option<Pool>; Corpus::COUNT],
    general_turn: usize,
    prose_turn: usize,
}

impl Generator {
    fn new(seed: u64, min_chars: usize) -> Self {
        Generator {
            rng: Rng::new(seed),
            min_chars,
            pools: Default::default(),
            general_turn: 0,
            prose_turn: 0,
        }
    }

    fn passage(&mut self, c: Corpus) -> String {
        let min_chars = self.min_chars;
        let pool = self.pools[c as usize].get_or_insert_with(|| Pool::new(c.units(min_chars)));
        pool.draw(&mut self.rng).to_string()
    }

    /// Prose for the task-shaped domains, from each prose corpus in turn.
    fn prose(&mut self) -> String {
        const PROSE: [Corpus; 4] = [
            Corpus::Wiki,
            Corpus::Web,
            Corpus::Technical,
            Corpus::Stories,
        ];
        self.prose_turn += 1;
        self.passage(PROSE[self.prose_turn % PROSE.len()])
    }

    fn sample(&mut self, d: Domain) -> String {
        match d {
            Domain::General => {
                self.general_turn += 1;
                let c = [Corpus::Wiki, Corpus::Web][self.general_turn % 2];
                self.passage(c)
            }
            Domain::Code => self.passage(Corpus::Code),
            Domain::Multilingual => self.passage(Corpus::Multilingual),
            Domain::Technical => self.passage(Corpus::Technical),
            Domain::Stories => self.passage(Corpus::Stories),
            Domain::ToolCalling => self.tool_calling(),
            Domain::Summarization => self.summarization(),
            Domain::Rag => self.rag(),
            Domain::Mixed => unreachable!("mixed is resolved into its parts by generate"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(domain: Domain, num_samples: usize, seed: u64) -> Options {
        Options {
            domain,
            num_samples,
            seed,
            ..Options::default()
        }
    }

    fn text(o: &Options) -> String {
        render(&generate(o).unwrap())
    }

    #[test]
    fn same_seed_same_bytes_different_seed_different() {
        let a = text(&opts(Domain::Mixed, 40, 7));
        assert_eq!(a, text(&opts(Domain::Mixed, 40, 7)));
        assert_ne!(a, text(&opts(Domain::Mixed, 40, 8)));
    }

    #[test]
    fn every_domain_gives_the_requested_samples() {
        for d in Domain::ALL {
            for n in [1, 13] {
                let samples = generate(&opts(d, n, 1)).unwrap();
                assert_eq!(samples.len(), n, "{d}");
                for s in &samples {
                    assert!(corpus::chars(&s.text) >= 100, "{d}: {:?}", s.text);
                    assert!(!s.text.trim().is_empty());
                    if d != Domain::Mixed {
                        assert_eq!(s.domain, d.name());
                    }
                }
            }
        }
    }

    #[test]
    fn mixed_is_balanced() {
        let samples = generate(&opts(Domain::Mixed, 80, 3)).unwrap();
        for d in &Domain::ALL[..8] {
            assert_eq!(samples.iter().filter(|s| s.domain == d.name()).count(), 10);
        }
    }

    #[test]
    fn samples_are_drawn_without_replacement() {
        let samples = generate(&opts(Domain::Technical, 60, 5)).unwrap();
        let mut texts: Vec<_> = samples.iter().map(|s| &s.text).collect();
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), 60);
    }

    #[test]
    fn tool_calls_are_valid_json() {
        let mut calls = 0;
        for s in generate(&opts(Domain::ToolCalling, 60, 2)).unwrap() {
            assert!(s.text.contains("User: ") && s.text.contains("Tool: "));
            let mut offered = Vec::new();
            for line in s.text.lines() {
                let json = line
                    .strip_prefix("Assistant: ")
                    .or_else(|| line.strip_prefix("Tool: "))
                    .unwrap_or(line);
                if !json.starts_with('{') {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("{e}: {json}\nin:\n{}", s.text));
                if line.starts_with("Assistant: ") {
                    assert!(v["arguments"].is_object(), "{v}");
                    assert!(offered.contains(&v["name"]), "{v} calls a tool not offered");
                    calls += 1;
                } else if line.starts_with('{') {
                    assert_eq!(v["parameters"]["type"], "object", "{v}");
                    offered.push(v["name"].clone());
                }
            }
        }
        assert!(calls >= 60);
    }

    #[test]
    fn summaries_are_extracted_from_the_passage() {
        for s in generate(&opts(Domain::Summarization, 30, 4)).unwrap() {
            let (passage, summary) = s
                .text
                .rsplit_once("\n\nSummary: ")
                .unwrap_or_else(|| s.text.rsplit_once("\n\nTL;DR: ").expect("a summary"));
            let first = corpus::sentences(summary)[0];
            assert!(passage.contains(first), "{first:?} not in passage");
        }
    }

    #[test]
    fn rag_answers_quote_a_passage() {
        for s in generate(&opts(Domain::Rag, 30, 9)).unwrap() {
            assert!(s.text.contains("[1] ") && s.text.contains("[3] "));
            assert!(s.text.contains("\nQuestion: "));
            let quote = s.text.rsplit_once(" says: \"").unwrap().1;
            let quote = quote.strip_suffix('"').unwrap();
            let body = s.text.split("\nQuestion: ").next().unwrap();
            assert!(body.contains(quote), "{quote:?}");
        }
    }

    #[test]
    fn user_text_is_included() {
        let user = "My own calibration paragraph about turbine blades.\n\n\
                    A second one, on gearbox lubrication intervals.\n";
        let o = Options {
            user_text: Some(user.into()),
            min_chars: 0,
            ..opts(Domain::Code, 6, 1)
        };
        let samples = generate(&o).unwrap();
        assert_eq!(samples.len(), 6);
        assert_eq!(samples.iter().filter(|s| s.domain == "user").count(), 2);
        let all = render(&samples);
        assert!(all.contains("turbine blades") && all.contains("gearbox lubrication"));

        let blank = Options {
            user_text: Some("\n \n".into()),
            ..o
        };
        assert_eq!(generate(&blank), Err(Error::EmptyUserText));
    }

    #[test]
    fn no_evaluation_text_leaks() {
        let eval = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/corpora/wiki_eval_small.txt"
        ));
        let probes: Vec<&str> = eval.lines().filter(|l| l.len() > 80).take(20).collect();
        assert!(probes.len() >= 10);
        let mut all = text(&opts(Domain::General, 600, 11));
        all += &text(&opts(Domain::Mixed, 400, 12));
        for p in probes {
            assert!(!all.contains(p), "evaluation text leaked: {p}");
            for c in [
                Corpus::Wiki,
                Corpus::Web,
                Corpus::Technical,
                Corpus::Multilingual,
            ] {
                assert!(!c.text().contains(p), "{c:?} contains evaluation text: {p}");
            }
        }
    }

    #[test]
    fn domain_names_parse_and_errors_list_them() {
        for d in Domain::ALL {
            assert_eq!(d.name().parse::<Domain>(), Ok(d));
        }
        assert_eq!("Tool_Calling".parse::<Domain>(), Ok(Domain::ToolCalling));
        let err = "poetry".parse::<Domain>().unwrap_err();
        assert_eq!(err, Error::UnknownDomain("poetry".into()));
        let msg = err.to_string();
        assert!(msg.contains("poetry") && msg.contains("tool-calling, summarization, rag, mixed"));
        assert_eq!(generate(&opts(Domain::Code, 0, 0)), Err(Error::NoSamples));
    }

    #[test]
    fn render_separates_samples_with_a_blank_line() {
        let s = |t: &str| Sample {
            domain: "user",
            text: t.into(),
        };
        assert_eq!(render(&[s("a"), s("b")]), "a\n\nb\n");
        assert_eq!(render(&[]), "");
    }
}
