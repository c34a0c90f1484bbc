"""Hypothesis fuzzing of the model, training, optimizer and probe API -- and of the private C
boundary (``sensiformer._engine``, reached through ``sensiformer._native``) underneath it.

Every ``fuzz_*`` target draws valid and invalid arguments and arrays (dtypes from bool to object
and strings, 0-d to 3-d, empty, Fortran, strided, reversed, broadcast, read-only, unaligned,
byte-swapped, NaN/inf, huge integers, wrong types) and asserts: a correct result (finite,
right shape and dtype, equal to what the engine gives for the canonical contiguous input) or a
Python exception of an expected type whose message names the argument -- and that a failing
call changed nothing. The targets run in a child interpreter (tests/test_fuzz_runner.py), so a
crash fails one test with the example that caused it instead of killing the run.

An outcome that matches an open, documented library bug may be tolerated via ``known_bug`` (with a
strict-xfail reproduction in tests/test_reliability_bugs.py); none is open now.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st


import sf_fuzz_runner as R  # registered by conftest.py (pytest) or the fuzzing child

S = R.strategies()
note_case, examples, outcome = R.note_case, R.examples, R.outcome
ALLOWED, MEMORY_LIMIT, check_error, fuzz_settings = R.ALLOWED, R.MEMORY_LIMIT, R.check_error, R.fuzz_settings
is_bool, is_int, is_real, as_array = R.is_bool, R.is_int, R.is_real, R.as_array

import sensiformer as sf  # noqa: E402
from sensiformer import _native, targets  # noqa: E402

R.setup_child(__name__)


# ================================================================================================
# Oracles
# ================================================================================================

def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    try:
        return np.array_equal(a, b, equal_nan=True)
    except TypeError:  # object or string arrays; inside a list, == takes the same object (a NaN too) as equal
        return a.shape == b.shape and a.dtype == b.dtype and [a.tolist()] == [b.tolist()]


def tokens_valid(x, n_positions):
    """The documented contract of ``x``: 2-D (batch >= 1, 1 <= length <= n_positions), an integer,
    bool or float dtype (not timedelta64, which NumPy counts as an integer type), and every value
    0 or 1."""
    arr = as_array(x)
    if arr is None or arr.ndim != 2 or arr.shape[0] < 1 or not 1 <= arr.shape[1] <= n_positions:
        return False
    if arr.dtype.kind not in "biuf":
        return False
    with np.errstate(invalid="ignore"):
        return bool(np.all((arr == 0) | (arr == 1)))


def canonical_tokens(x):
    return np.ascontiguousarray(np.asarray(x).astype(np.uint8))


def labels_valid(y, batch, dtype, loss="mse"):
    """The contract of labels: real numbers, shape (batch,) (or a (batch, 1)/(1, batch) column),
    finite in the model's dtype (and in [0, 1] for BCE)."""
    arr = as_array(y)
    if arr is None or arr.dtype.kind not in "biuf":
        return False
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.shape != (batch,):
        return False
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cast = arr.astype(dtype)
    if not np.all(np.isfinite(cast)):
        return False
    return loss != "bce" or bool(np.all((cast >= 0) & (cast <= 1)))


def canonical_labels(y, dtype):
    return np.ascontiguousarray(np.asarray(y).reshape(-1).astype(dtype))


# ================================================================================================
# Models
# ================================================================================================

CONFIGS = [
    dict(n_positions=6, d_model=4, n_heads=2, n_layers=1, dtype="float64"),
    dict(n_positions=6, d_model=4, n_heads=1, n_layers=2, norm="pre", final_norm=True, dtype="float32",
         activation="gelu"),
    dict(n_positions=5, d_model=6, n_heads=3, n_layers=1, norm="none", dtype="float64", activation="gelu_tanh",
         d_ff=3),
    dict(n_positions=6, d_model=8, n_heads=2, n_layers=2, dtype="float32", identical_layers=False),
    dict(n_positions=6, d_model=4, n_heads=2, n_layers=2, norm="pre", final_norm=True, norm_type="rms",
         dtype="float64", positional="sinusoidal"),
    dict(n_positions=5, d_model=8, n_heads=2, n_layers=1, dtype="float32", positional="add"),
    dict(n_positions=6, d_model=8, n_heads=2, n_layers=2, norm="post", dtype="float64", positional="rope"),
]
_models = {}


def fresh_model(i, seed=0):
    model = sf.Transformer(**CONFIGS[i], seed=seed)
    rng = np.random.default_rng(100 + i)
    model.flat[:] = rng.normal(scale=0.5, size=model.num_parameters)
    return model


def cached_model(i):
    """A shared randomised model for calls that must not change it (checked)."""
    if i not in _models:
        _models[i] = fresh_model(i)
    return _models[i]


model_index = st.integers(0, len(CONFIGS) - 1)
token_palette = st.sampled_from([0, 1, 0, 1, 2, -1, 255, 256, 2**31, 2**63 - 1, -2**63, 2**64 - 1, 0.5, -0.0, 1.0,
                                 float("nan"), float("inf"), True, 1 + 0j, "1"])
token_shapes = st.one_of(st.tuples(st.integers(0, 7), st.integers(0, 8)), st.tuples(st.integers(1, 5), st.integers(1, 6)),
                         st.just(()), st.tuples(st.integers(0, 6)), st.tuples(st.integers(0, 2), st.integers(0, 3),
                                                                              st.integers(0, 3)))
BITS = st.sampled_from([0, 1])
CLEAN_LABELS = st.sampled_from([0.0, 1.0, 0.5, 0.25, 1, 0, True])
valid_tokens = S["arrays"](st.tuples(st.integers(1, 5), st.integers(1, 5)), BITS,
                           dtype_choices=["uint8", "int64", "bool", "int8", ">i2", "uint64", "float64", "float16",
                                          "float32", ">f8", "int32"])
tokens = S["mix"]((1, valid_tokens), (2, S["arrays"](token_shapes, token_palette, clean=BITS)))
label_palette = st.sampled_from([0.0, 1.0, 0.25, 0.5, 1, 0, -3.0, 2.0, 1e10, 1e39, 1e300, -1e300, float("nan"),
                                 float("inf"), -float("inf"), True, 2**64, -0.0, 5e-324, 1 + 1j, "0"])
n_threads_arg = st.sampled_from([None, None, None, 1, 1, 2, 0, -1, 513, 1.0, True, "1", 2**40])


def threads_valid(n):
    return n is None or (is_int(n) and 1 <= n <= 512)


# ================================================================================================
# Transformer construction
# ================================================================================================

def _dtype_ok(d):
    if isinstance(d, str):
        return d in ("float32", "float64")
    if isinstance(d, (np.dtype, type)):
        try:
            return np.dtype(d).name in ("float32", "float64")
        except TypeError:
            return False
    return False


CONFIG_ARGS = {
    "n_positions": S["ints"](st.integers(1, 8) | st.sampled_from([2**20, 2**20 + 1])),
    "d_model": S["ints"](st.sampled_from([2, 4, 6, 8, 12, 3, 5, 65536, 65538])),
    "n_heads": S["ints"](st.integers(1, 8)),
    "n_layers": S["ints"](st.integers(1, 3) | st.sampled_from([64, 65])),
    "d_ff": st.one_of(st.none(), S["ints"](st.integers(1, 16) | st.sampled_from([2**20, 2**20 + 1]))),
    "norm": st.sampled_from(["post", "pre", "none", "batch", None, "POST", 1]),
    "ln_eps": st.sampled_from([1e-5, 0.0, -0.0, -1e-5, float("nan"), float("inf"), 1e300, 5e-324, True, "1e-5",
                               np.float32(1e-5), 1, None]),
    "activation": st.sampled_from(["relu", "gelu", "gelu_tanh", "tanh", None, 0]),
    "dtype": st.sampled_from(["float32", "float64", "float16", "int", np.float32, np.float64, np.dtype("float32"),
                              np.dtype(">f8"), "f4", None, float, ["float32"], np.int32]),
    "seed": st.sampled_from([0, 1, 2**64 - 1, 2**64, -1, 1.0, "0", True, np.uint64(5), np.int64(-1), None]),
    "final_norm": st.sampled_from([True, False, 1, 0, "yes", None, np.bool_(True)]),
    "identical_layers": st.sampled_from([True, False, 1, "no", np.bool_(False)]),
    "norm_type": st.sampled_from(["layer", "rms", "RMS", "batch", None, 1, ""]),
    "positional": st.sampled_from(["concat", "add", "sinusoidal", "none", "rope", "rope ", "learned", None, 2]),
    "rope_base": st.sampled_from([10000.0, 2.0, 1e-3, 0.0, -1.0, float("inf"), float("nan"), "1e4", True, 500]),
}


def config_problems(kw):
    """Names of the arguments that break the documented contract of Transformer(...)."""
    full = dict(d_model=128, n_heads=2, n_layers=2, d_ff=None, norm="post", ln_eps=1e-5, activation="relu",
                dtype="float32", seed=0, final_norm=False, identical_layers=True, norm_type="layer",
                positional="concat", rope_base=10000.0)
    full.update(kw)
    bad = []
    ok_int = lambda v, lo, hi=None: is_int(v) and v >= lo and (hi is None or v <= hi)  # noqa: E731
    if not ok_int(full["n_positions"], 1, 2**20):
        bad.append("n_positions")
    d = full["d_model"]
    if not (ok_int(d, 2, 65536) and d % 2 == 0):
        bad.append("d_model")
    h = full["n_heads"]
    if not ok_int(h, 1):
        bad.append("n_heads")
    elif is_int(d) and int(d) % int(h):
        bad += ["n_heads", "d_model"]
    if not ok_int(full["n_layers"], 1, 64):
        bad.append("n_layers")
    if full["d_ff"] is not None and not ok_int(full["d_ff"], 1, 2**20):
        bad.append("d_ff")
    if not (isinstance(full["norm"], str) and full["norm"] in ("post", "pre", "none")):
        bad.append("norm")
    if not (isinstance(full["norm_type"], str) and full["norm_type"] in ("layer", "rms")):
        bad.append("norm_type")
    if not (isinstance(full["positional"], str) and
            full["positional"] in ("concat", "add", "sinusoidal", "none", "rope")):
        bad.append("positional")
    elif full["positional"] == "rope" and "d_model" not in bad and "n_heads" not in bad and (d // h) % 2:
        bad.append("positional")  # RoPE turns pairs of each head's dimensions
    r = full["rope_base"]
    if not (is_real(r) and math.isfinite(r) and r > 0):
        bad.append("rope_base")
    e = full["ln_eps"]
    if not (is_real(e) and math.isfinite(e) and e >= 0):
        bad.append("ln_eps")
    if not (isinstance(full["activation"], str) and full["activation"] in ("relu", "gelu", "gelu_tanh")):
        bad.append("activation")
    if not _dtype_ok(full["dtype"]):
        bad.append("dtype")
    if not ok_int(full["seed"], 0, 2**64 - 1):
        bad.append("seed")
    for name in ("final_norm", "identical_layers"):
        if not is_bool(full[name]):
            bad.append(name)
    if is_bool(full["final_norm"]) and full["final_norm"] and full["norm"] != "pre":
        bad.append("final_norm")
    return bad


@fuzz_settings(500)
@given(st.fixed_dictionaries({}, optional=CONFIG_ARGS), CONFIG_ARGS["n_positions"])
def fuzz_transformer_config(kwargs, n_positions):
    kwargs = dict(kwargs, n_positions=n_positions)
    note_case(kwargs=kwargs)
    kwargs.setdefault("d_model", 4)  # keep the default-sized model cheap
    bad = config_problems(kwargs)
    try:
        model = sf.Transformer(**kwargs)
    except Exception as err:
        if isinstance(err, MemoryError) and not bad:
            assert "memory limit" in str(err) and "GB" in str(err), str(err)
            outcome("over the memory limit")
            return
        outcome("refused")
        assert bad, f"a valid configuration was refused: {type(err).__name__}: {err}"
        check_error(err, bad, "Transformer(...)")
        return
    assert not bad, f"an invalid configuration was accepted (bad: {bad})"
    outcome("ok")
    c = model.config
    assert c["n_positions"] == kwargs["n_positions"] and c["d_model"] == kwargs["d_model"]
    assert model.flat.dtype == model.dtype and np.all(np.isfinite(model.flat))
    assert sum(t["size"] for t in model.tensor_info) == model.num_parameters
    length = min(c["n_positions"], 3)
    out = model.forward(np.array([[0, 1, 1][:length], [1, 0, 0][:length]]))
    assert out.shape == (2,) and out.dtype == model.dtype and np.all(np.isfinite(out))


# ================================================================================================
# forward, loss, loss_and_grad
# ================================================================================================

@fuzz_settings(600)
@given(model_index, tokens, n_threads_arg, st.booleans())
def fuzz_forward_tokens(i, x, n_threads, call):
    note_case(model=i, x=x, n_threads=n_threads, call=call)
    model = cached_model(i)
    before = model.flat.copy()
    x_before = x.copy() if isinstance(x, np.ndarray) else None
    valid = tokens_valid(x, model.n_positions) if threads_valid(n_threads) else False
    try:
        out = model(x, n_threads=n_threads) if call else model.forward(x, n_threads=n_threads)
    except Exception as err:
        assert not valid, f"valid tokens refused: {type(err).__name__}: {err}"
        check_error(err, ["x", "n_threads"], "forward")
        outcome("refused")
    else:
        assert valid, "invalid tokens or n_threads accepted"
        xc = canonical_tokens(x)
        ref = _native.forward(model=model._engine, x=xc, n_threads=1)
        assert out.shape == (xc.shape[0],) and out.dtype == model.dtype
        assert np.all(np.isfinite(out))
        assert np.array_equal(out, ref), "forward on this layout differs from its contiguous uint8 copy"
        outcome("ok")
    assert np.array_equal(model.flat, before), "forward changed the parameters"
    if x_before is not None:
        assert same(x, x_before), "forward changed its input"


@st.composite
def loss_case(draw):
    i = draw(model_index)
    n_pos = CONFIGS[i]["n_positions"]
    if draw(st.integers(0, 4)):
        b, t = draw(st.integers(1, 6)), draw(st.integers(1, n_pos))
        x = draw(S["arrays"](st.just((b, t)), BITS, dtype_choices=["uint8", "int64", "bool"]))
    else:
        x = draw(tokens)
    arr = as_array(x)
    b = arr.shape[0] if arr is not None and arr.ndim >= 1 else 1
    shapes = st.sampled_from([(b,), (b,), (b,), (b, 1), (1, b), (b + 1,), (max(b - 1, 0),), (), (b, 2), (0,)])
    y = draw(S["arrays"](shapes, label_palette, clean=CLEAN_LABELS))
    loss = draw(st.sampled_from(["mse", "mse", "bce", "l1", None, 0]))
    return i, x, y, loss, draw(n_threads_arg)


@fuzz_settings(500)
@given(loss_case())
def fuzz_loss_labels(case):
    i, x, y, loss, n_threads = case
    note_case(model=i, x=x, y=y, loss=loss, n_threads=n_threads)
    model = cached_model(i)
    params, grads = model.flat.copy(), model.flat_grad.copy()
    loss_ok = isinstance(loss, str) and loss in ("mse", "bce")
    x_ok = tokens_valid(x, model.n_positions)
    valid = False
    if x_ok and loss_ok and threads_valid(n_threads):
        valid = labels_valid(y, np.asarray(x).shape[0], model.dtype, loss)
    try:
        value = model.loss(x, y, loss=loss, n_threads=n_threads)
        value2, g = model.loss_and_grad(x, y, loss=loss, n_threads=n_threads)
    except Exception as err:
        assert not valid, f"valid (x, y, loss) refused: {type(err).__name__}: {err}"
        check_error(err, ["x", "y", "loss", "n_threads"], "loss")
        outcome("refused")
        assert np.array_equal(model.flat_grad, grads), "a failing loss call changed the gradient buffer"
    else:
        assert valid, "invalid (x, y, loss, n_threads) accepted"
        xc, yc = canonical_tokens(x), canonical_labels(y, model.dtype)
        ref, _ = _native.loss_and_grad(model=model._engine, x=xc, y=yc, loss={"mse": 0, "bce": 1}[loss], grad=True,
                                       n_threads=1)
        assert isinstance(value, float) and value == value2 == ref
        assert np.array_equal(model.flat_grad, np.concatenate([v.ravel() for v in g.values()]))
        if np.max(np.abs(yc), initial=0) <= 1e15:
            assert math.isfinite(value) and np.all(np.isfinite(model.flat_grad))
        outcome("ok")
    assert np.array_equal(model.flat, params), "loss changed the parameters"


# ================================================================================================
# Optimizers
# ================================================================================================

OPT_ARGS = {
    "lr": st.sampled_from([1e-3, 0.0, 1e-8, 10.0, 1e6, 1e50, 1e300, -1.0, float("nan"), float("inf"), True, "1",
                           None, 1]),
    "weight_decay": st.sampled_from([0.0, 0.1, -1.0, 1e300, float("nan"), 1]),
    "decay_all": st.sampled_from([True, False, 0, "no"]),
    "schedule": st.sampled_from(["constant", "cosine", "linear", None]),
    "warmup_steps": S["ints"](st.integers(0, 6)),
    "total_steps": S["ints"](st.integers(0, 12)),
    "min_lr": st.sampled_from([0.0, 1e-4, -1.0, float("nan"), 1.0]),
    "clip_norm": st.sampled_from([None, 0.0, 1.0, -1.0, float("nan"), float("inf"), 1e-300, "1"]),
}
ADAM_ARGS = dict(OPT_ARGS, betas=st.sampled_from([(0.9, 0.999), (0.0, 0.0), (1.0, 1.0), (0.9,), [0.5, 0.5],
                                                  (float("nan"), 0.9), (-0.1, 0.5), "ab", None, (0.9, 0.999, 0.1)]),
                 eps=st.sampled_from([1e-8, 0.0, -1.0, float("nan"), 1e300]))
SGD_ARGS = dict(OPT_ARGS, momentum=st.sampled_from([0.0, 0.9, 1.0, 2.0, -1.0]),
                dampening=st.sampled_from([0.0, 0.5, 1.0, 1.5]),
                nesterov=st.sampled_from([False, True, 1, "no"]))


@st.composite
def optimizer_case(draw):
    cls = draw(st.sampled_from([sf.AdamW, sf.Adam, sf.SGD]))
    kwargs = draw(st.fixed_dictionaries({}, optional=SGD_ARGS if cls is sf.SGD else ADAM_ARGS))
    if draw(st.integers(0, 19)) == 0:
        kwargs["bogus"] = 1
    lr_steps = draw(st.lists(st.sampled_from([0, 1, 5, 11, 10**6, 2**62, -1, 1.5, 2**63, None]), max_size=3))
    edit = draw(st.sampled_from(["none", "kind", "shape", "str", "nan", "negative_sq", "complex", "step_neg",
                                 "step_float", "step_huge", "missing", "list"]))
    return cls, kwargs, lr_steps, edit, draw(model_index)


@fuzz_settings(400)
@given(optimizer_case())
def fuzz_optimizer(case):
    cls, kwargs, lr_steps, edit, i = case
    note_case(cls=cls.__name__, kwargs=kwargs, lr_steps=lr_steps, edit=edit, model=i)
    try:
        opt = cls(**kwargs)
    except Exception as err:
        check_error(err, list(kwargs) + ["betas[0]", "betas[1]", "total_steps", "nesterov"], f"{cls.__name__}(...)")
        outcome("refused")
        return
    h = opt.hyper
    for name in ("lr", "weight_decay", "min_lr", "eps"):
        assert math.isfinite(h[name]) and h[name] >= 0, name
    model = fresh_model(i)
    try:
        opt.bind(model)
    except Exception as err:
        check_error(err, list(kwargs), "bind")
        return
    for step in lr_steps:
        try:
            lr = opt.lr_at(step)
        except Exception as err:
            check_error(err, ["step"], "lr_at")
        else:
            assert is_int(step) and step >= 0
            assert math.isfinite(lr) and 0 <= lr <= max(h["lr"], h["min_lr"]) * (1 + 1e-12), (step, lr)
    x = np.array([[0, 1, 1, 0, 1], [1, 1, 0, 0, 0], [0, 0, 0, 1, 1]])
    model.loss_and_grad(x, [0.0, 1.0, 1.0])
    p0, s0, k0 = model.flat.copy(), opt.state_dict(), opt.step_count
    try:
        norm = opt.step()
    except FloatingPointError as err:
        assert re.search(r"finite|lr|learning rate", str(err)), str(err)
        assert np.array_equal(model.flat, p0), "a refused step changed the parameters"
        s1 = opt.state_dict()
        assert same(s1["exp_avg"], s0["exp_avg"]) and same(s1["exp_avg_sq"], s0["exp_avg_sq"])
        assert opt.step_count == k0
        outcome("step refused (non-finite update)")
    else:
        outcome("stepped")
        assert math.isfinite(norm) and norm >= 0
        assert np.all(np.isfinite(model.flat)), "a step wrote non-finite parameters"
        assert opt.step_count == k0 + 1
    _fuzz_optimizer_state(opt, edit)


def _fuzz_optimizer_state(opt, edit):
    state = opt.state_dict()
    opt.load_state_dict(state)  # round trip
    after = opt.state_dict()
    assert same(after["exp_avg"], state["exp_avg"]) and after["step"] == state["step"]
    n = state["exp_avg"].size
    bad = dict(state)
    if edit == "none":
        return
    if edit == "kind":
        bad["kind"] = "other"
    elif edit == "shape":
        bad["exp_avg"] = np.zeros(n + 1)
    elif edit == "str":
        bad["exp_avg"] = np.array(["a"] * n)
    elif edit == "nan":
        bad["exp_avg"] = np.full(n, np.nan)
    elif edit == "negative_sq":
        bad["exp_avg_sq"] = np.full(n, -1.0)
    elif edit == "complex":
        bad["exp_avg"] = np.full(n, 1 + 1j)
    elif edit == "step_neg":
        bad["exp_avg"], bad["step"] = state["exp_avg"] + 1, -1
    elif edit == "step_float":
        bad["exp_avg"], bad["step"] = state["exp_avg"] + 1, 1.5
    elif edit == "step_huge":
        bad["exp_avg"], bad["step"] = state["exp_avg"] + 1, 2**70
    elif edit == "missing":
        del bad["exp_avg_sq"]
        bad["exp_avg"] = state["exp_avg"] + 1
    elif edit == "list":
        bad["exp_avg"] = (state["exp_avg"] + 1).tolist()
    try:
        opt.load_state_dict(bad)
    except Exception as err:
        assert edit != "list", f"a valid state (moments as a list) was refused: {err}"
        check_error(err, ["kind", "exp_avg", "exp_avg_sq", "step", "state"], f"load_state_dict({edit})")
        now = opt.state_dict()
        assert same(now["exp_avg"], state["exp_avg"]) and same(now["exp_avg_sq"], state["exp_avg_sq"]) \
            and now["step"] == state["step"], f"a failing load_state_dict({edit}) wrote part of the state"
        outcome(f"load_state_dict({edit}) refused")
        return
    assert edit == "list", f"load_state_dict accepted a bad state ({edit})"
    assert same(opt.state_dict()["exp_avg"], np.asarray(bad["exp_avg"], dtype=state["exp_avg"].dtype))


# ================================================================================================
# Trainer: construction, fit, evaluate, sample_batch, step
# ================================================================================================

TARGET_MAKERS = [
    lambda n: targets.Parity(n), lambda n: targets.Majority(n), lambda n: targets.First(n), lambda n: targets.Mean(n),
    lambda n: targets.RandomFunction(n, seed=1), lambda n: targets.SparseParity(n, [0, n - 1] if n > 1 else [0]),
    lambda n: targets.Junta(n, k=min(n, 2), seed=2), lambda n: targets.Parity(n, noise=0.25),
    lambda n: targets.FourierFunction({(0,): 0.5, (n - 1,): -0.5}, n=n, output="sign"),
    lambda n: targets.Callable(lambda x: x[:, 0] * x[:, -1], n),
]


@st.composite
def trainer_case(draw):
    i = draw(st.sampled_from([0, 1, 2]))
    n_pos = CONFIGS[i]["n_positions"]
    kwargs = {}
    if draw(st.integers(0, 5)):
        n = draw(st.integers(1, n_pos + 1))
        kwargs["target"] = draw(st.sampled_from(TARGET_MAKERS))(n)
        if draw(st.integers(0, 3)) == 0:
            kwargs["train_subset"] = draw(st.one_of(
                st.lists(st.integers(-1, 2**n), min_size=1, max_size=6), st.just([]),
                st.just(np.array([[1, 2]])), st.just([0.0, 1.0]), st.just(["a"]),
                st.just(np.array([2**63], dtype=np.uint64))))
    else:
        rows, length = draw(st.integers(1, 6)), draw(st.integers(1, n_pos + 1))
        x = draw(S["arrays"](st.just((rows, length)), token_palette, clean=BITS,
                             dtype_choices=["uint8", "int64", "bool", "float64", ">i2"]))
        y = draw(S["arrays"](st.sampled_from([(rows,), (rows,), (rows + 1,)]), label_palette,
                             clean=CLEAN_LABELS, dtype_choices=["float64", "float32", "int64"]))
        kwargs["data"] = draw(st.sampled_from([(x, y), (x, y), [x, y], (x,), x]))
        if draw(st.booleans()):
            kwargs["target"] = None
    optional = {
        "loss": st.sampled_from(["mse", "bce", "l1"]),
        "labels": st.sampled_from(["01", "pm1", "+-1"]),
        "batch_size": S["ints"](st.integers(1, 8) | st.just(2**24 + 1)),
        "seed": st.sampled_from([0, 3, 2**64 - 1, -1, 2**64, 0.5]),
        "n_threads": n_threads_arg,
        "seq_len": st.one_of(st.none(), S["ints"](st.integers(1, n_pos + 1))),
        "optimizer": st.sampled_from(["adamw", "sgd", "adam", "bound", None]),
    }
    kwargs.update(draw(st.fixed_dictionaries({}, optional=optional)))
    ops = draw(st.lists(st.one_of(
        st.tuples(st.just("fit"), S["ints"](st.integers(0, 4), huge_ok=False), S["ints"](st.integers(1, 3)),
                  st.sampled_from([None, 1, 2, 0])),
        st.tuples(st.just("evaluate"), S["ints"](st.integers(1, 2), huge_ok=False),
                  st.one_of(st.none(), S["ints"](st.integers(1, 6))), st.sampled_from([None, True, False]),
                  st.sampled_from([None, 0, 7, -1, 2**64]))
        , st.tuples(st.just("sample_batch"), st.one_of(st.none(), S["ints"](st.integers(0, 50)))),
        st.tuples(st.just("step"))), min_size=1, max_size=4))
    return i, kwargs, ops


def _make_optimizer(kind, model):
    if kind == "adamw":
        return sf.AdamW(lr=1e-2)
    if kind == "sgd":
        return sf.SGD(lr=1e-2, momentum=0.5)
    if kind == "bound":
        return sf.AdamW().bind(fresh_model(0))  # bound to another model
    return kind


@fuzz_settings(250)
@given(trainer_case())
def fuzz_trainer(case):
    i, kwargs, ops = case
    note_case(model=i, kwargs=kwargs, ops=ops)
    model = fresh_model(i)
    if "optimizer" in kwargs:
        kwargs["optimizer"] = _make_optimizer(kwargs["optimizer"], model)
    try:
        trainer = sf.Trainer(model, **kwargs)
    except Exception as err:
        names = [k for k in kwargs] + ["data x", "data y", "seq_len", "n_positions", "labels", "loss",
                                       "train_subset", "optimizer", "target", "data", "bce"]
        check_error(err, names, "Trainer(...)")
        outcome("Trainer refused")
        opt = kwargs.get("optimizer")
        if isinstance(opt, sf.Optimizer) and opt._model is None:
            opt.bind(model)  # a failed Trainer left its optimizer free
        return
    outcome("Trainer built")
    for op in ops:
        _trainer_op(trainer, op)
        assert trainer.step_count == trainer.optimizer.step_count
        assert np.all(np.isfinite(model.flat))


def _trainer_op(trainer, op):
    model = trainer.model
    kind = op[0]
    before = (trainer.step_count, model.flat.copy(), len(trainer._rows))
    try:
        if kind == "fit":
            _, steps, log_every, cb_every = op
            callbacks = [] if cb_every is None else [sf.Callback(lambda t: {"probe": 1.0}, every=cb_every)]
            history = trainer.fit(steps, log_every=log_every, callbacks=callbacks, progress=False)
            assert trainer.status == "ok"
            assert trainer.step_count == before[0] + steps
            if steps:
                assert history["step"].iloc[-1] == trainer.step_count
                assert np.all(np.isfinite(history["loss"].dropna()))
        elif kind == "evaluate":
            _, batches, batch_size, exact, seed = op
            result = trainer.evaluate(batches=batches, batch_size=batch_size, exact=exact, seed=seed)
            huge = trainer.data is not None and np.max(np.abs(trainer.data[1])) > 1e150  # squared errors overflow
            assert math.isfinite(result["loss"]) or huge, result
            assert 0 <= result["accuracy"] <= 1 and result["n_inputs"] >= 1
        elif kind == "sample_batch":
            x, y = trainer.sample_batch(op[1])
            assert x.shape == (trainer.batch_size, trainer.seq_len) and x.dtype == np.uint8
            assert np.all(x <= 1) and y.shape == (trainer.batch_size,) and np.all(np.isfinite(y))
            x2, y2 = trainer.sample_batch(op[1])
            assert np.array_equal(x, x2) and np.array_equal(y, y2), "sample_batch is not deterministic"
            if trainer.target is not None and not trainer.target.noise and trainer.seq_len == trainer.target.n:
                assert np.array_equal(y, trainer.target(x)), "sampled labels differ from the target"
            if trainer.data is not None:
                rows = {(tuple(r), v) for r, v in zip(trainer.data[0].tolist(), trainer.data[1].tolist())}
                assert all((tuple(r), v) in rows for r, v in zip(x.tolist(), y.tolist()))
        else:
            x, y = trainer.sample_batch()
            if trainer.labels == "pm1":
                y = 2 * y - 1
            value = trainer.step(x, y)
            assert math.isfinite(value)
            trainer.step_count += 1  # Trainer.step leaves the stream position to the caller
        outcome(f"{kind} ok")
    except FloatingPointError:
        outcome(f"{kind} diverged")
        assert trainer.status in ("diverged", "ok", "ready")
        assert np.all(np.isfinite(model.flat))
    except Exception as err:
        check_error(err, ["steps", "log_every", "every", "batches", "batch_size", "step", "seed", "exact",
                          "n_threads"], f"Trainer.{kind}{op[1:]}")
        outcome(f"{kind} refused")
        if kind != "step":
            assert trainer.step_count == before[0] and np.array_equal(model.flat, before[1])


# ================================================================================================
# Probes
# ================================================================================================

@st.composite
def probe_case(draw):
    i = draw(model_index)
    n_pos = CONFIGS[i]["n_positions"]
    rows = draw(st.sampled_from([1, 2, 4, 6]))
    if draw(st.integers(0, 5)):
        x = draw(S["arrays"](st.just((rows, draw(st.integers(1, n_pos)))), BITS,
                             dtype_choices=["uint8", "int64", "bool"]))
        y = draw(S["arrays"](st.just((rows,)), CLEAN_LABELS, dtype_choices=["float64", "int64"]))
    else:
        x = draw(tokens)
        y = draw(S["arrays"](st.sampled_from([(rows,), (1,), ()]), label_palette))
    repeats = draw(S["ints"](st.integers(1, 3) | st.just(2**20 + 1)))
    P = sf.Transformer(**CONFIGS[i]).num_parameters
    noise = draw(st.sampled_from(["none", "none", "none", "valid", "flat", "shape", "nan", "str", "object", "complex",
                                  "list", "huge"]))
    kwargs = draw(st.fixed_dictionaries({}, optional={
        "sigma": st.sampled_from([None, 0.0, 0.02, 1.0, -1.0, float("nan"), float("inf"), 1e300, True, "0.1"]),
        "rho": st.sampled_from([None, 0.0, 0.1, -1.0, float("nan")]),
        "seed": st.sampled_from([0, 5, 2**64 - 1, -1, 2**64, 1.5]),
        "exclude": st.sampled_from([("positional",), (), None, "weight", ["encoders.layers.0.*"], [None], 5,
                                    ("nonexistent",), "*"]),
        "batch_size": st.sampled_from([None, 1, 2, 3, 0, -1, "2"]),
        "paper_compatible": st.sampled_from([False, True]),
        "as_pm1": st.sampled_from([False, True]),
        "loss": st.sampled_from(["mse", "bce", "l1"]),
        "n_threads": n_threads_arg,
    }))
    definition = draw(st.sampled_from(["official", "theory", "other", None]))
    v = draw(st.sampled_from(["normal", "normal", "2d", "wrong", "nan", "str"]))
    return i, x, y, repeats, noise, P, kwargs, definition, v


def _noise(kind, repeats, P, rng):
    r = repeats if is_int(repeats) and 1 <= repeats <= 4 else 1
    return {"none": None, "valid": rng.normal(size=(r, P)), "flat": rng.normal(size=P), "shape": np.zeros((r, P + 1)),
            "nan": np.full((r, P), np.nan), "str": np.full((r, P), "a"), "object": np.zeros((r, P), dtype=object),
            "complex": np.full((r, P), 1 + 1j), "list": rng.normal(size=(r, P)).tolist(),
            "huge": np.full((r, P), 1e300)}[kind]


@fuzz_settings(350)
@given(probe_case())
def fuzz_probes(case):
    i, x, y, repeats, noise_kind, P, kwargs, definition, v_kind = case
    model = cached_model(i)
    rng = np.random.default_rng(0)
    noise = _noise(noise_kind, repeats, P, rng)
    note_case(model=i, x=x, y=y, repeats=repeats, noise=noise_kind, kwargs=kwargs, definition=definition, v=v_kind)
    params = model.flat.copy()
    names = ["x", "y", "repeats", "noise", "sigma", "rho", "seed", "exclude", "batch_size", "loss", "n_threads"]
    try:
        est = sf.probes.sharpness(model, x, y, repeats=repeats, noise=noise, **kwargs)
    except Exception as err:
        check_error(err, names + ["paper_compatible", "as_pm1"], "sharpness")
        outcome("sharpness refused")
    else:
        outcome("sharpness ok")
        assert est.n_samples == repeats and len(est.samples) == repeats
        sigma, rho = kwargs.get("sigma"), kwargs.get("rho")
        moderate = noise_kind != "huge" and (sigma is None or sigma <= 1.0) and (rho is None or rho <= 1.0)
        if moderate:
            assert np.all(np.isfinite(est.samples)) and math.isfinite(est.value), est
        if (sigma == 0.0 or rho == 0.0) and noise_kind == "none":
            assert est.value == 0.0, "zero noise must give zero sharpness"
        again = sf.probes.sharpness(model, x, y, repeats=repeats, noise=noise, **kwargs)
        assert same(est.samples, again.samples), "sharpness with the same seed is not reproducible"
    assert np.array_equal(model.flat, params), "sharpness changed the parameters"

    try:
        blow = sf.probes.ln_blowup(model, x, definition=definition)
    except Exception as err:
        check_error(err, ["x", "definition", "norm"], "ln_blowup")
    else:
        values = np.array([v for k, v in blow.items() if not isinstance(v, np.ndarray)])
        assert not np.any(np.isnan(values)) and np.all(values > 0)
        if definition == "theory":
            assert np.all(np.isfinite(values))

    try:
        scale = sf.probes.attention_logit_scale(model, x)
    except Exception as err:
        check_error(err, ["x"], "attention_logit_scale")
    else:
        c = model.config
        assert scale["max"].shape == (c["n_layers"], c["n_heads"]) == scale["mean"].shape
        assert np.all(np.isfinite(scale["max"])) and np.all(scale["mean"] >= 0)
        assert np.all(scale["max"] >= scale["mean"] * (1 - 1e-12))  # equal up to rounding with one key

    exclude = kwargs.get("exclude", ("positional",))
    try:
        norm = sf.probes.param_norm(model, exclude=exclude)
    except Exception as err:
        check_error(err, ["exclude"], "param_norm")
    else:
        assert math.isfinite(norm) and norm >= 0
        assert sf.probes.distance(model, model, exclude=exclude) == 0.0
        zero = sf.Transformer(**CONFIGS[i])
        zero.flat[:] = 0
        assert sf.probes.distance(model, zero, exclude=exclude) == pytest.approx(norm, rel=1e-12)
        d = sf.probes.distance(model, np.zeros(P), exclude=exclude)  # a flat array as the reference
        assert d == pytest.approx(norm, rel=1e-12)

    v = {"normal": rng.normal(size=P), "2d": rng.normal(size=(2, P)), "wrong": rng.normal(size=P + 1),
         "nan": np.full(P, np.nan), "str": np.full(P, "a")}[v_kind]
    try:
        hv = sf.probes.hvp(model, x, y, v, loss=kwargs.get("loss", "mse"), n_threads=kwargs.get("n_threads"))
    except Exception as err:
        check_error(err, ["x", "y", "v", "loss", "n_threads", "batch_size"], "hvp")
    else:
        assert hv.shape == v.shape and hv.dtype == model.dtype and np.all(np.isfinite(hv))
        outcome("hvp ok")
    assert np.array_equal(model.flat, params), "a probe changed the parameters"


# ================================================================================================
# Parameters: load_state_dict, the flat setter, reinitialize, astype
# ================================================================================================

value_palette = st.sampled_from([0.0, 1.0, -2.5, 0.1, 1e39, 1e300, float("nan"), float("inf"), True, 2**64, 1 + 1j,
                                 "a", None])


NON_TIMEDELTA_DTYPES = st.sampled_from([d for d in S["dtypes"] if not d.startswith("m8")])  # see tokens_valid


@st.composite
def state_case(draw):
    i = draw(model_index)
    names = [t["name"] for t in sf.Transformer(**CONFIGS[i]).tensor_info]
    edits = draw(st.lists(st.tuples(st.sampled_from(["drop", "add", "shape", "dtype", "value", "list", "0d"]),
                                    st.sampled_from(names), NON_TIMEDELTA_DTYPES, value_palette),
                          max_size=3))
    container = draw(st.sampled_from(["dict", "dict", "dict", "pairs", "none"]))
    strict = draw(st.sampled_from([True, True, False]))
    flat = draw(st.sampled_from(["valid", "valid", "shape", "2d", "nan", "str", "complex", "f32", "int", "overflow",
                                 "list", "object"]))
    seed = draw(st.sampled_from([None, 0, 7, 2**64 - 1, -1, 1.5, True, 2**64]))
    return i, edits, container, strict, flat, seed


@fuzz_settings(300)
@given(state_case())
def fuzz_parameters(case):
    i, edits, container, strict, flat_kind, seed = case
    note_case(model=i, edits=edits, container=container, strict=strict, flat=flat_kind, seed=seed)
    model = fresh_model(i)
    dtype = model.dtype
    rng = np.random.default_rng(1)
    state = {k: v + rng.normal(size=v.shape) for k, v in model.state_dict().items()}
    bad_keys = []
    for what, name, new_dtype, value in edits:
        if what == "drop":
            state.pop(name, None)
        elif what == "add":
            state[name + ".extra"] = np.zeros(2)
        elif what == "shape":
            state[name] = np.zeros(np.shape(state.get(name, np.zeros(1)))[:-1] + (7,))
        elif what == "dtype" and name in state:
            state[name] = S["fill"](np.asarray(state[name]).ravel().tolist(), new_dtype,
                                    np.shape(state[name]))
        elif what == "value" and name in state:
            arr = np.array(state[name], dtype=object)
            arr.flat[0] = value
            state[name] = arr
        elif what == "list" and name in state:
            state[name] = np.asarray(state[name]).tolist()
        elif what == "0d":
            state[name] = np.float64(1.0)
    expected = model.state_dict()
    for key, value in state.items():
        if key not in expected:
            if strict:
                bad_keys.append(key)
            continue
        arr = as_array(value)
        if arr is None or arr.shape != expected[key].shape or arr.dtype.kind not in "biuf":
            bad_keys.append(key)
            continue
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            cast = arr.astype(dtype)
        if not np.all(np.isfinite(cast)):
            bad_keys.append(key)
            continue
        expected[key] = cast
    missing = strict and any(k not in state for k in expected)
    before = model.flat.copy()
    arg = {"dict": state, "pairs": list(state.items()), "none": None}[container]
    try:
        model.load_state_dict(arg, strict=strict)
    except Exception as err:
        assert container != "dict" or bad_keys or missing, f"a valid state was refused: {type(err).__name__}: {err}"
        check_error(err, bad_keys + ["state", "missing keys"], "load_state_dict")
        assert np.array_equal(model.flat, before), "a failing load_state_dict changed the parameters"
        outcome("load_state_dict refused")
    else:
        outcome("load_state_dict ok")
        assert container == "dict" and not bad_keys and not missing, f"a bad state was accepted: {bad_keys}"
        for key, value in model.state_dict().items():
            assert np.array_equal(value, expected[key]), key

    P = model.num_parameters
    values = {"valid": rng.normal(size=P), "shape": np.zeros(P + 1), "2d": np.zeros((1, P)), "nan": np.full(P, np.nan),
              "str": np.full(P, "a"), "complex": np.full(P, 1 + 1j), "f32": rng.normal(size=P).astype(np.float32),
              "int": np.arange(P), "overflow": np.full(P, 1e300), "list": rng.normal(size=P).tolist(),
              "object": np.zeros(P, dtype=object)}[flat_kind]
    valid = flat_kind in ("valid", "f32", "int", "list") or (flat_kind == "overflow" and dtype == np.float64)
    before = model.flat.copy()
    try:
        model.flat = values
    except Exception as err:
        assert not valid, f"valid flat values refused: {err}"
        check_error(err, ["flat"], "flat setter")
        assert np.array_equal(model.flat, before)
    else:
        assert valid, f"bad flat values accepted ({flat_kind})"
        assert np.array_equal(model.flat, np.asarray(values).astype(dtype))

    before = model.flat.copy()
    try:
        model.reinitialize(seed)
    except Exception as err:
        check_error(err, ["seed"], "reinitialize")
        assert np.array_equal(model.flat, before)
    else:
        ref = sf.Transformer(**dict(model.config, seed=model.config["seed"] if seed is None else seed))
        assert np.array_equal(model.flat, ref.flat), "reinitialize(seed) differs from a fresh model with that seed"
    overflows = dtype == np.float64 and np.max(np.abs(model.flat)) > np.finfo(np.float32).max
    try:
        other = model.astype("float64" if dtype == np.float32 else "float32")
    except ValueError as err:
        assert overflows, f"astype refused representable parameters: {err}"
        check_error(err, ["parameters in float32"], "astype")
    else:
        assert not overflows, "astype('float32') turned parameters beyond float32's range into inf"
        assert np.array_equal(other.flat, model.flat.astype(other.dtype))
    assert np.array_equal(model.copy().flat, model.flat)


# ================================================================================================
# Settings: threads and the memory limit
# ================================================================================================

@fuzz_settings(100)
@given(st.sampled_from([None, 1, 2, 512, 0, -1, 513, 1.5, True, "2", 2**63, 2**70]),
       st.sampled_from([None, 1, 10_000, MEMORY_LIMIT, 2**40, 0, -1, 1e9, True, "1", 2**63, 2**70]))
def fuzz_settings_calls(threads, limit):
    note_case(threads=threads, limit=limit)
    model = cached_model(0)
    x = np.zeros((3, 6), np.uint8)
    ref = _native.forward(model=model._engine, x=x, n_threads=1)
    try:
        try:
            sf.set_num_threads(threads)
        except Exception as err:
            check_error(err, ["n"], "set_num_threads")
        else:
            assert threads is None or sf.get_num_threads() in (threads, 1)  # 1 without OpenMP
        try:
            sf.set_memory_limit(limit)
        except Exception as err:
            check_error(err, ["nbytes"], "set_memory_limit")
        else:
            assert limit is None or sf.show_config(print_out=False)["memory_limit"] == limit
        try:
            out = model.forward(x)
        except MemoryError as err:
            assert "memory limit" in str(err)
        else:
            assert np.array_equal(out, ref)
    finally:
        sf.set_num_threads(1)
        sf.set_memory_limit(MEMORY_LIMIT)


# ================================================================================================
# The encoder-decoder (scratchpad) model
# ================================================================================================

_SEQ = {}


def seq_model(i):
    if i not in _SEQ:
        model = sf.Seq2SeqTransformer(5, d_model=4, n_heads=2, n_layers=1, dtype=("float64", "float32")[i % 2],
                                      norm=("post", "pre")[i % 2], norm_type=("layer", "rms")[i // 2],
                                      positional=("concat", "rope", "add", "sinusoidal")[i], seed=i)
        model.flat[:] = np.random.default_rng(i).normal(scale=0.5, size=model.num_parameters)
        _SEQ[i] = model
    return _SEQ[i]


dec_palette = st.sampled_from([0, 1, 2, 0, 1, 2, 3, -1, 255, 0.5])
SEQ_CALL = st.sampled_from(["forward", "loss", "loss", "generate"])


@st.composite
def seq_case(draw):
    i = draw(st.integers(0, 3))  # dtype and placement alternate; 2, 3: RMSNorm
    b, t = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    if draw(st.integers(0, 3)):
        x = draw(S["arrays"](st.just((b, t)), BITS, dtype_choices=["uint8", "int64", "bool"]))
    else:
        x = draw(tokens)
    arr = as_array(x)
    rows = arr.shape[0] if arr is not None and arr.ndim >= 1 else 1
    dec_shapes = st.sampled_from([(rows, 1), (rows, 3), (rows, 6), (rows, 7), (rows + 1, 2), (rows,), ()])
    dec = draw(S["mix"]((1, st.none()), (3, S["arrays"](dec_shapes, dec_palette, clean=st.sampled_from([0, 1, 2]),
                                       dtype_choices=["uint8", "int64", "int8", "bool", "float64", "object"]))))
    y_shapes = st.sampled_from([(rows, 1), (rows, 3), (rows, 5), (rows, 7), (rows,), (rows, 0)])
    y = draw(S["arrays"](y_shapes, label_palette, clean=CLEAN_LABELS))
    extra = draw(st.fixed_dictionaries({}, optional={
        "loss": st.sampled_from(["mse", "bce", "l1"]), "n_threads": n_threads_arg,
        "steps": st.sampled_from([None, 1, 3, 6, 7, 0, -1, 2.0]), "cache": st.sampled_from([True, False, 1, "no"]),
        "threshold": st.sampled_from([0.5, 0.0, float("nan"), "0.5"])}))
    return i, draw(SEQ_CALL), x, dec, y, extra


@fuzz_settings(400)
@given(seq_case())
def fuzz_seq2seq(case):
    i, call, x, dec, y, extra = case
    note_case(model=i, call=call, x=x, dec=dec, y=y, extra=extra)
    model = seq_model(i)
    before = model.flat.copy()
    names = ["x", "decoder_input", "y", "loss", "n_threads", "steps", "cache", "threshold", "labels", "n_positions"]
    try:
        if call == "forward":
            out = model.forward(x, dec, n_threads=extra.get("n_threads"))
        elif call == "loss":
            kw = {k: extra[k] for k in ("loss", "n_threads") if k in extra}
            value, _ = model.loss_and_grad(x, y, decoder_input=dec, **kw)
        else:
            kw = {k: extra[k] for k in ("steps", "cache", "threshold", "n_threads") if k in extra}
            tokens_out, out = model.generate(x, return_outputs=True, **kw)
    except Exception as err:
        check_error(err, names, f"Seq2SeqTransformer.{call}")
        outcome(f"{call} refused")
    else:
        xc = canonical_tokens(x)
        if call == "forward":
            dc = np.ascontiguousarray(np.asarray(dec).astype(np.uint8))
            assert np.all(np.asarray(dec) >= 0) and np.all(np.asarray(dec) <= 2)
            assert out.shape == dc.shape and out.dtype == model.dtype and np.all(np.isfinite(out))
            assert np.array_equal(out, _native.forward(model=model._engine, x=xc, decoder_input=dc, n_threads=1))
        elif call == "loss":
            assert math.isfinite(value) or np.max(np.abs(np.asarray(y, dtype=float))) > 1e15
        else:
            steps = extra.get("steps") or xc.shape[1]
            assert tokens_out.shape == (xc.shape[0], steps) and np.all(tokens_out <= 1)
            assert np.all(np.isfinite(out))
            other, _ = model.generate(x, steps=steps, cache=not extra.get("cache", True),
                                      threshold=extra.get("threshold", 0.5), return_outputs=True)
            assert np.array_equal(other, tokens_out), "cached and uncached decoding disagree"
        outcome(f"{call} ok")
    assert np.array_equal(model.flat, before)


# ================================================================================================
# The private C boundary: raw arguments straight into sensiformer._engine (never a crash)
# ================================================================================================

raw_int = st.one_of(st.integers(-3, 8), st.sampled_from([2**31 - 1, -2**31, 2**40, 1 << 20, 64, 65]))
raw_float = st.sampled_from([0.0, 0.5, 1e-3, -1.0, 1e300, float("nan"), float("inf"), 5e-324])
raw_junk = st.sampled_from([None, "a", 1.5, (), [], {}, np.zeros(2)])
raw_scalar = S["mix"]((2, raw_int), (1, raw_float), (1, raw_junk))
raw_array = S["arrays"](st.one_of(st.tuples(st.integers(0, 4)), st.tuples(st.integers(0, 4), st.integers(0, 7))),
                        st.sampled_from([0, 1, 2, -1, 7, 2**31, 0.5, float("nan")]), clean=BITS,
                        dtype_choices=["uint8", "int32", "int64", "float64", "float32", "bool"])


RAW_KIND = st.one_of(st.integers(-1, 9), raw_scalar)
RAW_N = st.one_of(st.integers(-1, 8), st.sampled_from([40, 41, 2**31 - 1]))
RAW_TABLE = st.one_of(st.none(), raw_array, st.just(np.zeros(2 ** 3)))
RAW_OPTIONS = st.dictionaries(
    st.sampled_from(["noise", "bits", "table", "set_offsets", "coefficients", "sign_output", "prefix", "junk", 1]),
    st.one_of(raw_scalar, raw_array, st.sampled_from([np.array([0, 5, 2], np.int32), np.array([0, 3, 1, 9], np.int64),
                                                      np.array([-1, 2**30], np.int32), np.array([0, 1, 2], np.int64),
                                                      np.array([0.5, 0.5]), np.zeros(8)])),
    max_size=4)
RAW_BAD_TARGET = st.sampled_from([(), (1,), None, "parity", (0, 4, None, {}, 5)])
RAW_SUBSET = st.one_of(st.none(), raw_array,
                       st.sampled_from([np.array([0, 3], np.int64), np.array([-1], np.int64),
                                        np.array([2**62], np.int64), np.zeros(0, np.int64)]))
RAW_DATA = st.one_of(st.none(), raw_array)
RAW_BAD_SAMPLER = st.sampled_from([(), None, (0,), "uniform"])
RAW_SAMPLER_KIND = st.one_of(st.integers(-1, 3), raw_scalar)
ONE_IN_TEN = st.integers(0, 9)


@st.composite
def raw_target(draw):
    spec = (draw(RAW_KIND), draw(RAW_N), draw(RAW_TABLE))
    if draw(st.booleans()):
        spec = spec + (draw(RAW_OPTIONS),)
    if draw(ONE_IN_TEN) == 0:
        spec = draw(RAW_BAD_TARGET)
    return spec


@st.composite
def raw_sampler(draw):
    spec = (draw(RAW_SAMPLER_KIND), draw(RAW_SUBSET), draw(RAW_DATA), draw(RAW_DATA))
    if draw(ONE_IN_TEN) == 0:
        spec = draw(RAW_BAD_SAMPLER)
    return spec


RAW_CALLS = ["Model", "forward", "loss_and_grad", "reinit", "flat", "tensors", "Optimizer", "opt_step", "opt_state",
             "opt_lr_at", "opt_step_count", "train", "target_eval", "sample_batch", "label_noise", "sharpness",
             "ln_blowup", "hvp", "attention_logits", "fwht", "fourier", "spectrum", "degree_stats", "influences",
             "point_sensitivity", "sensitivity_profile", "resolve_threads", "set_default_threads",
             "set_memory_limit", "build_info", "generate", "seq2seq_ln_counts", "measure_peak", "num_params",
             "last_threads", "workspace_bytes", "kernel_gemm", "select_cpu_path", "vocabulary", "acquire", "release"]
# raw call -> the engine entry point it reaches (identity for the module functions)
RAW_ENTRY = {"reinit": "Model.reinit", "flat": "Model.flat", "tensors": "Model.tensors", "num_params": "Model.num_params",
             "last_threads": "Model.last_threads", "workspace_bytes": "Model.workspace_bytes",
             "opt_step": "Optimizer.step", "opt_state": "Optimizer.state", "opt_lr_at": "Optimizer.lr_at",
             "opt_step_count": "Optimizer.step_count", "acquire": "Model.acquire", "release": "Model.release"}
# The keyword functions: the keywords the drawn arguments fill, in order (model, optimizer, target and
# sampler are added by _raw). Optional ones are passed only when an argument was drawn for them.
RAW_KEYWORDS = {
    "Model": ("n_positions", "d_model", "n_heads", "n_layers", "d_ff", "norm", "final_norm", "ln_eps", "activation",
              "dtype", "seed", "identical_layers", "kind", "n_decoder_layers"),
    "forward": ("x", "decoder_input", "n_threads"),
    "loss_and_grad": ("x", "y", "decoder_input", "loss", "grad", "n_threads"),
    "reinit": ("seed", "identical_layers"),
    "Optimizer": ("kind", "lr", "beta1", "beta2", "eps", "weight_decay", "momentum", "dampening", "nesterov",
                  "decay_all", "schedule", "warmup_steps", "total_steps", "min_lr", "clip_norm"),
    "opt_step": ("n_threads",),
    "train": ("loss", "pm1", "batch_size", "seq_len", "seed", "threshold", "first_step", "n_steps", "n_threads",
              "record", "done"),
    "target_eval": ("x",),
    "sample_batch": ("seed", "step", "batch_size", "seq_len"),
    "label_noise": ("seed", "step", "rows", "p"),
    "sharpness": ("x", "y", "batch_size", "loss", "sigma", "repeats", "seed", "mask", "noise", "shared_draws",
                  "n_threads", "decoder_input"),
    "ln_blowup": ("x", "theory", "n_threads", "decoder_input"),
    "hvp": ("x", "y", "batch_size", "loss", "v", "n_threads", "decoder_input"),
    "attention_logits": ("x", "n_threads", "decoder_input"),
    "fwht": ("a", "n_threads"),
    "degree_stats": ("coefficients", "n_threads"),
    "influences": ("truth_table", "n_threads"),
    "point_sensitivity": ("truth_table", "n_threads"),
    "sensitivity_profile": ("truth_table", "n_threads"),
    "fourier": ("truth_table", "map01", "n_threads"),
    "spectrum": ("truth_table", "map01", "n_threads"),
    "generate": ("x", "steps", "cache", "threshold", "n_threads"),
    "measure_peak": ("float64", "n_threads", "seconds"),
    "kernel_gemm": ("path", "a", "b", "c", "bias", "accumulate", "transpose_a", "transpose_b", "n_threads"),
}
RAW_OPTIONAL = {"decoder_input", "noise", "bias", "kind", "n_decoder_layers"}
SEQ2SEQ_CALLS = ("forward", "loss_and_grad", "sharpness", "ln_blowup", "hvp", "attention_logits", "generate",
                 "seq2seq_ln_counts")


RAW_TARGET, RAW_SAMPLER = raw_target(), raw_sampler()
RAW_ARGS = st.lists(st.one_of(raw_scalar, raw_array), min_size=0, max_size=12)
RAW_CALL = st.sampled_from(RAW_CALLS)


@st.composite
def raw_case(draw):
    call = draw(RAW_CALL)
    args = draw(RAW_ARGS)
    return call, draw(model_index), args, draw(RAW_TARGET), draw(RAW_SAMPLER), draw(ONE_IN_TEN)


def _bounded(v, parsed_as_int=True):
    """Sizes of freshly allocated outputs stay below 4096: a valid huge size would just allocate and fill
    gigabytes (and a refused malloc aborts under AddressSanitizer instead of raising MemoryError). Values
    beyond a C int are kept where the argument is parsed as one: they are refused before allocating."""
    if is_int(v) and 4096 < v and (v < 2**31 or not parsed_as_int):
        return 4096
    return v


def _keywords(call, args, mangle, rng):
    """The drawn arguments as ``call``'s keywords; with ``mangle`` 0-2 one call in ten is malformed: a required
    keyword missing, an unknown one added, or an argument passed positionally (each must raise TypeError)."""
    a = list(args) + [0] * 16
    kw = {name: a[j] for j, name in enumerate(RAW_KEYWORDS[call]) if j < len(args) or name not in RAW_OPTIONAL}
    positional = ()
    if mangle == 0 and kw:
        kw.pop(list(kw)[int(rng.integers(len(kw)))])
    elif mangle == 1:
        kw["bogus"] = a[0]
    elif mangle == 2 and kw:
        positional = (kw.pop(list(kw)[0]),)
    return positional, kw


def _raw(call, model, opt, args, target, sampler, mangle, rng):
    """Call one engine entry point with mostly well-formed, partly junk arguments."""
    a = list(args) + [0] * 16
    m = model._engine
    if call in RAW_KEYWORDS:
        positional, kw = _keywords(call, args, mangle, rng)
        if call in ("sample_batch", "generate", "sharpness"):  # sizes of fresh outputs: see _bounded
            for name in ("batch_size", "seq_len", "steps", "repeats"):
                if name in kw:
                    kw[name] = _bounded(kw[name])
        if call == "label_noise" and "rows" in kw:
            kw["rows"] = _bounded(kw["rows"], parsed_as_int=False)
        if call == "measure_peak":  # the budget is seconds of busy work: keep it tiny
            kw["seconds"] = kw.get("seconds") if isinstance(kw.get("seconds"), float) and 0 <= kw["seconds"] < 0.002 \
                else 0.001
            kw["n_threads"] = kw.get("n_threads") if isinstance(kw.get("n_threads"), int) and kw["n_threads"] <= 2 \
                else 1
        if call == "train" and not isinstance(kw.get("record"), np.ndarray):
            kw["record"] = np.zeros((4, 8))
        if call in ("forward", "loss_and_grad", "reinit", "sharpness", "ln_blowup", "hvp", "attention_logits",
                    "generate", "Optimizer", "train"):
            kw = dict(model=m, **kw) if call != "reinit" else kw
        if call == "train":
            kw.update(optimizer=opt, target=target, sampler=sampler)
        if call in ("target_eval", "sample_batch"):
            kw.update(target=target, **({"sampler": sampler} if call == "sample_batch" else {}))
        fn = {"reinit": m.reinit, "opt_step": opt.step, "Model": _native.Model, "Optimizer": _native.Optimizer}.get(
            call) or getattr(_native, call)
        return fn(*positional, **kw)
    if call == "flat":
        return m.flat(a[0] if args else "params")
    if call == "acquire":  # the busy flag: taken, a second take refused, given back
        m.acquire(*args[:1])
        try:
            m.acquire()
        except RuntimeError:
            pass
        finally:
            m.release()
        return None
    if call == "release":
        return m.release(*args[:1])
    if call == "tensors":
        return m.tensors(*args[:1])
    if call == "opt_state":
        return opt.state(a[0])
    if call == "opt_lr_at":
        return opt.lr_at(a[0])
    if call == "opt_step_count":
        opt.step_count = a[0]
        return opt.step_count
    if call in ("resolve_threads", "set_default_threads", "set_memory_limit"):
        return getattr(_native, call)(a[0])
    if call == "seq2seq_ln_counts":
        return _native.seq2seq_ln_counts(*(args[:1] or [m]))
    if call in ("num_params", "last_threads", "workspace_bytes"):
        return getattr(m, call)
    if call == "select_cpu_path":
        return _native.select_cpu_path(a[0])
    if call == "vocabulary":
        return _native.vocabulary()
    return _native.build_info()


def _well_formed(call, model, draw_args, rng):
    """Replace the first arguments by correctly typed ones half of the time (so calls get past
    the type checks and reach the engine with bad values)."""
    P = model.num_parameters
    n_pos = model.n_positions
    B = int(rng.integers(1, 5))
    x = rng.integers(0, 2, size=(B, int(rng.integers(1, n_pos + 1))), dtype=np.uint8)
    s2s = isinstance(model, sf.Seq2SeqTransformer)
    dec = np.full((B, 2), 2, np.uint8) if s2s else None  # the seq2seq model's decoder input
    y = rng.normal(size=(B, 2) if s2s else B).astype(model.dtype)
    mask = np.ones(len(model.tensor_info), np.uint8)
    table = rng.integers(0, 2, size=2 ** int(rng.integers(1, 5))).astype(np.float64)
    typical = {  # in RAW_KEYWORDS order
        "forward": [x, dec, 1], "loss_and_grad": [x, y, dec, 0, True, 1], "reinit": [3, True],
        "sharpness": [x, y, B, 0, 0.02, 2, 0, mask, None, False, 1, dec],
        "ln_blowup": [x, False, 1, dec], "hvp": [x, y, B, 0, rng.normal(size=(1, P)).astype(model.dtype), 1, dec],
        "attention_logits": [x, 1, dec], "fwht": [table.copy(), 1], "degree_stats": [table, 1],
        "influences": [table, 1], "point_sensitivity": [table, 1], "sensitivity_profile": [table, 1],
        "fourier": [table, True, 1], "spectrum": [table, False, 1], "label_noise": [5, 3, B, 0.25], "target_eval": [x],
        "sample_batch": [1, 2, B, x.shape[1]], "opt_step": [1], "opt_state": [1], "opt_lr_at": [3],
        "train": [0, False, B, x.shape[1], 1, 0.5, 0, 3, 1, np.zeros((4, 3)), np.zeros(1, np.int64)],
        "Optimizer": [0, 1e-3, 0.9, 0.999, 1e-8, 0.0, 0.0, 0.0, False, True, 0, 0, 0, 0.0, 0.0],
        "Model": [6, 4, 2, 1, 4, 0, False, 1e-5, 0, 1, 0, True],
        "generate": [x, 2, True, 0.5, 1],
        "select_cpu_path": [str(rng.choice(["auto", "baseline", "x86-64-v3", "x86-64-v4", "avx"]))],
        "kernel_gemm": [str(rng.choice(["baseline", "x86-64-v3", "x86-64-v4", "avx"])),
                        rng.normal(size=(3, 4)), rng.normal(size=(4, 5)), np.zeros((3, 5)), rng.normal(size=5),
                        bool(rng.integers(2)), False, False, int(rng.integers(1, 3))],
    }.get(call)
    if typical is None:
        return draw_args
    out = list(typical)
    for j, v in enumerate(draw_args[:len(out)]):
        if rng.random() < 0.3:  # a few arguments replaced by fuzzed ones
            out[j] = v
    return out


@fuzz_settings(600)
@given(raw_case(), st.integers(0, 2**32 - 1), st.booleans())
def fuzz_engine_raw(case, seed, shaped):
    call, i, args, target, sampler, mangle = case
    seq2seq = call in SEQ2SEQ_CALLS and (seed % 4 != 0 if call in ("generate", "seq2seq_ln_counts") else seed % 2)
    model = sf.Seq2SeqTransformer(5, d_model=4, n_heads=2, n_layers=1, dtype=("float32", "float64")[seed % 3 % 2]) \
        if seq2seq else fresh_model(i)
    rng = np.random.default_rng(seed)
    if shaped:
        args = _well_formed(call, model, args, rng)
        if call in ("target_eval", "sample_batch", "train") and rng.random() < 0.5:
            target = (int(rng.integers(0, 8)), args[3] if call == "sample_batch" and is_int(args[3]) else 4, None)
            sampler = (0, None, None, None)
    note_case(call=call, model=i, seq2seq=seq2seq, args=args, target=target, sampler=sampler, mangle=mangle)
    opt = _native.Optimizer(model=model._engine, kind=0, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                            momentum=0.0, dampening=0.0, nesterov=False, decay_all=True, schedule=0, warmup_steps=0,
                            total_steps=0, min_lr=0.0, clip_norm=0.0)
    try:
        with np.errstate(all="ignore"):
            _raw(call, model, opt, args, target, sampler, mangle, rng)
        outcome("returned")
    except Exception:
        outcome("raised")  # any Python exception is fine here: the point is that the process survives
    finally:
        _native.set_default_threads(1)
        _native.set_memory_limit(MEMORY_LIMIT)
    # the model is still usable and consistent afterwards
    zeros = np.zeros((2, model.n_positions), np.uint8)
    if isinstance(model, sf.Seq2SeqTransformer):
        assert model.forward(zeros, np.full((2, 1), 2)).shape == (2, 1)
    else:
        assert model.forward(zeros).shape == (2,)


# ================================================================================================
# pytest side: run the targets in a child and report
# ================================================================================================

TARGETS = ["fuzz_transformer_config", "fuzz_forward_tokens", "fuzz_loss_labels", "fuzz_optimizer", "fuzz_trainer",
           "fuzz_probes", "fuzz_parameters", "fuzz_settings_calls", "fuzz_seq2seq", "fuzz_engine_raw"]


def test_raw_fuzz_reaches_every_engine_entry_point():
    """A new engine function or method must join fuzz_engine_raw (and so the sanitized run)."""
    from sensiformer import _engine

    entry_points = {n for n in dir(_engine) if not n.startswith("_")}
    for cls in ("Model", "Optimizer"):
        entry_points |= {f"{cls}.{n}" for n in dir(getattr(_engine, cls)) if not n.startswith("_")}
    reached = {RAW_ENTRY.get(call, call) for call in RAW_CALLS}
    assert entry_points <= reached, f"not fuzzed: {sorted(entry_points - reached)}"


@pytest.fixture(scope="module")
def fuzz_results(tmp_path_factory):
    return R.run_fuzz_targets(Path(__file__), TARGETS, tmp_path_factory.mktemp("fuzz_engine"))


@pytest.mark.parametrize("name", TARGETS)
def test_fuzz(fuzz_results, name):
    R.check_result(name, fuzz_results[name])
