"""``sensiformer.test()`` and ``sensiformer selftest``: validate an installation where it runs.

The engine reads ``SENSIFORMER_CPU_PATH`` once, when it loads, so each CPU path this build and CPU
can run gets its own child process running the shipped suite (``sensiformer.tests``) with the path
forced; one more child compares the paths with each other. Each child writes its results (outcome,
message and largest error of every check) as JSON; the parent prints a short report a researcher
can paste into an issue or a paper's appendix, and optionally writes it as JSON.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import _native

ALL_PATHS = ("x86-64-v4", "x86-64-v3", "baseline")  # every path the engine knows (cpu_paths: the runnable)
CHILD_TIMEOUT = 900  # seconds per child; the whole self-test takes well under a minute per path
CHILD = "import sys; from sensiformer._selftest import _child; sys.exit(_child(sys.argv[1], sys.argv[2:]))"
PYTEST_MISSING = ('the sensiformer self-test needs pytest, which is not installed; install it with\n'
                  '    pip install "sensiformer[selftest]"      (or: pip install pytest)')
# The children's pytest configuration, independent of any pytest.ini/pyproject.toml around the cwd:
# no cache written into site-packages, numeric warnings and sensiformer's own warnings are failures.
PYTEST_INI = """[pytest]
addopts = -p no:cacheprovider --import-mode=importlib -q --no-header -rN
filterwarnings =
    error::RuntimeWarning
    error:::sensiformer
"""


def cpu_paths() -> tuple:
    """The CPU paths this build and this CPU can run, widest first."""
    return tuple(_native.build_info()["cpu_paths"])


# ---- the child: one pytest run, results as JSON -------------------------------------------------
def _check_name(nodeid):
    """'.../tests/test_models.py::test_float32_build[encoder]' -> 'models::float32_build[encoder]'."""
    module, _, test = nodeid.rpartition("/")[2].partition("::")
    return f"{module.removesuffix('.py').removeprefix('test_')}::{test.removeprefix('test_')}"


def _message(report):
    """One line: the skip reason, or the failed assertion's first line."""
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return text.strip().splitlines()[0] if text.strip() else ""


class _Collector:
    """A pytest plugin gathering each check's outcome, message, largest error and duration. It saves
    the results so far (and the check about to run) before every check, so that a child killed by a
    crash in the engine still reports what passed and which check crashed."""

    def __init__(self, out, facts):
        self.out, self.checks = Path(out), {}
        self.facts = dict(cpu_path=facts["cpu_path"], omp_threads=facts["default_threads"])

    def save(self, running=None, exit_code=None):
        self.out.write_text(json.dumps(self.facts | dict(running=running, exit_code=exit_code,
                                                         checks=list(self.checks.values()))))

    def pytest_runtest_logstart(self, nodeid, location):
        self.save(running=nodeid)

    def pytest_runtest_logreport(self, report):
        check = self.checks.setdefault(report.nodeid, dict(check=_check_name(report.nodeid), outcome="passed",
                                                           message="", max_error=None, seconds=0.0))
        check["seconds"] += report.duration
        if report.failed:
            check["outcome"] = "failed" if report.when == "call" else "error"
            check["message"] = check["message"] or _message(report)
        elif report.skipped and check["outcome"] == "passed":
            check["outcome"], check["message"] = "skipped", _message(report)
        for key, value in report.user_properties:
            if key == "max_error" and value:
                check["max_error"] = {k: value[k] for k in ("what", "error", "limit")}

    def pytest_collectreport(self, report):
        if report.failed:
            self.checks[report.nodeid] = dict(check=_check_name(report.nodeid) or "collection", outcome="error",
                                              message=_message(report), max_error=None, seconds=0.0)


def _child(out, pytest_args):
    """Run the shipped suite in this process and write the results to ``out`` (JSON)."""
    import pytest

    import sensiformer as sf

    collector = _Collector(out, sf.show_config(print_out=False))  # before the tests change the thread default
    collector.save()
    code = pytest.main(["--pyargs", "sensiformer.tests", *pytest_args], plugins=[collector])
    collector.save(exit_code=int(code))
    return 0


# ---- the parent: one child per path, then the report ---------------------------------------------
def _run_child(label, path, select, extra_argv, workdir, verbose):
    """One child running the checks ``select`` picks; ``path`` None lets the engine choose."""
    out = Path(workdir) / f"{label}.json"
    ini = Path(workdir) / "pytest.ini"
    env = {k: v for k, v in os.environ.items() if k != "SENSIFORMER_CPU_PATH"}
    if path is not None:
        env["SENSIFORMER_CPU_PATH"] = path
    command = [sys.executable, "-c", CHILD, str(out), "-c", str(ini), "--rootdir", str(workdir), "-m", select,
               *extra_argv]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, cwd=workdir, timeout=CHILD_TIMEOUT,
                              stdout=None if verbose else subprocess.PIPE, stderr=subprocess.STDOUT)
        output, code = done.stdout or b"", done.returncode
    except subprocess.TimeoutExpired as err:
        output, code = err.output or b"", None
    result = dict(cpu_path=None, omp_threads=None, running=None, exit_code=None, checks=[])
    if out.exists():
        result |= json.loads(out.read_text())
    if result["exit_code"] not in (0, 1, 5):  # 1: checks failed, 5: -k selected none; else the run broke
        if result["exit_code"] is not None:  # pytest stopped: interrupted, usage or internal error
            reason = f"pytest exited with code {result['exit_code']}"
        else:  # the process died: a crash in the engine, an import error, a timeout
            reason = f"timed out after {CHILD_TIMEOUT} s" if code is None else f"the process exited with code {code}"
        tail = " | ".join(line for line in output.decode(errors="replace").splitlines()[-5:] if line.strip())
        running = result["running"]
        result["checks"].append(dict(check=_check_name(running) if running else "(child process)",
                                     outcome="error", message=f"{reason}: {tail}".rstrip(": "), max_error=None,
                                     seconds=0.0))
    return dict(path=label, forced=path, seconds=time.perf_counter() - started) | result


def _versions():
    import sensiformer as sf

    def version(name):  # from the installed metadata: importing torch for its version takes seconds
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return dict(sensiformer=sf.__version__, location=str(Path(sf.__file__).parent), python=platform.python_version(),
                numpy=np.__version__, pytest=version("pytest"), torch=version("torch"))


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _check_paths(paths):
    runnable = cpu_paths()
    if paths is None:
        return runnable
    paths = (paths,) if isinstance(paths, str) else tuple(paths)
    for p in paths:
        if p not in ALL_PATHS:
            raise ValueError(f"paths: unknown CPU path {p!r}; the paths are {', '.join(ALL_PATHS)}")
        if p not in runnable:
            raise ValueError(f"paths: this build and CPU cannot run {p!r}; they run {', '.join(runnable)}")
    if not paths:
        raise ValueError("paths must name at least one CPU path")
    return paths


def run(*, paths=None, extra_argv=(), verbose=False) -> dict:
    """Run the shipped suite on each CPU path (one child process each), then compare the paths.

    Parameters
    ----------
    paths : sequence of str, optional
        CPU paths to test (default: every path this build and CPU can run).
    extra_argv : sequence of str
        Passed to pytest in every child (e.g. ``["-k", "gemm"]``).
    verbose : bool
        Show the children's pytest output.

    Returns
    -------
    dict
        The report (see ``format_report``): versions, build, CPU, and per run its checks.
    """
    if importlib.util.find_spec("pytest") is None:
        raise ImportError(PYTEST_MISSING)
    import sensiformer as sf

    compare = paths is None  # the cross-path check compares every runnable path
    paths = _check_paths(paths)
    if isinstance(extra_argv, (str, bytes)):
        raise TypeError("extra_argv must be a sequence of arguments, e.g. ['-k', 'gemm'], not one string")
    extra_argv = [str(a) for a in (extra_argv or ())]
    facts = sf.show_config(print_out=False)
    started = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory(prefix="sensiformer-selftest-") as workdir:
        (Path(workdir) / "pytest.ini").write_text(PYTEST_INI)
        for path in paths:
            runs.append(_run_child(path, path, "not cross_path", extra_argv, workdir, verbose))
        if compare:
            runs.append(_run_child("cross-path", None, "cross_path", extra_argv, workdir, verbose))
    failed = [c for r in runs for c in r["checks"] if c["outcome"] in ("failed", "error")]
    chosen_by = "SENSIFORMER_CPU_PATH" if os.environ.get("SENSIFORMER_CPU_PATH", "auto") != "auto" else "auto"
    return dict(versions=_versions(), platform=platform.platform(), cpu=_cpu_model(), cpu_paths=list(cpu_paths()),
                default_path=dict(path=facts["cpu_path"], chosen_by=chosen_by),
                build=dict(openmp=facts["openmp"], build_flags=facts["build_flags"],
                           default_threads=facts["default_threads"]),
                tested_paths=list(paths), runs=runs, passed=not failed and all(r["exit_code"] in (0, 5) for r in runs),
                seconds=time.perf_counter() - started)


def _ratio(max_error):
    return max_error["error"] / max_error["limit"] if max_error["limit"] > 0 else float(max_error["error"] > 0)


def _cell(checks):
    """One table cell: the worst outcome of a check's cases on one run, or their largest error."""
    outcomes = {c["outcome"] for c in checks}
    if outcomes & {"failed", "error"}:
        return "FAIL"
    if outcomes == {"skipped"}:
        return "skip"
    measured = [c["max_error"] for c in checks if c["max_error"]]
    if not measured:
        return "ok"
    worst = max(measured, key=_ratio)
    if worst["limit"] == 0:
        return "bitwise" if worst["error"] == 0 else f"{worst['error']:.1e}"
    return f"{worst['error']:.1e}"


def _limit(rows):
    measured = [c["max_error"] for checks in rows for c in checks if c["max_error"]]
    if not measured:
        return ""
    limit = max(measured, key=_ratio)["limit"]
    return "0 (bits)" if limit == 0 else f"{limit:.0e}"


def format_report(report) -> str:
    """The report as text: what ran where, a table of checks (parametrised cases grouped, the largest
    error of each on each CPU path, and its limit), the skips in one line each, then the verdict."""
    v, b = report["versions"], report["build"]
    lines = [
        f"sensiformer {v['sensiformer']} self-test ({v['location']})",
        f"  Python {v['python']}, NumPy {v['numpy']}, pytest {v['pytest']}, "
        f"PyTorch {v['torch'] or 'not installed (torch checks skipped)'}",
        f"  build: OpenMP {'on' if b['openmp'] else 'off'}, flags: {b['build_flags']}",
        f"  CPU: {report['cpu']} ({report['platform']})",
        f"  CPU paths this build and CPU can run: {', '.join(report['cpu_paths'])}; sensiformer runs "
        f"{report['default_path']['path']} here ({report['default_path']['chosen_by']})",
        f"  OpenMP threads by default: {b['default_threads']} (the thread checks use 1 and 2)",
        "",
    ]
    runs = report["runs"]
    for run in runs:
        counts = {k: sum(c["outcome"] == k for c in run["checks"]) for k in ("passed", "failed", "error", "skipped")}
        wrong = run["forced"] is not None and run["cpu_path"] not in (None, run["forced"])
        in_use = f", but the engine ran {run['cpu_path']}" if wrong else ""
        lines.append(f"  {run['path']:<11} " + ", ".join(f"{n} {k}" for k, n in counts.items() if n)
                     + f" in {run['seconds']:.1f} s"
                     + (f" ({run['omp_threads']} threads{in_use})" if run["omp_threads"] else ""))
    groups = {}  # check without its parameters -> one list of cases per run
    for i, run in enumerate(runs):
        for c in run["checks"]:
            groups.setdefault(c["check"].split("[")[0], [[] for _ in runs])[i].append(c)
    labels = {name: name + (f" [{n}]" if (n := max(len(r) for r in rows)) > 1 else "") for name, rows in groups.items()}
    width = max(len(label) for label in labels.values())
    lines += ["", f"  {'check':<{width}} " + " ".join(f"{r['path']:>11}" for r in runs) + "  limit"]
    for name, rows in groups.items():
        cells = " ".join(f"{_cell(r) if r else '':>11}" for r in rows)
        lines.append(f"  {labels[name]:<{width}} {cells}  {_limit(rows)}".rstrip())
    skips = {}
    for run in runs:
        for c in run["checks"]:
            if c["outcome"] == "skipped":
                skips.setdefault(c["message"], set()).add(c["check"])
    lines += [f"  skipped {len(checks)} check{'s' * (len(checks) > 1)}: {reason}" for reason, checks in skips.items()]
    failed = [(r["path"], c) for r in runs for c in r["checks"] if c["outcome"] in ("failed", "error")]
    if report["passed"]:
        lines.append(f"\nPASSED on {', '.join(report['tested_paths'])} in {report['seconds']:.0f} s")
    else:
        lines.append(f"\nFAILED ({len(failed)} check{'s' * (len(failed) != 1)}) in {report['seconds']:.0f} s:")
        lines += [f"  [{path}] {c['check']}: {c['message']}" for path, c in failed]
    return "\n".join(lines)


def _write_json(report, path):
    """Write the report whole or not at all (a temporary file renamed over the target)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(path)


def test(*, paths=None, extra_argv=(), verbose=False, json_path=None) -> bool:
    """Validate this installation on this machine, as ``numpy.test()`` does; print the report.

    Runs the shipped suite (``sensiformer.tests``: kernels, gradients, float32 vs float64, training
    determinism, PyTorch where installed, Boolean analysis, files, errors) on every CPU path this
    build and CPU can run, each in its own process, and compares the paths' results. Takes under
    2 minutes on 2 cores. Needs pytest (``pip install "sensiformer[selftest]"``).

    Parameters
    ----------
    paths : sequence of str, optional
        CPU paths to test (default: every runnable path).
    extra_argv : sequence of str
        More pytest arguments for every run (e.g. ``["-k", "gemm"]``).
    verbose : bool
        Show pytest's own output.
    json_path : str or os.PathLike, optional
        Also write the report there as JSON.

    Returns
    -------
    bool
        True if every check passed.
    """
    if json_path is not None and not Path(json_path).parent.is_dir():
        raise ValueError(f"json_path: the directory {Path(json_path).parent} does not exist")
    report = run(paths=paths, extra_argv=extra_argv, verbose=verbose)
    print(format_report(report))
    if json_path is not None:
        _write_json(report, json_path)
    return report["passed"]


def cli(args) -> int:
    """``sensiformer selftest``: the report on stdout, ``--json`` file, exit 0 only if all passed."""
    try:
        passed = test(paths=args.path, extra_argv=["-k", args.k] if args.k else (), verbose=args.verbose,
                      json_path=args.json)
    except ImportError as err:
        print(f"sensiformer: error: {err}", file=sys.stderr)
        return 2
    return 0 if passed else 1

