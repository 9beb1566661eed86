use std::path::{Path, PathBuf};

use pajamas_gguf::{GgmlType, GgufFile, GgufWriter, Value};

use super::*;

fn sample() -> Imatrix {
    let mut im = Imatrix::new(vec!["data/corpora/wiki_calib.txt".into()], 4, 128);
    im.entries.insert(
        "blk.0.attn_q.weight".into(),
        Entry::new(vec![1.0, 2.5, 0.0, 1e-3], 512.0),
    );
    im.entries.insert(
        "blk.0.ffn_down_exps.weight".into(),
        Entry {
            in_sum2: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            counts: vec![10.0, 0.0, 3.0],
            n_per_row: 2,
        },
    );
    im.entries.insert(
        "blk.1.attn_k.weight".into(),
        Entry::new(vec![7.0, 8.0, 9.0, 10.0], 512.0),
    );
    im
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn err_text<T: std::fmt::Debug>(r: Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

/// Asserts the message names the file and contains every fragment.
fn assert_err<T: std::fmt::Debug>(r: Result<T>, path: &Path, fragments: &[&str]) {
    let msg = err_text(r);
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name {}: {msg}",
        path.display()
    );
    for f in fragments {
        assert!(msg.contains(f), "message lacks '{f}': {msg}");
    }
}

fn same_content(a: &Imatrix, b: &Imatrix) {
    assert_eq!(a.entries, b.entries);
    assert_eq!(a.datasets, b.datasets);
    assert_eq!(a.chunk_count, b.chunk_count);
    assert_eq!(a.chunk_size, b.chunk_size);
}

#[test]
fn gguf_round_trip() {
    let d = tmp();
    let p = d.path().join("im.gguf");
    let im = sample();
    im.write_gguf(&p).unwrap();
    assert!(!d.path().join("im.gguf.partial").exists());
    let back = Imatrix::read(&p).unwrap();
    same_content(&im, &back);
    assert_eq!(back.format, Format::Gguf);
    assert_eq!(back.path.as_deref(), Some(p.as_path()));
    // Writing what was read gives the same bytes.
    let p2 = d.path().join("im2.gguf");
    back.write_gguf(&p2).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&p2).unwrap());
}

#[test]
fn gguf_layout_is_llama_imatrix_layout() {
    let d = tmp();
    let p = d.path().join("im.gguf");
    sample().write_gguf(&p).unwrap();
    let f = GgufFile::open(&p).unwrap();
    let keys: Vec<&str> = f.metadata().iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "general.type",
            KEY_DATASETS,
            KEY_CHUNK_COUNT,
            KEY_CHUNK_SIZE
        ]
    );
    assert_eq!(f.get_str("general.type"), Some("imatrix"));
    assert_eq!(f.get_u32(KEY_CHUNK_COUNT), Some(4));
    assert_eq!(f.get_u32(KEY_CHUNK_SIZE), Some(128));
    assert_eq!(f.alignment(), 32);
    let tensors: Vec<(&str, Vec<u64>)> = f
        .tensors()
        .iter()
        .map(|t| (t.name.as_str(), t.dims.clone()))
        .collect();
    assert_eq!(
        tensors,
        [
            ("blk.0.attn_q.weight.in_sum2", vec![4]),
            ("blk.0.attn_q.weight.counts", vec![1]),
            ("blk.0.ffn_down_exps.weight.in_sum2", vec![2, 3]),
            ("blk.0.ffn_down_exps.weight.counts", vec![1, 3]),
            ("blk.1.attn_k.weight.in_sum2", vec![4]),
            ("blk.1.attn_k.weight.counts", vec![1]),
        ]
    );
    assert!(f.tensors().iter().all(|t| t.ggml_type == GgmlType::F32));
    assert!(f.warnings().is_empty());
}

#[test]
fn importance_is_sums_over_counts() {
    let im = sample();
    assert_eq!(
        im.importance("blk.0.attn_q.weight").unwrap(),
        vec![1.0 / 512.0, 2.5 / 512.0, 0.0, 1e-3 / 512.0]
    );
    // Per expert; an expert with count 0 gets ones.
    assert_eq!(
        im.importance("blk.0.ffn_down_exps.weight").unwrap(),
        vec![0.1, 0.2, 1.0, 1.0, 5.0 / 3.0, 2.0]
    );
    assert!(im.importance("output.weight").is_none());
}

#[test]
fn importance_rounds_counts_like_lround() {
    let mut im = Imatrix::new(vec![], 0, 0);
    im.entries
        .insert("blk.0.a.weight".into(), Entry::new(vec![3.0, 6.0], 2.5));
    // lround(2.5) = 3 (half away from zero)
    assert_eq!(im.importance("blk.0.a.weight").unwrap(), vec![1.0, 2.0]);
    im.entries
        .insert("blk.0.a.weight".into(), Entry::new(vec![3.0, 6.0], 0.4));
    // rounds to 0: ones
    assert_eq!(im.importance("blk.0.a.weight").unwrap(), vec![1.0, 1.0]);
}

/// A legacy file as llama-imatrix writes it.
fn dat_bytes(entries: &[(&str, i32, &[f32])], trailer: Option<(i32, &str)>) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(entries.len() as i32).to_le_bytes());
    for (name, ncall, values) in entries {
        b.extend_from_slice(&(name.len() as i32).to_le_bytes());
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&ncall.to_le_bytes());
        b.extend_from_slice(&(values.len() as i32).to_le_bytes());
        for v in *values {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    if let Some((chunks, dataset)) = trailer {
        b.extend_from_slice(&chunks.to_le_bytes());
        b.extend_from_slice(&(dataset.len() as i32).to_le_bytes());
        b.extend_from_slice(dataset.as_bytes());
    }
    b
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

const DAT_ENTRIES: &[(&str, i32, &[f32])] = &[
    ("blk.0.attn_q.weight", 4, &[4.0, 8.0, 2.0]),
    ("blk.0.ffn_up.weight", 3, &[3.0, 0.0, 1.5]),
];

#[test]
fn legacy_reads_entries_and_trailer() {
    let d = tmp();
    let p = write_file(
        d.path(),
        "im.dat",
        &dat_bytes(DAT_ENTRIES, Some((4, "calib.txt"))),
    );
    let im = Imatrix::read(&p).unwrap();
    assert_eq!(im.format, Format::LegacyDat);
    assert_eq!(im.datasets, ["calib.txt"]);
    assert_eq!(im.chunk_count, 4);
    assert_eq!(im.chunk_size, 0);
    let q = &im.entries["blk.0.attn_q.weight"];
    assert_eq!(q.counts, [4.0]);
    assert_eq!(q.n_per_row, 3);
    // llama-quantize: value / ncall
    assert_eq!(
        im.importance("blk.0.attn_q.weight").unwrap(),
        [1.0, 2.0, 0.5]
    );
    assert_eq!(
        im.importance("blk.0.ffn_up.weight").unwrap(),
        [1.0, 0.0, 0.5]
    );
}

#[test]
fn legacy_trailer_is_optional() {
    let d = tmp();
    let none = write_file(d.path(), "a.dat", &dat_bytes(DAT_ENTRIES, None));
    let im = Imatrix::read(&none).unwrap();
    assert_eq!((im.chunk_count, im.datasets.len()), (0, 0));

    let mut only_chunks = dat_bytes(DAT_ENTRIES, None);
    only_chunks.extend_from_slice(&7i32.to_le_bytes());
    let p = write_file(d.path(), "b.dat", &only_chunks);
    let im = Imatrix::read(&p).unwrap();
    assert_eq!((im.chunk_count, im.datasets.len()), (7, 0));

    // An empty dataset name (no prompt file) is no dataset.
    let p = write_file(d.path(), "c.dat", &dat_bytes(DAT_ENTRIES, Some((2, ""))));
    let im = Imatrix::read(&p).unwrap();
    assert_eq!((im.chunk_count, im.datasets.len()), (2, 0));
}

#[test]
fn legacy_to_gguf_keeps_importance() {
    let d = tmp();
    let dat = write_file(
        d.path(),
        "im.dat",
        &dat_bytes(DAT_ENTRIES, Some((4, "calib.txt"))),
    );
    let im = Imatrix::read(&dat).unwrap();
    let g = d.path().join("im.gguf");
    im.write_gguf(&g).unwrap();
    let back = Imatrix::read(&g).unwrap();
    same_content(&im, &back);
    for name in im.entries.keys() {
        assert_eq!(im.importance(name), back.importance(name));
    }
}

#[test]
fn legacy_truncated_at_every_length_is_an_error_naming_the_file() {
    let d = tmp();
    let full = dat_bytes(DAT_ENTRIES, Some((4, "calib.txt")));
    // Lengths that end exactly after the entries or after the chunk count are valid files.
    let entries_end = dat_bytes(DAT_ENTRIES, None).len();
    for len in 0..full.len() {
        if len == entries_end || len == entries_end + 4 {
            continue;
        }
        let p = write_file(d.path(), "t.dat", &full[..len]);
        let msg = err_text(Imatrix::read(&p));
        assert!(msg.contains(&p.display().to_string()), "len {len}: {msg}");
        assert!(
            msg.contains("regenerate") || msg.contains("corrupt"),
            "len {len}: {msg}"
        );
    }
}

#[test]
fn garbage_and_empty_files_are_errors() {
    let d = tmp();
    let garbage: Vec<u8> = (0..1000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let p = write_file(d.path(), "garbage.bin", &garbage);
    assert_err(Imatrix::read(&p), &p, &["not an importance matrix"]);
    let p = write_file(
        d.path(),
        "text.txt",
        b"hello, this is not an imatrix at all\n",
    );
    assert_err(Imatrix::read(&p), &p, &["not an importance matrix"]);
    let p = write_file(d.path(), "empty.dat", b"");
    assert_err(Imatrix::read(&p), &p, &["too short"]);
    let missing = d.path().join("nope.dat");
    assert_err(Imatrix::read(&missing), &missing, &[]);
}

#[test]
fn legacy_bad_entries() {
    let d = tmp();
    let cases: Vec<(Vec<u8>, &[&str])> = vec![
        (
            dat_bytes(&[("blk.0.a.weight", 0, &[1.0])], None),
            &["'blk.0.a.weight'", "call count is 0"],
        ),
        (
            dat_bytes(&[("blk.0.a.weight", -3, &[1.0])], None),
            &["call count is -3"],
        ),
        (
            dat_bytes(&[("blk.0.a.weight", 1, &[1.0, f32::NAN])], None),
            &["'blk.0.a.weight'", "NaN", "corrupt"],
        ),
        (
            dat_bytes(&[("blk.0.a.weight", 1, &[-1.0])], None),
            &["is -1", "non-negative"],
        ),
        (
            dat_bytes(&[("blk.0.a.weight", 1, &[f32::INFINITY])], None),
            &["inf"],
        ),
        (
            dat_bytes(
                &[("blk.0.a.weight", 1, &[1.0]), ("blk.0.a.weight", 1, &[2.0])],
                None,
            ),
            &["appears twice"],
        ),
        (
            {
                let mut b = dat_bytes(&[("blk.0.a.weight", 1, &[1.0])], Some((1, "x")));
                b.extend_from_slice(b"junk");
                b
            },
            &["trailer", "dataset name of 1 bytes but 5 bytes follow"],
        ),
        (
            {
                let mut b = dat_bytes(&[("blk.0.a.weight", 1, &[1.0])], None);
                b.extend_from_slice(&(-2i32).to_le_bytes());
                b
            },
            &["negative chunk count"],
        ),
    ];
    for (i, (bytes, fragments)) in cases.into_iter().enumerate() {
        let p = write_file(d.path(), &format!("case{i}.dat"), &bytes);
        assert_err(Imatrix::read(&p), &p, fragments);
    }
    // nval = 0
    let mut b = Vec::new();
    b.extend_from_slice(&1i32.to_le_bytes());
    b.extend_from_slice(&5i32.to_le_bytes());
    b.extend_from_slice(b"w.abc");
    b.extend_from_slice(&1i32.to_le_bytes());
    b.extend_from_slice(&0i32.to_le_bytes());
    b.extend_from_slice(&[0u8; 8]);
    let p = write_file(d.path(), "nval0.dat", &b);
    assert_err(Imatrix::read(&p), &p, &["'w.abc'", "has 0 values"]);
    // zero entries
    let p = write_file(d.path(), "zero.dat", &0i32.to_le_bytes());
    assert_err(Imatrix::read(&p), &p, &["0 entries"]);
}

/// Writes a GGUF by hand: metadata, then (name, dims, type, f32 values) tensors.
fn custom_gguf(
    path: &Path,
    meta: &[(&str, Value)],
    tensors: &[(&str, Vec<u64>, GgmlType, Vec<f32>)],
) {
    let mut w = GgufWriter::create(path).unwrap();
    for (k, v) in meta {
        w.add_metadata(k, v.clone()).unwrap();
    }
    for (name, dims, ty, _) in tensors {
        w.add_tensor_info(name, dims, *ty).unwrap();
    }
    w.begin_data().unwrap();
    for (name, _, ty, values) in tensors {
        let bytes: Vec<u8> = match ty {
            GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            GgmlType::F16 => values
                .iter()
                .flat_map(|&v| half_bits(v).to_le_bytes())
                .collect(),
            _ => unreachable!(),
        };
        w.write_tensor(name, &bytes).unwrap();
    }
    w.finish().unwrap();
}

/// f32 -> f16 bits for small exact values (tests only use 1.0).
fn half_bits(v: f32) -> u16 {
    assert_eq!(v, 1.0);
    0x3c00
}

/// Metadata entries for [`custom_gguf`].
type Meta = Vec<(&'static str, Value)>;

fn good_meta() -> Meta {
    vec![
        ("general.type", Value::from("imatrix")),
        (KEY_DATASETS, Value::from(vec!["calib.txt"])),
        (KEY_CHUNK_COUNT, Value::U32(4)),
        (KEY_CHUNK_SIZE, Value::U32(128)),
    ]
}

fn f32_tensor<'a>(
    name: &'a str,
    dims: &[u64],
    values: Vec<f32>,
) -> (&'a str, Vec<u64>, GgmlType, Vec<f32>) {
    (name, dims.to_vec(), GgmlType::F32, values)
}

#[test]
fn gguf_truncated_at_many_lengths_is_an_error_naming_the_file() {
    let d = tmp();
    let p = d.path().join("im.gguf");
    sample().write_gguf(&p).unwrap();
    let full = std::fs::read(&p).unwrap();
    for len in 4..full.len() {
        let t = write_file(d.path(), "t.gguf", &full[..len]);
        let msg = err_text(Imatrix::read(&t));
        assert!(msg.contains(&t.display().to_string()), "len {len}: {msg}");
        assert!(msg.contains("regenerate"), "len {len}: {msg}");
    }
}

#[test]
fn gguf_metadata_errors() {
    let d = tmp();
    let tensors = vec![
        f32_tensor("blk.0.a.weight.in_sum2", &[2], vec![1.0, 2.0]),
        f32_tensor("blk.0.a.weight.counts", &[1], vec![2.0]),
    ];
    let mut model = good_meta();
    model[0].1 = Value::from("model");
    let cases: Vec<(Meta, &[&str])> = vec![
        (
            model,
            &["'general.type'", "is 'model'", "not an importance matrix"],
        ),
        (
            good_meta()
                .into_iter()
                .filter(|(k, _)| *k != KEY_DATASETS)
                .collect(),
            &["'imatrix.datasets'", "missing"],
        ),
        (
            good_meta()
                .into_iter()
                .filter(|(k, _)| *k != KEY_CHUNK_SIZE)
                .collect(),
            &["'imatrix.chunk_size'", "missing"],
        ),
        (
            good_meta()
                .into_iter()
                .map(|(k, v)| {
                    if k == KEY_CHUNK_COUNT {
                        (k, Value::I32(4))
                    } else {
                        (k, v)
                    }
                })
                .collect(),
            &["'imatrix.chunk_count'", "must be a u32"],
        ),
        (
            good_meta()
                .into_iter()
                .map(|(k, v)| {
                    if k == KEY_DATASETS {
                        (k, Value::from("calib.txt"))
                    } else {
                        (k, v)
                    }
                })
                .collect(),
            &["'imatrix.datasets'", "array of strings"],
        ),
    ];
    for (i, (meta, fragments)) in cases.into_iter().enumerate() {
        let p = d.path().join(format!("m{i}.gguf"));
        custom_gguf(&p, &meta, &tensors);
        assert_err(Imatrix::read(&p), &p, fragments);
    }
    // general.type absent is accepted (only the three imatrix keys are required).
    let p = d.path().join("notype.gguf");
    let meta: Vec<_> = good_meta().into_iter().skip(1).collect();
    custom_gguf(&p, &meta, &tensors);
    assert_eq!(Imatrix::read(&p).unwrap().entries.len(), 1);
}

#[test]
fn gguf_tensor_errors() {
    let d = tmp();
    type T = (&'static str, Vec<u64>, GgmlType, Vec<f32>);
    let sums = || f32_tensor("blk.0.a.weight.in_sum2", &[2], vec![1.0, 2.0]);
    let counts = || f32_tensor("blk.0.a.weight.counts", &[1], vec![2.0]);
    let cases: Vec<(Vec<T>, &[&str])> = vec![
        (
            vec![sums()],
            &["'blk.0.a.weight'", "no 'blk.0.a.weight.counts'"],
        ),
        (
            vec![counts()],
            &["'blk.0.a.weight'", "no 'blk.0.a.weight.in_sum2'"],
        ),
        (
            vec![
                sums(),
                counts(),
                f32_tensor("token_embd.weight", &[2], vec![0.0, 0.0]),
            ],
            &["'token_embd.weight'", "not an importance matrix"],
        ),
        (vec![], &["no entries"]),
        (
            vec![
                sums(),
                (
                    "blk.0.a.weight.counts",
                    vec![32],
                    GgmlType::F16,
                    vec![1.0; 32],
                ),
            ],
            &["must be F32"],
        ),
        (
            vec![
                f32_tensor("blk.0.a.weight.in_sum2", &[2, 2], vec![1.0; 4]),
                counts(),
            ],
            &["should be [1, 2]"],
        ),
        (
            vec![
                sums(),
                f32_tensor("blk.0.a.weight.counts", &[2], vec![1.0, 1.0]),
            ],
            &["should be [1, 1]"],
        ),
        (
            vec![
                f32_tensor("blk.0.a.weight.in_sum2", &[2], vec![1.0, f32::NAN]),
                counts(),
            ],
            &["'blk.0.a.weight'", "#1", "NaN"],
        ),
        (
            vec![
                f32_tensor("blk.0.a.weight.in_sum2", &[2], vec![-0.5, 1.0]),
                counts(),
            ],
            &["is -0.5"],
        ),
        (
            vec![
                sums(),
                f32_tensor("blk.0.a.weight.counts", &[1], vec![f32::INFINITY]),
            ],
            &["count #0 is inf"],
        ),
    ];
    for (i, (tensors, fragments)) in cases.into_iter().enumerate() {
        let p = d.path().join(format!("t{i}.gguf"));
        custom_gguf(&p, &good_meta(), &tensors);
        assert_err(Imatrix::read(&p), &p, fragments);
    }
}

#[test]
fn check_against_model_tensors() {
    let im = sample();
    let report = im
        .check_against([
            TensorShape::from(("blk.0.attn_q.weight", 4)),
            TensorShape::from(("blk.0.ffn_down_exps.weight", 2, 3)),
            TensorShape::from(("token_embd.weight", 4)),
        ])
        .unwrap();
    assert_eq!(report.matched, 2);
    assert_eq!(report.missing, ["token_embd.weight"]);
    assert_eq!(report.unused, ["blk.1.attn_k.weight"]);

    let msg = err_text(im.check_against([("blk.0.attn_q.weight", 8)]));
    assert!(msg.contains("'blk.0.attn_q.weight'"), "{msg}");
    assert!(msg.contains("different model"), "{msg}");
    assert!(msg.contains(IN_MEMORY), "{msg}");

    let msg = err_text(im.check_against([("blk.0.ffn_down_exps.weight", 3, 2)]));
    assert!(msg.contains("covers 3 matrices of 2 columns"), "{msg}");
}

#[test]
fn check_against_names_the_file_and_catches_bad_values() {
    let d = tmp();
    let p = d.path().join("im.gguf");
    sample().write_gguf(&p).unwrap();
    let mut im = Imatrix::read(&p).unwrap();
    assert_err(
        im.check_against([("blk.1.attn_k.weight", 3)]),
        &p,
        &["'blk.1.attn_k.weight'"],
    );
    im.entries.get_mut("blk.1.attn_k.weight").unwrap().in_sum2[2] = f32::NAN;
    assert_err(
        im.check_against([("blk.1.attn_k.weight", 4)]),
        &p,
        &["'blk.1.attn_k.weight'", "NaN"],
    );
}

#[test]
fn write_refuses_invalid_content_and_leaves_no_file() {
    let d = tmp();
    let p = d.path().join("out.gguf");
    let mut im = sample();
    im.entries.get_mut("blk.0.attn_q.weight").unwrap().counts[0] = -1.0;
    let msg = err_text(im.write_gguf(&p));
    assert!(
        msg.contains("'blk.0.attn_q.weight'") && msg.contains("count #0 is -1"),
        "{msg}"
    );
    assert!(!p.exists() && !d.path().join("out.gguf.partial").exists());

    let mut im = sample();
    im.entries.get_mut("blk.0.attn_q.weight").unwrap().n_per_row = 3;
    assert!(err_text(im.write_gguf(&p)).contains("has 4 sums but 1 matrices x 3 columns need 3"));

    let mut im = sample();
    im.entries.insert(
        format!("blk.0.{}.weight", "x".repeat(60)),
        Entry::new(vec![1.0], 1.0),
    );
    let msg = err_text(im.write_gguf(&p));
    assert!(msg.contains("at most 63"), "{msg}");
    assert!(!p.exists() && !d.path().join("out.gguf.partial").exists());

    let empty = Imatrix::new(vec![], 0, 0);
    assert!(err_text(empty.write_gguf(&p)).contains("no entries"));
}

#[test]
fn collector_sums_squares_and_counts_tokens() {
    let mut c = Collector::new(3);
    // 3 tokens x 2 features, then 2 more tokens
    assert!(c
        .add(
            "blk.0.attn_q.weight",
            &[1.0, 2.0, 3.0, -1.0, 0.5, 0.0],
            3,
            2
        )
        .unwrap());
    c.finish_chunk();
    assert!(c
        .add("blk.0.attn_q.weight", &[2.0, 2.0, 1.0, 1.0], 2, 2)
        .unwrap());
    c.finish_chunk();
    assert!(!c.add("output.weight", &[1.0, 1.0], 1, 2).unwrap());
    assert!(!c.add("token_embd.weight", &[1.0, 1.0], 1, 2).unwrap());
    assert_eq!(c.chunks(), 2);
    let im = c.into_imatrix(vec!["calib.txt".into()]);
    assert_eq!(im.chunk_count, 2);
    assert_eq!(im.chunk_size, 3);
    assert_eq!(im.datasets, ["calib.txt"]);
    let e = &im.entries["blk.0.attn_q.weight"];
    assert_eq!(
        e.in_sum2,
        [1.0 + 9.0 + 0.25 + 4.0 + 1.0, 4.0 + 1.0 + 0.0 + 4.0 + 1.0]
    );
    assert_eq!(e.counts, [5.0]);
    assert_eq!(im.entries.len(), 1);

    let mut c = Collector::new(3).process_output(true);
    assert!(c.wants("output.weight"));
    assert!(c.add("output.weight", &[1.0, 1.0], 1, 2).unwrap());
}

#[test]
fn collector_accumulates_in_f64() {
    // 2^24 + 1 is not an f32: an f32 accumulator would stall at 2^24.
    let mut c = Collector::new(1);
    let ones = vec![1.0f32; 1 << 12];
    for _ in 0..(1 << 12) + 1 {
        c.add("blk.0.w.weight", &ones, 1 << 12, 1).unwrap();
    }
    let im = c.into_imatrix(vec![]);
    let e = &im.entries["blk.0.w.weight"];
    assert_eq!(e.in_sum2[0], ((1u64 << 24) + (1 << 12)) as f32);
}

#[test]
fn collector_errors_name_the_tensor() {
    let mut c = Collector::new(4);
    let msg = err_text(c.add("blk.0.a.weight", &[1.0, 2.0, 3.0], 2, 2));
    assert!(
        msg.contains("'blk.0.a.weight'") && msg.contains("got 3 activations for 2 tokens x 2"),
        "{msg}"
    );
    let msg = err_text(c.add("blk.0.a.weight", &[1.0, f32::NAN], 1, 2));
    assert!(
        msg.contains("non-finite") && msg.contains("column 1"),
        "{msg}"
    );
    c.add("blk.0.a.weight", &[1.0, 2.0], 1, 2).unwrap();
    let msg = err_text(c.add("blk.0.a.weight", &[1.0, 2.0, 3.0], 1, 3));
    assert!(
        msg.contains("earlier batches had 2 input features"),
        "{msg}"
    );
}

#[test]
fn collector_keeps_one_vector_and_count_per_expert() {
    let mut c = Collector::new(4);
    // Expert 2 of 3 sees two tokens, expert 0 one, expert 1 none.
    c.add_expert(
        "blk.0.ffn_up_exps.weight",
        2,
        3,
        &[1.0, 2.0, 3.0, 4.0],
        2,
        2,
    )
    .unwrap();
    c.add_expert("blk.0.ffn_up_exps.weight", 0, 3, &[0.5, -1.0], 1, 2)
        .unwrap();
    let msg = err_text(c.add_expert("blk.0.ffn_up_exps.weight", 3, 3, &[1.0, 1.0], 1, 2));
    assert!(msg.contains("expert 3 of 3"), "{msg}");
    let im = c.into_imatrix(vec![]);
    let e = &im.entries["blk.0.ffn_up_exps.weight"];
    assert_eq!(e.n_per_row, 2);
    assert_eq!(e.counts, vec![1.0, 0.0, 2.0]);
    assert_eq!(e.in_sum2, vec![0.25, 1.0, 0.0, 0.0, 10.0, 20.0]);
    // An expert no token reached gets uniform importance, as in llama-quantize.
    let imp = im.importance("blk.0.ffn_up_exps.weight").unwrap();
    assert_eq!(imp, vec![0.25, 1.0, 1.0, 1.0, 5.0, 10.0]);
}

#[test]
fn collector_output_round_trips() {
    let d = tmp();
    let mut c = Collector::new(2);
    c.add("blk.0.a.weight", &[0.5, 1.5, 2.5, 3.5], 2, 2)
        .unwrap();
    c.add("blk.1.b.weight", &[1.0, 2.0, 3.0], 1, 3).unwrap();
    c.finish_chunk();
    let im = c.into_imatrix(vec!["x.txt".into()]);
    let p = d.path().join("c.gguf");
    im.write_gguf(&p).unwrap();
    let back = Imatrix::read(&p).unwrap();
    same_content(&im, &back);
    assert_eq!(
        back.importance("blk.0.a.weight").unwrap(),
        [(0.25 + 6.25) / 2.0, (2.25 + 12.25) / 2.0]
    );
}

#[test]
fn legacy_to_token_counts_scales_like_llama_imatrix() {
    let d = tmp();
    let dat = write_file(
        d.path(),
        "im.dat",
        &dat_bytes(DAT_ENTRIES, Some((4, "calib.txt"))),
    );
    let legacy = Imatrix::read(&dat).unwrap();
    let mut raw = legacy.clone();
    raw.legacy_to_token_counts(128);
    assert_eq!(raw.format, Format::Gguf);
    assert_eq!(raw.chunk_size, 128);
    let q = &raw.entries["blk.0.attn_q.weight"];
    assert_eq!(q.in_sum2, [512.0, 1024.0, 256.0]);
    assert_eq!(q.counts, [512.0]);
    for name in legacy.entries.keys() {
        assert_eq!(legacy.importance(name), raw.importance(name));
    }
    // A second call (or one on GGUF content) changes nothing.
    let before = raw.clone();
    raw.legacy_to_token_counts(128);
    assert_eq!(raw, before);
}
