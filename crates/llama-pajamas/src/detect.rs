//! `detect`: locate a model, read its config and tensor headers, detect the architecture,
//! classify every tensor and recommend a strategy. Reads no weights.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use pajamas_arch::{classify, detect, ArchitectureInfo, Role, Strategy};
use pajamas_convert::from_gguf::config_from_gguf;
use pajamas_gguf::GgufFile;
use pajamas_model::{locate, read_json, CacheEnv, HfModel, ModelError, ModelLocation};

/// Version of the `detect --json` document; bumped only on incompatible changes.
pub const DETECT_SCHEMA_VERSION: u32 = 1;

/// One classified tensor (listed with `--tensors`).
#[derive(Debug, Clone, Serialize)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub role: Role,
    pub layer: Option<u32>,
    pub expert: Option<u32>,
    pub keep_full_precision: bool,
}

/// What the checkpoint's tensors say, next to what the config says.
#[derive(Debug, Clone, Serialize)]
pub struct TensorSummary {
    pub count: usize,
    pub shards: usize,
    /// Elements in all tensors (a checkpoint that stores a tied head twice counts it twice).
    pub params_in_checkpoint: u64,
    pub dtypes: BTreeMap<String, usize>,
    pub by_role: BTreeMap<String, usize>,
    /// Names no rule recognised (the planner will leave them at source precision).
    pub unrecognised: Vec<String>,
    pub tensors: Vec<TensorEntry>,
}

/// The result of `detect`.
#[derive(Debug, Clone, Serialize)]
pub struct DetectReport {
    pub schema_version: u32,
    /// The `--model` argument as given.
    pub input: String,
    /// The folder it resolved to.
    pub path: PathBuf,
    pub architecture: ArchitectureInfo,
    pub strategy: Strategy,
    /// `None` when the folder holds only a config (detection needs no weights).
    pub tensors: Option<TensorSummary>,
    pub tokenizer_files: Vec<String>,
}

/// Detects the model at `input` (folder, safetensors file or hub id in the local cache).
pub fn detect_model(input: &str) -> Result<DetectReport> {
    detect_model_with_env(input, &CacheEnv::from_process())
}

/// [`detect_model`] with an explicit HuggingFace cache environment.
pub fn detect_model_with_env(input: &str, env: &CacheEnv) -> Result<DetectReport> {
    let dir = match locate(input, env)? {
        ModelLocation::HfFolder(dir) => dir,
        ModelLocation::Gguf(path) => return detect_gguf(input, path),
    };
    let (config, model) = match HfModel::open(&dir) {
        Ok(model) => (model.config().clone(), Some(model)),
        // A config-only folder is enough to detect.
        Err(ModelError::NoWeights { .. }) => (read_json(&dir.join("config.json"))?, None),
        Err(e) => return Err(e.into()),
    };
    let architecture =
        detect(&config).with_context(|| format!("{}", dir.join("config.json").display()))?;
    let strategy = architecture.recommend();
    let tensors = model.as_ref().map(|m| summarise(m, &architecture));
    let tokenizer_files = model
        .as_ref()
        .map(|m| {
            m.tokenizer_files()
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    Ok(DetectReport {
        schema_version: DETECT_SCHEMA_VERSION,
        input: input.to_string(),
        path: dir,
        architecture,
        strategy,
        tensors,
        tokenizer_files,
    })
}

/// Detection of a GGUF file, from its metadata and tensor list.
fn detect_gguf(input: &str, path: PathBuf) -> Result<DetectReport> {
    let file = GgufFile::open(&path)?;
    let config = config_from_gguf(&file).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no general.architecture key; not a model GGUF",
            path.display()
        )
    })?;
    let architecture = detect(&config).with_context(|| format!("{}: metadata", path.display()))?;
    let strategy = architecture.recommend();
    let mut s = TensorSummary {
        count: file.tensors().len(),
        shards: 1,
        params_in_checkpoint: 0,
        dtypes: BTreeMap::new(),
        by_role: BTreeMap::new(),
        unrecognised: Vec::new(),
        tensors: Vec::new(),
    };
    for t in file.tensors() {
        let r = classify(&t.name, Some(architecture.num_layers as u32));
        s.params_in_checkpoint += t.n_elements;
        *s.dtypes.entry(t.ggml_type.name().to_string()).or_default() += 1;
        *s.by_role.entry(role_name(r.role)).or_default() += 1;
        if r.role == Role::Unknown && t.name != "rope_freqs.weight" {
            s.unrecognised.push(t.name.clone());
        }
        s.tensors.push(TensorEntry {
            name: t.name.clone(),
            dtype: t.ggml_type.name().to_string(),
            shape: t.dims.iter().rev().copied().collect(),
            role: r.role,
            layer: r.layer,
            expert: r.expert,
            keep_full_precision: r.keep_full_precision(),
        });
    }
    Ok(DetectReport {
        schema_version: DETECT_SCHEMA_VERSION,
        input: input.to_string(),
        path,
        architecture,
        strategy,
        tensors: Some(s),
        tokenizer_files: Vec::new(),
    })
}

fn role_name(role: Role) -> String {
    serde_json::to_value(role)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn summarise(model: &HfModel, arch: &ArchitectureInfo) -> TensorSummary {
    let mut s = TensorSummary {
        count: model.tensor_count(),
        shards: model.shards().len(),
        params_in_checkpoint: 0,
        dtypes: BTreeMap::new(),
        by_role: BTreeMap::new(),
        unrecognised: Vec::new(),
        tensors: Vec::with_capacity(model.tensor_count()),
    };
    for t in model.tensors() {
        let r = classify(&t.info.name, Some(arch.num_layers as u32));
        s.params_in_checkpoint += t.info.numel();
        *s.dtypes.entry(t.info.dtype.name().to_string()).or_default() += 1;
        *s.by_role.entry(role_name(r.role)).or_default() += 1;
        if r.role == Role::Unknown {
            s.unrecognised.push(t.info.name.clone());
        }
        s.tensors.push(TensorEntry {
            name: t.info.name.clone(),
            dtype: t.info.dtype.name().to_string(),
            shape: t.info.shape.clone(),
            role: r.role,
            layer: r.layer,
            expert: r.expert,
            keep_full_precision: r.keep_full_precision(),
        });
    }
    s
}
