"""The engine's vocabulary (csrc/sf.h's X-macro lists) is what the Python layer uses: every choice the
public API accepts maps to the engine's value by name, and the limits are the engine's."""

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import _native, _vocabulary, optim, seq2seq, targets, trainer


def test_every_list_is_exported_with_values_0_to_k():
    words = _native.vocabulary()
    assert set(words) == {"status", "dtype", "norm", "norm_type", "positional", "activation", "model_kind", "tensor_kind", "loss",
                          "target_kind", "sampler_kind", "optimizer_kind", "schedule_kind", "limit"}
    for name, values in words.items():
        if name != "limit":
            assert sorted(values.values()) == list(range(len(values))), name
    assert words["norm"] == {"post": 0, "pre": 1, "none": 2} and words["limit"]["sos"] == 2
    assert words["norm_type"] == {"layer": 0, "rms": 1}
    assert words["positional"] == {"concat": 0, "add": 1, "sinusoidal": 2, "none": 3, "rope": 4}


def test_python_reads_its_choices_from_the_engine():
    assert optim.OPTIMIZERS is _vocabulary.OPTIMIZERS and set(optim.SCHEDULES) == {"constant", "cosine"}
    assert seq2seq._NORMS == {k: _vocabulary.NORMS[k] for k in ("post", "pre")} and seq2seq.SOS == 2
    assert trainer._DATASET == _vocabulary.SAMPLERS["dataset"]
    assert targets.FourierFunction._kind == _vocabulary.TARGET_KINDS["fourier"]
    assert targets.Parity(3)._kind == _vocabulary.TARGET_KINDS["parity"]
    assert _vocabulary.TENSOR_KINDS[_vocabulary.MODEL_KINDS["encoder"]] == "token_embedding"


@pytest.mark.parametrize("norm", sorted(_vocabulary.NORMS))
@pytest.mark.parametrize("activation", sorted(_vocabulary.ACTIVATIONS))
def test_every_norm_and_activation_of_the_engine_builds_a_model(norm, activation):
    model = sf.Transformer(4, d_model=8, norm=norm, activation=activation)
    assert model.forward(np.zeros((2, 4), np.uint8)).shape == (2,)


def test_the_engine_limits_are_the_checked_ones():
    with pytest.raises(ValueError, match="n_layers"):
        sf.Transformer(4, d_model=8, n_layers=_vocabulary.MAX_LAYERS + 1)
    with pytest.raises(ValueError, match="d_model"):
        sf.Transformer(4, d_model=_vocabulary.MAX_D_MODEL + 2)
