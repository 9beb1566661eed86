//! `iq quantize`: the brief's i-quant flow in one command. An importance matrix (given,
//! or computed from calibration text with our runtime and cached next to the output)
//! drives every scale search, then `quantize llm`'s one-pass writer makes each requested
//! file type, and `--evaluate` records the measured quality in the manifest.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use pajamas_plan::{Ftype, Overrides, Rules};

use crate::imatrix::{imatrix_command, ImatrixArgs};
use crate::quantize::{quantize_gguf, QuantizeOptions, QuantizeReport};

/// Where the importance weights come from.
#[derive(Debug, Clone)]
pub enum Importance {
    /// An imatrix file (ours or llama-imatrix's, GGUF or legacy `.dat`).
    File(PathBuf),
    /// Calibration text: the imatrix is computed with our runtime.
    Calibration {
        text: PathBuf,
        ctx: usize,
        chunks: Option<usize>,
    },
}

/// Options of `iq quantize`.
#[derive(Debug, Clone)]
pub struct IqArgs {
    pub model: String,
    pub importance: Importance,
    pub ftypes: Vec<Ftype>,
    pub output: PathBuf,
    pub rules: Rules,
    pub force: bool,
    pub progress: bool,
}

/// What `iq quantize` did: the imatrix it used and the quantize report.
#[derive(Debug, Serialize)]
pub struct IqReport {
    pub imatrix: String,
    /// Whether the imatrix was computed in this run (false: given, or reused from cache).
    pub imatrix_computed: bool,
    #[serde(flatten)]
    pub quantize: QuantizeReport,
}

/// What the cached imatrix was computed from; a different key means recompute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CacheKey {
    model: String,
    model_bytes: u64,
    calibration: String,
    calibration_fnv64: String,
    ctx: usize,
    chunks: Option<usize>,
}

/// FNV-1a over the file: enough to notice edited calibration text (not a security hash).
fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Total size of the model's files (a folder's safetensors or the GGUF file).
fn model_bytes(model: &str) -> u64 {
    let p = Path::new(model);
    if p.is_file() {
        return p.metadata().map(|m| m.len()).unwrap_or(0);
    }
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// `Qwen3-8B-Q4_K_M.gguf` -> `Qwen3-8B`; a folder -> its name.
fn stem(model: &str) -> String {
    let p = Path::new(model.trim_end_matches('/'));
    let name = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    match name.rsplit_once('-') {
        Some((head, tail)) if Ftype::from_name(tail).is_some() => head.to_string(),
        _ => name,
    }
}

/// The imatrix to use: the given file, or `OUTPUT/imatrix/<model>.imatrix.gguf`
/// (computed unless a cached one was made from the same model, text and context).
fn resolve_imatrix(a: &IqArgs) -> Result<(PathBuf, bool)> {
    let (text, ctx, chunks) = match &a.importance {
        Importance::File(p) => {
            if !p.is_file() {
                bail!("--imatrix {}: no such file", p.display());
            }
            return Ok((p.clone(), false));
        }
        Importance::Calibration { text, ctx, chunks } => (text, *ctx, *chunks),
    };
    let bytes = std::fs::read(text).with_context(|| format!("reading {}", text.display()))?;
    let key = CacheKey {
        model: a.model.clone(),
        model_bytes: model_bytes(&a.model),
        calibration: text.display().to_string(),
        calibration_fnv64: format!("{:016x}", fnv64(&bytes)),
        ctx,
        chunks,
    };
    let dir = a.output.join("imatrix");
    let path = dir.join(format!("{}.imatrix.gguf", stem(&a.model)));
    let key_path = path.with_extension("json");
    let cached = std::fs::read(&key_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<CacheKey>(&b).ok());
    if path.is_file() && cached.as_ref() == Some(&key) {
        if a.progress {
            eprintln!("using the cached imatrix {}", path.display());
        }
        return Ok((path, false));
    }
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    // The key goes first-out: a stale key never vouches for a new file.
    let _ = std::fs::remove_file(&key_path);
    imatrix_command(&ImatrixArgs {
        model: a.model.clone(),
        calibration: text.clone(),
        output: path.clone(),
        ctx,
        chunks,
        process_output: false,
        force: true,
        progress: a.progress,
    })
    .with_context(|| {
        format!(
            "computing the imatrix of {} from {}",
            a.model,
            text.display()
        )
    })?;
    let tmp = key_path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&key)?)
        .with_context(|| tmp.display().to_string())?;
    std::fs::rename(&tmp, &key_path).with_context(|| key_path.display().to_string())?;
    Ok((path, true))
}

/// Runs `iq quantize`.
pub fn iq_quantize(a: &IqArgs) -> Result<IqReport> {
    if a.ftypes.is_empty() {
        bail!("--precision: give at least one type (e.g. IQ2_XS or IQ4_XS,IQ3_XXS)");
    }
    let (imatrix, computed) = resolve_imatrix(a)?;
    let report = quantize_gguf(&QuantizeOptions {
        model: a.model.clone(),
        output: a.output.clone(),
        ftypes: a.ftypes.clone(),
        mlx: None,
        rules: a.rules,
        overrides: Overrides::default(),
        pre_tokenizer: None,
        imatrix: Some(imatrix.clone()),
        budget: None,
        dry_run: false,
        verbose_plan: false,
        force: a.force,
        progress: a.progress,
    })?;
    Ok(IqReport {
        imatrix: imatrix.display().to_string(),
        imatrix_computed: computed,
        quantize: report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems() {
        assert_eq!(stem("out/gguf/Q4_K_M/Qwen3-8B-Q4_K_M.gguf"), "Qwen3-8B");
        assert_eq!(stem("models/demo/"), "demo");
        assert_eq!(stem("SmolLM2-135M.gguf"), "SmolLM2-135M");
    }

    #[test]
    fn fnv_changes_with_text() {
        assert_ne!(fnv64(b"hello"), fnv64(b"hellp"));
        assert_eq!(fnv64(b""), 0xcbf2_9ce4_8422_2325);
    }
}
