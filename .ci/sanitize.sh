#!/usr/bin/env bash
# Build the engine with AddressSanitizer + UndefinedBehaviorSanitizer into a scratch directory
# and run a fast subset of the tests that reaches every C entry point against that build.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
SENSIFORMER_SANITIZE=1 python setup.py -q build_ext -b "$out" -t "$out/tmp" >/dev/null
cp python/sensiformer/*.py "$out/sensiformer/"
for sub in python/sensiformer/*/; do [ -d "$sub" ] && cp -r "$sub" "$out/sensiformer/"; done
python - "$out" <<'PY'
import sys, pathlib
# the sanitized build must be the one imported
assert any(p.name.startswith("_engine") for p in (pathlib.Path(sys.argv[1]) / "sensiformer").iterdir())
PY
LD_PRELOAD=$(gcc -print-file-name=libasan.so) \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
PYTHONPATH="$out" SENSIFORMER_EXPECT_PATH="$out" \
    python -m pytest -q -p no:cacheprovider -m "not slow" "$@"
