"""Figure 11: PARITY with a scratchpad (encoder-decoder), up to n=1024.

The grid and settings are defined; running needs the encoder-decoder model of issue 5.
"""

from __future__ import annotations

from ..sweep.config import RunConfig
from ..sweep.runner import SCRATCHPAD_MESSAGE
from ._base import Experiment, Stage, resolve, run_fields
from .scaling import _PAPER

#: sweeps/scratchpad.yaml
LENGTHS = (4, 39, 74, 109, 144, 179, 215, 250, 285, 320, 355, 390, 426, 461, 496, 531, 566, 601, 637, 672, 707, 742,
           777, 812, 848, 883, 918, 953, 988, 1024)

_SP = dict(_PAPER, d_model=32, batch_size=128)
PRESETS = {
    "paper": dict(_SP, lengths=LENGTHS, seeds=tuple(range(10))),   # 300 runs
    "quick": dict(_SP, lengths=(4, 16, 64, 128), seeds=(0, 1, 2), steps=3000, measure_batches=16, eval_batches=50),
    "ci": dict(_SP, lengths=(4, 8), seeds=(0,), steps=100, measure_batches=2, eval_batches=2, batch_size=32),
}


def scratchpad(preset: str = "ci", **overrides) -> Experiment:
    """PARITY with a scratchpad: sharpness, encoder/decoder blowup and norm vs n (Fig. 11).

    Running it raises NotImplementedError: the encoder-decoder model is issue 5.
    """
    params, changed = resolve("scratchpad", PRESETS, preset, overrides)

    def build(store=None):
        return [RunConfig(model="scratchpad", target="parity", n=n, seed=s, **run_fields(params),
                          tags=dict(experiment="scratchpad"))
                for n in params["lengths"] for s in params["seeds"]]

    return Experiment(name="scratchpad", preset=preset, params=params, overrides=changed, stages=[Stage("train", build)],
                      figures="Fig. 11", runnable=False, not_runnable_reason=SCRATCHPAD_MESSAGE)
