//! Exposes the affine kernel to the oracle tests (tests/oracle/test_mlx_kernels.py).
//!
//!     mlx_kernel JOBS.json
//!
//! JOBS.json is a list of `{"input", "rows", "cols", "bits", "group_size", "dtype", "out"}`:
//! `input` holds rows x cols little-endian f32 values, `dtype` is float32, float16 or
//! bfloat16 (the model dtype: inputs are rounded to it first, as `astype` would). Each
//! job writes `<out>.packed` (u32 words), `<out>.scales` and `<out>.biases` (dtype
//! bytes) and `<out>.deq` (our dequantization, f32), all little-endian.

use anyhow::{anyhow, Context, Result};
use pajamas_mlx::{quantize, MlxDtype};
use serde_json::Value;

fn field<'a>(job: &'a Value, key: &str) -> Result<&'a Value> {
    job.get(key)
        .ok_or_else(|| anyhow!("job without '{key}': {job}"))
}

fn main() -> Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow!("usage: mlx_kernel JOBS.json"))?;
    let jobs: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&path).with_context(|| path.clone())?)?;
    for job in &jobs {
        let num = |k: &str| -> Result<usize> {
            field(job, k)?
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| anyhow!("'{k}' is not a number"))
        };
        let text = |k: &str| -> Result<String> {
            Ok(field(job, k)?
                .as_str()
                .ok_or_else(|| anyhow!("'{k}' is not a string"))?
                .to_string())
        };
        let (rows, cols) = (num("rows")?, num("cols")?);
        let dtype =
            MlxDtype::from_config_name(&text("dtype")?).ok_or_else(|| anyhow!("bad dtype"))?;
        let input = text("input")?;
        let raw = std::fs::read(&input).with_context(|| input.clone())?;
        let data: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        anyhow::ensure!(
            data.len() == rows * cols,
            "{input}: {} values, want {rows}x{cols}",
            data.len()
        );
        let q = quantize(&data, cols, num("bits")? as u32, num("group_size")?, dtype)?;
        let out = text("out")?;
        std::fs::write(format!("{out}.packed"), q.packed_bytes())?;
        std::fs::write(format!("{out}.scales"), q.scales_bytes())?;
        std::fs::write(format!("{out}.biases"), q.biases_bytes())?;
        let deq: Vec<u8> = q
            .dequantize()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(format!("{out}.deq"), deq)?;
    }
    Ok(())
}
