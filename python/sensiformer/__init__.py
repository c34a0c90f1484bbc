"""sensiformer: train small transformers on Boolean functions in a C engine, and probe
why sensitive functions are hard for them (Hahn & Rofin, ACL 2024).

Quick start::

    import sensiformer as sf
    model = sf.Transformer(n_positions=10, d_model=64)
    trainer = sf.Trainer(model, sf.targets.Parity(10))
    history = trainer.fit(2000)
"""

__version__ = "0.1.0"

import os as _os

# Before the engine loads libgomp: how its idle threads wait between parallel regions. libgomp's
# own default (spin up to 300,000 times, then sleep) burns whole scheduler slices when the machine
# is busy (2-thread steps measured 2-10x slower under load); sleeping at once (passive) costs a
# wake-up per region, 6-11% of a training step on an idle machine. A short spin keeps both: with
# 2 or 4 busy processes on 2 cores it measured within noise of passive, idle as fast as the long
# spin (libgomp still cuts it to 100 when it has more threads than CPUs). A wait policy or spin
# count of the user's own wins.
_OMP_ENV_SET = {}  # what this import set, for tools that load a second OpenMP runtime (benchmarks/harness.py)
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["GOMP_SPINCOUNT"] = _OMP_ENV_SET["GOMP_SPINCOUNT"] = "3000"
# what the engine's libgomp reads when it loads (below), for show_config
_OMP_ENV = {key: _os.environ.get(key, "") for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}

from . import metrics, probes, targets
from . import analysis
from ._config import get_num_threads, set_memory_limit, set_num_threads, show_config
from .checkpoint import Checkpoint, CheckpointError
from .estimate import Estimate
from .measure import Measure
from .model import NonFiniteParametersError, Transformer, load
from .seq2seq import Seq2SeqTransformer
from .optim import SGD, Adam, AdamW, Optimizer
from .targets import restricted_subset
from .trainer import Callback, DivergenceError, Trainer
from ._selftest import test

# Submodules that import heavy optional dependencies load on first attribute access
# (``sf.interop`` needs torch only when used), so ``import sensiformer`` stays light.
_LAZY_SUBMODULES = ("interop",)


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))  # tab completion lists sf.interop too


__all__ = [
    "Adam", "AdamW", "Callback", "Checkpoint", "CheckpointError", "DivergenceError", "Estimate", "Measure", "NonFiniteParametersError", "Optimizer", "SGD", "Seq2SeqTransformer", "Trainer", "Transformer",
    "get_num_threads", "interop", "load", "metrics", "probes", "restricted_subset", "set_memory_limit", "set_num_threads", "show_config", "targets", "test",
]
