"""Shared fixtures for the oracle tests: they drive the real `llama-pajamas-quant` binary
and check it against reference Python packages (safetensors, gguf, ...).

Run through scripts/test.sh, which builds the binary and sets LLAMA_PAJAMAS_BIN."""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from safetensors import TensorSpec, serialize_file

REPO = Path(__file__).resolve().parents[2]


def binary() -> str:
    b = os.environ.get("LLAMA_PAJAMAS_BIN")
    if not b:
        raise RuntimeError("LLAMA_PAJAMAS_BIN is not set: run the tests through scripts/test.sh")
    return b


def run(*args, env=None, check=True):
    """Runs the binary; returns CompletedProcess with text output."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    p = subprocess.run([binary(), *map(str, args)], capture_output=True, text=True, env=full_env)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stderr}")
    return p


def detect_json(model, env=None, tensors=False):
    args = ["detect", "--model", model, "--json"] + (["--tensors"] if tensors else [])
    return json.loads(run(*args, env=env).stdout)


def bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (round to nearest even), as uint16."""
    u = a.astype(np.float32).view(np.uint32)
    rounded = u + 0x7FFF + ((u >> 16) & 1)
    return (rounded >> 16).astype(np.uint16)


# TensorSpec takes framework-style names; headers carry the format codes.
CONSTRUCTOR_NAMES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


def write_safetensors(path: Path, tensors: dict, metadata=None):
    """tensors: name -> (safetensors dtype code, numpy array holding the raw elements)."""
    keep = []
    specs = {}
    for name, (dtype, arr) in tensors.items():
        arr = np.ascontiguousarray(arr)
        keep.append(arr)
        specs[name] = TensorSpec(dtype=CONSTRUCTOR_NAMES[dtype], shape=list(arr.shape), data_ptr=arr.ctypes.data, data_len=arr.nbytes)
    serialize_file(specs, str(path), metadata=metadata)


TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "vocab_size": 100,
    "tie_word_embeddings": False,
    "max_position_embeddings": 256,
}


def tiny_llama_tensors(seed=0):
    """The exact tensor set of TINY_LLAMA, in mixed dtypes."""
    rng = np.random.default_rng(seed)
    h, f, v, hd = 64, 128, 100, 16
    t = {"model.embed_tokens.weight": ("BF16", bf16_bits(rng.standard_normal((v, h)))),
         "lm_head.weight": ("F16", rng.standard_normal((v, h)).astype(np.float16)),
         "model.norm.weight": ("F32", np.ones(h, np.float32))}
    for i in range(2):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = ("F32", np.ones(h, np.float32))
        t[p + "post_attention_layernorm.weight"] = ("F32", np.ones(h, np.float32))
        t[p + "self_attn.q_proj.weight"] = ("BF16", bf16_bits(rng.standard_normal((4 * hd, h))))
        t[p + "self_attn.k_proj.weight"] = ("BF16", bf16_bits(rng.standard_normal((2 * hd, h))))
        t[p + "self_attn.v_proj.weight"] = ("BF16", bf16_bits(rng.standard_normal((2 * hd, h))))
        t[p + "self_attn.o_proj.weight"] = ("BF16", bf16_bits(rng.standard_normal((h, 4 * hd))))
        t[p + "mlp.gate_proj.weight"] = ("F16", rng.standard_normal((f, h)).astype(np.float16))
        t[p + "mlp.up_proj.weight"] = ("F16", rng.standard_normal((f, h)).astype(np.float16))
        t[p + "mlp.down_proj.weight"] = ("F32", rng.standard_normal((h, f)).astype(np.float32))
    return t


@pytest.fixture
def tiny_model(tmp_path):
    """A HF folder written by the reference `safetensors` package."""
    d = tmp_path / "tiny-llama"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(TINY_LLAMA))
    write_safetensors(d / "model.safetensors", tiny_llama_tensors(), metadata={"format": "pt"})
    return d


_readers = {}


def reader(path):
    """gguf-py's reader of a GGUF file, opened once per path for the session."""
    if path not in _readers:
        import gguf
        _readers[path] = gguf.GGUFReader(str(path))
    return _readers[path]


def kv(r, key):
    """A metadata value of a GGUF reader, or None when the key is absent."""
    f = r.fields.get(key)
    return None if f is None else f.contents()
