"""The engine's vocabulary (csrc/sf.h): every enumeration the C API takes and the limits it enforces,
read from the engine (``_native.vocabulary()``), so the Python layer never mirrors them by hand."""

from __future__ import annotations

from . import _native

_WORDS = _native.vocabulary()


def _ordered(name: str) -> tuple:
    """A list's names in value order (values are 0..k-1)."""
    words = _WORDS[name]
    return tuple(sorted(words, key=words.get))


STATUSES = _WORDS["status"]
DTYPES = _WORDS["dtype"]
NORMS = _WORDS["norm"]
NORM_TYPES = _WORDS["norm_type"]
POSITIONALS = _WORDS["positional"]
ACTIVATIONS = _WORDS["activation"]
MODEL_KINDS = _WORDS["model_kind"]
TENSOR_KINDS = _ordered("tensor_kind")
LOSSES = _WORDS["loss"]
TARGET_KINDS = _WORDS["target_kind"]
SAMPLERS = _WORDS["sampler_kind"]
OPTIMIZERS = _WORDS["optimizer_kind"]
SCHEDULES = _WORDS["schedule_kind"]
SOS = _WORDS["limit"]["sos"]  #: the seq2seq decoder's start token
MAX_LAYERS = _WORDS["limit"]["max_layers"]  #: layers of one stack
MAX_POSITIONS = _WORDS["limit"]["max_positions"]
MAX_D_MODEL = _WORDS["limit"]["max_d_model"]
MAX_D_FF = _WORDS["limit"]["max_d_ff"]
