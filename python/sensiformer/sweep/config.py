"""One run of a sweep: its configuration and the key that identifies its results.

A ``RunConfig`` holds everything that determines a run's results: target, model, optimiser,
training length, evaluation and probe settings. Its ``key`` is a hash of exactly those
fields, so a rerun of the same configuration finds the stored result and is skipped.

What the key covers
-------------------
Every field of ``RunConfig`` except ``tags``; fields added later (``LATE_FIELDS``) only when
they differ from their default, so the keys of configurations that leave them alone, and the
results stored under those keys, stay valid. In particular the seeds, the model and optimiser
hyper-parameters, the number of steps and the logging interval (it decides which history rows
are recorded), and every final/dynamic probe setting (they decide the recorded metrics).

What it does not cover
----------------------
* ``tags``: free-form labels (which sub-sweep, which manifest entry) that do not change results;
* the thread count: the engine gives bitwise-identical results for any ``n_threads``;
* where and how the run executes (executor, process, machine) and progress bars;
* the package version: upgrading sensiformer keeps old results valid; every stored row carries
  its version, git commit and build in its provenance columns, so mixed stores stay auditable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .. import _vocabulary

#: Bumped when the meaning of a field changes, so old keys can never collide with new runs.
HASH_VERSION = 1
#: The paper's run filter: eval MSE below this on the {0,1} label scale.
CONVERGED_MSE = 1e-3
TARGETS = ("parity", "majority", "first", "mean", "random", "table", "sparse_parity")
MODELS = ("encoder", "scratchpad")
INITS = ("pytorch", "gaussian", "uniform", "xavier_uniform", "xavier_normal")
LR_SCHEDULES = ("constant", "cosine")
DTYPES = ("float32", "float64")
NORMS = ("post", "pre", "none")
#: the engine's norm types and positional encodings (a new one in the engine is a valid value here at once)
NORM_TYPES = tuple(_vocabulary.NORM_TYPES)
POSITIONALS = tuple(sorted(_vocabulary.POSITIONALS, key=_vocabulary.POSITIONALS.get))
#: fields added after the key's format was fixed, with the default at which they stay out of it
LATE_FIELDS = {"lr_schedule": "constant", "target_bits": (), "dynamic_spectrum": False, "spectrum_samples": 1024,
               "positional": "concat", "norm_type": "layer", "rope_base": 10000.0, "final_spectrum": False}


def _integer(value, name) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or int(value) != value:
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class RunConfig:
    """Configuration of one training run and its probes (defaults: the paper's §3.3 defaults).

    Target
        ``target`` is one of "parity", "majority", "first", "mean", "random" (the official
        ``RandomFunc(target_seed)`` table) or "table" (``target_table``: the truth table as a
        hex string of 2^n bits, x_1 the most significant bit of the index; see ``table_to_hex``) or
        "sparse_parity" (the parity of the 0-based positions ``target_bits``).
    Model
        ``model`` "encoder" (the official TorchModel) or "scratchpad" (the official
        TorchModelWithScratchpad, ``Seq2SeqTransformer``: trained by teacher forcing on the
        target's prefix labels, e.g. the prefix parities; its final probes add the encoder and
        decoder blowup and the autoregressive accuracy, and ``converged`` is the paper's filter
        autoregressive accuracy > 0.999); ``n_positions`` defaults to the largest length used.
        ``positional`` (the engine's encodings: "concat", the paper's, "add", "sinusoidal", "none",
        "rope" with its ``rope_base``) and ``norm_type`` ("layer", the paper's, or "rms") are passed to
        the model's constructor.
    Training
        AdamW(lr, weight_decay) (``lr_schedule`` "constant", the paper's, or "cosine": decay
        to 0 over ``steps``, no warm-up) on fresh uniform batches (or batches drawn from
        ``restricted_subset(n, train_subset, subset_seed)`` when ``train_subset`` = m is set),
        ``seed`` seeds both the initialisation and the data stream, as the official
        ``random_state`` does. ``train_lengths`` (length generalisation) trains on several
        lengths in turn, ``length_chunk`` steps each.
    Evaluation
        Exact over all 2^n inputs for n <= 16 (over the training subset with ``train_subset``,
        as the official code), else over ``eval_batches`` fresh batches.
    Final probes (``measure``)
        ``measure_batches`` fresh batches: sharpness (sigma, R repeats, the same noise draws
        for every batch and every run, as the official code), LayerNorm blowup
        (``blowup_definition``) and the parameter norm; ``final_spectrum`` adds the trained model
        function's Fourier weight per degree and average sensitivity (the ``spectrum`` metric: exact
        for n <= 20, else Monte-Carlo from ``spectrum_samples`` inputs; the encoder model).
    Dynamics
        ``dynamic_every`` > 0 probes every that many steps on ``dynamic_batches`` fixed batches
        with ``dynamic_repeats`` noise draws (common random numbers over training);
        ``dynamic_spectrum`` adds the model function's Fourier weight per degree and average
        sensitivity to those rows (``Measure(spectrum=True)``: exact for n <= 20, else Monte-Carlo
        from ``spectrum_samples`` inputs).
    Extras
        ``save_predictions`` stores the thresholded predictions on all 2^n inputs;
        ``train_sharpness_repeats`` > 0 measures sharpness (R = that many draws) on one batch
        holding a whole input subset: ``restricted_subset(n, sharpness_subset,
        sharpness_subset_seed)`` if given (generalization: the parent run's training set),
        else the training subset;
        ``eval_lengths`` evaluates at these lengths too; ``model_sensitivity`` records the exact
        average sensitivity and sensitivity profile of the Boolean function ``out >
        sensitivity_threshold`` the final model computes on {0,1}^n (n <= 26).
    Initialisation
        ``init`` "pytorch" (the official model's init, seeded by ``seed``) or, for every weight
        matrix and embedding table with biases set to 0 and LayerNorms left at gain 1 / bias 0:
        "gaussian" (N(0, 1)), "uniform" (U(-1, 1)), "xavier_uniform", "xavier_normal" (the
        follow-up paper's four initialisations).
    """

    target: str = "parity"
    n: int = 20
    target_seed: int = 0
    target_table: str | None = None
    target_bits: tuple = ()
    model: str = "encoder"
    d_model: int = 128
    n_heads: int = 2
    n_layers: int = 2
    d_ff: int | None = None
    norm: str = "post"
    norm_type: str = "layer"
    positional: str = "concat"
    rope_base: float = 10000.0
    final_spectrum: bool = False
    ln_eps: float = 1e-5
    dtype: str = "float32"
    n_positions: int | None = None
    seed: int = 0
    lr: float = 3e-4
    weight_decay: float = 0.1
    lr_schedule: str = "constant"
    batch_size: int = 1024
    steps: int = 10_000
    log_every: int = 100
    train_subset: int | None = None
    subset_seed: int | None = None
    train_lengths: tuple = ()
    length_chunk: int = 10
    eval_batches: int = 1000
    measure: bool = True
    measure_batches: int = 1000
    sharpness_sigma: float = 0.02
    sharpness_repeats: int = 10
    sharpness_seed: int = 0
    blowup_definition: str = "official"
    dynamic_every: int = 0
    dynamic_batches: int = 1
    dynamic_repeats: int = 500
    dynamic_spectrum: bool = False
    spectrum_samples: int = 1024
    save_predictions: bool = False
    train_sharpness_repeats: int = 0
    sharpness_subset: int | None = None
    sharpness_subset_seed: int | None = None
    eval_lengths: tuple = ()
    init: str = "pytorch"
    model_sensitivity: bool = False
    sensitivity_threshold: float = 0.5
    tags: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "tags":
                if not isinstance(value, Mapping):
                    raise TypeError(f"tags must be a mapping, got {value!r}")
                fix("tags", dict(value))
            elif f.type in ("int", "int | None") and value is not None:
                fix(f.name, _integer(value, f.name))
            elif f.type == "float":
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    raise TypeError(f"{f.name} must be a number, got {value!r}")
                fix(f.name, float(value))
            elif f.type == "bool":
                fix(f.name, bool(value))
            elif f.type == "tuple":
                fix(f.name, tuple(_integer(v, f.name) for v in (value if isinstance(value, Iterable) else (value,))))
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.target == "table":
            if self.target_table is None or len(self.target_table) * 4 != max(2**self.n, 4):
                raise ValueError(f"target='table' needs target_table: hex of 2**n = {2**self.n} bits")
        elif self.target_table is not None:
            raise ValueError("target_table is only used with target='table'")
        if self.target == "sparse_parity":
            if not self.target_bits or len(set(self.target_bits)) != len(self.target_bits) \
                    or not all(0 <= b < self.n for b in self.target_bits):
                raise ValueError(f"target='sparse_parity' needs target_bits: distinct positions in [0, n={self.n}), "
                                 f"got {self.target_bits}")
        elif self.target_bits:
            raise ValueError("target_bits is only used with target='sparse_parity'")
        if self.train_subset is not None and not 1 <= self.train_subset <= 2**self.n:
            raise ValueError(f"train_subset must be in [1, 2**n], got {self.train_subset}")
        for name in ("steps", "batch_size", "log_every", "eval_batches", "measure_batches", "sharpness_repeats",
                     "dynamic_batches", "dynamic_repeats", "length_chunk", "spectrum_samples"):
            if getattr(self, name) < (0 if name == "steps" else 1):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "ln_eps", "sharpness_sigma"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        if not (math.isfinite(self.rope_base) and self.rope_base > 0):
            raise ValueError(f"rope_base must be finite and > 0, got {self.rope_base}")
        for name, choices in (("dtype", DTYPES), ("norm", NORMS), ("norm_type", NORM_TYPES),
                              ("positional", POSITIONALS), ("lr_schedule", LR_SCHEDULES), ("init", INITS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.blowup_definition not in ("official", "theory"):
            raise ValueError(f"blowup_definition must be 'official' or 'theory', got {self.blowup_definition!r}")
        if self.model == "scratchpad":
            self._check_scratchpad()
        if self.train_lengths and self.target not in ("parity", "majority", "first", "mean"):
            raise ValueError("train_lengths needs a length-generic target (parity, majority, first, mean)")

    def _check_scratchpad(self):
        if self.target not in ("parity", "majority", "first"):
            raise ValueError(f"model='scratchpad' needs a Boolean target with prefix labels (parity, majority, first), "
                             f"got {self.target!r}")
        if self.norm not in ("post", "pre"):
            raise ValueError(f"model='scratchpad' has norm 'post' or 'pre', got {self.norm!r}")
        unsupported = dict(train_subset=self.train_subset is not None, train_lengths=bool(self.train_lengths),
                           eval_lengths=bool(self.eval_lengths), save_predictions=self.save_predictions,
                           train_sharpness_repeats=bool(self.train_sharpness_repeats),
                           model_sensitivity=self.model_sensitivity, init=self.init != "pytorch",
                           dynamic_spectrum=self.dynamic_spectrum, final_spectrum=self.final_spectrum)
        bad = sorted(k for k, v in unsupported.items() if v)
        if bad:
            raise ValueError(f"model='scratchpad' does not support {', '.join(bad)} (encoder-only options)")

    # ---- identity ---------------------------------------------------------------------------
    def hashed_fields(self) -> dict:
        """The fields the key covers (all but ``tags``; ``LATE_FIELDS`` only away from their
        defaults), JSON-ready."""
        d = dataclasses.asdict(self)
        d.pop("tags")
        for name, default in LATE_FIELDS.items():
            if d[name] == default:
                del d[name]
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @property
    def key(self) -> str:
        """20 hex digits of SHA-256 over the canonical JSON of ``hashed_fields()``."""
        payload = json.dumps({"v": HASH_VERSION, **self.hashed_fields()}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:20]

    @property
    def positions(self) -> int:
        """The model's n_positions: explicit, or the longest length it sees."""
        if self.n_positions is not None:
            return self.n_positions
        return max((self.n, *self.train_lengths, *self.eval_lengths))

    def to_dict(self) -> dict:
        """Every field (late ones included), JSON-ready."""
        d = self.hashed_fields()
        d.update({name: getattr(self, name) for name in LATE_FIELDS})
        d["tags"] = dict(self.tags)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown RunConfig fields: {sorted(unknown)}")
        return cls(**dict(d))

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)


def as_config(obj) -> RunConfig:
    """A RunConfig from a RunConfig or a mapping of its fields."""
    if isinstance(obj, RunConfig):
        return obj
    if isinstance(obj, Mapping):
        return RunConfig.from_dict(obj)
    raise TypeError(f"expected a RunConfig or a dict of its fields, got {type(obj).__name__}")


def table_to_hex(bits) -> str:
    """A 0/1 truth table (length 2^n, index order) as a hex string (x_1 = MSB of the index)."""
    import numpy as np

    b = np.asarray(bits).astype(np.uint8).reshape(-1)
    if b.size < 4:
        b = np.concatenate([b, np.zeros(4 - b.size, np.uint8)])
    if b.size % 8 == 4:
        return np.packbits(np.concatenate([b, np.zeros(4, np.uint8)])).tobytes().hex()[:-1]
    return np.packbits(b).tobytes().hex()


def hex_to_table(text: str, n: int):
    """Inverse of ``table_to_hex``: a float64 0/1 array of length 2^n."""
    import numpy as np

    raw = bytes.fromhex(text if len(text) % 2 == 0 else text + "0")
    return np.unpackbits(np.frombuffer(raw, np.uint8))[: 2**n].astype(np.float64)
