//! Where tensors come from. The forward pass asks for tensors by their HuggingFace names
//! (`model.layers.0.self_attn.q_proj.weight`, ...) and gets f32 data with its shape
//! (PyTorch order, outermost first). [`GgufSource`] maps those names onto GGUF names and
//! dequantizes, so a quantized file runs through the same forward pass as its original
//! and the difference between the two is the quantization error.

use std::path::Path;

use pajamas_convert::deepseek::{join_kv_b, map_deepseek, DeepseekLayout};
use pajamas_convert::hybrid::{map_hybrid, HybridLayout, HybridMap, Op};
use pajamas_convert::names::{map_expert, map_name, rope_permutation, Transform};
use pajamas_gguf::GgufFile;
use pajamas_model::HfModel;

use crate::config::ModelConfig;
use crate::error::{Result, RuntimeError};

/// A source of f32 tensors addressed by HuggingFace names.
pub trait WeightSource {
    /// The model's hyper-parameters.
    fn config(&self) -> Result<ModelConfig>;
    /// Whether the source holds tensor `name` (optional tensors: biases, untied head).
    fn has_tensor(&self, name: &str) -> bool;
    /// Tensor `name` as f32, with its shape. A missing tensor is
    /// [`RuntimeError::MissingTensor`].
    fn read_tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)>;
    /// Whether Gemma-style RMSNorm weights already include the `+ 1` (GGUF stores
    /// `1 + w`; HF checkpoints store `w`).
    fn norms_include_one(&self) -> bool {
        false
    }
    /// The type tensor `name` is stored in, when it is quantized or half precision in a
    /// way the consumer computes with (GGUF); `None` for f32 sources and HF checkpoints.
    fn stored_type(&self, _name: &str) -> Option<pajamas_quant::GgmlType> {
        None
    }
    /// Whether llama.cpp is this source's consumer: its attention keeps K and V in an
    /// f16 cache and multiplies in f16 (see [`crate::Model::llama_cpp_activations`]).
    fn llama_cpp_attention(&self) -> bool {
        false
    }
    /// The stored bytes of a non-float tensor (gpt-oss's MXFP4 `*_blocks` / `*_scales` in
    /// an HF folder); `None` where the source has no such tensors.
    fn read_bytes(&self, _name: &str) -> Option<Result<Vec<u8>>> {
        None
    }
}

/// A HuggingFace folder (`config.json` + safetensors) read through `pajamas-model`.
#[derive(Debug)]
pub struct HfSource {
    model: HfModel,
}

impl HfSource {
    /// Opens an HF model folder (only headers are read here).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Ok(HfSource {
            model: HfModel::open(dir)?,
        })
    }

    /// Wraps an already opened folder.
    pub fn new(model: HfModel) -> Self {
        HfSource { model }
    }

    /// The underlying folder.
    pub fn hf_model(&self) -> &HfModel {
        &self.model
    }
}

impl WeightSource for HfSource {
    fn config(&self) -> Result<ModelConfig> {
        ModelConfig::from_hf_config(self.model.config())
    }

    fn has_tensor(&self, name: &str) -> bool {
        self.model.tensor(name).is_some()
    }

    fn read_tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let info = self
            .model
            .tensor(name)
            .ok_or_else(|| RuntimeError::MissingTensor(name.to_string()))?;
        let shape = info.shape.iter().map(|&d| d as usize).collect();
        let data = self.model.read_f32_streaming(name)?;
        Ok((shape, data))
    }

    fn read_bytes(&self, name: &str) -> Option<Result<Vec<u8>>> {
        self.model.tensor(name)?;
        Some(self.model.read_bytes(name).map_err(Into::into))
    }
}

/// A GGUF file (ours or llama.cpp's): tensors are found by mapping HF names to GGUF
/// names, dequantized to f32, and llama-architecture q/k rows are put back in HF's
/// rotate-half order.
#[derive(Debug)]
pub struct GgufSource {
    file: GgufFile,
    config: ModelConfig,
}

impl GgufSource {
    /// Opens a GGUF file (the header is validated; data is mapped on first read).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = GgufFile::open(path)
            .map_err(|e| RuntimeError::Config(format!("{}: {e}", path.display())))?;
        Self::new(file)
    }

    /// Wraps an opened file.
    pub fn new(file: GgufFile) -> Result<Self> {
        let config = ModelConfig::from_gguf(&file)?;
        Ok(GgufSource { file, config })
    }

    /// The underlying file.
    pub fn gguf(&self) -> &GgufFile {
        &self.file
    }

    fn locate(&self, hf_name: &str) -> Option<(String, Transform)> {
        let c = &self.config;
        if c.family == crate::config::Family::NemotronH {
            return self.locate_nemotron(hf_name);
        }
        if c.family == crate::config::Family::Deepseek {
            return self.locate_deepseek(hf_name);
        }
        if c.family == crate::config::Family::GptOss {
            if let Some(g) = crate::gpt_oss::gguf_name(hf_name) {
                return Some((g, Transform::None));
            }
        }
        if c.hybrid.is_some() {
            if let Some(found) = locate_mamba(hf_name) {
                return Some((found, Transform::None));
            }
            // Granite's attention and norms have llama's names; q/k rows are in
            // llama.cpp's rope order, as for `llama`.
            return map_name(hf_name, "llama", c.n_heads as u64, c.n_kv_heads as u64);
        }
        map_name(
            hf_name,
            &c.model_type,
            c.n_heads as u64,
            c.n_kv_heads as u64,
        )
    }

    fn nemotron_layout(&self) -> HybridLayout {
        let c = &self.config;
        HybridLayout {
            model_type: "nemotron_h".into(),
            heads: c.n_heads as u64,
            kv_heads: c.n_kv_heads as u64,
            ssm_groups: c.hybrid.as_ref().map_or(1, |h| h.ssm_groups as u64),
            has_experts: c.moe.is_some(),
        }
    }

    /// Nemotron-H's `backbone.*` names through the converter's own map (`mixer.A`, not an
    /// HF tensor, is `ssm_a` = `-exp(A_log)`, read as is).
    fn locate_nemotron(&self, hf_name: &str) -> Option<(String, Transform)> {
        if let Some(stem) = hf_name.strip_suffix(".mixer.A") {
            let layer = stem.strip_prefix("backbone.layers.")?;
            layer.parse::<u32>().ok()?;
            return Some((format!("blk.{layer}.ssm_a"), Transform::None));
        }
        let layout = self.nemotron_layout();
        // The shape only decides the GGUF dims, not the name; one that divides evenly.
        match map_hybrid(hf_name, &[layout.ssm_groups], &layout)? {
            HybridMap::Pieces(p) if p.len() == 1 => {
                let t = match p[0].op {
                    Op::RopePermute { heads } => Transform::RopePermute { heads },
                    _ => Transform::None,
                };
                Some((p[0].gguf.clone(), t))
            }
            _ => None,
        }
    }

    /// DeepSeek's names through the converter's map. `kv_b_proj`, stored split in two,
    /// is located at its `attn_k_b` half (see [`GgufSource::read_kv_b`]).
    fn locate_deepseek(&self, hf_name: &str) -> Option<(String, Transform)> {
        // `k_b_proj` / `v_b_proj` (not HF tensors) name the two halves, for their types.
        for (hf, gguf) in [
            (".self_attn.kv_b_proj.weight", "attn_k_b"),
            (".self_attn.k_b_proj.weight", "attn_k_b"),
            (".self_attn.v_b_proj.weight", "attn_v_b"),
        ] {
            if let Some(stem) = hf_name.strip_suffix(hf) {
                let layer = stem.strip_prefix("model.layers.")?;
                layer.parse::<u32>().ok()?;
                return Some((format!("blk.{layer}.{gguf}.weight"), Transform::None));
            }
        }
        let c = &self.config;
        let ds = c.deepseek.as_ref()?;
        let layout = DeepseekLayout {
            heads: c.n_heads as u64,
            kv_lora_rank: ds.kv_lora_rank as u64,
            qk_nope_head_dim: ds.qk_nope_head_dim as u64,
            v_head_dim: ds.v_head_dim as u64,
            num_layers: c.n_layers as u64,
        };
        match map_deepseek(hf_name, &[1], &layout)? {
            HybridMap::Pieces(p) if p.len() == 1 => Some((p[0].gguf.clone(), Transform::None)),
            _ => None,
        }
    }

    /// DeepSeek's `kv_b_proj` `[H * (nope + v), kv_lora]`, joined from `attn_k_b` and
    /// `attn_v_b`; `None` for any other tensor.
    fn read_kv_b(&self, hf_name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let Some(ds) = self.config.deepseek.as_ref() else {
            return Ok(None);
        };
        let Some(stem) = hf_name.strip_suffix(".self_attn.kv_b_proj.weight") else {
            return Ok(None);
        };
        let layer = stem.trim_start_matches("model.layers.");
        let read = |leaf: &str| -> Result<Vec<f32>> {
            let name = format!("blk.{layer}.{leaf}");
            let info = self
                .file
                .tensor(&name)
                .ok_or_else(|| RuntimeError::MissingTensor(format!("{name} (for {hf_name})")))?;
            let bytes = self
                .file
                .data_of(info)
                .map_err(|e| self.tensor_error(&name, e))?;
            let row = info.dims.first().copied().unwrap_or(1) as usize;
            pajamas_quant::dequantize_rows(info.ggml_type, bytes, row)
                .map_err(|e| self.tensor_error(&name, e))
        };
        let (k_b, v_b) = (read("attn_k_b.weight")?, read("attn_v_b.weight")?);
        let (nope, v, r, h) = (
            ds.qk_nope_head_dim,
            ds.v_head_dim,
            ds.kv_lora_rank,
            self.config.n_heads,
        );
        if k_b.len() != h * nope * r || v_b.len() != h * v * r {
            return Err(self.tensor_error(
                &format!("blk.{layer}.attn_k_b.weight"),
                format!("attn_k_b / attn_v_b do not hold {h} heads of {nope} + {v} rows of {r}"),
            ));
        }
        Ok(Some((
            vec![h * (nope + v), r],
            join_kv_b(&k_b, &v_b, nope, v, r),
        )))
    }

    /// A per-expert HF matrix: its stacked GGUF tensor (`{in, out, n_expert}`) and index,
    /// when the file has that expert.
    fn locate_expert(&self, hf_name: &str) -> Option<(&pajamas_gguf::TensorInfo, usize)> {
        let (gguf_name, e) = if self.config.family == crate::config::Family::NemotronH {
            match map_hybrid(hf_name, &[1], &self.nemotron_layout())? {
                HybridMap::Expert { gguf, expert } => (gguf, expert),
                _ => return None,
            }
        } else {
            map_expert(hf_name)?
        };
        let info = self.file.tensor(&gguf_name)?;
        (info.dims.len() == 3 && e < info.dims[2]).then_some((info, e as usize))
    }

    /// Expert `e`'s matrix of stacked tensor `info`, dequantized: `[out, in]`.
    fn read_expert(
        &self,
        info: &pajamas_gguf::TensorInfo,
        e: usize,
    ) -> Result<(Vec<usize>, Vec<f32>)> {
        let (row, out, n) = (
            info.dims[0] as usize,
            info.dims[1] as usize,
            info.dims[2] as usize,
        );
        let bytes = self
            .file
            .data_of(info)
            .map_err(|err| self.tensor_error(&info.name, err))?;
        let per = bytes.len() / n;
        let data =
            pajamas_quant::dequantize_rows(info.ggml_type, &bytes[e * per..(e + 1) * per], row)
                .map_err(|err| self.tensor_error(&info.name, err))?;
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(self.tensor_error(
                &info.name,
                format!("expert {e}: value {i} is {} after dequantization", data[i]),
            ));
        }
        Ok((vec![out, row], data))
    }

    fn tensor_error(&self, name: &str, message: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Config(format!(
            "{}: tensor {name}: {message}",
            self.file.path().display()
        ))
    }
}

/// The Mamba-2 tensors of a hybrid GGUF by the names the forward pass asks for. `mamba.A`
/// (not an HF tensor) is `A = -exp(A_log)` as llama.cpp stores it (`ssm_a`), read as is
/// rather than through a lossy `log`. Shapes are GGUF's (`ssm_conv1d` `[C, K]`, `ssm_a` /
/// `ssm_d` `[H, 1]`, `ssm_norm` `[G, d_inner / G]`); the model checks element counts.
fn locate_mamba(hf_name: &str) -> Option<String> {
    let rest = hf_name.strip_prefix("model.layers.")?;
    let (layer, leaf) = rest.split_once('.')?;
    layer.parse::<u32>().ok()?;
    let g = match leaf.strip_prefix("mamba.")? {
        "in_proj.weight" => "ssm_in.weight",
        "out_proj.weight" => "ssm_out.weight",
        "conv1d.weight" => "ssm_conv1d.weight",
        "conv1d.bias" => "ssm_conv1d.bias",
        "dt_bias" => "ssm_dt.bias",
        "A" => "ssm_a",
        "D" => "ssm_d",
        "norm.weight" => "ssm_norm.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}"))
}

impl WeightSource for GgufSource {
    fn config(&self) -> Result<ModelConfig> {
        Ok(self.config.clone())
    }

    fn has_tensor(&self, name: &str) -> bool {
        self.locate_expert(name).is_some()
            || self
                .locate(name)
                .is_some_and(|(g, _)| self.file.tensor(&g).is_some())
    }

    fn read_tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        if let Some((info, e)) = self.locate_expert(name) {
            return self.read_expert(info, e);
        }
        if let Some(t) = self.read_kv_b(name)? {
            return Ok(t);
        }
        let (gguf_name, transform) = self
            .locate(name)
            .ok_or_else(|| RuntimeError::MissingTensor(name.to_string()))?;
        let info = self
            .file
            .tensor(&gguf_name)
            .ok_or_else(|| RuntimeError::MissingTensor(format!("{gguf_name} (for {name})")))?;
        let shape: Vec<usize> = info.shape().iter().map(|&d| d as usize).collect();
        let row = info.dims.first().copied().unwrap_or(1) as usize;
        let bytes = self
            .file
            .data_of(info)
            .map_err(|e| self.tensor_error(&gguf_name, e))?;
        let data = pajamas_quant::dequantize_rows(info.ggml_type, bytes, row)
            .map_err(|e| self.tensor_error(&gguf_name, e))?;
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(self.tensor_error(
                &gguf_name,
                format!("value {i} is {} after dequantization", data[i]),
            ));
        }
        let data = match transform {
            Transform::RopePermute { heads } => {
                let rows = data.len() / row.max(1);
                let perm = rope_permutation(rows, heads as usize);
                let mut out = vec![0.0f32; data.len()];
                for (gguf_row, &hf_row) in perm.iter().enumerate() {
                    out[hf_row * row..(hf_row + 1) * row]
                        .copy_from_slice(&data[gguf_row * row..(gguf_row + 1) * row]);
                }
                out
            }
            Transform::None | Transform::AddOne => data,
        };
        Ok((shape, data))
    }

    fn norms_include_one(&self) -> bool {
        true
    }

    fn llama_cpp_attention(&self) -> bool {
        true
    }

    fn stored_type(&self, name: &str) -> Option<pajamas_quant::GgmlType> {
        if let Some((info, _)) = self.locate_expert(name) {
            return Some(info.ggml_type);
        }
        let (g, _) = self.locate(name)?;
        Some(self.file.tensor(&g)?.ggml_type)
    }
}
