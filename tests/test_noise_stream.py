"""The sharpness probe's own Gaussian noise against an independent NumPy reference of its stream.

The engine draws its normals a block at a time with its own vectorisable log and sincos
(csrc/rng.h); this reference rebuilds the stream from its definition — splitmix64 keys per
(seed, draw, tensor), Box-Muller on two 53-bit uniforms per pair of elements — with NumPy's
libm. Explicit noise equal to the reference must give the probe's own values.
"""

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import probes

M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
STREAM_NOISE = 4


def mix64(z):
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def key(seed, stream, a):
    return mix64(mix64(mix64(np.uint64(seed)) ^ np.uint64(stream)) ^ np.uint64(a))


def rand64(k, counter):
    return mix64(np.uint64(k) ^ mix64(counter))


def normals(k, size):
    """The first `size` elements of a tensor's stream: pair j gives elements 2j (cos) and 2j+1 (sin)."""
    pairs = np.arange((size + 1) // 2, dtype=np.uint64)
    u1 = ((rand64(k, 2 * pairs) >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53
    u2 = (rand64(k, 2 * pairs + np.uint64(1)) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    r, a = np.sqrt(-2.0 * np.log(u1)), 2 * np.pi * u2
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1).reshape(-1)[:size]


def reference_noise(model, seed, repeats):
    z = np.zeros((repeats, model.num_parameters))
    for r in range(repeats):
        draw = key(seed, STREAM_NOISE, r)
        for t, info in enumerate(model.tensor_info):
            lo = info["offset"]
            z[r, lo:lo + info["size"]] = normals(rand64(draw, np.uint64(t)), info["size"])
    return z


@pytest.mark.parametrize("seed", [0, 12345678901234])
def test_the_probes_noise_is_its_defined_stream(seed):
    # odd-sized tensors (d_ff = 13) end on half a pair; float64 shows the noise to ~1e-15
    model = sf.Transformer(n_positions=9, d_model=16, n_heads=2, n_layers=2, d_ff=13, dtype="float64", seed=3)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(40, 9))
    y = rng.integers(0, 2, size=40).astype(float)
    repeats, sigma = 3, 0.05
    own = probes.sharpness(model, x, y, sigma=sigma, repeats=repeats, seed=seed, paper_compatible=True)
    ref = probes.sharpness(model, x, y, sigma=sigma, repeats=repeats, noise=reference_noise(model, seed, repeats))
    assert np.all(own.samples != 0)
    np.testing.assert_allclose(own.samples, ref.samples, rtol=1e-11, atol=0)


def test_the_reference_stream_is_standard_normal():
    z = normals(key(7, STREAM_NOISE, 0), 200_001)
    assert abs(z.mean()) < 0.01 and abs(z.var() - 1) < 0.01 and abs(np.mean(z ** 4) - 3) < 0.05
