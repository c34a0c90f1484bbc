"""One CPU path per process for every kernel of the engine (SENSIFORMER_CPU_PATH), reported by
show_config, and what each path promises: x86-64-v3 and x86-64-v4 train to the same bits as the
engine did before the paths were separate builds (fingerprints recorded from that build), and the
portable baseline agrees with them to rounding. Each path runs in its own interpreter, since the
path is chosen when the engine loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import sensiformer as sf

RUNNABLE = sf.show_config(print_out=False)["cpu_paths"]

# Training runs (25 AdamW steps, 2 threads) hashed by their final parameters; the encoder model's recorded
# at ca1e7bc, when the vector kernels were function clones of one build. Post/pre/no LayerNorm, both dtypes,
# narrow heads (d=4), the tabled wide heads of the paper shape, and the seq2seq model (re-recorded when its
# encoder became the shared encoder stack: a rounding-level change, sums in another order).
FINGERPRINTS = {
    ("enc", 12, 64, 2, "post", "float32", 64): "959b55955ed57e20",
    ("enc", 12, 64, 2, "post", "float64", 64): "06e0a5f5b17e881a",
    ("enc", 10, 32, 2, "pre", "float32", 33): "5d56bf7b60aabe58",
    ("enc", 10, 32, 3, "none", "float64", 33): "40bad33c3a84f710",
    ("enc", 24, 4, 2, "post", "float32", 40): "aec2f57b7f894d82",
    ("enc", 20, 128, 2, "post", "float32", 128): "eb5d066310b2c1bc",
    ("s2s", 8, 32, 1, "post", "float32", 32): "ed462c0376eb6982",
    ("s2s", 8, 32, 1, "pre", "float64", 32): "b7dd36222eda8e01",
}

TRAIN_SCRIPT = r"""
import hashlib, json, sys
import numpy as np
import sensiformer as sf

def run(kind, n, d, layers, norm, dtype, batch):
    cls, target = (sf.Transformer, sf.targets.Parity(n)) if kind == "enc" else \
        (sf.Seq2SeqTransformer, sf.targets.PrefixParity(n))
    model = cls(n_positions=n, d_model=d, n_heads=2, n_layers=layers, norm=norm, dtype=dtype, seed=3)
    trainer = sf.Trainer(model, target, optimizer=sf.AdamW(lr=1e-3, weight_decay=0.1), batch_size=batch, seed=7,
                         n_threads=2)
    # the gradient of the initial model on a fixed batch, for comparisons between paths
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(batch, n), dtype=np.uint8)
    y = target(x).astype(np.float64)
    loss, grads = model.loss_and_grad(x, y)
    gradient = np.concatenate([g.ravel() for g in grads.values()]).tolist()
    trainer.fit(25, progress=False)
    return hashlib.sha256(np.ascontiguousarray(model.flat).tobytes()).hexdigest()[:16], [loss] + gradient

configs = json.loads(sys.argv[1])
out = {"cpu_path": sf.show_config(print_out=False)["cpu_path"], "runs": [run(*c) for c in configs]}
print(json.dumps(out))
"""


def run_on_path(path, code, *args, check=True):
    env = dict(os.environ, SENSIFORMER_CPU_PATH=path)
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def train_on_path(path):
    proc = run_on_path(path, TRAIN_SCRIPT, json.dumps([list(c) for c in FINGERPRINTS]))
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["cpu_path"] == path
    return out["runs"]


def test_every_build_has_the_baseline_and_show_config_reports_the_path():
    config = sf.show_config(print_out=False)
    assert "baseline" in RUNNABLE and config["cpu_path"] in RUNNABLE
    assert config["vector_bits"] in (128, 256, 512) and config["widest_vector_bits"] >= config["vector_bits"]


def test_the_peak_is_measured_at_the_widest_vector_width_and_says_so():
    config = sf.show_config(print_out=False, peak=True)
    assert config["peak_vector_bits"] == config["widest_vector_bits"] >= config["vector_bits"]
    assert config["peak_gflops_fp32"] > config["peak_gflops_fp64"] > 0


def test_auto_takes_the_widest_path_that_proves_itself_faster():
    """x86-64-v4 only where its GEMM measured at least 5% faster than x86-64-v3's when the engine loaded."""
    proc = run_on_path("auto", "import json, sensiformer as sf; print(json.dumps(sf.show_config(print_out=False)))")
    config = json.loads(proc.stdout)
    if RUNNABLE[0] == "x86-64-v4":
        assert config["v4_gemm_speedup"] > 0
        assert config["cpu_path"] == ("x86-64-v4" if config["v4_gemm_speedup"] >= 1.05 else "x86-64-v3")
    else:
        assert config["cpu_path"] == RUNNABLE[0] and config["v4_gemm_speedup"] == 0


@pytest.mark.parametrize("path", RUNNABLE)
def test_a_forced_path_runs_every_kernel_of_the_process(path):
    proc = run_on_path(path, "import sensiformer as sf; c = sf.show_config(print_out=False); "
                             "print(c['cpu_path'], c['vector_bits'])")
    name, bits = proc.stdout.split()
    assert name == path and int(bits) == {"baseline": 128, "x86-64-v3": 256, "x86-64-v4": 512}[path]


@pytest.mark.parametrize("path,message", [("avx9000", "unknown CPU path 'avx9000'"),
                                          ("x86-64-v4" if "x86-64-v4" not in RUNNABLE else "x86_64_v9", "")])
def test_a_path_this_cpu_cannot_run_is_refused_at_import(path, message):
    proc = run_on_path(path, "import sensiformer", check=False)
    assert proc.returncode != 0
    assert "ImportError: SENSIFORMER_CPU_PATH:" in proc.stderr and message in proc.stderr


@pytest.mark.parametrize("path", [p for p in ("x86-64-v3", "x86-64-v4") if p in RUNNABLE] or
                         [pytest.param("x86-64-v3", marks=pytest.mark.skip(reason="this CPU runs no vector path"))])
def test_vector_paths_train_to_the_recorded_bits(path):
    runs = train_on_path(path)
    assert [h for h, _ in runs] == list(FINGERPRINTS.values())


def test_the_baseline_agrees_with_the_vector_paths_to_rounding():
    """Losses and gradients of the same model and batch (training itself amplifies roundings)."""
    if len(RUNNABLE) < 2:
        pytest.skip("this CPU runs only the baseline path")
    widest, base = train_on_path(RUNNABLE[0]), train_on_path("baseline")
    for config, (_, a), (_, b) in zip(FINGERPRINTS, widest, base):
        a, b = np.array(a), np.array(b)
        tol = 1e-12 if config[5] == "float64" else 2e-5
        assert np.max(np.abs(a - b)) <= tol * np.max(np.abs(a)), config


# Forward-only outputs, the sharpness probe (its own noise) and Hessian-vector products, hashed: the folded
# layer 0 (wide heads), the pooled last layer's tangents, the vectorised normals. Recorded at d3613c4 and again
# when the pooled tangent backward kept each row's g_p instead of recomputing it (a second loop's recomputation
# had rounded differently).
PROBE_FINGERPRINTS = {
    (12, 32, "post", "float32"): "1bb4f7a15d1b5fb7",
    (12, 32, "pre", "float64"): "19b26ff46100b4d9",
    (9, 8, "post", "float32"): "1f524b40e530aa6c",
}

PROBE_SCRIPT = r"""
import hashlib, json, sys
import numpy as np
import sensiformer as sf

def run(n, d, norm, dtype):
    model = sf.Transformer(n_positions=n, d_model=d, n_heads=2, n_layers=2, norm=norm, dtype=dtype, seed=3)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, size=(48, n), dtype=np.uint8)
    y = sf.targets.Parity(n)(x).astype(dtype)
    v = rng.normal(size=model.num_parameters).astype(dtype)
    parts = [model.forward(x, n_threads=2), sf.probes.sharpness(model, x, y, repeats=3, seed=5, n_threads=2).samples,
             sf.probes.hvp(model, x, y, v, n_threads=2)]
    return hashlib.sha256(b"".join(np.ascontiguousarray(p).tobytes() for p in parts)).hexdigest()[:16]

configs = json.loads(sys.argv[1])
print(json.dumps({"cpu_path": sf.show_config(print_out=False)["cpu_path"], "hashes": [run(*c) for c in configs]}))
"""


@pytest.mark.parametrize("path", [p for p in ("x86-64-v3", "x86-64-v4") if p in RUNNABLE] or
                         [pytest.param("x86-64-v3", marks=pytest.mark.skip(reason="this CPU runs no vector path"))])
def test_vector_paths_probe_to_the_recorded_bits(path):
    proc = run_on_path(path, PROBE_SCRIPT, json.dumps([list(c) for c in PROBE_FINGERPRINTS]))
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["cpu_path"] == path
    assert out["hashes"] == list(PROBE_FINGERPRINTS.values())
