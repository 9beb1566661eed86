#!/usr/bin/env python3
"""The quality table of docs/quality.md: Q4_K_M and Q3_K_M with and without an importance
matrix, ours and llama.cpp's, measured by our `eval` and by llama.cpp's own
`llama-perplexity --kl-divergence`.

For each model: an F16 GGUF (ours, exact conversion) is the reference. Imatrices from
data/corpora/wiki_calib.txt: ours (`imatrix`) and llama-imatrix's, same ctx and chunks.
Files: ours with our rules (architecture-aware), plain and with our imatrix; llama.cpp's
(llama-quantize from the F16), plain and with llama-imatrix's imatrix. Each file is
evaluated on data/corpora/wiki_eval.txt against the F16 GGUF.

    PY=$(bash scripts/setup_python.sh | tail -n1)
    TOOLS=$(bash scripts/setup_llama_tools.sh "$PY" | tail -n1)
    cargo build --release -p llama-pajamas
    $PY scripts/quality_table.py --model models/demo --tools $TOOLS --work /tmp/qt-demo
"""
import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CALIB = REPO / "data" / "corpora" / "wiki_calib.txt"
EVAL = REPO / "data" / "corpora" / "wiki_eval.txt"


def sh(*args, **kw):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{args[0]} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout + p.stderr


def llama_kld(tools, model, base, ctx, chunks):
    # llama.cpp's threaded logger now and then loses the tail of its output at exit.
    for _ in range(4):
        out = sh(tools / "llama-perplexity", "-m", model, "--kl-divergence-base", base,
                 "--kl-divergence", "-c", ctx, "--chunks", chunks, "-t", 2, "-fa", "off")
        if "Same top p:" in out:
            break
    def grab(label):
        m = re.search(label + r"\s*:?\s*([-0-9.e+]+)", out)
        return float(m.group(1)) if m else None
    return {"ppl": grab(r"Mean PPL\(Q\)"), "kld": grab(r"Mean\s+KLD"),
            "top1": grab(r"Same top p:") }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--tools", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--calib-chunks", type=int, default=64)
    ap.add_argument("--eval-chunks", type=int, default=40)
    ap.add_argument("--bin", type=Path, default=REPO / "target" / "release" / "llama-pajamas-quant")
    ap.add_argument("--reuse", action="store_true",
                    help="keep imatrices and quantized files already in --work (re-evaluate only)")
    a = ap.parse_args()
    w, name, B = a.work, a.model.name, a.bin
    w.mkdir(parents=True, exist_ok=True)
    types = ["Q4_K_M", "Q3_K_M"]
    f16 = w / "f16" / "gguf" / "F16" / f"{name}-F16.gguf"
    done = lambda p: a.reuse and Path(p).exists()  # noqa: E731
    if not done(f16):
        sh(B, "quantize", "llm", "--model", a.model, "--gguf-precision", "F16", "--output", w / "f16", "--force")
    ours_im = w / "ours.imatrix.gguf"
    if not done(ours_im):
        sh(B, "imatrix", "--model", f16, "--calibration", CALIB, "--output", ours_im, "--ctx", a.ctx,
           "--chunks", a.calib_chunks, "--force")
    theirs_im = w / "theirs.imatrix.gguf"
    if not done(theirs_im):
        sh(a.tools / "llama-imatrix", "-m", f16, "-f", CALIB, "-o", theirs_im, "-c", a.ctx,
           "--chunks", a.calib_chunks, "-t", 2)
    files = {}
    if not done(w / "ours-plain" / "manifest.json"):
        sh(B, "quantize", "llm", "--model", a.model, "--gguf-precision", ",".join(types), "--output",
           w / "ours-plain", "--force")
    if not done(w / "ours-imatrix" / "manifest.json"):
        sh(B, "quantize", "llm", "--model", a.model, "--gguf-precision", ",".join(types), "--output",
           w / "ours-imatrix", "--imatrix", ours_im, "--force")
    ftype_ids = {"Q4_K_M": "Q4_K_M", "Q3_K_M": "Q3_K_M"}
    for t in types:
        files[("ours", t, False)] = w / "ours-plain" / "gguf" / t / f"{name}-{t}.gguf"
        files[("ours", t, True)] = w / "ours-imatrix" / "gguf" / t / f"{name}-{t}.gguf"
        tp = w / f"llama-{t}.gguf"
        if not done(tp):
            sh(a.tools / "llama-quantize", f16, tp, ftype_ids[t])
        files[("llama.cpp", t, False)] = tp
        ti = w / f"llama-{t}-imatrix.gguf"
        if not done(ti):
            sh(a.tools / "llama-quantize", "--imatrix", theirs_im, f16, ti, ftype_ids[t])
        files[("llama.cpp", t, True)] = ti
    base = w / "base.kld"
    sh(a.tools / "llama-perplexity", "-m", f16, "-f", EVAL, "--kl-divergence-base", base, "-c", a.ctx,
       "--chunks", a.eval_chunks, "-t", 2, "-fa", "off")
    n_params = json.loads(subprocess.run([str(B), "detect", "--model", str(a.model), "--json"],
                                         capture_output=True, text=True, check=True).stdout)
    rows = []
    for (who, t, im), path in files.items():
        ours = json.loads(subprocess.run([str(B), "eval", "--model", str(path), "--reference", str(f16),
                                          "--text", str(EVAL), "--ctx", str(a.ctx), "--chunks",
                                          str(a.eval_chunks), "--json"],
                                         capture_output=True, text=True, check=True).stdout)
        lc = llama_kld(a.tools, path, base, a.ctx, a.eval_chunks)
        size = path.stat().st_size
        rows.append({
            "model": name, "quantizer": who, "type": t, "imatrix": im, "bytes": size,
            "bpw": round(size * 8 / n_params["architecture"]["params"]["total"], 3),
            "ppl": ours["perplexity"]["ppl"], "kld": ours["kl_divergence"]["mean"],
            "kld_p99": ours["kl_divergence"]["p99"], "top1": ours["kl_divergence"]["top1_agreement"],
            "ref_ppl": ours["reference_perplexity"]["ppl"],
            "llama_ppl": lc["ppl"], "llama_kld": lc["kld"], "llama_top1": lc["top1"],
            "scored": ours["scored_tokens"],
        })
        print(json.dumps(rows[-1]), flush=True)
    (w / "table.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{name}: F16 reference PPL {rows[0]['ref_ppl']:.4f}, {rows[0]['scored']} scored tokens "
          f"({a.eval_chunks} chunks of {a.ctx}), imatrix from {a.calib_chunks} chunks of wiki_calib\n")
    print("| quantizer | type | imatrix | size (bytes) | bpw | PPL (ours) | KLD (ours) | top-1 (ours) | PPL (llama-perplexity) | KLD (llama-perplexity) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['quantizer']} | {r['type']} | {'yes' if r['imatrix'] else 'no'} | {r['bytes']:,} | "
              f"{r['bpw']} | {r['ppl']:.4f} | {r['kld']:.5f} | {r['top1']*100:.2f}% | "
              f"{r['llama_ppl'] if r['llama_ppl'] is None else format(r['llama_ppl'], '.4f')} | "
              f"{r['llama_kld'] if r['llama_kld'] is None else format(r['llama_kld'], '.5f')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
