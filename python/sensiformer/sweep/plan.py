"""A sweep in named stages, the other thing ``sweep.run`` executes besides a list of configurations.

Experiments (``sensiformer.experiments``) are staged sweeps: a stage builds its configurations,
possibly from the results of earlier stages in the store (generalization's refits), and every
stage's runs are stored under the plan's name for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class Stage:
    """One sweep of a plan. ``build(store)`` returns its configurations; stages that depend on
    earlier results read them from the store (``needs_store``)."""

    name: str
    build: Callable
    needs_store: bool = False


class StagedSweep:
    """Stages run in order by ``sweep.run``; subclasses hold ``stages`` and name each stage's sweep."""

    stages: list

    def stage_sweep(self, stage: Stage | str) -> str:
        """The store's sweep name for a stage's runs."""
        raise NotImplementedError
