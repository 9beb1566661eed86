#!/usr/bin/env bash
# The project's test command (README, CI): Rust unit and integration tests, then the
# oracle tests that check our binary against the reference Python packages.
#
#   bash scripts/test.sh            # everything
#   PYTEST_ARGS="-k sources" bash scripts/test.sh
#
# Python packages go to a cached venv (scripts/setup_python.sh); the real-model assets
# to ${PAJAMAS_CACHE:-~/.cache/llama-pajamas} (scripts/fetch_smollm2.py). Nothing is
# written inside the repository except target/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== cargo test"
cargo test --workspace --quiet

echo "== oracle environment"
PY=$(bash scripts/setup_python.sh | tail -n1)
bash scripts/setup_llama_cpp.sh "$PY"
LLAMA_TOOLS=$(bash scripts/setup_llama_tools.sh "$PY" | tail -n1)
SMOLLM2=$("$PY" scripts/fetch_smollm2.py | tail -n1)
# The binary and the dev tools under examples/ that the oracle tests drive (release:
# the oracle tests quantize whole models).
cargo build --quiet --release --workspace --bins --examples

echo "== oracle tests (pytest)"
LLAMA_PAJAMAS_BIN="$PWD/target/release/llama-pajamas-quant" PAJAMAS_EXAMPLES="$PWD/target/release/examples" \
    SMOLLM2_DIR="$SMOLLM2" LLAMA_TOOLS_DIR="$LLAMA_TOOLS" \
    "$PY" -m pytest tests/oracle -q -p no:cacheprovider --durations=25 ${PYTEST_ARGS:-}
