"""`quantize llm --formats gguf,mlx`: one read of each source tensor feeds both writers;
the GGUF loads in llama.cpp and the MLX checkpoint in mlx-lm, whose per-module bits equal
the plan the command printed."""
import json
from pathlib import Path

import llama_cpp
import mlx.nn as nn
from mlx_lm import generate, load
from safetensors import safe_open

from conftest import REPO, run

DEMO = REPO / "models" / "demo"


def source_tensor_count(folder: Path) -> int:
    n = 0
    for f in folder.glob("*.safetensors"):
        with safe_open(str(f), "np") as s:
            n += len(list(s.keys()))
    return n


def test_gguf_and_mlx_from_one_read(tmp_path):
    r = json.loads(run("quantize", "llm", "--model", DEMO, "--formats", "gguf,mlx",
                       "--gguf-precision", "Q4_K_M,Q8_0", "--mlx-recipe", "mixed_3_6",
                       "--output", tmp_path, "--json").stdout)
    # every source tensor read exactly once for three outputs
    assert r["tensors_read"] == source_tensor_count(DEMO)
    formats = sorted(o["format"] for o in r["outputs"])
    assert formats == ["gguf", "gguf", "mlx"]
    mlx_out = next(o for o in r["outputs"] if o["format"] == "mlx")
    assert mlx_out["path"] == "mlx/3bit-mixed_3_6"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {a["path"] for a in manifest["artifacts"]} == {o["path"] for o in r["outputs"]}

    llm = llama_cpp.Llama(model_path=str(tmp_path / "gguf" / "Q4_K_M" / "demo-Q4_K_M.gguf"),
                          n_ctx=64, verbose=False)
    assert len(llm.create_completion("The history of", max_tokens=4)["choices"][0]["text"]) > 0

    model, tok = load(str(tmp_path / "mlx" / "3bit-mixed_3_6"))
    text = generate(model, tok, prompt="The history of", max_tokens=3)
    assert isinstance(text, str)
    seen = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            key = f"{m.bits}bit/g{m.group_size}"
            seen[key] = seen.get(key, 0) + 1
    planned = {k: v for k, v in r["mlx_plan"]["modules"].items() if "bit/" in k}
    assert seen == planned, (seen, planned)


def test_mlx_needs_the_hf_checkpoint(tmp_path):
    run("quantize", "llm", "--model", DEMO, "--gguf-precision", "Q8_0", "--output", tmp_path / "g")
    p = run("quantize", "llm", "--model", tmp_path / "g" / "gguf" / "Q8_0" / "demo-Q8_0.gguf",
            "--formats", "mlx", "--output", tmp_path / "m", check=False)
    assert p.returncode != 0 and "HuggingFace checkpoint" in p.stderr, p.stderr
