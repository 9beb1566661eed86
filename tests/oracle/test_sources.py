"""Model sources against the reference `safetensors` package: a real file it wrote is
listed exactly as it lists it, corrupt variants give clear errors, hub ids resolve
through a HuggingFace cache laid out the way huggingface_hub lays it out."""
import json
import shutil

import pytest
from safetensors import safe_open

from conftest import detect_json, run

DTYPE_NAMES = {"BF16": "BF16", "F16": "F16", "F32": "F32"}


def test_lists_what_safetensors_lists(tiny_model):
    report = detect_json(tiny_model, tensors=True)
    ours = {t["name"]: (t["dtype"], t["shape"]) for t in report["tensors"]["tensors"]}
    with safe_open(str(tiny_model / "model.safetensors"), framework="numpy") as f:
        ref = {}
        for name in f.keys():
            sl = f.get_slice(name)
            ref[name] = (sl.get_dtype(), list(sl.get_shape()))
    assert set(ours) == set(ref)
    for name, (dtype, shape) in ref.items():
        assert ours[name] == (DTYPE_NAMES[dtype], shape), name
    # The config-derived count equals the elements actually stored.
    assert report["architecture"]["params"]["total"] == report["tensors"]["params_in_checkpoint"]
    assert report["tensors"]["dtypes"] == {"BF16": 9, "F16": 5, "F32": 7}
    assert report["tensors"]["unrecognised"] == []
    assert report["architecture"]["attention"]["kind"] == "grouped_query"


def corrupt(tiny_model, mutate):
    p = tiny_model / "model.safetensors"
    data = bytearray(p.read_bytes())
    p.write_bytes(bytes(mutate(data)))
    r = run("detect", "--model", tiny_model, check=False)
    assert r.returncode != 0
    assert "panicked" not in r.stderr
    assert "model.safetensors" in r.stderr, r.stderr
    return r.stderr


def header_len(data):
    return int.from_bytes(data[:8], "little")


def test_truncated_header(tiny_model):
    err = corrupt(tiny_model, lambda d: d[: 8 + header_len(d) // 2])
    assert "truncated" in err


def test_truncated_data(tiny_model):
    err = corrupt(tiny_model, lambda d: d[: len(d) - 100])
    assert "data section holds only" in err


def test_bad_json(tiny_model):
    def mutate(d):
        d[8] = ord("[")
        return d
    err = corrupt(tiny_model, mutate)
    assert "not valid JSON" in err


def test_offsets_past_the_end(tiny_model):
    def mutate(d):
        n = header_len(d)
        header = json.loads(bytes(d[8:8 + n]))
        name = next(k for k in header if k != "__metadata__")
        b, e = header[name]["data_offsets"]
        header[name]["data_offsets"] = [b + 10**9, e + 10**9]
        new = json.dumps(header).encode()
        new += b" " * (-len(new) % 8)
        return len(new).to_bytes(8, "little") + new + d[8 + n:]
    err = corrupt(tiny_model, mutate)
    assert "data section holds only" in err


def test_oversized_header(tiny_model):
    def mutate(d):
        d[:8] = (2**40).to_bytes(8, "little")
        return d
    err = corrupt(tiny_model, mutate)
    assert "limit" in err


def test_missing_config(tiny_model):
    (tiny_model / "config.json").unlink()
    r = run("detect", "--model", tiny_model, check=False)
    assert r.returncode != 0 and "no config.json" in r.stderr


def test_missing_shard(tiny_model):
    index = {"metadata": {}, "weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}
    (tiny_model / "model.safetensors.index.json").write_text(json.dumps(index))
    r = run("detect", "--model", tiny_model, check=False)
    assert r.returncode != 0 and "model-00002-of-00002.safetensors" in r.stderr


def test_hub_id_through_fake_cache(tiny_model, tmp_path):
    cache = tmp_path / "hf-home"
    repo = cache / "hub" / "models--acme--tiny-llama"
    snap = repo / "snapshots" / "4f1b0c2d9e"
    snap.parent.mkdir(parents=True)
    shutil.copytree(tiny_model, snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("4f1b0c2d9e")
    env = {"HF_HOME": str(cache), "HF_HUB_CACHE": ""}
    report = detect_json("acme/tiny-llama", env=env)
    assert report["path"] == str(snap)
    assert report["architecture"]["model_type"] == "llama"
    r = run("detect", "--model", "acme/absent", env=env, check=False)
    assert r.returncode != 0
    assert "models--acme--absent" in r.stderr and "hf download acme/absent" in r.stderr
