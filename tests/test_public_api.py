"""The public API's calling convention, as scikit-learn's: data positionally, every option keyword-only
(``sf.probes.sharpness(model, x, y, sigma=0.02)``), so options can be added and reordered without breaking
anyone's call."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import sensiformer as sf

# defaulted parameters that are data, not options: they stay positional
DATA = {
    "sensiformer.trainer.Trainer": {"target"},
    "sensiformer.trainer.Trainer.sample_batch": {"step"},
    "sensiformer.trainer.Callback": {"fn"},
    "sensiformer.measure.Measure": {"x", "y"},
    "sensiformer.cli.main": {"argv"},
    "sensiformer.sweep.run": {"store"},
    "sensiformer.sweep.store.Store.history": {"keys"},
    **{f"sensiformer.experiments.{name}.{name}": {"preset"}  # an experiment's preset is what it runs
       for name in ("scaling", "dynamics", "generalization", "init_sensitivity", "length_generalization",
                    "scratchpad", "spectrum", "tradeoff")},
}
# the sweep's own plumbing (its executors, progress reporting and run pipeline), not called by users
INTERNAL = {"sensiformer.sweep.executors", "sensiformer.sweep.progress", "sensiformer.sweep.runner",
            "sensiformer.sweep.probe_config.coerce_fields", "sensiformer.sweep.store.Store.add_members",
            "sensiformer.sweep.store.Store.add_failure"}


def _modules():
    names = ["sensiformer"] + [f"sensiformer.{m.name}" for m in pkgutil.iter_modules(sf.__path__)
                               if not m.name.startswith("_") and m.name != "tests"]
    for package in ("experiments", "sweep"):
        path = importlib.import_module(f"sensiformer.{package}").__path__
        names += [f"sensiformer.{package}.{m.name}" for m in pkgutil.iter_modules(path) if not m.name.startswith("_")]
    return [importlib.import_module(name) for name in names if name not in INTERNAL]


def _public_callables():
    seen = set()
    for module in _modules():
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__ or id(obj) in seen:
                continue
            seen.add(id(obj))
            qualname = f"{module.__name__}.{name}"
            if inspect.isclass(obj):
                if hasattr(obj, "__dataclass_fields__"):  # configs: built by keyword, compared by value
                    continue
                yield qualname, obj
                for attr, member in vars(obj).items():
                    if not attr.startswith("_") and inspect.isfunction(member):
                        yield f"{qualname}.{attr}", member
            elif callable(obj):
                yield qualname, obj


def test_options_are_keyword_only():
    positional_options = {}
    for qualname, fn in _public_callables():
        if qualname in INTERNAL:
            continue
        try:
            parameters = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            continue
        options = [p.name for p in parameters if p.kind == p.POSITIONAL_OR_KEYWORD and p.default is not p.empty
                   and p.name not in DATA.get(qualname, ())]
        if options:
            positional_options[qualname] = options
    assert positional_options == {}


def test_the_check_sees_the_api():
    names = {q for q, _ in _public_callables()}
    assert {"sensiformer.probes.sharpness", "sensiformer.model.Transformer", "sensiformer.analysis.fourier",
            "sensiformer.sweep.run", "sensiformer.plot.slopes", "sensiformer.trainer.Trainer.fit"} <= names
