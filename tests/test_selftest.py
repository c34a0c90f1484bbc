"""The shipped self-test's runner (sensiformer.test(), ``sensiformer selftest``): it is found by
``pytest --pyargs sensiformer`` and not by the project's run, a perturbed kernel or a crashing child
makes it fail naming the path and the check, bad arguments and a missing pytest give clear errors,
and the JSON report is written whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sensiformer as sf
from sensiformer import _selftest, cli

ROOT = Path(__file__).resolve().parents[1]
PATH = _selftest.cpu_paths()[0]  # a path this machine runs (the widest)


def plugin(tmp_path, monkeypatch, name, body):
    """A pytest plugin module the self-test's children load with ``-p name``."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))


def test_pyargs_finds_the_shipped_suite_and_the_project_run_does_not(tmp_path):
    shipped = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                              "--pyargs", "sensiformer"], cwd=tmp_path, capture_output=True, text=True)
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    items = [line for line in shipped.stdout.splitlines() if "::" in line]
    shipped_files = {p.name for p in (Path(sf.__file__).parent / "tests").glob("test_*.py")}
    assert {i.split("::")[0].rpartition("/")[2] for i in items} == shipped_files and len(items) >= 40, items[:5]
    assert any("test_paths.py::test_the_vector_paths_give_the_same_bits" in i for i in items)
    # the project's own run (pyproject's testpaths) must not collect the shipped suite a second time
    assert 'testpaths = ["tests"]' in (ROOT / "pyproject.toml").read_text()


def test_a_perturbed_gemm_edge_fails_naming_path_and_check(tmp_path, monkeypatch):
    """The children load a plugin that adds 1e-3 to the last element of every GEMM with a partial
    column tile (N % 16 != 0), as a kernel with a broken edge case would."""
    plugin(tmp_path, monkeypatch, "break_gemm_edge", """
        from sensiformer import _native
        _gemm = _native.kernel_gemm

        def broken(**kw):
            _gemm(**kw)
            if kw["c"].shape[1] % 16:
                kw["c"][-1, -1] += 1e-3

        _native.kernel_gemm = broken
    """)
    report = _selftest.run(paths=[PATH], extra_argv=["-p", "break_gemm_edge", "-k", "gemm"])
    assert not report["passed"]
    failed = {c["check"] for run in report["runs"] for c in run["checks"] if c["outcome"] == "failed"}
    assert failed == {"kernels::gemm_matches_numpy[float32]", "kernels::gemm_matches_numpy[float64]"}
    text = _selftest.format_report(report)
    first_edge = "1x1x1 ta=False tb=False (error/bound): error"
    assert f"[{PATH}] kernels::gemm_matches_numpy[float32]: AssertionError: {first_edge}" in text
    assert "FAILED (2 checks)" in text


def test_a_crash_names_the_check_and_keeps_the_results_before_it(tmp_path, monkeypatch):
    """A check that kills its process (as a crash in the engine would): the checks before it keep
    their results, the crashed one is named with the exit status."""
    plugin(tmp_path, monkeypatch, "crash_in_test", """
        import os, signal

        def pytest_runtest_call(item):
            if "closed_forms" in item.nodeid:
                os.kill(os.getpid(), signal.SIGSEGV)
    """)
    report = _selftest.run(paths=[PATH], extra_argv=["-p", "crash_in_test", "-k", "brute_force or closed_forms"])
    assert not report["passed"]
    checks = {c["check"]: c for c in report["runs"][0]["checks"]}
    assert checks["analysis::analysis_matches_brute_force[8]"]["outcome"] == "passed"
    crashed = checks["analysis::closed_forms"]
    assert crashed["outcome"] == "error" and f"exited with code -{int(signal.SIGSEGV)}" in crashed["message"]
    assert f"[{PATH}] analysis::closed_forms: the process exited with code" in _selftest.format_report(report)


def test_passing_run_writes_the_json_report_and_exits_0(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert cli.main(["selftest", "--path", PATH, "-k", "closed_forms or bitwise_identical_for_1", "--json",
                     str(out)]) == 0
    text = capsys.readouterr().out
    assert f"PASSED on {PATH}" in text and "OpenMP threads by default" in text and sf.__version__ in text
    report = json.loads(out.read_text())
    assert report["passed"] and report["tested_paths"] == [PATH] and report["versions"]["sensiformer"] == sf.__version__
    checks = {c["check"]: c for c in report["runs"][0]["checks"]}
    assert checks["kernels::gemm_is_bitwise_identical_for_1_and_2_threads"]["max_error"]["limit"] == 0
    assert not list(tmp_path.glob("*.tmp"))
    assert sf.test(paths=PATH, extra_argv=["-k", "closed_forms"]) is True


def test_bad_arguments_are_refused_naming_them_before_any_run(tmp_path):
    with pytest.raises(ValueError, match="json_path: the directory .*missing does not exist"):
        sf.test(json_path=tmp_path / "missing" / "report.json")
    with pytest.raises(TypeError, match="extra_argv must be a sequence"):
        sf.test(extra_argv="-k gemm")
    assert cli.main(["selftest", "--json", str(tmp_path / "missing" / "r.json")]) == 2


def test_bad_paths_are_refused_naming_the_argument():
    with pytest.raises(ValueError, match="paths: unknown CPU path 'avx9000'"):
        sf.test(paths=["avx9000"])
    with pytest.raises(ValueError, match="paths must name at least one"):
        sf.test(paths=[])
    assert cli.main(["selftest", "--path", "avx9000"]) == 2


def test_without_pytest_the_message_says_how_to_install_it(monkeypatch, capsys):
    real = _selftest.importlib.util.find_spec
    monkeypatch.setattr(_selftest.importlib.util, "find_spec", lambda name: None if name == "pytest" else real(name))
    with pytest.raises(ImportError, match=r'pip install "sensiformer\[selftest\]"'):
        sf.test()
    assert cli.main(["selftest"]) == 2
    assert 'pip install "sensiformer[selftest]"' in capsys.readouterr().err
