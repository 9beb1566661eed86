"""HF -> GGUF conversion checked by the real consumer, llama.cpp (llama-cpp-python 0.3.36):
every file type loads and runs; tokenization equals the HF tokenizer's; F16 perplexity
equals the HF original's (numpy reference); our Q4_K_M is as close to the F16 file as
llama.cpp's own (KL divergence); with
llama.cpp-compatible rules our per-tensor types equal llama-quantize's."""
import ctypes
import os
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest
from tokenizers import Tokenizer

from conftest import REPO, run
from np_llama import Model, perplexity

FTYPES = ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S", "Q3_K_M",
          "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K"]
FTYPE_IDS = {"Q4_K_M": 15, "Q3_K_M": 12, "Q5_K_M": 17}
CTX = 256


def models():
    return {"demo": REPO / "models" / "demo", "smollm2": Path(os.environ["SMOLLM2_DIR"])}


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """name -> {ftype: path}: every file type from one read of each model."""
    out = {}
    for name, folder in models().items():
        d = tmp_path_factory.mktemp(f"gguf-{name}")
        run("quantize", "llm", "--model", folder, "--formats", "gguf",
            "--gguf-precision", ",".join(FTYPES), "--output", d)
        compat = tmp_path_factory.mktemp(f"gguf-{name}-compat")
        run("quantize", "llm", "--model", folder, "--gguf-precision", ",".join(FTYPE_IDS),
            "--rules", "llama.cpp", "--output", compat)
        files = {f: d / "gguf" / f / f"{folder.name}-{f}.gguf" for f in FTYPES}
        files.update({f"compat-{f}": compat / "gguf" / f / f"{folder.name}-{f}.gguf" for f in FTYPE_IDS})
        for p in files.values():
            assert p.is_file(), p
        out[name] = files
    return out


def load(path, n_ctx=CTX):
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_threads=2,
                           logits_all=True, verbose=False, flash_attn=False)


def llama_logits(llm):
    def f(ids):
        llm.reset()
        llm.eval(list(ids))
        return np.array(llm.scores[:len(ids)], dtype=np.float32)
    return f


def eval_tokens(folder, limit=None):
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    text = (REPO / "data" / "corpora" / "wiki_eval_small.txt").read_text()
    ids = tok.encode(text, add_special_tokens=False).ids
    return ids[:limit] if limit else ids


@pytest.mark.parametrize("model", ["demo", "smollm2"])
@pytest.mark.parametrize("ftype", FTYPES)
def test_loads_and_runs(converted, model, ftype):
    llm = load(converted[model][ftype], n_ctx=64)
    ids = eval_tokens(models()[model], 32)
    logits = llama_logits(llm)(ids)
    assert np.isfinite(logits).all()
    assert logits.shape == (32, llm.n_vocab())


@pytest.mark.parametrize("model", ["demo", "smollm2"])
def test_tokenization_matches_hf(converted, model):
    folder = models()[model]
    hf = Tokenizer.from_file(str(folder / "tokenizer.json"))
    llm = llama_cpp.Llama(model_path=str(converted[model]["Q8_0"]), vocab_only=True, verbose=False)
    samples = [
        (REPO / "data" / "corpora" / "multilingual.utf8").read_text()[:3000],
        (REPO / "data" / "corpora" / "code.utf8").read_text()[:2000],
        "Numbers 1234567 and 3.14159, emoji 🙂, tabs\tand  double  spaces.\n\nNew paragraph.",
    ]
    for text in samples:
        ours = llm.tokenize(text.encode(), add_bos=False, special=False)
        ref = hf.encode(text, add_special_tokens=False).ids
        assert ours == ref


@pytest.mark.parametrize("model", ["demo", "smollm2"])
def test_f16_perplexity_matches_hf(converted, model):
    folder = models()[model]
    # SmolLM2's numpy reference is slow: its first 1024 tokens (4 contexts)
    ids = eval_tokens(folder, 1024 if model == "smollm2" else None)
    ref = perplexity(Model(folder).logits, ids, CTX)
    ours = perplexity(llama_logits(load(converted[model]["F16"])), ids, CTX)
    print(f"\n{model}: HF (numpy) PPL {ref:.4f}, our F16 GGUF in llama.cpp {ours:.4f}, ratio {ours / ref:.5f}")
    assert abs(ours / ref - 1) < 0.005


def llama_cpp_quantize(src, dst, ftype_id):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype_id
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    assert rc == 0


def tensor_types(path):
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}


@pytest.mark.parametrize("model", ["demo", "smollm2"])
@pytest.mark.parametrize("ftype", list(FTYPE_IDS))
def test_compat_types_equal_llama_quantize(converted, model, ftype, tmp_path):
    theirs = tmp_path / f"{ftype}.gguf"
    llama_cpp_quantize(converted[model]["F16"], theirs, FTYPE_IDS[ftype])
    assert tensor_types(converted[model][f"compat-{ftype}"]) == tensor_types(theirs)


def mean_kl_divergence(f16_fn, q_fn, tokens, ctx):
    """KL(F16 || quantized) per token, averaged over the positions llama-perplexity scores."""
    from np_llama import log_softmax
    total, count = 0.0, 0
    for start in range(0, len(tokens) - ctx + 1, ctx):
        chunk = tokens[start:start + ctx]
        first = ctx // 2
        p = log_softmax(np.asarray(f16_fn(chunk), dtype=np.float64))[first:ctx - 1]
        q = log_softmax(np.asarray(q_fn(chunk), dtype=np.float64))[first:ctx - 1]
        total += float((np.exp(p) * (p - q)).sum())
        count += p.shape[0]
    return total / count


@pytest.mark.parametrize("model", ["demo", "smollm2"])
def test_q4_k_m_kl_divergence_vs_llama_cpp(converted, model, tmp_path):
    """Our Q4_K_M (architecture-aware rules) is at least as close to the F16 file as
    llama.cpp's own Q4_K_M of that F16 file, by KL divergence (within 1%), both run in
    llama.cpp. Perplexity is printed but not the bar: on SmolLM2 a Q4_K_M can score a
    lower perplexity than the F16 file itself, which says nothing about fidelity (with the
    k-quants' model objective ours scores 2% more perplexity on these tokens and less KL
    divergence: docs/kernels.md)."""
    theirs = tmp_path / "Q4_K_M.gguf"
    llama_cpp_quantize(converted[model]["F16"], theirs, 15)
    # SmolLM2: its first 2048 tokens (8 contexts), to keep CI short
    ids = eval_tokens(models()[model], 2048 if model == "smollm2" else None)
    f16 = llama_logits(load(converted[model]["F16"]))
    q_theirs = llama_logits(load(theirs))
    q_ours = llama_logits(load(converted[model]["Q4_K_M"]))
    k_theirs = mean_kl_divergence(f16, q_theirs, ids, CTX)
    k_ours = mean_kl_divergence(f16, q_ours, ids, CTX)
    print(f"\n{model}: Q4_K_M KLD vs F16: llama.cpp {k_theirs:.5f} ({theirs.stat().st_size} B), "
          f"ours {k_ours:.5f} ({converted[model]['Q4_K_M'].stat().st_size} B)")
    assert k_ours <= k_theirs * 1.01


def test_peak_rss_converting_smollm2(tmp_path):
    """Streaming: converting SmolLM2 (269 MB of bf16) stays under 300 MB of resident memory.
    Measured in a fresh interpreter whose only child is the conversion."""
    import subprocess
    import sys
    from conftest import binary
    folder = models()["smollm2"]
    probe = ("import resource, subprocess, sys; "
             "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    p = subprocess.run([sys.executable, "-c", probe, binary(), "quantize", "llm", "--model", str(folder),
                        "--gguf-precision", "Q4_K_M", "--output", str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    peak_kib = int(p.stdout.strip().splitlines()[-1])
    print(f"\npeak RSS converting SmolLM2 -> Q4_K_M: {peak_kib / 1024:.0f} MiB")
    assert peak_kib < 300 * 1024


def test_deterministic_whatever_the_thread_count(tmp_path):
    """Same input and options -> byte-identical files with 1 and 2 threads."""
    outs = []
    for threads in ("1", "2"):
        d = tmp_path / f"t{threads}"
        run("quantize", "llm", "--model", REPO / "models" / "demo", "--gguf-precision", "Q4_K_M,Q3_K_S,Q5_1",
            "--output", d, env={"RAYON_NUM_THREADS": threads})
        outs.append(d)
    for f in ("Q4_K_M", "Q3_K_S", "Q5_1"):
        a = (outs[0] / "gguf" / f / f"demo-{f}.gguf").read_bytes()
        b = (outs[1] / "gguf" / f / f"demo-{f}.gguf").read_bytes()
        assert a == b, f


def test_requantize_from_gguf(converted, tmp_path):
    """A GGUF as --model: dequantized and requantized, with a warning; llama.cpp loads it."""
    src = converted["demo"]["Q8_0"]
    p = run("quantize", "llm", "--model", src, "--gguf-precision", "Q4_K_M", "--output", tmp_path)
    assert "requantizing" in p.stderr
    out = tmp_path / "gguf" / "Q4_K_M" / "demo-Q4_K_M.gguf"
    llm = load(out, n_ctx=64)
    assert np.isfinite(llama_logits(llm)(eval_tokens(models()["demo"], 16))).all()


def test_bad_inputs_are_named(tmp_path):
    demo = REPO / "models" / "demo"
    # output inside the source folder
    p = run("quantize", "llm", "--model", demo, "--output", demo / "out", check=False)
    assert p.returncode != 0 and "inside the source model folder" in p.stderr
    assert not (demo / "out").exists()
    # existing output without --force
    run("quantize", "llm", "--model", demo, "--gguf-precision", "Q8_0", "--output", tmp_path)
    p = run("quantize", "llm", "--model", demo, "--gguf-precision", "Q8_0", "--output", tmp_path, check=False)
    assert p.returncode != 0 and "--force" in p.stderr
    # unknown file type
    p = run("quantize", "llm", "--model", demo, "--gguf-precision", "Q9_X", "--output", tmp_path, check=False)
    assert p.returncode != 0 and "Q9_X" in p.stderr
    # a NaN weight
    import shutil
    from conftest import write_safetensors, bf16_bits
    from safetensors import safe_open
    bad = tmp_path / "nan-model"
    shutil.copytree(demo, bad)
    tensors = {}
    with safe_open(str(demo / "model.safetensors"), framework="numpy") as f:
        names = list(f.keys())
    from np_llama import load_weights
    w = load_weights(demo)
    for k in names:
        tensors[k] = ("BF16", bf16_bits(w[k]))
    arr = w["model.layers.1.mlp.up_proj.weight"].copy()
    arr[3, 7] = np.nan
    tensors["model.layers.1.mlp.up_proj.weight"] = ("BF16", bf16_bits(arr))
    write_safetensors(bad / "model.safetensors", tensors, metadata={"format": "pt"})
    p = run("quantize", "llm", "--model", bad, "--output", tmp_path / "o", check=False)
    assert p.returncode != 0 and "model.layers.1.mlp.up_proj.weight" in p.stderr and "non-finite" in p.stderr
    assert not list((tmp_path / "o").rglob("*.gguf")) and not list((tmp_path / "o").rglob("*.partial"))
    # a tokenizer-less folder
    (bad / "tokenizer.json").unlink()
    p = run("quantize", "llm", "--model", bad, "--output", tmp_path / "o2", check=False)
    assert p.returncode != 0 and "tokenizer" in p.stderr
