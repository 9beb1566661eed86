"""The quantization kernels of crate pajamas-quant (driven through the `kernels` dev tool,
examples/kernels.rs) against the references:

(a) gguf-py's `gguf.quants.dequantize` of OUR bytes equals our own dequantization,
    bitwise (float32), for every type and test set;
(b) our RMSE is at most ggml's reference quantizer's (libggml-base.so from
    llama-cpp-python, the code llama-quantize runs) on the same rows, without and with
    importance weights (then the RMSE is weighted by the importance, the same vector for
    both). `pytest -s` prints the ratio table. This is the row-error objective; model
    files use the model objective (pajamas-quant objective.rs: magnitude-weighted, no
    shrinkage), whose bytes gguf-py also reads (test_gguf_py_reads_model_objective_bytes);
(c) byte layout: our buffers have ggml's row sizes, our dequantizer reads ggml's bytes
    exactly as gguf-py does, and on values that a legacy type represents exactly our bytes
    are ggml's bytes.

Test sets: gaussian rows, rows with outliers, all-zero rows, constant rows and real
weight rows from SmolLM2-135M ($SMOLLM2_DIR). Rows are 1536 long (a multiple of 256 and
of SmolLM2's 576-wide layout after reshaping).
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from ggml_ref import GgmlRef

QUANTIZED = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
FLOATS = ["F32", "F16", "BF16"]
TYPES = FLOATS + QUANTIZED
SETS = ["gaussian", "outliers", "zeros", "constant", "real"]
N = 1536
# Equal algorithms can still differ in the last bits (a tie rounded the other way, a sum
# in another order): ratios within this of 1.0 count as equal.
RATIO_TOL = 1e-6


def examples_dir() -> Path:
    d = os.environ.get("PAJAMAS_EXAMPLES")
    if not d:
        raise RuntimeError("PAJAMAS_EXAMPLES is not set: run the tests through scripts/test.sh")
    return Path(d)


def kernels(*args) -> str:
    p = subprocess.run([str(examples_dir() / "kernels"), *map(str, args)], capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(f"kernels {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stderr}")
    return p.stdout


# --------------------------------------------------------------------------- test data

def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_bf16_tensor(path: Path, name: str) -> np.ndarray:
    """One BF16 tensor of a safetensors file, as float32 (numpy has no bfloat16)."""
    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_len))
        info = header[name]
        assert info["dtype"] == "BF16", info
        start, end = info["data_offsets"]
        f.seek(8 + header_len + start)
        raw = np.frombuffer(f.read(end - start), dtype="<u2")
    return bf16_to_f32(raw).reshape(info["shape"])


def real_rows() -> np.ndarray:
    """~400 rows of 1536 from four SmolLM2 tensors: down_proj rows are 1536 long; the
    576-wide tensors are cut into 1536-long runs of their row-major data."""
    model = Path(os.environ["SMOLLM2_DIR"]) / "model.safetensors"
    parts = []
    for name, count in [("model.layers.0.mlp.down_proj.weight", 96),
                        ("model.layers.17.mlp.down_proj.weight", 96),
                        ("model.layers.5.self_attn.q_proj.weight", 96),
                        ("model.embed_tokens.weight", 96)]:
        t = read_bf16_tensor(model, name)
        parts.append(t.reshape(-1, N)[:count])
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


@lru_cache(maxsize=None)
def dataset(name: str) -> np.ndarray:
    rng = np.random.default_rng(["gaussian", "outliers", "zeros", "constant", "real"].index(name) + 10)
    if name == "gaussian":
        x = rng.standard_normal((192, N)) * 0.02
    elif name == "outliers":
        x = rng.standard_normal((192, N)) * 0.02
        mask = rng.random(x.shape) < 0.005
        x[mask] *= rng.uniform(10, 60, mask.sum())
        x[::16, 7] = 1.5  # a few huge ones
        x[3::16, 700] = -2.5
    elif name == "zeros":
        x = np.zeros((8, N))
    elif name == "constant":
        values = [0.5, -1.25, 3e-3, 7.0, -0.0123, 1e-5, 42.0, -3.3]
        x = np.repeat(np.array(values)[:, None], N, axis=1)
    elif name == "real":
        x = real_rows()
    else:
        raise KeyError(name)
    return np.ascontiguousarray(x, dtype=np.float32)


@lru_cache(maxsize=None)
def importance() -> np.ndarray:
    """An imatrix-like importance row: log-normal mean squared activations with a few
    dominant channels and some near-dead ones."""
    rng = np.random.default_rng(7)
    imp = np.exp(rng.normal(0.0, 1.5, N))
    imp[rng.choice(N, 6, replace=False)] *= 200.0
    imp[rng.choice(N, 20, replace=False)] *= 1e-4
    return imp.astype(np.float32)


# --------------------------------------------------------------------------- runners

@lru_cache(maxsize=1)
def ggml() -> GgmlRef:
    return GgmlRef()


_workdir: Path | None = None


def workdir() -> Path:
    global _workdir
    if _workdir is None:
        import tempfile
        _workdir = Path(tempfile.mkdtemp(prefix="pajamas-kernels-"))
    return _workdir


def ours_quantize(x: np.ndarray, ty: str, imp: np.ndarray | None, tag: str,
                  objective: str | None = None) -> bytes:
    d = workdir()
    src, out = d / f"{tag}.f32", d / f"{tag}.{ty}.{objective or 'default'}.bin"
    x.astype("<f4").tofile(src)
    args = ["quantize", "--type", ty, "--cols", x.shape[1], "--input", src, "--output", out]
    if objective:
        args += ["--objective", objective]
    if imp is not None:
        ip = d / f"{tag}.imp.f32"
        imp.astype("<f4").tofile(ip)
        args += ["--importance", ip]
    kernels(*args)
    return out.read_bytes()


def ours_dequantize(raw: bytes, ty: str, n_per_row: int, tag: str) -> np.ndarray:
    d = workdir()
    src, out = d / f"{tag}.{ty}.in.bin", d / f"{tag}.{ty}.back.f32"
    src.write_bytes(raw)
    kernels("dequantize", "--type", ty, "--cols", n_per_row, "--input", src, "--output", out)
    return np.fromfile(out, dtype="<f4")


def gguf_py_dequantize(raw: bytes, ty: str, rows: int) -> np.ndarray:
    arr = np.frombuffer(raw, dtype=np.uint8).reshape(rows, -1)
    return np.asarray(gguf_dequantize(arr, GGMLQuantizationType[ty]), dtype=np.float32).reshape(-1)


def weighted_rmse(x: np.ndarray, y: np.ndarray, imp: np.ndarray | None) -> float:
    err2 = (x.astype(np.float64) - y.reshape(x.shape).astype(np.float64)) ** 2
    if imp is None:
        return float(np.sqrt(err2.mean()))
    w = np.broadcast_to(imp.astype(np.float64), x.shape)
    return float(np.sqrt((err2 * w).sum() / w.sum()))


@lru_cache(maxsize=None)
def run(ty: str, set_name: str, weighted: bool) -> dict:
    x = dataset(set_name)
    imp = importance() if weighted else None
    tag = f"{set_name}-{'imp' if weighted else 'plain'}"
    ours = ours_quantize(x, ty, imp, tag, objective="row-error")
    ours_back = ours_dequantize(ours, ty, x.shape[1], tag + "-ours")
    ref = ggml().quantize(x, ty, imp)
    ref_back = ggml().dequantize(ref, ty, x.size)
    r_ours, r_ref = weighted_rmse(x, ours_back, imp), weighted_rmse(x, ref_back, imp)
    if r_ref == 0.0:
        ratio = 1.0 if r_ours == 0.0 else float("inf")
    else:
        ratio = r_ours / r_ref
    return {"x": x, "ours": ours, "ours_back": ours_back, "ref": ref, "ref_back": ref_back,
            "rmse_ours": r_ours, "rmse_ref": r_ref, "ratio": ratio}


# --------------------------------------------------------------------------- tests

def test_types_lists_every_kernel():
    assert kernels("types").split() == ["F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                                        "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
                                        "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S",
                                        "IQ2_S", "IQ4_XS", "IQ1_M", "BF16", "MXFP4"]


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("set_name", SETS)
@pytest.mark.parametrize("ty", TYPES)
def test_gguf_py_reads_our_bytes(ty, set_name, weighted):
    r = run(ty, set_name, weighted)
    rows = r["x"].shape[0]
    assert len(r["ours"]) == rows * ggml().row_size(ty, N)
    theirs = gguf_py_dequantize(r["ours"], ty, rows)
    assert np.array_equal(theirs.view(np.uint32), r["ours_back"].view(np.uint32)), \
        f"{ty}: gguf-py reads our bytes differently (max |diff| {np.abs(theirs - r['ours_back']).max()})"
    # ggml's own to_float agrees too (C may fuse multiply-adds: compare to the last bits).
    ggml_back = ggml().dequantize(r["ours"], ty, r["x"].size)
    np.testing.assert_allclose(ggml_back, r["ours_back"], rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("ty", ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"])
def test_gguf_py_reads_model_objective_bytes(ty, weighted):
    """The model objective rescales the k-quants' super-scales after the search: gguf-py
    and ggml still read those bytes as we do, and the RMSE stays near the row-error one."""
    x = dataset("real")
    imp = importance() if weighted else None
    tag = f"real-{'imp' if weighted else 'plain'}"
    ours = ours_quantize(x, ty, imp, tag, objective="model")
    back = ours_dequantize(ours, ty, x.shape[1], tag + "-model")
    theirs = gguf_py_dequantize(ours, ty, x.shape[0])
    assert np.array_equal(theirs.view(np.uint32), back.view(np.uint32))
    row_error = run(ty, "real", weighted)
    assert ours != row_error["ours"], "the model objective changed nothing"
    assert weighted_rmse(x, back, imp) < 1.25 * row_error["rmse_ours"]


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("set_name", SETS)
@pytest.mark.parametrize("ty", TYPES)
def test_rmse_not_worse_than_ggml(ty, set_name, weighted):
    r = run(ty, set_name, weighted)
    assert r["ratio"] <= 1.0 + RATIO_TOL, \
        f"{ty} on {set_name} ({'imatrix' if weighted else 'plain'}): RMSE {r['rmse_ours']:.4e} vs ggml {r['rmse_ref']:.4e}"


@pytest.mark.parametrize("ty", TYPES)
def test_we_read_ggml_bytes_like_gguf_py(ty):
    """Our dequantizer on ggml's bytes: equal to gguf-py's reading of the same bytes."""
    for set_name in ["gaussian", "real"]:
        r = run(ty, set_name, False)
        ours = ours_dequantize(r["ref"], ty, N, f"{set_name}-ggml-bytes")
        theirs = gguf_py_dequantize(r["ref"], ty, r["x"].shape[0])
        assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32)), f"{ty} on {set_name}"


def exact_rows(ty: str, rows: int = 4) -> np.ndarray:
    """Rows that a legacy type represents exactly, with every level used in every block."""
    rng = np.random.default_rng(3)
    levels = {"Q4_0": (-8, 7), "Q5_0": (-16, 15), "Q8_0": (-127, 127), "Q4_1": (0, 15), "Q5_1": (0, 31)}[ty]
    out = np.empty((rows, N), dtype=np.float32)
    for r in range(rows):
        for b in range(N // 32):
            lv = np.resize(np.arange(levels[0], levels[1] + 1), 32)
            if ty == "Q8_0":
                lv = np.concatenate([[levels[0], levels[1]], rng.integers(-126, 127, 30)])
            lv = rng.permutation(lv)
            d = 2.0 ** rng.integers(-10, -2)
            m = float(rng.integers(-64, 64)) * 2.0 ** -8 if ty in ("Q4_1", "Q5_1") else 0.0
            out[r, 32 * b:32 * (b + 1)] = lv * d + m
    return out


@pytest.mark.parametrize("ty", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"])
def test_exact_values_give_ggml_bytes(ty):
    x = exact_rows(ty)
    ours = ours_quantize(x, ty, None, f"exact-{ty}")
    assert ours == ggml().quantize(x, ty), f"{ty}: bytes differ from ggml's on exactly representable rows"
    back = gguf_py_dequantize(ours, ty, x.shape[0]).reshape(x.shape)
    assert np.array_equal(back, x)


def test_row_length_errors_name_type_and_block():
    d = workdir()
    src = d / "short.f32"
    np.zeros(100, dtype="<f4").tofile(src)
    p = subprocess.run([str(examples_dir() / "kernels"), "quantize", "--type", "Q4_K", "--cols", "100",
                        "--input", str(src), "--output", str(d / "short.bin")], capture_output=True, text=True)
    assert p.returncode != 0
    assert "row of 100 elements is not a multiple of Q4_K's block size 256" in p.stderr


def test_ratio_table():
    """Prints ours/ggml RMSE for every type, set and weighting (`pytest -s`); fails on any
    ratio above 1."""
    lines = [f"{'type':6s} " + " ".join(f"{s:>9s}/{w:<7s}" for s in SETS for w in ("plain", "imatrix"))]
    worst = []
    for ty in TYPES:
        cells = []
        for s in SETS:
            for weighted in (False, True):
                r = run(ty, s, weighted)
                cells.append(f"{r['ratio']:17.4f}")
                if r["ratio"] > 1.0 + RATIO_TOL:
                    worst.append((ty, s, weighted, r["ratio"]))
        lines.append(f"{ty:6s} " + " ".join(cells))
    lines.append("")
    lines.append("absolute RMSE, ours (ggml), gaussian and real sets:")
    for ty in TYPES:
        cells = []
        for s in ("gaussian", "real"):
            for weighted in (False, True):
                r = run(ty, s, weighted)
                cells.append(f"{r['rmse_ours']:.3e} ({r['rmse_ref']:.3e})")
        lines.append(f"{ty:6s} " + "  ".join(cells))
    print("\nRMSE ratio ours/ggml (1.0 = equal; zeros: both exact)\n" + "\n".join(lines))
    assert not worst, f"ratios above 1: {worst}"
