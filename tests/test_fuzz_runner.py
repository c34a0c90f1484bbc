"""Crash-isolating runner for the hypothesis fuzz modules (tests/test_fuzz_*.py), and its self-test.

A fuzz module defines ``fuzz_*`` functions (hypothesis ``@given`` tests, not collected by pytest)
and one parametrized pytest test per function that reads ``run_fuzz_targets``' result. All targets
of a module run in one child interpreter (``-W error``, as pyproject's filterwarnings), which
writes a START/RESULT line per target to a report file and, before every example, the example
itself to a "last case" file. If the child dies (segfault, abort from a sanitizer, hang), the
target that was running is reported as crashed, with the last example and the child's stderr
(faulthandler's traceback, the sanitizer report), and a fresh child runs the remaining targets.

The hypothesis seed is random per run (printed in every failure) and can be fixed with
``SF_FUZZ_SEED=<int>`` to replay a run; ``SF_FUZZ_SCALE`` multiplies every target's number of
examples (default 1, or 0.25 under the sanitizers of .ci/sanitize.sh).

Fuzz targets call ``note_case(...)`` at the start of every example and ``known_bug(name)`` when an
outcome matches an open, documented library bug (tolerated so that the fuzzers keep looking for
new ones; each known bug has a strict-xfail reproduction in tests/test_reliability_bugs.py).
"""

from __future__ import annotations

import json
import numbers
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
CHILD_TIMEOUT = 900  # seconds for one child (all remaining targets of a module)

# ---- used inside the child (fuzz modules import these names from here) ----------------------------

_state = {"case_file": None, "examples": 0, "known": {}, "outcomes": {}}


def scale() -> float:
    """Multiplier of every target's ``max_examples``."""
    if "SF_FUZZ_SCALE" in os.environ:
        return float(os.environ["SF_FUZZ_SCALE"])
    return 0.25 if os.environ.get("SENSIFORMER_EXPECT_PATH") else 1.0


def examples(ci_count: int) -> int:
    """``ci_count`` examples under the "ci" profile (200 default examples), proportionally fewer
    under "dev" (50), times ``scale()``."""
    from hypothesis import settings

    return max(5, int(ci_count * settings.default.max_examples / 200 * scale()))


def _short(value, limit=300):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"...<{len(text)} chars>"


def note_case(**fields) -> None:
    """Record the example about to run (read back if the child dies during it)."""
    _state["examples"] += 1
    path = _state["case_file"]
    if path is None:
        return
    import numpy as np

    with np.printoptions(threshold=20, edgeitems=3):
        text = "\n".join(f"{k} = {_short(v)}" for k, v in fields.items())
    with open(path, "w") as fh:
        fh.write(text)


def outcome(label: str) -> None:
    """Count how an example ended ("ok", "refused", ...): the parent prints the tally, which shows
    that valid calls are common enough to test the results, not only the refusals."""
    _state["outcomes"][label] = _state["outcomes"].get(label, 0) + 1


def known_bug(name: str, detail: str = "") -> None:
    """An outcome matched a documented open bug: count it (reported by the parent test)."""
    entry = _state["known"].setdefault(name, [0, detail])
    entry[0] += 1


_CHILD = textwrap.dedent(r"""
    import faulthandler, importlib.util, json, os, sys, time, traceback
    faulthandler.enable()
    module_path, report_path, case_path, seed, names = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]

    def load(name, path):
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod

    tests_dir = os.path.dirname(module_path)
    load("sf_fuzz_conftest", os.path.join(tests_dir, "conftest.py"))  # registers and loads the profile
    runner = load("sf_fuzz_runner", os.path.join(tests_dir, "test_fuzz_runner.py"))
    runner._state["case_file"] = case_path
    mod = load("sf_fuzz_module", module_path)
    import hypothesis

    def emit(line):
        with open(report_path, "a") as fh:
            fh.write(line + "\n")

    for name in names:
        emit("START " + name)
        runner._state["examples"], runner._state["known"], runner._state["outcomes"] = 0, {}, {}
        fn = getattr(mod, name)
        hypothesis.seed(seed)(fn)
        started = time.perf_counter()
        try:
            fn()
            result = {"ok": True}
        except BaseException as err:
            result = {"ok": False, "error": "".join(traceback.format_exception(err))[-6000:]}
        result.update(examples=runner._state["examples"], known=runner._state["known"],
                      outcomes=runner._state["outcomes"],
                      seconds=round(time.perf_counter() - started, 1))
        emit("RESULT " + json.dumps([name, result]))
""")


# ---- oracles and settings shared by the fuzz modules (used inside the child) -------------------------

MEMORY_LIMIT = 64 << 20  # in the child: big fuzzed sizes are refused quickly instead of allocated
ALLOWED = (TypeError, ValueError, KeyError, MemoryError, RuntimeError, FloatingPointError)


def setup_child(module_name) -> None:
    """One thread and a small memory limit, when ``module_name`` says we are the fuzzing child."""
    if module_name == "sf_fuzz_module":
        import sensiformer as sf

        sf.set_num_threads(1)
        sf.set_memory_limit(MEMORY_LIMIT)


def fuzz_settings(ci_examples):
    """Hypothesis settings of a target with ``ci_examples`` examples under the "ci" profile."""
    from hypothesis import HealthCheck, settings

    return settings(max_examples=examples(ci_examples), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def is_bool(v):
    import numpy as np

    return isinstance(v, (bool, np.bool_))


def is_int(v):
    return isinstance(v, numbers.Integral) and not is_bool(v)


def is_real(v):
    return isinstance(v, numbers.Real) and not is_bool(v)


def as_array(value):
    """np.asarray, or None if NumPy cannot make an array of it."""
    import warnings

    import numpy as np

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(value)
    except Exception:
        return None


def check_error(err, names, where):
    """``err`` is an expected exception whose message names one of ``names`` (a MemoryError: a size)."""
    import re

    msg = str(err)
    assert isinstance(err, ALLOWED), f"{where}: unexpected {type(err).__name__}: {msg}"
    if isinstance(err, MemoryError):
        assert re.search(r"memory limit|GB|GiB|TiB|bytes", msg), f"{where}: MemoryError without a size: {msg!r}"
        return
    assert any(re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", msg) for n in names), \
        f"{where}: {type(err).__name__} message does not name any of {sorted(set(names))}: {msg!r}"


# ---- used by the parent (the pytest process) --------------------------------------------------------

def fuzz_seed() -> int:
    if "SF_FUZZ_SEED" in os.environ:
        return int(os.environ["SF_FUZZ_SEED"])
    return random.SystemRandom().randrange(2**32)


def run_fuzz_targets(module_path, names, workdir, seed=None) -> dict:
    """Run the named targets of the module in child interpreters; survive crashes and hangs.

    Returns name -> dict(ok, examples, known, error) or dict(crashed=returncode | "timeout",
    case=<last example>, stderr=<tail>); every result carries the seed.
    """
    seed = fuzz_seed() if seed is None else seed
    workdir = Path(workdir)
    pending = list(names)
    results = {}
    attempt = 0
    while pending:
        attempt += 1
        report = workdir / f"report{attempt}.txt"
        case = workdir / f"case{attempt}.txt"
        env = dict(os.environ, SF_TEST_WORKDIR=str(workdir))
        cmd = [sys.executable, "-W", "error", "-W", "ignore::DeprecationWarning:torch.*", "-c", _CHILD,
               str(module_path), str(report), str(case), str(seed), *pending]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workdir, env=env)
        try:
            _, err = proc.communicate(timeout=CHILD_TIMEOUT)
            hung = False
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            hung = True
        started = None
        if report.exists():
            for line in report.read_text().splitlines():
                if line.startswith("START "):
                    started = line[6:]
                elif line.startswith("RESULT "):
                    name, result = json.loads(line[7:])
                    results[name] = dict(result, seed=seed)
                    started = None
        if started is None and not hung and proc.returncode == 0:
            break
        crash = dict(crashed="timeout" if hung else proc.returncode, stderr=err[-4000:], seed=seed,
                     case=case.read_text() if case.exists() else "")
        if started is None:  # died outside a target (e.g. at import): charge every pending target
            for name in pending:
                results.setdefault(name, crash)
            break
        results[started] = crash
        pending = pending[pending.index(started) + 1:]
    return results


def check_result(name, result) -> None:
    """Fail the calling test with a useful message unless the target passed."""
    replay = f"(replay: SF_FUZZ_SEED={result.get('seed')})"
    if "crashed" in result:
        pytest.fail(f"{name}: the interpreter died ({result['crashed']}) {replay}\n"
                    f"last example:\n{result['case']}\n--- stderr ---\n{result['stderr']}", pytrace=False)
    if not result["ok"]:
        pytest.fail(f"{name} failed {replay}:\n{result['error']}", pytrace=False)
    assert result["examples"] > 0, f"{name} ran no examples"
    print(f"{name}: {result['examples']} examples in {result['seconds']} s; outcomes {result['outcomes']}; "
          f"known bugs hit: { {k: v[0] for k, v in result['known'].items()} }")  # shown with pytest -s


# ---- self-test ---------------------------------------------------------------------------------------

_SELF_TEST = textwrap.dedent("""
    import ctypes
    from hypothesis import given, settings, strategies as st
    from sf_fuzz_runner import note_case, known_bug

    @settings(max_examples=5, database=None)
    @given(st.integers(0, 10))
    def fuzz_ok(i):
        note_case(i=i)
        if i == 3:
            known_bug("three", "i == 3")

    @settings(max_examples=50, database=None)
    @given(st.integers(0, 10))
    def fuzz_segfault(i):
        note_case(i=i, what="about to crash")
        if i >= 0:
            ctypes.string_at(0)

    @settings(max_examples=50, database=None)
    @given(st.integers(0, 10))
    def fuzz_fails(i):
        note_case(i=i)
        assert i < 5, "i is too large"

    @settings(max_examples=5, database=None)
    @given(st.integers(0, 10))
    def fuzz_after(i):
        note_case(i=i)
""")


def test_runner_survives_a_crash_and_reports_it(tmp_path):
    module = tmp_path / "fuzz_self_test.py"
    module.write_text(_SELF_TEST)
    # the child loads conftest.py and this file from the module's directory
    for name in ("conftest.py", "test_fuzz_runner.py"):
        (tmp_path / name).write_text((TESTS_DIR / name).read_text())
    results = run_fuzz_targets(module, ["fuzz_ok", "fuzz_segfault", "fuzz_fails", "fuzz_after"], tmp_path, seed=1)
    assert results["fuzz_ok"]["ok"] and results["fuzz_ok"]["examples"] >= 5
    assert results["fuzz_segfault"]["crashed"] not in (0, None)
    assert "about to crash" in results["fuzz_segfault"]["case"]
    assert "Fatal Python error" in results["fuzz_segfault"]["stderr"]  # faulthandler's traceback
    assert not results["fuzz_fails"]["ok"] and "i is too large" in results["fuzz_fails"]["error"]
    # the shrunk example is reported ("Falsifying example" up to hypothesis 6.16x, "Failing test case" after)
    assert any(s in results["fuzz_fails"]["error"] for s in ("Falsifying example", "Failing test case"))
    assert results["fuzz_after"]["ok"]


# ---- shared strategies: arrays of every dtype, shape, layout and value --------------------------------

def _strategies():
    """Built lazily (hypothesis and numpy are only needed where the fuzzers run)."""
    import math
    import warnings

    import numpy as np
    from hypothesis import strategies as st

    dtypes = ["bool", "int8", "uint8", "int16", ">i2", "uint16", "int32", "int64", ">i8", "uint32", "uint64",
              "float16", "float32", "float64", ">f8", "complex64", "complex128", "object", "<U3", "S2", "m8[s]"]
    layouts = ["C", "C", "C", "F", "strided_rows", "strided_cols", "reversed", "transposed", "broadcast",
               "readonly", "unaligned", "list"]

    def fill(values, dtype, shape):
        arr = np.zeros(math.prod(shape), dtype=dtype)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            for i, v in enumerate(values):
                try:
                    arr[i] = v
                except Exception:
                    pass  # not representable in this dtype: keep the zero
        return arr.reshape(shape)

    def layout(arr, kind):
        if kind == "F":
            return np.asfortranarray(arr)
        if kind == "strided_rows" and arr.ndim >= 1:
            return np.repeat(arr, 2, axis=0)[::2]
        if kind == "strided_cols" and arr.ndim >= 1:
            return np.repeat(arr, 2, axis=-1)[..., ::2]
        if kind == "reversed" and arr.ndim >= 1:
            return arr[::-1]
        if kind == "transposed" and arr.ndim == 2:
            return np.ascontiguousarray(arr.T).T
        if kind == "broadcast" and arr.ndim >= 1 and arr.shape[0] > 0:
            return np.broadcast_to(arr[:1], arr.shape)
        if kind == "readonly":
            out = arr.copy()
            out.flags.writeable = False
            return out
        if kind == "unaligned" and arr.dtype != object and arr.dtype.itemsize > 1 and arr.size:
            buf = np.zeros(arr.nbytes + 1, np.uint8)
            out = buf[1:].view(arr.dtype).reshape(arr.shape)
            out[...] = arr
            return out
        if kind == "list":
            return arr.tolist()
        return arr

    cache = {}

    def cached(key, make):
        """Strategies are built once: hypothesis validates every new strategy object, which
        dominates the cost when a composite builds them per draw."""
        if key not in cache:
            cache[key] = make()
        return cache[key]

    layout_strategy = st.sampled_from(layouts)

    @st.composite
    def arrays(draw, shapes, palette, clean=None, dtype_choices=None):
        """An array (or nested list) of a drawn shape, dtype, layout and values; with ``clean``,
        half of the arrays take only clean values (so that valid inputs are common)."""
        shape = draw(shapes)
        choices = tuple(dtype_choices or dtypes)
        dtype = draw(cached(("dtypes", choices), lambda: st.sampled_from(choices)))
        values_from = clean if clean is not None and draw(st.booleans()) else palette
        size = math.prod(shape)
        values = draw(cached(("lists", id(values_from), size),
                             lambda: st.lists(values_from, min_size=size, max_size=size)))
        return layout(fill(values, dtype, shape), draw(layout_strategy))

    junk = st.sampled_from([None, "1", b"1", 1.5, float("nan"), float("inf"), -float("inf"), True, False,
                            np.True_, [1], (1,), {}, 1j, np.float64(2.0), Ellipsis])
    huge = st.sampled_from([2**31, 2**32, 2**63 - 1, 2**63, 2**64, 2**70, -2**31 - 1, -2**63, -2**64,
                            np.int64(2**62), np.uint64(2**64 - 1), np.int8(-1)])

    negative_huge = st.sampled_from([-2**31 - 1, -2**63, -2**64, np.int64(-2**62), -2**70])

    def mix(*weighted):
        """Draw from strategies with weights: ``mix((3, a), (1, b))``. (``st.one_of(a, a, a, b)``
        does not weight: hypothesis merges identical branches.)"""
        chooser = st.sampled_from([s for w, s in weighted for _ in range(w)])

        @st.composite
        def mixed(draw):
            return draw(draw(chooser))

        return mixed()

    def ints(valid, huge_ok=True):
        """Mostly ``valid`` (70%), else junk, huge or non-positive integers (``huge_ok=False``: no
        huge positive ones, for counts that would be valid but take forever)."""
        return mix((7, valid), (1, junk), (1, huge if huge_ok else negative_huge), (1, st.integers(-3, 0)))

    return dict(arrays=arrays, junk=junk, huge=huge, ints=ints, mix=mix, dtypes=dtypes, fill=fill, layout=layout)


_strategy_cache = {}


def strategies() -> dict:
    if not _strategy_cache:
        _strategy_cache.update(_strategies())
    return _strategy_cache
