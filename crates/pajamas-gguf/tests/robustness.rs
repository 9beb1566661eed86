//! No input makes the reader panic: every truncation of a valid file, and every position of
//! it overwritten with a set of byte values (plus random multi-byte damage), either opens
//! (and then every tensor's data can be asked for) or fails with an error.

mod common;

use std::path::Path;

use common::small_valid;
use pajamas_gguf::{inspect, GgmlType, GgufFile, GgufWriter, Value};

/// Checks `bytes` in memory; if they pass and `to_disk`, opens them as a file (which must
/// then succeed) and touches everything a consumer would. Returns whether they were accepted.
/// (Writing a file costs milliseconds here, so the many-mutation tests sample it.)
fn exercise_with(path: &Path, bytes: &[u8], to_disk: bool) -> bool {
    if let Err(e) = GgufFile::validate_bytes("mem.gguf", bytes) {
        assert!(e.to_string().contains("mem.gguf"), "{e}");
        return false;
    }
    if !to_disk {
        return true;
    }
    std::fs::write(path, bytes).unwrap();
    let f = GgufFile::open(path).expect("validate_bytes accepted what open rejects");
    for t in f.tensors() {
        let data = f.tensor_data(&t.name).unwrap();
        assert_eq!(data.len() as u64, t.nbytes);
    }
    let r = inspect::report(&f);
    let _ = inspect::render_text(&r);
    let _ = inspect::render_json(&r);
    true
}

fn exercise(path: &Path, bytes: &[u8]) -> bool {
    exercise_with(path, bytes, true)
}

/// A richer valid file written by our writer: every value type, nested and empty arrays.
fn rich_valid(dir: &Path) -> Vec<u8> {
    let p = dir.join("rich.gguf");
    let mut w = GgufWriter::create(&p).unwrap();
    w.add_metadata("general.architecture", "llama").unwrap();
    w.add_metadata("a.u8", 7u8).unwrap();
    w.add_metadata("a.i8", -7i8).unwrap();
    w.add_metadata("a.u16", 700u16).unwrap();
    w.add_metadata("a.i16", -700i16).unwrap();
    w.add_metadata("a.i32", -70000i32).unwrap();
    w.add_metadata("a.f32", 0.5f32).unwrap();
    w.add_metadata("a.bool", true).unwrap();
    w.add_metadata("a.u64", 1u64 << 40).unwrap();
    w.add_metadata("a.i64", -(1i64 << 40)).unwrap();
    w.add_metadata("a.f64", 0.25f64).unwrap();
    w.add_metadata("a.strs", vec!["x", "yz"]).unwrap();
    w.add_metadata("a.bools", vec![true, false]).unwrap();
    w.add_metadata(
        "a.nested",
        vec![
            pajamas_gguf::Array::from(vec![1i32, 2]),
            pajamas_gguf::Array::from(Vec::<u8>::new()),
        ],
    )
    .unwrap();
    w.set_alignment(64).unwrap();
    w.add_tensor_info("f", &[4, 2], GgmlType::F32).unwrap();
    w.add_tensor_info("q", &[32], GgmlType::Q8_0).unwrap();
    w.begin_data().unwrap();
    w.write_tensor("f", &[1u8; 32]).unwrap();
    w.write_tensor("q", &[2u8; 34]).unwrap();
    w.finish().unwrap();
    std::fs::read(&p).unwrap()
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    for base in [small_valid(), rich_valid(dir.path())] {
        assert!(exercise(&path, &base));
        for len in 0..base.len() {
            // Only the trailing padding of the last tensor may be cut without harm.
            let opened = exercise(&path, &base[..len]);
            assert!(
                !opened || len + 32 > base.len(),
                "truncated to {len} bytes but opened"
            );
        }
    }
}

#[test]
fn every_byte_mutated_is_an_error_or_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    for base in [small_valid(), rich_valid(dir.path())] {
        // The header and tensor infos end well before the data; damage them everywhere, and
        // the data in a few places.
        let header_end = GgufFile::open({
            std::fs::write(&path, &base).unwrap();
            &path
        })
        .unwrap()
        .data_offset() as usize;
        for pos in 0..header_end.min(base.len()) {
            for v in [
                0x00u8, 0x01, 0x02, 0x07, 0x09, 0x0c, 0x20, 0x3f, 0x7f, 0x80, 0xfe, 0xff,
            ] {
                let mut b = base.clone();
                if b[pos] == v {
                    continue;
                }
                b[pos] = v;
                exercise_with(&path, &b, false);
            }
            let mut b = base.clone();
            b[pos] = b[pos].wrapping_add(1);
            exercise_with(&path, &b, pos % 8 == 0);
        }
    }
}

#[test]
fn random_damage_is_an_error_or_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.gguf");
    let base = rich_valid(dir.path());
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..2000 {
        let mut b = base.clone();
        let hits = 1 + next() % 4;
        for _ in 0..hits {
            let pos = (next() % b.len() as u64) as usize;
            // Sometimes write a large little-endian number (lengths, counts, dims).
            if next() % 3 == 0 && pos + 8 <= b.len() {
                let big = next() >> (next() % 64);
                b[pos..pos + 8].copy_from_slice(&big.to_le_bytes());
            } else {
                b[pos] = next() as u8;
            }
        }
        if next() % 5 == 0 {
            let cut = (next() % b.len() as u64) as usize;
            b.truncate(cut);
        }
        exercise_with(&path, &b, i % 16 == 0);
    }
}

#[test]
fn values_survive_the_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = rich_valid(dir.path());
    let path = dir.path().join("again.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.get_i8("a.i8"), Some(-7));
    assert_eq!(f.get_i64("a.i64"), Some(-(1i64 << 40)));
    assert_eq!(f.get("a.bool"), Some(&Value::Bool(true)));
    let nested = f.get_array("a.nested").unwrap().as_arrays().unwrap();
    assert_eq!(nested[0].as_i32(), Some(&[1, 2][..]));
    assert_eq!(nested[1].as_u8(), Some(&[][..]));
}
