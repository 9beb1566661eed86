"""Every dense family we convert, checked end to end by the real consumer, llama.cpp
(llama-cpp-python 0.3.36): tiny random-weight checkpoints made by transformers
(tests/fixtures/tiny-*, scripts/make_tiny_fixtures.py) are converted to F32, F16 and Q8_0
by our binary, run in llama.cpp on fixed token ids, and compared with the logits
transformers computed for the same ids (reference_logits.npy).

Each fixture is converted twice:
  saved   its config.json as transformers 5 writes it: rope settings in `rope_parameters`
  legacy  the same config in the transformers 4 layout that most Hub checkpoints still
          have: `rope_theta`, `rope_scaling` (and Gemma 3's `rope_local_base_freq`,
          `sliding_window_pattern`) at the top level
Both layouts describe the same model, so both must give the reference logits.

Besides the logits: the GGUF metadata llama.cpp reads (gguf.GGUFReader), and, in the F32
file, every tensor against the HF tensor it comes from, with the transforms llama.cpp's
own converter applies (q/k row permutation for the `llama` architecture, +1 on Gemma norms).
"""
import json
import math
import shutil
from functools import lru_cache
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import REPO, run

FIXTURES = REPO / "tests" / "fixtures"
FTYPES = ["F32", "F16", "Q8_0"]
STYLES = ["saved", "legacy"]
# fixture -> GGUF architecture
FAMILIES = {
    "llama": "llama",
    "llama3": "llama",
    "mistral": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma3": "gemma3",
}
# llama.cpp's default sliding-window period for gemma3 when the file declares none
# (llama_model_gemma3::load_arch_hparams: load_swa_pattern(ml, 6)), and its default base
# frequency for the sliding layers (llama_hparams::rope_freq_base_train_swa).
GEMMA3_DEFAULT_SWA_PERIOD = 6
DEFAULT_ROPE_FREQ_BASE_SWA = 10000.0


def legacy_config(cfg: dict) -> dict:
    """The transformers-4 layout of a transformers-5 config.json (see the module doc)."""
    cfg = dict(cfg)
    rp = cfg.pop("rope_parameters", None)
    if rp is None:
        return cfg
    if "full_attention" in rp:  # per-layer-type rope (Gemma 3)
        cfg["rope_theta"] = rp["full_attention"]["rope_theta"]
        cfg["rope_local_base_freq"] = rp["sliding_attention"]["rope_theta"]
        cfg.pop("_sliding_window_pattern", None)
        types = cfg["layer_types"]
        period = types.index("full_attention") + 1
        assert all((t == "full_attention") == ((i + 1) % period == 0) for i, t in enumerate(types))
        cfg["sliding_window_pattern"] = period
    else:
        rp = dict(rp)
        cfg["rope_theta"] = rp.pop("rope_theta")
        if rp.get("rope_type", "default") != "default":
            cfg["rope_scaling"] = rp
    return cfg


def fixture_dir(family: str) -> Path:
    d = FIXTURES / f"tiny-{family}"
    assert (d / "model.safetensors").is_file(), f"{d} is missing: run scripts/make_tiny_fixtures.py"
    return d


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """(family, style) -> {ftype: GGUF path}, converted on first use."""
    cache = {}

    def get(family, style):
        key = (family, style)
        if key not in cache:
            src = fixture_dir(family)
            if style == "legacy":
                d = tmp_path_factory.mktemp(f"legacy-{family}") / f"tiny-{family}"
                shutil.copytree(src, d)
                cfg = json.loads((src / "config.json").read_text())
                (d / "config.json").write_text(json.dumps(legacy_config(cfg), indent=2))
                src = d
            out = tmp_path_factory.mktemp(f"gguf-{family}-{style}")
            run("quantize", "llm", "--model", src, "--gguf-precision", ",".join(FTYPES), "--output", out)
            files = {t: out / "gguf" / t / f"tiny-{family}-{t}.gguf" for t in FTYPES}
            for p in files.values():
                assert p.is_file(), p
            cache[key] = files
        return cache[key]

    return get


# ---------------------------------------------------------------- what the config says

def hf_config(family):
    return json.loads((fixture_dir(family) / "config.json").read_text())


def rope(cfg):
    """(theta of the global layers, theta of the sliding layers or None, rope_parameters)."""
    rp = cfg["rope_parameters"]
    if "full_attention" in rp:
        return rp["full_attention"]["rope_theta"], rp["sliding_attention"]["rope_theta"], rp["full_attention"]
    return rp["rope_theta"], None, rp


def head_dim(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def llama3_rope_freqs(cfg):
    """llama.cpp's rope_freqs (frequency divisors) for Llama-3 rope scaling, from
    transformers' `_compute_llama3_parameters` (modeling_rope_utils)."""
    theta, _, rp = rope(cfg)
    d = head_dim(cfg)
    inv_freq = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    factor, low, high = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"]
    old = rp["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    scaled = np.where(medium, smoothed, scaled)
    return inv_freq / scaled


# ---------------------------------------------------------------- the GGUF side

@lru_cache(maxsize=None)
def reader(path):
    return gguf.GGUFReader(str(path))


def kv(r, key):
    f = r.fields.get(key)
    return None if f is None else f.contents()


def llama_cpp_swa_layers(r, arch, n_layer):
    """Which layers llama.cpp runs with the sliding window, as its loader decides
    (llama_model_base::load_swa_pattern: a per-layer array, else a period, else the
    architecture's default period; layer il slides when il % period < period - 1)."""
    if not kv(r, f"{arch}.attention.sliding_window"):
        return [False] * n_layer
    pattern = kv(r, f"{arch}.attention.sliding_window_pattern")
    if isinstance(pattern, list):
        return [bool(x) for x in pattern[:n_layer]] + [False] * (n_layer - len(pattern))
    period = GEMMA3_DEFAULT_SWA_PERIOD if pattern is None else int(pattern)
    return [period == 0 or i % period < period - 1 for i in range(n_layer)]


def gguf_name(hf: str, arch: str):
    """HF tensor name -> llama.cpp name (gguf-py's tensor map for these architectures)."""
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    _, _, layer, *rest = hf.split(".")
    stem, suffix = ".".join(rest[:-1]), rest[-1]
    leaf = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "self_attn.q_norm": "attn_q_norm",
        "self_attn.k_norm": "attn_k_norm",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "post_attention_norm" if arch == "gemma3" else "ffn_norm",
        "pre_feedforward_layernorm": "ffn_norm",
        "post_feedforward_layernorm": "post_ffw_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }[stem]
    return f"blk.{layer}.{leaf}.{suffix}"


def expected_tensor(hf: str, a: np.ndarray, arch: str, cfg: dict) -> np.ndarray:
    """The values llama.cpp's convert_hf_to_gguf.py stores for an HF tensor."""
    if arch == "llama" and hf.endswith(("q_proj.weight", "k_proj.weight")):
        # LlamaModel.permute: rotate-half rope layout -> llama.cpp's interleaved one
        heads = cfg["num_attention_heads"] if "q_proj" in hf else cfg["num_key_value_heads"]
        return a.reshape(heads, 2, a.shape[0] // heads // 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)
    if arch == "gemma3" and hf.endswith("norm.weight"):
        return a + 1  # Gemma3RMSNorm multiplies by (1 + w)
    return a


# ---------------------------------------------------------------- tests

def cases():
    return [pytest.param(f, s, id=f"{f}-{s}") for f in FAMILIES for s in STYLES]


@pytest.mark.parametrize("family,style", cases())
def test_metadata(converted, family, style):
    arch = FAMILIES[family]
    cfg = hf_config(family)
    r = reader(converted(family, style)["F32"])
    assert kv(r, "general.architecture") == arch
    a = lambda k: kv(r, f"{arch}.{k}")  # noqa: E731
    n_layer = cfg["num_hidden_layers"]
    assert a("block_count") == n_layer
    assert a("embedding_length") == cfg["hidden_size"]
    assert a("feed_forward_length") == cfg["intermediate_size"]
    assert a("context_length") == cfg["max_position_embeddings"]
    assert a("attention.head_count") == cfg["num_attention_heads"]
    assert a("attention.head_count_kv") == cfg["num_key_value_heads"]
    assert a("attention.layer_norm_rms_epsilon") == pytest.approx(cfg["rms_norm_eps"], rel=1e-6)
    d = head_dim(cfg)
    if d != cfg["hidden_size"] // cfg["num_attention_heads"]:
        assert a("attention.key_length") == d and a("attention.value_length") == d
    theta, theta_local, _ = rope(cfg)
    assert a("rope.freq_base") == pytest.approx(theta, rel=1e-6), \
        f"rope.freq_base: config.json's rope theta is {theta} (rope_parameters)"
    assert len(kv(r, "tokenizer.ggml.tokens")) == cfg["vocab_size"]

    names = {t.name for t in r.tensors}
    assert ("output.weight" in names) == (not cfg["tie_word_embeddings"])
    assert ("rope_freqs.weight" in names) == (family == "llama3"), \
        "rope_freqs.weight is written exactly for Llama-3 rope scaling"
    if family == "llama3":
        t = next(t for t in r.tensors if t.name == "rope_freqs.weight")
        np.testing.assert_allclose(np.asarray(t.data, np.float64), llama3_rope_freqs(cfg), rtol=1e-6)
    for i in range(n_layer):
        if family == "qwen2":
            assert {f"blk.{i}.attn_{x}.bias" for x in "qkv"} <= names
        if family in ("qwen3", "gemma3"):
            assert {f"blk.{i}.attn_q_norm.weight", f"blk.{i}.attn_k_norm.weight"} <= names
        if family == "gemma3":
            assert {f"blk.{i}.post_attention_norm.weight", f"blk.{i}.post_ffw_norm.weight"} <= names
    if family == "gemma3":
        assert a("attention.sliding_window") == cfg["sliding_window"]
        want = [t == "sliding_attention" for t in cfg["layer_types"]]
        got = llama_cpp_swa_layers(r, arch, n_layer)
        assert got == want, (
            f"llama.cpp will run sliding-window attention in layers {[i for i, s in enumerate(got) if s]}, "
            f"config.json's layer_types has it in {[i for i, s in enumerate(want) if s]} "
            f"({arch}.attention.sliding_window_pattern = {a('attention.sliding_window_pattern')}; "
            f"absent means llama.cpp's default period {GEMMA3_DEFAULT_SWA_PERIOD})")
        swa_base = a("rope.freq_base_swa")
        assert (DEFAULT_ROPE_FREQ_BASE_SWA if swa_base is None else swa_base) == pytest.approx(theta_local)


@pytest.mark.parametrize("family,style", cases())
def test_f32_tensors_equal_hf(converted, family, style):
    """The F32 file holds every HF tensor exactly, under llama.cpp's name and layout."""
    arch = FAMILIES[family]
    cfg = hf_config(family)
    hf = load_file(str(fixture_dir(family) / "model.safetensors"))
    r = reader(converted(family, style)["F32"])
    ours = {t.name: t for t in r.tensors if t.name != "rope_freqs.weight"}
    want = {gguf_name(k, arch): (k, v) for k, v in hf.items()}
    assert sorted(ours) == sorted(want)
    for name, (hf_name, a) in want.items():
        t = ours[name]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, name
        got = np.asarray(t.data).reshape(a.shape)
        np.testing.assert_array_equal(got, expected_tensor(hf_name, a, arch, cfg), err_msg=f"{name} <- {hf_name}")


def llama_cpp_logits(path, ids):
    # F32 KV cache: llama.cpp's default F16 cache would round K and V, and the F32
    # comparison is meant to measure the conversion alone.
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, logits_all=True, verbose=False, flash_attn=False,
                          n_threads=2, type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    try:
        llm.eval(ids)
        return np.array(llm.scores[:len(ids)], dtype=np.float32)
    finally:
        llm.close()


@pytest.mark.parametrize("ftype", FTYPES)
@pytest.mark.parametrize("family,style", cases())
def test_logits_match_transformers(converted, family, style, ftype):
    d = fixture_dir(family)
    ids = json.loads((d / "reference_ids.json").read_text())
    ref = np.load(d / "reference_logits.npy")
    got = llama_cpp_logits(converted(family, style)[ftype], ids)
    assert got.shape == ref.shape and np.isfinite(got).all()
    diff = float(np.abs(got - ref).max())
    argmax = float(np.mean(got.argmax(1) == ref.argmax(1)))
    corr = float(np.corrcoef(got.ravel(), ref.ravel())[0, 1])
    print(f"\n{family}-{style} {ftype}: max|diff| {diff:.3g} (max|logit| {np.abs(ref).max():.3g}), "
          f"argmax agreement {argmax:.1%}, correlation {corr:.7f}")
    if ftype == "F32":
        assert diff < 1e-3 * np.abs(ref).max() + 1e-3, f"max|diff| {diff:.3g}, argmax {argmax:.1%}, corr {corr:.6f}"
        assert argmax == 1.0
    elif ftype == "F16":
        assert argmax >= 0.95 and corr > 0.999, f"argmax {argmax:.1%}, corr {corr:.6f}"
    else:
        assert argmax >= 0.90 and corr > 0.995, f"argmax {argmax:.1%}, corr {corr:.6f}"
