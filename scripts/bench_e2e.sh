#!/usr/bin/env bash
# End-to-end benchmark: HF checkpoint -> Q4_K_M GGUF.
#   ours:      llama-pajamas-quant quantize llm --gguf-precision Q4_K_M   (one process)
#   llama.cpp: convert_hf_to_gguf.py --outtype f16, then llama-quantize Q4_K_M
#              (both from the llama.cpp vendored in the llama-cpp-python 0.3.36 sdist)
# Reports wall time and peak RSS of each, and ours/theirs ratios, measured in the same run.
#
#   bash scripts/bench_e2e.sh [MODEL_DIR]        (default: the cached SmolLM2-135M)
#
# llama.cpp's converter needs torch + transformers: set BENCH_PYTHON to a Python that has
# them (the demo-model training venv does), else a venv is created (~5.5 GB from PyPI).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cache="${PAJAMAS_CACHE:-$HOME/.cache/llama-pajamas}"
MODEL="${1:-$cache/models/smollm2-135m-instruct}"
VERSION=0.3.36
work="$cache/bench"
mkdir -p "$work"

PY="${BENCH_PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x "$cache/train-venv/bin/python" ]; then PY="$cache/train-venv/bin/python"; else
        python3 -m venv "$work/venv"; PY="$work/venv/bin/python"
        "$PY" -m pip install -q torch transformers
    fi
fi
"$PY" -m pip install -q sentencepiece numpy safetensors >/dev/null
# cmake: Debian's (apt-get install cmake); PyPI's may build from source for minutes.
command -v cmake >/dev/null || { echo "bench_e2e.sh: needs cmake (apt-get install cmake)" >&2; exit 1; }

src="$work/llama-cpp-python-$VERSION"
if [ ! -d "$src" ]; then
    "$PY" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$work"
    tar -xzf "$work/llama_cpp_python-$VERSION.tar.gz" -C "$work" 2>/dev/null \
        || tar -xzf "$work/llama-cpp-python-$VERSION.tar.gz" -C "$work"
    [ -d "$src" ] || mv "$work/llama_cpp_python-$VERSION" "$src"
fi
lcpp="$src/vendor/llama.cpp"
quantize_bin="$lcpp/build/bin/llama-quantize"
if [ ! -x "$quantize_bin" ]; then
    cmake_bin=cmake
    "$cmake_bin" -S "$lcpp" -B "$lcpp/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
        -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
    "$cmake_bin" --build "$lcpp/build" -j"$(nproc)" --target llama-quantize >/dev/null
fi

cargo build --release -q --bin llama-pajamas-quant
ours_bin="$PWD/target/release/llama-pajamas-quant"
out="$work/run"; rm -rf "$out"; mkdir -p "$out"

# /usr/bin/time -f: elapsed seconds and max RSS (KiB)
measure() { /usr/bin/time -f "%e %M" -o "$out/time.txt" "$@" >/dev/null 2>"$out/stderr.txt" || { cat "$out/stderr.txt"; exit 1; }; cat "$out/time.txt"; }

read -r t_conv m_conv < <(measure "$PY" "$lcpp/convert_hf_to_gguf.py" "$MODEL" --outtype f16 --outfile "$out/f16.gguf")
read -r t_q m_q < <(measure "$quantize_bin" "$out/f16.gguf" "$out/theirs-Q4_K_M.gguf" Q4_K_M)
read -r t_ours m_ours < <(measure "$ours_bin" quantize llm --model "$MODEL" --gguf-precision Q4_K_M --output "$out/ours")

python3 - "$t_conv" "$m_conv" "$t_q" "$m_q" "$t_ours" "$m_ours" "$MODEL" <<'EOF'
import sys
t_conv, m_conv, t_q, m_q, t_ours, m_ours = map(float, sys.argv[1:7])
theirs_t = t_conv + t_q
theirs_m = max(m_conv, m_q)
print(f"model: {sys.argv[7]}")
print(f"llama.cpp: convert_hf_to_gguf.py {t_conv:.1f} s ({m_conv/1024:.0f} MiB) + llama-quantize {t_q:.1f} s ({m_q/1024:.0f} MiB)")
print(f"ours:      {t_ours:.1f} s, peak RSS {m_ours/1024:.0f} MiB")
print(f"time ratio ours/llama.cpp: {t_ours/theirs_t:.2f}  (speedup {theirs_t/t_ours:.2f}x)")
print(f"peak RSS ratio ours/llama.cpp: {m_ours/theirs_m:.2f}")
EOF
