"""The machinery shared by every experiment: presets, overrides, stages, sweep names."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..sweep.config import RunConfig, flatten, grouped
from ..sweep.plan import Stage, StagedSweep

PRESETS = ("ci", "quick", "paper")

#: The paper's model, training and probe settings: RunConfig's defaults (sweep/config.py and its probe groups in
#: sweep/probe_config.py are the one place they are written), the base of every experiment's paper preset.
PAPER = {name: value for name, value in flatten(RunConfig()).items()
         if name in ("d_model", "n_heads", "n_layers", "batch_size", "lr", "weight_decay", "steps", "log_every",
                       "eval_batches", "measure_batches", "sharpness_sigma", "sharpness_repeats", "dtype",
                       "blowup_definition")}

#: RunConfig settings (flat names: an experiment's parameters) an experiment passes through unchanged.
RUN_FIELDS = ("d_model", "n_heads", "n_layers", "d_ff", "norm", "norm_type", "rope_base", "ln_eps", "dtype", "lr",
              "weight_decay", "batch_size", "steps", "log_every", "eval_batches", "measure", "measure_batches",
              "sharpness_sigma", "sharpness_repeats", "sharpness_seed", "blowup_definition", "dynamic_every",
              "dynamic_batches", "dynamic_repeats", "spectrum_samples")


def resolve(name: str, presets: dict, preset: str, overrides: dict) -> tuple[dict, dict]:
    """The parameters of ``preset`` with ``overrides`` applied; also the overrides that differ."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    params = dict(presets[preset])
    unknown = sorted(set(overrides) - set(params))
    if unknown:
        raise TypeError(f"{name}() got unknown parameter(s) {unknown}; its parameters are {sorted(params)}")
    changed = {}
    for k, v in overrides.items():
        if isinstance(v, range) or isinstance(v, (list, np.ndarray)):
            v = tuple(v.tolist() if isinstance(v, np.ndarray) else v)
        if isinstance(params[k], tuple) and not isinstance(v, tuple):
            v = (v,)  # one value of a grid axis: lengths=64 means lengths=(64,)
        if v != params[k]:
            changed[k] = v
        params[k] = v
    return params, changed


def _brief(value, width=24) -> str:
    """A parameter value short enough for a figure's title."""
    text = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def run_fields(params: dict) -> dict:
    """RunConfig's keyword arguments from an experiment's parameters (``RUN_FIELDS``, flat names): the model and
    training settings, and the probe groups they set (``sweep.config.grouped``: the group's defaults for the rest)."""
    return grouped({k: params[k] for k in RUN_FIELDS if k in params})


def _jsonable(v):
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


@dataclass
class Experiment(StagedSweep):
    """A reproducible experiment: named parameters, the sweeps (stages) they define, and how
    to read, summarise and plot the results.

    Use ``configs()`` to inspect the runs, ``run(store=...)`` (or ``sensiformer.sweep.run``)
    to execute them (finished runs are skipped), ``results(store)`` for the DataFrame the
    figures use, ``report(store)`` for the printed summary and ``plot(store)`` for the figure.
    """

    name: str
    preset: str
    params: dict
    overrides: dict
    stages: list
    figures: str = ""
    variant: str | None = None
    _plot: Callable | None = field(default=None, repr=False)
    _report: Callable | None = field(default=None, repr=False)
    _results: Callable | None = field(default=None, repr=False)

    @property
    def sweep(self) -> str:
        """The store's name for this experiment's runs: ``name[-variant]/preset[+overrides]``."""
        base = self.name + (f"-{self.variant}" if self.variant else "") + "/" + self.preset
        if self.overrides:
            text = json.dumps(_jsonable(self.overrides), sort_keys=True)
            base += "+" + hashlib.sha256(text.encode()).hexdigest()[:8]
        return base

    @property
    def title(self) -> str:
        """The heading of this experiment's figures: name, variant, preset, overridden parameters."""
        name = self.name + (f" ({self.variant})" if self.variant else "")
        changed = ", ".join(f"{k}={_brief(v)}" for k, v in sorted(self.overrides.items()))
        return f"{name}, preset {self.preset}" + (f" with {changed}" if changed else "") + \
            (f" ({self.figures})" if self.figures else "")

    def stage_sweep(self, stage) -> str:
        name = stage.name if isinstance(stage, Stage) else stage
        return self.sweep if len(self.stages) == 1 else f"{self.sweep}:{name}"

    def stage(self, name) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"{self.name} has no stage {name!r}; stages: {[s.name for s in self.stages]}")

    def configs(self, *, store=None) -> list[RunConfig]:
        """Configurations of every stage that can be built now (later stages need ``store``)."""
        out = []
        for s in self.stages:
            if s.needs_store and store is None:
                continue
            out.extend(s.build(store))
        return out

    def run(self, *, store="results.db", executor=None, **kwargs):
        """Run every stage (skipping finished runs); returns the Store."""
        from .. import sweep

        return sweep.run(self, store=store, executor=executor, **kwargs)

    def results(self, store):
        """The runs the figures use, as a DataFrame (one row per run asked for)."""
        from ..sweep import Store

        store = store if isinstance(store, Store) else Store(store)
        if self._results is not None:
            return self._results(self, store)
        return store.runs(sweep=self.stage_sweep(self.stages[-1]))

    def history(self, store):
        from ..sweep import Store

        store = store if isinstance(store, Store) else Store(store)
        return store.history(sweep=self.stage_sweep(self.stages[-1]))

    def report(self, store) -> str:
        """A printable summary (slopes with confidence intervals, converged-run counts, ...)."""
        if self._report is None:
            df = self.results(store)
            return f"{self.sweep}: {len(df)} finished runs"
        return self._report(self, store)

    def plot(self, store, *, path=None, **kwargs):
        """Draw this experiment's figure(s), captioned with ``title`` (pass ``title=`` to change
        it) and with the run filter and band; saves to ``path`` if given. Returns the Figure."""
        if self._plot is None:
            raise NotImplementedError(f"{self.name} has no figure")
        fig = self._plot(self, store, **{"title": self.title, **kwargs})
        if path is not None:
            fig.savefig(path, dpi=150, bbox_inches="tight")
        return fig


def average_sensitivity(tables) -> np.ndarray:
    """Average sensitivity of Boolean functions given as 0/1 truth tables of length 2^n
    (index order, x_1 the most significant bit): 2^-n sum_x #{i : g(x) != g(x xor e_i)}.

    ``tables`` is (2^n,) or (k, 2^n); returns a float or an array of k values. Equals the
    official ``fast_average_sensitivity`` (the Fourier form sum_S |S| f^(S)^2 on ±1 values).
    Computed exactly by ``sensiformer.analysis.average_sensitivity`` (C, bit-packed flips).
    """
    from .. import analysis

    t = np.asarray(tables, dtype=np.float64)
    if t.ndim == 1:
        return analysis.average_sensitivity(t)
    return np.array([analysis.average_sensitivity(row) for row in np.atleast_2d(t)])
