#!/usr/bin/env bash
# Create (or reuse) the Python venv that holds the test-oracle packages
# listed in scripts/requirements-oracle.txt.
#
#   bash scripts/setup_python.sh          # prints the venv's python as last line
#   PY=$(bash scripts/setup_python.sh | tail -n1)
#
# Location: ${PAJAMAS_CACHE:-$HOME/.cache/llama-pajamas}/venv (outside the repo).
# Base interpreter: ${PYTHON:-python3}, which must be Python >= 3.11.
#
# Safe to run repeatedly and concurrently: a lock serialises runs, and the
# install is skipped when the packages import and the stamp file in the venv
# matches the requirement list (and the venv's interpreter version) exactly.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$here/requirements-oracle.txt"
cache="${PAJAMAS_CACHE:-$HOME/.cache/llama-pajamas}"
venv="$cache/venv"
py="$venv/bin/python"
stamp="$venv/.oracle-requirements.stamp"
base_python="${PYTHON:-python3}"
imports="import gguf, safetensors, tokenizers, pytest, numpy, mlx.core"

die() { echo "setup_python.sh: $*" >&2; exit 1; }

[ -f "$req" ] || die "missing $req"
command -v "$base_python" >/dev/null 2>&1 || die "no '$base_python' on PATH (set PYTHON=...)"
"$base_python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null \
    || die "'$base_python' is not a working Python >= 3.11 (numpy 2.4 needs it); set PYTHON=..."

mkdir -p "$cache"

# Serialise concurrent runs (e.g. a developer shell and a test run).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache/.venv.lock"
    flock 9
fi

# What the stamp must say: the venv's interpreter version plus the requirement list.
want_stamp() {
    printf 'python: %s\n' "$("$py" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null)"
    cat "$req"
}

if [ -f "$stamp" ] && [ -x "$py" ] \
   && [ "$(cat "$stamp")" = "$(want_stamp)" ] \
   && "$py" -c "$imports" >/dev/null 2>&1; then
    echo "$py"
    exit 0
fi

# A venv whose interpreter no longer runs (base Python moved or upgraded)
# cannot be repaired in place: start over.
if [ -e "$venv" ] && ! "$py" -c 'pass' >/dev/null 2>&1; then
    case "$venv" in
        */venv) rm -rf -- "$venv" ;;
        *) die "refusing to remove unexpected path $venv" ;;
    esac
fi

log="$cache/setup_python.log"
: >"$log"
if [ ! -x "$py" ]; then
    "$base_python" -m venv "$venv" >>"$log" 2>&1 || { cat "$log" >&2; die "python -m venv failed"; }
fi

rm -f "$stamp"
if ! "$py" -m pip install --quiet --disable-pip-version-check --no-input \
        -r "$req" >>"$log" 2>&1; then
    cat "$log" >&2
    die "pip install failed (log: $log)"
fi
"$py" -c "$imports" >>"$log" 2>&1 || { cat "$log" >&2; die "installed packages do not import"; }

want_stamp >"$stamp"
echo "$py"
