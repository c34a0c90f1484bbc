"""What the distribution ships and declares: the sdist carries what the tests need, the
metadata points at the license and the paper, and a normal install records its git commit."""

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sdist_names(tmp_path_factory):
    if not (ROOT / "setup.py").exists():
        pytest.skip("needs the source tree")
    out = tmp_path_factory.mktemp("sdist")
    proc = subprocess.run([sys.executable, "setup.py", "egg_info", "--egg-base", str(out), "sdist", "--dist-dir",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in (proc.stdout + proc.stderr).lower(), "MANIFEST.in and package-data match real files"
    (archive,) = out.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        return {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}


def test_the_sdist_ships_what_the_tests_need(sdist_names):
    wanted = {"LICENSE", "CITATION.cff", "README.md", "tests/conftest.py", "tests/c/test_engine.c",
              "python/sensiformer/py.typed"}
    wanted |= {str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("*.py")}
    wanted |= {str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("*.ipynb")}
    wanted |= {"notebooks/execute.py"}  # tests/test_notebooks.py imports it
    assert wanted - sdist_names == set()


def test_metadata_declares_license_citation_urls_and_a_tested_torch_range():
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert "Copyright (c) 2026 sensiformer developers" in (ROOT / "LICENSE").read_text()
    assert project["urls"]["Paper"] == "https://aclanthology.org/2024.acl-long.800"
    assert "Intended Audience :: Science/Research" in project["classifiers"]
    (torch,) = [r for r in project["optional-dependencies"]["test"] if r.startswith("torch")]
    assert torch == "torch>=2.2,<2.14", "a range; CI resolves it to the tested 2.13.0"
    yaml = pytest.importorskip("yaml")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    paper = citation["preferred-citation"]
    assert paper["title"] == "Why are Sensitive Functions Hard for Transformers?"
    assert [a["family-names"] for a in paper["authors"]] == ["Hahn", "Rofin"]
    assert paper["doi"] == "10.18653/v1/2024.acl-long.800" and citation["license"] == "MIT"


def test_an_install_without_a_checkout_records_the_commit_its_build_wrote(monkeypatch, tmp_path):
    import types

    from sensiformer.sweep import runner

    monkeypatch.setattr(runner, "__file__", str(tmp_path / "a" / "b" / "c" / "runner.py"))  # no .git above
    monkeypatch.setitem(sys.modules, "sensiformer._build_info", types.SimpleNamespace(GIT_COMMIT="abc123"))
    runner._git_commit.cache_clear()
    try:
        assert runner._git_commit() == "abc123"
        # no record: importing it fails (a built install has the real file, which this blocks)
        monkeypatch.setitem(sys.modules, "sensiformer._build_info", None)
        runner._git_commit.cache_clear()
        assert runner._git_commit() is None, "no checkout and no record: unknown, not a guess"
    finally:
        runner._git_commit.cache_clear()
