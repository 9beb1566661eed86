"""Issue 6's bar for the architecture-aware mixes: on the trained tiny MoE and hybrid
models, at equal file size (within 2%), our mix has a lower KL divergence against the
original than llama.cpp's stock mix of the same ftype, made by `llama_model_quantize`
(llama-cpp-python 0.3.36) from our F16 file.

The original is our F16 GGUF; every file is scored by our `eval --reference` on the same
chunks of data/corpora/wiki_eval.txt (our runtime's perplexity equals llama-perplexity's
on these files: docs/moe.md). `pytest -s` prints the table of docs/moe.md.

These models are tiny and barely trained: the mean KL divergence is heavy-tailed (one
token carries about 0.69 nats in every quantized file), so the table also shows the
median. The bar is on the mean, as the issue states it."""
import ctypes
import json

import llama_cpp
import pytest

from conftest import REPO, run

MODELS = ["tiny-moe", "tiny-hybrid"]
FTYPE_IDS = {"Q4_K_M": 15, "Q3_K_M": 12}
TEXT = REPO / "data" / "corpora" / "wiki_eval.txt"
CHUNKS = 24


def llama_cpp_quantize(src, dst, ftype_id):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype_id
    params.nthread = 2
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) == 0


def kld(path, reference):
    r = json.loads(run("eval", "--model", path, "--reference", reference, "--text", TEXT,
                       "--ctx", 512, "--chunks", CHUNKS, "--json").stdout)
    return r["kl_divergence"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    out = {}
    for name in MODELS:
        d = tmp_path_factory.mktemp(name)
        run("quantize", "llm", "--model", REPO / "models" / name,
            "--gguf-precision", ",".join(["F16", *FTYPE_IDS]), "--output", d)
        f16 = d / "gguf" / "F16" / f"{name}-F16.gguf"
        for ftype, fid in FTYPE_IDS.items():
            stock = d / f"stock-{ftype}.gguf"
            llama_cpp_quantize(f16, stock, fid)
            out[name, ftype] = (f16, d / "gguf" / ftype / f"{name}-{ftype}.gguf", stock)
    return out


@pytest.mark.parametrize("ftype", list(FTYPE_IDS))
@pytest.mark.parametrize("name", MODELS)
def test_aware_mix_beats_stock_at_equal_size(files, name, ftype):
    f16, ours, stock = files[name, ftype]
    size_ours, size_stock = ours.stat().st_size, stock.stat().st_size
    k_ours, k_stock = kld(ours, f16), kld(stock, f16)
    print(f"\n{name} {ftype}: ours {size_ours} B ({size_ours / size_stock - 1:+.2%}) KLD {k_ours['mean']:.6f} "
          f"(median {k_ours['median']:.6f}); llama.cpp {size_stock} B KLD {k_stock['mean']:.6f} "
          f"(median {k_stock['median']:.6f})")
    assert abs(size_ours / size_stock - 1) <= 0.02, (size_ours, size_stock)
    assert k_ours["mean"] < k_stock["mean"], (k_ours["mean"], k_stock["mean"])
