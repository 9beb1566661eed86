"""Mixture-of-experts families we convert (Mixtral, Qwen2-MoE, Qwen3-MoE), checked by
llama.cpp (llama-cpp-python 0.3.36) as test_families.py checks the dense ones: the tiny
random-weight fixtures (tests/fixtures/tiny-<family>, scripts/make_tiny_moe_fixtures.py)
converted to F32, F16 and Q8_0 by our binary; the expert metadata llama.cpp's loader
reads; every expert matrix stacked into its `*_exps` tensor exactly; llama.cpp's logits
against transformers'; our own runtime's perplexity and imatrix against llama.cpp's on
the same file."""
import json
import re

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import REPO, run
from test_families import expected_tensor, gguf_name, kv, llama_cpp_logits, reader

FIXTURES = REPO / "tests" / "fixtures"
FTYPES = ["F32", "F16", "Q8_0"]
# fixture -> (GGUF architecture, expert width key, shared expert width key)
FAMILIES = {
    "qwen3_moe": ("qwen3moe", "moe_intermediate_size", None),
    "mixtral": ("llama", "intermediate_size", None),
    "qwen2_moe": ("qwen2moe", "moe_intermediate_size", "shared_expert_intermediate_size"),
}
EXPERT = re.compile(r"model\.layers\.(\d+)\.(?:mlp|block_sparse_moe)\.experts\.(\d+)\.(\w+)\.weight")
EXPERT_STEM = {"gate_proj": "gate", "w1": "gate", "up_proj": "up", "w3": "up", "down_proj": "down", "w2": "down"}
OTHER = {"mlp.gate": "ffn_gate_inp", "block_sparse_moe.gate": "ffn_gate_inp",
         "mlp.shared_expert.gate_proj": "ffn_gate_shexp", "mlp.shared_expert.up_proj": "ffn_up_shexp",
         "mlp.shared_expert.down_proj": "ffn_down_shexp", "mlp.shared_expert_gate": "ffn_gate_inp_shexp"}


def fixture(family):
    return FIXTURES / f"tiny-{family}"


def config(family):
    return json.loads((fixture(family) / "config.json").read_text())


def n_experts(cfg):
    return cfg.get("num_experts") or cfg["num_local_experts"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache = {}

    def get(family):
        if family not in cache:
            out = tmp_path_factory.mktemp(f"moe-{family}")
            run("quantize", "llm", "--model", fixture(family), "--gguf-precision", ",".join(FTYPES),
                "--output", out)
            cache[family] = {t: out / "gguf" / t / f"tiny-{family}-{t}.gguf" for t in FTYPES}
        return cache[family]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_expert_metadata(converted, family):
    arch, width_key, shared_key = FAMILIES[family]
    cfg = config(family)
    r = reader(converted(family)["F32"])
    a = lambda k: kv(r, f"{arch}.{k}")  # noqa: E731
    assert kv(r, "general.architecture") == arch
    assert a("expert_count") == n_experts(cfg)
    assert a("expert_used_count") == cfg["num_experts_per_tok"]
    if arch != "llama":
        assert a("expert_feed_forward_length") == cfg[width_key]
    if shared_key:
        assert a("expert_shared_feed_forward_length") == cfg[shared_key]


def expected(family, arch, cfg):
    """GGUF name -> the values llama.cpp's converter stores, from the HF tensors."""
    hf = load_file(str(fixture(family) / "model.safetensors"))
    want, experts = {}, {}
    for k, v in hf.items():
        m = EXPERT.fullmatch(k)
        if m:
            layer, e, proj = int(m[1]), int(m[2]), m[3]
            experts.setdefault(f"blk.{layer}.ffn_{EXPERT_STEM[proj]}_exps.weight", {})[e] = v
            continue
        stem = ".".join(k.split(".")[3:-1])
        if stem in OTHER:
            want[f"blk.{k.split('.')[2]}.{OTHER[stem]}.weight"] = v
        else:
            want[gguf_name(k, arch)] = expected_tensor(k, v, arch, cfg)
    for name, per in experts.items():
        assert sorted(per) == list(range(n_experts(cfg))), name
        want[name] = np.stack([per[e] for e in range(len(per))])
    return want


@pytest.mark.parametrize("family", FAMILIES)
def test_f32_tensors_equal_hf_with_experts_stacked(converted, family):
    arch = FAMILIES[family][0]
    cfg = config(family)
    r = reader(converted(family)["F32"])
    ours = {t.name: t for t in r.tensors}
    want = expected(family, arch, cfg)
    assert sorted(ours) == sorted(want)
    for name, a in want.items():
        t = ours[name]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, name
        np.testing.assert_array_equal(np.asarray(t.data).reshape(a.shape), a, err_msg=name)


@pytest.mark.parametrize("ftype", FTYPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers(converted, family, ftype):
    d = fixture(family)
    ids = json.loads((d / "reference_ids.json").read_text())
    ref = np.load(d / "reference_logits.npy")
    got = llama_cpp_logits(converted(family)[ftype], ids)
    diff = float(np.abs(got - ref).max())
    argmax = float(np.mean(got.argmax(1) == ref.argmax(1)))
    corr = float(np.corrcoef(got.ravel(), ref.ravel())[0, 1])
    print(f"\n{family} {ftype}: max|diff| {diff:.3g}, argmax {argmax:.1%}, corr {corr:.7f}")
    if ftype == "F32":
        assert diff < 1e-3 * np.abs(ref).max() + 1e-3 and argmax == 1.0
    elif ftype == "F16":
        assert argmax >= 0.95 and corr > 0.999
    else:
        # 8-bit weights move a token's router logits slightly; where two experts are
        # nearly tied the token goes to another expert and its logits jump (tiny random
        # models have many near ties). So: most positions close, few far.
        rows = [np.corrcoef(g, r)[0, 1] for g, r in zip(got, ref)]
        close = float(np.mean(np.array(rows) > 0.99))
        print(f"  positions with row correlation > 0.99: {close:.1%}")
        assert argmax >= 0.85 and close >= 0.85


@pytest.mark.parametrize("family", FAMILIES)
def test_imatrix_has_one_vector_per_expert_like_llama_imatrix(converted, family, tmp_path):
    """Our runtime routes tokens as llama.cpp does: per-expert token counts equal
    llama-imatrix's on the same file and text, and the sums agree closely."""
    tools = __import__("os").environ.get("LLAMA_TOOLS_DIR")
    if not tools:
        pytest.skip("LLAMA_TOOLS_DIR is not set (scripts/test.sh builds llama-imatrix)")
    f32 = converted(family)["F32"]
    text = tmp_path / "calib.txt"
    text.write_text((REPO / "data" / "corpora" / "wiki_calib.txt").read_text()[:12000])
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    run("imatrix", "--model", f32, "--calibration", text, "--output", ours, "--ctx", 128, "--chunks", 4)
    import subprocess
    subprocess.run([f"{tools}/llama-imatrix", "-m", str(f32), "-f", str(text), "-o", str(theirs),
                    "-c", "128", "--chunks", "4", "-t", "2"], check=True, capture_output=True)
    a = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(ours)).tensors}
    b = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(theirs)).tensors}
    assert sorted(a) == sorted(b)
    n = n_experts(config(family))
    exps = [k for k in a if "_exps." in k and k.endswith(".counts")]
    assert exps
    # llama.cpp computes in f16 in places (KV cache), so a token whose two best experts
    # are nearly tied may go to the other one: counts equal up to such a token or two.
    for k in exps:
        assert a[k].size == n, k
        assert a[k].sum() == b[k].sum(), k
        assert np.abs(a[k] - b[k]).max() <= 2, (k, a[k].ravel(), b[k].ravel())
    # Sums: equal to f32/f16 rounding for every matrix that saw the same tokens.
    same, differ = 0, 0
    for k in a:
        if not k.endswith(".in_sum2"):
            continue
        counts_a = a[k.replace(".in_sum2", ".counts")].ravel()
        counts_b = b[k.replace(".in_sum2", ".counts")].ravel()
        rows_a, rows_b = a[k].reshape(len(counts_a), -1), b[k].reshape(len(counts_b), -1)
        for j in range(len(counts_a)):
            if counts_a[j] == counts_b[j]:
                same += 1
                np.testing.assert_allclose(rows_a[j], rows_b[j], rtol=2e-3,
                                           atol=1e-6 * np.abs(rows_b[j]).max(), err_msg=f"{k} [{j}]")
            else:
                differ += 1
    assert differ <= same // 4, (same, differ)


# ---------------------------------------------------------------- expert statistics

def profile(*args):
    return json.loads(run("profile", *map(str, args), "--json").stdout)


def test_profile_counts_every_routed_token(tmp_path):
    text = tmp_path / "calib.txt"
    text.write_text((REPO / "data" / "corpora" / "wiki_calib.txt").read_text()[:6000])
    cfg = config("qwen3_moe")
    r = profile("--model", fixture("qwen3_moe"), "--calibration", text, "--ctx", 128, "--min-tokens", 300)
    p = r["profile"]
    assert [l["layer"] for l in p["layers"]] == list(range(cfg["num_hidden_layers"]))
    for l in p["layers"]:
        assert l["n_experts"] == n_experts(cfg)
        assert sum(x["tokens"] for x in l["experts"]) == l["tokens"] * cfg["num_experts_per_tok"]
        assert sum(x["frequency"] for x in l["experts"]) == pytest.approx(1.0)
        # norm_topk_prob: each token's weights sum to 1, so the masses add up to the tokens.
        assert sum(x["weight_mass"] for x in l["experts"]) == pytest.approx(l["tokens"], rel=1e-4)
        assert 0 < l["balance"] <= 1
    flagged = {(l["layer"], x["expert"]) for l in p["layers"] for x in l["experts"] if x["tokens"] < 300}
    assert {tuple(s) for s in p["starved"]} == flagged


def test_balanced_calibration_reaches_every_expert(tmp_path):
    """On the same token budget, plain text leaves experts below the threshold; the
    balanced text (bundled passages that route to them, then the plain text) leaves none."""
    text = tmp_path / "calib.txt"
    text.write_text((REPO / "data" / "corpora" / "wiki_calib.txt").read_text()[:6000])
    out = tmp_path / "balanced.txt"
    r = profile("--model", fixture("qwen3_moe"), "--calibration", text, "--ctx", 128, "--min-tokens", 300,
                "--balanced-output", out)
    plain, balanced = r["profile"], r["balanced"]["profile"]
    print("\nplain starved:", plain["starved"], "balanced:", balanced["starved"],
          "passages added:", r["balanced"]["passages_added"])
    assert plain["starved"], "the plain text should leave some expert short at this threshold"
    assert balanced["starved"] == []
    assert balanced["tokens"] == plain["tokens"]
    assert out.is_file() and not list(tmp_path.glob("*.tmp-balanced"))
    # The balanced file is plain text a user can pass to `imatrix`.
    again = profile("--model", fixture("qwen3_moe"), "--calibration", out, "--ctx", 128, "--min-tokens", 300)
    assert again["profile"]["starved"] == []


def test_profile_of_a_dense_model_is_a_clear_error(tmp_path):
    text = tmp_path / "calib.txt"
    text.write_text((REPO / "data" / "corpora" / "wiki_calib.txt").read_text()[:3000])
    p = run("profile", "--model", FIXTURES / "tiny-llama", "--calibration", text, "--ctx", 64, check=False)
    assert p.returncode != 0 and "dense model" in p.stderr, p.stderr


# ---------------------------------------------------------------- MLX output

def mlx_source(family, tmp_path):
    """The fixture, with the transformers-4 spellings mlx-lm's qwen3_moe requires
    (`num_experts`, `rope_theta`) so that mlx_lm.convert can read it too."""
    import shutil
    d = tmp_path / f"src-{family}"
    shutil.copytree(fixture(family), d)
    cfg = config(family)
    if family == "qwen3_moe":
        if "num_experts" not in cfg:
            cfg["num_experts"] = cfg["num_local_experts"]
        cfg.setdefault("rope_theta", cfg["rope_parameters"]["rope_theta"])
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    return d


@pytest.mark.parametrize("family", FAMILIES)
def test_mlx_same_bytes_as_mlx_lm_convert(family, tmp_path):
    """Experts stacked into switch_mlp, the qwen3_moe router at 8 bits: byte for byte what
    mlx_lm.convert writes."""
    from mlx_lm.convert import convert
    from test_mlx_load import assert_same_checkpoint
    src = mlx_source(family, tmp_path)
    r = json.loads(run("quantize", "llm", "--model", src, "--formats", "mlx", "--mlx-bits", 4,
                       "--mlx-group-size", 32, "--mlx-uniform", "--output", tmp_path / "ours", "--json").stdout)
    ours = tmp_path / "ours" / r["outputs"][0]["path"]
    ref = tmp_path / "ref"
    convert(str(src), str(ref), quantize=True, q_bits=4, q_group_size=32)
    assert_same_checkpoint(ours, ref, recipe=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_mlx_loads_and_matches_transformers(family, tmp_path):
    """mlx_lm.load reads our 8-bit output and its logits follow transformers'. Qwen3-MoE
    is given in transformers 5's spelling (`num_local_experts`, rope inside
    `rope_parameters`), which mlx-lm cannot read: our config.json restores the keys."""
    import shutil
    import mlx.core as mx
    from mlx_lm import load
    src = fixture(family)
    if family == "qwen3_moe":
        src = tmp_path / "src"
        shutil.copytree(fixture(family), src)
        cfg = config(family)
        cfg["num_local_experts"] = cfg.pop("num_experts", None) or cfg["num_local_experts"]
        cfg.pop("rope_theta", None)
        (src / "config.json").write_text(json.dumps(cfg, indent=2))
    r = json.loads(run("quantize", "llm", "--model", src, "--formats", "mlx", "--mlx-bits", 8,
                       "--mlx-group-size", 32, "--mlx-uniform", "--output", tmp_path / "out", "--json").stdout)
    model, _ = load(str(tmp_path / "out" / r["outputs"][0]["path"]))
    ids = json.loads((fixture(family) / "reference_ids.json").read_text())
    ref = np.load(fixture(family) / "reference_logits.npy")
    got = np.array(model(mx.array([ids])).astype(mx.float32))[0]
    argmax = float(np.mean(got.argmax(1) == ref.argmax(1)))
    corr = float(np.corrcoef(got.ravel(), ref.ravel())[0, 1])
    print(f"\n{family} MLX 8-bit: argmax {argmax:.1%}, corr {corr:.5f}")
    assert argmax >= 0.9 and corr > 0.99
