//! `quantize llm`: HuggingFace checkpoint -> one or many GGUF files in one streaming pass.
//!
//! source -> detect -> plan -> write -> manifest. Every source tensor is read once,
//! transformed (rope permutation, Gemma norm offset), then quantized into each requested
//! file; only one tensor (and its quantized copies) is in memory at a time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use pajamas_arch::{detect, ArchitectureInfo};
use pajamas_convert::deepseek::{self, DeepseekLayout};
use pajamas_convert::from_gguf::config_from_gguf;
use pajamas_convert::gpt_oss;
use pajamas_convert::hybrid::{self, HybridLayout, HybridMap};
use pajamas_convert::metadata::{llama3_rope_factors, model_metadata, tokenizer_metadata};
use pajamas_convert::{
    gguf_arch_for, map_expert, map_name, read_vocab, sort_key, Transform, CONVERTIBLE,
};
use pajamas_gguf::{GgufFile, GgufWriter, Value};
use pajamas_model::{locate, CacheEnv, HfModel, ListedTensor, ModelLocation};
use pajamas_plan::{plan_gguf, Ftype, GgufPlan, Overrides, PlanInput, Rules};
use pajamas_quant::GgmlType;

use crate::manifest::{Artifact, Manifest};

/// Options of `quantize llm`.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    pub model: String,
    pub output: PathBuf,
    /// GGUF file types to write (empty: no GGUF output).
    pub ftypes: Vec<Ftype>,
    /// The MLX checkpoint to write, if any (HF sources only).
    pub mlx: Option<pajamas_mlx::MlxChoice>,
    pub rules: Rules,
    pub overrides: Overrides,
    pub pre_tokenizer: Option<String>,
    /// Importance matrix (llama.cpp GGUF or legacy `.dat`) weighting every quantized
    /// tensor's scale search.
    pub imatrix: Option<PathBuf>,
    /// A budgeted GGUF (`--target-bpw`, `--target-size`), written besides `ftypes`.
    pub budget: Option<pajamas_plan::budget::BudgetSpec>,
    pub dry_run: bool,
    /// With --dry-run: list every module of the MLX plan, also those kept as they are.
    pub verbose_plan: bool,
    pub force: bool,
    /// Show a progress bar (off for --json and when stderr is not a terminal).
    pub progress: bool,
}

/// Where each source tensor goes.
#[derive(Debug, Clone)]
struct SourceTensor {
    /// The source tensors it is made of, in order: one for most; one per expert for a
    /// stacked `*_exps` tensor (concatenated along the outermost dim); none for tensors
    /// we compute (rope_freqs).
    parts: Vec<String>,
    gguf: String,
    ne: Vec<u64>,
    transform: Tx,
    bytes: u64,
}

/// How a source tensor's values change on their way into GGUF.
#[derive(Debug, Clone, Copy)]
enum Tx {
    /// The dense and MoE families' transforms (`pajamas_convert::names`).
    Plain(Transform),
    /// The hybrid Mamba-2 families' (`pajamas_convert::hybrid`).
    Hybrid(hybrid::Op),
    /// gpt-oss's (`pajamas_convert::gpt_oss`); MXFP4 experts are copied natively.
    GptOss(gpt_oss::Op),
}

/// The result of a run: plans (always) and written files (unless dry-run).
#[derive(Debug, Serialize)]
pub struct QuantizeReport {
    pub model: String,
    pub architecture: ArchitectureInfo,
    pub plans: Vec<GgufPlan>,
    /// The MLX plan, when MLX output was requested.
    pub mlx_plan: Option<pajamas_mlx::MlxPlanSummary>,
    /// The MLX plan module by module (for --dry-run).
    #[serde(skip)]
    pub mlx_plan_text: Option<String>,
    /// Source tensors read (each at most once, whatever the number of outputs).
    pub tensors_read: usize,
    pub outputs: Vec<Artifact>,
    pub manifest: Option<PathBuf>,
}

fn model_name(input: &str, dir: &Path) -> String {
    let from_dir = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    // A hub snapshot folder is a commit hash: use the repo name instead.
    if input.contains('/') && !Path::new(input).exists() {
        input.rsplit('/').next().unwrap_or(&from_dir).to_string()
    } else {
        from_dir
    }
}

/// Lists the GGUF tensors of an HF checkpoint in file order.
fn source_tensors(model: &HfModel, arch: &ArchitectureInfo) -> Result<Vec<SourceTensor>> {
    let att = arch.attention.as_ref();
    let heads = att.map(|a| a.num_heads).unwrap_or(1);
    let kv = att.map(|a| a.num_kv_heads).unwrap_or(heads);
    let mut out = Vec::new();
    // Per-expert matrices, gathered into their stacked tensor: name -> (expert, tensor).
    let mut experts: BTreeMap<String, Vec<(u64, ListedTensor)>> = BTreeMap::new();
    let layout = arch.hybrid.as_ref().map(|h| HybridLayout {
        model_type: arch.model_type.clone(),
        heads,
        kv_heads: kv,
        ssm_groups: h.ssm.num_groups,
        has_experts: arch.moe.is_some(),
    });
    let deepseek = DeepseekLayout::from_arch(arch);
    for t in model.tensors() {
        let name = &t.info.name;
        if arch.tie_word_embeddings && name == "lm_head.weight" {
            continue; // stored twice by some checkpoints; GGUF keeps the embedding only
        }
        if gpt_oss::is_gpt_oss(&arch.model_type) {
            let shape_of = |n: &str| model.tensor(n).map(|i| i.shape.clone());
            let pieces = gpt_oss::map(name, &t.info.shape, &shape_of)
                .map_err(|e| anyhow!("{}: {e}", t.shard.display()))?
                .ok_or_else(|| {
                    anyhow!(
                        "{}: tensor '{name}' has no GGUF name for model_type 'gpt_oss'",
                        t.shard.display()
                    )
                })?;
            let share = t.info.nbytes() / pieces.len().max(1) as u64;
            for p in pieces {
                if !p.op.is_mxfp4() {
                    check_float(model, &t)?;
                }
                out.push(SourceTensor {
                    parts: p.parts,
                    gguf: p.gguf,
                    ne: p.ne,
                    transform: Tx::GptOss(p.op),
                    bytes: share,
                });
            }
            continue;
        }
        let family = match (&deepseek, layout.as_ref()) {
            (Some(d), _) => Some(deepseek::map_deepseek(name, &t.info.shape, d)),
            (None, Some(l)) if hybrid::is_hybrid(&l.model_type) => {
                Some(hybrid::map_hybrid(name, &t.info.shape, l))
            }
            _ => None,
        };
        if let Some(found) = family {
            match found {
                Some(HybridMap::Expert { gguf, expert }) => {
                    check_float(model, &t)?;
                    experts.entry(gguf).or_default().push((expert, t));
                }
                Some(HybridMap::Pieces(pieces)) if pieces.is_empty() => {} // not written
                Some(HybridMap::Pieces(pieces)) => {
                    check_float(model, &t)?;
                    // A split source (gate+up) counts once in the progress total.
                    let share = t.info.nbytes() / pieces.len().max(1) as u64;
                    for p in pieces {
                        out.push(SourceTensor {
                            parts: vec![name.clone()],
                            gguf: p.gguf,
                            ne: p.ne,
                            transform: Tx::Hybrid(p.op),
                            bytes: share,
                        });
                    }
                }
                None => bail!(
                    "{}: tensor '{name}' has no GGUF name for model_type '{}'; this checkpoint has a layout we do not convert yet",
                    t.shard.display(),
                    arch.model_type
                ),
            }
            continue;
        }
        if let Some((gguf, e)) = map_expert(name) {
            check_float(model, &t)?;
            experts.entry(gguf).or_default().push((e, t));
            continue;
        }
        let Some((gguf, transform)) = map_name(name, &arch.model_type, heads, kv) else {
            if name.ends_with("rotary_emb.inv_freq") {
                continue;
            }
            bail!(
                "{}: tensor '{name}' has no GGUF name for model_type '{}'; this checkpoint has a layout we do not convert yet",
                t.shard.display(),
                arch.model_type
            );
        };
        check_float(model, &t)?;
        let ne: Vec<u64> = t.info.shape.iter().rev().copied().collect();
        out.push(SourceTensor {
            parts: vec![name.clone()],
            gguf,
            ne,
            transform: Tx::Plain(transform),
            bytes: t.info.nbytes(),
        });
    }
    for (gguf, mut list) in experts {
        list.sort_by_key(|(e, _)| *e);
        let n = list.len() as u64;
        if let Some(i) = list
            .iter()
            .enumerate()
            .position(|(i, (e, _))| *e != i as u64)
        {
            bail!(
                "{}: experts of '{gguf}' are not numbered 0..{n}: expert {i} is missing; the checkpoint is incomplete",
                model.dir().display()
            );
        }
        let shape = &list[0].1.info.shape;
        if let Some((_, t)) = list.iter().find(|(_, t)| &t.info.shape != shape) {
            bail!(
                "{}: tensor '{}' has shape {:?}, the other experts of '{gguf}' {shape:?}",
                t.shard.display(),
                t.info.name,
                t.info.shape
            );
        }
        let mut ne: Vec<u64> = shape.iter().rev().copied().collect();
        ne.push(n);
        out.push(SourceTensor {
            parts: list.iter().map(|(_, t)| t.info.name.clone()).collect(),
            gguf,
            ne,
            transform: Tx::Plain(Transform::None),
            bytes: list.iter().map(|(_, t)| t.info.nbytes()).sum(),
        });
    }
    out.sort_by_key(|t| sort_key(&t.gguf));
    for pair in out.windows(2) {
        if pair[0].gguf == pair[1].gguf {
            bail!("two source tensors map to '{}'", pair[0].gguf);
        }
    }
    Ok(out)
}

fn check_float(model: &HfModel, t: &ListedTensor) -> Result<()> {
    if !model.reads_as_f32(&t.info.name) {
        bail!(
            "{}: tensor '{}' is {}; only F32/F16/BF16 and block-scaled FP8 checkpoints convert today",
            t.shard.display(),
            t.info.name,
            t.info.dtype
        );
    }
    Ok(())
}

fn check_values(name: &str, data: &[f32]) -> Result<()> {
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        bail!(
            "tensor '{name}' holds a non-finite value ({}) at element {i}; the checkpoint is corrupt or was saved after a diverged training step",
            data[i]
        );
    }
    Ok(())
}

/// Where tensors come from: an HF checkpoint (converted) or a GGUF (requantized).
enum Source {
    Hf(HfModel),
    Gguf(GgufFile),
}

impl Source {
    /// One tensor as f32, in GGUF layout (transforms applied). `raw` sees the values as
    /// stored in the source first (HF layout, for the MLX writer).
    fn read(
        &self,
        t: &SourceTensor,
        computed: Option<&Vec<f32>>,
        cache: &mut RawCache,
        raw_sink: &mut dyn FnMut(&str, &[f32]) -> Result<()>,
    ) -> Result<Vec<f32>> {
        match (self, t.parts.as_slice()) {
            (_, []) => Ok(computed.cloned().expect("computed tensors are precomputed")),
            (Source::Hf(model), [hf]) => {
                let raw = cache.get(hf, || {
                    let raw = model.read_f32_streaming(hf)?;
                    check_values(hf, &raw)?;
                    raw_sink(hf, &raw)?;
                    Ok(raw)
                })?;
                Ok(match t.transform {
                    Tx::Plain(tr) => {
                        let rows: u64 = t.ne.iter().skip(1).product();
                        pajamas_convert::names::apply(tr, raw, rows as usize, t.ne[0] as usize)
                    }
                    Tx::Hybrid(op) => hybrid::apply(op, raw, &t.ne),
                    Tx::GptOss(op) => {
                        let shape = &model.tensor(hf).expect("listed").shape;
                        gpt_oss::apply(op, raw, shape)
                    }
                })
            }
            (Source::Hf(model), experts) => {
                // A stacked expert tensor: the experts' matrices one after the other.
                let mut data = Vec::with_capacity(t.ne.iter().product::<u64>() as usize);
                for hf in experts {
                    let raw = model.read_f32_streaming(hf)?;
                    check_values(hf, &raw)?;
                    raw_sink(hf, &raw)?;
                    data.extend_from_slice(&raw);
                }
                Ok(data)
            }
            (Source::Gguf(file), [name]) => {
                let info = file.tensor(name).expect("listed from this file");
                let bytes = file.data_of(info)?;
                let data = pajamas_quant::dequantize_rows(info.ggml_type, bytes, t.ne[0] as usize)
                    .map_err(|e| anyhow!("{}: tensor '{name}': {e}", file.path().display()))?;
                check_values(name, &data)?;
                Ok(data)
            }
            (Source::Gguf(_), _) => unreachable!("a GGUF tensor is read as itself"),
        }
    }
}

/// Source tensors that feed more than one GGUF tensor (Granite's fused gate+up
/// `input_linear`, split in two): read once, held until their last use.
struct RawCache {
    remaining: HashMap<String, usize>,
    held: HashMap<String, Vec<f32>>,
}

impl RawCache {
    fn new(tensors: &[SourceTensor]) -> Self {
        let mut remaining = HashMap::new();
        for t in tensors {
            if let [one] = t.parts.as_slice() {
                *remaining.entry(one.clone()).or_insert(0) += 1;
            }
        }
        RawCache {
            remaining,
            held: HashMap::new(),
        }
    }

    /// The values of `name`, from `read` the first time, then from memory.
    fn get(&mut self, name: &str, read: impl FnOnce() -> Result<Vec<f32>>) -> Result<Vec<f32>> {
        let left = match self.remaining.get_mut(name) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        let held = if left == 0 {
            self.held.remove(name)
        } else {
            self.held.get(name).cloned()
        };
        if let Some(v) = held {
            return Ok(v);
        }
        let v = read()?;
        if left > 0 {
            self.held.insert(name.to_string(), v.clone());
        }
        Ok(v)
    }
}

/// Runs `quantize llm --formats gguf`.
pub fn quantize_gguf(opts: &QuantizeOptions) -> Result<QuantizeReport> {
    let (source, dir, arch, mut tensors, mut meta, name) = match locate(
        &opts.model,
        &CacheEnv::from_process(),
    )? {
        ModelLocation::HfFolder(dir) => {
            let model = HfModel::open(&dir)?;
            let arch = detect(model.config())
                .with_context(|| dir.join("config.json").display().to_string())?;
            let arch_name = gguf_arch_for(&arch).ok_or_else(|| {
                anyhow!(
                    "{}: converting model_type '{}' to GGUF is not supported yet (supported: {})",
                    dir.display(),
                    arch.model_type,
                    CONVERTIBLE.join(", ")
                )
            })?;
            let tensors = source_tensors(&model, &arch)?;
            let name = model_name(&opts.model, &dir);
            let mut meta = model_metadata(arch_name, &arch, model.config(), &name);
            if gpt_oss::is_gpt_oss(&arch.model_type) {
                gpt_oss::metadata(&mut meta, arch_name, model.config(), arch.num_layers)
                    .map_err(|e| anyhow!("{}: {e}", dir.join("config.json").display()))?;
            }
            // The budget's header estimate needs the vocabulary even in a dry run.
            if !opts.dry_run || opts.budget.is_some() {
                let vocab = read_vocab(
                    &dir,
                    model.config(),
                    arch.vocab_size,
                    opts.pre_tokenizer.as_deref(),
                )?;
                meta.extend(tokenizer_metadata(&vocab));
            }
            (Source::Hf(model), dir, arch, tensors, meta, name)
        }
        ModelLocation::Gguf(path) => {
            let file = GgufFile::open(&path)?;
            let config = config_from_gguf(&file).ok_or_else(|| {
                anyhow!(
                    "{}: no general.architecture key; not a model GGUF",
                    path.display()
                )
            })?;
            let arch = detect(&config).with_context(|| format!("{}: metadata", path.display()))?;
            if file.tensors().iter().any(|t| t.ggml_type.is_quantized()) {
                eprintln!(
                    "warning: {} is already quantized: requantizing compounds the errors of both quantizations. \
                     For the best quality, quantize from the original HuggingFace checkpoint.",
                    path.display()
                );
            }
            let tensors = file
                .tensors()
                .iter()
                .map(|t| SourceTensor {
                    parts: vec![t.name.clone()],
                    gguf: t.name.clone(),
                    ne: t.dims.clone(),
                    transform: Tx::Plain(Transform::None),
                    bytes: t.nbytes,
                })
                .collect();
            let meta = file
                .metadata()
                .iter()
                .filter(|e| {
                    !matches!(
                        e.key.as_str(),
                        "general.file_type" | "general.quantization_version"
                    ) && !e.key.starts_with("quantize.")
                        && !e.key.starts_with("split.")
                })
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect();
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let name = strip_precision_suffix(&stem);
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            (Source::Gguf(file), dir, arch, tensors, meta, name)
        }
    };
    let head_dim = arch.attention.as_ref().map(|a| a.head_dim).unwrap_or(0);
    let rope_freqs = match &source {
        Source::Hf(model) if arch.model_type == "llama" || arch.model_type == "mistral" => {
            llama3_rope_factors(model.config(), head_dim)
        }
        _ => None,
    };
    if let Some(f) = &rope_freqs {
        tensors.push(SourceTensor {
            parts: vec![],
            gguf: "rope_freqs.weight".into(),
            ne: vec![f.len() as u64],
            transform: Tx::Plain(Transform::None),
            bytes: 0,
        });
        tensors.sort_by_key(|t| sort_key(&t.gguf));
    }
    let inputs: Vec<PlanInput> = tensors
        .iter()
        .map(|t| PlanInput {
            name: t.gguf.clone(),
            ne: t.ne.clone(),
        })
        .collect();
    let imatrix = match &opts.imatrix {
        Some(p) => Some(load_imatrix(p, &tensors)?),
        None => None,
    };
    let mut plans = opts
        .ftypes
        .iter()
        .map(|&f| {
            plan_gguf(
                &inputs,
                &arch,
                f,
                opts.rules,
                &opts.overrides,
                imatrix.is_some(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    for t in tensors.iter().filter(|t| is_native_mxfp4(t)) {
        for plan in plans.iter_mut() {
            pajamas_plan::keep_source_type(plan, &t.gguf, GgmlType::MXFP4, &opts.overrides);
        }
    }
    meta.retain(|(k, _)| k != "general.name");
    meta.insert(1, ("general.name".into(), Value::String(name.clone())));
    if let Some(spec) = opts.budget {
        let sizing = |plan: &GgufPlan| -> u64 {
            let full = file_metadata(&meta, plan, imatrix.as_ref().zip(opts.imatrix.as_deref()));
            let infos: Vec<(&str, usize)> = plan
                .tensors
                .iter()
                .map(|t| (t.name.as_str(), t.ne.len()))
                .collect();
            pajamas_gguf::size::header_size(&full, &infos)
        };
        let plan = crate::budget::budget_plan(
            spec,
            &inputs,
            &arch,
            opts,
            imatrix.as_ref(),
            &sizing,
            &mut |i| {
                let mut cache = RawCache::new(&tensors[i..=i]);
                source.read(&tensors[i], rope_freqs.as_ref(), &mut cache, &mut |_, _| {
                    Ok(())
                })
            },
        )?;
        plans.push(plan);
    }
    if imatrix.is_none() && !opts.dry_run {
        for plan in &plans {
            if let Some(t) = plan.needs_imatrix() {
                bail!(
                    "{}: tensor '{}' would be {} and this type needs an importance matrix (as in llama-quantize); \
                     pass --imatrix FILE (make one with `llama-pajamas-quant imatrix --model M --calibration TEXT --output FILE`) \
                     or use `llama-pajamas-quant iq quantize --calibration TEXT`",
                    plan.ftype,
                    t.name,
                    t.ty
                );
            }
        }
    }
    let mlx_plan = match (&opts.mlx, &source) {
        (None, _) => None,
        (Some(choice), Source::Hf(model)) => {
            let sources: Vec<pajamas_mlx::SourceTensor> = model
                .tensors()
                .map(|t| pajamas_mlx::SourceTensor {
                    name: t.info.name.clone(),
                    shape: t.info.shape.clone(),
                    dtype: t.info.dtype,
                })
                .collect();
            Some(
                pajamas_mlx::plan_mlx(&sources, model.config(), &arch, *choice)
                    .with_context(|| format!("planning MLX output for {}", dir.display()))?,
            )
        }
        (Some(_), Source::Gguf(f)) => bail!(
            "{}: MLX output needs the HuggingFace checkpoint (a GGUF's quantized weights would be quantized twice); pass the HF folder as --model",
            f.path().display()
        ),
    };
    if opts.dry_run {
        return Ok(QuantizeReport {
            model: name,
            architecture: arch,
            plans,
            mlx_plan: mlx_plan.as_ref().map(|p| p.summary()),
            mlx_plan_text: mlx_plan.as_ref().map(|p| p.render(opts.verbose_plan)),
            tensors_read: 0,
            outputs: Vec::new(),
            manifest: None,
        });
    }

    // Outputs: refuse to write inside the source or over existing files.
    let out_root = absolute(&opts.output)?;
    let src_root = absolute(&dir)?;
    if matches!(source, Source::Hf(_)) && out_root.starts_with(&src_root) {
        bail!(
            "output folder {} is inside the source model folder {}; choose another --output (we never write into the input)",
            out_root.display(),
            src_root.display()
        );
    }

    let mut writers = Vec::with_capacity(plans.len());
    for plan in &plans {
        let path = out_root
            .join("gguf")
            .join(plan.precision_name())
            .join(format!("{name}-{}.gguf", plan.precision_name()));
        if let Source::Gguf(f) = &source {
            if absolute(&path).ok().as_deref() == f.path().canonicalize().ok().as_deref() {
                bail!(
                    "{} is the input file; choose another --output",
                    path.display()
                );
            }
        }
        if path.exists() && !opts.force {
            bail!("{} exists; pass --force to overwrite it", path.display());
        }
        std::fs::create_dir_all(path.parent().expect("has parent"))
            .with_context(|| format!("creating {}", path.parent().unwrap().display()))?;
        let mut w = GgufWriter::create(&path)?;
        for (k, v) in file_metadata(&meta, plan, imatrix.as_ref().zip(opts.imatrix.as_deref())) {
            w.add_metadata(&k, v)?;
        }
        for t in &plan.tensors {
            w.add_tensor_info(&t.name, &t.ne, t.ty)?;
        }
        w.begin_data()?;
        writers.push(w);
    }

    let mlx_dir = mlx_plan
        .as_ref()
        .map(|p| out_root.join("mlx").join(p.choice.dir_name()));
    let mut mlx_writer = match (&mlx_plan, &mlx_dir) {
        (Some(p), Some(d)) => {
            if d.join("config.json").exists() && !opts.force {
                bail!("{} exists; pass --force to overwrite it", d.display());
            }
            Some(pajamas_mlx::MlxWriter::create(
                d,
                &p.output_tensors(),
                pajamas_mlx::DEFAULT_MAX_SHARD_BYTES,
            )?)
        }
        _ => None,
    };

    let total_bytes: u64 = tensors.iter().map(|t| t.bytes).sum();
    let bar = if opts.progress {
        let b = ProgressBar::new(total_bytes);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta}) {msg}",
            )
            .expect("static template"),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let tensors_read = tensors
        .iter()
        .flat_map(|t| t.parts.iter())
        .collect::<HashSet<_>>()
        .len();
    let mut cache = RawCache::new(&tensors);
    for t in &tensors {
        bar.set_message(t.gguf.clone());
        let mut to_mlx = |hf: &str, raw: &[f32]| -> Result<()> {
            if let (Some(p), Some(w)) = (&mlx_plan, mlx_writer.as_mut()) {
                if p.get(hf).is_some() {
                    for (out, bytes) in p.encode(hf, raw)? {
                        w.write_tensor(&out, &bytes)?;
                    }
                }
            }
            Ok(())
        };
        // gpt-oss MXFP4 experts: the checkpoint's blocks, repacked; f32 for other types.
        let native = match (&source, t.transform) {
            (Source::Hf(model), Tx::GptOss(op)) if op.is_mxfp4() => {
                if matches!(op, gpt_oss::Op::Mxfp4 { offset: 0, .. }) {
                    // The MLX writer gets the whole checkpoint tensor decoded, once.
                    let all = gpt_oss::Op::Mxfp4 {
                        offset: 0,
                        stride: 1,
                    };
                    let bytes = read_native_mxfp4(model, t, all)?;
                    let values =
                        pajamas_quant::dequantize_rows(GgmlType::MXFP4, &bytes, t.ne[0] as usize)
                            .map_err(|e| anyhow!("tensor '{}': {e}", t.parts[0]))?;
                    to_mlx(&t.parts[0], &values)?;
                }
                Some(read_native_mxfp4(model, t, op)?)
            }
            _ => None,
        };
        let data = match &native {
            Some(bytes) => pajamas_quant::dequantize_rows(GgmlType::MXFP4, bytes, t.ne[0] as usize)
                .map_err(|e| anyhow!("tensor '{}': {e}", t.gguf))?,
            None => source.read(t, rope_freqs.as_ref(), &mut cache, &mut to_mlx)?,
        };
        let importance = imatrix.as_ref().and_then(|im| im.importance(&t.gguf));
        for (w, plan) in writers.iter_mut().zip(&plans) {
            let planned = plan.get(&t.gguf).expect("planned");
            if let (Some(bytes), GgmlType::MXFP4) = (&native, planned.ty) {
                w.write_tensor(&t.gguf, bytes)?;
                continue;
            }
            let bytes = encode(planned.ty, &data, t.ne[0] as usize, importance.as_deref())
                .with_context(|| format!("quantizing '{}' to {}", t.gguf, planned.ty))?;
            w.write_tensor(&t.gguf, &bytes)?;
        }
        bar.inc(t.bytes);
    }
    bar.finish_and_clear();
    let mut outputs = Vec::new();
    for (w, plan) in writers.into_iter().zip(&plans) {
        let path = w.finish()?;
        let size = std::fs::metadata(&path)?.len();
        outputs.push(Artifact::gguf(
            &out_root,
            &path,
            size,
            plan,
            started.elapsed().as_secs_f64(),
        ));
    }
    if let (Some(p), Some(w), Source::Hf(model)) = (&mlx_plan, mlx_writer, &source) {
        let written = w.finish(
            &p.config_json(model.config()),
            p.parameters(),
            model.tokenizer_files(),
        )?;
        outputs.push(Artifact::mlx(
            &out_root,
            &written,
            p,
            started.elapsed().as_secs_f64(),
        ));
    }
    let manifest = Manifest::update(&out_root, &name, &arch, &outputs)?;
    Ok(QuantizeReport {
        model: name,
        architecture: arch,
        plans,
        mlx_plan: mlx_plan.as_ref().map(|p| p.summary()),
        mlx_plan_text: None,
        tensors_read,
        outputs,
        manifest: Some(manifest),
    })
}

/// The metadata of one output file: the model's, then the quantization keys.
fn file_metadata(
    meta: &[(String, Value)],
    plan: &GgufPlan,
    imatrix: Option<(&pajamas_imatrix::Imatrix, &Path)>,
) -> Vec<(String, Value)> {
    let mut m = meta.to_vec();
    if plan.tensors.iter().any(|t| t.ty.is_quantized()) {
        m.push(("general.quantization_version".into(), Value::U32(2)));
    }
    m.push(("general.file_type".into(), Value::U32(plan.ftype.id())));
    m.push((
        "quantize.rules".into(),
        Value::String(plan.rules.name().into()),
    ));
    if let Some(b) = &plan.budget {
        m.push(("quantize.budget".into(), Value::String(b.label.clone())));
    }
    if let Some((im, p)) = imatrix {
        for (k, v) in imatrix_metadata(im, p) {
            m.push((k.to_string(), v));
        }
    }
    m
}

/// Whether `t` is an MXFP4 tensor of the checkpoint, copied without requantization.
fn is_native_mxfp4(t: &SourceTensor) -> bool {
    matches!(t.transform, Tx::GptOss(op) if op.is_mxfp4())
}

/// The ggml MXFP4 bytes of a gpt-oss `*_blocks` / `*_scales` pair.
fn read_native_mxfp4(model: &HfModel, t: &SourceTensor, op: gpt_oss::Op) -> Result<Vec<u8>> {
    let [blocks, scales] = t.parts.as_slice() else {
        bail!("'{}': MXFP4 needs a blocks and a scales tensor", t.gguf);
    };
    let shape = &model.tensor(blocks).expect("listed").shape;
    let b = model.read_bytes(blocks)?;
    let s = model.read_bytes(scales)?;
    gpt_oss::mxfp4(op, &b, &s, shape).map_err(|e| {
        anyhow!(
            "{}: tensors '{blocks}' / '{scales}': {e}",
            model.dir().display()
        )
    })
}

/// `SmolLM2-Q4_K_M` -> `SmolLM2`: the name of a requantized file without its old type.
fn strip_precision_suffix(stem: &str) -> String {
    for f in pajamas_plan::ALL_FTYPES {
        for sep in ['-', '.', '_'] {
            let suffix = format!("{sep}{}", f.name());
            if stem.len() > suffix.len()
                && stem
                    .to_ascii_uppercase()
                    .ends_with(&suffix.to_ascii_uppercase())
            {
                return stem[..stem.len() - suffix.len()].to_string();
            }
        }
    }
    stem.to_string()
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.exists() {
        return Ok(p.canonicalize()?);
    }
    Ok(std::env::current_dir()?.join(p))
}

/// A tensor's bytes in `ty`: rows of `n_per_row` values, with per-column importance
/// when an imatrix covers the tensor (ignored by the float types).
fn encode(
    ty: GgmlType,
    data: &[f32],
    n_per_row: usize,
    importance: Option<&[f32]>,
) -> Result<Vec<u8>> {
    let importance = importance.filter(|_| ty.is_quantized());
    match importance {
        // A stacked expert tensor's imatrix entry has one vector per expert: each
        // expert's matrix is quantized with its own (llama-quantize does the same).
        Some(imp) if imp.len() > n_per_row && imp.len().is_multiple_of(n_per_row) => {
            let n_mat = imp.len() / n_per_row;
            if !data.len().is_multiple_of(n_mat) {
                bail!(
                    "{} values do not split into the imatrix's {n_mat} matrices",
                    data.len()
                );
            }
            let per_mat = data.len() / n_mat;
            let mut out = Vec::new();
            for (m, w) in data.chunks_exact(per_mat).zip(imp.chunks_exact(n_per_row)) {
                out.extend(
                    pajamas_quant::quantize_rows(ty, m, n_per_row, Some(w))
                        .map_err(|e| anyhow!("{e}"))?,
                );
            }
            Ok(out)
        }
        _ => pajamas_quant::quantize_rows(ty, data, n_per_row, importance)
            .map_err(|e| anyhow!("{e}")),
    }
}

/// Reads an imatrix and checks it against the tensors to be written: every matrix of
/// the decoder blocks must have an entry of the right length, and every entry must name
/// one of our tensors. `token_embd` (a lookup), `output` (collected only with
/// `--process-output`) and Mamba-2's 2-D parameters that no product reads may lack one,
/// as with llama-quantize.
fn load_imatrix(path: &Path, tensors: &[SourceTensor]) -> Result<pajamas_imatrix::Imatrix> {
    let im = pajamas_imatrix::Imatrix::read(path)?;
    let matrices: Vec<(&str, usize, usize)> = tensors
        .iter()
        // Weights only: gpt-oss's stacked expert biases are 2-D too.
        .filter(|t| t.ne.len() >= 2 && t.gguf.ends_with(".weight"))
        .map(|t| {
            (
                t.gguf.as_str(),
                t.ne[0] as usize,
                t.ne.get(2).copied().unwrap_or(1) as usize,
            )
        })
        .collect();
    let report = im.check_against(matrices.iter().copied())?;
    let missing: Vec<&String> = report
        .missing
        .iter()
        .filter(|n| n.starts_with("blk.") && crate::imatrix_hybrid::is_product_weight(n))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{}: the imatrix has no entry for {} of this model's weights (e.g. {}); it was computed for another model. Compute one with `llama-pajamas-quant imatrix --model MODEL --calibration TEXT --output FILE`",
            path.display(),
            missing.len(),
            missing.iter().take(3).map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    if !report.unused.is_empty() {
        bail!(
            "{}: the imatrix has entries for {} weights this model does not have (e.g. {}); it was computed for another model",
            path.display(),
            report.unused.len(),
            report.unused.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(im)
}

/// The `quantize.imatrix.*` keys llama-quantize records.
fn imatrix_metadata(im: &pajamas_imatrix::Imatrix, path: &Path) -> Vec<(&'static str, Value)> {
    let mut m = vec![(
        "quantize.imatrix.file",
        Value::String(path.display().to_string()),
    )];
    if let Some(d) = im.datasets.first() {
        m.push(("quantize.imatrix.dataset", Value::String(d.clone())));
    }
    m.push((
        "quantize.imatrix.entries_count",
        Value::U32(im.entries.len() as u32),
    ));
    if im.chunk_count > 0 {
        m.push(("quantize.imatrix.chunks_count", Value::U32(im.chunk_count)));
    }
    m
}
