//! `manifest.json`: what a run produced. Each artifact carries its path (relative to the
//! output folder), size, bits per weight, the plan summary and, once measured, quality.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use pajamas_arch::ArchitectureInfo;
use pajamas_plan::GgufPlan;

pub const MANIFEST_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Artifact {
    pub format: String,
    pub precision: String,
    /// Relative to the output folder.
    pub path: String,
    pub size_bytes: u64,
    pub bits_per_weight: f64,
    pub rules: String,
    /// Tensor count per output type.
    pub tensor_types: BTreeMap<String, usize>,
    pub seconds: f64,
    /// Perplexity / KL divergence, filled by `--evaluate` (null until measured).
    pub quality: Option<serde_json::Value>,
    /// For a budgeted file (`--target-bpw`, `--target-size`): the target and what the
    /// plan achieved (tensor-data bits per weight, predicted size, total sensitivity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<serde_json::Value>,
}

impl Artifact {
    pub fn gguf(root: &Path, path: &Path, size: u64, plan: &GgufPlan, seconds: f64) -> Artifact {
        let mut types = BTreeMap::new();
        for t in &plan.tensors {
            *types.entry(t.ty.name().to_string()).or_insert(0) += 1;
        }
        Artifact {
            format: "gguf".into(),
            precision: plan.precision_name(),
            path: path
                .strip_prefix(root)
                .unwrap_or(path)
                .display()
                .to_string(),
            size_bytes: size,
            bits_per_weight: (size as f64 * 8.0 / plan.elements().max(1) as f64 * 1000.0).round()
                / 1000.0,
            rules: plan.rules.name().into(),
            tensor_types: types,
            seconds: (seconds * 100.0).round() / 100.0,
            quality: None,
            budget: plan
                .budget
                .as_ref()
                .and_then(|b| serde_json::to_value(b).ok()),
        }
    }
}

impl Artifact {
    /// The entry of an MLX checkpoint folder.
    pub fn mlx(
        root: &Path,
        out: &pajamas_mlx::MlxOutput,
        plan: &pajamas_mlx::MlxPlan,
        seconds: f64,
    ) -> Artifact {
        let summary = plan.summary();
        Artifact {
            format: "mlx".into(),
            precision: plan.choice.dir_name(),
            path: out
                .dir
                .strip_prefix(root)
                .unwrap_or(&out.dir)
                .display()
                .to_string(),
            size_bytes: out.total_bytes,
            bits_per_weight: (summary.bits_per_weight * 1000.0).round() / 1000.0,
            rules: summary.label.clone(),
            tensor_types: summary.modules.clone(),
            seconds: (seconds * 100.0).round() / 100.0,
            quality: None,
            budget: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub tool: String,
    pub model: String,
    pub model_type: String,
    pub family: serde_json::Value,
    pub parameters: u64,
    pub artifacts: Vec<Artifact>,
}

impl Manifest {
    /// Adds `outputs` to `root/manifest.json` (replacing entries with the same path) and
    /// writes it atomically. Returns its path.
    pub fn update(
        root: &Path,
        model: &str,
        arch: &ArchitectureInfo,
        outputs: &[Artifact],
    ) -> Result<PathBuf> {
        let path = root.join("manifest.json");
        let mut m = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| serde_json::from_str::<Manifest>(&s).ok())
            .filter(|m| m.model == model)
            .unwrap_or_else(|| Manifest {
                schema_version: MANIFEST_SCHEMA_VERSION,
                tool: format!("llama-pajamas {}", env!("CARGO_PKG_VERSION")),
                model: model.to_string(),
                model_type: arch.model_type.clone(),
                family: serde_json::to_value(arch.family).unwrap_or_default(),
                parameters: arch.params.total,
                artifacts: Vec::new(),
            });
        for a in outputs {
            m.artifacts.retain(|x| x.path != a.path);
            m.artifacts.push(a.clone());
        }
        m.artifacts.sort_by(|a, b| a.path.cmp(&b.path));
        let tmp = root.join("manifest.json.partial");
        let mut f = std::fs::File::create(&tmp).with_context(|| tmp.display().to_string())?;
        f.write_all(serde_json::to_string_pretty(&m)?.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path).with_context(|| path.display().to_string())?;
        Ok(path)
    }
}
