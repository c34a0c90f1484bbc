"""Every notebook runs end to end at its default (ci) preset; the committed copies carry the
outputs of a quick-preset execution (notebooks/execute.py)."""

import importlib.util
import os
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def executor_module():
    spec = importlib.util.spec_from_file_location("notebook_execute", NOTEBOOK_DIR / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_is_a_notebook_per_figure():
    names = {p.stem for p in NOTEBOOKS}
    assert {"tutorial", "fig1_scaling", "fig2_tradeoff", "fig3_dynamics", "fig4_generalization",
            "fig11_scratchpad"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_shows_a_quick_execution(path):
    """Committed executed at the quick preset: every code cell ran, no errors or warnings in the
    outputs, at least one figure, and a cell that says which preset made them."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(injected) == 1 and 'PRESET = \'quick\'' in injected[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "every code cell executed"
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "Warning" not in stderr, stderr
    assert any("image/png" in o.get("data", {}) for o in outputs), "a figure"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = executor_module().without_injected(nbformat.read(path, as_version=4))  # the defaults: ci
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1 and 'PRESET = "ci"' in params[0].source, "a parameter cell that defaults to ci"
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    assert os.listdir(tmp_path), "the notebook wrote its results store next to itself"


def test_injected_parameters_replace_each_other():
    nbformat = pytest.importorskip("nbformat")
    execute = executor_module()
    nb = execute.without_injected(nbformat.read(NOTEBOOKS[0], as_version=4))
    before = len(nb.cells)
    nb = execute.inject(execute.inject(nb, PRESET="paper"), PRESET="quick")
    assert len(nb.cells) == before + 1
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    assert nb.cells[index + 1].source.endswith("PRESET = 'quick'")
    assert len(execute.without_injected(nb).cells) == before


def test_notebooks_extra_has_ipywidgets():
    """Without ipywidgets every progress bar in Jupyter printed "TqdmWarning: IProgress not found"."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((NOTEBOOK_DIR.parent / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("ipywidgets") for dep in project["optional-dependencies"]["notebooks"])
