"""The paper's experiments, one function each, with presets and overridable parameters.

Each function returns an ``Experiment``: its run configurations (``configs()``), how to run
them (``run(store=...)`` or ``sensiformer.sweep.run``), read them (``results(store)``),
summarise them (``report(store)``) and draw the paper's figure (``plot(store)``).

================================  =======================  =======================================
function                          figures                  paper preset (official sweep)
================================  =======================  =======================================
``scaling()``                     Fig. 1, 5-8              length_scaling_1: 1080 runs
``scaling(variant="long")``       Fig. 5-8 (higher len)    length_scaling_2: 600 runs (d=4)
``tradeoff()``                    Fig. 2, 9, 10            weight_norm_blowup_tradeoff_1-4: 1000/1000/500/500
``dynamics()``                    Fig. 3, 12-14            dynamic_metrics_1: 404 runs (20k steps)
``dynamics(variant="100k")``      Fig. 12-14 (100k)        dynamic_metrics_2: 202 runs
``generalization()``              Fig. 4, 15               first_step_1/2: 100/300; second_step_1/2: 1000/1500
``scratchpad()``                  Fig. 11                  scratchpad: 300 runs (encoder-decoder)
``length_generalization()``       beyond the paper         (every positional encoding of the engine)
``init_sensitivity()``            beyond the paper         (the 2026 follow-up's random-init profiles)
``spectrum()``                    beyond the paper         (the model's Fourier spectrum during training)
================================  =======================  =======================================

Presets: ``"paper"`` = the official grids and settings; ``"quick"`` = a scaled-down grid that
shows the same effect in 17-319 CPU-seconds per experiment (measured 2026-12-05 on a 2-core
AVX-512 host; the notebooks' parameter cells and the README's table give them); ``"ci"`` = a
tiny grid that exercises every code path in seconds (the default, for tests and notebooks).
"""

from ._base import PRESETS, Experiment, Stage, average_sensitivity
from .dynamics import aligned_history, dynamics
from .generalization import completion_manifest, generalization
from .init_sensitivity import init_sensitivity
from .length_generalization import length_generalization
from .scaling import scaling
from .scratchpad import scratchpad
from .spectrum import spectrum
from .tradeoff import tradeoff

#: name -> experiment function (the CLI's ``sensiformer reproduce NAME``)
EXPERIMENTS = {
    "scaling": scaling,
    "tradeoff": tradeoff,
    "dynamics": dynamics,
    "generalization": generalization,
    "scratchpad": scratchpad,
    "length_generalization": length_generalization,
    "init_sensitivity": init_sensitivity,
    "spectrum": spectrum,
}


__all__ = ["EXPERIMENTS", "Experiment", "PRESETS", "Stage", "aligned_history", "average_sensitivity",
           "completion_manifest", "dynamics", "generalization", "init_sensitivity", "length_generalization", "scaling",
           "scratchpad", "spectrum", "tradeoff"]
