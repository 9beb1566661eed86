//! HF folder -> MLX checkpoint, through the pajamas-mlx API alone (used by the oracle
//! tests until the main CLI's `quantize llm --formats mlx` is wired).
//!
//!     mlx_quantize --model DIR --output OUT [--bits B] [--group-size G]
//!                  [--recipe mixed_3_6 | --aware] [--dry-run] [--plan-json FILE]
//!                  [--max-shard-bytes N]
//!
//! Writes OUT/mlx/<bits>bit[-<recipe>|-aware]/ and prints the plan; the last stdout line
//! is the output folder.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use pajamas_mlx::{plan_mlx, MlxChoice, MlxWriter, Recipe, SourceTensor, DEFAULT_MAX_SHARD_BYTES};
use pajamas_model::HfModel;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut model, mut output) = (None, None);
    let (mut bits, mut group, mut recipe, mut aware) = (4u32, None::<usize>, None, false);
    let (mut dry_run, mut plan_json, mut max_shard) =
        (false, None::<PathBuf>, DEFAULT_MAX_SHARD_BYTES);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow!("{a} needs a value"));
        match a.as_str() {
            "--model" => model = Some(PathBuf::from(value()?)),
            "--output" => output = Some(PathBuf::from(value()?)),
            "--bits" => bits = value()?.parse()?,
            "--group-size" => group = Some(value()?.parse()?),
            "--recipe" => {
                let v = value()?;
                recipe = Some(Recipe::from_name(&v).ok_or_else(|| anyhow!("unknown recipe {v}"))?)
            }
            "--aware" => aware = true,
            "--dry-run" => dry_run = true,
            "--plan-json" => plan_json = Some(PathBuf::from(value()?)),
            "--max-shard-bytes" => max_shard = value()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    let model_dir = model.ok_or_else(|| anyhow!("--model is required"))?;
    let model = HfModel::open(&model_dir)?;
    let arch = pajamas_arch::detect(model.config()).context("config.json")?;
    let choice = match (recipe, aware) {
        (Some(_), true) => bail!("--recipe and --aware are exclusive"),
        (Some(recipe), false) => MlxChoice::Recipe {
            recipe,
            group_size: group.unwrap_or(64),
        },
        (None, true) => match (MlxChoice::architecture_aware(&arch, bits), group) {
            (_, Some(group_size)) => MlxChoice::ArchitectureAware {
                base_bits: bits,
                group_size,
            },
            (c, None) => c,
        },
        (None, false) => MlxChoice::Uniform {
            bits,
            group_size: group.unwrap_or(64),
        },
    };
    let sources: Vec<SourceTensor> = model
        .tensors()
        .map(|t| SourceTensor {
            name: t.info.name.clone(),
            shape: t.info.shape.clone(),
            dtype: t.info.dtype,
        })
        .collect();
    let plan = plan_mlx(&sources, model.config(), &arch, choice)?;
    print!("{}", plan.render(false));
    if let Some(p) = &plan_json {
        std::fs::write(p, serde_json::to_vec_pretty(&plan)?)?;
    }
    if dry_run {
        return Ok(());
    }
    let out = output
        .ok_or_else(|| anyhow!("--output is required"))?
        .join("mlx")
        .join(choice.dir_name());
    let mut w = MlxWriter::create(&out, &plan.output_tensors(), max_shard)?;
    for t in &sources {
        if plan.get(&t.name).is_none() {
            continue; // dropped: not even read
        }
        let data = model.read_f32_streaming(&t.name)?;
        for (name, bytes) in plan.encode(&t.name, &data)? {
            w.write_tensor(&name, &bytes)?;
        }
    }
    let written = w.finish(
        &plan.config_json(model.config()),
        plan.parameters(),
        model.tokenizer_files(),
    )?;
    println!(
        "{} bytes, {:.3} bits/weight",
        written.total_bytes,
        plan.bits_per_weight()
    );
    println!("{}", out.display());
    Ok(())
}
