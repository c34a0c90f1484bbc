"""The README's Python blocks run as a new user would paste them (issue 16, point 1).

The blocks of "Using it from Python" and "Probing" run verbatim, in one namespace (the second
uses the first's model and batch), about 15 s. The sweep block of "Reproducing the paper" runs
the "quick" preset's 160 runs (minutes), so it runs with ``preset="ci"`` and ``seeds=range(1)``
instead: the only patch, applied by ``_patched`` below and checked to have matched.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _python_blocks():
    return FENCE.findall(README.read_text())


def _section_block(heading):
    """The first ```python block after a ``## heading``."""
    text = README.read_text()
    start = text.index(f"## {heading}\n")
    return FENCE.search(text, start).group(1)


def test_readme_has_the_python_blocks_this_test_runs():
    blocks = _python_blocks()
    assert len(blocks) == 3, "a README python block was added or removed: run it here too"
    assert blocks == [_section_block(h) for h in ("Using it from Python", "Probing", "Reproducing the paper")]


def test_readme_python_and_probing_blocks_run_verbatim(tmp_path, monkeypatch):
    pytest.importorskip("torch")  # the block ends with sf.interop.to_torch
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    exec(compile(_section_block("Using it from Python"), "README: Using it from Python", "exec"), namespace)
    evaluation = namespace["trainer"].evaluate()
    assert evaluation["accuracy"] == 1.0  # the README's claim: it learns PARITY of 10 bits
    assert type(namespace["torch_module"]).__name__ == "TorchReference"
    exec(compile(_section_block("Probing"), "README: Probing", "exec"), namespace)


def test_interop_is_an_attribute_that_imports_torch_only_when_used():
    script = ("import sys, sensiformer as sf; assert 'torch' not in sys.modules; "
              "assert 'interop' in dir(sf); f = sf.interop.to_torch; assert 'torch' not in sys.modules; "
              "import sensiformer.interop; assert sensiformer.interop is sf.interop")
    subprocess.run([sys.executable, "-c", script], check=True)


def _patched(block):
    """The sweep block at the ci preset with one seed (the quick preset takes minutes)."""
    patched = block.replace('preset="quick", seeds=range(8)', 'preset="ci", seeds=range(1)')
    assert patched != block, "the README's sweep block changed: update this test's patch"
    return patched


@pytest.mark.slow
def test_readme_sweep_block_runs_at_ci_preset(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    exec(compile(_patched(_section_block("Reproducing the paper")), "README: Reproducing the paper", "exec"),
         namespace)
    assert len(namespace["runs"]) > 0
    assert (tmp_path / "results.db").exists()
