#!/usr/bin/env python3
"""The i-quant quality table of docs/iquants.md: our IQ4_XS, IQ3_XXS and IQ2_XS files
against llama-quantize's, made with the same imatrix, scored by llama-perplexity's KL
divergence against the F16 GGUF.

For each model: our F16 GGUF (exact conversion) is the reference; one imatrix (ours, from
data/corpora/wiki_calib.txt) is given to both quantizers; ours is made with
`--rules llama.cpp` (the same per-tensor types, so the same tensor bytes) and with our
architecture-aware rules (for information: a different size). Every file is scored on
data/corpora/wiki_eval.txt by `llama-perplexity --kl-divergence`.

    PY=$(bash scripts/setup_python.sh | tail -n1)
    TOOLS=$(bash scripts/setup_llama_tools.sh "$PY" | tail -n1)
    cargo build --release -p llama-pajamas
    $PY scripts/iq_table.py --model models/demo --tools $TOOLS --work /tmp/iq-demo
"""
import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import gguf

REPO = Path(__file__).resolve().parents[1]
CALIB = REPO / "data" / "corpora" / "wiki_calib.txt"
EVAL = REPO / "data" / "corpora" / "wiki_eval.txt"
TYPES = ["IQ4_XS", "IQ3_XXS", "IQ2_XS"]


def sh(*args):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{args[0]} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout + p.stderr


def tensor_bytes(path):
    return sum(int(t.n_bytes) for t in gguf.GGUFReader(str(path)).tensors)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--tools", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--calib-chunks", type=int, default=64)
    ap.add_argument("--eval-chunks", type=int, default=40)
    ap.add_argument("--bin", type=Path, default=REPO / "target" / "release" / "llama-pajamas-quant")
    ap.add_argument("--reuse", action="store_true", help="keep the F16, imatrix and files already in --work")
    a = ap.parse_args()
    w, name, B = a.work, a.model.name, a.bin
    w.mkdir(parents=True, exist_ok=True)
    done = lambda p: a.reuse and Path(p).exists()  # noqa: E731
    f16 = w / "f16" / "gguf" / "F16" / f"{name}-F16.gguf"
    if not done(f16):
        sh(B, "quantize", "llm", "--model", a.model, "--gguf-precision", "F16", "--output", w / "f16", "--force")
    im = w / "ours.imatrix.gguf"
    if not done(im):
        sh(B, "imatrix", "--model", f16, "--calibration", CALIB, "--output", im, "--ctx", a.ctx,
           "--chunks", a.calib_chunks, "--force")
    files = {}
    for rules in ["llama.cpp", "architecture-aware"]:
        out = w / f"ours-{rules}"
        if not done(out / "manifest.json"):
            sh(B, "quantize", "llm", "--model", a.model, "--gguf-precision", ",".join(TYPES), "--rules", rules,
               "--imatrix", im, "--output", out, "--force")
        for t in TYPES:
            files[(f"ours ({rules} rules)", t)] = out / "gguf" / t / f"{name}-{t}.gguf"
    for t in TYPES:
        theirs = w / f"llama-quantize-{t}.gguf"
        if not done(theirs):
            sh(a.tools / "llama-quantize", "--imatrix", im, f16, theirs, t)
        files[("llama-quantize", t)] = theirs
    base = w / "base.kld"
    sh(a.tools / "llama-perplexity", "-m", f16, "-f", EVAL, "--kl-divergence-base", base, "-c", a.ctx,
       "--chunks", a.eval_chunks, "-t", 2, "-fa", "off")
    rows = []
    for (who, t), path in sorted(files.items(), key=lambda kv: (TYPES.index(kv[0][1]), kv[0][0])):
        # llama.cpp's threaded logger now and then loses the tail of its output at exit.
        for _ in range(4):
            out = sh(a.tools / "llama-perplexity", "-m", path, "--kl-divergence-base", base, "--kl-divergence",
                     "-c", a.ctx, "--chunks", a.eval_chunks, "-t", 2, "-fa", "off")
            if "Same top p:" in out:
                break
        grab = lambda label: float(re.search(label + r"\s*:?\s*([-0-9.e+]+)", out).group(1))  # noqa: E731
        rows.append({"model": name, "quantizer": who, "type": t, "file_bytes": path.stat().st_size,
                     "tensor_bytes": tensor_bytes(path), "ppl": grab(r"Mean PPL\(Q\)"),
                     "kld": grab(r"Mean\s+KLD"), "top1": grab(r"Same top p:")})
        print(json.dumps(rows[-1]), flush=True)
    (w / "iq_table.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{name}: imatrix from {a.calib_chunks} chunks of wiki_calib; {a.eval_chunks} chunks of "
          f"{a.ctx} of wiki_eval\n")
    print("| type | quantizer | tensor bytes | PPL | KLD | same top token | KLD vs llama-quantize |")
    print("|---|---|---:|---:|---:|---:|---:|")
    ref = {r["type"]: r for r in rows if r["quantizer"] == "llama-quantize"}
    for r in rows:
        print(f"| {r['type']} | {r['quantizer']} | {r['tensor_bytes']:,} | {r['ppl']:.4f} | {r['kld']:.5f} | "
              f"{r['top1']:.2f}% | {r['kld'] / ref[r['type']]['kld'] - 1:+.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
