"""The i-quant throughput bench (crates/pajamas-quant/examples/iq_bench.rs) runs and says
something sane, on a small input: every type gets a finite positive speed ratio against
ggml's reference quantizer (single thread both, and ours on all threads), the one-thread
and all-thread outputs are byte-identical (the bench fails otherwise), and the bytes it
timed are what `kernels quantize` writes and what gguf-py dequantizes exactly as we do.

No wall-clock limit is asserted: the ratios are reported, not judged (docs/iquants.md).
Most of the run time is ggml's one-time grid initialisation (`ggml_quantize_init`, up
to ~15 s for IQ1 on a busy 2-core machine), so the types run in three groups, one bench
process each.
"""
from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pytest

import test_kernels as tk
from test_iquants import TYPES

ROWS = 32
# Grouped by the cost of ggml's grid initialisation (IQ1_S and IQ1_M share theirs).
GROUPS = [["IQ4_NL", "IQ4_XS", "IQ3_S", "IQ3_XXS", "IQ2_XXS"], ["IQ2_S", "IQ2_XS"], ["IQ1_S", "IQ1_M"]]


def test_groups_cover_every_type():
    assert sorted(t for g in GROUPS for t in g) == sorted(TYPES)


@pytest.mark.parametrize("types", GROUPS, ids=["-".join(g) for g in GROUPS])
def test_bench_reports_ratios(types, tmp_path):
    x = np.ascontiguousarray(tk.dataset("gaussian")[:ROWS], dtype=np.float32)
    imp = tk.importance()
    (tmp_path / "in.f32").write_bytes(x.tobytes())
    (tmp_path / "imp.f32").write_bytes(imp.tobytes())
    out = tmp_path / "out"
    p = subprocess.run([str(tk.examples_dir() / "iq_bench"), "--input", tmp_path / "in.f32",
                        "--importance", tmp_path / "imp.f32", "--lib", tk.ggml().path,
                        "--types", ",".join(types), "--reps", "1", "--json", "--out-dir", out],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert (report["rows"], report["cols"]) == (ROWS, tk.N)
    by_type = {r["type"]: r for r in report["types"]}
    assert sorted(by_type) == sorted(types)
    for ty, r in by_type.items():
        for key in ["ratio_1t", "ratio_all_threads", "rmse_ratio"]:
            assert math.isfinite(r[key]) and r[key] > 0, (ty, key, r[key])
        assert r["threads_identical"], ty
        raw = (out / f"{ty}.bin").read_bytes()
        assert raw == tk.ours_quantize(x, ty, imp, "bench"), f"{ty}: bench bytes differ from kernels'"
        ours = tk.ours_dequantize(raw, ty, tk.N, "bench")
        theirs = tk.gguf_py_dequantize(raw, ty, ROWS)
        assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32)), ty
