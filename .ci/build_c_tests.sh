#!/usr/bin/env bash
# Build tests/c/test_engine.c against the engine sources alone (no Python), with extra flags
# (e.g. -fsanitize=...). Usage: build_c_tests.sh OUTPUT [CFLAGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1; shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
flags=(-std=gnu11 -O1 -g -fno-omit-frame-pointer -fno-math-errno -fno-trapping-math -ffp-contract=fast -fopenmp -DSF_HAVE_OPENMP=1 -DSF_BUILT_PATHS=0x7 -Icsrc "$@")
objs=()
for src in csrc/*.c; do
    case $(basename "$src") in module.c|py_*.c) continue;; esac
    gcc "${flags[@]}" -c "$src" -o "$tmp/$(basename "$src" .c).o"; objs+=("$tmp/$(basename "$src" .c).o")
done
# every CPU path (baseline, x86-64-v3, x86-64-v4) in both precisions, as setup.py builds them
for path in 0 1 2; do
    for precision in 0 1; do
        for src in csrc/numeric/*.c; do
            o="$tmp/$(basename "$src" .c)_${precision}_$path.o"
            gcc "${flags[@]}" -DSF_DOUBLE=$precision -DSF_CPU_PATH=$path -c "$src" -o "$o"; objs+=("$o")
        done
    done
done
gcc "${flags[@]}" tests/c/test_engine.c "${objs[@]}" -o "$out" -lm
