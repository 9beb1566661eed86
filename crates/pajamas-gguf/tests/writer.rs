//! The streaming writer: layout, atomicity, and its contract.

mod common;

use common::{small_valid, write, Raw};
use pajamas_gguf::{Array, GgmlType, GgufError, GgufFile, GgufWriter, Value};

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn writes_the_layout_a_reader_expects() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let mut w = GgufWriter::create(&out).unwrap();
    assert!(w.partial_path().exists());
    assert!(w
        .partial_path()
        .to_string_lossy()
        .ends_with("out.gguf.partial"));
    w.add_metadata("general.architecture", "llama").unwrap();
    w.add_metadata("general.file_type", 7u32).unwrap();
    w.add_metadata("tokenizer.ggml.tokens", vec!["<s>", "</s>"])
        .unwrap();
    w.add_metadata("tokenizer.ggml.scores", vec![0.0f32, -1.5])
        .unwrap();
    w.add_metadata("empty.array", Array::I64(vec![])).unwrap();
    assert_eq!(w.add_tensor_info("norm", &[3], GgmlType::F32).unwrap(), 12);
    assert_eq!(
        w.add_tensor_info("w", &[64, 3], GgmlType::Q8_0).unwrap(),
        3 * 68
    );
    assert_eq!(w.next_tensor(), Some("norm"));
    w.begin_data().unwrap();
    w.write_tensor("norm", &f32_bytes(&[1.0, 2.0, 3.0]))
        .unwrap();
    assert!(!out.exists(), "final path must not appear before finish()");
    w.write_tensor("w", &vec![7u8; 204]).unwrap();
    let partial = w.partial_path().to_path_buf();
    assert_eq!(w.finish().unwrap(), out);
    assert!(!partial.exists());

    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[..4], b"GGUF");
    assert_eq!(bytes.len() % 32, 0, "last tensor padded to the alignment");
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.data_offset() % 32, 0);
    assert_eq!(f.architecture(), Some("llama"));
    assert_eq!(f.get_u32("general.file_type"), Some(7));
    assert_eq!(f.get_uint("general.file_type"), Some(7));
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap(),
        ["<s>", "</s>"]
    );
    assert_eq!(
        f.get_f32_array("tokenizer.ggml.scores").unwrap(),
        [0.0, -1.5]
    );
    assert_eq!(
        f.get("empty.array"),
        Some(&Value::Array(Array::I64(vec![])))
    );
    assert_eq!(f.metadata()[2].key, "tokenizer.ggml.tokens");
    let t = f.tensor("w").unwrap();
    assert_eq!((t.offset, t.nbytes, t.n_elements), (32, 204, 192));
    assert_eq!(t.shape(), vec![3, 64]);
    assert_eq!(
        f.tensor_data("norm").unwrap(),
        &f32_bytes(&[1.0, 2.0, 3.0])[..]
    );
    assert_eq!(f.tensor_data("w").unwrap(), &[7u8; 204][..]);
    assert!(matches!(
        f.tensor_data("nope"),
        Err(GgufError::NoSuchTensor { .. })
    ));
    assert!(matches!(
        f.require("nope"),
        Err(GgufError::MissingKey { .. })
    ));
    assert!(f.warnings().is_empty());
}

#[test]
fn copying_a_packed_file_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let src_bytes = small_valid();
    let src = GgufFile::open(write(dir.path(), "src.gguf", &src_bytes)).unwrap();
    assert!(!src.is_mapped());
    let out = dir.path().join("copy.gguf");
    let mut w = GgufWriter::create(&out).unwrap();
    for e in src.metadata() {
        w.add_metadata(&e.key, e.value.clone()).unwrap();
    }
    for t in src.tensors() {
        w.add_tensor_info(&t.name, &t.dims, t.ggml_type).unwrap();
    }
    w.begin_data().unwrap();
    for t in src.tensors() {
        w.write_tensor(&t.name, src.data_of(t).unwrap()).unwrap();
    }
    w.finish().unwrap();
    assert!(src.is_mapped());
    assert_eq!(std::fs::read(&out).unwrap(), src_bytes);
}

#[test]
fn custom_alignment_pads_everything() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a.gguf");
    let mut w = GgufWriter::create(&out).unwrap();
    w.set_alignment(128).unwrap();
    assert_eq!(w.alignment(), 128);
    w.add_tensor_info("a", &[5], GgmlType::F32).unwrap();
    w.add_tensor_info("b", &[5], GgmlType::F16).unwrap();
    w.begin_data().unwrap();
    assert_eq!(w.tensors()[1].offset, 128);
    w.write_tensor("a", &[1; 20]).unwrap();
    w.write_tensor("b", &[2; 10]).unwrap();
    w.finish().unwrap();
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.alignment(), 128);
    assert_eq!(f.data_offset() % 128, 0);
    assert_eq!(f.file_size(), f.data_offset() + 256);
}

#[test]
fn metadata_only_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    let mut w = GgufWriter::create(&out).unwrap();
    w.add_metadata("general.architecture", "llama").unwrap();
    w.set_metadata("general.architecture", "qwen2").unwrap();
    w.add_metadata("x", 1u8).unwrap();
    assert_eq!(w.remove_metadata("x").unwrap(), Some(Value::U8(1)));
    w.finish().unwrap();
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.metadata().len(), 1);
    assert_eq!(f.architecture(), Some("qwen2"));
    assert_eq!(f.file_size() % 32, 0);
}

#[test]
fn drop_without_finish_removes_the_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gguf");
    let mut w = GgufWriter::create(&out).unwrap();
    w.add_tensor_info("a", &[4], GgmlType::F32).unwrap();
    w.begin_data().unwrap();
    let partial = w.partial_path().to_path_buf();
    assert!(partial.exists());
    drop(w);
    assert!(!partial.exists());
    assert!(!out.exists());
}

#[test]
fn finish_with_missing_tensors_fails_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gguf");
    let mut w = GgufWriter::create(&out).unwrap();
    w.add_tensor_info("a", &[4], GgmlType::F32).unwrap();
    w.add_tensor_info("b", &[4], GgmlType::F32).unwrap();
    w.begin_data().unwrap();
    w.write_tensor("a", &[0; 16]).unwrap();
    let e = w.finish().unwrap_err().to_string();
    assert!(
        e.contains("1 of 2 tensors written") && e.contains("'b'"),
        "{e}"
    );
    assert!(!out.exists());
    assert!(!dir.path().join("x.gguf.partial").exists());
}

#[test]
fn contract_violations_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.gguf");
    let mut w = GgufWriter::create(&out).unwrap();
    w.add_metadata("k", 1u32).unwrap();
    let e = w.add_metadata("k", 2u32).unwrap_err().to_string();
    assert!(e.contains("'k'") && e.contains("twice"), "{e}");
    assert!(w.add_metadata("", 1u32).is_err());
    assert!(w
        .add_metadata("general.alignment", 1u64)
        .unwrap_err()
        .to_string()
        .contains("u32"));
    assert!(w.set_alignment(24).is_err());
    let long = "n".repeat(64);
    assert!(w
        .add_tensor_info(&long, &[4], GgmlType::F32)
        .unwrap_err()
        .to_string()
        .contains("63"));
    let e = w
        .add_tensor_info("q", &[48], GgmlType::Q4_0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tensor 'q'") && e.contains("multiple of 32"),
        "{e}"
    );
    assert!(w.add_tensor_info("z", &[], GgmlType::F32).is_err());
    w.add_tensor_info("a", &[4], GgmlType::F32).unwrap();
    w.add_tensor_info("b", &[2], GgmlType::F32).unwrap();
    assert!(w
        .add_tensor_info("a", &[4], GgmlType::F32)
        .unwrap_err()
        .to_string()
        .contains("twice"));
    let e = w.write_tensor("a", &[0; 16]).unwrap_err().to_string();
    assert!(e.contains("begin_data"), "{e}");
    w.begin_data().unwrap();
    assert!(w
        .add_metadata("late", 1u32)
        .unwrap_err()
        .to_string()
        .contains("before begin_data"));
    assert!(w.add_tensor_info("late", &[4], GgmlType::F32).is_err());
    assert!(w.begin_data().is_err());
    let e = w.write_tensor("b", &[0; 8]).unwrap_err().to_string();
    assert!(e.contains("out of order") && e.contains("'a'"), "{e}");
    let e = w.write_tensor("zz", &[0; 8]).unwrap_err().to_string();
    assert!(e.contains("never declared"), "{e}");
    let e = w.write_tensor("a", &[0; 15]).unwrap_err().to_string();
    assert!(e.contains("got 15 bytes") && e.contains("16 bytes"), "{e}");
    w.write_tensor("a", &[0; 16]).unwrap();
    w.write_tensor("b", &[0; 8]).unwrap();
    let e = w.write_tensor("b", &[0; 8]).unwrap_err().to_string();
    assert!(e.contains("already written"), "{e}");
    w.finish().unwrap();
    GgufFile::open(&out).unwrap();
}

#[test]
fn create_in_missing_folder_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = GgufWriter::create(dir.path().join("no/such/dir/x.gguf")).unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }));
    assert!(e.to_string().contains("x.gguf.partial"));
}

#[test]
fn finish_replaces_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = write(dir.path(), "r.gguf", b"old contents");
    let mut w = GgufWriter::create(&out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b"old contents");
    w.add_metadata("general.architecture", "llama").unwrap();
    w.finish().unwrap();
    assert_eq!(GgufFile::open(&out).unwrap().architecture(), Some("llama"));
}

#[test]
fn copying_an_unpacked_file_packs_it() {
    let dir = tempfile::tempdir().unwrap();
    // Legal GGUF, but tensor data stored in the reverse of the info order.
    let mut r = Raw::new(3, 2, 0);
    r.tensor("a", &[8], 0, 32).tensor("b", &[8], 0, 0).pad(32);
    r.bytes(&[2; 32]).bytes(&[1; 32]);
    let src = GgufFile::open(write(dir.path(), "swap.gguf", &r.buf)).unwrap();
    assert_eq!(src.warnings().len(), 1);
    let out = dir.path().join("packed.gguf");
    let mut w = GgufWriter::create(&out).unwrap();
    for t in src.tensors() {
        w.add_tensor_info(&t.name, &t.dims, t.ggml_type).unwrap();
    }
    w.begin_data().unwrap();
    for t in src.tensors() {
        w.write_tensor(&t.name, src.data_of(t).unwrap()).unwrap();
    }
    w.finish().unwrap();
    let f = GgufFile::open(&out).unwrap();
    assert!(f.warnings().is_empty());
    assert_eq!(f.tensor("a").unwrap().offset, 0);
    assert_eq!(f.tensor_data("a").unwrap(), &[1; 32][..]);
    assert_eq!(f.tensor_data("b").unwrap(), &[2; 32][..]);
}
