"""The CPU paths against each other: every path this machine can run computes the same-seed
fingerprint (training of both kinds in both dtypes, forward outputs, gradients) in its own process
(``SENSIFORMER_CPU_PATH`` is read once per process). x86-64-v3 and x86-64-v4 promise the same bits;
the baseline (the intrinsics' portable twin, other operation order in the tiles) agrees to rounding."""

import os
import subprocess
import sys

import numpy as np
import pytest

from ._support import cpu_paths

pytestmark = pytest.mark.cross_path
BITWISE = {"x86-64-v3", "x86-64-v4"}
# relative to each array's max magnitude: float32 rounding (6e-8) grown over a few training steps
ROUNDING = {"float32": 1e-4, "float64": 1e-10}


def fingerprint_of(path, tmp_path):
    out = tmp_path / f"{path}.npz"
    env = dict(os.environ, SENSIFORMER_CPU_PATH=path)
    done = subprocess.run([sys.executable, "-m", "sensiformer.tests._fingerprint", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"the {path} child failed:\n{done.stderr[-2000:]}"
    with np.load(out) as data:
        result = {k: data[k] for k in data.files}
    assert str(result.pop("__path__")) == path, f"SENSIFORMER_CPU_PATH={path} ran another path"
    return result


def test_cpu_paths_agree(errors, tmp_path):
    paths = cpu_paths()
    if len(paths) < 2:
        pytest.skip(f"this machine runs one CPU path only ({paths[0]}): nothing to compare")
    results = {p: fingerprint_of(p, tmp_path) for p in paths}
    reference = paths[0]
    for path in paths[1:]:
        for name, ref in results[reference].items():
            ours = results[path][name]
            what = f"{path} vs {reference}: {name}"
            if {path, reference} <= BITWISE:
                errors.equal(what, ours, ref)
            else:
                limit = ROUNDING[name.rsplit(" ", 1)[1]]
                errors.check(what + " (max abs diff / max abs)", np.max(np.abs(ours - ref)) / np.max(np.abs(ref)),
                             limit)
