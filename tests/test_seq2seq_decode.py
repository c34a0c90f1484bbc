"""Autoregressive decoding: the key/value cache against full recomputation (the reference path,
the official autoregressive_answer's semantics), and the accuracies built on it."""

from __future__ import annotations

import numpy as np
import pytest

import sensiformer as sf
from sensiformer.tests._support import randomize


def random_model(seed=0, scale=0.4, **kwargs):
    kwargs.setdefault("dtype", "float64")
    return randomize(sf.Seq2SeqTransformer(**kwargs), seed, scale)


CASES = [
    dict(n_positions=8, d_model=8, n_heads=2, n_layers=2, norm="post"),
    dict(n_positions=8, d_model=12, n_heads=3, n_layers=1, n_decoder_layers=3, norm="pre", activation="gelu"),
    dict(n_positions=13, d_model=16, n_heads=4, n_layers=3, n_decoder_layers=1, d_ff=20, activation="gelu_tanh"),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['norm'] if 'norm' in c else 'post'}-d{c['d_model']}")
def test_cache_gives_the_tokens_of_full_recomputation(case, dtype):
    model = random_model(seed=case["d_model"], dtype=dtype, **case)
    n = case["n_positions"]
    x = np.random.default_rng(2).integers(0, 2, size=(33, n), dtype=np.uint8)
    # a threshold at the median output, so that both tokens are fed back (a random model's outputs
    # need not straddle 0.5)
    threshold = float(np.median(model.generate(x, steps=n, return_outputs=True)[1]))
    for steps in (1, n, n + 1):
        cached, out_c = model.generate(x, steps=steps, threshold=threshold, return_outputs=True)
        full, out_f = model.generate(x, steps=steps, threshold=threshold, cache=False, return_outputs=True)
        assert cached.shape == (33, steps) and cached.dtype == np.uint8
        np.testing.assert_array_equal(cached, full)
        tol = 1e-12 if dtype == "float64" else 1e-4
        np.testing.assert_allclose(out_c, out_f, rtol=0, atol=tol * max(1.0, np.abs(out_f).max()))
        if steps > 1:
            assert 0 < cached[:, :-1].mean() < 1  # both tokens are fed back


def test_shorter_encoder_input_than_n_positions():
    model = random_model(n_positions=10, d_model=8)
    x = np.random.default_rng(0).integers(0, 2, size=(5, 4), dtype=np.uint8)
    np.testing.assert_array_equal(model.generate(x, steps=7), model.generate(x, steps=7, cache=False))


def test_generated_outputs_are_the_teacher_forced_outputs_of_the_generated_tokens():
    """Decoding is the forward on [SOS, tokens]: output t seen by the causal decoder."""
    model = random_model(n_positions=9, d_model=8)
    x = np.random.default_rng(3).integers(0, 2, size=(7, 9), dtype=np.uint8)
    tokens, outputs = model.generate(x, return_outputs=True)
    forced = model.forward(x, model.teacher_forcing(tokens))[:, :-1]
    np.testing.assert_allclose(outputs, forced, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(tokens, forced > 0.5)


def test_threshold_and_thread_counts():
    model = random_model(n_positions=8, d_model=8)
    x = np.random.default_rng(4).integers(0, 2, size=(300, 8), dtype=np.uint8)
    one = model.generate(x, threshold=0.1, return_outputs=True, n_threads=1)
    two = model.generate(x, threshold=0.1, return_outputs=True, n_threads=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])  # the same bits for any thread count
    np.testing.assert_array_equal(one[0][:, 0], one[1][:, 0] > 0.1)


def test_autoregressive_accuracy_per_token_and_per_sequence():
    model = random_model(n_positions=6, d_model=8)
    x = np.random.default_rng(5).integers(0, 2, size=(40, 6), dtype=np.uint8)
    tokens = model.generate(x)
    perfect = model.autoregressive_accuracy(x, tokens)
    assert perfect == dict(token=1.0, sequence=1.0)
    y = tokens.astype(np.float64).copy()
    y[0, 3] = 1 - y[0, 3]  # one wrong token in one row
    got = sf.probes.autoregressive_accuracy(model, x, y)
    assert got["token"] == pytest.approx(1 - 1 / y.size) and got["sequence"] == pytest.approx(39 / 40)
    assert model.autoregressive_accuracy(x, 2 * y - 1, threshold=0.0)["sequence"] <= 1.0


DECODE_CHILD = """
import sys, time
import numpy as np
import sensiformer as sf
model = sf.Seq2SeqTransformer(256, d_model=32)
x = np.random.default_rng(0).integers(0, 2, size=(64, 256), dtype=np.uint8)
print("started", flush=True)
t0 = time.monotonic()
try:
    model.generate(x, cache=sys.argv[1] == "cache", n_threads=1)  # tens of seconds without the cache
    print("finished", flush=True)
except KeyboardInterrupt:
    print(f"interrupted {time.monotonic() - t0:.2f}", flush=True)
    print("usable", model.generate(x[:2, :4], steps=3).shape == (2, 3), flush=True)
"""


def test_ctrl_c_stops_decoding_quickly():
    """SIGINT inside the C decoding loop (the slow reference path) returns within a second or two
    as KeyboardInterrupt, and the model stays usable."""
    import select
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", DECODE_CHILD, "full"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready and proc.stdout.readline().strip() == "started"
        time.sleep(1.5)
        assert proc.poll() is None, "decoding ended before the signal"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = out.split("\n")
    assert lines[0].startswith("interrupted"), (out, err)
    assert lines[1] == "usable True", (out, err)
    assert elapsed < 5, f"took {elapsed:.1f} s to stop"
