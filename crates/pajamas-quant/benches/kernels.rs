//! Quantization throughput per type, in MB/s of f32 input, single-threaded (one row at a
//! time, as ggml's reference quantizer runs).
//!
//!     cargo bench -p pajamas-quant --bench kernels
//!     GGML_BASE_LIB=/path/to/libggml-base.so cargo bench -p pajamas-quant --bench kernels
//!
//! With `GGML_BASE_LIB` set, ggml's own `ggml_quantize_chunk` (what llama-quantize calls)
//! runs on the same rows in the same process, and a summary table prints both
//! throughputs and their ratio. `BENCH_TYPES=Q4_K,Q6_K` restricts the types.

use std::ffi::c_void;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pajamas_quant::{quantize_row, requires_imatrix, GgmlType};

const ROWS: usize = 16;
const COLS: usize = 4096;

const TYPES: [GgmlType; 22] = [
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::F32,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::IQ3_S,
    GgmlType::IQ3_XXS,
    GgmlType::IQ2_S,
    GgmlType::IQ2_XS,
    GgmlType::IQ2_XXS,
    GgmlType::IQ1_M,
    GgmlType::IQ1_S,
];

/// `size_t ggml_quantize_chunk(enum ggml_type, const float *src, void *dst, int64_t start,
/// int64_t nrows, int64_t n_per_row, const float *imatrix)` from ggml.h.
type QuantizeChunk =
    unsafe extern "C" fn(i32, *const f32, *mut c_void, i64, i64, i64, *const f32) -> usize;

/// ggml's reference quantizer, loaded from `GGML_BASE_LIB`.
struct Ggml {
    // Keeps the library mapped while `quantize_chunk` is callable.
    _lib: libloading::Library,
    quantize_chunk: QuantizeChunk,
}

impl Ggml {
    fn load() -> Option<Ggml> {
        let path = std::env::var_os("GGML_BASE_LIB")?;
        // SAFETY: loading ggml runs its (side-effect free) static initialisers only, and
        // the symbol's type is the C prototype above; the fn pointer never outlives `_lib`.
        unsafe {
            let lib = libloading::Library::new(&path)
                .unwrap_or_else(|e| panic!("GGML_BASE_LIB={path:?}: {e}"));
            let quantize_chunk = *lib
                .get::<QuantizeChunk>(b"ggml_quantize_chunk\0")
                .expect("ggml_quantize_chunk");
            Some(Ggml {
                _lib: lib,
                quantize_chunk,
            })
        }
    }

    fn quantize(
        &self,
        ty: GgmlType,
        src: &[f32],
        n_per_row: usize,
        imp: Option<&[f32]>,
        dst: &mut [u8],
    ) {
        let rows = src.len() / n_per_row;
        assert_eq!(dst.len(), rows * ty.row_bytes(n_per_row));
        if let Some(i) = imp {
            assert_eq!(i.len(), n_per_row);
        }
        // SAFETY: src holds rows·n_per_row floats, dst exactly the bytes ggml writes for
        // them, imatrix (if any) n_per_row floats; all outlive the call.
        let written = unsafe {
            (self.quantize_chunk)(
                ty.id() as i32,
                src.as_ptr(),
                dst.as_mut_ptr().cast(),
                0,
                rows as i64,
                n_per_row as i64,
                imp.map_or(std::ptr::null(), <[f32]>::as_ptr),
            )
        };
        assert_eq!(written, dst.len());
    }
}

fn ours(ty: GgmlType, src: &[f32], n_per_row: usize, imp: Option<&[f32]>, dst: &mut [u8]) {
    let rb = ty.row_bytes(n_per_row);
    for (row, out) in src.chunks_exact(n_per_row).zip(dst.chunks_exact_mut(rb)) {
        quantize_row(ty, row, imp, out).unwrap();
    }
}

/// Weight-like rows: gaussian with a sprinkle of outliers (deterministic).
fn rows() -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..ROWS * COLS)
        .map(|i| {
            let g = (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos();
            let v = (g * 0.02) as f32;
            if i % 397 == 0 {
                v * 12.0
            } else {
                v
            }
        })
        .collect()
}

fn importance() -> Vec<f32> {
    (0..COLS)
        .map(|i| 0.05 + ((i * 2_654_435_761) % 1000) as f32 / 250.0)
        .collect()
}

fn selected_types() -> Vec<GgmlType> {
    match std::env::var("BENCH_TYPES") {
        Ok(list) => list
            .split(',')
            .map(|n| GgmlType::from_name(n.trim()).expect("BENCH_TYPES: unknown type"))
            .collect(),
        Err(_) => TYPES.to_vec(),
    }
}

fn bench_kernels(c: &mut Criterion) {
    let data = rows();
    let imp = importance();
    let ggml = Ggml::load();
    let mb = (data.len() * 4) as f64 / 1e6;
    let mut summary = Vec::new();
    for ty in selected_types() {
        let mut dst = vec![0u8; ROWS * ty.row_bytes(COLS)];
        let mut group = c.benchmark_group(ty.name());
        group.throughput(Throughput::Bytes((data.len() * 4) as u64));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        // IQ2_XXS, IQ2_XS, IQ1_S only run with an imatrix (ggml aborts without one).
        let weightings: &[(&str, Option<&[f32]>)] = if requires_imatrix(ty) {
            &[("imatrix", Some(&imp))]
        } else if ty.is_quantized() {
            &[("plain", None), ("imatrix", Some(&imp))]
        } else {
            &[("plain", None)]
        };
        for &(label, w) in weightings {
            group.bench_with_input(BenchmarkId::new("pajamas", label), &w, |b, &w| {
                b.iter(|| ours(ty, black_box(&data), COLS, w, &mut dst))
            });
            if let Some(g) = &ggml {
                group.bench_with_input(BenchmarkId::new("ggml", label), &w, |b, &w| {
                    b.iter(|| g.quantize(ty, black_box(&data), COLS, w, &mut dst))
                });
                let t_ours = best_of(5, || ours(ty, &data, COLS, w, &mut dst));
                let t_ggml = best_of(5, || g.quantize(ty, &data, COLS, w, &mut dst));
                summary.push((ty, label, mb / t_ours, mb / t_ggml));
            }
        }
        group.finish();
    }
    if !summary.is_empty() {
        println!("\nthroughput, MB/s of f32 input, 1 thread (best of 5 runs of {ROWS}x{COLS}):");
        println!(
            "{:6} {:8} {:>10} {:>10} {:>12}",
            "type", "weights", "pajamas", "ggml", "ours/ggml"
        );
        for (ty, label, ours, theirs) in summary {
            println!(
                "{:6} {:8} {:10.1} {:10.1} {:12.3}",
                ty.name(),
                label,
                ours,
                theirs,
                ours / theirs
            );
        }
    }
}

/// Seconds of the fastest of `n` runs.
fn best_of(n: usize, mut f: impl FnMut()) -> f64 {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

criterion_group!(benches, bench_kernels);
criterion_main!(benches);
