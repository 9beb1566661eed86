"""Importance matrices of hybrid Mamba-2 / attention models, checked against llama-imatrix
(built from the llama-cpp-python 0.3.36 sdist by scripts/setup_llama_tools.sh):

  tiny-hybrid       models/tiny-hybrid (trained Granite 4.0-H style, dense FFN, bf16)
  nemotron_h        tests/fixtures/tiny-nemotron_h (Mamba-2, relu^2 MoE, attention)
  granitemoehybrid  tests/fixtures/tiny-granitemoehybrid (Granite 4.0-H with experts)

llama-imatrix records the inputs of every MUL_MAT / MUL_MAT_ID whose weight is a `blk.*`
tensor, under that tensor's name: in these models the Mamba-2 `ssm_in` / `ssm_out`
projections, attention, the FFN (Granite's fused `input_linear` split into gate and up),
routers and stacked experts (one vector and count per expert). Our `imatrix`, run on the
same F16 GGUF (and on the HF folder), must give the same entries with the same token
counts and close sums, and both `quantize llm --imatrix` and llama-quantize must use
them. ctx 128, 4 chunks: a few seconds per model."""
import os
import shutil
import subprocess
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize

from conftest import REPO, run

FIXTURES = REPO / "tests" / "fixtures"
CASES = {
    "tiny-hybrid": REPO / "models" / "tiny-hybrid",
    "nemotron_h": FIXTURES / "tiny-nemotron_h",
    "granitemoehybrid": FIXTURES / "tiny-granitemoehybrid",
}
CTX, CHUNKS = 128, 4


def tools_dir() -> Path:
    d = os.environ.get("LLAMA_TOOLS_DIR")
    if not d:
        pytest.skip("LLAMA_TOOLS_DIR is not set (scripts/test.sh builds llama-imatrix)")
    return Path(d)


def llama(tool, *args, cwd):
    p = subprocess.run([str(tools_dir() / tool), *map(str, args)], capture_output=True, text=True, cwd=cwd)
    if p.returncode != 0:
        raise AssertionError(f"{tool} {args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Per case: our F16 GGUF, llama-imatrix's imatrix of it, and ours of it and of the
    HF folder, all on the same text (a relative path, so the recorded dataset is equal)."""
    d = tmp_path_factory.mktemp("hybrid-imatrix")
    (d / "calib.txt").write_text((REPO / "data" / "corpora" / "wiki_calib.txt").read_text()[:12000])
    cache = {}

    def get(case):
        if case not in cache:
            c = d / case
            c.mkdir()
            shutil.copy(d / "calib.txt", c / "calib.txt")
            run("quantize", "llm", "--model", CASES[case], "--formats", "gguf", "--gguf-precision", "F16",
                "--output", c / "out")
            f16 = c / "out" / "gguf" / "F16" / f"{CASES[case].name}-F16.gguf"
            llama("llama-imatrix", "-m", f16, "-f", "calib.txt", "-o", "theirs.gguf", "-c", CTX,
                  "--chunks", CHUNKS, "-t", "2", cwd=c)
            for source, model in (("gguf", f16), ("hf", CASES[case])):
                subprocess.run([os.environ["LLAMA_PAJAMAS_BIN"], "imatrix", "--model", str(model),
                                "--calibration", "calib.txt", "--output", f"ours-{source}.gguf",
                                "--ctx", str(CTX), "--chunks", str(CHUNKS)], cwd=c, check=True,
                               capture_output=True)
            cache[case] = {"dir": c, "f16": f16, "theirs": c / "theirs.gguf",
                           "gguf": c / "ours-gguf.gguf", "hf": c / "ours-hf.gguf"}
        return cache[case]

    return get


def entries(path):
    """name -> (in_sum2 [n_mat x n_per_row] float64, counts [n_mat])."""
    t = {x.name: np.array(x.data, dtype=np.float64) for x in gguf.GGUFReader(str(path)).tensors}
    out = {}
    for k, v in t.items():
        if k.endswith(".in_sum2"):
            name = k[:-len(".in_sum2")]
            counts = t[name + ".counts"].ravel()
            out[name] = (v.reshape(len(counts), -1), counts)
    assert len(t) == 2 * len(out), sorted(t)
    return out


def product_weights(f16):
    """name -> (row length, matrices) of every `blk.*` tensor some matrix product reads:
    2-D or 3-D `.weight`s other than norms and Mamba-2's depthwise conv kernel (ssm_a and
    ssm_d have no `.weight` suffix)."""
    out = {}
    for t in gguf.GGUFReader(str(f16)).tensors:
        n = t.name
        if n.startswith("blk.") and len(t.shape) >= 2 and n.endswith(".weight") \
                and not n.endswith("_norm.weight") and ".ssm_conv1d." not in n:
            out[n] = (int(t.shape[0]), int(t.shape[2]) if len(t.shape) > 2 else 1)
    return out


@pytest.mark.parametrize("case", CASES)
def test_entries_are_llama_imatrix_entries(work, case):
    """Same names as llama-imatrix's, and these are exactly the model's product weights:
    ssm_in and ssm_out of every Mamba-2 layer included, each with its row length and one
    vector per expert."""
    w = work(case)
    theirs = entries(w["theirs"])
    want = product_weights(w["f16"])
    assert sorted(theirs) == sorted(want)
    assert any(".ssm_in." in n for n in want) and any(".ssm_out." in n for n in want)
    for source in ("gguf", "hf"):
        ours = entries(w[source])
        assert sorted(ours) == sorted(theirs), (source, sorted(set(ours) ^ set(theirs)))
        for name, (sums, counts) in ours.items():
            assert sums.shape == (want[name][1], want[name][0]), (source, name, sums.shape)
            assert counts.shape == theirs[name][1].shape, (source, name)


@pytest.mark.parametrize("source", ["gguf", "hf"])
@pytest.mark.parametrize("case", CASES)
def test_counts_and_sums_match_llama_imatrix(work, case, source):
    """From the F16 GGUF: every count equal and the sums equal up to f16/f32 rounding. From
    the HF folder (bf16 / f32 weights), a token whose two best experts are nearly tied may
    go to the other one: per-expert counts then differ by a token or two, with the same
    total; every matrix that saw the same tokens has close sums."""
    w = work(case)
    ours, theirs = entries(w[source]), entries(w["theirs"])
    same = differ = 0
    worst = 0.0
    for name, (sb, cb) in theirs.items():
        sa, ca = ours[name]
        assert ca.sum() == cb.sum(), (name, ca, cb)
        if source == "gguf":
            assert np.array_equal(ca, cb), (name, ca, cb)
        else:
            assert np.abs(ca - cb).max() <= 2, (name, ca, cb)
        if len(cb) == 1:
            assert cb[0] == CTX * CHUNKS, name
        for j in range(len(cb)):
            if ca[j] != cb[j]:
                differ += 1
                continue
            same += 1
            if cb[j] == 0:
                assert not sa[j].any() and not sb[j].any(), (name, j)
                continue
            scale = np.abs(sb[j]).max()
            worst = max(worst, float(np.abs(sa[j] - sb[j]).max() / scale))
            np.testing.assert_allclose(sa[j], sb[j], rtol=2e-3 if source == "gguf" else 1e-2,
                                       atol=(1e-5 if source == "gguf" else 2e-3) * scale,
                                       err_msg=f"{name} [{j}]")
    print(f"\n{case} ({source}): {same} matrices with llama-imatrix's counts, {differ} not; "
          f"worst |diff| / max {worst:.2e}")
    assert differ <= same // 10, (same, differ)


def tensors(path):
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


FLOAT = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16)


@pytest.mark.parametrize("case", CASES)
def test_quantize_llm_uses_the_entries(work, case, tmp_path):
    """`quantize llm --imatrix` accepts the hybrid imatrix (no entry needed for ssm_conv1d,
    ssm_a, ssm_d, ssm_norm), records it, and on the trained model every K-quant tensor with
    an entry (ssm_in and ssm_out among them) comes out different than without it."""
    w = work(case)
    out = {}
    for tag, extra in (("with", ["--imatrix", w["hf"]]), ("without", [])):
        run("quantize", "llm", "--model", CASES[case], "--formats", "gguf", "--gguf-precision", "Q4_K_M",
            *extra, "--output", tmp_path / tag)
        out[tag] = tmp_path / tag / "gguf" / "Q4_K_M" / f"{CASES[case].name}-Q4_K_M.gguf"
    r = gguf.GGUFReader(str(out["with"]))
    n = len(entries(w["hf"]))
    assert r.fields["quantize.imatrix.entries_count"].contents() == n
    assert r.fields["quantize.imatrix.chunks_count"].contents() == CHUNKS
    if case != "tiny-hybrid":
        return  # the fixtures' 64-wide rows fall back to types that take no imatrix
    a, b = tensors(out["with"]), tensors(out["without"])
    checked = [k for k in entries(w["hf"]) if a[k].tensor_type not in FLOAT]
    assert len(checked) == n and any(".ssm_in." in k for k in checked)
    for k in checked:
        assert bytes(a[k].data) != bytes(b[k].data), f"{k}: the imatrix changed nothing"


def test_llama_quantize_uses_our_entries(work, tmp_path):
    """llama-quantize reads our imatrix of tiny-hybrid's F16 (finds an entry for every
    tensor but token_embd) and its Q4_K_M with ours is close to its Q4_K_M with
    llama-imatrix's: per tensor, the dequantized weights differ from it by less than a
    quarter of what the Q4_K_M without imatrix differs."""
    w = work("tiny-hybrid")
    files = {}
    for tag, im in (("ours", w["gguf"]), ("theirs", w["theirs"]), ("plain", None)):
        args = ["--imatrix", im] if im else []
        p = llama("llama-quantize", *args, w["f16"], tmp_path / f"{tag}.gguf", "Q4_K_M", "2", cwd=tmp_path)
        log = p.stdout + p.stderr
        if im:
            assert f"loaded {len(entries(im))} importance matrix entries" in log, log[-2000:]
            missing = [line for line in log.splitlines() if "did not find weights for" in line]
            assert [line.split()[-1] for line in missing] == ["token_embd.weight"], missing
        files[tag] = tensors(tmp_path / f"{tag}.gguf")
    deq = {tag: {k: dequantize(np.array(t.data), t.tensor_type) for k, t in f.items()
                 if k.startswith("blk.") and t.tensor_type not in FLOAT} for tag, f in files.items()}
    assert len(deq["ours"]) == len(entries(w["gguf"]))
    for k, ours in deq["ours"].items():
        theirs, plain = deq["theirs"][k], deq["plain"][k]
        ratio = np.linalg.norm(ours - theirs) / np.linalg.norm(plain - theirs)
        assert ratio < 0.25, (k, ratio)
