"""Bad input gets a clear Python exception that names the argument -- never a crash.

Cases that reach the C engine directly (the private engine objects, file loading, raw arrays
handed to the engine) run in a child interpreter, so that a segfault fails one test instead of
killing the whole run: ``_isolated_results`` runs every such case in one child and, if the child
dies, records the culprit and restarts a fresh child for the remaining cases.

A bug found here that is not fixed at once gets a strict-xfail reproduction in
tests/test_reliability_bugs.py (none is open now).
"""

import json
import os
import re
import subprocess
import sys
from functools import lru_cache

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import targets

N = 8  # n_positions of the small models used below


pytestmark = pytest.mark.usefixtures("single_thread")



@pytest.fixture
def model():
    return sf.Transformer(N, d_model=16, dtype="float64", seed=1)


@pytest.fixture
def x():
    return np.random.default_rng(0).integers(0, 2, size=(5, N))


# ================================================================================================
# Isolated cases: run in a child interpreter (one crash must not take the test run down)
# ================================================================================================

_PRELUDE = """
import json, os, sys, warnings
import numpy as np
import sensiformer as sf
from sensiformer import _native, targets
WORKDIR = os.environ["SF_TEST_WORKDIR"]
def uninit_model():
    return _native.Model.__new__(_native.Model)
def uninit_optimizer():
    return _native.Optimizer.__new__(_native.Optimizer)
def forward(m, x):
    return _native.forward(model=m._engine, x=x, n_threads=1)
def loss(m, y, kind=0):
    return _native.loss_and_grad(model=m._engine, x=U8, y=y, loss=kind, grad=True, n_threads=1)
ADAMW = dict(kind=0, lr=1e-3, beta1=.9, beta2=.999, eps=1e-8, weight_decay=0., momentum=0., dampening=0.,
             nesterov=False, decay_all=True, schedule=0, warmup_steps=0, total_steps=0, min_lr=0., clip_norm=0.)
def train(m, o, sampler=(0, None, None, None)):
    return _native.train(model=m, optimizer=o, target=(0, 4, None), sampler=sampler, loss=0, pm1=False,
                         batch_size=2, seq_len=4, seed=0, threshold=0.5, first_step=0, n_steps=1, n_threads=1,
                         record=np.zeros((4, 1)), done=np.zeros(1, np.int64))
def sample(sampler, target=(0, 4, None)):
    return _native.sample_batch(target=target, sampler=sampler, seed=0, step=0, batch_size=2, seq_len=4)
U8 = np.zeros((2, 4), np.uint8)
"""

_DRIVER = r"""
cases = json.loads(sys.stdin.read())
base = dict(globals())
for name, code in cases:
    print("START " + name, flush=True)
    ns = dict(base)
    try:
        exec(code, ns)
        result = {"raised": None}
    except BaseException as err:  # report, never die
        result = {"raised": type(err).__name__, "mro": [c.__name__ for c in type(err).__mro__],
                  "message": str(err)}
    print("RESULT " + json.dumps([name, result]), flush=True)
"""

# name -> (code, expected exception type name or None for "must not raise", regex for the message)
ISOLATED = {
    # --- the private engine objects used uninitialised must raise, not dereference NULL ---
    "forward on uninit Model": ("_native.forward(model=uninit_model(), x=U8, n_threads=1)", "RuntimeError",
                                r"not initialised"),
    "loss_and_grad on uninit Model": (
        "_native.loss_and_grad(model=uninit_model(), x=U8, y=np.zeros(2, np.float32), loss=0, grad=True, n_threads=1)",
        "RuntimeError", r"not initialised"),
    "uninit Model.flat": ("uninit_model().flat('params')", "RuntimeError", r"not initialised"),
    "uninit Model.tensors": ("uninit_model().tensors()", "RuntimeError", r"not initialised"),
    "uninit Model.reinit": ("uninit_model().reinit(seed=0, identical_layers=True)", "RuntimeError", r"not initialised"),
    "uninit Model.num_params": ("uninit_model().num_params", "RuntimeError", r"not initialised"),
    "uninit Model.last_threads": ("uninit_model().last_threads", "RuntimeError", r"not initialised"),
    "uninit Optimizer.step": ("uninit_optimizer().step(n_threads=1)", "RuntimeError", r"optimizer was not initialised"),
    "uninit Optimizer.state": ("uninit_optimizer().state(0)", "RuntimeError", r"optimizer was not initialised"),
    "uninit Optimizer.lr_at": ("uninit_optimizer().lr_at(0)", "RuntimeError", r"optimizer was not initialised"),
    "uninit Optimizer.step_count": ("uninit_optimizer().step_count", "RuntimeError",
                                    r"optimizer was not initialised"),
    "uninit Optimizer.step_count set": ("o = uninit_optimizer(); o.step_count = 3", "RuntimeError",
                                        r"optimizer was not initialised"),
    "Optimizer on uninit Model": (
        "_native.Optimizer(model=uninit_model(), **ADAMW)",
        "RuntimeError", r"model was not initialised"),
    "train with uninit optimizer": (
        "m = sf.Transformer(4, d_model=8)\ntrain(m._engine, uninit_optimizer())", "RuntimeError",
        r"optimizer was not initialised"),
    "train with uninit model": (
        "m = sf.Transformer(4, d_model=8); o = sf.AdamW().bind(m)\ntrain(uninit_model(), o._engine)",
        "RuntimeError", r"model was not initialised"),
    "Model initialised twice": ("m = sf.Transformer(4, d_model=8)\n"
                                "m._engine.__init__(n_positions=4, d_model=8, n_heads=2, n_layers=2, d_ff=8, norm=0, "
                                "final_norm=False, ln_eps=1e-5, activation=0, dtype=0, seed=0, identical_layers=True)",
                                "RuntimeError", r"already initialised"),
    # --- raw arrays handed to the engine: the C boundary checks dtype, ndim, layout and values ---
    "engine forward non-contiguous": ("m = sf.Transformer(4, d_model=8)\n"
                                      "forward(m, np.zeros((2, 8), np.uint8)[:, ::2])",
                                      "ValueError", r"x must be C-contiguous"),
    "engine forward Fortran order": ("m = sf.Transformer(4, d_model=8)\n"
                                     "forward(m, np.asfortranarray(np.zeros((3, 4), np.uint8)))",
                                     "ValueError", r"x must be C-contiguous"),
    "engine forward int64": ("m = sf.Transformer(4, d_model=8)\nforward(m, np.zeros((2, 4), np.int64))",
                             "TypeError", r"x must have dtype"),
    "engine forward list": ("m = sf.Transformer(4, d_model=8)\nforward(m, [[0, 1, 0, 1]])",
                            "TypeError", r"x must be a NumPy array"),
    "engine forward 1-D": ("m = sf.Transformer(4, d_model=8)\nforward(m, np.zeros(4, np.uint8))",
                           "ValueError", r"x must have 2 dimension"),
    "engine forward token 255": ("m = sf.Transformer(4, d_model=8)\n"
                                 "forward(m, np.full((2, 4), 255, np.uint8))",
                                 "ValueError", r"x must hold tokens 0 or 1"),
    "engine forward too long": ("m = sf.Transformer(4, d_model=8)\nforward(m, np.zeros((2, 5), np.uint8))",
                                "ValueError", r"n_positions=4"),
    "engine forward empty batch": ("m = sf.Transformer(4, d_model=8)\n"
                                   "forward(m, np.zeros((0, 4), np.uint8))",
                                   "ValueError", r"batch size must be >= 1"),
    "engine loss wrong y dtype": ("m = sf.Transformer(4, d_model=8)\n"
                                  "loss(m, np.zeros(2, np.float64))",
                                  "TypeError", r"y must have dtype"),
    "engine loss y length": ("m = sf.Transformer(4, d_model=8)\n"
                             "loss(m, np.zeros(3, np.float32))",
                             "ValueError", r"y has 3 rows for 2 inputs"),
    "engine loss unknown kind": ("m = sf.Transformer(4, d_model=8)\n"
                                 "loss(m, np.zeros(2, np.float32), 9)",
                                 "ValueError", r"unknown loss"),
    "engine table too short": ("_native.target_eval(target=(4, 4, np.zeros(3)), x=U8)", "ValueError", r"2\*\*n entries"),
    "engine subset out of range": (
        "sample((1, np.array([99], np.int64), None, None))",
        "ValueError", r"train_subset holds 99"),
    "engine dataset tokens outside 0/1": (
        "m = sf.Transformer(4, d_model=8); o = sf.AdamW().bind(m)\n"
        "train(m._engine, o._engine, (2, None, np.full((3, 4), 5, np.uint8), np.zeros(3)))", "ValueError",
        r"token.*\b5\b|\b5\b.*outside"),
    # data_x has 2 columns but the batch asks for length 4: refused (no over-read)
    "engine dataset width mismatch": pytest.param(
        "sample((2, None, np.zeros((3, 2), np.uint8), np.zeros(3)))",
        "ValueError", r"(length|width|columns)"),
    # --- files ---
    "load non-model npz": ("p = os.path.join(WORKDIR, 'other.npz'); np.savez(p, a=np.zeros(3)); sf.load(p)",
                           "ValueError", r"other\.npz is not a sensiformer model file"),
    "load wrong kind": (
        "p = os.path.join(WORKDIR, 'kind.npz')\n"
        "np.savez(p, __meta__=np.array(json.dumps(dict(kind='Other', format_version=1))))\nsf.load(p)",
        "ValueError", r"not a Transformer"),
    "load missing file": ("sf.load(os.path.join(WORKDIR, 'nope.npz'))", "FileNotFoundError", r"nope\.npz"),
    "load missing parameter": (
        "p = os.path.join(WORKDIR, 'm.npz'); sf.Transformer(4, d_model=8).save(p)\n"
        "d = dict(np.load(p)); del d['param/linear_head.bias']\n"
        "q = os.path.join(WORKDIR, 'missing.npz'); np.savez(q, **d); sf.load(q)",
        "ValueError", r"missing\.npz.*linear_head\.bias"),
    "load NaN parameter": (
        "p = os.path.join(WORKDIR, 'm2.npz'); sf.Transformer(4, d_model=8).save(p)\n"
        "d = dict(np.load(p)); d['param/linear_head.bias'] = np.array([np.nan], np.float32)\n"
        "q = os.path.join(WORKDIR, 'nan.npz'); np.savez(q, **d); sf.load(q)",
        "ValueError", r"linear_head\.bias.*finite"),
    "load truncated file": pytest.param(
        "p = os.path.join(WORKDIR, 'full.npz'); sf.Transformer(4, d_model=8).save(p)\n"
        "data = open(p, 'rb').read(); q = os.path.join(WORKDIR, 'truncated.npz')\n"
        "open(q, 'wb').write(data[:len(data) // 2]); sf.load(q)",
        "ValueError", r"truncated\.npz"),
    "load garbage file": pytest.param(
        "q = os.path.join(WORKDIR, 'garbage.npz'); open(q, 'wb').write(b'hello world, not a model'); sf.load(q)",
        "ValueError", r"garbage\.npz"),
    "load npy file": pytest.param(
        "q = os.path.join(WORKDIR, 'arr.npy'); np.save(q, np.zeros(3)); sf.load(q)",
        "ValueError", r"arr\.npy"),
    # --- load_state_dict must validate everything before writing anything ---
    "load_state_dict overflow into float32": pytest.param(
        "m = sf.Transformer(4, d_model=8); before = m.flat.copy()\n"
        "state = {k: v.astype(np.float64) + 1 for k, v in m.state_dict().items()}\n"
        "state['linear_head.bias'] = np.array([1e300])\n"
        "try:\n"
        "    m.load_state_dict(state)\n"
        "finally:\n"
        "    assert np.array_equal(before, m.flat), 'parameters were modified by a failing load_state_dict'\n",
        "ValueError", r"linear_head\.bias"),
    "load_state_dict complex values": pytest.param(
        "m = sf.Transformer(4, d_model=8, dtype='float64'); before = m.flat.copy()\n"
        "state = {k: v + 1 for k, v in m.state_dict().items()}\n"
        "state['linear_head.bias'] = np.array([1 + 1j])\n"
        "try:\n"
        "    m.load_state_dict(state)\n"
        "finally:\n"
        "    assert np.array_equal(before, m.flat), 'parameters were modified by a failing load_state_dict'\n",
        "TypeError|ValueError", r"linear_head\.bias"),
}


def _split(entry):
    if hasattr(entry, "values"):  # a pytest.param
        return entry.values
    return entry


@lru_cache(maxsize=1)
def _isolated_results(workdir):
    """Run every ISOLATED case in child interpreters; survive crashes and hangs."""
    pending = [(name, _split(entry)[0]) for name, entry in ISOLATED.items()]
    results = {}
    script = _PRELUDE + _DRIVER
    while pending:
        proc = subprocess.Popen([sys.executable, "-W", "error", "-c", script], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "SF_TEST_WORKDIR": str(workdir)})
        try:
            out, err = proc.communicate(json.dumps(pending), timeout=120)
            hung = False
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            hung = True
        started = None
        for line in out.splitlines():
            if line.startswith("START "):
                started = line[6:]
            elif line.startswith("RESULT "):
                name, result = json.loads(line[7:])
                results[name] = result
                started = None
        names = [n for n, _ in pending]
        if started is None and not hung and proc.returncode == 0:
            break
        if started is None:  # died before the first case (e.g. import failure)
            for name in names:
                results.setdefault(name, {"crashed": proc.returncode, "stderr": err[-2000:]})
            break
        results[started] = {"crashed": "timeout" if hung else proc.returncode, "stderr": err[-2000:]}
        pending = pending[names.index(started) + 1:]
    return results


def _isolated_params():
    params = []
    for name, entry in ISOLATED.items():
        if hasattr(entry, "values"):
            params.append(pytest.param(name, *entry.values[1:], marks=entry.marks, id=name))
        else:
            params.append(pytest.param(name, *entry[1:], id=name))
    return params


@pytest.fixture(scope="module")
def isolated_workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("isolated")


@pytest.mark.parametrize("name, expected, pattern", _isolated_params())
def test_isolated_case(isolated_workdir, name, expected, pattern):
    result = _isolated_results(isolated_workdir)[name]
    assert "crashed" not in result, f"{name}: the interpreter died ({result['crashed']}):\n{result['stderr']}"
    if expected is None:
        assert result["raised"] is None, f"{name}: raised {result['raised']}: {result['message']}"
        return
    assert result["raised"] is not None, f"{name}: no exception raised"
    wanted = expected.split("|")
    assert any(w in result["mro"] for w in wanted), \
        f"{name}: expected {expected}, got {result['raised']}: {result['message']}"
    assert re.search(pattern, result["message"]), f"{name}: message {result['message']!r} !~ {pattern!r}"


def test_isolated_runner_survives_a_crash(tmp_path):
    """The runner itself: a segfaulting case is reported and the following cases still run."""
    saved = dict(ISOLATED)
    try:
        ISOLATED.clear()
        ISOLATED["ok before"] = ("1 + 1", None, "")
        ISOLATED["segfault"] = ("import ctypes; ctypes.string_at(0)", None, "")
        ISOLATED["ok after"] = ("raise ValueError('x must be fine')", "ValueError", "x must")
        _isolated_results.cache_clear()
        results = _isolated_results(tmp_path)
    finally:
        ISOLATED.clear()
        ISOLATED.update(saved)
        _isolated_results.cache_clear()
    assert results["ok before"] == {"raised": None}
    assert results["segfault"]["crashed"] not in (0, None)
    assert results["ok after"]["raised"] == "ValueError"


# ================================================================================================
# Tokens x: dtype, shape, values, length, memory layout
# ================================================================================================

@pytest.mark.parametrize("make, exc, pattern", [
    pytest.param(lambda x: x * 0.5, TypeError, r"x must be an integer or bool array", id="float non-0/1"),
    pytest.param(lambda x: np.where(x == 1, np.nan, 0.0), TypeError, r"^x must be", id="float NaN"),
    pytest.param(lambda x: x.astype(str), TypeError, r"^x must be.*dtype <U", id="strings"),
    pytest.param(lambda x: x.astype(object), TypeError, r"^x must be.*dtype object", id="object"),
    pytest.param(lambda x: x.astype(complex), TypeError, r"^x must be.*complex", id="complex"),
    pytest.param(lambda x: x[0], ValueError, r"x must be 2-D.*x\[None, :\]", id="1-D"),
    pytest.param(lambda x: x[None], ValueError, r"x must be 2-D .*shape \(1, 5, 8\)", id="3-D"),
    pytest.param(lambda x: np.zeros(()), ValueError, r"x must be 2-D", id="0-D"),
    pytest.param(lambda x: x[:0], ValueError, r"x must have at least one sequence.*\(0, 8\)", id="empty batch"),
    pytest.param(lambda x: x[:, :0], ValueError, r"x must have at least one sequence.*\(5, 0\)", id="zero length"),
    pytest.param(lambda x: x + 1, ValueError, r"x must hold tokens 0 or 1", id="token 2"),
    pytest.param(lambda x: x - 1, ValueError, r"x must hold tokens 0 or 1", id="token -1"),
    pytest.param(lambda x: np.full((2, N), 255, np.uint8), ValueError, r"x must hold tokens 0 or 1.*255",
                 id="uint8 255"),
    pytest.param(lambda x: np.full((2, N), 2**62, np.int64), ValueError, r"x must hold tokens 0 or 1",
                 id="large int64"),
    pytest.param(lambda x: np.full((2, N), -2**63, np.int64), ValueError, r"x must hold tokens 0 or 1",
                 id="int64 min"),
    pytest.param(lambda x: np.full((2, N), 2**64 - 1, np.uint64), ValueError, r"x must hold tokens 0 or 1",
                 id="uint64 max"),
    pytest.param(lambda x: np.zeros((2, N + 1), int), ValueError, r"x has length 9.*n_positions=8",
                 id="longer than n_positions"),
])
def test_forward_rejects_bad_tokens(model, x, make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        model.forward(make(x))
    with pytest.raises(exc, match=pattern):  # x is checked before the labels
        model.loss(make(x), np.zeros(len(x)))


def _layouts(x):
    wide = np.repeat(x, 2, axis=1)  # wide[:, ::2] == x
    return {
        "strided columns": wide[:, ::2],
        "strided rows": np.repeat(x, 2, axis=0)[::2],
        "Fortran order": np.asfortranarray(x),
        "transposed view": np.ascontiguousarray(x.T).T,
        "reversed rows": x[::-1],
        "big-endian >i8": x.astype(">i8"),
        "big-endian >i2 strided": wide.astype(">i2")[:, ::2],
        "bool": x.astype(bool),
        "uint8 Fortran": np.asfortranarray(x.astype(np.uint8)),
        "float 0/1": x.astype(np.float64),
        "float32 0/1 strided": wide.astype(np.float32)[:, ::2],
        "list of lists": x.tolist(),
        "read-only": np.lib.stride_tricks.as_strided(x, writeable=False),
        "broadcast rows": np.broadcast_to(x[:1], x.shape),
    }


@pytest.mark.parametrize("layout", list(_layouts(np.zeros((5, N), int))))
def test_non_contiguous_and_foreign_layouts_match_contiguous(model, x, layout):
    """Any layout either gives exactly the contiguous copy's result or is refused naming x."""
    arr = _layouts(x)[layout]
    ref_x = np.ascontiguousarray(np.asarray(arr), dtype=np.int64)
    y = np.arange(len(ref_x)) % 2
    try:
        out = model.forward(arr)
    except (TypeError, ValueError) as err:  # refusing is allowed, but clearly
        assert re.match(r"x\b", str(err)), str(err)
        return
    np.testing.assert_array_equal(out, model.forward(ref_x))
    assert model.loss(arr, y) == model.loss(ref_x, y)
    np.testing.assert_array_equal(targets.Parity(N)(arr), targets.Parity(N)(ref_x))


@pytest.mark.parametrize("layout", ["strided", "big-endian", "float32", "int", "bool", "column"])
def test_labels_in_foreign_layouts_match_contiguous(model, x, layout):
    y = (np.arange(len(x)) % 2).astype(np.float64)
    arr = {"strided": np.repeat(y, 2)[::2], "big-endian": y.astype(">f8"), "float32": y.astype(np.float32),
           "int": y.astype(int), "bool": y.astype(bool), "column": y[:, None]}[layout]
    assert model.loss(x, arr) == model.loss(x, y)
    v1, g1 = model.loss_and_grad(x, arr)
    v2, g2 = model.loss_and_grad(x, y)
    assert v1 == v2
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k])


# ================================================================================================
# Labels y
# ================================================================================================

@pytest.mark.parametrize("y, exc, pattern", [
    pytest.param([0, np.nan, 0, 1, 0], ValueError, r"y must be finite", id="NaN"),
    pytest.param([0, np.inf, 0, 1, 0], ValueError, r"y must be finite", id="inf"),
    pytest.param([0, -np.inf, 0, 1, 0], ValueError, r"y must be finite", id="-inf"),
    pytest.param([0, 1, 0], ValueError, r"y must have shape \(5,\), got \(3,\)", id="too short"),
    pytest.param(np.zeros(6), ValueError, r"y must have shape \(5,\)", id="too long"),
    pytest.param(np.zeros((5, 2)), ValueError, r"y must have shape \(5,\)", id="2-D"),
    pytest.param(1.0, ValueError, r"y must have shape \(5,\)", id="scalar"),
    pytest.param(np.array(list("01010")), TypeError, r"y must be a numeric array", id="strings"),
    pytest.param(np.zeros(5, dtype=object), TypeError, r"y must be a numeric array", id="object"),
    pytest.param(np.zeros(5, dtype=complex), TypeError, r"y must be real", id="complex"),
])
def test_loss_rejects_bad_labels(model, x, y, exc, pattern):
    before = model.flat_grad.copy()
    for call in (model.loss, model.loss_and_grad):
        with pytest.raises(exc, match=pattern):
            call(x, y)
    np.testing.assert_array_equal(model.flat_grad, before)


def test_loss_rejects_bad_loss_name_and_bce_range(model, x):
    with pytest.raises(ValueError, match=r"loss must be one of 'mse', 'bce'; got 'l1'"):
        model.loss(x, np.zeros(5), loss="l1")
    with pytest.raises(ValueError, match=r"loss='bce' needs labels in \[0, 1\]"):
        model.loss(x, np.full(5, 2.0), loss="bce")


@pytest.mark.parametrize("n_threads, exc, pattern", [
    (0, ValueError, r"n_threads must be >= 1"), (-1, ValueError, r"n_threads must be >= 1"),
    (513, ValueError, r"n_threads must be <= 512"), (1.0, TypeError, r"n_threads must be an integer"),
    (True, TypeError, r"n_threads must be an integer"), ("2", TypeError, r"n_threads must be an integer"),
])
def test_forward_rejects_bad_n_threads(model, x, n_threads, exc, pattern):
    with pytest.raises(exc, match=pattern):
        model.forward(x, n_threads=n_threads)


# ================================================================================================
# Transformer configuration
# ================================================================================================

@pytest.mark.parametrize("kwargs, exc, pattern", [
    pytest.param(dict(d_model=15), ValueError, r"d_model must be even.*15", id="d_model odd"),
    pytest.param(dict(d_model=0), ValueError, r"d_model must be >= 2", id="d_model 0"),
    pytest.param(dict(d_model=18, n_heads=4), ValueError, r"d_model \(18\) must be divisible by n_heads \(4\)",
                 id="d_model % n_heads"),
    pytest.param(dict(d_model=2**17), ValueError, r"d_model must be <= 65536", id="d_model huge"),
    pytest.param(dict(n_heads=0), ValueError, r"n_heads must be >= 1", id="n_heads 0"),
    pytest.param(dict(n_heads=-2), ValueError, r"n_heads must be >= 1", id="n_heads negative"),
    pytest.param(dict(n_layers=0), ValueError, r"n_layers must be >= 1", id="n_layers 0"),
    pytest.param(dict(n_layers=65), ValueError, r"n_layers must be <= 64", id="n_layers 65"),
    pytest.param(dict(d_ff=0), ValueError, r"d_ff must be >= 1", id="d_ff 0"),
    pytest.param(dict(n_positions=0), ValueError, r"n_positions must be >= 1", id="n_positions 0"),
    pytest.param(dict(n_positions=2**20 + 1), ValueError, r"n_positions must be <=", id="n_positions huge"),
    pytest.param(dict(seed=-1), ValueError, r"seed must be >= 0", id="seed negative"),
    pytest.param(dict(seed=2**64), ValueError, r"seed must be <=", id="seed 2**64"),
    pytest.param(dict(seed=1.0), TypeError, r"seed must be an integer, got 1\.0", id="seed float"),
    pytest.param(dict(seed="0"), TypeError, r"seed must be an integer", id="seed str"),
    pytest.param(dict(seed=True), TypeError, r"seed must be an integer, got True", id="seed bool"),
    pytest.param(dict(n_layers=True), TypeError, r"n_layers must be an integer, got True", id="n_layers bool"),
    pytest.param(dict(n_heads=np.True_), TypeError, r"n_heads must be an integer", id="n_heads np.bool_"),
    pytest.param(dict(d_model=16.0), TypeError, r"d_model must be an integer, got 16\.0", id="d_model float"),
    pytest.param(dict(n_positions=None), TypeError, r"n_positions must be an integer", id="n_positions None"),
    pytest.param(dict(ln_eps=float("nan")), ValueError, r"ln_eps must be finite, got nan", id="ln_eps NaN"),
    pytest.param(dict(ln_eps=float("inf")), ValueError, r"ln_eps must be finite", id="ln_eps inf"),
    pytest.param(dict(ln_eps=-1e-5), ValueError, r"ln_eps must be >= 0", id="ln_eps negative"),
    pytest.param(dict(ln_eps="1e-5"), TypeError, r"ln_eps must be a real number", id="ln_eps str"),
    pytest.param(dict(ln_eps=True), TypeError, r"ln_eps must be a real number", id="ln_eps bool"),
    pytest.param(dict(norm="batch"), ValueError, r"norm must be one of 'post', 'pre', 'none'; got 'batch'",
                 id="norm invalid"),
    pytest.param(dict(norm=None), ValueError, r"norm must be one of", id="norm None"),
    pytest.param(dict(activation="tanh"), ValueError, r"activation must be one of .*got 'tanh'",
                 id="activation invalid"),
    pytest.param(dict(dtype="float16"), ValueError, r"dtype must be one of 'float32', 'float64'; got 'float16'",
                 id="dtype float16"),
    pytest.param(dict(dtype="int"), ValueError, r"dtype must be one of", id="dtype int"),
    pytest.param(dict(dtype=np.int32), ValueError, r"dtype must be one of", id="dtype np.int32"),
    pytest.param(dict(dtype=["float32"]), TypeError, r"dtype", id="dtype list"),
    pytest.param(dict(final_norm=1), TypeError, r"final_norm must be a bool", id="final_norm int"),
    pytest.param(dict(final_norm=True), ValueError, r"final_norm=True needs norm='pre'", id="final_norm post"),
    pytest.param(dict(identical_layers="no"), TypeError, r"identical_layers must be a bool",
                 id="identical_layers str"),
])
def test_transformer_rejects_bad_config(kwargs, exc, pattern):
    args = dict(n_positions=N, d_model=16)
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        sf.Transformer(**args)


def test_transformer_dtype_none_is_not_silently_float64():
    try:
        m = sf.Transformer(N, d_model=16, dtype=None)
    except (TypeError, ValueError) as err:
        assert "dtype" in str(err)
    else:
        assert m.dtype == np.float32


# ================================================================================================
# Optimizers
# ================================================================================================

@pytest.mark.parametrize("cls, kwargs, exc, pattern", [
    pytest.param(sf.AdamW, dict(lr=-1e-3), ValueError, r"lr must be >= 0", id="negative lr"),
    pytest.param(sf.AdamW, dict(lr=float("nan")), ValueError, r"lr must be finite", id="NaN lr"),
    pytest.param(sf.Adam, dict(lr=float("inf")), ValueError, r"lr must be finite", id="inf lr"),
    pytest.param(sf.AdamW, dict(lr="1e-3"), TypeError, r"lr must be a real number", id="str lr"),
    pytest.param(sf.AdamW, dict(lr=True), TypeError, r"lr must be a real number", id="bool lr"),
    pytest.param(sf.AdamW, dict(betas=(1.0, 0.999)), ValueError, r"betas\[0\] must be <=", id="beta1 = 1"),
    pytest.param(sf.AdamW, dict(betas=(0.9, 1.0)), ValueError, r"betas\[1\] must be <=", id="beta2 = 1"),
    pytest.param(sf.Adam, dict(betas=(-0.1, 0.999)), ValueError, r"betas\[0\] must be >= 0", id="beta1 < 0"),
    pytest.param(sf.Adam, dict(betas=(0.9, 1.5)), ValueError, r"betas\[1\] must be <=", id="beta2 > 1"),
    pytest.param(sf.AdamW, dict(betas=(0.9, float("nan"))), ValueError, r"betas\[1\] must be finite",
                 id="beta2 NaN"),
    pytest.param(sf.AdamW, dict(betas=(0.9,)), ValueError, r"betas must be a pair", id="betas single"),
    pytest.param(sf.AdamW, dict(betas=0.9), ValueError, r"betas must be a pair", id="betas scalar"),
    pytest.param(sf.AdamW, dict(weight_decay=float("nan")), ValueError, r"weight_decay must be finite",
                 id="NaN weight decay"),
    pytest.param(sf.SGD, dict(weight_decay=-0.1), ValueError, r"weight_decay must be >= 0",
                 id="negative weight decay"),
    pytest.param(sf.AdamW, dict(eps=-1e-8), ValueError, r"eps must be >= 0", id="negative eps"),
    pytest.param(sf.SGD, dict(nesterov=True), ValueError, r"nesterov=True needs momentum > 0",
                 id="nesterov without momentum"),
    pytest.param(sf.SGD, dict(nesterov=True, momentum=0.9, dampening=0.5), ValueError, r"dampening = 0",
                 id="nesterov with dampening"),
    pytest.param(sf.SGD, dict(momentum=-0.5), ValueError, r"momentum must be >= 0", id="negative momentum"),
    pytest.param(sf.SGD, dict(momentum=float("nan")), ValueError, r"momentum must be finite", id="NaN momentum"),
    pytest.param(sf.SGD, dict(dampening=1.5), ValueError, r"dampening must be <= 1", id="dampening > 1"),
    pytest.param(sf.SGD, dict(lr=-1.0), ValueError, r"lr must be >= 0", id="SGD negative lr"),
    pytest.param(sf.AdamW, dict(schedule="linear"), ValueError, r"schedule must be one of", id="bad schedule"),
    pytest.param(sf.AdamW, dict(warmup_steps=-1), ValueError, r"warmup_steps must be >= 0", id="negative warmup"),
    pytest.param(sf.AdamW, dict(warmup_steps=1.5), TypeError, r"warmup_steps must be an integer",
                 id="float warmup"),
    pytest.param(sf.AdamW, dict(schedule="cosine", warmup_steps=10, total_steps=5), ValueError,
                 r"total_steps must be >= warmup_steps", id="total < warmup"),
    pytest.param(sf.AdamW, dict(clip_norm=-1.0), ValueError, r"clip_norm must be >= 0", id="negative clip"),
    pytest.param(sf.AdamW, dict(clip_norm=float("nan")), ValueError, r"clip_norm must be finite", id="NaN clip"),
    pytest.param(sf.AdamW, dict(min_lr=-1.0), ValueError, r"min_lr must be >= 0", id="negative min_lr"),
    pytest.param(sf.AdamW, dict(decay_all="no"), TypeError, r"decay_all must be a bool", id="decay_all str"),
])
def test_optimizer_rejects_bad_hyperparameters(cls, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        cls(**kwargs)


def test_optimizer_unbound_use_is_a_runtime_error():
    opt = sf.AdamW()
    with pytest.raises(RuntimeError, match=r"bind\(model\)"):
        opt.step()
    with pytest.raises(RuntimeError, match=r"bind\(model\)"):
        opt.state_dict()


def test_optimizer_load_state_dict_rejects_bad_state():
    m = sf.Transformer(N, d_model=16)
    opt = sf.AdamW().bind(m)
    state = opt.state_dict()
    with pytest.raises(ValueError, match=r"state is for 'sgd'"):
        opt.load_state_dict(dict(state, kind="sgd"))
    with pytest.raises(ValueError, match=r"exp_avg has shape \(3,\)"):
        opt.load_state_dict(dict(state, exp_avg=np.zeros(3)))
    with pytest.raises(ValueError, match=r"step must be >= 0"):
        opt.load_state_dict(dict(state, step=-1))


# ================================================================================================
# Trainer
# ================================================================================================

def _small():
    return sf.Transformer(N, d_model=16)


@pytest.mark.parametrize("kwargs, exc, pattern", [
    pytest.param(dict(target=None), ValueError, r"give exactly one of target and data", id="neither"),
    pytest.param(dict(data=(np.zeros((4, N), int), np.zeros(4))), ValueError,
                 r"give exactly one of target and data", id="both"),
    pytest.param(dict(target="parity"), TypeError, r"target must be a sensiformer.targets.Target", id="target str"),
    pytest.param(dict(optimizer="adam"), TypeError, r"optimizer must be a sensiformer optimizer",
                 id="optimizer str"),
    pytest.param(dict(train_subset=[0, 2**N]), ValueError, r"train_subset indices must lie in \[0, 2\*\*8\)",
                 id="subset too large"),
    pytest.param(dict(train_subset=[-1, 3]), ValueError, r"train_subset indices must lie in", id="subset negative"),
    pytest.param(dict(train_subset=[]), ValueError, r"train_subset must be a non-empty", id="subset empty"),
    pytest.param(dict(train_subset=np.array([[1, 2]])), ValueError, r"train_subset must be a non-empty 1-D",
                 id="subset 2-D"),
    pytest.param(dict(train_subset=np.array([2**63], dtype=np.uint64)), ValueError, r"train_subset indices",
                 id="subset uint64 huge"),
    pytest.param(dict(train_subset=[0.0, 1.0]), TypeError, r"train_subset", id="subset float"),
    pytest.param(dict(train_subset=["a"]), TypeError, r"train_subset", id="subset str"),
    pytest.param(dict(seq_len=N + 1), ValueError, r"inputs of length 9 exceed the model's n_positions=8",
                 id="seq_len > n_positions"),
    pytest.param(dict(seq_len=0), ValueError, r"seq_len must be >= 1", id="seq_len 0"),
    # the fuzzer's SF_FUZZ_SEED=142639962: checked before an (1, seq_len) array was allocated (8 EiB)
    pytest.param(dict(seq_len=2**63 - 1), ValueError, r"inputs of length 9223372036854775807 exceed", id="seq_len huge"),
    pytest.param(dict(seq_len=4.0), TypeError, r"seq_len must be an integer", id="seq_len float"),
    pytest.param(dict(batch_size=0), ValueError, r"batch_size must be >= 1, got 0", id="batch_size 0"),
    pytest.param(dict(batch_size=-5), ValueError, r"batch_size must be >= 1", id="batch_size negative"),
    pytest.param(dict(batch_size=32.0), TypeError, r"batch_size must be an integer", id="batch_size float"),
    pytest.param(dict(batch_size=True), TypeError, r"batch_size must be an integer, got True", id="batch_size bool"),
    pytest.param(dict(seed=-1), ValueError, r"seed must be >= 0", id="seed negative"),
    pytest.param(dict(seed=0.5), TypeError, r"seed must be an integer", id="seed float"),
    pytest.param(dict(loss="l1"), ValueError, r"loss must be one of", id="loss invalid"),
    pytest.param(dict(labels="+-1"), ValueError, r"labels must be one of '01', 'pm1'", id="labels invalid"),
    pytest.param(dict(loss="bce", labels="pm1"), ValueError, r"loss='bce' needs labels='01'", id="bce pm1"),
    pytest.param(dict(n_threads=0), ValueError, r"n_threads must be >= 1", id="n_threads 0"),
])
def test_trainer_rejects_bad_arguments(kwargs, exc, pattern):
    args = dict(target=targets.Parity(N))
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        sf.Trainer(_small(), **args)


def test_trainer_target_longer_than_model():
    with pytest.raises(ValueError, match=r"inputs of length 10 exceed the model's n_positions=8"):
        sf.Trainer(_small(), targets.Parity(10))


def test_trainer_truth_table_length_mismatch():
    with pytest.raises(ValueError, match=r"seq_len=7 but the target's truth table is for n=6"):
        sf.Trainer(_small(), targets.RandomFunction(6), seq_len=7)


@pytest.mark.parametrize("data, exc, pattern", [
    pytest.param(np.zeros((4, N), int), TypeError, r"data must be a pair \(x, y\)", id="not a pair"),
    pytest.param((np.zeros((4, N), int),), TypeError, r"data must be a pair", id="1-tuple"),
    pytest.param((np.zeros((4, N), int), np.zeros(3)), ValueError, r"data y must have shape \(4,\)",
                 id="label length"),
    pytest.param((np.zeros((4, N), int), [0, np.nan, 0, 1]), ValueError, r"data y must be finite", id="NaN label"),
    pytest.param((np.zeros((4, N), int), [0, np.inf, 0, 1]), ValueError, r"data y must be finite", id="inf label"),
    pytest.param((np.full((4, N), 2), np.zeros(4)), ValueError, r"data x must hold tokens 0 or 1", id="token 2"),
    pytest.param((np.zeros((4, N + 1), int), np.zeros(4)), ValueError, r"data x has length 9.*n_positions=8",
                 id="too long"),
    pytest.param((np.zeros(N, int), np.zeros(1)), ValueError, r"data x must be 2-D", id="1-D x"),
    pytest.param((np.zeros((4, N)) + 0.5, np.zeros(4)), TypeError, r"data x must be", id="float x"),
    pytest.param((np.zeros((4, N), int), np.array(list("0101"))), TypeError, r"data y must be a numeric",
                 id="string y"),
])
def test_trainer_rejects_bad_data(data, exc, pattern):
    with pytest.raises(exc, match=pattern):
        sf.Trainer(_small(), data=data)


def test_trainer_data_with_train_subset():
    with pytest.raises(ValueError, match=r"train_subset only applies to a target"):
        sf.Trainer(_small(), data=(np.zeros((4, N), int), np.zeros(4)), train_subset=[0, 1])


def test_trainer_data_with_conflicting_seq_len():
    with pytest.raises(ValueError, match=r"seq_len"):
        sf.Trainer(_small(), data=(np.zeros((4, 6), int), np.zeros(4)), seq_len=3)


def test_trainer_bce_rejects_labels_outside_unit_interval():
    with pytest.raises(ValueError, match=r"bce.*\[0, 1\]|labels"):
        sf.Trainer(_small(), data=(np.zeros((4, 6), int), np.array([0.0, 5.0, 1.0, 0.0])), loss="bce")


def test_failed_trainer_construction_does_not_bind_the_optimizer():
    opt = sf.AdamW(lr=1e-3)
    with pytest.raises(ValueError, match=r"n_positions"):
        sf.Trainer(sf.Transformer(4, d_model=16), targets.Parity(10), optimizer=opt)
    sf.Trainer(sf.Transformer(10, d_model=16), targets.Parity(10), optimizer=opt)  # the fixed call works


def test_fit_evaluate_and_sampling_reject_bad_arguments():
    trainer = sf.Trainer(_small(), targets.Parity(N), batch_size=8)
    with pytest.raises(ValueError, match=r"steps must be >= 0, got -1"):
        trainer.fit(-1, progress=False)
    with pytest.raises(TypeError, match=r"steps must be an integer"):
        trainer.fit(1.5, progress=False)
    with pytest.raises(TypeError, match=r"steps must be an integer, got True"):
        trainer.fit(True, progress=False)
    with pytest.raises(ValueError, match=r"log_every must be >= 1"):
        trainer.fit(1, log_every=0, progress=False)
    with pytest.raises(ValueError, match=r"every must be >= 1"):
        trainer.fit(1, callbacks=[sf.Callback(lambda t: None, every=0)], progress=False)
    with pytest.raises(ValueError, match=r"batches must be >= 1"):
        trainer.evaluate(exact=False, batches=0)
    with pytest.raises(ValueError, match=r"batch_size must be >= 1"):
        trainer.evaluate(exact=False, batch_size=0)
    with pytest.raises(ValueError, match=r"step must be >= 0"):
        trainer.sample_batch(-1)
    assert trainer.step_count == 0 and trainer.history.empty


def test_callback_without_function():
    trainer = sf.Trainer(_small(), targets.Parity(N), batch_size=8)
    with pytest.raises(NotImplementedError, match=r"subclass Callback or pass fn"):
        trainer.fit(2, callbacks=[sf.Callback(every=1)], progress=False)


# ================================================================================================
# Parameters: load_state_dict and flat (nothing is written when they fail)
# ================================================================================================

def _changed_state(model):
    return {k: v + 1 for k, v in model.state_dict().items()}  # every entry differs from the model


@pytest.mark.parametrize("edit, exc, pattern", [
    pytest.param(lambda s: s.update(foo=np.zeros(3)), KeyError, r"unexpected key 'foo'", id="extra key"),
    pytest.param(lambda s: s.pop("linear_head.bias"), KeyError, r"missing keys.*linear_head\.bias", id="missing key"),
    pytest.param(lambda s: s.update({"linear_head.weight": np.zeros((2, 16))}), ValueError,
                 r"linear_head\.weight: shape \(2, 16\) does not match the model's \(1, 16\)", id="shape"),
    pytest.param(lambda s: s.update({"embedding.weight": np.zeros((2, 8)).T}), ValueError,
                 r"embedding\.weight: shape \(8, 2\)", id="transposed"),
    pytest.param(lambda s: s.update({"linear_head.bias": np.zeros(())}), ValueError,
                 r"linear_head\.bias: shape \(\)", id="0-d"),
    pytest.param(lambda s: s.update({"linear_head.bias": np.array([np.nan])}), ValueError,
                 r"linear_head\.bias: values must be finite", id="NaN"),
    pytest.param(lambda s: s["encoders.layers.1.linear1.weight"].__setitem__((3, 3), np.inf), ValueError,
                 r"encoders\.layers\.1\.linear1\.weight: values must be finite", id="inf deep"),
    pytest.param(lambda s: s.update({"linear_head.bias": np.array(["a"])}), TypeError,
                 r"linear_head\.bias: values must be finite numbers", id="strings"),
    pytest.param(lambda s: s.update({"linear_head.bias": np.array([0.5], dtype=object)}), TypeError,
                 r"linear_head\.bias", id="object"),
])
def test_load_state_dict_rejects_and_writes_nothing(model, edit, exc, pattern):
    before = model.flat.copy()
    state = _changed_state(model)
    edit(state)
    with pytest.raises(exc, match=pattern):
        model.load_state_dict(state)
    np.testing.assert_array_equal(model.flat, before)


def test_load_state_dict_not_a_mapping(model):
    with pytest.raises(TypeError, match=r"state must be a mapping"):
        model.load_state_dict([np.zeros(3)])


def test_load_state_dict_non_strict_ignores_unknown_but_checks_known(model):
    before = model.flat.copy()
    with pytest.raises(ValueError, match=r"linear_head\.bias: shape"):
        model.load_state_dict({"foo": 1, "linear_head.bias": np.zeros(2)}, strict=False)
    np.testing.assert_array_equal(model.flat, before)
    model.load_state_dict({"foo": 1, "linear_head.bias": np.array([0.25])}, strict=False)
    assert model.parameters()["linear_head.bias"][0] == 0.25


@pytest.mark.parametrize("values, exc, pattern", [
    pytest.param(lambda n: np.full(n, np.nan), ValueError, r"flat must be finite", id="NaN"),
    pytest.param(lambda n: np.zeros(n + 1), ValueError, r"flat must have shape", id="shape"),
    pytest.param(lambda n: np.zeros((1, n)), ValueError, r"flat must have shape", id="2-D"),
    pytest.param(lambda n: np.array(["a"] * n), TypeError, r"flat", id="strings"),
])
def test_flat_setter_rejects_and_writes_nothing(model, values, exc, pattern):
    before = model.flat.copy()
    with pytest.raises(exc, match=pattern):
        model.flat = values(model.flat.size)
    np.testing.assert_array_equal(model.flat, before)


def test_reinitialize_rejects_bad_seed(model):
    before = model.flat.copy()
    for seed, exc in ((-1, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(exc, match=r"seed must be"):
            model.reinitialize(seed)
    np.testing.assert_array_equal(model.flat, before)


# ================================================================================================
# Package-level settings and targets
# ================================================================================================

def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match=r"n must be >= 1"):
        sf.set_num_threads(0)
    with pytest.raises(TypeError, match=r"n must be an integer"):
        sf.set_num_threads(1.5)
    with pytest.raises(ValueError, match=r"nbytes must be >= 1"):
        sf.set_memory_limit(0)
    with pytest.raises(TypeError, match=r"nbytes must be an integer"):
        sf.set_memory_limit(1e9)


def test_memory_limit_gives_memory_error_naming_the_setting(model, x):
    try:
        sf.set_memory_limit(10_000)
        with pytest.raises(MemoryError, match=r"set_memory_limit"):
            model.forward(np.zeros((2000, N), int))
        with pytest.raises(MemoryError, match=r"set_memory_limit"):
            sf.Transformer(N, d_model=256)
    finally:
        sf.set_memory_limit(None)
    assert model.forward(x).shape == (5,)


def test_targets_reject_bad_input():
    with pytest.raises(ValueError, match=r"n must be >= 1"):
        targets.Parity(0)
    with pytest.raises(TypeError, match=r"n must be an integer"):
        targets.Majority(4.0)
    with pytest.raises(ValueError, match=r"n must be <= 30"):
        targets.RandomFunction(31)
    with pytest.raises(ValueError, match=r"x has length 5, but Parity\(n=4\) is defined on n=4 bits"):
        targets.Parity(4)(np.zeros((2, 5), int))
    with pytest.raises(ValueError, match=r"x must hold tokens 0 or 1"):
        targets.First(4)(np.full((2, 4), 3))
    with pytest.raises(ValueError, match=r"m must be <= 8"):
        sf.restricted_subset(3, 9)
    with pytest.raises(ValueError, match=r"m must be >= 1"):
        sf.restricted_subset(3, 0)


def test_estimate_rejects_empty():
    with pytest.raises(ValueError, match=r"samples must not be empty"):
        sf.Estimate.from_samples([])
