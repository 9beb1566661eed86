"""The i-quant kernels of crate pajamas-quant (IQ4_NL, IQ4_XS, and the lattice types as
they land), driven through the `kernels` dev tool (examples/kernels.rs) like
test_kernels.py, against the references:

(a) gguf-py's `gguf.quants.dequantize` of OUR bytes equals our own dequantization,
    bitwise (float32), and ggml's own to_float agrees; our dequantizer reads ggml's bytes
    exactly as gguf-py does (the layout checked in both directions);
(b) our importance-weighted RMSE is at most ggml's reference quantizer's
    (`ggml_quantize_chunk` in llama-cpp-python's libggml-base.so, what llama-quantize
    runs) with the same importance row, on gaussian rows, rows with outliers, and real
    weight rows of SmolLM2-135M ($SMOLLM2_DIR) and of the demo model (models/demo). Types
    that ggml can quantize without an imatrix are compared without one too (plain RMSE;
    ggml then weights by x²). This holds for the row-error objective on every set, and
    for the model objective that files use (effective weights, no shrinkage; see
    docs/iquants.md "Objective") on the gaussian and real rows; `pytest -s` prints both
    ratio tables (docs/iquants.md);
(c) the types ggml refuses without an imatrix fail with an error that says how to make one.
"""
from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import test_kernels as tk  # shared runners and data; `import ... as` keeps its tests uncollected
from ggml_ref import IQ_TYPE_IDS

REPO = Path(__file__).resolve().parents[2]
N = tk.N  # 1536: a multiple of 256
# Types with kernels, in the order they landed.
TYPES = ["IQ4_NL", "IQ4_XS", "IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ3_S", "IQ2_S", "IQ1_S", "IQ1_M"]
NEEDS_IMATRIX = {"IQ2_XXS", "IQ2_XS", "IQ1_S"}
SETS = ["gaussian", "outliers", "smollm2", "demo"]
RATIO_TOL = tk.RATIO_TOL


def weightings(ty: str) -> list[bool]:
    return [True] if ty in NEEDS_IMATRIX else [False, True]


def demo_rows() -> np.ndarray:
    """~200 rows of 1536 from the demo model (4 layers, hidden 256): the row-major data of
    its embedding, attention and MLP matrices cut into 1536-long runs."""
    model = REPO / "models" / "demo" / "model.safetensors"
    parts = []
    for name, count in [("model.embed_tokens.weight", 64),
                        ("model.layers.0.mlp.down_proj.weight", 48),
                        ("model.layers.3.mlp.gate_proj.weight", 48),
                        ("model.layers.1.self_attn.q_proj.weight", 24),
                        ("model.layers.2.self_attn.v_proj.weight", 8)]:
        flat = tk.read_bf16_tensor(model, name).reshape(-1)
        assert flat.size >= count * N, name
        parts.append(flat[:count * N].reshape(count, N))
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


@lru_cache(maxsize=None)
def dataset(name: str) -> np.ndarray:
    if name == "smollm2":
        return tk.dataset("real")
    if name == "demo":
        return demo_rows()
    return tk.dataset(name)


def ggml_quantize(x: np.ndarray, ty: str, imp: np.ndarray | None) -> bytes:
    return tk.ggml().quantize(x, IQ_TYPE_IDS[ty], imp)


def ggml_dequantize(raw: bytes, ty: str, n: int) -> np.ndarray:
    return tk.ggml().dequantize(raw, IQ_TYPE_IDS[ty], n)


# Rows per comparison: the lattice searches are slow (docs/iquants.md), and CI runs every
# type x set; docs/iquants.md's table was printed with PAJAMAS_IQ_ROWS=0 (every row).
ROWS = int(os.environ.get("PAJAMAS_IQ_ROWS", "64"))


@lru_cache(maxsize=None)
def run(ty: str, set_name: str, weighted: bool, objective: str = "row-error") -> dict:
    x = dataset(set_name)
    if ROWS:
        x = np.ascontiguousarray(x[:ROWS])
    imp = tk.importance() if weighted else None
    tag = f"iq-{set_name}-{'imp' if weighted else 'plain'}-{objective}"
    ours = tk.ours_quantize(x, ty, imp, tag, objective=objective)
    ours_back = tk.ours_dequantize(ours, ty, x.shape[1], tag + "-ours")
    ref = ggml_quantize(x, ty, imp)
    ref_back = ggml_dequantize(ref, ty, x.size)
    r_ours, r_ref = tk.weighted_rmse(x, ours_back, imp), tk.weighted_rmse(x, ref_back, imp)
    ratio = (1.0 if r_ours == 0.0 else float("inf")) if r_ref == 0.0 else r_ours / r_ref
    return {"x": x, "ours": ours, "ours_back": ours_back, "ref": ref, "ref_back": ref_back,
            "rmse_ours": r_ours, "rmse_ref": r_ref, "ratio": ratio}


CASES = [(ty, s, w) for ty in TYPES for s in SETS for w in weightings(ty)]
CASE_IDS = [f"{ty}-{s}-{'imatrix' if w else 'plain'}" for ty, s, w in CASES]


# --------------------------------------------------------------------------- tests

def test_types_lists_the_iquants():
    listed = tk.kernels("types").split()
    for ty in TYPES:
        assert ty in listed


@pytest.mark.parametrize("ty,set_name,weighted", CASES, ids=CASE_IDS)
def test_gguf_py_reads_our_bytes(ty, set_name, weighted):
    r = run(ty, set_name, weighted, "model")  # the bytes model files get
    rows = r["x"].shape[0]
    assert len(r["ours"]) == rows * tk.ggml().row_size(IQ_TYPE_IDS[ty], N)
    theirs = tk.gguf_py_dequantize(r["ours"], ty, rows)
    assert np.array_equal(theirs.view(np.uint32), r["ours_back"].view(np.uint32)), \
        f"{ty}: gguf-py reads our bytes differently (max |diff| {np.abs(theirs - r['ours_back']).max()})"
    ggml_back = ggml_dequantize(r["ours"], ty, r["x"].size)
    np.testing.assert_allclose(ggml_back, r["ours_back"], rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("ty", TYPES)
def test_we_read_ggml_bytes_like_gguf_py(ty):
    for set_name in ["gaussian", "smollm2"]:
        r = run(ty, set_name, True)
        ours = tk.ours_dequantize(r["ref"], ty, N, f"iq-{set_name}-ggml-bytes")
        theirs = tk.gguf_py_dequantize(r["ref"], ty, r["x"].shape[0])
        assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32)), f"{ty} on {set_name}"


@pytest.mark.parametrize("ty,set_name,weighted", CASES, ids=CASE_IDS)
def test_rmse_not_worse_than_ggml(ty, set_name, weighted):
    r = run(ty, set_name, weighted)
    assert r["ratio"] <= 1.0 + RATIO_TOL, \
        f"{ty} on {set_name} ({'imatrix' if weighted else 'plain'}): " \
        f"RMSE {r['rmse_ours']:.4e} vs ggml {r['rmse_ref']:.4e} (ratio {r['ratio']:.4f})"


MODEL_SETS = ["gaussian", "smollm2", "demo"]
MODEL_CASES = [c for c in CASES if c[1] in MODEL_SETS]


@pytest.mark.parametrize("ty,set_name,weighted", MODEL_CASES,
                         ids=[f"{ty}-{s}-{'imatrix' if w else 'plain'}" for ty, s, w in MODEL_CASES])
def test_model_objective_rmse_not_worse_than_ggml(ty, set_name, weighted):
    """What files use: still below ggml on gaussian and real rows (not asserted on the
    synthetic outlier rows, where removing shrinkage costs more; printed by the table)."""
    r = run(ty, set_name, weighted, "model")
    assert r["ratio"] <= 1.0 + RATIO_TOL, \
        f"{ty} on {set_name} ({'imatrix' if weighted else 'plain'}), model objective: " \
        f"RMSE {r['rmse_ours']:.4e} vs ggml {r['rmse_ref']:.4e} (ratio {r['ratio']:.4f})"


@pytest.mark.parametrize("ty", TYPES)
def test_zero_and_constant_rows(ty):
    """All-zero rows come back as zeros; every constant row (0.5 down to 1e-5, where the
    f16 super-scale turns subnormal) with a weighted RMSE within 0.1% of its value or at
    most ggml's."""
    for set_name in ["zeros", "constant"]:
        x = tk.dataset(set_name)
        for weighted in weightings(ty):
            imp = tk.importance() if weighted else None
            tag = f"iq-{set_name}-{'imp' if weighted else 'plain'}"
            raw = tk.ours_quantize(x, ty, imp, tag)
            back = tk.gguf_py_dequantize(raw, ty, x.shape[0]).reshape(x.shape)
            if set_name == "zeros":
                assert np.all(back == 0.0), ty
                continue
            ref = ggml_dequantize(ggml_quantize(x, ty, imp), ty, x.size).reshape(x.shape)
            w = np.ones(N) if imp is None else imp.astype(np.float64)
            row_rmse = lambda y: np.sqrt(((y - x).astype(np.float64) ** 2 * w).sum(axis=1) / w.sum())
            value = np.abs(x[:, 0]).astype(np.float64)
            ours, theirs = row_rmse(back) / value, row_rmse(ref) / value
            assert np.all(ours <= np.maximum(theirs, 1e-3)), \
                f"{ty} ({'imatrix' if weighted else 'plain'}): relative RMSE {ours} vs ggml {theirs}"


@pytest.mark.parametrize("ty", sorted(NEEDS_IMATRIX))
def test_imatrix_types_refuse_to_run_without_one(ty):
    d = tk.workdir()
    src = d / "noimp.f32"
    np.zeros(256 * 2, dtype="<f4").tofile(src)
    p = subprocess.run([str(tk.examples_dir() / "kernels"), "quantize", "--type", ty, "--cols", "256",
                        "--input", str(src), "--output", str(d / "noimp.bin")], capture_output=True, text=True)
    assert p.returncode != 0
    if ty in TYPES:
        assert f"{ty} needs an importance matrix" in p.stderr, p.stderr
        assert "llama-pajamas-quant imatrix" in p.stderr, p.stderr
    else:
        assert f"unsupported type {ty}" in p.stderr, p.stderr


def test_ratio_table():
    """Prints ours/ggml RMSE for every type, set and weighting (`pytest -s`), for both
    objectives: the tables of docs/iquants.md. Fails on any row-error ratio above 1, and
    on any model-objective ratio above 1 outside the synthetic outlier rows."""
    cols = [(s, w) for s in SETS for w in (False, True)]
    head = f"{'type':8s} " + " ".join(f"{s + '/' + ('imatrix' if w else 'plain'):>17s}" for s, w in cols)
    worst = []
    text = []
    for objective in ["row-error", "model"]:
        lines = [f"\nRMSE ratio ours/ggml, {objective} objective (1.0 = equal)", head]
        for ty in TYPES:
            cells = []
            for s, w in cols:
                if w not in weightings(ty):
                    cells.append(f"{'-':>17s}")
                    continue
                r = run(ty, s, w, objective)
                cells.append(f"{r['ratio']:17.4f}")
                if r["ratio"] > 1.0 + RATIO_TOL and (objective == "row-error" or s in MODEL_SETS):
                    worst.append((objective, ty, s, w, r["ratio"]))
            lines.append(f"{ty:8s} " + " ".join(cells))
        lines.append("")
        lines.append(f"absolute RMSE with the imatrix, ours (ggml), {objective} objective:")
        for ty in TYPES:
            cells = [f"{s}: {run(ty, s, True, objective)['rmse_ours']:.4e} ({run(ty, s, True, objective)['rmse_ref']:.4e})"
                     for s in SETS]
            lines.append(f"{ty:8s} " + "  ".join(cells))
        text += lines
    print("\n".join(text))
    assert not worst, f"ratios above 1: {worst}"


@pytest.mark.parametrize("ty", ["IQ4_XS", "IQ3_S", "IQ4_NL"])
def test_runtime_scores_llama_cpp_iquant_files_like_llama_perplexity(ty, tmp_path):
    """A llama.cpp i-quant GGUF (llama-quantize from our F16 demo) read by our runtime
    (our dequantization, llama.cpp's activation rounding for the type) gives
    llama-perplexity's perplexity."""
    import re
    from conftest import run as run_bin
    tools = os.environ.get("LLAMA_TOOLS_DIR")
    if not tools:
        pytest.skip("LLAMA_TOOLS_DIR is not set (scripts/test.sh builds llama-quantize)")
    run_bin("quantize", "llm", "--model", REPO / "models" / "demo", "--gguf-precision", "F16",
            "--output", tmp_path)
    f16 = tmp_path / "gguf" / "F16" / "demo-F16.gguf"
    q = tmp_path / f"demo-{ty}.gguf"
    subprocess.run([f"{tools}/llama-quantize", str(f16), str(q), ty], check=True, capture_output=True)
    text = REPO / "data" / "corpora" / "wiki_eval_small.txt"
    out = subprocess.run([f"{tools}/llama-perplexity", "-m", str(q), "-f", str(text), "-c", "256",
                          "--chunks", "3", "-t", "2", "-fa", "off"], capture_output=True, text=True)
    # Running estimates `[k]ppl,`: take the last one and score the same k chunks.
    found = re.findall(r"\[(\d+)\]([0-9.]+)", out.stdout + out.stderr)
    assert found, (out.returncode, out.stdout[-1500:], out.stderr[-1500:])
    k, theirs = int(found[-1][0]), float(found[-1][1])
    ours = float(re.search(r"perplexity: ([0-9.]+)", run_bin(
        "eval", "--model", q, "--text", text, "--ctx", 256, "--chunks", k).stdout).group(1))
    print(f"\n{ty}: ours {ours:.4f}, llama-perplexity {theirs:.4f}")
    assert ours == pytest.approx(theirs, rel=0.005)
