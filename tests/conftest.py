"""Shared fixtures. Tests use only the public API (plus sensiformer.interop for PyTorch)."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TQDM_DISABLE", "1")

if "sf_fuzz_runner" not in sys.modules:
    # the fuzz modules import their runner as sf_fuzz_runner, the name their child interpreter gives it
    _spec = importlib.util.spec_from_file_location("sf_fuzz_runner", Path(__file__).with_name("test_fuzz_runner.py"))
    sys.modules["sf_fuzz_runner"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["sf_fuzz_runner"])


class _ReferenceModules:
    """Lets a test file ``import test_hvp`` (and the other PyTorch references that the tests of model
    options reuse): pytest imports test files with --import-mode=importlib, so they cannot import each
    other. Loaded on first import only, so nothing is added to start-up."""

    names = ("test_hvp", "test_seq2seq_hessian", "test_seq2seq_torch", "test_torch_equivalence")

    def find_spec(self, name, path=None, target=None):
        if name in self.names:
            return importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        return None


sys.meta_path.append(_ReferenceModules())

try:
    from hypothesis import settings

    settings.register_profile("ci", max_examples=200, deadline=None)
    settings.register_profile("dev", max_examples=50, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
except ImportError:  # pragma: no cover
    pass


# every parameter random, LayerNorm gains near 1: the shipped suite's helper (one definition)
from sensiformer.tests._support import randomize  # noqa: E402


@pytest.fixture
def random_model():
    """Factory: ``random_model(seed=..., **Transformer kwargs)`` -> randomised Transformer."""
    import sensiformer as sf

    def make(seed=0, scale=0.5, **kwargs):
        kwargs.setdefault("dtype", "float64")
        return randomize(sf.Transformer(**kwargs), seed=seed, scale=scale)

    return make


@pytest.fixture
def single_thread():
    """Tiny models gain nothing from threads, and on an oversubscribed machine every OpenMP barrier
    can cost milliseconds: modules that use this run single-threaded unless a test asks for threads."""
    import sensiformer as sf

    sf.set_num_threads(1)
    yield
    sf.set_num_threads(None)


@pytest.fixture
def torch():
    """PyTorch, which the test extra installs. CI sets SENSIFORMER_REQUIRE_TORCH=1 so that a
    missing torch fails the run instead of skipping the comparisons."""
    if os.environ.get("SENSIFORMER_REQUIRE_TORCH") == "1":
        import torch
    else:
        torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def pytest_sessionstart(session):
    """Under .ci/sanitize.sh, make sure the sanitized build is the one under test."""
    expected = os.environ.get("SENSIFORMER_EXPECT_PATH")
    if expected:
        import sensiformer

        assert os.path.realpath(sensiformer.__file__).startswith(os.path.realpath(expected)), sensiformer.__file__
