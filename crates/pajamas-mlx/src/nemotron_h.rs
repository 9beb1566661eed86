//! NVIDIA Nemotron-H (`model_type: "nemotron_h"`) in mlx-lm's layout
//! (`mlx_lm.models.nemotron_h`, 0.32.2).
//!
//! The model keeps HF's `backbone.*` names: `backbone.embeddings`, one `norm` and one
//! `mixer` per block (Mamba-2, attention, relu^2 MLP or MoE), `backbone.norm_f` and an
//! untied `lm_head`. Its `sanitize`:
//!
//! - drops the multi-token-prediction head (`mtp.*`);
//! - moves Mamba's depthwise `conv1d.weight` from HF's `[C, 1, K]` to `[C, K, 1]` (the
//!   same bytes; [`crate::plan`] does it for every `conv1d.weight`);
//! - stacks `mixer.experts.E.up_proj` into `mixer.switch_mlp.fc1` and
//!   `mixer.experts.E.down_proj` into `mixer.switch_mlp.fc2` (`[E, out, in]`).
//!
//! Modules: the router `mixer.gate` is a plain module (`MoEGate`: `weight` and
//! `e_score_correction_bias`), not a Linear, so mlx never quantizes it; Mamba's `conv1d`
//! is a Conv1d and its `A_log`, `D`, `dt_bias` bare parameters of the mixer, all kept.
//! The class has no `quant_predicate`: every Linear (`in_proj`, `out_proj`, attention,
//! MLP, the stacked experts, the shared expert, the latent projections) and the
//! embedding are quantized when their input size is a multiple of the group size. Its
//! `cast_predicate` keeps `A_log` and `e_score_correction_bias` in their checkpoint dtype
//! when convert casts the model to `torch_dtype`.

use crate::names::{Mapped, ModuleKind};

/// Where one HF tensor of a Nemotron-H checkpoint goes; `None` for an unknown name.
pub fn map_name(hf: &str) -> Option<Mapped> {
    if hf.starts_with("mtp.") {
        return Some(Mapped::Drop(
            "multi-token-prediction head: mlx-lm's nemotron_h drops it (sanitize)",
        ));
    }
    if let Some((layer, rest)) = hf
        .strip_prefix("backbone.layers.")
        .and_then(|r| r.split_once('.'))
    {
        layer.parse::<u32>().ok()?;
        if let Some(e) = rest.strip_prefix("mixer.experts.") {
            let (expert, proj) = e.split_once('.')?;
            let fc = match proj {
                "up_proj.weight" => "fc1",
                "down_proj.weight" => "fc2",
                _ => return None,
            };
            return Some(Mapped::Expert {
                name: format!("backbone.layers.{layer}.mixer.switch_mlp.{fc}.weight"),
                expert: expert.parse().ok()?,
            });
        }
    }
    module_kind(hf).map(|_| Mapped::Keep(hf.to_string()))
}

/// Mixer modules by block kind, with their kind.
const MIXER_MODULES: &[(&str, ModuleKind)] = &[
    // Mamba-2
    ("in_proj", ModuleKind::Linear),
    ("out_proj", ModuleKind::Linear),
    ("conv1d", ModuleKind::Other),
    ("norm", ModuleKind::Norm),
    // attention
    ("q_proj", ModuleKind::Linear),
    ("k_proj", ModuleKind::Linear),
    ("v_proj", ModuleKind::Linear),
    ("o_proj", ModuleKind::Linear),
    // relu^2 MLP
    ("up_proj", ModuleKind::Linear),
    ("down_proj", ModuleKind::Linear),
    // MoE
    ("gate", ModuleKind::Other),
    ("switch_mlp.fc1", ModuleKind::Linear),
    ("switch_mlp.fc2", ModuleKind::Linear),
    ("shared_experts.up_proj", ModuleKind::Linear),
    ("shared_experts.down_proj", ModuleKind::Linear),
    ("fc1_latent_proj", ModuleKind::Linear),
    ("fc2_latent_proj", ModuleKind::Linear),
];

/// The kind of module an mlx-lm Nemotron-H parameter belongs to; `None` when the name is
/// not a parameter of the class.
pub fn module_kind(name: &str) -> Option<ModuleKind> {
    match name {
        "backbone.embeddings.weight" => return Some(ModuleKind::Embedding),
        "backbone.norm_f.weight" => return Some(ModuleKind::Norm),
        "lm_head.weight" => return Some(ModuleKind::Linear),
        _ => {}
    }
    let (layer, leaf) = name.strip_prefix("backbone.layers.")?.split_once('.')?;
    layer.parse::<u32>().ok()?;
    if leaf == "norm.weight" {
        return Some(ModuleKind::Norm);
    }
    let m = leaf.strip_prefix("mixer.")?;
    // The mixer's own parameters and the router's correction bias.
    if matches!(
        m,
        "A_log" | "D" | "dt_bias" | "gate.e_score_correction_bias"
    ) {
        return Some(ModuleKind::Other);
    }
    let (module, part) = m.rsplit_once('.')?;
    let kind = MIXER_MODULES
        .iter()
        .find(|(n, _)| *n == module)
        .map(|&(_, k)| k)?;
    match (kind, part) {
        (_, "weight") => Some(kind),
        // in/out_proj (mamba_proj_bias), attention (attention_bias), MLP (mlp_bias) and
        // conv1d (use_conv_bias) may carry biases.
        (ModuleKind::Linear | ModuleKind::Other, "bias") if module != "gate" => Some(kind),
        _ => None,
    }
}

/// Whether mlx-lm counts this parameter in `total_parameters`, which sums the
/// parameters of leaf modules: the mixer's `A_log`, `D` and `dt_bias` belong to a module
/// with children and are not counted; the router (`MoEGate`, a leaf) and `conv1d` are.
pub fn counts_as_parameter(name: &str) -> bool {
    !(name.ends_with(".mixer.A_log")
        || name.ends_with(".mixer.D")
        || name.ends_with(".mixer.dt_bias"))
}

/// The class's `cast_predicate`: parameters that keep their checkpoint dtype when
/// mlx_lm.convert casts the model to `torch_dtype`.
pub fn keeps_checkpoint_dtype(name: &str) -> bool {
    name.contains("A_log") || name.contains("e_score_correction_bias")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(hf: &str) -> String {
        match map_name(hf) {
            Some(Mapped::Keep(n)) => n,
            other => panic!("{hf}: {other:?}"),
        }
    }

    #[test]
    fn names_and_kinds() {
        for (n, k) in [
            ("backbone.embeddings.weight", ModuleKind::Embedding),
            ("backbone.layers.0.norm.weight", ModuleKind::Norm),
            ("backbone.layers.0.mixer.in_proj.weight", ModuleKind::Linear),
            ("backbone.layers.0.mixer.conv1d.weight", ModuleKind::Other),
            ("backbone.layers.0.mixer.conv1d.bias", ModuleKind::Other),
            ("backbone.layers.0.mixer.A_log", ModuleKind::Other),
            ("backbone.layers.0.mixer.norm.weight", ModuleKind::Norm),
            ("backbone.layers.2.mixer.o_proj.weight", ModuleKind::Linear),
            ("backbone.layers.1.mixer.gate.weight", ModuleKind::Other),
            (
                "backbone.layers.1.mixer.gate.e_score_correction_bias",
                ModuleKind::Other,
            ),
            (
                "backbone.layers.1.mixer.shared_experts.down_proj.weight",
                ModuleKind::Linear,
            ),
            ("backbone.norm_f.weight", ModuleKind::Norm),
            ("lm_head.weight", ModuleKind::Linear),
        ] {
            assert_eq!(keep(n), n);
            assert_eq!(module_kind(n), Some(k), "{n}");
        }
        assert_eq!(
            module_kind("backbone.layers.1.mixer.switch_mlp.fc2.weight"),
            Some(ModuleKind::Linear)
        );
        for bad in [
            "backbone.layers.0.mixer.bogus.weight",
            "backbone.layers.1.mixer.gate.bias",
            "backbone.layers.x.norm.weight",
            "model.layers.0.mixer.in_proj.weight",
            "backbone.layers.1.mixer.experts.0.gate_proj.weight",
        ] {
            assert_eq!(map_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn experts_stack_into_switch_mlp() {
        assert_eq!(
            map_name("backbone.layers.3.mixer.experts.5.up_proj.weight"),
            Some(Mapped::Expert {
                name: "backbone.layers.3.mixer.switch_mlp.fc1.weight".into(),
                expert: 5
            })
        );
        assert_eq!(
            map_name("backbone.layers.3.mixer.experts.0.down_proj.weight"),
            Some(Mapped::Expert {
                name: "backbone.layers.3.mixer.switch_mlp.fc2.weight".into(),
                expert: 0
            })
        );
        assert!(matches!(
            map_name("mtp.layers.0.norm.weight"),
            Some(Mapped::Drop(_))
        ));
    }

    #[test]
    fn parameters_and_dtypes() {
        assert!(!counts_as_parameter("backbone.layers.0.mixer.A_log"));
        assert!(!counts_as_parameter("backbone.layers.0.mixer.dt_bias"));
        assert!(counts_as_parameter("backbone.layers.0.mixer.conv1d.weight"));
        assert!(counts_as_parameter(
            "backbone.layers.1.mixer.gate.e_score_correction_bias"
        ));
        assert!(keeps_checkpoint_dtype("backbone.layers.0.mixer.A_log"));
        assert!(keeps_checkpoint_dtype(
            "backbone.layers.1.mixer.gate.e_score_correction_bias"
        ));
        assert!(!keeps_checkpoint_dtype("backbone.layers.0.mixer.D"));
    }
}
