//! HF folder behaviour: sharded checkpoints, lazy listing, and the errors users hit.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use pajamas_model::{locate, CacheEnv, HfModel, ModelError, ModelLocation};

const CONFIG: &str = r#"{"model_type":"llama","hidden_size":8}"#;

/// Writes a shard whose header declares `tensors` (name, f32 element count) and whose data
/// section is a sparse hole of the right length: the file is as big as a real shard but
/// costs no disk, and any read of it would be visible as page faults, not as our reads.
fn sparse_shard(path: &Path, tensors: &[(String, u64)]) {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, n) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": [n], "data_offsets": [offset, offset + 4 * n]}),
        );
        offset += 4 * n;
    }
    let json = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    let mut f = File::create(path).unwrap();
    f.write_all(&(json.len() as u64).to_le_bytes()).unwrap();
    f.write_all(&json).unwrap();
    f.set_len(8 + json.len() as u64 + offset).unwrap();
}

fn index(dir: &Path, map: &[(String, String)]) {
    let weight_map: serde_json::Map<String, serde_json::Value> = map
        .iter()
        .map(|(t, s)| (t.clone(), serde_json::Value::String(s.clone())))
        .collect();
    fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_vec(&serde_json::json!({"metadata": {}, "weight_map": weight_map})).unwrap(),
    )
    .unwrap();
}

/// 128 shards of 1 GiB each (sparse): a 128 GiB checkpoint listed from headers alone.
#[test]
fn lists_a_huge_sharded_checkpoint_without_reading_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("config.json"), CONFIG).unwrap();
    let n_shards = 128;
    let mut map = Vec::new();
    for s in 0..n_shards {
        let shard = format!("model-{:05}-of-{:05}.safetensors", s + 1, n_shards);
        let tensors: Vec<(String, u64)> = (0..2)
            .map(|t| (format!("model.layers.{s}.t{t}.weight"), 1u64 << 27))
            .collect();
        sparse_shard(&dir.join(&shard), &tensors);
        for (t, _) in &tensors {
            map.push((t.clone(), shard.clone()));
        }
    }
    index(dir, &map);
    let model = HfModel::open(dir).unwrap();
    assert_eq!(model.shards().len(), n_shards);
    assert_eq!(model.tensor_count(), 2 * n_shards);
    let listed: u64 = model.tensors().map(|t| t.info.nbytes()).sum();
    assert_eq!(listed, n_shards as u64 * (1 << 30));
    // Only headers were read, and no shard was mapped.
    assert!(
        model.header_bytes_read() < 64 * 1024,
        "{}",
        model.header_bytes_read()
    );
    assert!(!model.any_data_mapped());
    assert_eq!(
        model.tensor("model.layers.77.t1.weight").unwrap().shape,
        vec![1u64 << 27]
    );
}

#[test]
fn missing_shard_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("config.json"), CONFIG).unwrap();
    sparse_shard(&dir.join("a.safetensors"), &[("x".into(), 4)]);
    index(
        dir,
        &[
            ("x".into(), "a.safetensors".into()),
            ("y".into(), "b.safetensors".into()),
        ],
    );
    let e = HfModel::open(dir).unwrap_err();
    assert!(matches!(e, ModelError::MissingShard { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("b.safetensors") && msg.contains("index.json"),
        "{msg}"
    );
}

#[test]
fn index_naming_a_tensor_the_shard_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("config.json"), CONFIG).unwrap();
    sparse_shard(&dir.join("a.safetensors"), &[("x".into(), 4)]);
    index(
        dir,
        &[
            ("x".into(), "a.safetensors".into()),
            ("ghost".into(), "a.safetensors".into()),
        ],
    );
    let msg = HfModel::open(dir).unwrap_err().to_string();
    assert!(
        msg.contains("ghost") && msg.contains("a.safetensors"),
        "{msg}"
    );
}

#[test]
fn missing_and_invalid_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let msg = HfModel::open(dir).unwrap_err().to_string();
    assert!(msg.contains("no config.json"), "{msg}");
    fs::write(dir.join("config.json"), "{\"model_type\": ").unwrap();
    let msg = HfModel::open(dir).unwrap_err().to_string();
    assert!(
        msg.contains("config.json") && msg.contains("invalid JSON"),
        "{msg}"
    );
    fs::write(dir.join("config.json"), CONFIG).unwrap();
    let msg = HfModel::open(dir).unwrap_err().to_string();
    assert!(msg.contains("no weights"), "{msg}");
}

#[test]
fn duplicate_tensor_across_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("config.json"), CONFIG).unwrap();
    sparse_shard(&dir.join("a.safetensors"), &[("x".into(), 4)]);
    sparse_shard(&dir.join("b.safetensors"), &[("x".into(), 4)]);
    let msg = HfModel::open(dir).unwrap_err().to_string();
    assert!(
        msg.contains("'x'") && msg.contains("a.safetensors") && msg.contains("b.safetensors"),
        "{msg}"
    );
}

#[test]
fn locate_folder_file_and_hub_id() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp
        .path()
        .join("cache/models--Acme--Tiny/snapshots/0123abcd");
    fs::create_dir_all(&snap).unwrap();
    fs::create_dir_all(tmp.path().join("cache/models--Acme--Tiny/refs")).unwrap();
    fs::write(
        tmp.path().join("cache/models--Acme--Tiny/refs/main"),
        "0123abcd",
    )
    .unwrap();
    fs::write(snap.join("config.json"), CONFIG).unwrap();
    sparse_shard(&snap.join("model.safetensors"), &[("x".into(), 4)]);
    let env = CacheEnv {
        hf_hub_cache: Some(tmp.path().join("cache")),
        ..Default::default()
    };
    assert_eq!(
        locate("Acme/Tiny", &env).unwrap(),
        ModelLocation::HfFolder(snap.clone())
    );
    let model = HfModel::open(match locate("Acme/Tiny", &env).unwrap() {
        ModelLocation::HfFolder(p) => p,
        other => panic!("{other:?}"),
    })
    .unwrap();
    assert_eq!(model.tensor_count(), 1);
    let file = snap.join("model.safetensors");
    assert_eq!(
        locate(file.to_str().unwrap(), &env).unwrap(),
        ModelLocation::HfFolder(snap.clone())
    );
    let msg = locate("Acme/Missing", &env).unwrap_err().to_string();
    assert!(msg.contains("models--Acme--Missing"), "{msg}");
    assert!(locate("not-a-model", &env).is_err());
}
