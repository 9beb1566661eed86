"""MLX checkpoints written by crates/pajamas-mlx (through the `mlx_quantize` example)
checked by their real consumer, mlx-lm 0.32.2 on mlx 0.32.4 (CPU):

- the demo model and SmolLM2-135M, in uniform 4-bit, mlx-lm's mixed_3_6 recipe and our
  architecture-aware plan, load with `mlx_lm.load` (strict: every parameter present,
  nothing extra), generate text, and every Linear/Embedding mlx-lm built has the bits
  and group size of our plan (or stays unquantized where the plan keeps it);
- for every family we convert (tiny fixtures of llama, llama3, mistral, qwen2, qwen3,
  gemma3 and the demo model) our files are byte for byte what `mlx_lm.convert` writes
  from the same checkpoint: tensors, index and config (but for the global `bits` of a
  recipe: mlx-lm writes its --q-bits default 4, we write the recipe's low bits);
- the multimodal Gemma 3 layout (text model under `language_model.`, vision tower
  dropped) and sharded output load and give the same logits as the plain layout.

Generation on mlx's CPU backend is slow for bf16 (scalar kernels, ~1-2 s per SmolLM2
forward), so prompts are one token and SmolLM2 generates one new token."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx_lm import generate, load
from mlx_lm.convert import convert
from safetensors.numpy import save_file

from conftest import REPO

FIXTURES = REPO / "tests" / "fixtures"
FAMILIES = ["llama", "llama3", "mistral", "qwen2", "qwen3", "gemma3"]
CHOICES = {
    "4bit": ["--bits", "4", "--group-size", "64"],
    "3bit-mixed_3_6": ["--recipe", "mixed_3_6", "--group-size", "64"],
    "4bit-aware": ["--aware"],
}


def example(name: str) -> str:
    d = os.environ.get("PAJAMAS_EXAMPLES")
    if not d:
        raise RuntimeError("PAJAMAS_EXAMPLES is not set: run the tests through scripts/test.sh")
    return str(Path(d) / name)


def quantize(model: Path, out: Path, *args) -> tuple[Path, dict]:
    """Runs mlx_quantize; returns the output folder and our plan (JSON)."""
    plan = out / f"plan-{'-'.join(a.strip('-') for a in args)}.json"
    out.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([example("mlx_quantize"), "--model", str(model), "--output", str(out),
                        "--plan-json", str(plan), *map(str, args)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return Path(p.stdout.strip().splitlines()[-1]), json.loads(plan.read_text())


def smollm2() -> Path:
    d = os.environ.get("SMOLLM2_DIR")
    if not d:
        pytest.skip("SMOLLM2_DIR is not set (scripts/test.sh fetches SmolLM2-135M)")
    return Path(d)


def model_dir(name: str) -> Path:
    return REPO / "models" / "demo" if name == "demo" else smollm2()


def modules_seen(model) -> dict:
    """Every Linear/Embedding mlx-lm built: path -> (bits, group_size) or None."""
    seen = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            assert m.mode == "affine", name
            seen[name] = (m.bits, m.group_size)
        elif isinstance(m, (nn.Linear, nn.Embedding)):
            seen[name] = None
    return seen


def planned(plan: dict) -> dict:
    want = {}
    for t in plan["tensors"]:
        if t["kind"] != "norm" and t["name"].endswith(".weight"):
            q = t["quant"]
            want[t["module"]] = (q["bits"], q["group_size"]) if q else None
    return want


@pytest.mark.parametrize("choice", list(CHOICES))
@pytest.mark.parametrize("name", ["demo", "smollm2"])
def test_loads_generates_and_bits_match_plan(name, choice, tmp_path):
    out, plan = quantize(model_dir(name), tmp_path, *CHOICES[choice])
    assert out.name == choice and out.parent.name == "mlx"
    model, tok = load(str(out))
    assert modules_seen(model) == planned(plan)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization"] == cfg["quantization_config"]
    assert cfg["quantization"]["mode"] == "affine"
    # Every per-module key is a module path mlx-lm built.
    seen = modules_seen(model)
    extra = [k for k in cfg["quantization"] if k not in ("group_size", "bits", "mode") and k not in seen]
    assert not extra
    # mlx's CPU kernels run bf16 in scalar code (~1-2 s per SmolLM2 forward): one new
    # token there, a few for the demo model.
    text = generate(model, tok, prompt="The", max_tokens=1 if name == "smollm2" else 6)
    assert isinstance(text, str) and len(text) > 0


def test_smollm2_group_128_keeps_non_divisible_modules(tmp_path):
    """576 is not a multiple of 128: projections reading the hidden state stay bf16,
    listed as `false`; down_proj (1536 inputs) is quantized."""
    out, plan = quantize(smollm2(), tmp_path, "--bits", "4", "--group-size", "128")
    q = json.loads((out / "config.json").read_text())["quantization"]
    assert q["model.layers.0.self_attn.q_proj"] is False
    assert q["model.embed_tokens"] is False
    assert "model.layers.0.mlp.down_proj" not in q
    kept = [t for t in plan["tensors"] if t["module"] == "model.layers.0.self_attn.q_proj"][0]
    assert "not a multiple of group size 128" in kept["reason"]
    model, _ = load(str(out))
    seen = modules_seen(model)
    assert seen == planned(plan)
    assert seen["model.layers.0.mlp.down_proj"] == (4, 128)
    assert seen["model.layers.0.self_attn.q_proj"] is None


def load_weights(folder: Path) -> dict:
    w = {}
    for f in sorted(folder.glob("model*.safetensors")):
        w.update(mx.load(str(f)))
    return w


def assert_same_checkpoint(ours: Path, ref: Path, recipe: bool):
    a, b = load_weights(ours), load_weights(ref)
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert np.array_equal(np.array(a[k].view(mx.uint8)), np.array(b[k].view(mx.uint8))), k
    ia = json.loads((ours / "model.safetensors.index.json").read_text())
    ib = json.loads((ref / "model.safetensors.index.json").read_text())
    assert ia == ib
    ca = json.loads((ours / "config.json").read_text())
    cb = json.loads((ref / "config.json").read_text())
    if recipe:
        for c in (ca, cb):
            for k in ("quantization", "quantization_config"):
                c[k] = {kk: v for kk, v in c[k].items() if kk != "bits"}
    assert ca == cb


@pytest.mark.parametrize("family", ["demo", *FAMILIES])
def test_same_bytes_as_mlx_lm_convert(family, tmp_path):
    src = REPO / "models" / "demo" if family == "demo" else FIXTURES / f"tiny-{family}"
    group = "64" if family == "demo" else "32"
    for args, kw in [
        (["--bits", "4", "--group-size", group], dict(q_bits=4)),
        (["--recipe", "mixed_3_6", "--group-size", group], dict(quant_predicate="mixed_3_6")),
    ]:
        ours, _ = quantize(src, tmp_path / "ours", *args)
        ref = tmp_path / f"ref-{ours.name}"
        convert(str(src), str(ref), quantize=True, q_group_size=int(group), **kw)
        assert_same_checkpoint(ours, ref, recipe="--recipe" in args)


def logits(folder: Path, ids) -> np.ndarray:
    model, _ = load(str(folder))
    return np.array(model(mx.array([ids])).astype(mx.float32))


def test_gemma3_multimodal_layout(tmp_path):
    """A Gemma3ForConditionalGeneration checkpoint (transformers 5 names, a vision
    tensor, text_config) loads as mlx-lm's gemma3 with the text model under
    language_model. and gives the logits of the text-only checkpoint."""
    # mlx-lm's gemma3_text reads the local:global period from `sliding_window_pattern`
    # (default 6, more than the fixture's 3 layers): give it the fixture's period.
    src = tmp_path / "gemma3-text"
    shutil.copytree(FIXTURES / "tiny-gemma3", src)
    text_cfg = json.loads((src / "config.json").read_text())
    text_cfg["sliding_window_pattern"] = text_cfg["layer_types"].index("full_attention") + 1
    (src / "config.json").write_text(json.dumps(text_cfg))
    wrapper = tmp_path / "gemma3-mm"
    wrapper.mkdir()
    for f in src.iterdir():
        if f.name not in ("config.json", "model.safetensors") and f.is_file():
            shutil.copy(f, wrapper)
    cfg = {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "text_config": text_cfg,
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 32},
        "vocab_size": text_cfg["vocab_size"],
        "dtype": text_cfg["dtype"],
        "tie_word_embeddings": True,
    }
    (wrapper / "config.json").write_text(json.dumps(cfg))
    w = mx.load(str(src / "model.safetensors"))
    renamed = {k.replace("model.", "model.language_model.", 1): np.array(v) for k, v in w.items()}
    renamed["model.vision_tower.vision_model.post_layernorm.weight"] = np.ones(32, np.float32)
    save_file(renamed, str(wrapper / "model.safetensors"), metadata={"format": "pt"})

    plain, _ = quantize(src, tmp_path / "plain", "--bits", "8", "--group-size", "32")
    mm, plan = quantize(wrapper, tmp_path / "mm", "--bits", "8", "--group-size", "32")
    assert any(d["source"].startswith("model.vision_tower") for d in plan["dropped"])
    mm_cfg = json.loads((mm / "config.json").read_text())
    assert "vision_config" not in mm_cfg
    assert "language_model.model.layers.0.self_attn.q_proj" in {t["module"] for t in plan["tensors"]}
    ids = json.loads((src / "reference_ids.json").read_text())
    ids = ids[0] if isinstance(ids[0], list) else ids
    np.testing.assert_array_equal(logits(mm, ids), logits(plain, ids))


def test_sharded_output_loads(tmp_path):
    """Shards of at most N bytes (mlx-lm's make_shards rule), each listed in the index."""
    demo = REPO / "models" / "demo"
    single, _ = quantize(demo, tmp_path / "one", "--aware")
    limit = 400000
    sharded, _ = quantize(demo, tmp_path / "many", "--aware", "--max-shard-bytes", str(limit))
    shards = sorted(sharded.glob("model*.safetensors"))
    assert len(shards) > 2 and shards[0].name == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    for s in shards:
        t = mx.load(str(s))
        # At most `limit` bytes of data, unless one tensor alone is larger.
        assert sum(v.nbytes for v in t.values()) <= limit or len(t) == 1, s.name
    np.testing.assert_array_equal(logits(sharded, [1, 2, 3]), logits(single, [1, 2, 3]))
