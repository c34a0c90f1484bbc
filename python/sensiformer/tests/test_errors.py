"""The memory limit refuses a huge workspace up front, and one bad input per entry-point family
raises a named Python exception (never a crash or a silent wrong number)."""

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import _native, analysis
from sensiformer.sweep import RunConfig

from ._support import current_path


def test_the_memory_limit_refuses_a_huge_workspace():
    model = sf.Transformer(16, d_model=32, seed=1)
    x = np.zeros((4096, 16), np.uint8)
    before, out = model.flat.copy(), model.forward(x[:4])
    sf.set_memory_limit(1 << 20)
    try:
        with pytest.raises(MemoryError, match="set_memory_limit"):
            model.forward(x)
        with pytest.raises(MemoryError, match="set_memory_limit"):
            model.loss_and_grad(x, np.zeros(4096))
    finally:
        sf.set_memory_limit(None)
    with pytest.raises(MemoryError, match=r"needs [0-9.e+]+ GB"):  # far beyond this machine's memory
        sf.Transformer(1 << 20, d_model=65536, n_layers=64)
    assert np.array_equal(model.flat, before) and np.array_equal(model.forward(x[:4]), out)


def _model():
    return sf.Transformer(6, d_model=8)


BAD_INPUTS = {
    "model config": (lambda: sf.Transformer(0), ValueError, "n_positions must be >= 1"),
    "forward tokens": (lambda: _model().forward(np.full((2, 6), 3)), ValueError, "x must hold tokens 0 or 1"),
    "loss labels": (lambda: _model().loss(np.zeros((2, 6), int), np.zeros(3)), ValueError, r"y must have shape"),
    "seq2seq decoder input": (lambda: sf.Seq2SeqTransformer(6, d_model=8).forward(np.zeros((2, 6), int),
                                                                                   np.full((2, 3), 5)),
                              ValueError, "decoder_input must hold tokens"),
    "optimizer": (lambda: sf.AdamW(lr=-1), ValueError, "lr must be >= 0"),
    "trainer": (lambda: sf.Trainer(_model(), sf.targets.Parity(6), batch_size=0), ValueError,
                "batch_size must be >= 1"),
    "target": (lambda: sf.targets.Parity(0), ValueError, "n must be >= 1"),
    "analysis": (lambda: analysis.fourier(np.zeros(3)), ValueError, "truth_table must have 2\\*\\*n entries"),
    "model analysis": (lambda: analysis.model_sensitivity(_model(), 7), ValueError, "n_positions=6"),
    "probes": (lambda: sf.probes.sharpness(_model(), np.zeros((2, 6), int), np.zeros(2), repeats=0), ValueError,
               "repeats must be >= 1"),
    "hessian": (lambda: sf.probes.hvp(_model(), np.zeros((2, 6), int), np.zeros(2), np.ones(5)), ValueError,
                "v must have shape"),
    "settings": (lambda: sf.set_num_threads(0), ValueError, "n must be >= 1"),
    "sweep config": (lambda: RunConfig(target="parity", n=0), ValueError, "n must be >= 1"),
    "engine kernel": (lambda: _native.kernel_gemm(path=current_path(), a=np.ones((2, 3)), b=np.ones((2, 2)),
                                                  c=np.zeros((2, 2)), accumulate=False, transpose_a=False,
                                                  transpose_b=False, n_threads=1), ValueError, "shapes"),
}


@pytest.mark.parametrize("family", list(BAD_INPUTS))
def test_bad_input_raises_a_named_error(family):
    call, exc, pattern = BAD_INPUTS[family]
    with pytest.raises(exc, match=pattern):
        call()


def test_a_file_that_is_not_a_checkpoint_is_refused_naming_it(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("not a checkpoint")
    trainer = sf.Trainer(_model(), sf.targets.Parity(6))
    with pytest.raises(sf.CheckpointError, match="notes.npz"):
        trainer.load_checkpoint(path)
    with pytest.raises(ValueError, match="notes.npz"):
        sf.load(path)
