#!/usr/bin/env bash
# Build (once) llama.cpp's llama-quantize, llama-imatrix and llama-perplexity from the
# llama.cpp vendored in the llama-cpp-python 0.3.36 sdist, and print the folder holding them
# on the last line.
#
#   PY=$(bash scripts/setup_python.sh | tail -n1); bash scripts/setup_llama_cpp.sh "$PY"
#   TOOLS=$(bash scripts/setup_llama_tools.sh "$PY" | tail -n1)   # $TOOLS/llama-imatrix ...
#
# Fast path (~15 s on 2 cores instead of a ~10 minute cmake build): the wheel that
# scripts/setup_llama_cpp.sh installs already ships every library the tools link to
# (libllama, libllama-common - which holds arg parsing, logging, build info and the imatrix
# loader - and libggml*) plus their headers. So only the tools' own .cpp files are compiled,
# with g++, against the sdist's headers (same sources as the wheel, so the C++ ABI of
# common_params and friends matches), and linked against copies of those libraries placed
# next to the binaries (rpath $ORIGIN/lib: the tools keep working if the venv is rebuilt).
#
# Result: ${PAJAMAS_CACHE:-~/.cache/llama-pajamas}/llama-tools-0.3.36/{llama-quantize,
# llama-imatrix,llama-perplexity,lib/}. Reused when present; a lock serialises concurrent runs.
set -euo pipefail
PY=${1:-}
VERSION=0.3.36
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${PAJAMAS_CACHE:-$HOME/.cache/llama-pajamas}"
out="$cache/llama-tools-$VERSION"
tools=(llama-quantize llama-imatrix llama-perplexity)

die() { echo "setup_llama_tools.sh: $*" >&2; exit 1; }

# Each tool runs (prints its usage) when its libraries resolve.
tools_work() {
    local t
    for t in "${tools[@]}"; do
        [ -x "$out/$t" ] || return 1
        "$out/$t" --help >/dev/null 2>&1 || [ $? -le 1 ] || return 1
        ldd "$out/$t" 2>/dev/null | grep -q "not found" && return 1
    done
    [ -f "$out/.complete" ]
}

if tools_work; then
    echo "$out"
    exit 0
fi

mkdir -p "$cache"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache/.llama-tools.lock"
    flock 9
fi
if tools_work; then
    echo "$out"
    exit 0
fi

# The installed wheel: its libraries live in site-packages/lib (headers come from the sdist).
if [ -z "$PY" ]; then
    PY=$(bash "$here/setup_python.sh" | tail -n1)
    bash "$here/setup_llama_cpp.sh" "$PY"
fi
site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") || die "cannot run $PY"
wheel_lib="$site/lib"
for l in libllama.so.0 libllama-common.so.0 libggml.so.0 libggml-base.so.0 libggml-cpu.so.0; do
    [ -e "$wheel_lib/$l" ] || die "$wheel_lib/$l is missing: install the llama-cpp-python $VERSION wheel first (bash scripts/setup_llama_cpp.sh $PY)"
done
"$PY" -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.__version__ == '$VERSION' else 1)" \
    || die "the venv's llama-cpp-python is not $VERSION; run bash scripts/setup_llama_cpp.sh $PY"

# The sdist: reuse an unpacked copy (scripts/bench_e2e.sh leaves one), else download it.
src=""
for cand in "$cache/bench/llama-cpp-python-$VERSION" "$out/src/llama-cpp-python-$VERSION"; do
    if [ -f "$cand/vendor/llama.cpp/tools/imatrix/imatrix.cpp" ]; then src="$cand"; break; fi
done
if [ -z "$src" ]; then
    mkdir -p "$out/src"
    tarball=""
    for cand in "$cache/bench/llama_cpp_python-$VERSION.tar.gz" "$out/src/llama_cpp_python-$VERSION.tar.gz"; do
        if [ -f "$cand" ]; then tarball="$cand"; break; fi
    done
    if [ -z "$tarball" ]; then
        echo "downloading the llama-cpp-python $VERSION sdist from PyPI..." >&2
        "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
            "llama-cpp-python==$VERSION" -d "$out/src" || die "pip download of the sdist failed"
        tarball=$(ls "$out/src"/llama[-_]cpp[-_]python-$VERSION.tar.gz | head -n1)
    fi
    tar -xzf "$tarball" -C "$out/src" || die "cannot unpack $tarball"
    [ -d "$out/src/llama-cpp-python-$VERSION" ] || mv "$out/src/llama_cpp_python-$VERSION" "$out/src/llama-cpp-python-$VERSION"
    src="$out/src/llama-cpp-python-$VERSION"
fi
lcpp="$src/vendor/llama.cpp"
[ -f "$lcpp/common/build-info.h" ] || die "$lcpp/common/build-info.h missing (unexpected sdist layout)"

# Build into a fresh folder and move it into place at the end: a half-built cache never
# looks complete.
build="$out.partial"
rm -rf -- "$build"
mkdir -p "$build/lib" "$build/obj"
# Only the soname files (what the loader looks for); the wheel holds plain copies, not links.
libs=(libllama-common.so.0 libllama.so.0 libggml.so.0 libggml-base.so.0 libggml-cpu.so.0)
for l in "${libs[@]}"; do
    cp -L "$wheel_lib/$l" "$build/lib/$l"
done

log="$build/build.log"
: >"$log"
CXX=${CXX:-g++}
command -v "$CXX" >/dev/null || die "no C++ compiler ($CXX); apt-get install g++"
cxxflags=(-std=c++17 -O2 -DNDEBUG -DLLAMA_SHARED -DGGML_SHARED -pthread
          -I"$lcpp/common" -I"$lcpp/include" -I"$lcpp/ggml/include" -I"$lcpp/vendor"
          -I"$lcpp/tools/quantize" -I"$lcpp/tools/perplexity")
# DT_RPATH (not RUNPATH) also covers the libraries' own dependencies (libllama-common has
# no rpath of its own).
# Libraries are named by path (there is no unversioned libX.so to find with -l).
ldflags=(-Wl,--disable-new-dtags -Wl,-rpath,'$ORIGIN/lib' -pthread)
for l in libllama-common.so.0 libllama.so.0 libggml.so.0 libggml-base.so.0; do
    ldflags+=("$build/lib/$l")
done

compile() { # object source
    "$CXX" "${cxxflags[@]}" -c "$2" -o "$1" >>"$log" 2>&1
}
start=$(date +%s)
echo "compiling llama.cpp tools against the llama-cpp-python $VERSION wheel (about 15 s on 2 cores)..." >&2
pids=()
objs=(quantize/quantize quantize/main imatrix/imatrix perplexity/perplexity perplexity/main)
for o in "${objs[@]}"; do
    compile "$build/obj/${o//\//_}.o" "$lcpp/tools/$o.cpp" &
    pids+=($!)
    # at most $(nproc) compilers at a time
    while [ "$(jobs -rp | wc -l)" -ge "$(nproc)" ]; do sleep 0.2; done
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
if [ "$failed" -ne 0 ]; then
    tail -n 40 "$log" >&2
    die "compilation failed (log: $log)"
fi
link() { # tool objects...
    local t=$1; shift
    "$CXX" -o "$build/$t" "$@" "${ldflags[@]}" >>"$log" 2>&1 || { tail -n 40 "$log" >&2; die "linking $t failed (log: $log)"; }
}
link llama-quantize "$build/obj/quantize_main.o" "$build/obj/quantize_quantize.o"
link llama-imatrix "$build/obj/imatrix_imatrix.o"
link llama-perplexity "$build/obj/perplexity_main.o" "$build/obj/perplexity_perplexity.o"
rm -rf -- "$build/obj"
echo "built in $(( $(date +%s) - start )) s from $lcpp" >"$build/BUILD-INFO"

rm -rf -- "$out.old"
if [ -e "$out" ]; then mv -- "$out" "$out.old"; fi
mv -- "$build" "$out"
# Keep a downloaded sdist (the tarball, 76 MB; not the 217 MB unpacked tree) for a rebuild.
if [ -d "$out.old/src" ] && [ ! -e "$out/src" ]; then mv -- "$out.old/src" "$out/src"; fi
rm -rf -- "$out.old" "$out/src/llama-cpp-python-$VERSION"
touch "$out/.complete"
tools_work || die "the tools in $out do not run (ldd: $(ldd "$out/llama-imatrix" | grep 'not found' || true))"
echo "$(cat "$out/BUILD-INFO")" >&2
echo "$out"
