#!/usr/bin/env python3
"""Eval throughput: our `eval` against llama-cpp-python on the same F16 GGUF, the same
tokens, context and thread count. Runs are interleaved (ours, theirs, ours, theirs, ...)
so that load on a shared machine hits both alike; reports tokens/s and the ratio.

    PY=$(bash scripts/setup_python.sh | tail -n1)
    cargo build --release -p llama-pajamas
    $PY scripts/bench_eval.py --model ~/.cache/llama-pajamas/models/smollm2-135m-instruct \
        [--ctx 512] [--chunks 4] [--threads 2] [--reps 2]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import llama_cpp

REPO = Path(__file__).resolve().parents[1]
TEXT = REPO / "data" / "corpora" / "wiki_eval_small.txt"


def decode_scored_half(llm, batch, chunk):
    """One chunk the way llama-perplexity submits it: one batch, logits requested only for
    the scored second half (llama-cpp-python's high-level eval() computes every row)."""
    n, first = len(chunk), len(chunk) // 2
    for i, t in enumerate(chunk):
        batch.token[i] = t
        batch.pos[i] = i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = 1 if i >= first else 0
    batch.n_tokens = n
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
    if llama_cpp.llama_decode(llm.ctx, batch) != 0:
        raise RuntimeError("llama_decode failed")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="HF folder")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--bin", default=str(REPO / "target" / "release" / "llama-pajamas-quant"))
    a = ap.parse_args()
    model = Path(a.model)
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([a.bin, "quantize", "llm", "--model", str(model), "--gguf-precision", "F16",
                        "--output", d], check=True, capture_output=True)
        gguf = Path(d) / "gguf" / "F16" / f"{model.name}-F16.gguf"
        llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=a.ctx, n_batch=a.ctx, n_ubatch=a.ctx,
                              n_threads=a.threads, n_threads_batch=a.threads, logits_all=True,
                              verbose=False, flash_attn=False)
        ids = llm.tokenize(TEXT.read_bytes(), add_bos=llm._model.add_bos_token(), special=False)
        n = min(a.chunks, len(ids) // a.ctx)
        tokens = n * a.ctx
        batch = llama_cpp.llama_batch_init(a.ctx, 0, 1)
        ours, theirs = [], []
        for _ in range(a.reps):
            t = time.perf_counter()
            out = subprocess.run([a.bin, "eval", "--model", str(gguf), "--text", str(TEXT), "--ctx",
                                  str(a.ctx), "--chunks", str(n), "--threads", str(a.threads), "--json"],
                                 check=True, capture_output=True, text=True)
            wall = time.perf_counter() - t
            r = json.loads(out.stdout)
            # Evaluation time only (the tool also loads the model and tokenizes).
            ours.append((tokens / r["seconds"], tokens / wall))
            t = time.perf_counter()
            for c in range(n):
                decode_scored_half(llm, batch, ids[c * a.ctx:(c + 1) * a.ctx])
            theirs.append(tokens / (time.perf_counter() - t))
    best_ours = max(o[0] for o in ours)
    best_ours_wall = max(o[1] for o in ours)
    best_theirs = max(theirs)
    result = {
        "model": model.name, "ctx": a.ctx, "chunks": n, "threads": a.threads,
        "ours_tokens_per_s": round(best_ours, 1),
        "ours_tokens_per_s_incl_load": round(best_ours_wall, 1),
        "llama_cpp_tokens_per_s": round(best_theirs, 1),
        "ratio_ours_over_llama_cpp": round(best_ours / best_theirs, 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
