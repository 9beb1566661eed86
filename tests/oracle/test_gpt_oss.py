"""OpenAI gpt-oss (`gpt_oss`), converted by our binary to llama.cpp's `gpt-oss`
architecture and checked by llama.cpp (llama-cpp-python 0.3.36):

  gpt_oss        tests/fixtures/tiny-gpt_oss        (float32 experts)
  gpt_oss-mxfp4  tests/fixtures/tiny-gpt_oss-mxfp4  (experts as the published checkpoint
                 stores them: MXFP4 `*_blocks` / `*_scales`)

Both: 4 experts top-2 with biases, the fused and interleaved `gate_up_proj`, clamped
SwiGLU, attention sinks, q/k/v/o biases, a sliding (window 8) then a full attention
layer, YaRN rope, untied head. Checked:
  - the metadata llama.cpp's loader reads (expert sizes, sliding window and which layers
    use it, YaRN keys);
  - every tensor of the F32 file equals the HF tensor after llama.cpp's converter's
    transform (gate/up de-interleaved from the fused tensor, experts transposed); the
    MXFP4 checkpoint's experts are MXFP4 in every file we write, their bytes the
    checkpoint's codes and scales (a numpy repack written here) and their values the
    checkpoint's dequantized values;
  - llama.cpp's logits against a numpy forward pass written here from transformers'
    GptOss model, itself checked against transformers' reference logits. transformers
    runs YaRN with `truncate: false` (the real config's), llama.cpp always rounds the
    correction range to whole dimensions; and ggml multiplies MXFP4 weights by Q8_0
    rounded activations. The numpy pass computes both variants.
"""
import json

import gguf
import llama_cpp
import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import REPO, kv, reader, run

FIXTURES = REPO / "tests" / "fixtures"
FTYPES = ["F32", "F16", "Q8_0", "Q4_K_M", "MXFP4_MOE"]
CASES = {"gpt_oss": FIXTURES / "tiny-gpt_oss", "gpt_oss-mxfp4": FIXTURES / "tiny-gpt_oss-mxfp4"}
ARCH = "gpt-oss"
FP4 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
               dtype=np.float32)


def folder(case):
    return CASES[case]


def config(case):
    return json.loads((folder(case) / "config.json").read_text())


def ref_ids(case):
    return json.loads((folder(case) / "reference_ids.json").read_text())


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache = {}

    def get(case):
        if case not in cache:
            out = tmp_path_factory.mktemp(f"gptoss-{case}")
            run("quantize", "llm", "--model", folder(case), "--formats", "gguf",
                "--gguf-precision", ",".join(FTYPES), "--output", out)
            name = folder(case).name
            cache[case] = {t: out / "gguf" / t / f"{name}-{t}.gguf" for t in FTYPES}
        return cache[case]

    return get


# ---------------------------------------------------------------- the checkpoint, read here

def mxfp4_dequant(blocks, scales):
    """transformers' MXFP4 decoding: byte i of a block holds elements 2i (low nibble) and
    2i+1 (high nibble); value = FP4 * 2^(scale - 127). [..., nb, 16] -> [..., nb * 32]."""
    lo, hi = FP4[blocks & 0x0F], FP4[blocks >> 4]
    vals = np.stack([lo, hi], axis=-1).reshape(*blocks.shape[:-1], 32)
    vals = vals * np.exp2(scales.astype(np.float32) - 127)[..., None]
    return vals.reshape(*blocks.shape[:-2], -1).astype(np.float32)


def ggml_mxfp4_bytes(blocks, scales):
    """The ggml block_mxfp4 bytes of HF blocks/scales [..., nb, 16] / [..., nb]: scale byte,
    then byte j = element j (low nibble) | element j + 16 (high nibble)."""
    codes = np.stack([blocks & 0x0F, blocks >> 4], axis=-1).reshape(*blocks.shape[:-1], 32)
    packed = (codes[..., :16] | (codes[..., 16:] << 4)).astype(np.uint8)
    return np.concatenate([scales[..., None].astype(np.uint8), packed], axis=-1)


def hf_weights(case):
    """The checkpoint with experts as float [E, in, out] (transformers' layout), MXFP4
    experts decoded. Also returns whether the experts were MXFP4."""
    w = load_file(str(folder(case) / "model.safetensors"))
    mx = any(k.endswith("_blocks") for k in w)
    for k in list(w):
        if k.endswith("_blocks"):
            stem = k[: -len("_blocks")]
            dense = mxfp4_dequant(w.pop(k), w.pop(stem + "_scales"))  # [E, out, in]
            w[stem] = np.ascontiguousarray(dense.transpose(0, 2, 1))
    return w, mx


# ---------------------------------------------------------------- metadata

@pytest.mark.parametrize("case", CASES)
def test_metadata(converted, case):
    cfg = config(case)
    r = reader(converted(case)["F16"])
    a = lambda k: kv(r, f"{ARCH}.{k}")  # noqa: E731
    assert kv(r, "general.architecture") == ARCH
    assert a("block_count") == cfg["num_hidden_layers"]
    assert a("embedding_length") == cfg["hidden_size"]
    assert a("attention.head_count") == cfg["num_attention_heads"]
    assert a("attention.head_count_kv") == cfg["num_key_value_heads"]
    assert a("attention.key_length") == a("attention.value_length") == cfg["head_dim"]
    assert a("expert_count") == cfg["num_local_experts"]
    assert a("expert_used_count") == cfg["num_experts_per_tok"]
    assert a("expert_feed_forward_length") == cfg["intermediate_size"]
    assert a("attention.sliding_window") == cfg["sliding_window"]
    assert a("attention.sliding_window_pattern") == [t == "sliding_attention" for t in cfg["layer_types"]]
    assert a("attention.layer_norm_rms_epsilon") == pytest.approx(cfg["rms_norm_eps"])
    rp = cfg["rope_parameters"]
    assert a("rope.freq_base") == pytest.approx(rp["rope_theta"])
    assert a("rope.scaling.type") == "yarn"
    assert a("rope.scaling.factor") == pytest.approx(rp["factor"])
    assert a("rope.scaling.original_context_length") == rp["original_max_position_embeddings"]
    assert a("rope.scaling.yarn_beta_fast") == pytest.approx(rp["beta_fast"])
    assert a("rope.scaling.yarn_beta_slow") == pytest.approx(rp["beta_slow"])
    assert len(kv(r, "tokenizer.ggml.tokens")) == cfg["vocab_size"]


# ---------------------------------------------------------------- tensors

def expected(case):
    """GGUF name -> array (numpy order) of every tensor, after llama.cpp's transform."""
    w, _ = hf_weights(case)
    cfg = config(case)
    out = {"token_embd.weight": w["model.embed_tokens.weight"], "output_norm.weight": w["model.norm.weight"],
           "output.weight": w["lm_head.weight"]}
    for i in range(cfg["num_hidden_layers"]):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        out[b + "attn_norm.weight"] = w[p + "input_layernorm.weight"]
        out[b + "post_attention_norm.weight"] = w[p + "post_attention_layernorm.weight"]
        for hf, g in [("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"), ("o_proj", "attn_output")]:
            out[b + g + ".weight"] = w[p + f"self_attn.{hf}.weight"]
            out[b + g + ".bias"] = w[p + f"self_attn.{hf}.bias"]
        out[b + "attn_sinks.weight"] = w[p + "self_attn.sinks"]
        out[b + "ffn_gate_inp.weight"] = w[p + "mlp.router.weight"]
        out[b + "ffn_gate_inp.bias"] = w[p + "mlp.router.bias"]
        gu = w[p + "mlp.experts.gate_up_proj"].transpose(0, 2, 1)  # [E, 2I, in]
        out[b + "ffn_gate_exps.weight"] = gu[:, ::2, :]
        out[b + "ffn_up_exps.weight"] = gu[:, 1::2, :]
        gub = w[p + "mlp.experts.gate_up_proj_bias"]
        out[b + "ffn_gate_exps.bias"] = gub[:, ::2]
        out[b + "ffn_up_exps.bias"] = gub[:, 1::2]
        out[b + "ffn_down_exps.weight"] = w[p + "mlp.experts.down_proj"].transpose(0, 2, 1)
        out[b + "ffn_down_exps.bias"] = w[p + "mlp.experts.down_proj_bias"]
    return out


def dequant(t):
    return gguf.quants.dequantize(t.data, t.tensor_type).reshape([int(d) for d in reversed(t.shape)])


@pytest.mark.parametrize("case", CASES)
def test_f32_tensors_equal_hf_after_transform(converted, case):
    want = expected(case)
    _, mx = hf_weights(case)
    r = reader(converted(case)["F32"])
    names = {t.name for t in r.tensors}
    assert names == set(want), sorted(names ^ set(want))
    for t in r.tensors:
        got = dequant(t)
        if mx and "_exps.weight" in t.name:
            assert t.tensor_type == gguf.GGMLQuantizationType.MXFP4, t.name
            np.testing.assert_array_equal(got, want[t.name], err_msg=t.name)
        else:
            assert t.tensor_type == gguf.GGMLQuantizationType.F32, t.name
            np.testing.assert_array_equal(got, want[t.name].astype(np.float32), err_msg=t.name)


def test_mxfp4_experts_are_the_checkpoints_bytes(converted):
    """The MXFP4 experts are copied, not requantized: in every file (the float types, Q8_0
    and Q4_K_M, whose 4.5 to 8.5 bits would only round the same values again, and
    MXFP4_MOE), each expert tensor's bytes are the checkpoint's scales and codes in ggml's
    nibble order (gate = even rows of gate_up_proj, up = odd rows)."""
    case = "gpt_oss-mxfp4"
    raw = load_file(str(folder(case) / "model.safetensors"))
    cfg = config(case)
    for ftype, path in converted(case).items():
        r = reader(path)
        tensors = {t.name: t for t in r.tensors}
        for i in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{i}.mlp.experts."
            gu_b, gu_s = raw[p + "gate_up_proj_blocks"], raw[p + "gate_up_proj_scales"]
            want = {
                "ffn_gate_exps": ggml_mxfp4_bytes(gu_b[:, ::2], gu_s[:, ::2]),
                "ffn_up_exps": ggml_mxfp4_bytes(gu_b[:, 1::2], gu_s[:, 1::2]),
                "ffn_down_exps": ggml_mxfp4_bytes(raw[p + "down_proj_blocks"], raw[p + "down_proj_scales"]),
            }
            for g, bytes_ in want.items():
                t = tensors[f"blk.{i}.{g}.weight"]
                assert t.tensor_type == gguf.GGMLQuantizationType.MXFP4, (ftype, t.name)
                assert bytes(np.asarray(t.data).tobytes()) == bytes_.tobytes(), (ftype, t.name)
        if ftype == "MXFP4_MOE":
            assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
            assert tensors["output.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0


def test_mxfp4_from_float_weights(converted):
    """MXFP4_MOE from the float checkpoint: our kernel's blocks decode (gguf-py) to the
    nearest FP4 values at ggml's scale, and llama-quantize's reference quantizer (gguf-py's
    numpy port of quantize_row_mxfp4_ref) writes the same bytes."""
    r = reader(converted("gpt_oss")["MXFP4_MOE"])
    want = expected("gpt_oss")
    n = 0
    for t in r.tensors:
        if not t.name.endswith("_exps.weight"):
            continue
        n += 1
        assert t.tensor_type == gguf.GGMLQuantizationType.MXFP4, t.name
        src = want[t.name].astype(np.float32)
        ref = gguf.quants.quantize(src, gguf.GGMLQuantizationType.MXFP4)
        assert np.asarray(t.data).tobytes() == ref.tobytes(), t.name
        got = dequant(t)
        err = np.abs(got - src).max() / np.abs(src).max()
        assert err < 0.25, (t.name, err)
    assert n == 3 * config("gpt_oss")["num_hidden_layers"]


# ---------------------------------------------------------------- numpy forward pass

def rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def q8_0_round(x):
    """ggml's Q8_0 rounding of activations (blocks of 32 along the last axis), which its
    CPU backend applies to the input of an MXFP4 matrix product."""
    b = x.reshape(*x.shape[:-1], -1, 32).astype(np.float32)
    d = np.abs(b).max(-1, keepdims=True) / 127
    d16 = d.astype(np.float16).astype(np.float32)
    inv = np.where(d > 0, 1 / np.where(d > 0, d, 1), 0)
    q = np.round(b * inv)
    return (q * d16).reshape(x.shape)


def yarn_inv_freq(cfg, truncate):
    rp = cfg["rope_parameters"]
    d, base, factor = cfg["head_dim"], rp["rope_theta"], rp["factor"]
    orig = rp["original_max_position_embeddings"]
    pos_freqs = base ** (np.arange(0, d, 2, dtype=np.float64) / d)
    extrap, interp = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)

    def corr(rot):
        return d * np.log(orig / (rot * 2 * np.pi)) / (2 * np.log(base))

    low, high = corr(rp["beta_fast"]), corr(rp["beta_slow"])
    if truncate:
        low, high = np.floor(low), np.ceil(high)
    low, high = max(low, 0), min(high, d - 1)
    ramp = np.clip((np.arange(d // 2) - low) / max(high - low, 1e-3), 0, 1)
    extrap_factor = 1 - ramp
    inv = interp * (1 - extrap_factor) + extrap * extrap_factor
    return inv, 0.1 * np.log(factor) + 1.0


def rope(x, pos, inv, mscale):
    ang = pos[:, None] * inv[None, :]
    cos, sin = np.cos(ang) * mscale, np.sin(ang) * mscale
    cos, sin = np.concatenate([cos, cos], -1)[:, None, :], np.concatenate([sin, sin], -1)[:, None, :]
    half = x.shape[-1] // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], -1)
    return x * cos + rot * sin


def numpy_logits(case, ids, truncate, q8_mxfp4=False, weights=None):
    """transformers' GptOssForCausalLM in float64. `truncate`: YaRN's correction range in
    whole dimensions (llama.cpp) or not (the config's `truncate: false`, transformers).
    `q8_mxfp4`: round the inputs of MXFP4 expert products to Q8_0 as ggml does.
    `weights`: HF-layout weights to use instead of the checkpoint's."""
    cfg = config(case)
    w, mx = hf_weights(case) if weights is None else (weights, False)
    w = {k: v.astype(np.float64) for k, v in w.items()}
    n, h = len(ids), cfg["hidden_size"]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps, k_top, window = cfg["rms_norm_eps"], cfg["num_experts_per_tok"], cfg["sliding_window"]
    alpha, limit = cfg["swiglu_alpha"], cfg["swiglu_limit"]
    inv, mscale = yarn_inv_freq(cfg, truncate)
    pos = np.arange(n, dtype=np.float64)
    qi, ki = np.arange(n)[:, None], np.arange(n)[None, :]
    x = w["model.embed_tokens.weight"][ids]
    rnd = (lambda a: q8_0_round(a).astype(np.float64)) if (mx and q8_mxfp4) else (lambda a: a)
    for i, kind in enumerate(cfg["layer_types"]):
        p = f"model.layers.{i}."
        a = rms(x, w[p + "input_layernorm.weight"], eps)
        lin = lambda name, v: v @ w[p + name + ".weight"].T + w[p + name + ".bias"]  # noqa: E731
        q = rope(lin("self_attn.q_proj", a).reshape(n, nh, hd), pos, inv, mscale)
        k = rope(lin("self_attn.k_proj", a).reshape(n, nkv, hd), pos, inv, mscale)
        v = lin("self_attn.v_proj", a).reshape(n, nkv, hd)
        rep = nh // nkv
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd)
        allowed = ki <= qi
        if kind == "sliding_attention":
            allowed = allowed & (qi - ki < window)
        s = np.where(allowed[None], s, -np.inf)
        sink = np.broadcast_to(w[p + "self_attn.sinks"][:, None, None], (nh, n, 1))
        full = np.concatenate([s, sink], -1)
        full = np.exp(full - full.max(-1, keepdims=True))
        prob = (full / full.sum(-1, keepdims=True))[..., :-1]
        o = np.einsum("hqk,khd->qhd", prob, v).reshape(n, nh * hd)
        x = x + lin("self_attn.o_proj", o)
        a = rms(x, w[p + "post_attention_layernorm.weight"], eps)
        logits = a @ w[p + "mlp.router.weight"].T + w[p + "mlp.router.bias"]
        y = np.zeros_like(x)
        for t in range(n):
            top = np.argsort(-logits[t], kind="stable")[:k_top]
            sc = np.exp(logits[t, top] - logits[t, top].max())
            sc /= sc.sum()
            for e, s_e in zip(top, sc):
                gu = rnd(a[t]) @ w[p + "mlp.experts.gate_up_proj"][e] + w[p + "mlp.experts.gate_up_proj_bias"][e]
                gate, up = np.minimum(gu[::2], limit), np.clip(gu[1::2], -limit, limit)
                glu = gate / (1 + np.exp(-alpha * gate))
                d = rnd((up + 1) * glu) @ w[p + "mlp.experts.down_proj"][e] + w[p + "mlp.experts.down_proj_bias"][e]
                y[t] += s_e * d
        x = x + y
    x = rms(x, w["model.norm.weight"], eps)
    return (x @ w["lm_head.weight"].T).astype(np.float32)


@pytest.mark.parametrize("case", CASES)
def test_numpy_reference_matches_transformers(case):
    """The numpy pass is transformers' function (YaRN with the config's truncate: false);
    rounding YaRN's correction range as llama.cpp does changes the logits measurably."""
    ids = ref_ids(case)
    ref = np.load(folder(case) / "reference_logits.npy")
    got = numpy_logits(case, ids, truncate=False)
    diff = float(np.abs(got - ref).max())
    print(f"\n{case}: numpy vs transformers max|diff| {diff:.3g} (max|logit| {np.abs(ref).max():.3g})")
    assert diff < 2e-4 * np.abs(ref).max()
    assert np.abs(numpy_logits(case, ids, truncate=True) - ref).max() > 10 * diff


# ---------------------------------------------------------------- llama.cpp

def llama_cpp_logits(path, ids):
    # F32 KV cache, so that the F32 comparison measures the conversion alone.
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=128, logits_all=True, verbose=False, flash_attn=False,
                          n_threads=2, type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    try:
        llm.eval(ids)
        return np.array(llm.scores[:len(ids)], dtype=np.float32)
    finally:
        llm.close()


@pytest.mark.parametrize("ftype", FTYPES)
@pytest.mark.parametrize("case", CASES)
def test_logits(converted, case, ftype):
    ids = ref_ids(case)
    got = llama_cpp_logits(converted(case)[ftype], ids)
    assert got.shape == (len(ids), config(case)["vocab_size"])
    assert np.isfinite(got).all(), f"{case} {ftype}: non-finite logits"
    want = numpy_logits(case, ids, truncate=True, q8_mxfp4=True)
    ref = np.load(folder(case) / "reference_logits.npy")
    diff = float(np.abs(got - want).max())
    scale = float(np.abs(want).max())
    argmax = float(np.mean(got.argmax(1) == want.argmax(1)))
    corr = float(np.corrcoef(got.ravel(), want.ravel())[0, 1])
    print(f"\n{case} {ftype}: vs numpy max|diff| {diff:.3g} (max|logit| {scale:.3g}), argmax {argmax:.1%}, "
          f"corr {corr:.6f}; vs transformers max|diff| {float(np.abs(got - ref).max()):.3g}")
    if ftype == "F32":
        assert diff < 1e-4 * scale + 1e-4 and argmax == 1.0
    elif ftype == "F16":
        assert argmax >= 0.95 and corr > 0.9999
    else:
        assert corr > (0.99 if ftype == "Q8_0" else 0.9)


# ---------------------------------------------------------------- our runtime

@pytest.mark.parametrize("case,ftype", [("gpt_oss", "F32"), ("gpt_oss", "F16"),
                                        ("gpt_oss-mxfp4", "F16"), ("gpt_oss-mxfp4", "MXFP4_MOE")])
def test_runtime_perplexity_equals_llama_cpp(converted, case, ftype):
    """`eval` runs gpt-oss (sinks, sliding window 8 within ctx 128, YaRN, biased router and
    clamped SwiGLU experts; MXFP4 experts times Q8_0-rounded activations as ggml does):
    its perplexity on our GGUF, and on the HF folder, equals llama.cpp's on that GGUF
    (random weights: a huge perplexity, which moves with any difference).
    Logits against transformers': crates/pajamas-runtime/tests/gpt_oss.rs."""
    from test_eval import llama_cpp_eval, our_eval
    path = converted(case)[ftype]
    theirs, n_scored, _ = llama_cpp_eval(path, ctx=128, chunks=4)
    # The HF folder of the float checkpoint too (the MXFP4 one computes with f32
    # activations where ggml rounds them to Q8_0; crates/pajamas-runtime/tests/gpt_oss.rs
    # checks its logits against transformers').
    sources = [path] + ([folder(case)] if case == "gpt_oss" else [])
    for source in sources:
        ours = our_eval(source, ctx=128, chunks=4)
        assert ours["scored_tokens"] == n_scored
        rel = abs(ours["perplexity"]["ppl"] / theirs - 1)
        print(f"\n{case} PPL: ours ({source.name}) {ours['perplexity']['ppl']:.1f}, "
              f"llama.cpp ({path.name}) {theirs:.1f} ({rel:.4%})")
        assert rel < 0.01


def test_imatrix_has_per_expert_entries(converted, tmp_path):
    """`imatrix` on the MXFP4 file: one entry per stacked expert tensor with a column of
    sums and a count per expert (the counts of a layer add up to tokens x top-k), the
    router as ffn_gate_inp; `quantize --imatrix` takes it for the float checkpoint."""
    cfg = config("gpt_oss")
    out = tmp_path / "im.gguf"
    text = REPO / "data" / "corpora" / "wiki_eval_small.txt"
    s = json.loads(run("imatrix", "--model", converted("gpt_oss-mxfp4")["MXFP4_MOE"], "--calibration", text,
                       "--ctx", 64, "--chunks", 2, "--output", out, "--json").stdout)
    r = gguf.GGUFReader(str(out))
    t = {x.name: x for x in r.tensors}
    n_e, h, w = cfg["num_local_experts"], cfg["hidden_size"], cfg["intermediate_size"]
    for i in range(cfg["num_hidden_layers"]):
        for g, cols in [("ffn_gate_exps", h), ("ffn_up_exps", h), ("ffn_down_exps", w)]:
            sums = t[f"blk.{i}.{g}.weight.in_sum2"]
            counts = np.asarray(t[f"blk.{i}.{g}.weight.counts"].data, dtype=np.float64).ravel()
            assert [int(d) for d in sums.shape] == [cols, n_e], g
            assert counts.shape == (n_e,)
            assert counts.sum() == s["tokens"] * cfg["num_experts_per_tok"]
            assert (counts > 0).sum() >= 2
        assert f"blk.{i}.ffn_gate_inp.weight.in_sum2" in t
        assert f"blk.{i}.attn_q.weight.in_sum2" in t
    q = tmp_path / "q"
    run("quantize", "llm", "--model", folder("gpt_oss"), "--gguf-precision", "Q4_K_M", "--imatrix", out,
        "--output", q)
    assert (q / "gguf" / "Q4_K_M" / "tiny-gpt_oss-Q4_K_M.gguf").is_file()


# ---------------------------------------------------------------- MLX output

def quantize_mlx(case, out, *args):
    r = json.loads(run("quantize", "llm", "--model", folder(case), "--formats", "mlx", *args,
                       "--output", out, "--json").stdout)
    return out / r["outputs"][0]["path"]


def mlx_as_hf(path):
    """Our MLX checkpoint dequantized (mx.dequantize) back into the HF layout: the
    experts re-fused and re-interleaved, so the numpy pass runs what the file encodes."""
    import mlx.core as mx
    cfg = json.loads((path / "config.json").read_text())
    q = cfg["quantization"]
    raw = mx.load(str(path / "model.safetensors"))
    w = {}
    for k, v in raw.items():
        if k.endswith(".scales") or k.endswith(".biases"):
            continue
        module = k[: -len(".weight")] if k.endswith(".weight") else None
        if module and module + ".scales" in raw:
            spec = q.get(module) or {"bits": q["bits"], "group_size": q["group_size"]}
            v = mx.dequantize(v, raw[module + ".scales"], raw[module + ".biases"],
                              group_size=spec["group_size"], bits=spec["bits"])
        w[k] = np.array(v.astype(mx.float32))
    for i in range(cfg["num_hidden_layers"]):
        e = f"model.layers.{i}.mlp.experts."
        gate, up = w.pop(e + "gate_proj.weight"), w.pop(e + "up_proj.weight")  # [E, I, in]
        gu = np.empty((gate.shape[0], 2 * gate.shape[1], gate.shape[2]), np.float32)
        gu[:, ::2], gu[:, 1::2] = gate, up
        w[e + "gate_up_proj"] = gu.transpose(0, 2, 1)
        gb, ub = w.pop(e + "gate_proj.bias"), w.pop(e + "up_proj.bias")
        gub = np.empty((gb.shape[0], 2 * gb.shape[1]), np.float32)
        gub[:, ::2], gub[:, 1::2] = gb, ub
        w[e + "gate_up_proj_bias"] = gub
        w[e + "down_proj"] = w.pop(e + "down_proj.weight").transpose(0, 2, 1)
        w[e + "down_proj_bias"] = w.pop(e + "down_proj.bias")
    return w


@pytest.mark.parametrize("args", [["--mlx-bits", 4, "--mlx-group-size", 32, "--mlx-uniform"], []],
                         ids=["uniform-4bit", "default"])
@pytest.mark.parametrize("case", CASES)
def test_mlx_loads_and_runs_what_it_encodes(case, args, tmp_path):
    """mlx-lm's gpt_oss (sanitize leaves our de-interleaved `mlp.experts.{gate,up,down}_proj`
    alone) loads our 4-bit and default (architecture-aware mixed) checkpoints; its logits
    equal the numpy pass run on the checkpoint's dequantized weights (mlx-lm's YaRN
    rounds the correction range as llama.cpp does), so every tensor sits where mlx-lm
    reads it. The router is 8-bit group 64 as mlx-lm's quant_predicate makes it; the
    config carries rope_theta / rope_scaling, which mlx-lm's ModelArgs reads. (mlx_lm.convert
    cannot process this transformers 5 checkpoint: its sanitize renames the float
    `gate_up_proj` to a name its model lacks, so there is no byte comparison.) The MXFP4
    checkpoint's experts are decoded and quantized for mlx like float ones."""
    import mlx.core as mx
    from mlx_lm import load
    out = quantize_mlx(case, tmp_path / "out", *args)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rope_theta"] == cfg["rope_parameters"]["rope_theta"]
    assert cfg["rope_scaling"]["rope_type"] == "yarn"
    assert cfg["quantization"]["model.layers.0.mlp.router"]["bits"] == 8
    model, _ = load(str(out))
    ids = ref_ids(case)
    got = np.array(model(mx.array([ids])).astype(mx.float32))[0]
    want = numpy_logits(case, ids, truncate=True, weights=mlx_as_hf(out))
    diff = float(np.abs(got - want).max())
    ref = np.load(folder(case) / "reference_logits.npy")
    corr = float(np.corrcoef(got.ravel(), ref.ravel())[0, 1])
    print(f"\n{case} MLX {out.name}: vs numpy on its weights max|diff| {diff:.3g}; vs transformers corr {corr:.4f}")
    assert diff < 1e-3 * np.abs(want).max()


@pytest.mark.parametrize("case", CASES)
def test_mlx_8bit_follows_the_reference(case, tmp_path):
    """At 8 bits mlx-lm's logits on our checkpoint follow transformers' reference."""
    import mlx.core as mx
    from mlx_lm import load
    out = quantize_mlx(case, tmp_path / "out", "--mlx-bits", 8, "--mlx-group-size", 32, "--mlx-uniform")
    model, _ = load(str(out))
    ids = ref_ids(case)
    got = np.array(model(mx.array([ids])).astype(mx.float32))[0]
    ref = np.load(folder(case) / "reference_logits.npy")
    argmax = float(np.mean(got.argmax(1) == ref.argmax(1)))
    corr = float(np.corrcoef(got.ravel(), ref.ravel())[0, 1])
    print(f"\n{case} MLX 8-bit: argmax {argmax:.1%}, corr {corr:.5f}")
    assert argmax >= 0.9 and corr > 0.999


def test_runtime_reads_our_mlx_checkpoint(converted, tmp_path):
    """`eval --model MLX_DIR` dequantizes the stacked 4-bit experts (`[E, out, words]`)
    and runs gpt-oss: its perplexity equals the one mlx-lm's logits give on the same
    chunks (tokenized by llama.cpp from our GGUF of the same checkpoint, llama-perplexity's
    procedure)."""
    import mlx.core as mx
    from mlx_lm import load
    from test_eval import EVAL_SMALL, our_eval
    case, ctx, chunks = "gpt_oss", 128, 4
    out = quantize_mlx(case, tmp_path / "out", "--mlx-bits", 4, "--mlx-group-size", 32, "--mlx-uniform")
    llm = llama_cpp.Llama(model_path=str(converted(case)["F16"]), vocab_only=True, verbose=False)
    try:
        add_bos = llm._model.add_bos_token()
        ids = llm.tokenize(EVAL_SMALL.read_bytes(), add_bos=add_bos, special=False)
        bos = llm.token_bos()
    finally:
        llm.close()
    model, _ = load(str(out))
    nll = []
    for c in range(min(chunks, len(ids) // ctx)):
        chunk = list(ids[c * ctx:(c + 1) * ctx])
        if add_bos:
            chunk[0] = bos
        logits = np.array(model(mx.array([chunk])).astype(mx.float32))[0].astype(np.float64)
        first = ctx // 2
        lg = logits[first:ctx - 1]
        m = lg.max(1, keepdims=True)
        lse = np.log(np.exp(lg - m).sum(1)) + m[:, 0]
        nll.extend(lse - lg[np.arange(len(lg)), chunk[first + 1:ctx]])
    theirs = float(np.exp(np.mean(nll)))
    ours = our_eval(out, ctx=ctx, chunks=chunks)
    assert ours["scored_tokens"] == len(nll)
    rel = abs(ours["perplexity"]["ppl"] / theirs - 1)
    print(f"\nMLX 4-bit PPL: ours {ours['perplexity']['ppl']:.1f}, mlx-lm {theirs:.1f} ({rel:.4%})")
    assert rel < 0.01
