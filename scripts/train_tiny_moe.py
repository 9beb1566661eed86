#!/usr/bin/env python3
"""Train the tiny Mixture-of-Experts and hybrid Mamba-2 models in models/tiny-moe/ and
models/tiny-hybrid/ (one-offs, like scripts/train_demo_model.py for models/demo/).

    --family moe     models/tiny-moe: Qwen3-MoE (Qwen3MoeForCausalLM), hidden 256, 4 layers,
                     8 query / 2 KV heads of 32 with q/k RMSNorm, every layer sparse: 8 experts
                     top-2 of width 256, softmax router with norm_topk_prob (Qwen3-MoE has no
                     shared expert), tied embeddings, rope theta 1e6.
    --family hybrid  models/tiny-hybrid: Granite 4.0-H Micro style (GraniteMoeHybridForCausalLM):
                     hidden 256, 4 layers mamba, mamba, attention, mamba; Mamba-2 mixers of 8
                     heads x 64 (d_inner 512), state 64, 1 group, conv 4; NoPE attention with
                     8 query / 2 KV heads of 32; a dense shared SwiGLU MLP of width 768 after
                     every mixer (no experts); Granite's multipliers (embedding 12, residual
                     0.22, attention 1/32, logits 4); tied embeddings.

Every matrix has a row length (input dimension) that is a multiple of 256 (256, 512 or 768),
so every k-quant applies without a fallback type, as in the demo model.

Like the demo: the demo's tokenizer (models/demo/tokenizer.json, unchanged, copied), trained
on random 256-token windows of data/corpora/wiki_calib.txt minus its last 5 % (the dev slice
that picks the kept checkpoint), AdamW with warmup and cosine decay, float32, seed 1234, 2
threads, deterministic algorithms; evaluated on data/corpora/wiki_eval.txt the way
llama-perplexity does (chunks of 256, no BOS, second half of each chunk scored) against a
unigram baseline; saved in bf16 with save_pretrained (per-expert tensors for Qwen3-MoE, the
published layout), then checked by reloading. The MoE is trained with the load-balancing
auxiliary loss (coefficient 0.01; in the committed run two of the 32 experts still ended up
unused, see models/tiny-moe/README.md); --family moe also
counts, per layer, how often each expert is picked on the first 16,384 tokens of
wiki_calib.txt (expert_counts.json and the README).

    ~/.cache/llama-pajamas/train-venv/bin/python scripts/train_tiny_moe.py --family moe
    ~/.cache/llama-pajamas/train-venv/bin/python scripts/train_tiny_moe.py --family hybrid

A fixed number of steps (--steps: 140 for the MoE, 120 for the slower hybrid, whose Mamba
layers run transformers' pure-PyTorch scan; each took about 24 CPU-minutes, i.e. about
12 minutes on two idle cores), so reruns with the same package versions and thread count give the same weights;
the run reports its wall-clock and CPU time.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_demo_model import (  # noqa: E402  (same data split, evaluation and helpers as the demo)
    DEV_FRACTION,
    EVAL_TEXT,
    SAMPLE_PROMPT,
    SEED,
    SEQ_LEN,
    THREADS,
    TRAIN_TEXT,
    VOCAB_SIZE,
    bf16_rounded_copy,
    encode,
    log,
    lr_at,
    perplexity,
    seed_everything,
    sha256,
    unigram_perplexity,
    write_json,
)

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "models" / "demo"
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
EXPERT_COUNT_TOKENS = 16384
HYBRID_LAYERS = ["mamba", "mamba", "attention", "mamba"]

COMMON = dict(
    vocab_size=VOCAB_SIZE, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
    num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
    bos_token_id=0, eos_token_id=0, pad_token_id=0, attention_dropout=0.0,
    initializer_range=0.02, hidden_act="silu",
)


def build_config(family: str):
    from transformers import GraniteMoeHybridConfig, Qwen3MoeConfig

    if family == "moe":
        return Qwen3MoeConfig(
            **COMMON, head_dim=32, intermediate_size=768, moe_intermediate_size=256, num_experts=8,
            num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
            rope_theta=1e6, rms_norm_eps=1e-6, attention_bias=False, use_sliding_window=False,
            sliding_window=None, max_window_layers=4, router_aux_loss_coef=0.01,
            output_router_logits=False)
    return GraniteMoeHybridConfig(
        **COMMON, layer_types=list(HYBRID_LAYERS), position_embedding_type="nope",
        attention_bias=False, rms_norm_eps=1e-5, intermediate_size=768,
        shared_intermediate_size=768, num_local_experts=0, num_experts_per_tok=0,
        embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=1.0 / 32,
        logits_scaling=4.0, mamba_n_heads=8, mamba_d_head=64, mamba_d_state=64, mamba_n_groups=1,
        mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=64, mamba_conv_bias=True,
        mamba_proj_bias=False)


def fix_config_json(family: str, path: Path) -> None:
    """Published-checkpoint spellings (transformers reads both): rope_theta at the top level
    instead of transformers 5's rope_parameters, Qwen3-MoE's num_experts (transformers 5
    writes num_local_experts), Granite's layer_types as mamba/attention,
    no time_step_limit ([0, {"__float__": "Infinity"}], the default)."""
    cfg = json.loads(path.read_text())
    rope = cfg.pop("rope_parameters", None) or {}
    cfg["rope_theta"] = rope.get("rope_theta", 10000.0)
    cfg["rope_scaling"] = None
    cfg["output_router_logits"] = False
    if family == "moe":  # transformers 5 writes num_local_experts; Qwen's configs say num_experts
        cfg["num_experts"] = cfg.pop("num_local_experts")
    if family == "hybrid":
        names = {"linear_attention": "mamba", "full_attention": "attention"}
        cfg["layer_types"] = [names.get(t, t) for t in cfg["layer_types"]]
        assert cfg["layer_types"] == HYBRID_LAYERS, cfg["layer_types"]
        cfg.pop("time_step_limit", None)
    path.write_text(json.dumps(dict(sorted(cfg.items())), indent=2) + "\n")


def train(model, train_ids, dev_ids, args, aux_coef: float):
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    rng = np.random.default_rng(SEED)
    n_starts = len(train_ids) - SEQ_LEN - 1
    floor = args.lr * args.min_lr_ratio
    best = (float("inf"), -1, None)
    t0, c0 = time.time(), time.process_time()
    ema = aux_ema = None
    for step in range(args.steps):
        lr = lr_at(step, args.steps, args.lr, args.warmup, floor)
        for g in opt.param_groups:
            g["lr"] = lr
        starts = rng.integers(0, n_starts, size=args.batch)
        win = torch.from_numpy(np.stack([train_ids[s: s + SEQ_LEN + 1] for s in starts]))
        model.train()
        out = model(input_ids=win[:, :-1], output_router_logits=aux_coef > 0) if aux_coef > 0 \
            else model(input_ids=win[:, :-1])
        ce = F.cross_entropy(out.logits.reshape(-1, VOCAB_SIZE), win[:, 1:].reshape(-1))
        loss = ce
        if aux_coef > 0:
            loss = ce + aux_coef * out.aux_loss
            aux_ema = out.aux_loss.item() if aux_ema is None else 0.95 * aux_ema + 0.05 * out.aux_loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = ce.item() if ema is None else 0.95 * ema + 0.05 * ce.item()
        done = step + 1
        elapsed = time.time() - t0
        aux = f"  aux {aux_ema:.3f}" if aux_ema is not None else ""
        if done % args.eval_every == 0 or done == args.steps:
            dev_ppl, _, _ = perplexity(model, dev_ids)
            mark = ""
            if dev_ppl < best[0]:
                best = (dev_ppl, done, copy.deepcopy(model.state_dict()))
                mark = " *"
            log(f"step {done:4d}/{args.steps}  lr {lr:.2e}  train loss {ema:.3f} (ppl {math.exp(ema):.1f}){aux}"
                f"  dev ppl {dev_ppl:.2f}{mark}  {elapsed / done:.2f} s/step  {elapsed / 60:.1f} min")
        elif done % 10 == 0:
            log(f"step {done:4d}/{args.steps}  lr {lr:.2e}  train loss {ema:.3f}{aux}  {elapsed / done:.2f} s/step")
    train_seconds, train_cpu = time.time() - t0, time.process_time() - c0
    model.load_state_dict(best[2])
    log(f"kept the checkpoint of step {best[1]} (dev ppl {best[0]:.2f})")
    return dict(steps_run=args.steps, best_step=best[1], dev_ppl=best[0], train_seconds=train_seconds,
                train_cpu_seconds=train_cpu)


@torch.no_grad()
def expert_counts(model, ids: np.ndarray):
    """Per MoE layer: tokens routed to each expert (top-k picks) and the routing weight mass
    each expert received, over non-overlapping 256-token chunks of `ids` (no BOS)."""
    stats = {}
    hooks = []
    for name, mod in model.named_modules():
        if type(mod).__name__.endswith("Experts"):
            layer = int(name.split(".layers.")[1].split(".")[0])
            stats[layer] = dict(count=np.zeros(mod.num_experts, np.int64), mass=np.zeros(mod.num_experts))

            def hook(m, args, layer=layer):
                idx = args[1].reshape(-1).numpy()
                w = args[2].reshape(-1).double().numpy()
                stats[layer]["count"] += np.bincount(idx, minlength=m.num_experts)
                stats[layer]["mass"] += np.bincount(idx, weights=w, minlength=m.num_experts)
            hooks.append(mod.register_forward_pre_hook(hook))
    n = len(ids) // SEQ_LEN
    chunks = torch.from_numpy(ids[: n * SEQ_LEN].reshape(n, SEQ_LEN))
    model.eval()
    for s in range(0, n, 16):
        model(input_ids=chunks[s: s + 16])
    for h in hooks:
        h.remove()
    return {layer: dict(count=v["count"].tolist(), mass=[round(x, 2) for x in v["mass"]])
            for layer, v in sorted(stats.items())}, n * SEQ_LEN


def model_card(family: str, r: dict) -> str:
    if family == "moe":
        title = f"llama-pajamas tiny MoE ({r['params'] / 1e6:.2f}M-parameter Qwen3-MoE, 8 experts top-2)"
        arch = f"""`Qwen3MoeForCausalLM` (transformers, `model_type: qwen3_moe`), weights in bf16:

| | |
|---|---|
| vocabulary | 4096 (the demo model's byte-level BPE) |
| hidden size | 256 |
| layers | 4, all sparse (`decoder_sparse_step` 1, `mlp_only_layers` []) |
| attention | 8 query heads, 2 key/value heads (GQA 4:1), head_dim 32, q/k RMSNorm, no biases |
| experts | 8 per layer, top-2 (`num_experts_per_tok` 2), SwiGLU of width 256 (`moe_intermediate_size`) |
| router | linear `mlp.gate` [8, 256], softmax over the 8 experts, top-2 renormalised (`norm_topk_prob: true`) |
| shared expert | none (Qwen3-MoE has none) |
| positions | RoPE, theta 1e6, max 1024 |
| norm | RMSNorm, eps 1e-06 |
| embeddings | tied (no `lm_head.weight` tensor in the file) |

Parameters: **{r['params']:,}** in all, of which experts {r['expert_params']:,}
(8 x 3 x 256 x 256 per layer) and embeddings {r['embed_params']:,}; active per token
about {r['active_params']:,} (2 of the 8 experts). `model.safetensors` holds {r['n_tensors']} tensors
({r['safetensors_bytes']:,} bytes) in the published Qwen3-MoE layout: one tensor per expert,
`model.layers.L.mlp.experts.E.{{gate,up,down}}_proj.weight`, router `model.layers.L.mlp.gate.weight`
(transformers 5 fuses the experts into `gate_up_proj` `[8, 512, 256]` / `down_proj`
`[8, 256, 256]` when it loads them).

Every matrix's row length (the input dimension, along which quantization blocks run) is
256 (q/k/v/o, gate/up, down: the expert width is 256 too) and the output dimensions are 64,
256, 8 (router) and 4096, so every k-quant applies. The expert width is 256 rather than the
Qwen3-30B-A3B ratio (768 / 2048 = 0.375 x hidden) for that reason. Qwen2-MoE-style shared
experts are not part of Qwen3-MoE; the random fixture `tests/fixtures/tiny-qwen2_moe` covers
them."""
    else:
        title = f"llama-pajamas tiny hybrid ({r['params'] / 1e6:.2f}M-parameter Granite 4.0-H style Mamba-2 / attention)"
        arch = f"""`GraniteMoeHybridForCausalLM` (transformers, `model_type: granitemoehybrid`), in the
style of IBM Granite 4.0-H Micro (hybrid, dense shared MLP, no experts), weights in bf16:

| | |
|---|---|
| vocabulary | 4096 (the demo model's byte-level BPE) |
| hidden size | 256 |
| layers | 4: `mamba`, `mamba`, `attention`, `mamba` (`layer_types`) |
| Mamba-2 mixer | 8 heads x 64 (`d_inner` 512 = 2 x hidden), state 64, 1 group, causal conv1d of width 4 with bias, gated RMSNorm, no projection biases; `in_proj` [1160, 256] = z 512 + x 512 + B 64 + C 64 + dt 8 |
| attention | 8 query heads, 2 key/value heads (GQA 4:1), head_dim 32, **no positional encoding** (`position_embedding_type: nope`) |
| MLP | a dense SwiGLU `shared_mlp` of width 768 after every mixer (`input_linear` [1536, 256] holds gate and up, `output_linear` [256, 768]); `num_local_experts` 0 |
| multipliers | `embedding_multiplier` 12, `residual_multiplier` 0.22, `attention_multiplier` 1/32 (instead of 1/sqrt(32)), `logits_scaling` 4 |
| norm | RMSNorm, eps 1e-05 |
| embeddings | tied (no `lm_head.weight` tensor in the file) |

Parameters: **{r['params']:,}** in all: embeddings {r['embed_params']:,}, per Mamba layer
{r['mamba_layer_params']:,}, the attention layer {r['attn_layer_params']:,}, final norm 256.
`model.safetensors` holds {r['n_tensors']} tensors ({r['safetensors_bytes']:,} bytes).
`mamba_chunk_size` is 64 (Granite uses 256): it only sets the block size of transformers'
chunked scan, not the function computed, and 64 made the pure-PyTorch training faster.

Every matrix's row length is 256 (`in_proj`, q/k/v, `input_linear`), 512 (`out_proj`) or
768 (`output_linear`), so every k-quant applies. The 1-D SSM tensors (`A_log`, `D`,
`dt_bias`: 8 values each), the conv1d weight `[640, 1, 4]` and the norms are what the
architecture-aware rules keep in F32."""
    counts = ""
    if family == "moe":
        rows = []
        for layer, v in r["expert_counts"].items():
            c = v["count"]
            tot = sum(c)
            rows.append(f"| {layer} | " + " | ".join(f"{x:,}" for x in c)
                        + f" | {min(c) / (tot / len(c)):.2f} / {max(c) / (tot / len(c)):.2f} |")
        counts = f"""
## Expert activations on wiki_calib

Top-2 picks per expert on the first {r['count_tokens']:,} tokens of
`data/corpora/wiki_calib.txt` ({r['count_tokens'] // SEQ_LEN} non-overlapping chunks of 256, no BOS; the
shipped bf16 weights reloaded with transformers). Each token is routed to 2 experts, so a
row sums to {2 * r['count_tokens']:,}; the last column is the least and most used expert
relative to the mean. The same numbers, with the routing weight mass per expert, are in
`expert_counts.json`. (These tokens are part of the training text.)

| layer | e0 | e1 | e2 | e3 | e4 | e5 | e6 | e7 | min / max vs mean |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---|
""" + "\n".join(rows) + "\n"
    aux = ("\nThe MoE loss adds the load-balancing auxiliary loss of transformers with coefficient\n"
           "0.01 (`router_aux_loss_coef` in config.json; Qwen3-MoE used 0.001). It did not keep every\n"
           "expert alive: two experts are (almost) never picked, see the expert activations below.\n"
           ) if family == "moe" else ""
    return f"""\
---
license: cc-by-sa-4.0
language: en
library_name: transformers
pipeline_tag: text-generation
---

# {title}

A tiny language model trained from scratch, shipped in the repository so that the
quantizer's Mixture-of-Experts / hybrid Mamba-2 paths, its tests and its examples have a
real, trained model of that architecture without any download. It is good for nothing but
testing. Made by `scripts/train_tiny_moe.py --family {family}`, in the same way as
`models/demo/` (same tokenizer, data, split and evaluation).

## Architecture

{arch}

## Tokenizer

The demo model's tokenizer, copied unchanged from `models/demo/` (`tokenizer.json`,
`tokenizer_config.json`, `special_tokens_map.json`): GPT-2 style byte-level BPE, 4096
entries, `<|endoftext|>` (id 0: bos, eos, pad, unk), `<|im_start|>` (1), `<|im_end|>` (2).

## Training data and licence

Trained only on `data/corpora/wiki_calib.txt` (English Wikipedia, {r['calib_tokens']:,} tokens with
this tokenizer; see `data/corpora/README.md`), so, like the demo model, **the weights are
released under CC BY-SA 4.0** (attribution: Wikipedia contributors). The last
{int(DEV_FRACTION * 100)} % of those tokens ({r['dev_tokens']:,}) were held out of training as a dev
slice used to keep the best checkpoint; `data/corpora/wiki_eval.txt` was used for nothing
but the final measurement below.

Training: {r['steps_run']} steps of AdamW (betas 0.9/0.95, weight decay {r['weight_decay']:g}
on matrices, gradient clipping 1.0), batch {r['batch']} random windows of {SEQ_LEN} tokens, peak
learning rate {r['lr']:g} with {r['warmup']} warmup steps and cosine decay to
{r['lr'] * r['min_lr_ratio']:g}, float32, seed {SEED}, {THREADS} CPU threads: **{r['train_seconds'] / 60:.1f}
minutes** of training, wall-clock, on a 2-core machine shared with other work
({r['train_cpu_seconds'] / 60:.1f} CPU-minutes); {r['tokens_seen'] / 1e6:.2f}M tokens seen, about
{r['epochs']:.1f} passes over the training tokens. Kept checkpoint: step {r['best_step']} (dev
perplexity {r['dev_ppl']:.2f}). Software: torch {r['torch_version']}, transformers
{r['transformers_version']}.
{aux}
To reproduce (from the repository root; see `scripts/train_demo_model.py` for the venv):

```
~/.cache/llama-pajamas/train-venv/bin/python scripts/train_tiny_moe.py --family {family}
```

## Evaluation

Held-out `data/corpora/wiki_eval.txt` ({r['eval_tokens']:,} tokens), measured the way
`llama-perplexity` does: non-overlapping chunks of {SEQ_LEN} tokens, no BOS, only the second
half of each chunk scored ({r['eval_chunks']} chunks, {r['eval_scored']:,} scored tokens).

| model | perplexity |
|---|---|
| this model, bf16 weights as shipped | **{r['ppl_bf16']:.2f}** |
| this model, float32 weights before rounding to bf16 | {r['ppl_fp32']:.2f} |
| unigram baseline (token frequencies of wiki_calib, add-one smoothing) | {r['ppl_unigram']:.2f} |
| for comparison: `models/demo` (dense 4.07M Llama, 480 steps) | 209.61 |

Perplexities are per token of the demo tokenizer.

Greedy continuation of `{SAMPLE_PROMPT}` (40 new tokens, shipped weights):

```
{r['sample_text']}
```
{counts}
## Files

config.json, generation_config.json, model.safetensors, tokenizer.json,
tokenizer_config.json, special_tokens_map.json, {'expert_counts.json, ' if family == 'moe' else ''}README.md (this file).
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=["moe", "hybrid"], required=True)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--steps", type=int, default=None, help="140 (moe) or 120 (hybrid)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--warmup", type=int, default=15)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=None, help="35 (moe) or 30 (hybrid)")
    ap.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # quick pipeline check
    args = ap.parse_args()
    family = args.family
    if args.steps is None:
        args.steps = 140 if family == "moe" else 120
    if args.eval_every is None:
        args.eval_every = 35 if family == "moe" else 30
    out = (args.out or REPO / "models" / ("tiny-moe" if family == "moe" else "tiny-hybrid")).resolve()

    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    import transformers
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads")

    tok = Tokenizer.from_file(str(DEMO / "tokenizer.json"))
    train_text = TRAIN_TEXT.read_text(encoding="utf-8")
    calib_ids = encode(tok, train_text)
    eval_ids = encode(tok, EVAL_TEXT.read_text(encoding="utf-8"))
    n_dev = int(len(calib_ids) * DEV_FRACTION)
    train_ids, dev_ids = calib_ids[:-n_dev], calib_ids[-n_dev:]
    if args.smoke:
        dev_ids, eval_ids = dev_ids[: 8 * SEQ_LEN], eval_ids[: 8 * SEQ_LEN]
    log(f"wiki_calib {len(calib_ids):,} tokens: train {len(train_ids):,}, dev {len(dev_ids):,}; "
        f"wiki_eval {len(eval_ids):,}")

    seed_everything(SEED)
    config = build_config(family)
    config._attn_implementation = "sdpa"  # faster on CPU; evaluation and the checks are unaffected
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.config.use_cache = False
    params = sum(p.numel() for p in model.parameters())
    log(f"model: {type(model).__name__}, {params:,} parameters")

    tr = train(model, train_ids, dev_ids, args, config.router_aux_loss_coef if family == "moe" else 0.0)

    model.eval()
    ppl_fp32, n_scored, scored = perplexity(model, eval_ids)
    shipped = bf16_rounded_copy(model)
    ppl_bf16, _, _ = perplexity(shipped, eval_ids)
    ppl_uni = unigram_perplexity(calib_ids, scored)
    log(f"wiki_eval perplexity: bf16 {ppl_bf16:.3f}, fp32 {ppl_fp32:.3f}, unigram {ppl_uni:.3f} "
        f"({n_scored} scored tokens)")

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    to_save = copy.deepcopy(model).to(torch.bfloat16)
    to_save.config.use_cache = True
    to_save.save_pretrained(out, safe_serialization=True)
    fix_config_json(family, out / "config.json")
    write_json(out / "generation_config.json", {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0,
                                                "transformers_version": transformers.__version__})
    for f in TOKENIZER_FILES:
        shutil.copyfile(DEMO / f, out / f)

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        names = sorted(f.keys())
        assert "lm_head.weight" not in names
        n_file_params = 0
        for n in names:
            t = f.get_tensor(n)
            assert t.dtype == torch.bfloat16, (n, t.dtype)
            n_file_params += t.numel()
    assert n_file_params == params, (n_file_params, params)
    reloaded = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32, attn_implementation="sdpa").eval()
    probe = torch.from_numpy(eval_ids[: 4 * SEQ_LEN].reshape(4, SEQ_LEN))
    with torch.no_grad():
        a = reloaded(input_ids=probe).logits
        b = shipped(input_ids=probe).logits
    assert torch.equal(a, b), float((a - b).abs().max())
    log("reloaded from disk with AutoModelForCausalLM: same logits as the bf16-rounded weights")

    x = torch.tensor([tok.encode(SAMPLE_PROMPT).ids])
    try:
        with torch.no_grad():
            y = reloaded.generate(x, max_new_tokens=40, do_sample=False)
        sample_text = tok.decode(y[0].tolist(), skip_special_tokens=False)
    except Exception as e:  # noqa: BLE001
        sample_text = f"(generate failed: {e})"
    log(f"greedy sample: {sample_text!r}")

    embed = model.model.embed_tokens.weight.numel()
    r = dict(
        params=params, embed_params=embed, n_tensors=len(names),
        safetensors_bytes=(out / "model.safetensors").stat().st_size,
        calib_tokens=len(calib_ids), dev_tokens=len(dev_ids), eval_tokens=len(eval_ids),
        eval_chunks=len(eval_ids) // SEQ_LEN, eval_scored=n_scored,
        ppl_bf16=ppl_bf16, ppl_fp32=ppl_fp32, ppl_unigram=ppl_uni,
        batch=args.batch, lr=args.lr, warmup=args.warmup, min_lr_ratio=args.min_lr_ratio,
        weight_decay=args.weight_decay, tokens_seen=args.steps * args.batch * SEQ_LEN,
        epochs=args.steps * args.batch * SEQ_LEN / len(train_ids),
        torch_version=torch.__version__.split("+")[0], transformers_version=transformers.__version__,
        sample_text=sample_text, **tr)
    if family == "moe":
        expert = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
        r["expert_params"] = expert
        r["active_params"] = params - expert + expert // 4
        counts, n_tok = expert_counts(reloaded, calib_ids[:EXPERT_COUNT_TOKENS])
        r["expert_counts"], r["count_tokens"] = counts, n_tok
        write_json(out / "expert_counts.json", {
            "text": "data/corpora/wiki_calib.txt", "tokens": n_tok, "chunk": SEQ_LEN,
            "top_k": 2, "weights": "model.safetensors (bf16) as shipped",
            "layers": {str(k): v for k, v in counts.items()}})
        for layer, v in counts.items():
            log(f"layer {layer} expert picks {v['count']}")
    else:
        layers = model.model.layers
        r["mamba_layer_params"] = sum(p.numel() for p in layers[0].parameters())
        r["attn_layer_params"] = sum(p.numel() for p in layers[2].parameters())
    (out / "README.md").write_text(model_card(family, r), encoding="utf-8")
    write_json(Path("/tmp") / f"train_tiny_{family}_results.json",
               {k: v for k, v in r.items() if k != "expert_counts"})

    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    log(f"wrote {out} ({total / 1e6:.2f} MB):")
    for p in sorted(out.iterdir()):
        log(f"  {p.name:26s} {p.stat().st_size:>10,}  sha256 {sha256(p)[:16]}")


if __name__ == "__main__":
    main()
