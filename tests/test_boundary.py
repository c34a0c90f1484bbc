"""The one boundary between Python and the C engine: ``sensiformer._native`` is the only module that
imports ``_engine``; it exposes all of it; the engine's functions of more than one argument take keywords
only, and name the argument they refuse."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import _engine, _native

PACKAGE = Path(sf.__file__).parent
# the functions of one argument (or none), called positionally: f(x) is unambiguous
SINGLE_ARGUMENT = {"vocabulary", "build_info", "select_cpu_path", "set_default_threads", "resolve_threads",
                   "set_memory_limit", "seq2seq_ln_counts"}


def _imports_engine(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and any(a.name == "_engine" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("_engine"):
            return True
        if isinstance(node, ast.Import) and any(a.name.endswith("._engine") for a in node.names):
            return True
    return False


def test_only_the_native_module_imports_the_engine():
    importers = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if _imports_engine(p))
    assert importers == ["_native.py"]


def test_the_native_module_exposes_the_whole_engine():
    public = {name for name in dir(_engine) if not name.startswith("_")}
    assert {name for name in public if getattr(_native, name, None) is not getattr(_engine, name)} == set()


def _functions():
    return sorted(n for n in dir(_engine) if not n.startswith("_") and callable(getattr(_engine, n))
                  and not isinstance(getattr(_engine, n), type))


@pytest.mark.parametrize("name", _functions())
def test_engine_functions_of_several_arguments_take_keywords_only(name):
    with pytest.raises(TypeError) as err:
        getattr(_engine, name)(0, 0)
    if name in SINGLE_ARGUMENT:
        assert "keyword arguments only" not in str(err.value)
    else:
        assert str(err.value) == f"{name}() takes keyword arguments only"


def test_the_engine_types_and_methods_take_keywords_only():
    model = sf.Transformer(4, d_model=8)
    for call in (lambda: _engine.Model(4, 8), lambda: _engine.Optimizer(model._engine),
                 lambda: model._engine.reinit(0, True), lambda: sf.SGD(lr=0.1).bind(model)._bound().step(1)):
        with pytest.raises(TypeError, match="takes keyword arguments only"):
            call()


def test_missing_unknown_and_bad_keywords_are_named():
    model = sf.Transformer(4, d_model=8)
    x = np.zeros((2, 4), np.uint8)
    with pytest.raises(TypeError, match=r"forward\(\) missing required argument 'n_threads'"):
        _native.forward(model=model._engine, x=x)
    with pytest.raises(TypeError, match=r"forward\(\) got an unexpected keyword argument 'threads'"):
        _native.forward(model=model._engine, x=x, n_threads=1, threads=1)
    with pytest.raises(TypeError, match="n_threads must be an integer, got 1.5"):
        _native.forward(model=model._engine, x=x, n_threads=1.5)
    with pytest.raises(ValueError, match=r"n_threads must be in \[-2147483648, 2147483647\], got 4294967296"):
        _native.forward(model=model._engine, x=x, n_threads=2**32)
    with pytest.raises(TypeError, match="model must be an engine Model, got 3"):
        _native.forward(model=3, x=x, n_threads=1)
    with pytest.raises(TypeError, match="x must have dtype uint8, got int64"):
        _native.forward(model=model._engine, x=x.astype(np.int64), n_threads=1)
    with pytest.raises(ValueError, match="seed must be in"):
        model._engine.reinit(seed=-1, identical_layers=True)
    with pytest.raises(ValueError, match="record must be writeable"):
        record = np.zeros((4, 1))
        record.flags.writeable = False
        _native.train(model=model._engine, optimizer=sf.SGD(lr=0.1).bind(model)._bound(), target=(0, 4, None),
                      sampler=(0, None, None, None), loss=0, pm1=False, batch_size=2, seq_len=4, seed=0,
                      threshold=0.5, first_step=0, n_steps=1, n_threads=1, record=record,
                      done=np.zeros(1, np.int64))
    # None for an optional argument is the same as leaving it out
    assert np.array_equal(_native.forward(model=model._engine, x=x, decoder_input=None, n_threads=1),
                          _native.forward(model=model._engine, x=x, n_threads=1))
