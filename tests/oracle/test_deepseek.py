"""DeepSeek-V3 (and V2) through llama.cpp's `deepseek2` architecture, checked with
llama-cpp-python 0.3.36 the way test_hybrid_families.py checks the hybrids:

  deepseek_v3   tests/fixtures/tiny-deepseek_v3 (MLA with q_lora, a leading dense layer,
                8 experts top-2 in 4 groups (2 used), sigmoid router with correction bias,
                a shared expert, routed_scaling_factor 2.5, YaRN rope)
  deepseek_v2   tests/fixtures/tiny-deepseek_v2 (V2-Lite style: no query LoRA, softmax
                router without groups or renormalisation, 2 shared experts, YaRN rope
                with mscale = mscale_all_dim = 0.707)

Converted by our binary to F32, F16, Q8_0 and Q4_K_M. Checked:
  - the metadata llama.cpp's loader reads (MLA sizes written as its converter does: one
    latent KV head, key_length = kv_lora + rope, *_mla per-head sizes; leading dense
    block count; expert widths, shared count, gating function, groups, weight scale and
    norm; YaRN keys with the 0.1 * mscale_all_dim log multiplier);
  - every tensor of the F32 file equals the HF tensor after llama.cpp's transforms
    (kv_b_proj split per head into attn_k_b, transposed, and attn_v_b; experts stacked;
    the router and exp_probs_b kept F32 in every file);
  - llama.cpp's logits against transformers' (reference_logits.npy) and against a numpy
    forward pass written here from transformers' DeepseekV3 definition (which is itself
    checked against transformers' logits); the quantized files against the numpy pass
    run on the weights dequantized from the same file;
  - an FP8 checkpoint (F8_E4M3 weights with 128x128 `weight_scale_inv` blocks, built
    here from the fixture) converts to the dequantized values."""
import json

import gguf
import llama_cpp
import numpy as np
import pytest

from conftest import REPO, kv, reader, run
from np_llama import load_weights

FIXTURES = REPO / "tests" / "fixtures"
FTYPES = ["F32", "F16", "Q8_0", "Q4_K_M"]
CASES = {"deepseek_v3": FIXTURES / "tiny-deepseek_v3", "deepseek_v2": FIXTURES / "tiny-deepseek_v2"}


def folder(case):
    return CASES[case]


def config(case):
    return json.loads((folder(case) / "config.json").read_text())


def convert(src, out, ftypes):
    run("quantize", "llm", "--model", src, "--formats", "gguf", "--gguf-precision", ",".join(ftypes),
        "--output", out)
    return {t: out / "gguf" / t / f"{src.name}-{t}.gguf" for t in ftypes}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache = {}

    def get(case):
        if case not in cache:
            cache[case] = convert(folder(case), tmp_path_factory.mktemp(f"ds-{case}"), FTYPES)
        return cache[case]

    return get


def rope_params(cfg):
    rp = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    return rp


# ---------------------------------------------------------------- metadata

@pytest.mark.parametrize("case", CASES)
def test_metadata(converted, case):
    cfg = config(case)
    r = reader(converted(case)["F16"])
    a = lambda k: kv(r, f"deepseek2.{k}")  # noqa: E731
    assert kv(r, "general.architecture") == "deepseek2"
    assert a("block_count") == cfg["num_hidden_layers"]
    assert a("embedding_length") == cfg["hidden_size"]
    assert a("feed_forward_length") == cfg["intermediate_size"]
    assert a("vocab_size") == cfg["vocab_size"]
    assert a("attention.head_count") == cfg["num_attention_heads"]
    # MLA as llama.cpp's converter writes it: an MQA over the latent.
    assert a("attention.head_count_kv") == 1
    # 0 for V2-Lite's plain q_proj: llama.cpp's loader requires the key (unless it
    # recognises a Lite model by its layer count) and reads attn_q when it is 0.
    assert a("attention.q_lora_rank") == (cfg["q_lora_rank"] or 0)
    assert a("attention.kv_lora_rank") == cfg["kv_lora_rank"]
    assert a("attention.key_length") == cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"]
    assert a("attention.value_length") == cfg["kv_lora_rank"]
    assert a("attention.key_length_mla") == cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
    assert a("attention.value_length_mla") == cfg["v_head_dim"]
    assert a("rope.dimension_count") == cfg["qk_rope_head_dim"]
    assert a("attention.layer_norm_rms_epsilon") == pytest.approx(cfg["rms_norm_eps"])
    assert a("leading_dense_block_count") == cfg["first_k_dense_replace"]
    assert a("expert_count") == cfg["n_routed_experts"]
    assert a("expert_used_count") == cfg["num_experts_per_tok"]
    assert a("expert_feed_forward_length") == cfg["moe_intermediate_size"]
    assert a("expert_shared_count") == cfg["n_shared_experts"]
    assert a("expert_weights_scale") == pytest.approx(cfg["routed_scaling_factor"])
    assert (a("expert_weights_norm") or False) is cfg["norm_topk_prob"]
    assert a("expert_gating_func") == {"sigmoid": 2, "softmax": 1}[cfg.get("scoring_func", "softmax")]
    assert a("expert_group_count") == cfg["n_group"]
    assert a("expert_group_used_count") == cfg["topk_group"]
    rp = rope_params(cfg)
    assert a("rope.freq_base") == pytest.approx(rp.get("rope_theta", cfg.get("rope_theta")))
    assert a("rope.scaling.type") == "yarn"
    assert a("rope.scaling.factor") == pytest.approx(rp["factor"])
    assert a("rope.scaling.original_context_length") == rp["original_max_position_embeddings"]
    assert a("rope.scaling.yarn_log_multiplier") == pytest.approx(0.1 * rp["mscale_all_dim"])
    assert len(kv(r, "tokenizer.ggml.tokens")) == cfg["vocab_size"]


# ---------------------------------------------------------------- tensors

DIRECT = {
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_a_proj.weight": "attn_q_a.weight",
    "self_attn.q_a_layernorm.weight": "attn_q_a_norm.weight", "self_attn.q_b_proj.weight": "attn_q_b.weight",
    "self_attn.kv_a_proj_with_mqa.weight": "attn_kv_a_mqa.weight",
    "self_attn.kv_a_layernorm.weight": "attn_kv_a_norm.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight", "mlp.gate.weight": "ffn_gate_inp.weight",
    "mlp.gate.e_score_correction_bias": "exp_probs_b.bias",
    "mlp.shared_experts.gate_proj.weight": "ffn_gate_shexp.weight",
    "mlp.shared_experts.up_proj.weight": "ffn_up_shexp.weight",
    "mlp.shared_experts.down_proj.weight": "ffn_down_shexp.weight",
}
TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
       "lm_head.weight": "output.weight"}


def expected(cfg, hf):
    """GGUF name -> the values (numpy shape = GGUF dims reversed) llama.cpp's converter
    (DeepseekV2Model.modify_tensors) stores."""
    nh, nope, v = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["v_head_dim"]
    want, experts = {}, {}
    for k, a in hf.items():
        if k in TOP:
            want[TOP[k]] = a
            continue
        _, _, layer, rest = k.split(".", 3)
        blk = f"blk.{layer}."
        if rest.startswith("mlp.experts."):
            _, _, e, proj, _ = rest.split(".")
            experts.setdefault(blk + f"ffn_{proj[:-len('_proj')]}_exps.weight", {})[int(e)] = a
        elif rest == "self_attn.kv_b_proj.weight":
            kv_b = a.reshape(nh, nope + v, -1)
            want[blk + "attn_k_b.weight"] = kv_b[:, :nope].transpose(0, 2, 1)
            want[blk + "attn_v_b.weight"] = kv_b[:, nope:]
        else:
            want[blk + DIRECT[rest]] = a
    for name, per in experts.items():
        assert sorted(per) == list(range(len(per))), name
        want[name] = np.stack([per[e] for e in range(len(per))])
    return want


def check_equal(name, t, a):
    got = np.asarray(t.data).reshape(a.shape)
    assert tuple(int(x) for x in t.shape) == tuple(reversed(a.shape)), (name, t.shape, a.shape)
    np.testing.assert_array_equal(got, a, err_msg=name)


F32_IN_F16 = ("_norm.weight", "ffn_gate_inp.weight", "exp_probs_b.bias")


@pytest.mark.parametrize("case", CASES)
def test_f32_tensors_equal_hf_after_transform(converted, case):
    want = expected(config(case), load_weights(folder(case)))
    ours = {t.name: t for t in reader(converted(case)["F32"]).tensors}
    assert sorted(ours) == sorted(want)
    for name, a in want.items():
        assert ours[name].tensor_type == gguf.GGMLQuantizationType.F32, name
        check_equal(name, ours[name], a)
    for ftype in FTYPES[1:]:
        for t in reader(converted(case)[ftype]).tensors:
            if t.name.endswith(F32_IN_F16):
                assert t.tensor_type == gguf.GGMLQuantizationType.F32, (ftype, t.name)
                check_equal(t.name, t, want[t.name])
            else:
                assert t.tensor_type != gguf.GGMLQuantizationType.F32, (ftype, t.name)


# ---------------------------------------------------------------- numpy forward pass

def rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1 + np.exp(-x))


def yarn_mscale(scale, m):
    return 1.0 if scale <= 1 else 0.1 * m * np.log(scale) + 1.0


def rope_tables(cfg, n):
    """(cos, sin) [n, rope/2] of transformers' rotary embedding (default or YaRN) and
    the attention scale factor mscale^2 DeepseekV3Attention applies."""
    d = cfg["qk_rope_head_dim"]
    rp = rope_params(cfg)
    base = rp.get("rope_theta", cfg.get("rope_theta", 10000.0))
    pos_freqs = base ** (np.arange(0, d, 2) / d)
    inv = 1.0 / pos_freqs
    att_scale, cos_scale = 1.0, 1.0
    if rp.get("rope_type", rp.get("type")) == "yarn":
        factor, orig = rp["factor"], rp["original_max_position_embeddings"]
        bf, bs = rp.get("beta_fast", 32), rp.get("beta_slow", 1)

        def dim(rot):
            return d * np.log(orig / (rot * 2 * np.pi)) / (2 * np.log(base))

        low, high = max(np.floor(dim(bf)), 0), min(np.ceil(dim(bs)), d - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(d // 2) - low) / (high - low), 0, 1)
        extra = 1 - ramp
        inv = (1.0 / (factor * pos_freqs)) * (1 - extra) + (1.0 / pos_freqs) * extra
        m, m_all = rp.get("mscale"), rp.get("mscale_all_dim")
        cos_scale = yarn_mscale(factor, m) / yarn_mscale(factor, m_all) if m and m_all else yarn_mscale(factor, 1)
        if m_all:
            att_scale = yarn_mscale(factor, m_all) ** 2
    ang = np.arange(n)[:, None] * inv[None, :]
    return np.cos(ang) * cos_scale, np.sin(ang) * cos_scale, att_scale


def rope_interleaved(x, cos, sin):
    """x [T, H, d] with rotary pairs (2i, 2i+1) (transformers' rope_interleave)."""
    a, b = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)


def mla(h, w, p, cfg, cos, sin, att_scale):
    t_len, nh = len(h), cfg["num_attention_heads"]
    nope, rope, v, r = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"], cfg["kv_lora_rank"]
    eps = cfg["rms_norm_eps"]
    if cfg.get("q_lora_rank"):
        q = rms(h @ w[p + "q_a_proj.weight"].T, w[p + "q_a_layernorm.weight"], eps) @ w[p + "q_b_proj.weight"].T
    else:
        q = h @ w[p + "q_proj.weight"].T
    q = q.reshape(t_len, nh, nope + rope)
    ckv = h @ w[p + "kv_a_proj_with_mqa.weight"].T
    latent, k_rot = ckv[:, :r], ckv[:, r:]
    kv = (rms(latent, w[p + "kv_a_layernorm.weight"], eps) @ w[p + "kv_b_proj.weight"].T).reshape(t_len, nh, nope + v)
    q_rot = rope_interleaved(q[..., nope:], cos, sin)
    k_rot = rope_interleaved(k_rot[:, None, :], cos, sin)
    qq = np.concatenate([q[..., :nope], q_rot], -1)
    kk = np.concatenate([kv[..., :nope], np.repeat(k_rot, nh, axis=1)], -1)
    scale = (nope + rope) ** -0.5 * att_scale
    s = np.einsum("thd,shd->hts", qq, kk) * scale + np.triu(np.full((t_len, t_len), -np.inf), 1)
    s = np.exp(s - s.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    out = np.einsum("hts,shd->thd", s, kv[..., nope:]).reshape(t_len, nh * v)
    return out @ w[p + "o_proj.weight"].T


def mlp(h, w, p):
    return (silu(h @ w[p + "gate_proj.weight"].T) * (h @ w[p + "up_proj.weight"].T)) @ w[p + "down_proj.weight"].T


def route(logits, cfg, bias):
    """transformers' DeepseekV3TopkRouter / V2 gate: (chosen experts, their weights)."""
    k = cfg["num_experts_per_tok"]
    if cfg.get("scoring_func", "softmax") == "sigmoid":
        scores = 1 / (1 + np.exp(-logits))
    else:
        scores = np.exp(logits - logits.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
    choice = scores + bias if bias is not None else scores.copy()
    n_group, topk_group = cfg.get("n_group") or 1, cfg.get("topk_group") or 1
    if n_group > 1:
        grouped = choice.reshape(len(choice), n_group, -1)
        per_group = np.sort(grouped, -1)[..., -2:].sum(-1) if bias is not None else grouped.max(-1)
        keep = np.argsort(-per_group, -1, kind="stable")[:, :topk_group]
        mask = np.zeros_like(per_group, dtype=bool)
        np.put_along_axis(mask, keep, True, -1)
        choice = np.where(np.repeat(mask, grouped.shape[-1], -1), choice, 0.0 if bias is not None else -np.inf)
    top = np.argsort(-choice, -1, kind="stable")[:, :k]
    weights = np.take_along_axis(scores, top, -1)
    if cfg.get("norm_topk_prob") and k > 1:
        weights = weights / (weights.sum(-1, keepdims=True) + 1e-20)
    return top, weights * cfg.get("routed_scaling_factor", 1.0)


def moe(h, w, p, cfg):
    top, weights = route(h @ w[p + "gate.weight"].T, cfg, w.get(p + "gate.e_score_correction_bias"))
    out = mlp(h, w, p + "shared_experts.") if cfg.get("n_shared_experts") else np.zeros_like(h)
    for t in range(len(h)):
        for e, wt in zip(top[t], weights[t]):
            out[t] += wt * mlp(h[t:t + 1], w, p + f"experts.{e}.")[0]
    return out


def numpy_logits(cfg, w, ids):
    """float64 forward pass of a DeepSeek-V2/V3 checkpoint (HF tensor names)."""
    eps = cfg["rms_norm_eps"]
    x = w["model.embed_tokens.weight"][np.asarray(ids)]
    cos, sin, att_scale = rope_tables(cfg, len(ids))
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = x + mla(rms(x, w[p + "input_layernorm.weight"], eps), w, p + "self_attn.", cfg, cos, sin, att_scale)
        h = rms(x, w[p + "post_attention_layernorm.weight"], eps)
        x = x + (mlp(h, w, p + "mlp.") if i < cfg.get("first_k_dense_replace", 0) else moe(h, w, p + "mlp.", cfg))
    x = rms(x, w["model.norm.weight"], eps)
    return x @ w.get("lm_head.weight", w["model.embed_tokens.weight"]).T


def hf_weights_from_gguf(path, cfg):
    """The HF tensors back from one of our GGUF files (dequantized, float64)."""
    inv = {v: k for k, v in DIRECT.items()}
    inv_top = {v: k for k, v in TOP.items()}
    w, kb = {}, {}
    for t in reader(path).tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64).reshape(
            tuple(int(x) for x in reversed(t.shape)))
        if t.name in inv_top:
            w[inv_top[t.name]] = a
            continue
        _, layer, leaf = t.name.split(".", 2)
        p = f"model.layers.{layer}."
        if leaf.endswith("_exps.weight"):
            proj = leaf.split("_")[1]
            for e in range(a.shape[0]):
                w[p + f"mlp.experts.{e}.{proj}_proj.weight"] = a[e]
        elif leaf in ("attn_k_b.weight", "attn_v_b.weight"):
            kb[(layer, leaf)] = a
        else:
            w[p + inv[leaf]] = a
    for layer in {lay for lay, _ in kb}:
        k = kb[(layer, "attn_k_b.weight")].transpose(0, 2, 1)
        v = kb[(layer, "attn_v_b.weight")]
        w[f"model.layers.{layer}.self_attn.kv_b_proj.weight"] = np.concatenate([k, v], 1).reshape(-1, k.shape[-1])
    return w


_weights = {}


def hf_numpy_logits(case, ids):
    if case not in _weights:
        _weights[case] = {k: v.astype(np.float64) for k, v in load_weights(folder(case)).items()}
    return numpy_logits(config(case), _weights[case], ids)


def ids_of(case):
    return json.loads((folder(case) / "reference_ids.json").read_text())


@pytest.mark.parametrize("case", CASES)
def test_numpy_reference_matches_transformers(case):
    ids = ids_of(case)
    ref = np.load(folder(case) / "reference_logits.npy")
    got = hf_numpy_logits(case, ids)
    diff = float(np.abs(got - ref).max())
    print(f"\n{case}: numpy vs transformers max|diff| {diff:.3g} (max|logit| {np.abs(ref).max():.3g})")
    assert diff < 1e-4 * np.abs(ref).max()


# ---------------------------------------------------------------- llama.cpp

def llama_cpp_logits(path, ids):
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
    ids = ids_of(case)
    cfg = config(case)
    path = converted(case)[ftype]
    got = llama_cpp_logits(path, ids)
    assert got.shape == (len(ids), cfg["vocab_size"])
    assert np.isfinite(got).all(), f"{case} {ftype}: non-finite logits"
    ref = np.load(folder(case) / "reference_logits.npy")
    # What llama.cpp should compute on this file: the numpy pass on its own weights.
    want = numpy_logits(cfg, hf_weights_from_gguf(path, cfg), ids)
    diff = float(np.abs(got - want).max())
    scale = float(np.abs(want).max())
    argmax = float(np.mean(got.argmax(1) == want.argmax(1)))
    corr = float(np.corrcoef(got.ravel(), want.ravel())[0, 1])
    ref_diff = float(np.abs(got - ref).max())
    ref_corr = float(np.corrcoef(got.ravel(), ref.ravel())[0, 1])
    line = (f"\n{case} {ftype}: vs numpy on the file's weights max|diff| {diff:.3g} (max|logit| {scale:.3g}), "
            f"argmax {argmax:.1%}, corr {corr:.6f}; vs transformers max|diff| {ref_diff:.3g}, corr {ref_corr:.6f}")
    print(line)
    if ftype == "F32":
        assert ref_diff < 2e-5 * np.abs(ref).max() + 1e-4, line
        assert diff < 2e-5 * scale + 1e-4, line
    elif ftype == "F16":
        assert ref_corr > 0.9999 and argmax == 1.0, line
    else:
        # Quantized files: llama.cpp also rounds the activations (Q8 dot products), and
        # on this random model the router then picks another expert at a position or
        # two, which moves those logits by several units. Most positions must agree.
        per_pos = np.abs(got - want).max(1)
        assert corr > 0.98 and np.median(per_pos) < 0.1 * scale, line


# ---------------------------------------------------------------- FP8 checkpoints

def e4m3_table():
    """The value of every E4M3 byte 0x00..0x7e (positive, increasing), OCP fn variant."""
    b = np.arange(0x7f)
    exp, mant = (b >> 3) & 0xF, (b & 7).astype(np.float64)
    return np.where(exp == 0, mant / 8 * 2.0 ** -6, (1 + mant / 8) * 2.0 ** (exp - 7)).astype(np.float32)


def to_e4m3(x):
    """Round to the nearest E4M3 value: byte codes (|x| <= 448 assumed)."""
    table = e4m3_table()
    mag = np.abs(x)
    hi = np.clip(np.searchsorted(table, mag), 1, len(table) - 1)
    lo = hi - 1
    code = np.where(mag - table[lo] <= table[hi] - mag, lo, hi).astype(np.uint8)
    return code | np.where(x < 0, 0x80, 0).astype(np.uint8)


def from_e4m3(code):
    v = e4m3_table()[code & 0x7F]
    return np.where(code & 0x80, -v, v).astype(np.float32)


def write_raw_safetensors(path, tensors):
    """tensors: name -> (safetensors dtype code, raw numpy array). Written by hand: the
    reference package cannot take F8_E4M3 from numpy."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, arr) in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as fh:
        fh.write(len(text).to_bytes(8, "little"))
        fh.write(text)
        for b in blobs:
            fh.write(b)


FP8_BLOCK = [24, 40]  # partial blocks at the edges of every tiny matrix


def is_fp8_weight(name, a):
    """Which tensors DeepSeek-V3's FP8 checkpoint stores in FP8: the linear layers, not
    the embedding, head, norms or router."""
    return a.ndim == 2 and name.startswith("model.layers.") and "layernorm" not in name \
        and not name.endswith("mlp.gate.weight")


@pytest.fixture(scope="module")
def fp8_model(tmp_path_factory):
    """tiny-deepseek_v3 as an FP8 checkpoint: E4M3 weights with F32 `weight_scale_inv`
    per FP8_BLOCK block (amax / 448), plus the dequantized weights it stands for."""
    src = folder("deepseek_v3")
    out = tmp_path_factory.mktemp("ds-fp8") / "tiny-deepseek_v3-fp8"
    out.mkdir()
    for f in src.iterdir():
        if f.suffix in (".json",) and f.name != "config.json":
            (out / f.name).write_bytes(f.read_bytes())
    cfg = config("deepseek_v3")
    cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                  "weight_block_size": FP8_BLOCK}
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    tensors, dequant = {}, {}
    br, bc = FP8_BLOCK
    for name, a in load_weights(src).items():
        if not is_fp8_weight(name, a):
            tensors[name] = ("F32", a)
            dequant[name] = a
            continue
        rows, cols = a.shape
        nr, nc = -(-rows // br), -(-cols // bc)
        pad = np.zeros((nr * br, nc * bc), np.float32)
        pad[:rows, :cols] = np.abs(a)
        amax = pad.reshape(nr, br, nc, bc).max(axis=(1, 3))
        scale = (np.maximum(amax, 1e-12) / 448.0).astype(np.float32)
        full = np.repeat(np.repeat(scale, br, 0), bc, 1)[:rows, :cols]
        code = to_e4m3(a / full)
        tensors[name] = ("F8_E4M3", code)
        tensors[name + "_scale_inv"] = ("F32", scale)
        dequant[name] = from_e4m3(code) * full
    write_raw_safetensors(out / "model.safetensors", dict(sorted(tensors.items())))
    return out, dequant


def test_fp8_checkpoint_converts_to_its_dequantized_values(fp8_model, tmp_path):
    src, dequant = fp8_model
    cfg = config("deepseek_v3")
    paths = convert(src, tmp_path, ["F32"])
    want = expected(cfg, dequant)
    ours = {t.name: t for t in reader(paths["F32"]).tensors}
    assert sorted(ours) == sorted(want), "the *_scale_inv tensors are consumed, not written"
    for name, a in want.items():
        check_equal(name, ours[name], a)
    # The FP8 rounding is visible (the test would not notice a converter that ignored it
    # only if the weights were E4M3 values already).
    hf = load_weights(folder("deepseek_v3"))
    w = "model.layers.1.self_attn.q_b_proj.weight"
    assert 0 < np.abs(dequant[w] - hf[w]).max() < 0.1 * np.abs(hf[w]).max()
    ids = ids_of("deepseek_v3")
    got = llama_cpp_logits(paths["F32"], ids)
    ref = numpy_logits(cfg, {k: v.astype(np.float64) for k, v in dequant.items()}, ids)
    diff = float(np.abs(got - ref).max())
    print(f"\nFP8 checkpoint F32: llama.cpp vs numpy on the dequantized weights max|diff| {diff:.3g}")
    assert diff < 2e-5 * np.abs(ref).max() + 1e-4


def test_fp8_without_scales_is_refused(fp8_model, tmp_path):
    src, _ = fp8_model
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in src.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((broken / "config.json").read_text())
    del cfg["quantization_config"]["weight_block_size"]
    (broken / "config.json").write_text(json.dumps(cfg))
    p = run("quantize", "llm", "--model", broken, "--gguf-precision", "F16", "--output", tmp_path / "o",
            check=False)
    assert p.returncode != 0
    assert "weight_block_size" in p.stderr and "F8_E4M3" in p.stderr, p.stderr


# ---------------------------------------------------------------- our runtime

@pytest.mark.parametrize("case,ftype", [("deepseek_v3", "F32"), ("deepseek_v3", "Q8_0"), ("deepseek_v3", "Q4_K_M"),
                                        ("deepseek_v2", "F32"), ("deepseek_v2", "Q4_K_M")])
def test_runtime_perplexity_equals_llama_cpp(converted, case, ftype):
    """`eval` runs MLA (decompressed kv_b), the grouped sigmoid router with its
    selection-only bias, shared and dense experts and YaRN rope: its perplexity, from the
    HF folder (F32 file only) and from our GGUF, equals llama.cpp's on that GGUF within
    1% (random weights: a huge perplexity). The runtime computes MLA in llama.cpp's
    absorbed form (k_b on the query, v_b on the latent output), so the activation
    rounding of quantized files happens where llama.cpp's does. Logits against transformers':
    crates/pajamas-runtime/tests/deepseek_logits.rs."""
    from test_eval import llama_cpp_eval, our_eval
    path = converted(case)[ftype]
    # Quantized files: 12 chunks, as on fewer tokens a routing flip or two (random
    # routers, near-ties) moves the perplexity by ~1% either way.
    chunks = 4 if ftype == "F32" else 12
    theirs, n_scored, _ = llama_cpp_eval(path, ctx=128, chunks=chunks)
    sources = [folder(case), path] if ftype == "F32" else [path]
    for source in sources:
        ours = our_eval(source, ctx=128, chunks=chunks)
        assert ours["scored_tokens"] == n_scored
        rel = abs(ours["perplexity"]["ppl"] / theirs - 1)
        print(f"\n{case} PPL: ours ({source.name}) {ours['perplexity']['ppl']:.4f}, "
              f"llama.cpp ({path.name}) {theirs:.4f} ({rel:.4%})")
        assert rel < 0.01



def test_imatrix_like_llama_imatrix(converted, tmp_path):
    """Same entries as llama-imatrix on the same file and text (the MLA halves attn_k_b
    / attn_v_b recorded per head, head-major, as llama.cpp does for the 3-D weights;
    one vector per expert), per-expert token counts equal up to a near-tie or two, sums
    equal to f32/f16 rounding where the counts agree."""
    import os
    import subprocess
    tools = os.environ.get("LLAMA_TOOLS_DIR")
    if not tools:
        pytest.skip("LLAMA_TOOLS_DIR is not set (scripts/test.sh builds llama-imatrix)")
    f32 = converted("deepseek_v3")["F32"]
    text = tmp_path / "calib.txt"
    text.write_text((REPO / "data" / "corpora" / "wiki_calib.txt").read_text()[:12000])
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    run("imatrix", "--model", f32, "--calibration", text, "--output", ours, "--ctx", 128, "--chunks", 4)
    subprocess.run([f"{tools}/llama-imatrix", "-m", str(f32), "-f", str(text), "-o", str(theirs),
                    "-c", "128", "--chunks", "4", "-t", "2"], check=True, capture_output=True)
    a = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(ours)).tensors}
    b = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(theirs)).tensors}
    assert sorted(a) == sorted(b)
    cfg = config("deepseek_v3")
    assert a["blk.1.attn_k_b.weight.in_sum2"].size == cfg["num_attention_heads"] * cfg["qk_nope_head_dim"]
    assert a["blk.1.attn_v_b.weight.in_sum2"].size == cfg["num_attention_heads"] * cfg["kv_lora_rank"]
    exps = [k for k in a if "_exps." in k and k.endswith(".counts")]
    assert exps
    for k in exps:
        assert a[k].size == cfg["n_routed_experts"], k
        assert a[k].sum() == b[k].sum() == cfg["num_experts_per_tok"] * 4 * 128, k
        assert np.abs(a[k] - b[k]).max() <= 2, (k, a[k].ravel(), b[k].ravel())
    for k in a:
        if not k.endswith(".in_sum2"):
            continue
        ca, cb = a[k.replace(".in_sum2", ".counts")].ravel(), b[k.replace(".in_sum2", ".counts")].ravel()
        ra, rb = a[k].reshape(len(ca), -1), b[k].reshape(len(cb), -1)
        for j in range(len(ca)):
            if ca[j] == cb[j]:
                np.testing.assert_allclose(ra[j], rb[j], rtol=2e-3, atol=1e-6 * np.abs(rb[j]).max(),
                                           err_msg=f"{k} [{j}]")


# ---------------------------------------------------------------- MLX output

def mlx_source(case, tmp_path):
    """The fixture with config.json in the spelling of the published DeepSeek-V3 config
    (`rope_theta`, `rope_scaling`; transformers 5 nests both in `rope_parameters`), which
    mlx-lm's deepseek_v3 reads and so mlx_lm.convert copies."""
    import shutil
    d = tmp_path / f"src-{case}"
    shutil.copytree(folder(case), d)
    cfg = config(case)
    rp = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = rp.pop("rope_theta")
    cfg["rope_scaling"] = rp
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    return d


def quantize_mlx(src, out, *args):
    r = json.loads(run("quantize", "llm", "--model", src, "--formats", "mlx", *args, "--output", out,
                       "--json").stdout)
    return out / r["outputs"][0]["path"]


@pytest.mark.parametrize("args,kw", [
    (["--mlx-bits", 4, "--mlx-uniform"], dict(q_bits=4)),
    (["--mlx-recipe", "mixed_3_6"], dict(quant_predicate="mixed_3_6")),
], ids=["uniform-4bit", "mixed_3_6"])
@pytest.mark.parametrize("case", CASES)
def test_mlx_same_bytes_as_mlx_lm_convert(tmp_path, case, args, kw):
    """mlx-lm's deepseek_v3 layout: kv_b_proj split into the MultiLinear embed_q (key rows
    transposed per head) and unembed_out (deepseek_v2: kept as one Linear), experts
    stacked into switch_mlp, the MoEGate router kept unquantized (V3: with its correction
    bias): byte for byte what mlx_lm.convert writes, config.json and index included."""
    from mlx_lm.convert import convert
    from test_mlx_load import assert_same_checkpoint
    src = mlx_source(case, tmp_path)
    ours = quantize_mlx(src, tmp_path / "ours", *args, "--mlx-group-size", 32)
    ref = tmp_path / "ref"
    convert(str(src), str(ref), quantize=True, q_group_size=32, **kw)
    assert_same_checkpoint(ours, ref, recipe="--mlx-recipe" in args)
    cfg = json.loads((ours / "config.json").read_text())
    if case == "deepseek_v3" and "--mlx-recipe" in args:
        assert cfg["quantization"]["model.layers.0.self_attn.embed_q"]
    assert "model.layers.1.mlp.gate" not in cfg["quantization"], "MoEGate is not quantizable"


@pytest.mark.parametrize("args", [["--mlx-bits", 8, "--mlx-uniform"], []], ids=["uniform-8bit", "default"])
@pytest.mark.parametrize("case", CASES)
def test_mlx_loads_and_follows_the_reference(tmp_path, case, args):
    """mlx_lm.load reads our output (from the transformers 5 config: our config.json puts
    back rope_theta / rope_scaling, without which mlx-lm would run without YaRN); 8-bit
    logits follow transformers'. The default (architecture-aware mixed) output loads and
    runs."""
    import mlx.core as mx
    from mlx_lm import load
    out = quantize_mlx(folder(case), tmp_path / "out", *args, "--mlx-group-size", 32)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rope_scaling"]["rope_type"] == "yarn" and cfg["rope_theta"] == 10000.0
    model, _ = load(str(out))
    ids = ids_of(case)
    ref = np.load(folder(case) / "reference_logits.npy")
    got = np.array(model(mx.array([ids])).astype(mx.float32))[0]
    assert np.isfinite(got).all()
    argmax = float(np.mean(got.argmax(1) == ref.argmax(1)))
    corr = float(np.corrcoef(got.ravel(), ref.ravel())[0, 1])
    print(f"\n{case} MLX {args or 'default'}: argmax {argmax:.1%}, corr {corr:.5f}")
    if args:
        assert argmax >= 0.9 and corr > 0.99
    else:
        assert corr > 0.5


def test_fp8_checkpoint_to_mlx_and_runtime(fp8_model, tmp_path):
    """The FP8 checkpoint's MLX output is byte for byte the MLX output of an F32
    checkpoint holding its dequantized weights (scales consumed, not written), and our
    runtime reads the FP8 folder as those weights (same perplexity)."""
    from test_mlx_load import load_weights as mlx_weights
    from test_eval import our_eval
    src, dequant = fp8_model
    plain = tmp_path / "dequantized"
    plain.mkdir()
    for f in src.iterdir():
        if f.suffix == ".json":
            (plain / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((plain / "config.json").read_text())
    del cfg["quantization_config"]
    (plain / "config.json").write_text(json.dumps(cfg, indent=2))
    write_raw_safetensors(plain / "model.safetensors", {k: ("F32", v) for k, v in sorted(dequant.items())})
    a = mlx_weights(quantize_mlx(src, tmp_path / "from-fp8", "--mlx-bits", 4, "--mlx-uniform", "--mlx-group-size", 32))
    b = mlx_weights(quantize_mlx(plain, tmp_path / "from-f32", "--mlx-bits", 4, "--mlx-uniform", "--mlx-group-size", 32))
    assert sorted(a) == sorted(b) and not any("scale_inv" in k for k in a)
    import mlx.core as mx
    for k in a:
        assert np.array_equal(np.array(a[k].view(mx.uint8)), np.array(b[k].view(mx.uint8))), k
    p8, p32 = (our_eval(d, ctx=64, chunks=2)["perplexity"]["ppl"] for d in (src, plain))
    assert p8 == pytest.approx(p32, rel=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_llama_cpp_rules_give_llama_quantize_types(converted, case, tmp_path):
    """`--rules llama.cpp` Q4_K_M: every tensor gets the type llama-quantize gives it from
    our F16 file (MLA tensors, 3-D attn_k_b / attn_v_b, experts, fallbacks)."""
    import os
    import subprocess
    tools = os.environ.get("LLAMA_TOOLS_DIR")
    if not tools:
        pytest.skip("LLAMA_TOOLS_DIR is not set (scripts/test.sh builds llama-quantize)")
    theirs = tmp_path / "theirs.gguf"
    subprocess.run([f"{tools}/llama-quantize", str(converted(case)["F16"]), str(theirs), "Q4_K_M", "2"],
                   check=True, capture_output=True)
    run("quantize", "llm", "--model", folder(case), "--gguf-precision", "Q4_K_M", "--rules", "llama.cpp",
        "--output", tmp_path / "ours")
    ours = tmp_path / "ours" / "gguf" / "Q4_K_M" / f"{folder(case).name}-Q4_K_M.gguf"
    a = {t.name: t.tensor_type for t in gguf.GGUFReader(str(ours)).tensors}
    b = {t.name: t.tensor_type for t in gguf.GGUFReader(str(theirs)).tensors}
    assert a == b, {k: (a[k].name, b.get(k)) for k in a if a[k] != b.get(k)}
