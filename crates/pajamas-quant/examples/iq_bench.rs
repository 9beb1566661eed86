//! Throughput of our i-quant kernels against ggml's reference quantizer
//! (`ggml_quantize_chunk` in llama-cpp-python's `libggml-base.so`, what llama-quantize
//! runs), in the same process, on the same rows with the same importance row.
//!
//!     iq_bench [--rows R] [--cols N] [--reps K] [--types IQ1_S,IQ2_XS,...]
//!              [--lib libggml-base.so] [--input ROWS.f32 --importance IMP.f32]
//!              [--out-dir DIR] [--json]
//!
//! Both sides run single-threaded (ours in a one-thread rayon pool; ggml's chunk quantizer
//! is a plain loop); ours is also timed with every thread of the global pool, reported
//! separately. One warm-up call per side is excluded (it also pays ggml's one-time grid
//! initialisation, done up front with `ggml_quantize_init`); the figure is the median of
//! `--reps` runs. `ratio` = our elements/s ÷ ggml's (single thread both): above 1 we are
//! faster. The importance-weighted RMSE of both outputs is printed as well (both read back
//! with our dequantizer, which reads ggml's bytes as gguf-py does), and the one-thread and
//! all-thread outputs are compared byte for byte.
//!
//! Without `--input`, the rows are gaussian (σ 0.02) and the importance row log-normal
//! with a few dominant and near-dead columns, from a fixed seed. `--out-dir` writes, per
//! type, our bytes (`TYPE.bin`) and the rows and importance used (`rows.f32`, `imp.f32`).
//! The library is `--lib`, else `$GGML_BASE_LIB`, else the one in the cached oracle venv
//! (`${PAJAMAS_CACHE:-~/.cache/llama-pajamas}/venv/lib/python*/site-packages/llama_cpp/lib`).

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use pajamas_quant::{dequantize_rows, quantize_rows, GgmlType};

const ALL: [&str; 9] = [
    "IQ4_NL", "IQ4_XS", "IQ3_S", "IQ3_XXS", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S",
];

/// ggml.h `enum ggml_type` ids.
fn ggml_id(name: &str) -> i32 {
    match name {
        "IQ2_XXS" => 16,
        "IQ2_XS" => 17,
        "IQ3_XXS" => 18,
        "IQ1_S" => 19,
        "IQ4_NL" => 20,
        "IQ3_S" => 21,
        "IQ2_S" => 22,
        "IQ4_XS" => 23,
        "IQ1_M" => 29,
        _ => unreachable!("checked by parse"),
    }
}

type QuantizeChunk =
    unsafe extern "C" fn(i32, *const f32, *mut c_void, i64, i64, i64, *const f32) -> usize;
type QuantizeInit = unsafe extern "C" fn(i32);
type RowSize = unsafe extern "C" fn(i32, i64) -> usize;

struct Ggml {
    _lib: libloading::Library,
    chunk: QuantizeChunk,
    init: QuantizeInit,
    row_size: RowSize,
}

impl Ggml {
    fn open(path: &Path) -> Result<Ggml, String> {
        // SAFETY: loading ggml runs no initialisers beyond its own; the symbols are
        // declared with the signatures of ggml.h.
        unsafe {
            let lib =
                libloading::Library::new(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let chunk = *lib
                .get::<QuantizeChunk>(b"ggml_quantize_chunk\0")
                .map_err(|e| e.to_string())?;
            let init = *lib
                .get::<QuantizeInit>(b"ggml_quantize_init\0")
                .map_err(|e| e.to_string())?;
            let row_size = *lib
                .get::<RowSize>(b"ggml_row_size\0")
                .map_err(|e| e.to_string())?;
            Ok(Ggml {
                _lib: lib,
                chunk,
                init,
                row_size,
            })
        }
    }

    fn quantize(&self, ty: &str, x: &[f32], cols: usize, imp: &[f32]) -> Vec<u8> {
        let id = ggml_id(ty);
        let rows = x.len() / cols;
        // SAFETY: `out` holds `rows` rows of `ggml_row_size` bytes; `x` and `imp` outlive
        // the call, `imp` has `cols` values.
        unsafe {
            let row = (self.row_size)(id, cols as i64);
            let mut out = vec![0u8; row * rows];
            let written = (self.chunk)(
                id,
                x.as_ptr(),
                out.as_mut_ptr().cast(),
                0,
                rows as i64,
                cols as i64,
                imp.as_ptr(),
            );
            assert_eq!(written, out.len(), "ggml_quantize_chunk({ty})");
            out
        }
    }
}

fn default_lib() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("GGML_BASE_LIB") {
        return Some(PathBuf::from(p));
    }
    let cache = std::env::var("PAJAMAS_CACHE")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| Path::new(&h).join(".cache/llama-pajamas")))
        .ok()?;
    let lib = cache.join("venv/lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .flatten()
        .map(|e| e.path().join("site-packages/llama_cpp/lib/libggml-base.so"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop()
}

/// splitmix64, for reproducible data without a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn synthetic(rows: usize, cols: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng(0x01a0_ba5e);
    let x = (0..rows * cols)
        .map(|_| (0.02 * rng.normal()) as f32)
        .collect();
    let mut imp: Vec<f32> = (0..cols)
        .map(|_| (1.5 * rng.normal()).exp() as f32)
        .collect();
    for k in 0..cols / 256 + 1 {
        let i = (rng.next() % cols as u64) as usize;
        imp[i] *= if k % 3 == 0 { 1e-4 } else { 200.0 };
    }
    (x, imp)
}

fn read_f32(path: &str) -> Result<Vec<f32>, String> {
    let b = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    if !b.len().is_multiple_of(4) {
        return Err(format!("{path}: not an f32 array"));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Median seconds of `reps` calls after one warm-up call; the last output.
fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut out = f();
    let mut secs = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        out = f();
        secs.push(t.elapsed().as_secs_f64());
    }
    (median(secs), out)
}

fn weighted_rmse(x: &[f32], y: &[f32], imp: &[f32]) -> f64 {
    let cols = imp.len();
    let (mut num, mut den) = (0f64, 0f64);
    for (i, (&a, &b)) in x.iter().zip(y).enumerate() {
        let w = f64::from(imp[i % cols]);
        num += w * (f64::from(a) - f64::from(b)).powi(2);
        den += w;
    }
    (num / den).sqrt()
}

struct Args {
    rows: usize,
    cols: usize,
    reps: usize,
    types: Vec<String>,
    lib: Option<PathBuf>,
    input: Option<String>,
    importance: Option<String>,
    out_dir: Option<PathBuf>,
    json: bool,
}

const USAGE: &str =
    "usage: iq_bench [--rows R] [--cols N] [--reps K] [--types T,T,...] [--lib PATH] \
[--input ROWS.f32 --importance IMP.f32] [--out-dir DIR] [--json]";

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        rows: 384,
        cols: 1536,
        reps: 5,
        types: ALL.iter().map(|s| s.to_string()).collect(),
        lib: None,
        input: None,
        importance: None,
        out_dir: None,
        json: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--json" {
            a.json = true;
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--rows" => a.rows = num()?,
            "--cols" => a.cols = num()?,
            "--reps" => a.reps = num()?.max(1),
            "--types" => {
                a.types = value.split(',').map(|s| s.trim().to_uppercase()).collect();
                if let Some(t) = a.types.iter().find(|t| !ALL.contains(&t.as_str())) {
                    return Err(format!("not an i-quant: {t}"));
                }
            }
            "--lib" => a.lib = Some(PathBuf::from(value)),
            "--input" => a.input = Some(value.clone()),
            "--importance" => a.importance = Some(value.clone()),
            "--out-dir" => a.out_dir = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if a.cols == 0 || !a.cols.is_multiple_of(256) {
        return Err("--cols must be a positive multiple of 256".into());
    }
    Ok(a)
}

struct Row {
    ty: String,
    ours_1t: f64,
    ggml_1t: f64,
    ours_all: f64,
    rmse_ours: f64,
    rmse_ggml: f64,
    identical: bool,
}

fn run(args: &[String]) -> Result<(), String> {
    let a = parse(args)?;
    let (x, imp) = match (&a.input, &a.importance) {
        (Some(i), Some(m)) => (read_f32(i)?, read_f32(m)?),
        (None, None) => synthetic(a.rows, a.cols),
        _ => return Err("--input and --importance go together".into()),
    };
    let cols = imp.len();
    if !cols.is_multiple_of(256) || x.is_empty() || !x.len().is_multiple_of(cols) {
        return Err(format!("{} values do not make rows of {cols}", x.len()));
    }
    let rows = x.len() / cols;
    let lib = a.lib.clone().or_else(default_lib).ok_or(
        "no libggml-base.so: pass --lib or set GGML_BASE_LIB (scripts/setup_llama_cpp.sh builds it)",
    )?;
    let ggml = Ggml::open(&lib)?;
    if let Some(dir) = &a.out_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(dir.join("rows.f32"), f32_bytes(&x)).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("imp.f32"), f32_bytes(&imp)).map_err(|e| e.to_string())?;
    }
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| e.to_string())?;
    let threads = rayon::current_num_threads();
    let mut table = Vec::new();
    for name in &a.types {
        let ty = GgmlType::from_name(name).ok_or_else(|| format!("unknown type {name}"))?;
        // SAFETY: ggml_quantize_init takes a type id and fills its tables once.
        unsafe { (ggml.init)(ggml_id(name)) };
        let ours = || quantize_rows(ty, &x, cols, Some(&imp)).expect("our quantizer");
        let (ours_1t, bytes_1t) = time(a.reps, || one.install(ours));
        let (ggml_1t, gbytes) = time(a.reps, || ggml.quantize(name, &x, cols, &imp));
        let (ours_all, bytes_all) = time(a.reps, ours);
        let back = dequantize_rows(ty, &bytes_1t, cols).map_err(|e| e.to_string())?;
        let gback = dequantize_rows(ty, &gbytes, cols).map_err(|e| e.to_string())?;
        if let Some(dir) = &a.out_dir {
            std::fs::write(dir.join(format!("{name}.bin")), &bytes_1t)
                .map_err(|e| e.to_string())?;
        }
        table.push(Row {
            ty: name.clone(),
            ours_1t,
            ggml_1t,
            ours_all,
            rmse_ours: weighted_rmse(&x, &back, &imp),
            rmse_ggml: weighted_rmse(&x, &gback, &imp),
            identical: bytes_1t == bytes_all,
        });
        if !a.json {
            eprintln!("{name} done");
        }
    }
    let n = (rows * cols) as f64;
    if a.json {
        let items: Vec<String> = table
            .iter()
            .map(|r| {
                format!(
                    "{{\"type\": \"{}\", \"ours_1t_s\": {:e}, \"ggml_1t_s\": {:e}, \"ours_all_s\": {:e}, \
\"ours_1t_elems_per_s\": {:e}, \"ggml_1t_elems_per_s\": {:e}, \"ratio_1t\": {:e}, \"ratio_all_threads\": {:e}, \
\"rmse_ours\": {:e}, \"rmse_ggml\": {:e}, \"rmse_ratio\": {:e}, \"threads_identical\": {}}}",
                    r.ty,
                    r.ours_1t,
                    r.ggml_1t,
                    r.ours_all,
                    n / r.ours_1t,
                    n / r.ggml_1t,
                    r.ggml_1t / r.ours_1t,
                    r.ggml_1t / r.ours_all,
                    r.rmse_ours,
                    r.rmse_ggml,
                    r.rmse_ours / r.rmse_ggml,
                    r.identical
                )
            })
            .collect();
        println!(
            "{{\"rows\": {rows}, \"cols\": {cols}, \"reps\": {}, \"threads\": {threads}, \"lib\": \"{}\", \"types\": [\n  {}\n]}}",
            a.reps,
            lib.display(),
            items.join(",\n  ")
        );
    } else {
        println!(
            "{rows} x {cols} rows, importance row, median of {} runs; speed = ours elem/s / ggml elem/s (single thread both); all-threads = ours on {threads} threads / ggml on 1",
            a.reps
        );
        println!("| type    | ours 1T s | ggml 1T s | speed 1T | ours {threads}T s | speed {threads}T/1T | RMSE ours/ggml | 1T == {threads}T |");
        println!("|---------|----------:|----------:|---------:|----------:|-----------:|---------------:|:-------:|");
        for r in &table {
            println!(
                "| {:<7} | {:>9.4} | {:>9.4} | {:>8.3} | {:>9.4} | {:>10.3} | {:>14.4} | {} |",
                r.ty,
                r.ours_1t,
                r.ggml_1t,
                r.ggml_1t / r.ours_1t,
                r.ours_all,
                r.ggml_1t / r.ours_all,
                r.rmse_ours / r.rmse_ggml,
                if r.identical { "yes" } else { "NO" }
            );
        }
    }
    if table.iter().any(|r| !r.identical) {
        return Err("outputs differ between one thread and all threads".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iq_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
