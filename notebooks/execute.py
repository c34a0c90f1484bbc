"""Execute notebooks in place at a preset and keep their outputs: how the committed copies are made.

    python notebooks/execute.py --preset quick --workdir /tmp/nb notebooks/tutorial.ipynb ...

papermill's convention: the cell tagged "parameters" keeps its defaults (``PRESET = "ci"``, what the
test suite runs), and a cell tagged "injected-parameters" right after it sets this execution's
preset, so a committed notebook says how its outputs were made and reruns the same way.
``tests/test_notebooks.py`` drops that cell and runs every notebook at its default. The notebooks
write their results stores into ``--workdir`` (default: the notebook's own directory); a rerun
skips the runs a store already holds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

INJECTED = "injected-parameters"


def tags(cell) -> list:
    return cell.get("metadata", {}).get("tags", [])


def without_injected(nb):
    """``nb`` with the injected-parameters cell removed: it runs at its defaults."""
    nb.cells = [c for c in nb.cells if INJECTED not in tags(c)]
    return nb


def inject(nb, **params):
    """Replace any injected-parameters cell by one setting ``params``, right after the parameters cell."""
    import nbformat

    nb = without_injected(nb)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in tags(c))
    lines = ["# Parameters of this execution (notebooks/execute.py); delete this cell to run the defaults above"]
    lines += [f"{name} = {value!r}" for name, value in params.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines), metadata={"tags": [INJECTED]})
    nb.cells.insert(index + 1, cell)
    return nb


def execute(path: Path, preset: str, workdir: Path | None, timeout: int) -> float:
    """Run the notebook at ``path`` at ``preset`` and write it back with its outputs; returns seconds."""
    import nbclient
    import nbformat

    nb = inject(nbformat.read(path, as_version=4), PRESET=preset)
    started = time.perf_counter()
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir or path.parent)}})
    client.execute()
    elapsed = time.perf_counter() - started
    nbformat.write(nb, path)
    return elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--preset", choices=("ci", "quick", "paper"), default="quick")
    parser.add_argument("--workdir", type=Path, default=None, help="where the notebooks run and write their stores")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell (default 3600)")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        seconds = execute(path, args.preset, args.workdir, args.timeout)
        print(f"{path}: executed at preset {args.preset} in {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
