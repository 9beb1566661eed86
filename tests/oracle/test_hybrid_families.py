"""Hybrid Mamba-2 / attention families we convert to GGUF, checked by llama.cpp
(llama-cpp-python 0.3.36) the way test_moe_families.py checks the MoE ones:

  granitemoehybrid        tests/fixtures/tiny-granitemoehybrid (Granite 4.0-H, MoE + shared expert)
  granitemoehybrid-dense  tests/fixtures/tiny-granitemoehybrid-dense (Granite 4.0-H Micro style)
  nemotron_h              tests/fixtures/tiny-nemotron_h (Nemotron-H: Mamba-2, MoE, attention blocks)
  tiny-hybrid             models/tiny-hybrid (the trained Granite 4.0-H style model, bf16)

Each is converted by our binary to F32, F16, Q8_0 and Q4_K_M. Checked:
  - the metadata llama.cpp's loader reads (ssm.*, per-layer head_count_kv with 0 on the
    Mamba layers, Granite's multipliers, Nemotron-H's per-layer feed_forward_length and
    router keys);
  - every tensor of the F32 file, and every F32 tensor of the F16 file, equals the HF
    tensor after the transform llama.cpp's converter applies (A = -exp(A_log) as {1, H},
    D as {1, H}, conv1d squeezed to {K, C}, the gated norm as {d_inner/G, G}, Granite's
    fused gate+up split in two, q/k rows in llama.cpp's rope order);
  - llama.cpp's logits against transformers' (reference_logits.npy) and against a numpy
    forward pass written here from the transformers model definitions (sequential
    Mamba-2 recurrence, not transformers' chunked scan), which is itself checked against
    transformers' logits. The trained model has no reference file; its logits on real
    text are compared with the numpy pass;
  - MLX output for Granite 4.0-H (mlx-lm's granitemoehybrid) and Nemotron-H (mlx-lm's
    nemotron_h: experts stacked into switch_mlp.fc1/fc2, the router kept unquantized,
    A_log and the router's correction bias exempt from the dtype cast): byte for byte
    what mlx_lm.convert writes, and mlx_lm.load runs it.

Nemotron-H: transformers 5 clamps the SSM time step from below at `time_step_min`
(NemotronHMamba2Mixer: `time_step_limit = (time_step_min, inf)`); llama.cpp has no such
clamp (ggml_ssm_scan). On the 32 reference ids a few (token, head) time steps of the
first layer fall below 0.001, so llama.cpp's logits differ from transformers' there by
up to ~0.03 whatever the converter does. The numpy pass computes both variants: with the
clamp it equals transformers' logits, without it llama.cpp's, which is what the F32
check holds llama.cpp to."""
import json
import shutil

import gguf
import llama_cpp
import numpy as np
import pytest

from conftest import REPO, kv, reader, run
from np_llama import load_weights

FIXTURES = REPO / "tests" / "fixtures"
FTYPES = ["F32", "F16", "Q8_0", "Q4_K_M"]
# case -> (source folder, GGUF architecture)
CASES = {
    "granitemoehybrid": (FIXTURES / "tiny-granitemoehybrid", "granitehybrid"),
    "granitemoehybrid-dense": (FIXTURES / "tiny-granitemoehybrid-dense", "granitehybrid"),
    "nemotron_h": (FIXTURES / "tiny-nemotron_h", "nemotron_h_moe"),
    "tiny-hybrid": (REPO / "models" / "tiny-hybrid", "granitehybrid"),
}
WITH_REFERENCE = [c for c in CASES if (CASES[c][0] / "reference_logits.npy").is_file()]


def folder(case):
    return CASES[case][0]


def config(case):
    return json.loads((folder(case) / "config.json").read_text())


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache = {}

    def get(case):
        if case not in cache:
            out = tmp_path_factory.mktemp(f"hybrid-{case}")
            run("quantize", "llm", "--model", folder(case), "--formats", "gguf",
                "--gguf-precision", ",".join(FTYPES), "--output", out)
            name = folder(case).name
            cache[case] = {t: out / "gguf" / t / f"{name}-{t}.gguf" for t in FTYPES}
        return cache[case]

    return get


# ---------------------------------------------------------------- the config, read here

def layout(cfg):
    """(kind of every layer's mixer: 'mamba' | 'attention' | 'moe' | 'mlp', ssm sizes)."""
    if cfg["model_type"] == "granitemoehybrid":
        kinds = list(cfg["layer_types"])
        ssm = dict(heads=cfg["mamba_n_heads"], head_dim=cfg["mamba_d_head"], state=cfg["mamba_d_state"],
                   groups=cfg["mamba_n_groups"], conv=cfg["mamba_d_conv"])
    else:
        letter = {"M": "mamba", "*": "attention", "E": "moe", "-": "mlp"}
        kinds = [letter[c] for c in cfg["hybrid_override_pattern"]]
        ssm = dict(heads=cfg["mamba_num_heads"], head_dim=cfg["mamba_head_dim"], state=cfg["ssm_state_size"],
                   groups=cfg["n_groups"], conv=cfg["conv_kernel"])
    return kinds, ssm


def head_dim(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


# ---------------------------------------------------------------- metadata

@pytest.mark.parametrize("case", CASES)
def test_metadata(converted, case):
    arch = CASES[case][1]
    cfg = config(case)
    kinds, ssm = layout(cfg)
    r = reader(converted(case)["F16"])
    a = lambda k: kv(r, f"{arch}.{k}")  # noqa: E731
    assert kv(r, "general.architecture") == arch
    assert a("block_count") == len(kinds) == cfg["num_hidden_layers"]
    assert a("embedding_length") == cfg["hidden_size"]
    assert a("ssm.conv_kernel") == ssm["conv"]
    assert a("ssm.state_size") == ssm["state"]
    assert a("ssm.group_count") == ssm["groups"]
    assert a("ssm.inner_size") == ssm["heads"] * ssm["head_dim"]
    assert a("ssm.time_step_rank") == ssm["heads"], "llama.cpp's Mamba-2 time_step_rank is the SSM head count"
    assert a("attention.head_count") == cfg["num_attention_heads"]
    # llama.cpp runs a layer as Mamba-2 iff its head_count_kv is 0 (Nemotron-H: and its
    # feed_forward_length is 0).
    assert a("attention.head_count_kv") == [cfg["num_key_value_heads"] if k == "attention" else 0 for k in kinds]
    assert len(kv(r, "tokenizer.ggml.tokens")) == cfg["vocab_size"]
    if arch == "granitehybrid":
        assert a("attention.scale") == pytest.approx(cfg["attention_multiplier"])
        assert a("embedding_scale") == pytest.approx(cfg["embedding_multiplier"])
        assert a("residual_scale") == pytest.approx(cfg["residual_multiplier"])
        assert a("logit_scale") == pytest.approx(cfg["logits_scaling"])
        assert cfg["position_embedding_type"] == "nope"
        assert a("rope.scaling.finetuned") is False, "granitehybrid applies rope unless this key is false"
        assert a("attention.layer_norm_rms_epsilon") == pytest.approx(cfg["rms_norm_eps"])
        if cfg["num_local_experts"]:
            assert a("expert_count") == cfg["num_local_experts"]
            assert a("expert_used_count") == cfg["num_experts_per_tok"]
            assert a("feed_forward_length") == cfg["intermediate_size"]
            assert a("expert_shared_feed_forward_length") == cfg["shared_intermediate_size"]
        else:
            assert a("expert_count") is None and a("expert_used_count") is None
            assert a("feed_forward_length") == cfg["shared_intermediate_size"]
    else:
        assert a("feed_forward_length") == [cfg["moe_intermediate_size"] if k == "moe" else 0 for k in kinds]
        assert a("attention.key_length") == a("attention.value_length") == cfg["head_dim"]
        assert a("attention.layer_norm_epsilon") == pytest.approx(cfg["layer_norm_epsilon"])
        assert a("expert_count") == cfg["n_routed_experts"]
        assert a("expert_used_count") == cfg["num_experts_per_tok"]
        assert a("expert_feed_forward_length") == cfg["moe_intermediate_size"]
        assert a("expert_shared_feed_forward_length") == cfg["moe_shared_expert_intermediate_size"]
        assert a("expert_shared_count") == cfg["n_shared_experts"]
        assert a("expert_weights_norm") is cfg["norm_topk_prob"]
        assert a("expert_weights_scale") == pytest.approx(cfg["routed_scaling_factor"])


# ---------------------------------------------------------------- tensors

def permute(a, heads):
    """llama.cpp's converter (LlamaModel.permute): rotate-half rows -> interleaved."""
    return a.reshape(heads, 2, a.shape[0] // heads // 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


MAMBA = {"in_proj.weight": "ssm_in.weight", "conv1d.weight": "ssm_conv1d.weight",
         "conv1d.bias": "ssm_conv1d.bias", "dt_bias": "ssm_dt.bias", "A_log": "ssm_a", "D": "ssm_d",
         "norm.weight": "ssm_norm.weight", "out_proj.weight": "ssm_out.weight"}
ATTN = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output"}


def mamba_tensor(leaf, a, groups):
    """The Mamba2Model.modify_tensors transforms of llama.cpp's converter."""
    if leaf == "conv1d.weight":
        return a.squeeze()
    if leaf == "A_log":
        return (-np.exp(a)).reshape(-1, 1)
    if leaf == "D":
        return a.reshape(-1, 1)
    if leaf == "norm.weight":
        return a.reshape(groups, -1)
    return a


def expected(case):
    """GGUF name -> the values (numpy shape = GGUF dims reversed) llama.cpp's converter
    stores for this checkpoint."""
    cfg = config(case)
    _, ssm = layout(cfg)
    hf = load_weights(folder(case))
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    want, experts = {}, {}
    for k, a in hf.items():
        if cfg["model_type"] == "granitemoehybrid":
            top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                   "lm_head.weight": "output.weight"}
            if k in top:
                want[top[k]] = a
                continue
            _, _, layer, rest = k.split(".", 3)
            blk = f"blk.{layer}."
            mlp = ("ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp") if cfg["num_local_experts"] else \
                ("ffn_gate", "ffn_up", "ffn_down")
            if rest.startswith("mamba."):
                leaf = rest[len("mamba."):]
                want[blk + MAMBA[leaf]] = mamba_tensor(leaf, a, ssm["groups"])
            elif rest.startswith("self_attn."):
                stem = rest.split(".")[1]
                want[blk + ATTN[stem] + ".weight"] = permute(a, nh) if stem == "q_proj" else \
                    permute(a, nkv) if stem == "k_proj" else a
            elif rest == "input_layernorm.weight":
                want[blk + "attn_norm.weight"] = a
            elif rest == "post_attention_layernorm.weight":
                want[blk + "ffn_norm.weight"] = a
            elif rest == "block_sparse_moe.router.layer.weight":
                want[blk + "ffn_gate_inp.weight"] = a
            elif rest == "block_sparse_moe.input_linear.weight":
                gate, up = np.split(a, 2, axis=-2)
                want[blk + "ffn_gate_exps.weight"], want[blk + "ffn_up_exps.weight"] = gate, up
            elif rest == "block_sparse_moe.output_linear.weight":
                want[blk + "ffn_down_exps.weight"] = a
            elif rest == "shared_mlp.input_linear.weight":
                gate, up = np.split(a, 2, axis=-2)
                want[blk + mlp[0] + ".weight"], want[blk + mlp[1] + ".weight"] = gate, up
            elif rest == "shared_mlp.output_linear.weight":
                want[blk + mlp[2] + ".weight"] = a
            else:
                raise AssertionError(f"unexpected tensor {k}")
        else:
            top = {"backbone.embeddings.weight": "token_embd.weight", "backbone.norm_f.weight": "output_norm.weight",
                   "lm_head.weight": "output.weight"}
            if k in top:
                want[top[k]] = a
                continue
            _, _, layer, rest = k.split(".", 3)
            blk = f"blk.{layer}."
            if rest == "norm.weight":
                want[blk + "attn_norm.weight"] = a
                continue
            leaf = rest[len("mixer."):]
            if leaf.startswith("experts."):
                _, e, proj, _ = leaf.split(".")
                experts.setdefault(blk + f"ffn_{proj[:-len('_proj')]}_exps.weight", {})[int(e)] = a
            elif leaf in MAMBA:
                want[blk + MAMBA[leaf]] = mamba_tensor(leaf, a, ssm["groups"])
            elif leaf.split(".")[0] in ATTN:
                stem = leaf.split(".")[0]
                want[blk + ATTN[stem] + ".weight"] = permute(a, nh) if stem == "q_proj" else \
                    permute(a, nkv) if stem == "k_proj" else a
            else:
                want[blk + {"gate.weight": "ffn_gate_inp.weight", "gate.e_score_correction_bias": "exp_probs_b.bias",
                            "shared_experts.up_proj.weight": "ffn_up_shexp.weight",
                            "shared_experts.down_proj.weight": "ffn_down_shexp.weight",
                            "up_proj.weight": "ffn_up.weight", "down_proj.weight": "ffn_down.weight"}[leaf]] = a
    for name, per in experts.items():
        assert sorted(per) == list(range(len(per))), name
        want[name] = np.stack([per[e] for e in range(len(per))])
    return want


def check_equal(name, t, a):
    got = np.asarray(t.data).reshape(a.shape)
    assert tuple(int(x) for x in t.shape) == tuple(reversed(a.shape)), (name, t.shape, a.shape)
    if name.endswith("ssm_a"):
        # -exp in f32: Rust's expf and numpy's may differ in the last bit.
        np.testing.assert_allclose(got, a, rtol=2e-7, atol=0, err_msg=name)
    else:
        np.testing.assert_array_equal(got, a, err_msg=name)


# What llama.cpp's converter keeps in F32 in an F16 file: 1-D tensors, norms (incl. the
# grouped SSM norm), conv1d, routers, and ssm_a / ssm_d (2-D, but not `.weight`).
F32_IN_F16 = ("_norm.weight", "ssm_conv1d.weight", "ffn_gate_inp.weight", "ssm_a", "ssm_d")


@pytest.mark.parametrize("case", CASES)
def test_f32_tensors_equal_hf_after_transform(converted, case):
    want = expected(case)
    ours = {t.name: t for t in reader(converted(case)["F32"]).tensors}
    assert sorted(ours) == sorted(want)
    for name, a in want.items():
        assert ours[name].tensor_type == gguf.GGMLQuantizationType.F32, name
        check_equal(name, ours[name], a)
    f16 = {t.name: t for t in reader(converted(case)["F16"]).tensors}
    assert sorted(f16) == sorted(want)
    for name, t in f16.items():
        keep = want[name].ndim == 1 or name.endswith(F32_IN_F16)
        want_type = gguf.GGMLQuantizationType.F32 if keep else gguf.GGMLQuantizationType.F16
        assert t.tensor_type == want_type, (name, t.tensor_type)
        if keep:
            check_equal(name, t, want[name])


# ---------------------------------------------------------------- numpy forward pass

def rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1 + np.exp(-x))


def softplus(x):
    return np.logaddexp(0, x)


def mamba2(h, w, p, ssm, eps, dt_min):
    """Mamba-2 mixer (transformers' torch path), as a step-by-step recurrence."""
    n_h, hd, n, g, k = ssm["heads"], ssm["head_dim"], ssm["state"], ssm["groups"], ssm["conv"]
    d_inner = n_h * hd
    conv_dim = d_inner + 2 * g * n
    t_len = len(h)
    zxbcdt = h @ w[p + "in_proj.weight"].T
    z, xbc, dt = zxbcdt[:, :d_inner], zxbcdt[:, d_inner:d_inner + conv_dim], zxbcdt[:, d_inner + conv_dim:]
    cw = w[p + "conv1d.weight"][:, 0, :]  # [channels, k]
    padded = np.concatenate([np.zeros((k - 1, conv_dim)), xbc])
    conv = sum(padded[j:j + t_len] * cw[:, j] for j in range(k)) + w[p + "conv1d.bias"]
    xbc = silu(conv)
    x = xbc[:, :d_inner].reshape(t_len, n_h, hd)
    b = np.repeat(xbc[:, d_inner:d_inner + g * n].reshape(t_len, g, n), n_h // g, axis=1)
    c = np.repeat(xbc[:, d_inner + g * n:].reshape(t_len, g, n), n_h // g, axis=1)
    dt = softplus(dt + w[p + "dt_bias"])
    if dt_min is not None:
        dt = np.maximum(dt, dt_min)
    a = -np.exp(w[p + "A_log"])
    d = w[p + "D"]
    state = np.zeros((n_h, hd, n))
    y = np.zeros((t_len, n_h, hd))
    for t in range(t_len):
        state = state * np.exp(dt[t] * a)[:, None, None] + (dt[t][:, None] * x[t])[:, :, None] * b[t][:, None, :]
        y[t] = np.einsum("hpn,hn->hp", state, c[t]) + d[:, None] * x[t]
    y = y.reshape(t_len, d_inner) * silu(z)
    y = rms(y.reshape(t_len, g, d_inner // g), 1.0, eps).reshape(t_len, d_inner) * w[p + "norm.weight"]
    return y @ w[p + "out_proj.weight"].T


def attention(h, wq, wk, wv, wo, nh, nkv, hd, scale):
    """Causal GQA attention without positional encoding."""
    t_len = len(h)
    q = (h @ wq.T).reshape(t_len, nh, hd)
    k = np.repeat((h @ wk.T).reshape(t_len, nkv, hd), nh // nkv, axis=1)
    v = np.repeat((h @ wv.T).reshape(t_len, nkv, hd), nh // nkv, axis=1)
    s = np.einsum("thd,shd->hts", q, k) * scale + np.triu(np.full((t_len, t_len), -np.inf), 1)
    s = np.exp(s - s.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    return np.einsum("hts,shd->thd", s, v).reshape(t_len, nh * hd) @ wo.T


def granite_logits(cfg, w, ids):
    kinds, ssm = layout(cfg)
    assert cfg.get("position_embedding_type") == "nope", "this reference implements Granite 4.0-H's NoPE attention"
    eps, mult = cfg["rms_norm_eps"], cfg["residual_multiplier"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    x = w["model.embed_tokens.weight"][np.asarray(ids)] * cfg["embedding_multiplier"]
    for i, kind in enumerate(kinds):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"], eps)
        if kind == "mamba":
            out = mamba2(h, w, p + "mamba.", ssm, eps, None)
        else:
            a = lambda n: w[p + f"self_attn.{n}.weight"]  # noqa: E731
            out = attention(h, a("q_proj"), a("k_proj"), a("v_proj"), a("o_proj"), nh, nkv, head_dim(cfg),
                            cfg["attention_multiplier"])
        x = x + out * mult
        h = rms(x, w[p + "post_attention_layernorm.weight"], eps)
        gate, up = np.split(h @ w[p + "shared_mlp.input_linear.weight"].T, 2, axis=-1)
        ffn = (silu(gate) * up) @ w[p + "shared_mlp.output_linear.weight"].T
        if cfg["num_local_experts"]:
            logits = h @ w[p + "block_sparse_moe.router.layer.weight"].T
            top = np.argsort(-logits, axis=-1, kind="stable")[:, :cfg["num_experts_per_tok"]]
            tl = np.take_along_axis(logits, top, -1)
            weights = np.exp(tl - tl.max(-1, keepdims=True))
            weights /= weights.sum(-1, keepdims=True)
            wi, wo = w[p + "block_sparse_moe.input_linear.weight"], w[p + "block_sparse_moe.output_linear.weight"]
            for t in range(len(h)):
                for e, wt in zip(top[t], weights[t]):
                    g_, u_ = np.split(wi[e] @ h[t], 2)
                    ffn[t] += wt * (wo[e] @ (silu(g_) * u_))
        x = x + ffn * mult
    x = rms(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T / cfg["logits_scaling"]


def relu2(x):
    return np.maximum(x, 0) ** 2


def nemotron_logits(cfg, w, ids, dt_clamp):
    kinds, ssm = layout(cfg)
    eps = cfg["layer_norm_epsilon"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    assert cfg["n_group"] == 1 and cfg.get("moe_latent_size") is None
    x = w["backbone.embeddings.weight"][np.asarray(ids)]
    for i, kind in enumerate(kinds):
        p = f"backbone.layers.{i}.mixer."
        h = rms(x, w[f"backbone.layers.{i}.norm.weight"], eps)
        if kind == "mamba":
            out = mamba2(h, w, p, ssm, eps, cfg["time_step_min"] if dt_clamp else None)
        elif kind == "attention":
            a = lambda n: w[p + f"{n}.weight"]  # noqa: E731
            out = attention(h, a("q_proj"), a("k_proj"), a("v_proj"), a("o_proj"), nh, nkv, cfg["head_dim"],
                            1 / np.sqrt(cfg["head_dim"]))
        elif kind == "mlp":
            out = relu2(h @ w[p + "up_proj.weight"].T) @ w[p + "down_proj.weight"].T
        else:
            scores = 1 / (1 + np.exp(-(h @ w[p + "gate.weight"].T)))
            choice = scores + w[p + "gate.e_score_correction_bias"]
            top = np.argsort(-choice, axis=-1, kind="stable")[:, :cfg["num_experts_per_tok"]]
            weights = np.take_along_axis(scores, top, -1)
            if cfg["norm_topk_prob"]:
                weights = weights / (weights.sum(-1, keepdims=True) + 1e-20)
            weights = weights * cfg["routed_scaling_factor"]
            out = relu2(h @ w[p + "shared_experts.up_proj.weight"].T) @ w[p + "shared_experts.down_proj.weight"].T
            for t in range(len(h)):
                for e, wt in zip(top[t], weights[t]):
                    up = w[p + f"experts.{e}.up_proj.weight"] @ h[t]
                    out[t] += wt * (w[p + f"experts.{e}.down_proj.weight"] @ relu2(up))
        x = x + out
    x = rms(x, w["backbone.norm_f.weight"], eps)
    return x @ w["lm_head.weight"].T


_weights = {}


def numpy_logits(case, ids, dt_clamp=False):
    """float64 forward pass of the HF checkpoint. dt_clamp: Nemotron-H's time step floor
    as transformers 5 applies it (see the module doc)."""
    if case not in _weights:
        _weights[case] = {k: v.astype(np.float64) for k, v in load_weights(folder(case)).items()}
    cfg, w = config(case), _weights[case]
    if cfg["model_type"] == "granitemoehybrid":
        return granite_logits(cfg, w, ids)
    return nemotron_logits(cfg, w, ids, dt_clamp)


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


@pytest.mark.parametrize("case", WITH_REFERENCE)
def test_numpy_reference_matches_transformers(case):
    """The numpy pass computes transformers' function (so it can stand in for it where
    there is no reference file, and tell where llama.cpp and transformers differ)."""
    ids = json.loads((folder(case) / "reference_ids.json").read_text())
    ref = np.load(folder(case) / "reference_logits.npy")
    got = numpy_logits(case, ids, dt_clamp=True)
    diff = float(np.abs(got - ref).max())
    print(f"\n{case}: numpy vs transformers max|diff| {diff:.3g} (max|logit| {np.abs(ref).max():.3g})")
    assert diff < 2e-4 * np.abs(ref).max()
    if config(case)["model_type"] == "nemotron_h":
        # Without the time step floor the logits move (the floor is active on these ids).
        assert np.abs(numpy_logits(case, ids, dt_clamp=False) - ref).max() > 10 * diff


@pytest.mark.parametrize("ftype", FTYPES)
@pytest.mark.parametrize("case", CASES)
def test_logits(converted, case, ftype):
    if case in WITH_REFERENCE:
        ids = json.loads((folder(case) / "reference_ids.json").read_text())
    else:
        ids = tiny_hybrid_ids(converted(case)["F16"])
    got = llama_cpp_logits(converted(case)[ftype], ids)
    assert got.shape == (len(ids), config(case)["vocab_size"])
    assert np.isfinite(got).all(), f"{case} {ftype}: non-finite logits"
    # What llama.cpp should compute: the numpy pass (no time step floor, as llama.cpp).
    want = numpy_logits(case, ids)
    diff = float(np.abs(got - want).max())
    scale = float(np.abs(want).max())
    argmax = float(np.mean(got.argmax(1) == want.argmax(1)))
    corr = float(np.corrcoef(got.ravel(), want.ravel())[0, 1])
    line = f"\n{case} {ftype}: vs numpy max|diff| {diff:.3g} (max|logit| {scale:.3g}), argmax {argmax:.1%}, corr {corr:.6f}"
    if case in WITH_REFERENCE:
        ref = np.load(folder(case) / "reference_logits.npy")
        line += f"; vs transformers max|diff| {float(np.abs(got - ref).max()):.3g}, " \
                f"argmax {float(np.mean(got.argmax(1) == ref.argmax(1))):.1%}"
    print(line)
    if ftype == "F32":
        assert diff < 1e-4 * scale + 1e-4 and argmax == 1.0
        if case in WITH_REFERENCE and config(case)["model_type"] == "granitemoehybrid":
            assert np.abs(got - ref).max() < 1e-4 * np.abs(ref).max() + 1e-4
    elif ftype == "F16":
        assert argmax >= 0.95 and corr > 0.9999, line
    else:
        # Quantized files: loaded and run. Routers on near-ties pick other experts at
        # some positions (tiny random models have many), so only a loose bar.
        assert corr > (0.99 if ftype == "Q8_0" else 0.9), line


def tiny_hybrid_ids(path):
    """64 tokens of held-out Wikipedia text, tokenized by llama.cpp from our file."""
    text = (REPO / "data" / "corpora" / "wiki_eval.txt").read_text()[:2000]
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        return llm.tokenize(text.encode(), add_bos=False)[:64]
    finally:
        llm.close()


# ---------------------------------------------------------------- MLX output (Granite 4.0-H, Nemotron-H)

MLX_CASES = ["granitemoehybrid", "granitemoehybrid-dense", "tiny-hybrid", "nemotron_h"]


def quantize_mlx(case, out, *args):
    r = json.loads(run("quantize", "llm", "--model", folder(case), "--formats", "mlx", *args,
                       "--output", out, "--json").stdout)
    return out / r["outputs"][0]["path"]


@pytest.mark.parametrize("case", MLX_CASES)
def test_mlx_same_bytes_as_mlx_lm_convert(case, tmp_path):
    """mlx-lm's granitemoehybrid layout: experts split into switch_mlp.{gate,up,down}_proj
    (dense models: shared_mlp -> mlp.{gate,up,down}_proj), conv1d as [C, K, 1], routers
    at 8 bits group 64: byte for byte what mlx_lm.convert writes, config.json included."""
    from mlx_lm.convert import convert
    from test_mlx_load import assert_same_checkpoint
    group = 64 if case == "tiny-hybrid" else 32
    ours = quantize_mlx(case, tmp_path / "ours", "--mlx-bits", 4, "--mlx-group-size", group, "--mlx-uniform")
    ref = tmp_path / "ref"
    convert(str(folder(case)), str(ref), quantize=True, q_bits=4, q_group_size=group)
    assert_same_checkpoint(ours, ref, recipe=False)


@pytest.mark.parametrize("case", MLX_CASES)
def test_mlx_loads_and_follows_the_reference(converted, case, tmp_path):
    """mlx_lm.load reads our 8-bit output; its logits follow the numpy pass (transformers'
    function; mlx-lm clamps the time step into [0.001, 100] by default, transformers'
    Granite does not, so this is a closeness bar, not an equality)."""
    import mlx.core as mx
    from mlx_lm import load
    out = quantize_mlx(case, tmp_path / "out", "--mlx-bits", 8, "--mlx-group-size", 32, "--mlx-uniform")
    model, _ = load(str(out))
    if case in WITH_REFERENCE:
        ids = json.loads((folder(case) / "reference_ids.json").read_text())
    else:
        ids = tiny_hybrid_ids(converted(case)["F16"])
    got = np.array(model(mx.array([ids])).astype(mx.float32))[0]
    refs = {"numpy": numpy_logits(case, ids)}
    if case in WITH_REFERENCE:
        refs["transformers"] = np.load(folder(case) / "reference_logits.npy")
    for what, want in refs.items():
        argmax = float(np.mean(got.argmax(1) == want.argmax(1)))
        corr = float(np.corrcoef(got.ravel(), want.ravel())[0, 1])
        close = float(np.mean([np.corrcoef(g, w)[0, 1] > 0.99 for g, w in zip(got, want)]))
        print(f"\n{case} MLX 8-bit vs {what}: argmax {argmax:.1%}, corr {corr:.5f}, "
              f"positions with row correlation > 0.99: {close:.1%}")
        # tiny-hybrid's model dtype is bfloat16, which mlx-lm computes in.
        assert argmax >= (0.8 if case == "tiny-hybrid" else 0.9)
        if config(case)["model_type"] == "nemotron_h":
            # 8-bit weights move the sigmoid router's scores; where two experts are nearly
            # tied (many, in a tiny random model) a token goes to another expert and its
            # logits jump: most positions close, few far (unquantized, mlx-lm's logits equal
            # the numpy pass's to 2e-5).
            assert close >= 0.9
        else:
            assert corr > 0.99


def test_mlx_nemotron_h_cast_keeps_a_log_and_router_bias(tmp_path):
    """With a `torch_dtype`, mlx_lm.convert casts every parameter to it except those the
    nemotron_h class's cast_predicate exempts (A_log, e_score_correction_bias), which keep
    the checkpoint's float32; ours matches it byte for byte, uniform and with a mixed recipe
    (v_proj / down_proj of backbone.layers.N by mlx-lm's use_more_bits)."""
    import mlx.core as mx
    from mlx_lm.convert import convert
    from test_mlx_load import assert_same_checkpoint, load_weights
    src = tmp_path / "src"
    shutil.copytree(folder("nemotron_h"), src)
    cfg = config("nemotron_h")
    cfg["torch_dtype"] = "bfloat16"
    (src / "config.json").write_text(json.dumps(cfg, indent=2))
    for args, kw in [(["--mlx-bits", 4, "--mlx-uniform"], dict(q_bits=4)),
                     (["--mlx-recipe", "mixed_3_6"], dict(quant_predicate="mixed_3_6"))]:
        out = tmp_path / f"ours-{args[1]}"
        r = json.loads(run("quantize", "llm", "--model", src, "--formats", "mlx", *args, "--mlx-group-size", 32,
                           "--output", out, "--json").stdout)
        ours = out / r["outputs"][0]["path"]
        ref = tmp_path / f"ref-{args[1]}"
        convert(str(src), str(ref), quantize=True, q_group_size=32, **kw)
        assert_same_checkpoint(ours, ref, recipe="--mlx-recipe" in args)
    w = load_weights(ours)
    kept = {k for k, v in w.items() if v.dtype == mx.float32}
    assert kept and all(k.endswith(("A_log", "e_score_correction_bias")) for k in kept), sorted(kept)
    assert any(k.endswith("A_log") for k in kept) and any(k.endswith("e_score_correction_bias") for k in kept)


# ---------------------------------------------------------------- our runtime (Mamba-2)

@pytest.mark.parametrize("case,ftype,ctx", [("tiny-hybrid", "F16", 512), ("granitemoehybrid", "F32", 128),
                                            ("nemotron_h", "F32", 128)])
def test_runtime_perplexity_equals_llama_cpp(converted, case, ftype, ctx):
    """`eval` runs Granite 4.0-H's Mamba-2 layers (conv state, SSD recurrence, gated
    grouped RMSNorm), NoPE attention, multipliers and (Tiny/Small) experts beside the
    shared MLP: its perplexity, from the HF folder and from our GGUF, equals llama.cpp's
    of that GGUF (the trained dense model; the MoE fixtures, random weights, so a huge
    perplexity; Nemotron-H with relu^2 experts, a sigmoid router and 2 SSM groups). Logits against transformers': crates/pajamas-runtime/tests/reference_logits.rs."""
    from test_eval import llama_cpp_eval, our_eval
    path = converted(case)[ftype]
    theirs, n_scored, _ = llama_cpp_eval(path, ctx=ctx, chunks=4)
    for source in (folder(case), path):
        ours = our_eval(source, ctx=ctx, chunks=4)
        assert ours["scored_tokens"] == n_scored
        rel = abs(ours["perplexity"]["ppl"] / theirs - 1)
        print(f"\n{case} PPL: ours ({source.name}) {ours['perplexity']['ppl']:.4f}, "
              f"llama.cpp ({path.name}) {theirs:.4f} ({rel:.4%})")
        assert rel < 0.01
