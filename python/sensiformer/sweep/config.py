"""One run of a sweep: its configuration and the key that identifies its results.

A ``RunConfig`` holds everything that determines a run's results: target, model, optimiser,
training length, evaluation, and the probes to run with their settings (the groups of
``probe_config``: ``FinalMeasurement``, ``Dynamics``, the extras). Its ``key`` is a hash of exactly
those, so a rerun of the same configuration finds the stored result and is skipped.

The flat form
-------------
A configuration is hashed, stored and sent to workers as one flat dict (``to_dict``): the probe
groups' settings under their flat names (``FinalMeasurement.batches`` is ``measure_batches``),
as RunConfig's fields were named before they were grouped, so every key and stored row stays
valid. ``from_dict`` reads that form (stores, ``sensiformer sweep configs.jsonl``); the
constructor takes the groups only, and names the group of a flat name it is given.

What the key covers
-------------------
Every setting of ``RunConfig`` (in the flat form) except ``tags``; fields added later (``LATE_FIELDS``) only when
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
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .. import _vocabulary
from .probe_config import (Dynamics, Extra, FinalMeasurement, LengthEvaluation, ModelSensitivity, Predictions,
                           ProbeGroup, ProbeSettings, TrainSharpness, coerce_fields, flat_name)

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
#: settings (flat names) added after the key's format was fixed, with the default at which they stay out of it
LATE_FIELDS = {"lr_schedule": "constant", "target_bits": (), "dynamic_spectrum": False, "spectrum_samples": 1024,
               "positional": "concat", "norm_type": "layer", "rope_base": 10000.0, "final_spectrum": False}


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
    Probes (``sweep.probe_config``)
        ``probe_settings`` (``ProbeSettings``): what the probes share (sharpness noise and seed,
        blowup definition, the spectrum's Monte-Carlo samples beyond n=20). ``final``
        (``FinalMeasurement``): loss, sharpness, blowup and parameter norm of the trained model on
        fresh batches, and its spectrum if asked. ``dynamics`` (``Dynamics``): the same every
        ``every`` steps of training. The extras, run after the final measurement in this order
        (``extras``): ``train_sharpness`` (``TrainSharpness``: sharpness on a whole input subset),
        ``predictions`` (``Predictions``: the thresholded predictions on all 2^n inputs),
        ``sensitivity`` (``ModelSensitivity``: the exact sensitivity profile of ``out > threshold``)
        and ``length_evaluation`` (``LengthEvaluation``: the evaluation at other lengths).
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
    probe_settings: ProbeSettings = ProbeSettings()
    final: FinalMeasurement = FinalMeasurement()
    dynamics: Dynamics = Dynamics()
    train_sharpness: TrainSharpness = TrainSharpness()
    predictions: Predictions = Predictions()
    sensitivity: ModelSensitivity = ModelSensitivity()
    length_evaluation: LengthEvaluation = LengthEvaluation()
    init: str = "pytorch"
    tags: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if not isinstance(self.tags, Mapping):
            raise TypeError(f"tags must be a mapping, got {self.tags!r}")
        object.__setattr__(self, "tags", dict(self.tags))
        coerce_fields(self)
        for name, kind in GROUPS.items():
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}")
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
        for name in ("steps", "batch_size", "log_every", "eval_batches", "length_chunk"):
            if getattr(self, name) < (0 if name == "steps" else 1):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "ln_eps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        if not (math.isfinite(self.rope_base) and self.rope_base > 0):
            raise ValueError(f"rope_base must be finite and > 0, got {self.rope_base}")
        for name, choices in (("dtype", DTYPES), ("norm", NORMS), ("norm_type", NORM_TYPES),
                              ("positional", POSITIONALS), ("lr_schedule", LR_SCHEDULES), ("init", INITS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
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
                           init=self.init != "pytorch")
        bad = sorted([k for k, v in unsupported.items() if v]
                     + [name for group in GROUPS for name in getattr(self, group).encoder_only()])
        if bad:
            raise ValueError(f"model='scratchpad' does not support {', '.join(bad)} (encoder-only options)")

    @property
    def extras(self) -> tuple:
        """The extra probes' specs, in the order a run takes them (off ones included: see ``active``)."""
        return tuple(getattr(self, name) for name, kind in GROUPS.items() if issubclass(kind, Extra))

    # ---- identity ---------------------------------------------------------------------------
    def hashed_fields(self) -> dict:
        """The settings the key covers, flat (all but ``tags``; ``LATE_FIELDS`` only away from
        their defaults), JSON-ready."""
        d = flatten(self)
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
        return max((self.n, *self.train_lengths, *self.length_evaluation.lengths))

    def to_dict(self) -> dict:
        """Every setting in the flat form (late ones included), JSON-ready: what stores keep."""
        d, flat = self.hashed_fields(), flatten(self)
        d.update({name: flat[name] for name in LATE_FIELDS})
        d["tags"] = dict(self.tags)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "RunConfig":
        """A RunConfig from the flat form (``to_dict``'s, a store's, a configuration file's); the groups'
        own fields (``final=FinalMeasurement(...)``) are taken too."""
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)} - set(FLAT_NAMES)
        if unknown:
            raise ValueError(f"unknown RunConfig fields: {sorted(unknown)}")
        return cls(**grouped(d))

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)


# ---- the flat form: probe settings under their flat names -------------------------------------------
#: RunConfig field -> its probe group's class
GROUPS = {f.name: type(f.default) for f in dataclasses.fields(RunConfig) if isinstance(f.default, ProbeGroup)}
#: flat name of a probe setting -> (RunConfig field, the group's field)
FLAT_NAMES = {flat_name(g): (name, g.name) for name, kind in GROUPS.items() for g in dataclasses.fields(kind)}


def flatten(cfg: RunConfig) -> dict:
    """Every setting of ``cfg`` under its flat name (``tags`` included)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out.update(value.flat() if f.name in GROUPS else {f.name: value})
    return out


def grouped(settings: Mapping) -> dict:
    """RunConfig's keyword arguments from flat names: each probe setting into its group (the group's defaults
    for the settings not given); other names pass through."""
    out, groups = {}, {}
    for name, value in settings.items():
        if name in FLAT_NAMES:
            group, field_name = FLAT_NAMES[name]
            groups.setdefault(group, {})[field_name] = value
        else:
            out[name] = value
    for group, values in groups.items():
        if group in out:
            raise ValueError(f"{group} is given both as a {GROUPS[group].__name__} and as its flat settings "
                             f"{sorted(k for k in settings if k in FLAT_NAMES and FLAT_NAMES[k][0] == group)}")
        out[group] = GROUPS[group](**values)
    return out


def _refuse_flat_names(init):
    """The constructor takes the probe groups; a flat name (``measure_batches=8``) gets a TypeError saying where
    it went (``from_dict`` reads the flat form)."""

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        flat = sorted(set(kwargs) & set(FLAT_NAMES))
        if flat:
            where = "; ".join(f"{name} is {FLAT_NAMES[name][0]}={GROUPS[FLAT_NAMES[name][0]].__name__}"
                              f"({FLAT_NAMES[name][1]}=...)" for name in flat)
            raise TypeError(f"RunConfig() takes its probe settings in groups: {where} "
                            f"(RunConfig.from_dict reads the flat names)")
        init(self, *args, **kwargs)

    return __init__


RunConfig.__init__ = _refuse_flat_names(RunConfig.__init__)


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
