"""The one door to the C engine (``sensiformer._engine``, built from csrc/py_*.c): no other module imports it.

Its functions check what they are given as the engine needs it (dtypes, dimensions, contiguity, matching
rows) and raise TypeError/ValueError naming the argument; the friendly, user-facing validation happens
before, in the module that calls them. Every function of more than one argument takes keywords only::

    out = _native.forward(model=engine_model, x=x, decoder_input=None, n_threads=2)

The model operations (``forward``, ``loss_and_grad``, ``sharpness``, ``hvp``, ``ln_blowup``,
``attention_logits``) serve both model kinds: passing ``decoder_input`` is what makes a call the seq2seq
model's. Long calls release the GIL and run Python's signal handlers while they work, so Ctrl-C stops
them cleanly; one call at a time may use a model (another raises RuntimeError).
"""

from __future__ import annotations

try:
    from . import _engine
except ModuleNotFoundError as e:  # pragma: no cover - a broken install, not a code path
    if e.name != f"{__package__}._engine":
        raise
    raise ImportError("sensiformer's C engine (sensiformer._engine) is not built in this installation; reinstall "
                      "with `pip install .` (or `python setup.py build_ext --inplace` in a source checkout)") from e

# the engine objects
Model = _engine.Model
Optimizer = _engine.Optimizer

# model operations, both kinds
forward = _engine.forward
loss_and_grad = _engine.loss_and_grad
generate = _engine.generate
seq2seq_ln_counts = _engine.seq2seq_ln_counts

# probes
sharpness = _engine.sharpness
hvp = _engine.hvp
ln_blowup = _engine.ln_blowup
attention_logits = _engine.attention_logits

# training data and the training loop
train = _engine.train
target_eval = _engine.target_eval
sample_batch = _engine.sample_batch
label_noise = _engine.label_noise

# exact Boolean analysis of truth tables
fwht = _engine.fwht
fourier = _engine.fourier
spectrum = _engine.spectrum
degree_stats = _engine.degree_stats
influences = _engine.influences
point_sensitivity = _engine.point_sensitivity
sensitivity_profile = _engine.sensitivity_profile

# the build, the CPU and process-wide settings
vocabulary = _engine.vocabulary
build_info = _engine.build_info
measure_peak = _engine.measure_peak
set_default_threads = _engine.set_default_threads
resolve_threads = _engine.resolve_threads
set_memory_limit = _engine.set_memory_limit
select_cpu_path = _engine.select_cpu_path  # benchmarks only: users choose with SENSIFORMER_CPU_PATH
kernel_gemm = _engine.kernel_gemm  # tests only: one GEMM on a chosen CPU path
