"""Our MLX affine kernel (crates/pajamas-mlx, driven through the `mlx_kernel` example)
against mlx itself (mlx 0.32.4 on the CPU): for every bits x group size and every model
dtype, the packed weights, scales and biases must equal `mx.quantize` of the same input
bit for bit, and `mx.dequantize` of our tensors must equal our own dequantization.

Inputs cover gaussian rows, outliers, constant groups, all-zero groups, values below the
1e-7 scale floor, large magnitudes, exact grid points (rounding ties) and, for the 16-bit
dtypes, f32 values that must first be rounded to the dtype (what mlx-lm's convert does
with an f32 checkpoint and a bf16/f16 `torch_dtype`)."""
import json
import os
import subprocess
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

BITS = [2, 3, 4, 5, 6, 8]
GROUPS = [32, 64, 128]
DTYPES = {"bfloat16": mx.bfloat16, "float16": mx.float16, "float32": mx.float32}
COLS = 256


def example(name: str) -> str:
    d = os.environ.get("PAJAMAS_EXAMPLES")
    if not d:
        raise RuntimeError("PAJAMAS_EXAMPLES is not set: run the tests through scripts/test.sh")
    return str(Path(d) / name)


def kernel_rows(seed: int, bits: int, group: int) -> np.ndarray:
    """f32 rows exercising every branch of the scale/bias rule."""
    rng = np.random.default_rng(seed)
    rows = [rng.standard_normal(COLS) * s for s in (0.02, 0.5, 1.0, 3.0)]
    r = rng.standard_normal(COLS) * 0.05
    r[::37] = [9.0, -11.0, 4.5, -0.75, 30.0, -2.0, 7.0][: len(r[::37])]  # outliers
    rows.append(r)
    rows.append(np.repeat(rng.standard_normal(COLS // group), group))  # constant groups
    z = rng.standard_normal(COLS)
    z[:group] = 0.0  # an all-zero group
    z[group : 2 * group] = -0.0
    rows.append(z)
    rows.append(rng.standard_normal(COLS) * 3e-8)  # below the 1e-7 scale floor
    rows.append(rng.standard_normal(COLS) * 2000.0)  # large (f16 still finite)
    n_bins = (1 << bits) - 1
    grid = rng.integers(0, n_bins + 1, COLS).astype(np.float64) * 0.125 - 0.5
    grid[::group] = -0.5  # pin the edge so codes land on (and halfway between) grid points
    rows.append(grid)
    rows.append(grid + 0.0625)  # exact halves of a step: rint ties to even
    rows.append(np.abs(rng.standard_normal(COLS)))  # all positive: max is the edge
    rows.append(-np.abs(rng.standard_normal(COLS)))  # all negative: min is the edge
    return np.stack(rows).astype(np.float32)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Runs every case through our kernel in one process; returns the case list."""
    d = tmp_path_factory.mktemp("mlx-kernels")
    cases = []
    seed = 0
    for bits in BITS:
        for group in GROUPS:
            for dtype in DTYPES:
                seed += 1
                x = kernel_rows(seed, bits, group)
                for source in ("dtype", "f32"):
                    if source == "f32" and dtype == "float32":
                        continue
                    name = f"b{bits}-g{group}-{dtype}-{source}"
                    data = x
                    if source == "dtype":
                        # Values already in the dtype, as a bf16/f16 checkpoint holds them.
                        data = np.array(mx.array(x).astype(DTYPES[dtype]).astype(mx.float32))
                    (d / f"{name}.in").write_bytes(data.astype("<f4").tobytes())
                    cases.append(dict(input=str(d / f"{name}.in"), rows=data.shape[0], cols=COLS,
                                      bits=bits, group_size=group, dtype=dtype, out=str(d / name),
                                      name=name, data=data))
    jobs = [{k: v for k, v in c.items() if k not in ("name", "data")} for c in cases]
    (d / "jobs.json").write_text(json.dumps(jobs))
    subprocess.run([example("mlx_kernel"), str(d / "jobs.json")], check=True)
    return cases


def read(path, dtype):
    raw = Path(path).read_bytes()
    if dtype == "float32":
        return np.frombuffer(raw, "<f4")
    return np.frombuffer(raw, "<u2")  # bf16/f16 compared as bit patterns


def mx_from_bits(bits16: np.ndarray, dtype: str, shape) -> mx.array:
    if dtype == "float32":
        return mx.array(bits16.reshape(shape))
    return mx.array(bits16.reshape(shape)).view(DTYPES[dtype])


def bit_patterns(a: mx.array, dtype: str) -> np.ndarray:
    if dtype == "float32":
        return np.array(a).reshape(-1)
    return np.array(a.view(mx.uint16)).reshape(-1)


def test_every_case_matches_mx_quantize(results):
    assert len(results) == len(BITS) * len(GROUPS) * 5
    failures = []
    for c in results:
        dt, bits, g = c["dtype"], c["bits"], c["group_size"]
        rows = c["rows"]
        w = mx.array(c["data"]).astype(DTYPES[dt])
        q, s, b = mx.quantize(w, group_size=g, bits=bits)
        ours_q = np.frombuffer(Path(c["out"] + ".packed").read_bytes(), "<u4")
        ours_s = read(c["out"] + ".scales", dt)
        ours_b = read(c["out"] + ".biases", dt)
        checks = {
            "packed": np.array_equal(ours_q, np.array(q).reshape(-1)),
            "scales": np.array_equal(ours_s, bit_patterns(s, dt)),
            "biases": np.array_equal(ours_b, bit_patterns(b, dt)),
        }
        # mx.dequantize of our tensors == our dequantization.
        gshape = (rows, COLS // g)
        deq = mx.dequantize(mx.array(ours_q.reshape(rows, -1)), mx_from_bits(ours_s, dt, gshape),
                            mx_from_bits(ours_b, dt, gshape), group_size=g, bits=bits)
        ours_deq = np.frombuffer(Path(c["out"] + ".deq").read_bytes(), "<f4")
        checks["dequantize"] = np.array_equal(np.array(deq.astype(mx.float32)).reshape(-1), ours_deq)
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            failures.append(f"{c['name']}: {', '.join(bad)} differ")
    assert not failures, "\n".join(failures)


def test_packed_layout_is_a_little_endian_bit_stream(results):
    """Code j of a row sits at bit offset bits*j of the row's words (3/5/6 bits straddle)."""
    for c in results:
        if c["group_size"] != 32 or c["dtype"] != "float32":
            continue
        bits = c["bits"]
        words = np.frombuffer(Path(c["out"] + ".packed").read_bytes(), "<u4").reshape(c["rows"], -1)
        s = np.frombuffer(Path(c["out"] + ".scales").read_bytes(), "<f4").reshape(c["rows"], -1)
        b = np.frombuffer(Path(c["out"] + ".biases").read_bytes(), "<f4").reshape(c["rows"], -1)
        deq = np.frombuffer(Path(c["out"] + ".deq").read_bytes(), "<f4").reshape(c["rows"], -1)
        for r in range(c["rows"]):
            stream = sum(int(w) << (32 * k) for k, w in enumerate(words[r]))
            codes = np.array([(stream >> (bits * j)) & ((1 << bits) - 1) for j in range(COLS)], np.float32)
            want = np.float32(s[r].repeat(32)) * codes + b[r].repeat(32)
            np.testing.assert_array_equal(want.astype(np.float32), deq[r])
