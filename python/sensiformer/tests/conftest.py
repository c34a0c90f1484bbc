"""Fixtures of the shipped self-test: ``errors`` records each check's largest error for the report."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "cross_path: compares the CPU paths (runs every path in a child process)")
    config.addinivalue_line("markers", "torch: compares against PyTorch")


class ErrorLog:
    """The largest error a test saw, relative to its limit; each ``check`` also asserts it."""

    def __init__(self, store):
        self.store = store  # the dict in the test's user_properties, read by the report

    def check(self, what, error, limit):
        error, limit = float(error), float(limit)
        ratio = error / limit if limit > 0 else (0.0 if error == 0 else float("inf"))
        if not self.store or ratio > self.store["ratio"] or error != error:
            self.store.update(what=what, error=error, limit=limit, ratio=ratio)
        assert error <= limit, f"{what}: error {error:.3g} exceeds the limit {limit:.3g}"

    def equal(self, what, ours, ref):
        """Bitwise equality, recorded as the largest absolute difference against a limit of 0."""
        import numpy as np

        ours, ref = np.asarray(ours), np.asarray(ref)
        assert ours.shape == ref.shape, f"{what}: shapes {ours.shape} and {ref.shape}"
        diff = float(np.max(np.abs(ours.astype(np.float64) - ref.astype(np.float64)), initial=0.0))
        if ours.tobytes() != ref.tobytes() and not diff > 0:
            diff = float("inf")  # only signed zeros or NaNs differ: still not the same bits
        self.check(what, diff, 0.0)


@pytest.fixture
def errors(request):
    store = {}
    request.node.user_properties.append(("max_error", store))
    return ErrorLog(store)


@pytest.fixture
def torch():
    """PyTorch, or a skip with one clear line (SENSIFORMER_REQUIRE_TORCH=1 makes a missing torch fail)."""
    try:
        import torch
    except ImportError:
        if os.environ.get("SENSIFORMER_REQUIRE_TORCH") == "1":
            raise
        pytest.skip("PyTorch is not installed: the comparisons against the official PyTorch models did not run "
                    "(pip install torch to run them)")
    torch.set_num_threads(1)
    return torch


@pytest.fixture(autouse=True)
def one_thread():
    """The models here are tiny: one thread unless a test asks for more (2 busy cores make every
    OpenMP barrier slow); the thread-count tests pass n_threads explicitly."""
    import sensiformer as sf

    sf.set_num_threads(1)
    yield
    sf.set_num_threads(None)
