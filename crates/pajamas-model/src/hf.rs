//! A HuggingFace model folder: `config.json`, the weights (one `model.safetensors`, or
//! shards listed by `model.safetensors.index.json`), and the tokenizer files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{ModelError, Result};
use crate::safetensors::{SafetensorsFile, TensorData, TensorInfo};

/// Files next to the weights that later stages copy or read.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
    "chat_template.jinja",
    "chat_template.json",
];

const INDEX_FILE: &str = "model.safetensors.index.json";

/// An opened HF model folder. Only headers have been read; tensor data is mapped on use.
#[derive(Debug)]
pub struct HfModel {
    dir: PathBuf,
    config: Value,
    shards: Vec<SafetensorsFile>,
    /// tensor name -> (shard index, index within that shard's tensor list)
    locations: HashMap<String, (usize, usize)>,
    /// Tensor names in a stable order: shard order, then data order within the shard.
    order: Vec<String>,
    tokenizer_files: Vec<PathBuf>,
}

/// A tensor listed by [`HfModel::tensors`].
#[derive(Debug, Clone, Copy)]
pub struct ListedTensor<'a> {
    pub info: &'a TensorInfo,
    pub shard: &'a Path,
}

/// Reads and parses a JSON file, naming the file in every error.
pub fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::InvalidJson {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

impl HfModel {
    /// Opens a model folder: parses `config.json` and every shard header.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(ModelError::MissingConfig { dir });
        }
        let config = read_json(&config_path)?;
        if !config.is_object() {
            return Err(ModelError::InvalidJson {
                path: config_path,
                message: "expected a JSON object at the top level".into(),
            });
        }
        let (shard_paths, index) = find_weights(&dir)?;
        let mut shards = Vec::with_capacity(shard_paths.len());
        let mut locations: HashMap<String, (usize, usize)> = HashMap::new();
        let mut order = Vec::new();
        for (si, path) in shard_paths.iter().enumerate() {
            let shard = SafetensorsFile::open(path)?;
            for (ti, t) in shard.tensors().iter().enumerate() {
                if let Some(&(other, _)) = locations.get(&t.name) {
                    return Err(ModelError::DuplicateTensor {
                        path: path.clone(),
                        other: shard_paths[other].clone(),
                        tensor: t.name.clone(),
                    });
                }
                locations.insert(t.name.clone(), (si, ti));
                order.push(t.name.clone());
            }
            shards.push(shard);
        }
        if let Some((index_path, map)) = index {
            for (tensor, shard_name) in map {
                let expected = shard_paths
                    .iter()
                    .position(|p| p.file_name().and_then(|n| n.to_str()) == Some(&shard_name));
                match (expected, locations.get(&tensor)) {
                    (Some(si), Some(&(found, _))) if si == found => {}
                    _ => {
                        return Err(ModelError::IndexMismatch {
                            index: index_path,
                            shard: shard_name,
                            tensor,
                        })
                    }
                }
            }
        }
        let tokenizer_files = TOKENIZER_FILES
            .iter()
            .map(|f| dir.join(f))
            .filter(|p| p.is_file())
            .collect();
        Ok(HfModel {
            dir,
            config,
            shards,
            locations,
            order,
            tokenizer_files,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &Value {
        &self.config
    }

    pub fn shards(&self) -> &[SafetensorsFile] {
        &self.shards
    }

    /// Tokenizer and generation files present in the folder.
    pub fn tokenizer_files(&self) -> &[PathBuf] {
        &self.tokenizer_files
    }

    pub fn tensor_count(&self) -> usize {
        self.order.len()
    }

    /// Every tensor, in shard order then data order. Reads nothing.
    pub fn tensors(&self) -> impl Iterator<Item = ListedTensor<'_>> {
        self.order.iter().map(move |name| {
            let (si, ti) = self.locations[name];
            ListedTensor {
                info: &self.shards[si].tensors()[ti],
                shard: self.shards[si].path(),
            }
        })
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        let &(si, ti) = self.locations.get(name)?;
        Some(&self.shards[si].tensors()[ti])
    }

    /// The shard holding tensor `name`.
    fn shard_of(&self, name: &str) -> Result<&SafetensorsFile> {
        let &(si, _) = self
            .locations
            .get(name)
            .ok_or_else(|| ModelError::NoSuchTensor {
                model: self.dir.clone(),
                tensor: name.to_string(),
            })?;
        Ok(&self.shards[si])
    }

    /// Raw bytes of one tensor (maps its shard on first use).
    pub fn data(&self, name: &str) -> Result<TensorData<'_>> {
        self.shard_of(name)?.data(name)
    }

    /// Raw bytes of one tensor, read with a positioned read (no mmap): for tensors that
    /// are not floats, such as MLX's packed `uint32` weights.
    pub fn read_bytes(&self, name: &str) -> Result<Vec<u8>> {
        self.shard_of(name)?.read_bytes(name)
    }

    /// One tensor decoded to f32 (through the memory map). Block-scaled FP8 weights are
    /// dequantized (see [`crate::fp8`]).
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        if self.is_fp8(name) {
            return self.read_fp8(name);
        }
        self.shard_of(name)?.read_f32(name)
    }

    /// One tensor read with a positioned read (no mmap) and decoded to f32; see
    /// [`SafetensorsFile::read_f32_streaming`]. Block-scaled FP8 weights are
    /// dequantized (see [`crate::fp8`]).
    pub fn read_f32_streaming(&self, name: &str) -> Result<Vec<f32>> {
        if self.is_fp8(name) {
            return self.read_fp8(name);
        }
        self.shard_of(name)?.read_f32_streaming(name)
    }

    /// Whether [`HfModel::read_f32`] decodes this tensor: a plain float, or an FP8
    /// weight whose block scales are in the checkpoint.
    pub fn reads_as_f32(&self, name: &str) -> bool {
        match self.tensor(name) {
            Some(t) if t.dtype.is_float_readable() => true,
            Some(_) => self.is_fp8(name) && self.tensor(&crate::fp8::scale_name(name)).is_some(),
            None => false,
        }
    }

    fn is_fp8(&self, name: &str) -> bool {
        self.tensor(name)
            .is_some_and(|t| t.dtype == crate::Dtype::F8E4M3)
    }

    /// An `F8_E4M3` weight times its `*_scale_inv` blocks.
    fn read_fp8(&self, name: &str) -> Result<Vec<f32>> {
        let shard = self.shard_of(name)?;
        let err = |message: String| ModelError::Tensor {
            path: shard.path().to_path_buf(),
            tensor: name.to_string(),
            message,
        };
        let info = self.tensor(name).expect("located");
        let scale = crate::fp8::scale_name(name);
        let scale_info = self.tensor(&scale).ok_or_else(|| {
            err(format!(
                "F8_E4M3 weight without its block scales '{scale}'; only block-scaled FP8 checkpoints (DeepSeek-V3 style) are read"
            ))
        })?;
        let block = crate::fp8::block_size(&self.config).ok_or_else(|| {
            err(format!(
                "F8_E4M3 weight, but {} has no quantization_config.weight_block_size [rows, cols]",
                self.dir.join("config.json").display()
            ))
        })?;
        let codes = shard.read_bytes(name)?;
        let scales = self.shard_of(&scale)?.read_f32_streaming(&scale)?;
        crate::fp8::dequantize(&codes, &info.shape, &scales, &scale_info.shape, block).map_err(err)
    }

    /// Total header bytes read across shards (weights are never read by `open`).
    pub fn header_bytes_read(&self) -> u64 {
        self.shards
            .iter()
            .map(SafetensorsFile::header_bytes_read)
            .sum()
    }

    /// Whether any shard has been memory-mapped for data.
    pub fn any_data_mapped(&self) -> bool {
        self.shards.iter().any(SafetensorsFile::is_mapped)
    }
}

type IndexMap = (PathBuf, Vec<(String, String)>);

/// Finds the weight files: the index's shards, else `model.safetensors`, else every
/// `*.safetensors` in the folder (sorted, for determinism).
fn find_weights(dir: &Path) -> Result<(Vec<PathBuf>, Option<IndexMap>)> {
    let index_path = dir.join(INDEX_FILE);
    if index_path.is_file() {
        let index = read_json(&index_path)?;
        let map = index
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| ModelError::InvalidJson {
                path: index_path.clone(),
                message: "missing object 'weight_map' (tensor name -> shard file)".into(),
            })?;
        let mut shard_names: Vec<String> = Vec::new();
        let mut entries = Vec::with_capacity(map.len());
        for (tensor, shard) in map {
            let shard = shard.as_str().ok_or_else(|| ModelError::InvalidJson {
                path: index_path.clone(),
                message: format!("weight_map entry '{tensor}' is not a file name"),
            })?;
            if shard.contains('/') || shard.contains('\\') || shard == ".." {
                return Err(ModelError::InvalidJson {
                    path: index_path.clone(),
                    message: format!("weight_map entry '{tensor}' names '{shard}', which is not a plain file name"),
                });
            }
            if !shard_names.iter().any(|s| s == shard) {
                shard_names.push(shard.to_string());
            }
            entries.push((tensor.clone(), shard.to_string()));
        }
        shard_names.sort();
        let mut paths = Vec::with_capacity(shard_names.len());
        for s in shard_names {
            let p = dir.join(&s);
            if !p.is_file() {
                return Err(ModelError::MissingShard {
                    index: index_path,
                    shard: s,
                    missing: p,
                });
            }
            paths.push(p);
        }
        return Ok((paths, Some((index_path, entries))));
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok((vec![single], None));
    }
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors") && p.is_file())
        .collect();
    if all.is_empty() {
        return Err(ModelError::NoWeights {
            dir: dir.to_path_buf(),
        });
    }
    all.sort();
    Ok((all, None))
}
