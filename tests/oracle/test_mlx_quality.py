"""Measured quality of our MLX outputs (issue 5), scored by our runtime reading the MLX
checkpoints themselves (`MlxSource`: mx.dequantize of every quantized module, exact,
tests in crates/llama-pajamas/tests/runtime_from_mlx.rs and test_mlx_kernels.py) against
the HF original on `wiki_eval_small.txt`:

- our uniform 4-bit group-64 SmolLM2 is the checkpoint `mlx_lm.convert` writes, byte for
  byte, and its perplexity and KL divergence equal that checkpoint's (within 1%, here
  exactly, both measured);
- our architecture-aware default has lower KL divergence than uniform 4-bit and costs at
  most 0.3 more bits per weight, on SmolLM2 and on the demo model.

Run with `-s` to print the table for docs/quality.md."""
import json
import os
from pathlib import Path

import pytest
from mlx_lm.convert import convert

from conftest import REPO, run
from test_mlx_load import assert_same_checkpoint

EVAL_SMALL = REPO / "data" / "corpora" / "wiki_eval_small.txt"
CTX = 512
# 2 chunks (510 scored tokens) keep CI short; docs/quality.md's table was printed with
# MLX_QUALITY_CHUNKS=4. SmolLM2's evaluations dominate this file's run time.
CHUNKS = int(os.environ.get("MLX_QUALITY_CHUNKS", "2"))


def source(name: str) -> Path:
    if name == "demo":
        return REPO / "models" / "demo"
    d = os.environ.get("SMOLLM2_DIR")
    if not d:
        pytest.skip("SMOLLM2_DIR is not set (scripts/test.sh fetches SmolLM2-135M)")
    return Path(d)


def ours(model: Path, out: Path, *args) -> Path:
    r = json.loads(run("quantize", "llm", "--model", model, "--formats", "mlx", "--output", out,
                       *args, "--json").stdout)
    (o,) = r["outputs"]
    return out / o["path"]


def tensor_bits_per_weight(folder: Path, params: int) -> float:
    """Bits of every stored tensor (packed weights, scales, biases, kept floats) per
    parameter of the original model: the same measure for our files and mlx-lm's."""
    total = 0
    for f in folder.glob("model*.safetensors"):
        with open(f, "rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        total += sum(t["data_offsets"][1] - t["data_offsets"][0]
                     for k, t in header.items() if k != "__metadata__")
    return total * 8 / params


def score(folder: Path, reference: Path) -> dict:
    r = json.loads(run("eval", "--model", folder, "--reference", reference, "--text", EVAL_SMALL,
                       "--ctx", CTX, "--chunks", CHUNKS, "--json").stdout)
    return {"ppl": r["perplexity"]["ppl"], "kld": r["kl_divergence"]["mean"],
            "top1": r["kl_divergence"]["top1_agreement"], "ref_ppl": r["reference_perplexity"]["ppl"],
            "scored": r["scored_tokens"]}


@pytest.fixture(scope="module")
def measured(request, tmp_path_factory):
    """Quantizes and scores `request.param` (tests choose the model with an indirect
    parametrize); cached per model for the module."""
    name = request.param
    src = source(name)
    tmp = tmp_path_factory.mktemp(f"mlxq-{name}")
    params = json.loads(run("detect", "--model", src, "--json").stdout)["architecture"]["params"]["total"]
    files = {
        "ours 4-bit g64": ours(src, tmp / "uniform", "--mlx-bits", "4", "--mlx-group-size", "64",
                               "--mlx-uniform"),
        "ours architecture-aware (base 4-bit)": ours(src, tmp / "aware", "--mlx-bits", "4"),
    }
    if name == "smollm2":
        ref = tmp / "mlx_lm-4bit-g64"
        convert(str(src), str(ref), quantize=True, q_bits=4, q_group_size=64)
        files["mlx_lm.convert 4-bit g64"] = ref
    rows = {}
    for label, folder in files.items():
        rows[label] = {"bpw": tensor_bits_per_weight(folder, params), **score(folder, src)}
    print(f"\n{name}: HF original PPL {rows['ours 4-bit g64']['ref_ppl']:.4f}, "
          f"{rows['ours 4-bit g64']['scored']} scored tokens ({CHUNKS} chunks of {CTX})")
    print("| file | bpw | PPL | KLD vs original | top-1 agreement |\n|---|---|---|---|---|")
    for label, r in rows.items():
        print(f"| {label} | {r['bpw']:.3f} | {r['ppl']:.4f} | {r['kld']:.4f} | {r['top1'] * 100:.2f}% |")
    return name, files, rows


# The mlx_lm.convert comparison is on SmolLM2 (the demo's bytes are compared in
# test_mlx_load).
@pytest.mark.parametrize("measured", ["smollm2"], indirect=True)
def test_uniform_4bit_equals_mlx_lm_convert(measured):
    name, files, rows = measured
    assert_same_checkpoint(files["ours 4-bit g64"], files["mlx_lm.convert 4-bit g64"], recipe=False)
    a, b = rows["ours 4-bit g64"], rows["mlx_lm.convert 4-bit g64"]
    assert a["ppl"] == pytest.approx(b["ppl"], rel=0.01)
    assert a["kld"] == pytest.approx(b["kld"], rel=0.01)
    assert a["bpw"] == pytest.approx(b["bpw"], rel=1e-9)


@pytest.mark.parametrize("measured", ["smollm2", "demo"], indirect=True)
def test_architecture_aware_beats_uniform_within_budget(measured):
    name, _, rows = measured
    u, a = rows["ours 4-bit g64"], rows["ours architecture-aware (base 4-bit)"]
    assert a["bpw"] - u["bpw"] <= 0.3 + 1e-9, (a["bpw"], u["bpw"])
    assert a["kld"] < u["kld"], (name, a, u)


def test_evaluate_scores_mlx_outputs_in_the_manifest(tmp_path):
    run("quantize", "llm", "--model", source("demo"), "--formats", "gguf,mlx", "--gguf-precision", "Q8_0",
        "--mlx-bits", "4", "--output", tmp_path, "--evaluate", "--eval-text", EVAL_SMALL,
        "--eval-ctx", 256, "--eval-chunks", 2)
    m = json.loads((tmp_path / "manifest.json").read_text())
    q = {a["format"]: a["quality"] for a in m["artifacts"]}
    assert set(q) == {"gguf", "mlx"}
    assert "mx.dequantize" in q["mlx"]["measured_by"]
    # 4-bit MLX loses more than Q8_0 GGUF against the same original.
    assert 0 < q["gguf"]["kl_divergence_mean"] < q["mlx"]["kl_divergence_mean"]
    assert q["gguf"]["reference_perplexity"] == pytest.approx(q["mlx"]["reference_perplexity"])
