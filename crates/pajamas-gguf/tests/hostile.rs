//! Malformed files: each is rejected with an error that names the file and says what is wrong.

mod common;

use common::{small_valid, write, Raw};
use pajamas_gguf::{GgufError, GgufFile};

fn open_err(bytes: &[u8]) -> (GgufError, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "bad.gguf", bytes);
    let e = GgufFile::open(&p).expect_err("file should be rejected");
    let text = e.to_string();
    assert!(
        text.contains("bad.gguf"),
        "error does not name the file: {text}"
    );
    (e, text)
}

fn expect(bytes: &[u8], needles: &[&str]) -> GgufError {
    let (e, text) = open_err(bytes);
    for n in needles {
        assert!(text.contains(n), "expected {n:?} in: {text}");
    }
    e
}

#[test]
fn valid_sample_opens() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "ok.gguf", &small_valid());
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(f.tensors().len(), 2);
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap(),
        ["a", "bc", ""]
    );
    assert!(f.warnings().is_empty());
}

#[test]
fn bad_magic_and_short_files() {
    expect(b"", &["too short", "magic"]);
    expect(b"GGU", &["too short"]);
    let mut b = small_valid();
    b[0] = b'X';
    expect(&b, &["bad magic", "GGUF"]);
}

#[test]
fn versions() {
    let mut b = small_valid();
    b[4] = 1;
    expect(&b, &["version 1", "obsolete"]);
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    expect(&b, &["big-endian"]);
    b[4..8].copy_from_slice(&4u32.to_le_bytes());
    expect(&b, &["unsupported GGUF version 4"]);
    b[4..8].copy_from_slice(&0u32.to_le_bytes());
    expect(&b, &["version is 0"]);
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let f = GgufFile::open(write(dir.path(), "v2.gguf", &b)).unwrap();
    assert_eq!(f.version(), 2);
}

#[test]
fn absurd_counts_fail_before_allocating() {
    let mut b = small_valid();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    expect(&b, &["claims 18446744073709551615 tensors"]);
    let mut b = small_valid();
    b[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
    expect(&b, &["metadata entries"]);
}

#[test]
fn absurd_string_length() {
    let mut r = Raw::new(3, 0, 1);
    r.u64(u64::MAX - 1).bytes(b"general.architecture");
    expect(&r.buf, &["string length", "limit"]);
    let mut r = Raw::new(3, 0, 1);
    r.u64(1000).bytes(b"general.architecture").zeros(32);
    expect(&r.buf, &["string length 1000", "runs past the end"]);
    let mut r = Raw::new(3, 0, 1);
    r.str("general.name").u32(8).u64(1 << 40).zeros(16);
    expect(&r.buf, &["metadata key 'general.name'", "string length"]);
}

#[test]
fn absurd_array_count() {
    let mut r = Raw::new(3, 0, 1);
    r.str("tokenizer.ggml.scores")
        .u32(9)
        .u32(6)
        .u64(1 << 24)
        .zeros(64);
    expect(
        &r.buf,
        &["'tokenizer.ggml.scores'", "16777216 f32 elements", "only"],
    );
    let mut r = Raw::new(3, 0, 1);
    r.str("k").u32(9).u32(6).u64(u64::MAX).zeros(64);
    expect(&r.buf, &["'k'", "limit"]);
}

#[test]
fn duplicate_key_and_tensor() {
    let mut r = Raw::new(3, 0, 2);
    r.kv_u32("a.b", 1).kv_u32("a.b", 2);
    expect(&r.buf, &["metadata key 'a.b'", "appears twice"]);
    let mut r = Raw::new(3, 2, 0);
    r.tensor("t", &[4], 0, 0)
        .tensor("t", &[4], 0, 32)
        .pad(32)
        .zeros(64);
    expect(&r.buf, &["tensor 't'", "appears twice"]);
}

#[test]
fn bad_values() {
    let mut r = Raw::new(3, 0, 1);
    r.str("k").u32(13).u32(0);
    expect(&r.buf, &["'k'", "unknown value type id 13"]);
    let mut r = Raw::new(3, 0, 1);
    r.str("k").u32(7).u8(2).zeros(8);
    expect(&r.buf, &["'k'", "bool byte is 2"]);
    let mut r = Raw::new(3, 0, 1);
    r.str("k").u32(8).u64(2).bytes(&[0xff, 0xfe]).zeros(8);
    expect(&r.buf, &["'k'", "not valid UTF-8"]);
    let mut r = Raw::new(3, 0, 1);
    r.str("").u32(4).u32(1);
    expect(&r.buf, &["empty key"]);
    let mut r = Raw::new(3, 0, 1);
    r.str("deep").u32(9);
    for _ in 0..40 {
        r.u32(9).u64(1);
    }
    r.u32(0).u64(0);
    expect(&r.buf, &["'deep'", "nested more than 16"]);
}

#[test]
fn alignment_key() {
    let mut r = Raw::new(3, 0, 1);
    r.str("general.alignment").u32(10).u64(32);
    expect(&r.buf, &["general.alignment", "must be a u32"]);
    let mut r = Raw::new(3, 0, 1);
    r.kv_u32("general.alignment", 48);
    expect(&r.buf, &["general.alignment", "not a power of two"]);
    let mut r = Raw::new(3, 0, 1);
    r.kv_u32("general.alignment", 0);
    expect(&r.buf, &["not a power of two"]);
}

#[test]
fn bad_tensor_infos() {
    // unknown type
    let mut r = Raw::new(3, 1, 0);
    r.tensor("w", &[32], 99, 0).pad(32).zeros(64);
    expect(&r.buf, &["tensor 'w'", "unknown ggml type id 99"]);
    let mut r = Raw::new(3, 1, 0);
    r.tensor("w", &[32], 31, 0).pad(32).zeros(64);
    expect(&r.buf, &["unknown ggml type id 31", "removed"]);
    // ne0 not a multiple of the block
    let mut r = Raw::new(3, 1, 0);
    r.tensor("w", &[48, 2], 12, 0).pad(32).zeros(1024);
    expect(
        &r.buf,
        &["tensor 'w'", "Q4_K", "ne[0] = 48", "not a multiple of 256"],
    );
    // misaligned offset
    let mut r = Raw::new(3, 2, 0);
    r.tensor("a", &[4], 0, 0)
        .tensor("b", &[4], 0, 16)
        .pad(32)
        .zeros(64);
    expect(
        &r.buf,
        &[
            "tensor 'b'",
            "offset 16",
            "not a multiple of the alignment 32",
        ],
    );
    // dimensions
    let mut r = Raw::new(3, 1, 0);
    r.tensor("w", &[], 0, 0).pad(32).zeros(64);
    expect(&r.buf, &["tensor 'w'", "0 dimensions"]);
    let mut r = Raw::new(3, 1, 0);
    r.tensor("w", &[1, 1, 1, 1, 1], 0, 0).pad(32).zeros(64);
    expect(&r.buf, &["tensor 'w'", "5 dimensions"]);
    let mut r = Raw::new(3, 1, 0);
    r.tensor("w", &[1 << 32, 1 << 32], 0, 0).pad(32).zeros(64);
    expect(&r.buf, &["tensor 'w'", "more elements"]);
    let mut r = Raw::new(3, 1, 0);
    r.tensor("w", &[u64::MAX], 0, 0).pad(32).zeros(64);
    expect(&r.buf, &["tensor 'w'", "larger than ggml's limit"]);
    // name too long
    let long = "x".repeat(64);
    let mut r = Raw::new(3, 1, 0);
    r.tensor(&long, &[4], 0, 0).pad(32).zeros(64);
    expect(&r.buf, &["64 bytes long", "at most 63"]);
    let ok = "y".repeat(63);
    let mut r = Raw::new(3, 1, 0);
    r.tensor(&ok, &[4], 0, 0).pad(32).zeros(32);
    let dir = tempfile::tempdir().unwrap();
    GgufFile::open(write(dir.path(), "ok.gguf", &r.buf)).unwrap();
}

#[test]
fn data_outside_file_or_overlapping() {
    let mut r = Raw::new(3, 1, 0);
    r.tensor("w", &[64], 0, 0).pad(32).zeros(100);
    expect(&r.buf, &["tensor 'w'", "holds only 100 bytes", "truncated"]);
    let mut r = Raw::new(3, 1, 0);
    r.tensor("w", &[4], 0, u64::MAX - 31).pad(32).zeros(64);
    expect(&r.buf, &["tensor 'w'", "data section"]);
    let mut r = Raw::new(3, 2, 0);
    r.tensor("a", &[16], 0, 0)
        .tensor("b", &[16], 0, 32)
        .pad(32)
        .zeros(128);
    expect(&r.buf, &["tensor 'b'", "overlaps tensor 'a'"]);
    // header ends before the data section could start
    let mut r = Raw::new(3, 1, 0);
    r.tensor("w", &[0], 0, 0);
    expect(&r.buf, &["data section should start at byte 64"]);
}

#[test]
fn legal_but_unpacked_layout_warns() {
    let mut r = Raw::new(3, 2, 0);
    r.tensor("a", &[8], 0, 32)
        .tensor("b", &[8], 0, 0)
        .pad(32)
        .zeros(64);
    let dir = tempfile::tempdir().unwrap();
    let f = GgufFile::open(write(dir.path(), "swap.gguf", &r.buf)).unwrap();
    assert_eq!(f.warnings().len(), 1);
    assert!(f.warnings()[0].contains("tensor 'a'"), "{:?}", f.warnings());
}

#[test]
fn truncated_file_names_the_tensor() {
    let b = small_valid();
    let e = expect(
        &b[..b.len() - 40],
        &["tensor 'blk.0.attn_q.weight'", "truncated"],
    );
    assert!(matches!(e, GgufError::Tensor { .. }));
    expect(&b[..30], &["truncated"]);
}
