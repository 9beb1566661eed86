#!/usr/bin/env python3
"""Build the tiny random-weight checkpoints in tests/fixtures/tiny-<family>/ (a one-off).

One checkpoint per dense family that `quantize llm` converts to GGUF, each built by
transformers itself from a config, so the folder is exactly what a real HF checkpoint
of that family looks like (config.json written by `save_pretrained`, HF tensor names,
`model.safetensors`):

  tiny-llama    LlamaForCausalLM, plain rope (theta 10000), untied lm_head
  tiny-llama3   LlamaForCausalLM with Llama-3 rope scaling (rope_type llama3, factor 8,
                low/high freq factor 1/4, original context 64) and rope theta 500000,
                tied embeddings (like Llama-3.2 1B/3B)
  tiny-mistral  MistralForCausalLM with sliding_window set (128: longer than the test
                sequence, because llama.cpp's `llama` architecture has no sliding window
                and neither llama.cpp's converter nor ours can express one) and rope
                theta 1e6, tied embeddings
  tiny-qwen2    Qwen2ForCausalLM (q/k/v biases), rope theta 1e6, tied embeddings
  tiny-qwen3    Qwen3ForCausalLM (q/k RMSNorm), explicit head_dim 32 != hidden/heads = 16,
                rope theta 1e6, tied embeddings
  tiny-gemma3   Gemma3ForCausalLM (model_type gemma3_text): 3 layers, local, local,
                global (layer_types), sliding_window 8, head_dim 32 (explicit),
                query_pre_attn_scalar = head_dim, no soft-capping, rope theta 1e6 for the
                global layer and 10000 for the local ones, tied embeddings

Common shape: hidden 64, 4 query heads, 2 KV heads, MLP 128, 2 layers (gemma3: 3),
vocab 4096 (the demo tokenizer's), max_position_embeddings 256. Hidden and MLP sizes are
multiples of 32, so Q8_0 applies to every matrix.

Weights: torch.manual_seed-fixed random values, scaled so the model is far from its
degenerate default (with transformers' default init, std 0.02, attention is uniform and
the logits are near zero, which would hide rope and norm mistakes): linear weights
N(0, gain^2 / fan_in) with gain 1.2 for q/k (attention scores of std ~1.4, so rope
matters) and 1 otherwise; RMSNorm weights random around 1 (Gemma: around 0, since Gemma
multiplies by 1 + w; its post-norms around 4, so each block's output is comparable to the
sqrt(hidden)-scaled embedding), so a swapped or mis-shifted norm shows; q/k norms 1..1.4;
q/k/v biases N(0, 0.5^2); embeddings N(0, 0.4^2). The logits then have std ~3.3 over the
vocabulary.
Everything is saved in float32, so the GGUF F32 conversion can be compared tightly.

Each folder also holds:
  reference_ids.json     32 token ids drawn with a fixed seed from 3..4095 (no BOS)
  reference_logits.npy   transformers' logits for them, float32 [32, 4096] (eval mode,
                         eager attention, no cache)
and the tokenizer files copied from models/demo/ (tokenizer.json, tokenizer_config.json,
special_tokens_map.json).

How to run it
-------------
It needs torch and transformers (5.x), which are not part of the project's requirements;
the throw-away venv of scripts/train_demo_model.py has them:

    ~/.cache/llama-pajamas/train-venv/bin/python scripts/make_tiny_fixtures.py

It takes well under a minute on two cores. models/demo/ must hold the demo tokenizer
(scripts/train_demo_model.py writes it); `--wait-minutes N` polls for it. Seeds are
fixed, so a rerun with the same torch/transformers versions rewrites the same files.
"""
import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors import safe_open
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
)

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "models" / "demo"
OUT = REPO / "tests" / "fixtures"
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]

VOCAB = 4096
N_IDS = 32
IDS_SEED = 20250607

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
    attention_dropout=0.0,
)

LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


def configs():
    """family -> (config, seed)."""
    return {
        "llama": (LlamaConfig(**COMMON, rope_theta=10000.0, rms_norm_eps=1e-5,
                              tie_word_embeddings=False), 1),
        "llama3": (LlamaConfig(**COMMON, rope_theta=500000.0, rope_scaling=dict(LLAMA3_SCALING),
                               rms_norm_eps=1e-5, tie_word_embeddings=True), 2),
        "mistral": (MistralConfig(**COMMON, rope_theta=1e6, sliding_window=128, rms_norm_eps=1e-5,
                                  tie_word_embeddings=True), 3),
        "qwen2": (Qwen2Config(**COMMON, rope_theta=1e6, rms_norm_eps=1e-6, use_sliding_window=False,
                              tie_word_embeddings=True), 4),
        "qwen3": (Qwen3Config(**COMMON, head_dim=32, rope_theta=1e6, rms_norm_eps=1e-6,
                              attention_bias=False, use_sliding_window=False,
                              tie_word_embeddings=True), 5),
        "gemma3": (Gemma3TextConfig(**{**COMMON, "num_hidden_layers": 3}, head_dim=32,
                                    query_pre_attn_scalar=32, sliding_window=8,
                                    layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                                    rope_theta=1e6, rope_local_base_freq=10000.0, rms_norm_eps=1e-6,
                                    final_logit_softcapping=None, attn_logit_softcapping=None,
                                    hidden_activation="gelu_pytorch_tanh",
                                    tie_word_embeddings=True), 6),
    }


def init_weights(model, gemma: bool, seed: int):
    """Deterministic, healthy random weights (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return torch.randn(shape, generator=g, dtype=torch.float32) * std

    def uniform(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float32)

    with torch.no_grad():
        for name, p in model.named_parameters():  # tied weights are listed once
            if "embed_tokens" in name or name.startswith("lm_head"):
                p.copy_(normal(p.shape, 0.4))
            elif "norm" in name:
                qk = "q_norm" in name or "k_norm" in name
                post = "post_attention" in name or "post_feedforward" in name
                if gemma:  # Gemma multiplies by (1 + w)
                    # The post-norms are large so that each block's output is comparable to
                    # the sqrt(hidden)-scaled embedding in the residual stream.
                    if qk:
                        p.copy_(uniform(p.shape, 0.0, 0.4))
                    elif post:
                        p.copy_(uniform(p.shape, 2.0, 4.0))
                    else:
                        p.copy_(uniform(p.shape, -0.3, 0.3))
                else:
                    p.copy_(uniform(p.shape, 1.0, 1.4) if qk else uniform(p.shape, 0.7, 1.3))
            elif name.endswith(".bias"):
                p.copy_(normal(p.shape, 0.5))
            elif p.dim() == 2:
                gain = 1.2 if ("q_proj" in name or "k_proj" in name) else 1.0
                p.copy_(normal(p.shape, gain / p.shape[1] ** 0.5))
            else:
                raise SystemExit(f"no init rule for {name} {tuple(p.shape)}")


def logits_of(model, ids):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False)
    return out.logits[0].to(torch.float32).numpy()


def wait_for_tokenizer(minutes: float):
    """Returns once the demo tokenizer files exist and their sizes held still for 30 s
    (at once when --wait-minutes is 0 and they exist)."""
    deadline = time.time() + minutes * 60
    last = None
    while True:
        files = [DEMO / f for f in TOKENIZER_FILES]
        sizes = [f.stat().st_size for f in files] if all(f.is_file() for f in files) else None
        if sizes is not None and (minutes == 0 or sizes == last):
            return
        if time.time() > deadline:
            sys.exit(f"{DEMO} has no demo tokenizer ({', '.join(TOKENIZER_FILES)}); "
                     "run scripts/train_demo_model.py first")
        last = sizes
        print(f"waiting for the demo tokenizer in {DEMO} ...", flush=True)
        time.sleep(30)


def build(family: str, config, seed: int, ids):
    out = OUT / f"tiny-{family}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.manual_seed(seed)
    config._attn_implementation = "eager"  # exact, mask-explicit attention for the reference
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    init_weights(model, family == "gemma3", seed)
    ref = logits_of(model, ids)
    model.save_pretrained(out, safe_serialization=True)
    for f in TOKENIZER_FILES:
        shutil.copyfile(DEMO / f, out / f)
    (out / "reference_ids.json").write_text(json.dumps(ids) + "\n")
    np.save(out / "reference_logits.npy", ref.astype(np.float32))

    # Checks: float32 on disk, tied embeddings stored once, the saved folder reloads to the
    # same logits.
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        names = list(f.keys())
        dtypes = {str(f.get_slice(k).get_dtype()) for k in names}
    assert dtypes == {"F32"}, dtypes
    assert ("lm_head.weight" in names) == (not config.tie_word_embeddings), names
    again = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    np.testing.assert_array_equal(logits_of(again, ids), ref)

    srt = np.sort(ref, axis=1)
    margin = srt[:, -1] - srt[:, -2]
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"tiny-{family}: {len(names)} tensors, logits std {ref.std():.2f} max|.| {np.abs(ref).max():.2f}, "
          f"top-1 margin min {margin.min():.3f} median {np.median(margin):.3f}, "
          f"argmax = input id at {np.mean(ref.argmax(1) == np.array(ids)):.0%} of positions, "
          f"{size / 1e6:.2f} MB", flush=True)
    return size


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wait-minutes", type=float, default=0.0,
                    help="poll this long for models/demo/'s tokenizer files")
    ap.add_argument("--only", nargs="*", help="families to (re)build (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    wait_for_tokenizer(args.wait_minutes)
    vocab = json.loads((DEMO / "tokenizer.json").read_text())
    n_tok = len(vocab["model"]["vocab"]) + sum(1 for t in vocab.get("added_tokens", [])
                                               if t["content"] not in vocab["model"]["vocab"])
    if n_tok != VOCAB:
        sys.exit(f"the demo tokenizer has {n_tok} entries, these fixtures need {VOCAB}")
    ids = [int(x) for x in np.random.default_rng(IDS_SEED).integers(3, VOCAB, N_IDS)]
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    total = 0
    for family, (config, seed) in configs().items():
        if args.only and family not in args.only:
            continue
        total += build(family, config, seed, ids)
    print(f"total {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
