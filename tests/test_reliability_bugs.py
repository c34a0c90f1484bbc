"""Minimal reproductions of the library bugs the fuzzers (tests/test_fuzz_*.py) and the
reliability tests found, kept as regression tests now that they are fixed. The comment above each
test says what used to go wrong.

A newly found bug gets a test here marked ``xfail(strict=True, reason="BUG: ...")`` while it is
open (a fix then XPASSes, which fails the run so that the marker goes with the fix), and the fuzzers
may tolerate its outcome with ``known_bug`` until then.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import analysis, targets


@pytest.fixture(autouse=True)
def _single_thread():
    sf.set_num_threads(1)
    yield
    sf.set_num_threads(None)
    sf.set_memory_limit(None)


def tiny(dtype="float32", **kwargs):
    return sf.Transformer(4, d_model=4, n_heads=1, n_layers=1, dtype=dtype, **kwargs)


# ---- integers beyond the C ranges: OverflowError without the argument's name ----------------------

# Was: integers beyond C long/int reach PyArg_ParseTuple and raise a bare OverflowError ('int too big to
# convert') instead of a ValueError naming the argument (fuzz: huge-int-overflow)
@pytest.mark.parametrize("call, name", [
    pytest.param(lambda: sf.Trainer(tiny(), targets.Parity(4), batch_size=4).sample_batch(2**63), "step",
                 id="sample_batch step"),
    pytest.param(lambda: sf.AdamW().bind(tiny()).lr_at(2**63), "step", id="lr_at"),
    pytest.param(lambda: sf.set_memory_limit(2**63), "nbytes", id="set_memory_limit"),
    pytest.param(lambda: sf.Transformer(4, d_model=4, n_heads=1, d_ff=2**31), "d_ff", id="Transformer d_ff"),
    pytest.param(lambda: sf.Transformer(4, d_model=2**32, n_heads=1), "d_model", id="Transformer d_model"),
    pytest.param(lambda: sf.Trainer(tiny(), targets.Parity(4), batch_size=4).evaluate(exact=False, batch_size=2**31),
                 "batch_size", id="evaluate batch_size"),
    pytest.param(lambda: targets.Parity(3).noisy(np.zeros((2, 3), int), step=2**63), "step", id="noisy step"),
    pytest.param(lambda: sf.AdamW(warmup_steps=2**63).bind(tiny()), "warmup_steps", id="warmup_steps"),
    pytest.param(lambda: sf.Trainer(tiny(), targets.Parity(4), batch_size=4).fit(2**70, log_every=2**70,
                                                                                 progress=False),
                 "steps", id="fit steps"),
])
def test_huge_integers_raise_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# ---- Optimizer.load_state_dict ----------------------------------------------------------------------

# Was: Optimizer.load_state_dict writes exp_avg/exp_avg_sq before validating 'step' (and before finding
# exp_avg_sq missing): a failing call leaves the optimizer half-loaded
@pytest.mark.parametrize("edit", ["step=-1", "step=1.5", "no exp_avg_sq"])
def test_optimizer_load_state_dict_writes_nothing_when_it_fails(edit):
    opt = sf.AdamW().bind(tiny())
    state = opt.state_dict()
    bad = dict(state, exp_avg=state["exp_avg"] + 1)
    if edit == "no exp_avg_sq":
        del bad["exp_avg_sq"]
    else:
        bad["step"] = -1 if edit == "step=-1" else 1.5
    with pytest.raises((ValueError, TypeError, KeyError)):
        opt.load_state_dict(bad)
    assert np.array_equal(opt.state_dict()["exp_avg"], state["exp_avg"])


# Was: Optimizer.load_state_dict accepts NaN moments and negative exp_avg_sq, gives a bare NumPy ValueError
# for strings and silently drops the imaginary part of complex values
@pytest.mark.parametrize("value", [np.nan, -1.0, "a", 1 + 1j], ids=["nan", "negative", "str", "complex"])
def test_optimizer_load_state_dict_validates_values(value):
    opt = sf.AdamW().bind(tiny())
    state = opt.state_dict()
    n = state["exp_avg"].size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ComplexWarning: the point is the missing ValueError
        with pytest.raises((ValueError, TypeError), match="exp_avg_sq"):
            opt.load_state_dict(dict(state, exp_avg_sq=np.array([value] * n)))


# ---- probes -------------------------------------------------------------------------------------------

# Was: sharpness(noise=...) and hvp(v=...) call np.isfinite on the raw array: strings/objects give NumPy's
# 'ufunc isfinite not supported' TypeError without naming the argument
@pytest.mark.parametrize("which", ["noise", "v"])
def test_probe_arrays_of_strings_are_refused_by_name(which):
    model = tiny("float64")
    x, y = np.zeros((2, 4), int), np.zeros(2)
    junk = np.full(model.num_parameters, "a")
    with pytest.raises(TypeError, match=which):
        if which == "noise":
            sf.probes.sharpness(model, x, y, repeats=1, noise=junk)
        else:
            sf.probes.hvp(model, x, y, junk)


# Was: complex noise/v are cast to real with only a ComplexWarning (the imaginary part is dropped)
def test_complex_noise_is_refused():
    model = tiny("float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TypeError, match="noise"):
            sf.probes.sharpness(model, np.zeros((2, 4), int), np.zeros(2), repeats=1,
                                noise=np.full(model.num_parameters, 1 + 1j))


# Was: noise beyond float32 range overflows to inf in the cast (RuntimeWarning) and sharpness returns NaN
def test_noise_overflowing_the_model_dtype_is_refused():
    model = tiny("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="noise"):
            sf.probes.sharpness(model, np.zeros((2, 4), int), np.zeros(2), repeats=1,
                                noise=np.full(model.num_parameters, 1e300))


# Was: exclude=5 (not a sequence) failed with "'int' object is not iterable" instead of naming exclude
@pytest.mark.parametrize("probe", ["sharpness", "param_norm"])
def test_exclude_that_is_not_a_sequence(probe):
    model = tiny()
    with pytest.raises(TypeError, match="exclude"):
        if probe == "sharpness":
            sf.probes.sharpness(model, np.zeros((2, 4), int), np.zeros(2), exclude=5)
        else:
            sf.probes.param_norm(model, exclude=5)


# Was: probes.distance(model, array) raises AttributeError: NumPy arrays have a .flat attribute, so an array
# reference is taken for a model
def test_distance_to_a_flat_array():
    model = tiny("float64")
    assert sf.probes.distance(model, np.zeros(model.num_parameters), exclude=()) == pytest.approx(
        np.linalg.norm(model.flat))


# Was: flag arguments are read with bool(): per_sample='no', paper_compatible='no', exact='no' and strict='no'
# all count as True instead of raising TypeError (Transformer and optimizers use check_bool)
@pytest.mark.parametrize("call", [
    pytest.param(lambda m: sf.probes.ln_blowup(m, np.zeros((2, 4), int), per_sample="no"), id="ln_blowup per_sample"),
    pytest.param(lambda m: sf.probes.sharpness(m, np.zeros((2, 4), int), np.zeros(2), paper_compatible="no"),
                 id="sharpness paper_compatible"),
    pytest.param(lambda m: sf.Trainer(m, targets.Parity(4), batch_size=4).evaluate(exact="no"), id="evaluate exact"),
    pytest.param(lambda m: m.load_state_dict(m.state_dict(), strict="no"), id="load_state_dict strict"),
])
def test_flags_are_checked_as_bools(call):
    with pytest.raises(TypeError):
        call(tiny())


# ---- models -------------------------------------------------------------------------------------------

# Was: Transformer.astype('float32') of float64 parameters beyond the float32 range gives a model with inf
# parameters (only a RuntimeWarning) instead of refusing
def test_astype_refuses_overflow():
    model = tiny("float64")
    model.flat[0] = 1e300
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError):
            model.astype("float32")


# Was: labels beyond the float32 range: _validation.as_values casts without np.errstate, so a RuntimeWarning
# ('overflow encountered in cast') precedes the ValueError -- and replaces it under -W error / pytest's
# filterwarnings=error
def test_label_overflow_gives_only_the_value_error():
    model = tiny("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="y must be finite"):
            model.loss(np.zeros((2, 4), int), [1e300, 0.0])


# Was: an unaligned float64 array (valid values, C-contiguous) passes the Python checks and is then refused by
# the C boundary as 'must be C-contiguous, aligned and in native byte order' instead of being copied like
# every other layout
@pytest.mark.parametrize("where", ["labels", "truth_table"])
def test_unaligned_arrays_are_converted(where):
    buf = np.zeros(8 * 4 + 1, np.uint8)
    arr = buf[1:].view(np.float64)
    arr[:] = [0.0, 1.0, 1.0, 0.0]
    assert not arr.flags.aligned
    if where == "labels":
        model = tiny("float64")
        assert model.loss(np.zeros((4, 4), int), arr) == model.loss(np.zeros((4, 4), int), arr.copy())
    else:
        np.testing.assert_array_equal(analysis.fourier(arr), analysis.fourier(arr.copy()))


# ---- Trainer --------------------------------------------------------------------------------------------

# Was: Trainer(model, Parity(4), seq_len=6) trains on parity of 6 bits, but evaluate() calls target(x) on
# 6-bit inputs and raises 'x has length 6, but Parity(n=4) is defined on n=4 bits'
def test_evaluate_with_seq_len_other_than_target_n():
    model = sf.Transformer(6, d_model=4, n_heads=1, n_layers=1)
    trainer = sf.Trainer(model, targets.Parity(4), seq_len=6, batch_size=4)
    trainer.fit(1, progress=False)
    assert 0 <= trainer.evaluate()["accuracy"] <= 1


# Was: Trainer accepts seq_len shorter than the positions a SparseParity/Junta/FourierFunction reads; the
# error only comes from the engine at fit/sample_batch time, without naming seq_len
def test_sparse_target_longer_than_seq_len_is_refused_up_front():
    model = sf.Transformer(6, d_model=4, n_heads=1, n_layers=1)
    with pytest.raises(ValueError, match="seq_len"):
        sf.Trainer(model, targets.SparseParity(4, [0, 3]), seq_len=2, batch_size=4)


# Was: Trainer.evaluate computed squared errors of labels near 1e300 with a RuntimeWarning ('overflow
# encountered in square'), an exception under filterwarnings=error (found by the fuzzer under ASan)
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_evaluate_with_huge_labels_gives_inf_quietly(loss):
    model = sf.Transformer(4, d_model=4, n_heads=1, n_layers=1, dtype="float64")
    y = np.array([1e300, 0.0]) if loss == "mse" else np.array([1.0, 0.0])
    trainer = sf.Trainer(model, data=(np.array([[0, 1], [1, 0]]), y), loss=loss, batch_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = trainer.evaluate()
    assert result["loss"] == np.inf if loss == "mse" else np.isfinite(result["loss"])


# ---- files ----------------------------------------------------------------------------------------------

def _rewrite_member(raw, member, edit):
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, edit(data) if item.filename == member else data)
    return out.getvalue()


# Was: a damaged .npy header inside the archive (zip CRC intact) makes NumPy's header parser raise
# tokenize.TokenError, which escapes sf.load and Trainer.load_checkpoint (not ValueError/CheckpointError)
@pytest.mark.parametrize("kind", ["model", "checkpoint"])
def test_damaged_npy_header_is_refused_cleanly(tmp_path, kind):
    model = tiny()
    if kind == "model":
        model.save(tmp_path / "m.npz")
        member, load = "param/linear_head.bias.npy", lambda p: sf.load(p)
        raw = (tmp_path / "m.npz").read_bytes()
    else:
        trainer = sf.Trainer(model, targets.Parity(4), batch_size=4)
        trainer.save_checkpoint(tmp_path / "m.npz")
        member, load = "params.npy", lambda p: sf.Trainer(tiny(), targets.Parity(4), batch_size=4).load_checkpoint(p)
        raw = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "bad.npz").write_bytes(_rewrite_member(raw, member, lambda d: d.replace(b"}", b" ", 1)))
    with pytest.raises(ValueError, match="bad.npz"):
        load(tmp_path / "bad.npz")


def _crafted_model_file(tmp_path, meta_text):
    model = tiny()
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        contents = {k: z[k] for k in z.files}
    contents["__meta__"] = np.array(meta_text)
    path = tmp_path / "crafted.npz"
    np.savez(path, **contents)
    return path


# Was: sf.load of a file whose metadata is not what Transformer.save writes raises JSONDecodeError,
# AttributeError or TypeError without naming the file
@pytest.mark.parametrize("meta", ["{{{", "[1, 2]", json.dumps(dict(kind="Transformer", config=5)),
                                  json.dumps(dict(kind="Transformer", config=dict(n_positions=4, bogus=1)))],
                         ids=["not json", "list", "config int", "unknown key"])
def test_load_with_bad_metadata_names_the_file(tmp_path, meta):
    path = _crafted_model_file(tmp_path, meta)
    with pytest.raises(ValueError, match="crafted.npz"):
        sf.load(path)


def _crafted_checkpoint(tmp_path, edit_meta=None, edit_arrays=None):
    from sensiformer import checkpoint

    trainer = sf.Trainer(tiny(), targets.Parity(4), batch_size=4, optimizer=sf.AdamW(lr=1e-2))
    trainer.fit(2, progress=False)
    trainer.save_checkpoint(tmp_path / "ck.npz")
    with np.load(tmp_path / "ck.npz") as z:
        contents = {k: z[k] for k in z.files}
    meta = json.loads(str(contents.pop("__meta__")))
    contents.pop("__checksum__")
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(contents)
    text = json.dumps(meta)
    path = tmp_path / "crafted.npz"
    np.savez(path, __meta__=np.array(text), __checksum__=np.array(checkpoint._digest(text, contents)), **contents)
    return path


# Was: load_checkpoint writes the parameters before the optimizer state is checked: a checksum-valid file with
# a bad exp_avg (wrong shape, missing) or a bad optimizer step leaves the trainer half-loaded
@pytest.mark.parametrize("edit", ["exp_avg shape", "exp_avg missing", "optimizer_step negative", "step_count str"])
def test_checkpoint_is_never_loaded_half(tmp_path, edit):
    arrays = {"exp_avg shape": lambda c: c.update(exp_avg=np.zeros(3)),
              "exp_avg missing": lambda c: c.pop("exp_avg")}.get(edit)
    meta = {"optimizer_step negative": lambda m: m.update(optimizer_step=-5),
            "step_count str": lambda m: m.update(step_count="x")}.get(edit)
    path = _crafted_checkpoint(tmp_path, meta, arrays)
    trainer = sf.Trainer(tiny(), targets.Parity(4), batch_size=4, optimizer=sf.AdamW(lr=1e-2))
    before = trainer.model.flat.copy()
    with pytest.raises(sf.CheckpointError):
        trainer.load_checkpoint(path)
    assert np.array_equal(trainer.model.flat, before)


# Was: load_checkpoint accepts non-finite parameters, a negative step count and a non-list history from a
# checksum-valid file
@pytest.mark.parametrize("edit", ["params nan", "step negative", "history int"])
def test_checkpoint_contents_are_validated(tmp_path, edit):
    arrays = {"params nan": lambda c: c.update(params=np.full_like(c["params"], np.nan))}.get(edit)
    meta = {"step negative": lambda m: m.update(step_count=-5), "history int": lambda m: m.update(history=5)}.get(edit)
    path = _crafted_checkpoint(tmp_path, meta, arrays)
    trainer = sf.Trainer(tiny(), targets.Parity(4), batch_size=4, optimizer=sf.AdamW(lr=1e-2))
    with pytest.raises(sf.CheckpointError):
        trainer.load_checkpoint(path)


# ---- targets --------------------------------------------------------------------------------------------

# Was: FourierFunction({1.5: c}, n) and nested keys failed with "'float' object is not iterable" or NumPy's
# 'inhomogeneous shape' ValueError instead of naming the set of positions
@pytest.mark.parametrize("key", [1.5, (0, (1,)), None], ids=["float", "nested", "None"])
def test_fourier_mapping_with_bad_keys(key):
    with pytest.raises((TypeError, ValueError), match="positions"):
        targets.FourierFunction({key: 0.5}, n=3)


# ---- memory limit ---------------------------------------------------------------------------------------

# Was: Python-side allocations ignore sensiformer.set_memory_limit: RandomFunction(n) builds its 2**n table (n
# <= 30: 8 GB) and estimate_sensitivity(samples=...) its sample array without a check, so a huge request is
# only stopped by NumPy (or the OOM killer), with no argument named
@pytest.mark.parametrize("call", [
    pytest.param(lambda: targets.RandomFunction(20), id="RandomFunction"),
    pytest.param(lambda: analysis.estimate_sensitivity(targets.Parity(3), 3, samples=2**40), id="samples"),
])
def test_python_side_buffers_respect_the_memory_limit(call):
    sf.set_memory_limit(1 << 20)
    with pytest.raises(MemoryError, match="memory limit"):
        call()


# Was: Trainer.evaluate() enumerates all 2**n inputs (n <= 16) in chunks of 65536 rows, so exact evaluation
# needs a 65536-row activation workspace -- 3.6 GB at d_model=32, ~14 GB for the default d_model=128 at n=16
# -- which the model then keeps; analysis.truth_table chunks by tokens and fits in a few MB
def test_exact_evaluation_fits_a_modest_memory_limit():
    model = sf.Transformer(14, d_model=16, n_heads=2, n_layers=1)
    trainer = sf.Trainer(model, targets.Parity(14), batch_size=8)
    sf.set_memory_limit(64 << 20)  # evaluate() asks for 0.23 GB here, truth_table for 0.015 GB
    assert analysis.truth_table(model, 14).shape == (2**14,)  # chunked: fits
    assert trainer.evaluate()["n_inputs"] == 2**14


# Was: hessian_trace (and hessian_density for its probes) draws every Rademacher vector up front as a
# (samples, num_parameters) int64 array and a float64 copy (16 bytes per entry, unchecked against the memory
# limit): samples=10**4 on a 50k-parameter model allocates 8 GB; samples=10**6 asks NumPy for 377 GiB
def test_hessian_trace_memory_does_not_scale_with_samples():
    import tracemalloc

    model = sf.Transformer(8, d_model=32, n_heads=2, n_layers=1, dtype="float64")  # ~5k parameters
    x = np.random.default_rng(0).integers(0, 2, size=(8, 8))
    y = targets.Parity(8)(x)
    tracemalloc.start()
    try:
        sf.probes.hessian_trace(model, x, y, samples=100, seed=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * model.num_parameters * 4, f"peak {peak / 2**20:.1f} MiB grows with samples"
