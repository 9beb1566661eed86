"""Importance-matrix files (crates/pajamas-imatrix) checked against llama.cpp itself:
llama-imatrix (built by scripts/setup_llama_tools.sh from the llama-cpp-python 0.3.36 sdist)
computes imatrices of our F16 demo GGUF in both formats (GGUF and legacy .dat); our reader
must read both and give the importance llama-quantize derives; gguf-py must see what we see;
our GGUF writer must reproduce llama-imatrix's bytes; llama-quantize must produce the same
quantized file from our rewrite as from llama-imatrix's original; damaged files must fail
with a message naming the file."""
import json
import math
import os
import shutil
import struct
import subprocess
from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest import REPO, run

CHUNK = 128
CHUNKS = 4


def tools_dir() -> Path:
    d = os.environ.get("LLAMA_TOOLS_DIR")
    if not d:
        raise RuntimeError("LLAMA_TOOLS_DIR is not set: run the tests through scripts/test.sh "
                           "(it runs scripts/setup_llama_tools.sh)")
    return Path(d)


def imatrix_tool(*args, check=True):
    d = os.environ.get("PAJAMAS_EXAMPLES")
    if not d:
        raise RuntimeError("PAJAMAS_EXAMPLES is not set: run the tests through scripts/test.sh")
    p = subprocess.run([str(Path(d) / "imatrix_tool"), *map(str, args)], capture_output=True, text=True)
    assert "panicked" not in p.stderr, p.stderr
    if check and p.returncode != 0:
        raise AssertionError(f"imatrix_tool {args} failed ({p.returncode}):\n{p.stderr}")
    return p


def dump(path):
    return json.loads(imatrix_tool("dump", path).stdout)


def llama(tool, *args, cwd=None):
    p = subprocess.run([str(tools_dir() / tool), *map(str, args)], capture_output=True, text=True, cwd=cwd)
    if p.returncode != 0:
        raise AssertionError(f"{tool} {args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Our F16 GGUF of models/demo and llama-imatrix's imatrices of it, in both formats."""
    d = tmp_path_factory.mktemp("imatrix")
    run("quantize", "llm", "--model", REPO / "models" / "demo", "--formats", "gguf",
        "--gguf-precision", "F16", "--output", d / "out")
    model = d / "out" / "gguf" / "F16" / "demo-F16.gguf"
    assert model.is_file()
    # A relative dataset path, so that the file name recorded in the imatrix is stable.
    shutil.copy(REPO / "data" / "corpora" / "wiki_calib.txt", d / "calib.txt")
    common = ["-m", model, "-f", "calib.txt", "--chunks", CHUNKS, "-c", CHUNK, "-t", "2"]
    llama("llama-imatrix", *common, "-o", "im.gguf", cwd=d)
    llama("llama-imatrix", *common, "-o", "im.dat", "--output-format", "dat", cwd=d)
    return {"dir": d, "model": model, "gguf": d / "im.gguf", "dat": d / "im.dat"}


def f32(values):
    return np.array(values, dtype=np.float64).astype(np.float32)


def llama_quantize_importance(sums, counts):
    """llama-quantize's load_imatrix for a GGUF imatrix, in float32: per matrix,
    sums / float(lround(count)), or ones where the count is 0."""
    sums = np.asarray(sums, np.float32).reshape(len(counts), -1)
    out = np.ones_like(sums)
    for j, c in enumerate(counts):
        c = np.float32(math.floor(float(c) + 0.5))  # lround of a non-negative count
        if c > 0:
            out[j] = sums[j] / c
    return out.reshape(-1)


def gguf_py_entries(path):
    """name -> (in_sum2 float32, counts float32, dims) as gguf-py reads them."""
    r = gguf.GGUFReader(str(path))
    sums, counts, dims = {}, {}, {}
    for t in r.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, t.name
        data = np.array(t.data, dtype=np.float32).reshape(-1)
        if t.name.endswith(".in_sum2"):
            sums[t.name[:-len(".in_sum2")]] = data
            dims[t.name[:-len(".in_sum2")]] = [int(x) for x in t.shape]
        else:
            assert t.name.endswith(".counts"), t.name
            counts[t.name[:-len(".counts")]] = data
    assert sums.keys() == counts.keys()
    return r, {k: (sums[k], counts[k], dims[k]) for k in sums}


def parse_dat(path):
    """The legacy layout, parsed independently: entries, chunk count, dataset."""
    b = Path(path).read_bytes()
    pos = 0

    def i32():
        nonlocal pos
        v = struct.unpack_from("<i", b, pos)[0]
        pos += 4
        return v
    entries = {}
    for _ in range(i32()):
        n = i32()
        name = b[pos:pos + n].decode()
        pos += n
        ncall, nval = i32(), i32()
        entries[name] = (ncall, np.frombuffer(b, np.float32, nval, pos).copy())
        pos += 4 * nval
    chunks = i32()
    n = i32()
    dataset = b[pos:pos + n].decode()
    assert pos + n == len(b)
    return entries, chunks, dataset


def test_gguf_read_matches_gguf_py(files):
    ours = dump(files["gguf"])
    r, ref = gguf_py_entries(files["gguf"])
    assert ours["format"] == "gguf"
    assert ours["metadata_keys"] == ["general.type", "imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"]
    assert r.fields["general.type"].contents() == "imatrix"
    assert ours["datasets"] == r.fields["imatrix.datasets"].contents() == ["calib.txt"]
    assert ours["chunk_count"] == r.fields["imatrix.chunk_count"].contents() == CHUNKS
    assert ours["chunk_size"] == r.fields["imatrix.chunk_size"].contents() == CHUNK
    assert ours["entries"].keys() == ref.keys()
    for name, (sums, counts, dims) in ref.items():
        e = ours["entries"][name]
        assert np.array_equal(f32(e["in_sum2"]), sums), name
        assert np.array_equal(f32(e["counts"]), counts), name
        assert [e["n_per_row"]] + ([e["n_mat"]] if e["n_mat"] > 1 else []) == dims, name
        # every chunk's tokens were counted
        assert counts.tolist() == [CHUNK * CHUNKS], name
        # bit for bit the importance llama-quantize computes
        assert np.array_equal(f32(e["importance"]), llama_quantize_importance(sums, counts)), name


def test_collected_tensors_are_the_block_matmul_weights(files):
    """llama-imatrix collects the inputs of every matrix product whose weight is a `blk.*`
    tensor (and `output.weight` only with --process-output; the demo model ties it to the
    token embedding, a lookup, so neither appears). Each entry has the weight's row length."""
    ours = dump(files["gguf"])
    model = gguf.GGUFReader(str(files["model"]))
    weights = {t.name: int(t.shape[0]) for t in model.tensors if t.name.startswith("blk.") and len(t.shape) == 2}
    assert {n: e["n_per_row"] for n, e in ours["entries"].items()} == weights
    check = json.loads(imatrix_tool("check", files["gguf"], files["model"]).stdout)
    assert check == {"matched": len(weights), "missing": ["token_embd.weight"], "unused": []}


def test_dat_read_matches_independent_parse_and_gguf(files):
    """The legacy file stores sum / count * ncall with ncall = ceil(tokens / chunk size); our
    reader keeps those values and ncall as the count, so the importance is value / ncall,
    which equals the GGUF file's sum / tokens up to float rounding."""
    ours = dump(files["dat"])
    entries, chunks, dataset = parse_dat(files["dat"])
    g = dump(files["gguf"])
    assert ours["format"] == "dat"
    assert ours["datasets"] == [dataset] == ["calib.txt"]
    assert ours["chunk_count"] == chunks == CHUNKS
    assert ours["entries"].keys() == entries.keys() == g["entries"].keys()
    for name, (ncall, values) in entries.items():
        e = ours["entries"][name]
        assert ncall == math.ceil(CHUNK * CHUNKS / CHUNK)
        assert np.array_equal(f32(e["in_sum2"]), values), name
        assert e["counts"] == [ncall], name
        assert np.array_equal(f32(e["importance"]), values / np.float32(ncall)), name
        np.testing.assert_allclose(f32(e["importance"]), f32(g["entries"][name]["importance"]), rtol=2e-6, atol=0)


def test_dat_importance_equals_llama_cpp_loader(files, tmp_path):
    """llama.cpp's own loader (llama-imatrix --in-file, no prompt: load and save) turns the
    .dat into raw sums and counts (both times the chunk size, 128: exact); the importance
    derived from its output equals ours from the .dat bit for bit."""
    conv = tmp_path / "conv.gguf"
    llama("llama-imatrix", "-m", files["model"], "--in-file", files["dat"], "-o", conv, "-c", CHUNK)
    ours = dump(files["dat"])
    _, ref = gguf_py_entries(conv)
    assert ref.keys() == ours["entries"].keys()
    for name, (sums, counts, _) in ref.items():
        assert np.array_equal(f32(ours["entries"][name]["importance"]), llama_quantize_importance(sums, counts)), name
    # and our reader of llama.cpp's conversion agrees with itself
    again = dump(conv)
    for name, e in again["entries"].items():
        assert e["importance"] == ours["entries"][name]["importance"], name
    # our conversion to raw token sums (x chunk size) is llama.cpp's, byte for byte
    raw = tmp_path / "raw.gguf"
    imatrix_tool("rewrite", files["dat"], raw, "--chunk-size", CHUNK)
    assert raw.read_bytes() == conv.read_bytes()


def test_rewrite_of_gguf_is_byte_identical(files, tmp_path):
    out = tmp_path / "ours.gguf"
    imatrix_tool("rewrite", files["gguf"], out)
    assert out.read_bytes() == files["gguf"].read_bytes()
    assert not (tmp_path / "ours.gguf.partial").exists()


def test_llama_cpp_loads_our_rewrite_unchanged(files, tmp_path):
    """llama-imatrix reading our file (its loader) and saving it again reproduces our bytes,
    for a rewrite of the GGUF and of the .dat."""
    for src in ("gguf", "dat"):
        ours = tmp_path / f"ours-{src}.gguf"
        imatrix_tool("rewrite", files[src], ours)
        back = tmp_path / f"back-{src}.gguf"
        llama("llama-imatrix", "-m", files["model"], "--in-file", ours, "-o", back, "-c", CHUNK)
        if src == "gguf":
            assert back.read_bytes() == ours.read_bytes()
        else:
            # raw form: sums and counts times the chunk size; same importance
            a, b = dump(ours), dump(back)
            for name, e in a["entries"].items():
                assert e["importance"] == b["entries"][name]["importance"], name


def quantize(workdir: Path, model, imatrix=None):
    """llama-quantize Q4_K_M in `workdir`. The imatrix is copied to `workdir/imatrix` so that
    the path llama-quantize records (quantize.imatrix.file) is the same in every run."""
    workdir.mkdir()
    args = []
    if imatrix is not None:
        shutil.copy(imatrix, workdir / "imatrix")
        args = ["--imatrix", "imatrix"]
    llama("llama-quantize", *args, model, "q.gguf", "Q4_K_M", "2", cwd=workdir)
    return (workdir / "q.gguf").read_bytes()


def test_llama_quantize_output_identical_with_our_rewrite(files, tmp_path):
    model = files["model"]
    plain = quantize(tmp_path / "plain", model)
    theirs = quantize(tmp_path / "theirs", model, files["gguf"])
    assert theirs != plain, "the imatrix changed nothing: the comparison would prove nothing"
    for src in ("gguf", "dat"):
        ours = tmp_path / f"ours-{src}.gguf"
        imatrix_tool("rewrite", files[src], ours)
        assert quantize(tmp_path / f"q-ours-{src}", model, ours) == theirs, src
    # and llama-quantize reads the original .dat to the same result
    assert quantize(tmp_path / "theirs-dat", model, files["dat"]) == theirs


def test_damaged_files_fail_naming_the_file(files, tmp_path):
    g = files["gguf"].read_bytes()
    dat = files["dat"].read_bytes()
    cases = {
        "trunc-header.gguf": g[:100],
        "trunc-data.gguf": g[:len(g) - 40],
        "trunc-mid.gguf": g[:len(g) // 2],
        "trunc.dat": dat[:len(dat) // 2],
        "trunc-trailer.dat": dat[:-3],
        "garbage.bin": bytes((i * 2654435761 >> 13) & 0xFF for i in range(4096)),
        "text.txt": b"this is not an importance matrix\n" * 10,
        "empty.dat": b"",
        "model.gguf": files["model"].read_bytes(),
    }
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        for args in (("dump", p), ("rewrite", p, tmp_path / "out.gguf")):
            r = imatrix_tool(*args, check=False)
            assert r.returncode == 1, (name, r.stdout[:200], r.stderr)
            assert str(p) in r.stderr and r.stderr.startswith("error: "), (name, r.stderr)
        assert not (tmp_path / "out.gguf").exists() and not (tmp_path / "out.gguf.partial").exists()
    r = imatrix_tool("dump", tmp_path / "model.gguf", check=False)
    assert "not an importance matrix" in r.stderr, r.stderr
    r = imatrix_tool("dump", tmp_path / "missing.gguf", check=False)
    assert r.returncode == 1 and str(tmp_path / "missing.gguf") in r.stderr
    assert imatrix_tool("frobnicate", check=False).returncode == 2
