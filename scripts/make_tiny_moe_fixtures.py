#!/usr/bin/env python3
"""Build the tiny random-weight MoE and hybrid checkpoints in tests/fixtures/tiny-<family>/.

The Mixture-of-Experts and hybrid Mamba-2 counterparts of scripts/make_tiny_fixtures.py
(which builds the dense ones and is not changed by this script): one checkpoint per
family, built by transformers itself from a config shrunk from the real one in
data/configs/ (or data/configs-extra/ for Granite 4.0-H), same keys and layer pattern,
tiny sizes, random weights with fixed seeds:

  tiny-qwen3_moe        Qwen3MoeForCausalLM: 8 experts top-2, norm_topk_prob, q/k norms,
                        head_dim 32 != hidden/heads, all layers sparse (mlp_only_layers [],
                        decoder_sparse_step 1, as in Qwen3-30B-A3B), untied lm_head
  tiny-mixtral          MixtralForCausalLM: 4 experts top-2, per-expert w1/w2/w3 tensors
                        under block_sparse_moe, untied
  tiny-qwen2_moe        Qwen2MoeForCausalLM: 4 experts top-2, norm_topk_prob false, shared
                        expert (4x an expert's width) with its sigmoid shared_expert_gate,
                        q/k/v biases, untied
  tiny-granitemoehybrid GraniteMoeHybridForCausalLM (Granite 4.0-H Tiny/Small style):
                        layers mamba, mamba, attention, mamba; every layer has 4 experts
                        top-2 plus the dense shared MLP; NoPE attention; Mamba-2 with 4
                        heads of 32, state 16, 1 group; embedding/attention/residual/logit
                        multipliers != 1; tied embeddings
  tiny-granitemoehybrid-dense
                        the same without experts (Granite 4.0-H Micro style:
                        num_local_experts 0, only the shared MLP)
  tiny-deepseek_v3      DeepseekV3ForCausalLM: MLA (q_lora 64, kv_lora 32, nope 32, rope 16,
                        v 32), layer 0 dense (first_k_dense_replace 1), layer 1 with 8
                        routed experts top-2 in 4 groups (topk_group 2), sigmoid scores with
                        e_score_correction_bias, 1 shared expert, routed_scaling_factor 2.5,
                        YaRN rope as in the real config (factor 40, mscale_all_dim 1), untied
  tiny-deepseek_v2      DeepseekV2ForCausalLM, V2-Lite style: MLA without a query LoRA
                        (q_lora_rank null: a plain q_proj), kv_lora 32, nope 32, rope 16,
                        v 32, layer 0 dense, layer 1 with 8 routed experts top-2 (greedy,
                        softmax scores, not renormalised, routed_scaling_factor 1), 2 shared
                        experts, YaRN rope with mscale = mscale_all_dim = 0.707 as in
                        V2-Lite's config, untied
  tiny-gpt_oss          GptOssForCausalLM: 4 experts top-2 with biases, fused and interleaved
                        gate_up_proj, swiglu clamp 7, attention sinks, q/k/v/o biases,
                        sliding (window 8) then full attention, YaRN rope as in the real
                        config, untied; weights in float32
  tiny-gpt_oss-mxfp4    the same model with its experts as the published checkpoint stores
                        them: *_blocks / *_scales (MXFP4: FP4 E2M1 codes, E8M0 scales per 32
                        values) and the mxfp4 quantization_config; the reference logits are
                        those of the MXFP4-rounded experts
  tiny-nemotron_h       NemotronHForCausalLM: pattern "ME*E" (Mamba-2, MoE, attention, MoE),
                        Mamba-2 with 4 heads of 32, state 16, 2 groups (grouped gated norm),
                        8 relu^2 experts top-2 + 1 shared expert, sigmoid router with
                        e_score_correction_bias, routed_scaling_factor 2.5, untied

Common shape: hidden 64, 4 query heads / 2 KV heads (MLA: 4/4), 2 layers (hybrids: 4),
vocab 4096 (the demo tokenizer's). Every matrix's row length is a multiple of 32.

Folders are written like the dense fixtures: save_pretrained (float32 safetensors, HF tensor
names in the checkpoint layout transformers writes, i.e. per-expert tensors for
Qwen/Mixtral/DeepSeek/Nemotron, stacked tensors for Granite and GPT-OSS), the demo
tokenizer, reference_ids.json (the same 32 ids as the dense fixtures) and
reference_logits.npy (transformers, eval mode, eager attention, no cache).

config.json is what save_pretrained writes, except where transformers 5 rewrites a key
that real checkpoints of the family spell differently; there the real spelling is put
back and the folder is checked to reload to bit-identical logits:
  granitemoehybrid: layer_types "mamba"/"attention" (transformers 5 writes
                    "linear_attention"/"full_attention", which llama.cpp's converter
                    does not recognise), no time_step_limit (written as
                    [0.0, {"__float__": "Infinity"}], absent from the real configs)
  nemotron_h:       hybrid_override_pattern "ME*E" instead of layers_block_type, no
                    mtp_layers_block_type, no time_step_limit
  qwen3_moe:        num_experts (transformers 5 writes num_local_experts)

Weights (see init_weights): as in make_tiny_fixtures.py, N(0, gain^2/fan_in) matrices,
norms around 1, biases N(0, 0.5^2), embeddings N(0, 0.4^2); in addition routers with gain
3 (routing far from uniform: the top expert's probability is well above the others'),
e_score_correction_bias N(0, 0.3^2) (changes which experts are picked), attention sinks
N(0, 1), Mamba A_log = log U(1, 16), dt_bias = softplus^-1 of a log-uniform dt in
[1e-3, 1e-1], D ~ U(0.5, 1.5), conv1d N(0, 1/4); GPT-OSS gate_up gain 2.5 so that the
swiglu clamp at 7 is reached by some activations; Granite output projections scaled so
that each block moves the residual stream despite residual_multiplier 0.22.

Run it with the venv of scripts/train_demo_model.py:

    ~/.cache/llama-pajamas/train-venv/bin/python scripts/make_tiny_moe_fixtures.py [--only FAMILY ...]

Under a minute on two cores (the Mamba layers run transformers' reference PyTorch path).
Seeds are fixed, so a rerun with the same torch/transformers versions writes the same files.
"""
import argparse
import json
import math
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors import safe_open
from transformers import (
    AutoModelForCausalLM,
    DeepseekV2Config,
    DeepseekV3Config,
    GptOssConfig,
    GraniteMoeHybridConfig,
    MixtralConfig,
    NemotronHConfig,
    Qwen2MoeConfig,
    Qwen3MoeConfig,
)
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_tiny_fixtures import (  # noqa: E402  (same ids, tokenizer and checks as the dense ones)
    DEMO,
    IDS_SEED,
    N_IDS,
    OUT,
    TOKENIZER_FILES,
    VOCAB,
    logits_of,
    wait_for_tokenizer,
)

SPECIAL = dict(bos_token_id=0, eos_token_id=0, pad_token_id=0)
ATTN = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, attention_dropout=0.0)

GRANITE_OUT = 2.0  # see init_weights
GRANITE_LAYERS = ["mamba", "mamba", "attention", "mamba"]
GRANITE = dict(
    vocab_size=VOCAB, **ATTN, **SPECIAL,
    num_hidden_layers=4, layer_types=GRANITE_LAYERS, max_position_embeddings=256,
    position_embedding_type="nope", attention_bias=False, hidden_act="silu",
    rms_norm_eps=1e-5, tie_word_embeddings=True,
    # mup-style multipliers as Granite checkpoints have them (attention_multiplier
    # 1/head_dim instead of 1/sqrt(head_dim)); the defaults would all be 1.
    embedding_multiplier=12.0, attention_multiplier=1.0 / 16, residual_multiplier=0.22,
    logits_scaling=2.0,
    mamba_n_heads=4, mamba_d_head=32, mamba_d_state=16, mamba_n_groups=1, mamba_d_conv=4,
    mamba_expand=2, mamba_chunk_size=256, mamba_conv_bias=True, mamba_proj_bias=False,
)


def gpt_oss_config():
    return GptOssConfig(
        vocab_size=VOCAB, **ATTN, head_dim=32, eos_token_id=0, pad_token_id=0,
            num_hidden_layers=2, intermediate_size=64, num_local_experts=4, num_experts_per_tok=2,
            layer_types=["sliding_attention", "full_attention"], sliding_window=8,
            max_position_embeddings=131072,
            rope_parameters=dict(rope_type="yarn", rope_theta=150000.0, factor=32.0,
                                 original_max_position_embeddings=4096, beta_fast=32.0,
                                 beta_slow=1.0, truncate=False),
            swiglu_limit=7.0, attention_bias=True, rms_norm_eps=1e-5, router_aux_loss_coef=0.9,
            tie_word_embeddings=False)


def configs():
    """family -> (config, seed, options)."""
    return {
        "qwen3_moe": (Qwen3MoeConfig(
            vocab_size=VOCAB, **ATTN, **SPECIAL, head_dim=32, num_hidden_layers=2,
            intermediate_size=128, moe_intermediate_size=32, num_experts=8, num_experts_per_tok=2,
            norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
            max_position_embeddings=256, max_window_layers=2, rope_theta=1e6, rms_norm_eps=1e-6,
            attention_bias=False, use_sliding_window=False, sliding_window=None,
            router_aux_loss_coef=0.001, tie_word_embeddings=False), 11, {}),
        "mixtral": (MixtralConfig(
            vocab_size=VOCAB, **ATTN, **SPECIAL, num_hidden_layers=2, intermediate_size=64,
            num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=256,
            rope_theta=1e6, rms_norm_eps=1e-5, sliding_window=None, router_aux_loss_coef=0.02,
            tie_word_embeddings=False), 12, {}),
        "qwen2_moe": (Qwen2MoeConfig(
            vocab_size=VOCAB, **ATTN, **SPECIAL, num_hidden_layers=2, intermediate_size=128,
            moe_intermediate_size=32, shared_expert_intermediate_size=128, num_experts=4,
            num_experts_per_tok=2, norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[],
            qkv_bias=True, max_position_embeddings=256, max_window_layers=2, rope_theta=1e6,
            rms_norm_eps=1e-6, use_sliding_window=False, router_aux_loss_coef=0.001,
            tie_word_embeddings=False), 13, {}),
        "granitemoehybrid": (GraniteMoeHybridConfig(
            **GRANITE, intermediate_size=32, shared_intermediate_size=64, num_local_experts=4,
            num_experts_per_tok=2, router_aux_loss_coef=0.0), 14, dict(granite=True)),
        "granitemoehybrid-dense": (GraniteMoeHybridConfig(
            **GRANITE, intermediate_size=128, shared_intermediate_size=128, num_local_experts=0,
            num_experts_per_tok=0), 18, dict(granite=True)),
        "deepseek_v3": (DeepseekV3Config(
            vocab_size=VOCAB, hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
            attention_dropout=0.0, bos_token_id=0, eos_token_id=0, pad_token_id=0,
            num_hidden_layers=2, first_k_dense_replace=1, intermediate_size=128,
            moe_intermediate_size=32, n_routed_experts=8, num_experts_per_tok=2, n_group=4,
            topk_group=2, n_shared_experts=1, routed_scaling_factor=2.5, norm_topk_prob=True,
            q_lora_rank=64, kv_lora_rank=32, qk_nope_head_dim=32, qk_rope_head_dim=16,
            v_head_dim=32, max_position_embeddings=163840, rms_norm_eps=1e-6,
            rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=40.0,
                                 original_max_position_embeddings=4096, beta_fast=32.0,
                                 beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0),
            scoring_func="sigmoid", topk_method="noaux_tc",  # as in the real config
            num_mtp_layers=0,  # no multi-token-prediction layer weights in the fixture
            attention_bias=False, tie_word_embeddings=False), 15, {}),
        "deepseek_v2": (DeepseekV2Config(
            vocab_size=VOCAB, hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
            attention_dropout=0.0, bos_token_id=0, eos_token_id=0, pad_token_id=0,
            num_hidden_layers=2, first_k_dense_replace=1, intermediate_size=128,
            moe_intermediate_size=32, n_routed_experts=8, num_experts_per_tok=2, n_group=1,
            topk_group=1, topk_method="greedy", n_shared_experts=2, routed_scaling_factor=1.0,
            norm_topk_prob=False, q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=32,
            qk_rope_head_dim=16, v_head_dim=32, max_position_embeddings=163840,
            rms_norm_eps=1e-6,
            rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=40.0,
                                 original_max_position_embeddings=4096, beta_fast=32.0,
                                 beta_slow=1.0, mscale=0.707, mscale_all_dim=0.707),
            attention_bias=False, tie_word_embeddings=False), 19, {}),
        "gpt_oss": (gpt_oss_config(), 16, dict(experts_in_out=True, gate_up_gain=2.5)),
        "gpt_oss-mxfp4": (gpt_oss_config(), 16, dict(experts_in_out=True, gate_up_gain=2.5, mxfp4=True)),
        "nemotron_h": (NemotronHConfig(
            vocab_size=VOCAB, hidden_size=64, hybrid_override_pattern="ME*E",
            num_attention_heads=4, num_key_value_heads=2, head_dim=32, attention_dropout=0.0,
            bos_token_id=0, eos_token_id=0, pad_token_id=0,
            mamba_num_heads=4, mamba_head_dim=32, ssm_state_size=16, n_groups=2, conv_kernel=4,
            expand=2, chunk_size=128, use_conv_bias=True, mamba_proj_bias=False,
            n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
            moe_shared_expert_intermediate_size=64, n_shared_experts=1, intermediate_size=64,
            routed_scaling_factor=2.5, n_group=1, topk_group=1, norm_topk_prob=True,
            mlp_hidden_act="relu2", max_position_embeddings=256, layer_norm_epsilon=1e-5,
            residual_in_fp32=False, num_nextn_predict_layers=0,
            tie_word_embeddings=False), 17, {}),
    }


def fix_config_json(family: str, path: Path):
    """Put back the spelling real checkpoints use where transformers 5 rewrites it."""
    cfg = json.loads(path.read_text())
    if family == "qwen3_moe":
        # transformers 5 writes the expert count as num_local_experts; Qwen's configs say num_experts
        cfg["num_experts"] = cfg.pop("num_local_experts")
    elif family.startswith("granitemoehybrid"):
        names = {"linear_attention": "mamba", "full_attention": "attention"}
        cfg["layer_types"] = [names.get(t, t) for t in cfg["layer_types"]]
        assert cfg["layer_types"] == GRANITE_LAYERS, cfg["layer_types"]
        cfg.pop("time_step_limit", None)
    elif family == "nemotron_h":
        letters = {"linear_attention": "M", "moe": "E", "full_attention": "*", "mlp": "-"}
        cfg["hybrid_override_pattern"] = "".join(letters[t] for t in cfg.pop("layers_block_type"))
        assert cfg["hybrid_override_pattern"] == "ME*E", cfg["hybrid_override_pattern"]
        cfg["num_hidden_layers"] = len(cfg["hybrid_override_pattern"])
        for k in ("mtp_layers_block_type", "time_step_limit"):
            cfg.pop(k, None)
    else:
        return
    path.write_text(json.dumps(dict(sorted(cfg.items())), indent=2) + "\n")


ROUTER = re.compile(r"(\.gate\.weight|\.router\.weight|\.router\.layer\.weight)$")
QK = ("q_proj", "k_proj", "q_b_proj", "kv_a_proj_with_mqa")
OUTPUT_PROJ = ("o_proj", "out_proj", "down_proj", "output_linear", ".w2.")


def is_router(name: str) -> bool:
    return bool(ROUTER.search(name)) or name.endswith(("e_score_correction_bias", "router.bias"))


def layer_of(name: str) -> int:
    return int(re.search(r"layers\.(\d+)\.", name).group(1))


def init_weights(model, seed: int, opts: dict, router_draws=None, only_routers: bool = False):
    """Everything from `seed`, except the routers (weights, biases, score corrections):
    layer i's from seed * 1000 + 100 * i + router_draws[i], so that one layer's router can
    be redrawn alone (see build)."""
    g = torch.Generator().manual_seed(seed)
    router_draws = router_draws or {}
    granite = opts.get("granite", False)
    cfg = model.config

    def normal(shape, std, gen=None):
        return torch.randn(shape, generator=gen or g, dtype=torch.float32) * std

    def uniform(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float32)

    emb_std = 0.4
    qk_gain = 1.2
    out_gain = 1.0
    if granite:
        # Tied embeddings and logits / logits_scaling: larger embeddings for logits of the
        # usual spread. attention_multiplier 1/16 instead of 1/sqrt(16): larger q/k so
        # attention is as sharp as in the other fixtures. Embeddings x12 and block outputs
        # x0.22: larger output projections so that every block moves the residual stream.
        emb_std = 0.4 * cfg.logits_scaling
        qk_gain = 2.4
        out_gain = GRANITE_OUT * cfg.embedding_multiplier * emb_std / cfg.residual_multiplier
    with torch.no_grad():
        tensors = list(model.named_parameters()) + [
            (n, b) for n, b in model.named_buffers() if n.endswith("e_score_correction_bias")]
        for name, p in tensors:
            if is_router(name):
                layer = layer_of(name)
                g_router = torch.Generator().manual_seed(seed * 1000 + 100 * layer + router_draws.get(layer, 0))
                if name.endswith("e_score_correction_bias"):
                    p.copy_(normal(p.shape, 0.3, g_router))
                elif name.endswith("bias"):
                    p.copy_(normal(p.shape, 0.5, g_router))
                else:
                    p.copy_(normal(p.shape, 3.0 / p.shape[1] ** 0.5, g_router))
                continue
            if only_routers:
                continue
            if "embed" in name or name.startswith("lm_head"):
                p.copy_(normal(p.shape, emb_std))
            elif name.endswith("A_log"):
                p.copy_(torch.log(uniform(p.shape, 1.0, 16.0)))
            elif name.endswith("dt_bias"):
                dt = torch.exp(uniform(p.shape, math.log(1e-3), math.log(1e-1)))
                p.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
            elif name.endswith(".D"):
                p.copy_(uniform(p.shape, 0.5, 1.5))
            elif name.endswith("conv1d.weight"):
                p.copy_(normal(p.shape, 1.0 / p.shape[-1] ** 0.5))
            elif name.endswith("conv1d.bias"):
                p.copy_(normal(p.shape, 0.2))
            elif name.endswith("sinks"):
                p.copy_(normal(p.shape, 1.0))
            elif "norm" in name:
                qk = "q_norm" in name or "k_norm" in name
                p.copy_(uniform(p.shape, 1.0, 1.4) if qk else uniform(p.shape, 0.7, 1.3))
            elif name.endswith("bias"):
                p.copy_(normal(p.shape, 0.5))
            elif p.dim() in (2, 3):
                # Linear weights are [out, in]; stacked experts [E, out, in], except
                # GPT-OSS's, which are [E, in, out].
                fan_in = p.shape[1] if (p.dim() == 3 and opts.get("experts_in_out")) else p.shape[-1]
                if any(k in name for k in QK):
                    gain = qk_gain
                elif any(k in name for k in OUTPUT_PROJ):
                    gain = out_gain
                elif name.endswith("gate_up_proj") and "gate_up_gain" in opts:
                    gain = opts["gate_up_gain"]
                else:
                    gain = 1.0
                p.copy_(normal(p.shape, gain / fan_in ** 0.5))
            else:
                raise SystemExit(f"no init rule for {name} {tuple(p.shape)}")


def routing_stats(model, ids):
    """Per MoE layer: how often each expert is picked for the reference ids (the indices
    the router hands to the experts module, after groups, biases and corrections) and the
    mean routing weight of the first pick."""
    rows = []
    hooks = []
    for name, mod in model.named_modules():
        if not type(mod).__name__.endswith("Experts"):
            continue

        def hook(m, args, name=name):
            idx, w = args[1], args[2]
            n_exp = m.num_experts
            counts = torch.bincount(idx.reshape(-1), minlength=n_exp).tolist()
            rows.append((name, counts, float(w.max(-1).values.float().mean())))
        hooks.append(mod.register_forward_pre_hook(hook))
    logits_of(model, ids)
    for h in hooks:
        h.remove()
    return rows


MIN_PICKS = 2  # every expert of every layer is picked at least this often by the reference ids


FP4 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def mxfp4_pack(w: torch.Tensor):
    """OCP MXFP4 of w [E, rows, cols] along cols: blocks of 32 values share an E8M0 scale
    2^(floor(log2(amax)) - 2) (stored + 127), each value the nearest FP4 (E2M1) code.
    Returns (blocks uint8 [E, rows, cols/32, 16], low nibble first; scales uint8
    [E, rows, cols/32]; the dequantized values as float32 [E, rows, cols]), the layout
    of gpt-oss's *_blocks / *_scales tensors."""
    e, rows, cols = w.shape
    x = w.reshape(e, rows, cols // 32, 32)
    amax = x.abs().amax(-1, keepdim=True).clamp_min(2.0 ** -100)
    exp = torch.floor(torch.log2(amax)) - 2
    q = x / torch.exp2(exp)
    mag = (q.abs().unsqueeze(-1) - FP4[:8]).abs().argmin(-1)  # nearest of 0, 0.5, ..., 6
    code = torch.where(q < 0, mag + 8, mag).to(torch.uint8)
    deq = FP4[code.long()] * torch.exp2(exp)
    blocks = (code[..., 0::2] | (code[..., 1::2] << 4)).to(torch.uint8)
    scales = (exp.squeeze(-1) + 127).to(torch.uint8)
    return blocks, scales, deq.reshape(e, rows, cols)


def quantize_experts_mxfp4(model):
    """Replace GPT-OSS expert matrices by their MXFP4 round trip; return the packed tensors
    under their checkpoint names."""
    packed = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
                # parameters are [E, in, out]; MXFP4 blocks run along `in` of [E, out, in]
                blocks, scales, deq = mxfp4_pack(p.transpose(1, 2).contiguous())
                # transformers' own MXFP4 decoder must give back the same values
                from transformers.integrations.mxfp4 import convert_moe_packed_tensors
                theirs = convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)
                assert torch.equal(theirs, deq.transpose(1, 2)), name
                p.copy_(deq.transpose(1, 2))
                packed[name + "_blocks"] = blocks
                packed[name + "_scales"] = scales
    return packed


def write_mxfp4_checkpoint(out: Path, packed: dict):
    """Rewrite model.safetensors with the experts as *_blocks / *_scales (uint8) and add
    the quantization_config of the published gpt-oss checkpoints to config.json."""
    from safetensors.torch import save_file
    path = out / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for k in list(tensors):
        if k.endswith(("experts.gate_up_proj", "experts.down_proj")):
            del tensors[k]
    tensors.update(packed)
    save_file(dict(sorted(tensors.items())), str(path), metadata={"format": "pt"})
    cfg = json.loads((out / "config.json").read_text())
    cfg["quantization_config"] = {
        "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                   "model.embed_tokens", "lm_head"],
        "quant_method": "mxfp4",
    }
    (out / "config.json").write_text(json.dumps(dict(sorted(cfg.items())), indent=2) + "\n")


def load_mxfp4_fixture(out: Path):
    """Reload check for the MXFP4 folder without `accelerate` (which transformers' MXFP4
    loader requires and the venv lacks): the model from config.json minus its
    quantization_config, the experts decoded by transformers' convert_moe_packed_tensors."""
    from transformers import AutoConfig
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors
    cfg = json.loads((out / "config.json").read_text())
    cfg.pop("quantization_config")
    config = AutoConfig.for_model(**cfg)
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    state = {}
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        for k in f.keys():
            if k.endswith("_blocks"):
                base = k[: -len("_blocks")]
                state[base] = convert_moe_packed_tensors(
                    f.get_tensor(k), f.get_tensor(base + "_scales"), dtype=torch.float32)
            elif not k.endswith("_scales"):
                state[k] = f.get_tensor(k)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"} - set(state), (missing, unexpected)
    return model


def build(family: str, config, seed: int, opts: dict, ids):
    out = OUT / f"tiny-{family}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.manual_seed(seed)
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    draws = {}
    init_weights(model, seed, opts, draws)
    # Redraw a layer's router until every expert of that layer is used by the reference
    # ids, so that a conversion mistake in any expert shows in the logits. Layers are
    # redrawn in order (a redraw changes the input of the later layers).
    for _ in range(400):
        routes = routing_stats(model, ids)
        bad = [layer_of(n + ".") for n, c, _ in routes if min(c) < MIN_PICKS]
        if not bad:
            break
        draws[bad[0]] = draws.get(bad[0], 0) + 1
        assert draws[bad[0]] < 100, f"{family}: no router draw of layer {bad[0]} uses every expert"
        init_weights(model, seed, opts, draws, only_routers=True)
    else:
        raise SystemExit(f"{family}: no router draw uses every expert")

    packed = quantize_experts_mxfp4(model) if opts.get("mxfp4") else None
    ref = logits_of(model, ids)
    model.save_pretrained(out, safe_serialization=True)
    fix_config_json(family, out / "config.json")
    if packed:
        write_mxfp4_checkpoint(out, packed)
    for f in TOKENIZER_FILES:
        shutil.copyfile(DEMO / f, out / f)
    (out / "reference_ids.json").write_text(json.dumps(ids) + "\n")
    np.save(out / "reference_logits.npy", ref.astype(np.float32))

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        names = list(f.keys())
        dtypes = {str(f.get_slice(k).get_dtype()) for k in names}
        n_params = sum(int(np.prod(f.get_slice(k).get_shape())) for k in names)
    assert dtypes == ({"F32", "U8"} if packed else {"F32"}), dtypes
    assert ("lm_head.weight" in names) == (not config.tie_word_embeddings), names
    if packed:
        again = load_mxfp4_fixture(out)
    else:
        again = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    np.testing.assert_array_equal(logits_of(again, ids), ref)
    assert np.isfinite(ref).all()

    srt = np.sort(ref, axis=1)
    margin = srt[:, -1] - srt[:, -2]
    size = sum(p.stat().st_size for p in out.iterdir())
    weights = (out / "model.safetensors").stat().st_size
    print(f"tiny-{family}: {len(names)} tensors, {n_params:,} params, logits std {ref.std():.2f} "
          f"max|.| {np.abs(ref).max():.2f}, top-1 margin min {margin.min():.3f} median "
          f"{np.median(margin):.3f}, argmax = input id at {np.mean(ref.argmax(1) == np.array(ids)):.0%}, "
          f"model.safetensors {weights / 1e6:.2f} MB, folder {size / 1e6:.2f} MB", flush=True)
    if draws:
        print(f"    router redraws per layer: {draws}")
    for name, counts, w in routes:
        print(f"    {name}: picks per expert {counts}, mean weight of the first pick {w:.2f}")
    return size


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", help="families to (re)build (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    wait_for_tokenizer(0)
    ids = [int(x) for x in np.random.default_rng(IDS_SEED).integers(3, VOCAB, N_IDS)]
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    total = 0
    for family, (config, seed, opts) in configs().items():
        if args.only and family not in args.only:
            continue
        total += build(family, config, seed, opts, ids)
    print(f"total {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
