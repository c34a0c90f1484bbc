#!/usr/bin/env bash
# Build the engine with AddressSanitizer + UndefinedBehaviorSanitizer into a scratch directory
# and run a fast subset of the tests that reaches every C entry point against that build.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# a pip build (isolated, so it has the setuptools pyproject needs) of this tree into $out
SENSIFORMER_SANITIZE=1 pip install -q --no-deps --no-compile --target "$out" . >/dev/null
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
