"""Execute one ``RunConfig``: train, evaluate, probe; return a plain dict for the store.

This is the only code that runs on workers (local processes or Dask workers). It never
touches the store: the driver writes what it returns.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import socket
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import targets
from .config import CONVERGED_MSE, RunConfig, as_config, hex_to_table, table_to_hex
from .probe_config import LengthEvaluation, ModelSensitivity, Predictions, TrainSharpness
from .progress import RunReporter

# measurement batches come from a stream of their own, far from the training and Measure streams
_FINAL_STREAM = (1 << 62) + 0x00F1_4A15_0000
_EVAL_STREAM = (1 << 62) + 0x00E7_A100_0000
_EXACT_MAX_N = 16
#: the paper's filter for scratchpad runs (paper.md §1.7): per-token autoregressive accuracy above this
CONVERGED_AUTOREGRESSIVE = 0.999


@functools.lru_cache(maxsize=1)
def _git_commit():
    """The git commit of the package source (``+dirty`` when it has local changes): read from the
    checkout for an editable or in-place build, else the one the build recorded in
    ``sensiformer/_build_info.py`` (written when the sdist or wheel is made); None if neither."""
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        return _recorded_commit()
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                "csrc", "python", "setup.py"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def _recorded_commit():
    try:
        from .._build_info import GIT_COMMIT
    except ImportError:
        return None
    return GIT_COMMIT


@functools.lru_cache(maxsize=1)
def _static_provenance():
    import sensiformer as sf

    info = sf.show_config(print_out=False)
    return dict(version=sf.__version__, git_commit=_git_commit(), build=info.get("build_flags"),
                cpu_path=info.get("cpu_path"), openmp=str(info.get("openmp")), python=platform.python_version(),
                numpy=np.__version__)


def provenance(n_threads, seed) -> dict:
    """Where and how a run executed: package version, git commit, engine build and CPU path,
    thread count, seed, and the host and process id of the worker that ran it."""
    prov = dict(_static_provenance())
    prov.update(n_threads=int(n_threads), seed=int(seed), host=socket.gethostname(), pid=os.getpid())
    return prov


class _Table(targets.RandomFunction):
    """A given truth table (e.g. a learned completion) as a training target."""

    def __init__(self, table, n):  # RandomFunction's table machinery with our table
        targets.Target.__init__(self, n)
        self.seed = None
        self.table = np.ascontiguousarray(table, dtype=np.float64)

    def __repr__(self):
        return f"Table(n={self.n})"


def _target(cfg: RunConfig, n=None):
    n = cfg.n if n is None else n
    if cfg.target == "random":
        return targets.RandomFunction(n, seed=cfg.target_seed)
    if cfg.target == "table":
        return _Table(hex_to_table(cfg.target_table, n), n)
    if cfg.target == "sparse_parity":
        return targets.SparseParity(n, cfg.target_bits)
    return {"parity": targets.Parity, "majority": targets.Majority, "first": targets.First,
            "mean": targets.Mean}[cfg.target](n)


def _initialise(model, scheme, seed):
    """Overwrite the PyTorch init with one of the follow-up paper's schemes (see RunConfig)."""
    if scheme == "pytorch":
        return
    rng = np.random.default_rng([seed, 0x1A17])
    for t, view in zip(model.tensor_info, model.parameters().values()):
        if t["kind"] in ("norm_weight", "norm_bias"):
            continue
        if t["kind"] == "bias":
            view[...] = 0.0
            continue
        shape = view.shape
        fan_out, fan_in = (shape[0], shape[1]) if len(shape) == 2 else (1, shape[0])
        if scheme == "gaussian":
            values = rng.normal(0.0, 1.0, shape)
        elif scheme == "uniform":
            values = rng.uniform(-1.0, 1.0, shape)
        elif scheme == "xavier_uniform":
            a = np.sqrt(6.0 / (fan_in + fan_out))
            values = rng.uniform(-a, a, shape)
        else:  # xavier_normal
            values = rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), shape)
        view[...] = values


def _finite(x):
    return float(x) if x is not None and math.isfinite(float(x)) else float("nan")


def _evaluate(trainer, cfg, n_threads):
    """Exact over all inputs (or the training subset) when n <= 16, else fresh batches."""
    exact = trainer.train_subset is not None or trainer.seq_len <= _EXACT_MAX_N
    if exact:
        res = trainer.evaluate(exact=True)
    else:
        res = trainer.evaluate(batches=cfg.eval_batches, exact=False, seed=cfg.seed)
    out = dict(eval_loss=_finite(res["loss"]), eval_accuracy=_finite(res["accuracy"]),
               eval_inputs=int(res["n_inputs"]), eval_exact=bool(exact))
    if "autoregressive_accuracy" in res:  # a scratchpad model: its decoding too
        out.update(eval_autoregressive_accuracy=_finite(res["autoregressive_accuracy"]),
                   eval_sequence_accuracy=_finite(res["sequence_accuracy"]))
    return out


def _measurement_data(trainer, batches):
    """The final measurement's batches: uniform over all inputs even for a run trained on a subset, as the
    official final measurement samples them."""
    pairs = [trainer.sample_batch(step=_FINAL_STREAM + k, uniform=True) for k in range(batches)]
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def _final_probes(model, trainer, cfg, n_threads):
    """The final measurement: ``cfg.final``'s metrics (the metric registry, as ``Measure``)."""
    from ..metrics import Settings, measure

    final, shared = cfg.final, cfg.probe_settings
    x, y = _measurement_data(trainer, final.batches)
    if trainer.labels == "pm1":
        y = 2 * y - 1
    settings = Settings(batch_size=trainer.batch_size, n_threads=n_threads, sigma=shared.sharpness_sigma,
                        repeats=final.sharpness_repeats, seed=shared.sharpness_seed,
                        definition=shared.blowup_definition, labels=trainer.labels,
                        spectrum_samples=shared.spectrum_samples)
    row = measure(model, x, y, final.metrics, settings)
    return {k: v if k == "param_norm" else _finite(v) for k, v in row.items()}


def _final_probes_seq2seq(trainer, cfg):
    """The official scratchpad measurement (paper.md §3.2-3.3) on ``cfg.final.batches`` fresh
    batches: teacher-forced loss and sharpness, encoder and decoder blowup (every LayerNorm,
    and the official hooks' subset as ``blowup_official_*``), parameter norm and the per-token
    autoregressive accuracy; ``Measure`` computes exactly these during training."""
    import sensiformer as sf

    final, shared = cfg.final, cfg.probe_settings
    x, y = _measurement_data(trainer, final.batches)
    probe = sf.Measure(x=x, y=2 * y - 1 if trainer.labels == "pm1" else y, n_batches=final.batches,
                       sigma=shared.sharpness_sigma, repeats=final.sharpness_repeats, seed=shared.sharpness_seed,
                       definition=shared.blowup_definition)
    return {k: _finite(v) for k, v in probe(trainer).items()}


def _dynamic_probes(cfg):
    """The ``Measure`` callback of ``cfg.dynamics``: its noise re-seeded with the run's seed, as the official code."""
    import sensiformer as sf

    dyn, shared = cfg.dynamics, cfg.probe_settings
    return sf.Measure(every=dyn.every, n_batches=dyn.batches, repeats=dyn.repeats, sigma=shared.sharpness_sigma,
                      seed=cfg.seed, definition=shared.blowup_definition, spectrum=dyn.spectrum,
                      spectrum_samples=shared.spectrum_samples)


def _model(cfg):
    import sensiformer as sf

    kind = sf.Seq2SeqTransformer if cfg.model == "scratchpad" else sf.Transformer
    return kind(cfg.positions, d_model=cfg.d_model, n_heads=cfg.n_heads, n_layers=cfg.n_layers, d_ff=cfg.d_ff,
                norm=cfg.norm, ln_eps=cfg.ln_eps, dtype=cfg.dtype, seed=cfg.seed, norm_type=cfg.norm_type,
                positional=cfg.positional, rope_base=cfg.rope_base)


def _optimizer(cfg):
    import sensiformer as sf

    schedule = dict(schedule="cosine", total_steps=cfg.steps) if cfg.lr_schedule == "cosine" else {}
    return sf.AdamW(lr=cfg.lr, weight_decay=cfg.weight_decay, **schedule)


def check_buildable(configs) -> None:
    """Build each distinct model and optimizer of ``configs`` once, in this process, so a setting
    the engine refuses (d_model not divisible by n_heads, say) raises here, naming it, instead
    of failing every run on the workers.

    Raises
    ------
    ValueError
        The first configuration that cannot be built, with the model's or optimizer's message.
    """
    seen = set()
    for cfg in configs:
        model = (cfg.model, cfg.positions, cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.d_ff, cfg.norm, cfg.ln_eps,
                 cfg.dtype, cfg.norm_type, cfg.positional, cfg.rope_base)
        optimizer = (cfg.lr, cfg.weight_decay, cfg.lr_schedule, cfg.steps)
        try:
            for shape, build in ((model, _model), (optimizer, _optimizer)):
                if shape not in seen:
                    build(cfg)
                    seen.add(shape)
        except (ValueError, TypeError) as err:
            raise ValueError(f"run {cfg.key} (target {cfg.target}, n={cfg.n}, d_model={cfg.d_model}, "
                             f"n_heads={cfg.n_heads}) cannot be built: {err}") from None


def _build(cfg, n_threads):
    """(model, optimizer, trainer, training subset or None) of a run: the official encoder, or the
    scratchpad encoder-decoder trained by teacher forcing on the target's prefix labels (PARITY:
    the prefix parities)."""
    import sensiformer as sf

    model, optimizer = _model(cfg), _optimizer(cfg)
    if cfg.model == "scratchpad":
        trainer = sf.Trainer(model, targets.Prefix(_target(cfg)), optimizer=optimizer, batch_size=cfg.batch_size,
                             seed=cfg.seed, n_threads=n_threads)
        return model, optimizer, trainer, None
    _initialise(model, cfg.init, cfg.seed)
    subset = None
    if cfg.train_subset is not None:
        subset = sf.restricted_subset(cfg.n, cfg.train_subset, seed=cfg.seed if cfg.subset_seed is None else cfg.subset_seed)
    trainer = sf.Trainer(model, _target(cfg), optimizer=optimizer, batch_size=cfg.batch_size, seed=cfg.seed,
                         train_subset=subset, n_threads=n_threads)
    return model, optimizer, trainer, subset


def _converged(cfg, metrics) -> bool:
    """The paper's filters: eval MSE < 1e-3, or for the scratchpad per-token autoregressive
    accuracy > 0.999 (on the measurement batches, as the official code; else the evaluation's)."""
    if cfg.model == "scratchpad":
        acc = metrics.get("autoregressive_accuracy", metrics["eval_autoregressive_accuracy"])
        return bool(acc > CONVERGED_AUTOREGRESSIVE)
    return bool(metrics["eval_loss"] < CONVERGED_MSE)


def _train_multi_length(model, cfg, optimizer, n_threads, history_rows, reporter=None):
    """Length generalisation: round-robin over ``train_lengths``, ``length_chunk`` steps each."""
    import sensiformer as sf

    trainers = [sf.Trainer(model, _target(cfg, k), optimizer=optimizer, batch_size=cfg.batch_size,
                           seed=cfg.seed + 7919 * i, n_threads=n_threads)
                for i, k in enumerate(cfg.train_lengths)]
    done = 0
    window = []
    while done < cfg.steps:
        for tr in trainers:
            chunk = min(cfg.length_chunk, cfg.steps - done)
            if chunk <= 0:
                break
            h = tr.fit(chunk, log_every=chunk, progress=False)
            window.append((chunk, float(h["loss"].iloc[-1])))
            done += chunk
            if reporter:
                reporter.send(done, window[-1][1], force=done == cfg.steps)
            if done % cfg.log_every < chunk or done == cfg.steps:
                w = sum(c for c, _ in window)
                history_rows.append(dict(step=done, loss=sum(c * l for c, l in window) / w))
                window = []
    return trainers


@dataclass
class _Run:
    """One configuration on its way through execute's stages, and what they record."""

    cfg: RunConfig
    n_threads: int
    model: object
    optimizer: object
    trainer: object
    subset: object
    reporter: RunReporter | None
    status: str = "ok"
    error: str | None = None
    history: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.perf_counter)
    cpu0: float = field(default_factory=time.process_time)


def execute(config, n_threads: int = 1, progress=None) -> dict:
    """Run one configuration and return ``{key, status, config, metrics, artifacts, history,
    provenance, started, finished, duration}``: build, train, evaluate, measure, then the extras
    the configuration asks for.

    ``progress``: a sink (``put(message)``, see ``sweep.progress``) that receives the training
    steps as they finish; it does not change the results.

    ``status`` is "ok", or "diverged" when the loss stopped being finite (metrics then describe
    the last finite parameters). Other exceptions propagate (the sweep records them as
    failures and a rerun tries again).
    """
    cfg = as_config(config)
    started, t0, cpu0 = time.time(), time.perf_counter(), time.process_time()
    reporter = RunReporter(progress, cfg) if progress is not None else None
    run = _Run(cfg, n_threads, *_build(cfg, n_threads), reporter=reporter, started=started, t0=t0, cpu0=cpu0)
    for stage in (_train_stage, _evaluate_stage, _measure_stage, _extras_stage):
        stage(run)
    finished = time.time()
    run.metrics["cpu_seconds"] = time.process_time() - run.cpu0  # all threads of this process (one run at a time)
    return dict(key=cfg.key, status=run.status, error=run.error, config=cfg.to_dict(), metrics=run.metrics,
                artifacts=run.artifacts, history=run.history, provenance=provenance(n_threads, cfg.seed),
                started=run.started, finished=finished, duration=time.perf_counter() - run.t0)


def _train_stage(run: _Run) -> None:
    """Train (one length, or several in turn); a diverged run keeps its last finite parameters."""
    import sensiformer as sf

    cfg, trainer = run.cfg, run.trainer
    if run.reporter:
        run.reporter.send(0, force=True)
    try:
        if cfg.train_lengths:
            _train_multi_length(run.model, cfg, run.optimizer, run.n_threads, run.history, run.reporter)
        else:
            callbacks = [run.reporter] if run.reporter else []
            if cfg.dynamics.active:
                callbacks.append(_dynamic_probes(cfg))
            trainer.fit(cfg.steps, log_every=cfg.log_every, callbacks=callbacks, progress=False)
    except sf.DivergenceError as err:
        run.status, run.error = "diverged", str(err)
    finally:
        if not cfg.train_lengths:
            run.history = trainer.history.to_dict("records")
    run.history = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()
                    if not (isinstance(v, float) and math.isnan(v) and k not in ("loss",))}
                   for row in run.history]


def _evaluate_stage(run: _Run) -> None:
    """Training time and loss, the evaluation, and the step the measurement first converged."""
    cfg, metrics = run.cfg, run.metrics
    metrics["steps_done"] = run.trainer.step_count if not cfg.train_lengths else cfg.steps
    metrics["train_seconds"] = time.perf_counter() - run.t0
    if run.history and run.history[-1].get("loss") is not None:
        metrics["final_train_loss"] = float(run.history[-1]["loss"])
    if run.reporter:
        run.reporter.send(metrics["steps_done"], metrics.get("final_train_loss"), phase="probing", force=True)
    metrics.update(_evaluate(run.trainer, cfg, run.n_threads))
    metrics["label_scale"] = run.trainer.labels  # "01": losses and sharpness on the {0,1} scale
    if cfg.dynamics.active:
        conv = [r["step"] for r in run.history if r.get("measure_loss") is not None and r["measure_loss"] < 0.01]
        metrics["convergence_step"] = conv[0] if conv else None


def _measure_stage(run: _Run) -> None:
    """The final probes (a diverged run gets its parameter norm only) and the convergence verdict."""
    import sensiformer as sf

    cfg, metrics = run.cfg, run.metrics
    if cfg.final.active and run.status == "ok":
        if cfg.model == "scratchpad":
            metrics.update(_final_probes_seq2seq(run.trainer, cfg))
        else:
            metrics.update(_final_probes(run.model, run.trainer, cfg, run.n_threads))
    elif cfg.final.active:
        metrics["param_norm"] = sf.probes.param_norm(run.model)
    metrics["converged"] = _converged(cfg, metrics)
    metrics["converge_threshold"] = CONVERGED_AUTOREGRESSIVE if cfg.model == "scratchpad" else CONVERGED_MSE


def _extras_stage(run: _Run) -> None:
    """The extra probes the configuration asks for (``cfg.extras``, in order)."""
    for spec in run.cfg.extras:
        if spec.active:
            EXTRAS[type(spec)](run, spec)


def _train_sharpness(run: _Run, spec: TrainSharpness) -> None:
    """Sharpness on one batch holding a whole input subset: ``spec.subset``'s, else the training subset (none:
    nothing to measure)."""
    import sensiformer as sf
    from ..targets import inputs_from_indices

    cfg = run.cfg
    if spec.subset is not None:
        probe_set = sf.restricted_subset(cfg.n, spec.subset, seed=cfg.seed if spec.subset_seed is None else spec.subset_seed)
    elif run.subset is not None:
        probe_set = run.subset
    else:
        return
    xs = inputs_from_indices(np.unique(probe_set), cfg.n)
    est = sf.probes.sharpness(run.model, xs, run.trainer.target(xs), sigma=cfg.probe_settings.sharpness_sigma,
                              repeats=spec.repeats, seed=cfg.probe_settings.sharpness_seed, n_threads=run.n_threads)
    run.metrics.update(train_sharpness=_finite(est.value), train_sharpness_stderr=_finite(est.stderr))


def _predictions(run: _Run, spec: Predictions) -> None:
    """The thresholded predictions on all 2^n inputs, as a hex artifact."""
    from ..targets import all_inputs

    preds = (run.model.forward(all_inputs(run.cfg.n), n_threads=run.n_threads) > 0.5).astype(np.uint8)
    run.artifacts["predictions"] = table_to_hex(preds)


def _model_sensitivity(run: _Run, spec: ModelSensitivity) -> None:
    """The exact average sensitivity and sensitivity profile of ``out > spec.threshold``."""
    from .. import analysis

    n = run.cfg.n
    res = analysis.model_sensitivity(run.model, n, threshold=spec.threshold, progress=False,
                                     n_threads=run.n_threads)  # a worker: the driver draws the bars
    profile = [int(k) for k in res.profile]
    run.metrics.update(model_as=float(res.value), model_k0_fraction=profile[0] / 2**n,
                       model_ones_fraction=float(np.mean(res.table > 0.5)) if res.table is not None else None)
    run.artifacts["sensitivity_profile"] = profile


def _length_evaluation(run: _Run, spec: LengthEvaluation) -> None:
    """The evaluation at each of ``spec.lengths``: ``eval_loss@k``, ``eval_accuracy@k``."""
    import sensiformer as sf

    cfg = run.cfg
    for length in spec.lengths:
        tr = sf.Trainer(run.model, _target(cfg, length), optimizer=sf.AdamW(), batch_size=cfg.batch_size,
                        seed=cfg.seed, n_threads=run.n_threads)
        res = _evaluate(tr, cfg, run.n_threads)
        run.metrics[f"eval_loss@{length}"] = res["eval_loss"]
        run.metrics[f"eval_accuracy@{length}"] = res["eval_accuracy"]


#: what runs each extra probe spec (``probe_config.Extra``) of a RunConfig
EXTRAS = {TrainSharpness: _train_sharpness, Predictions: _predictions, ModelSensitivity: _model_sensitivity,
          LengthEvaluation: _length_evaluation}


def execute_safely(config, n_threads: int = 1, progress=None) -> dict:
    """``execute``, but an exception becomes ``{"key", "failed": traceback}`` (for executors
    whose futures should not carry arbitrary exceptions back)."""
    try:
        return execute(config, n_threads, progress)
    except Exception:  # noqa: BLE001 - reported to the driver, which records the failure
        cfg = as_config(config)
        return dict(key=cfg.key, failed=traceback.format_exc(), config=cfg.to_dict(), pid=os.getpid())
