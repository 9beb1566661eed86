#!/usr/bin/env bash
# Build (once) and install llama-cpp-python into the oracle venv. It is our reference
# consumer of GGUF files, and its bundled libggml-base.so gives ggml's own quantizers
# through ctypes. PyPI only has the sdist for Linux: the build takes ~9 minutes on 2
# cores, so the wheel is cached in ${PAJAMAS_CACHE:-~/.cache/llama-pajamas}/wheels.
#
#   PY=$(bash scripts/setup_python.sh | tail -n1); bash scripts/setup_llama_cpp.sh "$PY"
set -euo pipefail
PY=${1:?usage: setup_llama_cpp.sh VENV_PYTHON}
VERSION=0.3.36
cache="${PAJAMAS_CACHE:-$HOME/.cache/llama-pajamas}"
wheels="$cache/wheels"
mkdir -p "$wheels"

if "$PY" -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.__version__ == '$VERSION' else 1)" 2>/dev/null; then
    exit 0
fi
if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache/.llama-cpp.lock"
    flock 9
fi
wheel=$(ls "$wheels"/llama_cpp_python-$VERSION-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
    echo "building llama-cpp-python $VERSION from the PyPI sdist (about 9 minutes on 2 cores)..." >&2
    log="$cache/llama-cpp-build.log"
    if ! CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$PY" -m pip wheel --no-deps --no-binary llama-cpp-python \
            "llama-cpp-python==$VERSION" -w "$wheels" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "setup_llama_cpp.sh: build failed (log: $log)" >&2
        exit 1
    fi
    wheel=$(ls "$wheels"/llama_cpp_python-$VERSION-*.whl | head -n1)
fi
# Its runtime dependencies (typing-extensions, numpy, diskcache, jinja2) come from PyPI.
"$PY" -m pip install --quiet --disable-pip-version-check "$wheel" >/dev/null
"$PY" -c "import llama_cpp" 
