//! `profile`: expert statistics of an MoE model on calibration text (how often each
//! expert is chosen and how much routing weight it gets), experts with too few tokens
//! flagged, and, with `--balanced-output`, expert-balanced calibration text: passages
//! from the bundled corpora that route to the starved experts are put first, so that
//! no expert is quantized without importance data (the known failure of an imatrix
//! computed on text that never reaches some experts).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use pajamas_runtime::moe::Route;
use pajamas_runtime::{LinearHook, LinearInput};

use crate::eval::{chunk_bos, load_model, prepare_text, run_eval, LoadedModel};

/// Options of `profile`.
#[derive(Debug, Clone)]
pub struct ProfileArgs {
    pub model: String,
    pub calibration: PathBuf,
    pub ctx: usize,
    pub chunks: Option<usize>,
    /// An expert with fewer routed tokens than this is flagged (and, with
    /// `balanced_output`, given more text).
    pub min_tokens: u64,
    /// Write expert-balanced calibration text here (same token budget as the input).
    pub balanced_output: Option<PathBuf>,
    pub seed: u64,
    pub force: bool,
    pub progress: bool,
}

/// One expert of one layer.
#[derive(Debug, Clone, Serialize)]
pub struct ExpertStats {
    pub expert: usize,
    /// Tokens routed to it.
    pub tokens: u64,
    /// `tokens` over all routed tokens of the layer.
    pub frequency: f64,
    /// Sum of its routing weights over those tokens.
    pub weight_mass: f64,
    /// Fewer than `min_tokens` tokens.
    pub starved: bool,
}

/// One MoE layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerProfile {
    pub layer: usize,
    pub n_experts: usize,
    /// Tokens that went through the layer.
    pub tokens: u64,
    /// Normalised entropy of the expert frequencies: 1 = perfectly even use.
    pub balance: f64,
    pub experts: Vec<ExpertStats>,
}

/// The expert statistics of a model on a text.
#[derive(Debug, Clone, Serialize)]
pub struct ExpertProfile {
    pub text: String,
    pub tokens: u64,
    pub min_tokens: u64,
    pub layers: Vec<LayerProfile>,
    /// `(layer, expert)` pairs with fewer than `min_tokens` tokens.
    pub starved: Vec<(usize, usize)>,
}

/// What `profile` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileReport {
    pub model: String,
    pub profile: ExpertProfile,
    /// With `--balanced-output`: the balanced text's file, the passages added and its
    /// own profile.
    pub balanced: Option<BalancedReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BalancedReport {
    pub output: String,
    pub passages_added: usize,
    pub profile: ExpertProfile,
}

/// Route counts per MoE layer.
#[derive(Debug, Default, Clone)]
struct RouteCounter {
    top_k: usize,
    /// layer -> (tokens per expert, weight mass per expert).
    layers: BTreeMap<usize, (Vec<u64>, Vec<f64>)>,
}

impl LinearHook for RouteCounter {
    fn before_linear(&mut self, _input: &LinearInput<'_>) {}

    fn on_route(&mut self, layer: usize, n_experts: usize, routes: &[Route]) {
        let (tokens, mass) = self
            .layers
            .entry(layer)
            .or_insert_with(|| (vec![0; n_experts], vec![0.0; n_experts]));
        for &(e, w) in routes {
            tokens[e] += 1;
            mass[e] += f64::from(w);
        }
    }
}

impl RouteCounter {
    fn new(top_k: usize) -> Self {
        RouteCounter {
            top_k,
            layers: BTreeMap::new(),
        }
    }

    fn profile(&self, text: &str, min_tokens: u64) -> ExpertProfile {
        let mut starved = Vec::new();
        let layers: Vec<LayerProfile> = self
            .layers
            .iter()
            .map(|(&layer, (tokens, mass))| {
                let routed: u64 = tokens.iter().sum();
                let n = tokens.len();
                let entropy: f64 = tokens
                    .iter()
                    .filter(|&&t| t > 0)
                    .map(|&t| {
                        let p = t as f64 / routed as f64;
                        -p * p.ln()
                    })
                    .sum();
                let experts = tokens
                    .iter()
                    .zip(mass)
                    .enumerate()
                    .map(|(e, (&t, &m))| {
                        if t < min_tokens {
                            starved.push((layer, e));
                        }
                        ExpertStats {
                            expert: e,
                            tokens: t,
                            frequency: t as f64 / routed.max(1) as f64,
                            weight_mass: m,
                            starved: t < min_tokens,
                        }
                    })
                    .collect();
                LayerProfile {
                    layer,
                    n_experts: n,
                    tokens: routed / self.top_k.max(1) as u64,
                    balance: if n > 1 {
                        entropy / (n as f64).ln()
                    } else {
                        1.0
                    },
                    experts,
                }
            })
            .collect();
        ExpertProfile {
            text: text.to_string(),
            tokens: layers.first().map_or(0, |l| l.tokens),
            min_tokens,
            layers,
            starved,
        }
    }
}

fn top_k(model: &LoadedModel, input: &str) -> Result<usize> {
    match &model.model.config.moe {
        Some(m) => Ok(m.top_k),
        None => bail!(
            "{input}: {} is a dense model (no experts): there are no expert statistics to profile",
            model.model.config.model_type
        ),
    }
}

/// Profiles `text` the way `imatrix` would read it (same chunks).
fn profile_text(
    model: &LoadedModel,
    text: &Path,
    ctx: usize,
    chunks: Option<usize>,
    min_tokens: u64,
    progress: bool,
) -> Result<ExpertProfile> {
    let (tokens, opts) = prepare_text(&model.tokenizer, text, ctx, chunks)?;
    let mut counter = RouteCounter::new(top_k(model, &model.input)?);
    run_eval(model, None, &tokens, &opts, progress, None, &mut counter)?;
    Ok(counter.profile(&text.display().to_string(), min_tokens))
}

/// `profile`.
pub fn profile_command(a: &ProfileArgs) -> Result<ProfileReport> {
    if let Some(out) = &a.balanced_output {
        if out.exists() && !a.force {
            bail!("{} exists; pass --force to overwrite it", out.display());
        }
    }
    let model = load_model(&a.model)?;
    let profile = profile_text(
        &model,
        &a.calibration,
        a.ctx,
        a.chunks,
        a.min_tokens,
        a.progress,
    )?;
    let balanced = match &a.balanced_output {
        None => None,
        Some(out) => Some(balance(&model, a, &profile, out)?),
    };
    Ok(ProfileReport {
        model: a.model.clone(),
        profile,
        balanced,
    })
}

/// Passages of the bundled corpora (all domains) as candidates.
fn candidates(seed: u64) -> Result<Vec<String>> {
    let opts = pajamas_calib::Options {
        domain: pajamas_calib::Domain::Mixed,
        num_samples: 400,
        seed,
        user_text: None,
        min_chars: 200,
    };
    // Paragraphs, so that one candidate is a few dozen to a few hundred tokens.
    Ok(pajamas_calib::generate(&opts)?
        .into_iter()
        .flat_map(|s| {
            s.text
                .split("\n\n")
                .map(|p| p.trim().to_string())
                .filter(|p| p.len() >= 80)
                .collect::<Vec<_>>()
        })
        .collect())
}

/// Expert-balanced text, in rounds: the experts short of `min_tokens` in the current
/// text's profile get candidate passages, chosen greedily by missing expert tokens
/// covered per token spent (each passage scored by a forward pass of its own); the
/// passages go first and the user's text fills the rest of the same token budget; the
/// result is profiled again, and the next round adds passages for whatever is still
/// short (dropping the user's tail can starve an expert the first round did not see
/// short). Written atomically.
fn balance(
    model: &LoadedModel,
    a: &ProfileArgs,
    plain: &ExpertProfile,
    out: &Path,
) -> Result<BalancedReport> {
    const ROUNDS: usize = 8;
    let budget_tokens = plain.tokens as usize;
    let top = top_k(model, &a.model)?;
    let bos = chunk_bos(&model.tokenizer);
    let mut scored = Vec::new();
    for text in candidates(a.seed)? {
        let mut ids: Vec<u32> = bos.into_iter().collect();
        ids.extend(model.tokenizer.encode(&text, false));
        if ids.len() > a.ctx {
            continue; // scored as it will be read: whole, within one chunk
        }
        let mut counter = RouteCounter::new(top);
        model
            .model
            .forward_with_hook(&ids, &mut counter)
            .context("routing a candidate passage")?;
        let counts: BTreeMap<(usize, usize), u64> = counter
            .layers
            .iter()
            .flat_map(|(&l, (t, _))| t.iter().enumerate().map(move |(e, &c)| ((l, e), c)))
            .collect();
        scored.push((text, ids.len(), counts));
    }
    let user = std::fs::read_to_string(&a.calibration)
        .with_context(|| a.calibration.display().to_string())?;
    let user_paras: Vec<(String, usize)> = user
        .split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let p = p.trim_end().to_string();
            let n = model.tokenizer.encode(&p, false).len();
            (p, n)
        })
        .collect();
    let tmp = out.with_extension("tmp-balanced");
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
    }
    let mut chosen: Vec<(String, usize)> = Vec::new();
    let mut current = plain.clone();
    for _ in 0..ROUNDS {
        // 20% above the bar: chunk boundaries move a passage's routing a little.
        let want = a.min_tokens + a.min_tokens / 5;
        let mut deficit: BTreeMap<(usize, usize), u64> = current
            .layers
            .iter()
            .flat_map(|l| {
                l.experts
                    .iter()
                    .map(move |x| ((l.layer, x.expert), x.tokens))
            })
            .filter(|(_, t)| *t < want)
            .map(|(k, t)| (k, want - t))
            .collect();
        if current.starved.is_empty() || deficit.is_empty() {
            break;
        }
        let mut used: usize = chosen.iter().map(|(_, n)| n).sum();
        let before = chosen.len();
        while !deficit.is_empty() {
            let best = scored
                .iter()
                .enumerate()
                .filter(|(_, (_, n, _))| used + n <= budget_tokens)
                .map(|(i, (_, n, counts))| {
                    let gain: u64 = deficit
                        .iter()
                        .map(|(k, d)| (*d).min(counts.get(k).copied().unwrap_or(0)))
                        .sum();
                    (i, gain as f64 / *n as f64, gain)
                })
                .filter(|x| x.2 > 0)
                .max_by(|x, y| x.1.total_cmp(&y.1).then(y.0.cmp(&x.0)));
            let Some((i, _, _)) = best else { break };
            let (text, n, counts) = scored.swap_remove(i);
            for (k, d) in deficit.iter_mut() {
                *d = d.saturating_sub(counts.get(k).copied().unwrap_or(0));
            }
            deficit.retain(|_, d| *d > 0);
            used += n;
            chosen.push((text, n));
        }
        if chosen.len() == before {
            break; // no passage left that helps
        }
        // The passages, then the user's text up to the budget.
        let mut parts: Vec<&str> = chosen.iter().map(|(t, _)| t.as_str()).collect();
        for (p, n) in &user_paras {
            if used + n > budget_tokens {
                // The part of the last paragraph that fits, cut at a space.
                let mut keep = p.len() * (budget_tokens - used) / n;
                while !p.is_char_boundary(keep) {
                    keep -= 1;
                }
                let cut = p[..keep].rfind(' ').unwrap_or(0);
                if cut > 0 {
                    parts.push(&p[..cut]);
                }
                break;
            }
            used += n;
            parts.push(p);
        }
        std::fs::write(&tmp, parts.join("\n\n") + "\n")
            .with_context(|| tmp.display().to_string())?;
        current = profile_text(model, &tmp, a.ctx, a.chunks, a.min_tokens, a.progress)?;
    }
    if chosen.is_empty() {
        std::fs::write(&tmp, &user).with_context(|| tmp.display().to_string())?;
    }
    std::fs::rename(&tmp, out).with_context(|| out.display().to_string())?;
    current.text = out.display().to_string();
    Ok(BalancedReport {
        output: out.display().to_string(),
        passages_added: chosen.len(),
        profile: current,
    })
}

/// The human-readable report.
pub fn render(r: &ProfileReport) -> String {
    let mut s = String::new();
    let mut one = |p: &ExpertProfile, title: &str| {
        s += &format!(
            "{title}: {} ({} tokens through each MoE layer; experts with < {} tokens are flagged)\n",
            p.text, p.tokens, p.min_tokens
        );
        for l in &p.layers {
            s += &format!(
                "  layer {:>3}: balance {:.3}  tokens per expert:",
                l.layer, l.balance
            );
            for x in &l.experts {
                s += &format!(" {}{}", x.tokens, if x.starved { "!" } else { "" });
            }
            s += "\n";
        }
        s += &format!(
            "  {} starved expert(s){}\n",
            p.starved.len(),
            if p.starved.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    p.starved
                        .iter()
                        .map(|(l, e)| format!("{l}/{e}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    };
    one(&r.profile, "calibration");
    if let Some(b) = &r.balanced {
        one(
            &b.profile,
            &format!("balanced ({} passages added)", b.passages_added),
        );
    }
    s
}
