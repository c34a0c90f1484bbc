"""The CPU paths against each other: every path this machine can run computes the same-seed
fingerprint (``_support.fingerprint``: training of both kinds in both dtypes, outputs and gradients
at a fixed point) in its own process (``SENSIFORMER_CPU_PATH`` is read once per process).
x86-64-v3 and x86-64-v4 promise the same bits in everything, training included. The baseline (the
portable twin, another operation order in the tiles) agrees with the widest path to rounding in
outputs and gradients; its training is not compared, since Adam's first steps turn rounding-sized
gradient differences into lr-sized updates (lr * sign g)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from ._support import cpu_paths

pytestmark = pytest.mark.cross_path
VECTOR_PATHS = [p for p in cpu_paths() if p != "baseline"]
# max abs difference relative to the array's max magnitude (the bounds of the project's tests/test_cpu_paths.py)
ROUNDING = {"float32": 2e-5, "float64": 1e-12}


def fingerprint_of(path, workdir):
    out = workdir / f"{path}.npz"
    env = dict(os.environ, SENSIFORMER_CPU_PATH=path)
    done = subprocess.run([sys.executable, "-m", "sensiformer.tests._fingerprint", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"the {path} child failed:\n{done.stderr[-2000:]}"
    with np.load(out) as data:
        result = {k: data[k] for k in data.files}
    assert str(result.pop("__path__")) == path, f"SENSIFORMER_CPU_PATH={path} ran another path"
    return result


@pytest.fixture(scope="module")
def fingerprints(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fingerprints")
    return {path: fingerprint_of(path, workdir) for path in cpu_paths()}


def test_the_vector_paths_give_the_same_bits(errors, fingerprints):
    if len(VECTOR_PATHS) < 2:
        pytest.skip(f"this CPU runs {len(VECTOR_PATHS)} vector path(s): no bitwise promise to compare")
    reference, *others = VECTOR_PATHS
    for path in others:
        for name, ref in fingerprints[reference].items():
            errors.equal(f"{path} vs {reference}: {name}", fingerprints[path][name], ref)


def test_the_baseline_agrees_with_the_widest_path_to_rounding(errors, fingerprints):
    if not VECTOR_PATHS:
        pytest.skip("this CPU runs only the baseline path: nothing to compare it with")
    reference = VECTOR_PATHS[0]
    for name, ref in fingerprints[reference].items():
        if "training" in name:
            continue
        ours = fingerprints["baseline"][name]
        errors.check(f"baseline vs {reference}: {name} (max abs diff / max abs)",
                     np.max(np.abs(ours - ref)) / np.max(np.abs(ref)), ROUNDING[name.rsplit(" ", 1)[1]])
