//! The streaming MLX checkpoint writer.
//!
//! Given every output tensor (name, dtype, shape) up front, it assigns tensors to shards
//! the way mlx-lm's `make_shards` does (in order; a new shard when the next tensor would
//! push the current one past the limit, 5 GiB by default; a larger tensor gets a shard of
//! its own) and writes each shard's safetensors header (`{"format":"mlx"}` metadata)
//! immediately, so tensors can then be written one at a time as the source is read,
//! without holding the model. Tensors may arrive in any order: each goes to its
//! precomputed offset.
//!
//! Shards are `model.safetensors`, or `model-0000i-of-0000N.safetensors` when there are
//! several, each written as `<name>.partial` and renamed when its last tensor is in.
//! [`MlxWriter::finish`] then writes `model.safetensors.index.json` (always, as mlx-lm's
//! `save_model` does: `metadata.total_size`, `metadata.total_parameters` and the
//! `weight_map` sorted by name, 4-space indented), copies the tokenizer and generation
//! files and writes `config.json` last, so a folder with a config.json is complete.
//! `model*.safetensors` files left in the folder by an earlier run with another shard
//! count are removed: mlx-lm loads every file matching that pattern.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::MlxError;

/// mlx-lm's `MAX_FILE_SIZE_GB = 5`, applied as `5 << 30` bytes.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5 << 30;

/// The index file mlx-lm writes next to the shards.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// One tensor of the checkpoint as the file declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputTensor {
    pub name: String,
    /// safetensors dtype: `U32`, `BF16`, `F16` or `F32`.
    pub dtype: &'static str,
    pub shape: Vec<u64>,
}

impl OutputTensor {
    pub fn new(name: &str, dtype: &'static str, shape: Vec<u64>) -> OutputTensor {
        OutputTensor {
            name: name.to_string(),
            dtype,
            shape,
        }
    }

    pub fn nbytes(&self) -> u64 {
        let size = match self.dtype {
            "U32" | "F32" | "I32" => 4,
            "BF16" | "F16" => 2,
            _ => 1,
        };
        self.shape.iter().product::<u64>() * size
    }
}

struct Shard {
    name: String,
    file: Option<BufWriter<File>>,
    /// Byte where the data section starts (8 + header length).
    data_start: u64,
    /// Where the file cursor is (saves a seek, which would flush the buffer, when
    /// tensors arrive in file order).
    pos: u64,
    remaining: usize,
}

/// What [`MlxWriter::finish`] produced.
#[derive(Debug, Clone, Serialize)]
pub struct MlxOutput {
    pub dir: PathBuf,
    /// Shard files, in order.
    pub shards: Vec<PathBuf>,
    /// Every file written or copied, config.json last.
    pub files: Vec<PathBuf>,
    /// Bytes of all files written or copied.
    pub total_bytes: u64,
    /// Bytes of tensor data (the index's `total_size`).
    pub tensor_bytes: u64,
}

/// Writes one MLX checkpoint folder; see the module docs.
pub struct MlxWriter {
    dir: PathBuf,
    shards: Vec<Shard>,
    /// name -> (shard, offset within the data section, length, written)
    slots: HashMap<String, (usize, u64, u64, bool)>,
    tensor_bytes: u64,
    finished: bool,
}

fn io(path: &Path, e: std::io::Error) -> MlxError {
    MlxError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Shard assignment: mlx-lm's `make_shards` over tensor sizes.
pub fn assign_shards(sizes: &[u64], max_shard_bytes: u64) -> Vec<usize> {
    let mut out = Vec::with_capacity(sizes.len());
    let mut shard: Option<usize> = None;
    let mut size = 0u64;
    for &s in sizes {
        if shard.is_none() || size + s > max_shard_bytes {
            shard = Some(shard.map_or(0, |i| i + 1));
            size = 0;
        }
        out.push(shard.expect("set above"));
        size += s;
    }
    out
}

/// `model.safetensors` or `model-0000i-of-0000N.safetensors`.
pub fn shard_name(i: usize, count: usize) -> String {
    if count > 1 {
        format!("model-{:05}-of-{:05}.safetensors", i + 1, count)
    } else {
        "model.safetensors".to_string()
    }
}

/// JSON with 4-space indentation, as Python's `json.dump(..., indent=4)` lays it out.
pub fn to_json_pretty4(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    v.serialize(&mut ser).expect("JSON values serialize");
    out
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), MlxError> {
    let tmp = partial(path);
    let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

fn partial(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".partial");
    PathBuf::from(s)
}

impl MlxWriter {
    /// Creates `dir` (and parents), lays out the shards and writes their headers.
    pub fn create(
        dir: impl AsRef<Path>,
        tensors: &[OutputTensor],
        max_shard_bytes: u64,
    ) -> Result<MlxWriter, MlxError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let mut seen = std::collections::HashSet::new();
        for t in tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(MlxError::DuplicateTensor(t.name.clone()));
            }
        }
        let sizes: Vec<u64> = tensors.iter().map(OutputTensor::nbytes).collect();
        let assignment = assign_shards(&sizes, max_shard_bytes);
        let count = assignment.last().map_or(1, |&i| i + 1);
        let mut headers: Vec<Map<String, Value>> = (0..count)
            .map(|_| {
                let mut m = Map::new();
                m.insert("__metadata__".into(), json!({"format": "mlx"}));
                m
            })
            .collect();
        let mut offsets = vec![0u64; count];
        let mut slots = HashMap::with_capacity(tensors.len());
        let mut remaining = vec![0usize; count];
        for ((t, &s), &size) in tensors.iter().zip(&assignment).zip(&sizes) {
            let begin = offsets[s];
            offsets[s] += size;
            headers[s].insert(
                t.name.clone(),
                json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [begin, begin + size]}),
            );
            slots.insert(t.name.clone(), (s, begin, size, false));
            remaining[s] += 1;
        }
        let mut shards = Vec::with_capacity(count);
        for (i, header) in headers.into_iter().enumerate() {
            let name = shard_name(i, count);
            let tmp = partial(&dir.join(&name));
            let mut json = serde_json::to_vec(&Value::Object(header)).expect("plain JSON");
            while !json.len().is_multiple_of(8) {
                json.push(b' ');
            }
            let file = File::create(&tmp).map_err(|e| io(&tmp, e))?;
            // Size the file now: tensors are written at their offsets in any order.
            file.set_len(8 + json.len() as u64 + offsets[i])
                .map_err(|e| io(&tmp, e))?;
            let mut w = BufWriter::with_capacity(1 << 20, file);
            w.write_all(&(json.len() as u64).to_le_bytes())
                .and_then(|_| w.write_all(&json))
                .map_err(|e| io(&tmp, e))?;
            shards.push(Shard {
                name,
                file: Some(w),
                data_start: 8 + json.len() as u64,
                pos: 8 + json.len() as u64,
                remaining: remaining[i],
            });
        }
        let mut writer = MlxWriter {
            dir,
            shards,
            slots,
            tensor_bytes: sizes.iter().sum(),
            finished: false,
        };
        for i in 0..writer.shards.len() {
            if writer.shards[i].remaining == 0 {
                writer.complete_shard(i)?;
            }
        }
        Ok(writer)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Shard file names, in order.
    pub fn shard_names(&self) -> Vec<String> {
        self.shards.iter().map(|s| s.name.clone()).collect()
    }

    /// Writes one declared tensor's bytes (little-endian, exactly its declared size).
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<(), MlxError> {
        let slot = self
            .slots
            .get_mut(name)
            .ok_or_else(|| MlxError::UndeclaredTensor(name.to_string()))?;
        let (s, offset, size, written) = *slot;
        if written {
            return Err(MlxError::DuplicateTensor(name.to_string()));
        }
        if bytes.len() as u64 != size {
            return Err(MlxError::LengthMismatch {
                what: "tensor bytes",
                expected: size as usize,
                got: bytes.len(),
            });
        }
        slot.3 = true;
        let shard = &mut self.shards[s];
        let path = self.dir.join(format!("{}.partial", shard.name));
        let w = shard.file.as_mut().expect("open until complete");
        let at = shard.data_start + offset;
        if shard.pos != at {
            w.seek(SeekFrom::Start(at)).map_err(|e| io(&path, e))?;
        }
        w.write_all(bytes).map_err(|e| io(&path, e))?;
        shard.pos = at + size;
        shard.remaining -= 1;
        if shard.remaining == 0 {
            self.complete_shard(s)?;
        }
        Ok(())
    }

    fn complete_shard(&mut self, s: usize) -> Result<(), MlxError> {
        let shard = &mut self.shards[s];
        let fin = self.dir.join(&shard.name);
        let tmp = partial(&fin);
        let w = shard.file.take().expect("completed once");
        let f = w.into_inner().map_err(|e| io(&tmp, e.into_error()))?;
        f.sync_all().map_err(|e| io(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, &fin).map_err(|e| io(&fin, e))
    }

    /// Finishes the folder: index, copied files, config.json (last). Every declared
    /// tensor must have been written. `total_parameters`: the unquantized parameter
    /// count for the index (mlx-lm's `get_total_parameters`).
    pub fn finish(
        mut self,
        config: &Value,
        total_parameters: u64,
        copy_files: &[PathBuf],
    ) -> Result<MlxOutput, MlxError> {
        let missing: Vec<&String> = {
            let mut m: Vec<&String> = self
                .slots
                .iter()
                .filter(|(_, v)| !v.3)
                .map(|(k, _)| k)
                .collect();
            m.sort();
            m
        };
        if !missing.is_empty() {
            return Err(MlxError::MissingTensors {
                count: missing.len(),
                first: missing[0].clone(),
            });
        }
        self.finished = true;
        let shard_names = self.shard_names();
        // Stale shards of an earlier run would be loaded too (mlx-lm globs model*.safetensors).
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with("model")
                    && n.ends_with(".safetensors")
                    && !shard_names.contains(&n)
                {
                    std::fs::remove_file(e.path()).map_err(|err| io(&e.path(), err))?;
                }
            }
        }
        let mut files: Vec<PathBuf> = shard_names.iter().map(|n| self.dir.join(n)).collect();
        let shards = files.clone();

        let weight_map: BTreeMap<&String, &String> = self
            .slots
            .iter()
            .map(|(name, v)| (name, &shard_names[v.0]))
            .collect();
        let index = json!({
            "metadata": {"total_size": self.tensor_bytes, "total_parameters": total_parameters},
            "weight_map": weight_map,
        });
        let index_path = self.dir.join(INDEX_FILE);
        write_atomic(&index_path, &to_json_pretty4(&index))?;
        files.push(index_path);

        for src in copy_files {
            let Some(fname) = src.file_name() else {
                continue;
            };
            let dst = self.dir.join(fname);
            if matches!(fname.to_str(), Some("config.json") | Some(INDEX_FILE)) {
                continue;
            }
            std::fs::copy(src, &dst).map_err(|e| io(src, e))?;
            files.push(dst);
        }

        let config_path = self.dir.join("config.json");
        write_atomic(&config_path, &to_json_pretty4(config))?;
        files.push(config_path);

        let total_bytes = files
            .iter()
            .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .sum();
        Ok(MlxOutput {
            dir: self.dir.clone(),
            shards,
            files,
            total_bytes,
            tensor_bytes: self.tensor_bytes,
        })
    }
}

impl Drop for MlxWriter {
    /// An unfinished writer removes its partial shards.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        for s in &mut self.shards {
            if s.file.take().is_some() {
                let _ = std::fs::remove_file(self.dir.join(format!("{}.partial", s.name)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pajamas_model::SafetensorsFile;

    fn t(name: &str, n: u64) -> OutputTensor {
        OutputTensor::new(name, "F32", vec![n])
    }

    #[test]
    fn shards_like_make_shards() {
        assert_eq!(assign_shards(&[4, 4, 4, 10, 1], 8), vec![0, 0, 1, 2, 3]);
        assert_eq!(assign_shards(&[], 8), Vec::<usize>::new());
        assert_eq!(shard_name(0, 1), "model.safetensors");
        assert_eq!(shard_name(1, 3), "model-00002-of-00003.safetensors");
    }

    #[test]
    fn writes_sharded_folder_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("mlx/4bit");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("model-00001-of-00009.safetensors"), b"stale").unwrap();
        let tok = dir.path().join("tokenizer.json");
        std::fs::write(&tok, b"{}").unwrap();
        let tensors = vec![t("a", 3), t("b", 2), t("c", 5)];
        let mut w = MlxWriter::create(&out, &tensors, 20).unwrap();
        assert_eq!(w.shard_names().len(), 2);
        let bytes = |n: usize, v: f32| -> Vec<u8> {
            (0..n).flat_map(|i| (v + i as f32).to_le_bytes()).collect()
        };
        w.write_tensor("c", &bytes(5, 10.0)).unwrap();
        assert!(w.write_tensor("zz", &[]).is_err());
        assert!(w.write_tensor("b", &[0; 3]).is_err());
        w.write_tensor("b", &bytes(2, 5.0)).unwrap();
        assert!(w.write_tensor("b", &bytes(2, 5.0)).is_err());
        w.write_tensor("a", &bytes(3, 1.0)).unwrap();
        let cfg = json!({"model_type": "llama"});
        let o = w.finish(&cfg, 10, &[tok]).unwrap();
        assert_eq!(o.shards.len(), 2);
        assert!(!out.join("model-00001-of-00009.safetensors").exists());
        let s1 = SafetensorsFile::open(out.join("model-00001-of-00002.safetensors")).unwrap();
        assert_eq!(s1.metadata()["format"], "mlx");
        assert_eq!(s1.read_f32("b").unwrap(), vec![5.0, 6.0]);
        assert_eq!(s1.read_f32("a").unwrap(), vec![1.0, 2.0, 3.0]);
        let s2 = SafetensorsFile::open(out.join("model-00002-of-00002.safetensors")).unwrap();
        assert_eq!(s2.read_f32("c").unwrap()[4], 14.0);
        let index: Value =
            serde_json::from_slice(&std::fs::read(out.join(INDEX_FILE)).unwrap()).unwrap();
        assert_eq!(index["metadata"]["total_size"], json!(40));
        assert_eq!(
            index["weight_map"]["c"],
            json!("model-00002-of-00002.safetensors")
        );
        assert!(out.join("tokenizer.json").is_file());
        assert_eq!(o.files.last().unwrap(), &out.join("config.json"));
        assert!(std::fs::read_dir(&out).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")));
    }

    #[test]
    fn unfinished_writer_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut w = MlxWriter::create(dir.path(), &[t("a", 1), t("b", 1)], 1 << 20).unwrap();
            w.write_tensor("a", &[0; 4]).unwrap();
            let err = MlxWriter::create(dir.path(), &[t("x", 1), t("x", 1)], 1 << 20);
            assert!(matches!(err, Err(MlxError::DuplicateTensor(_))));
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn finish_requires_every_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let w = MlxWriter::create(dir.path(), &[t("a", 1)], 1 << 20).unwrap();
        assert!(matches!(
            w.finish(&json!({}), 1, &[]),
            Err(MlxError::MissingTensors { .. })
        ));
    }
}
