#!/usr/bin/env bash
# Memory checks of the C engine without Python in the way: tests/c/test_engine.c under valgrind
# memcheck (leaks included) and under AddressSanitizer + UBSan with LeakSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
.ci/build_c_tests.sh "$bin/test_engine"
valgrind --quiet --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite,indirect "$bin/test_engine"
.ci/build_c_tests.sh "$bin/test_engine_asan" -fsanitize=address,undefined -fno-sanitize-recover=undefined
"$bin/test_engine_asan"
