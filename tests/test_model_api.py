"""The Transformer's Python API: zero-copy parameter views, names and order, copies, files,
initialisation, shapes and dtypes, build facts, threads and Estimate."""

import gc
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sensiformer as sf

LAYER_SUFFIXES = [
    "self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight", "self_attn.out_proj.bias",
    "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
    "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias",
]


pytestmark = pytest.mark.usefixtures("single_thread")


def official_names(n_layers, norm="post", final_norm=False):
    names = ["embedding.weight", "positional_encoding.weight"]
    for i in range(n_layers):
        suffixes = LAYER_SUFFIXES if norm != "none" else LAYER_SUFFIXES[:8]
        names += [f"encoders.layers.{i}.{s}" for s in suffixes]
    if final_norm:
        names += ["encoders.norm.weight", "encoders.norm.bias"]
    return names + ["linear_head.weight", "linear_head.bias"]


def official_shapes(n_positions, d, f, n_layers, norm="post", final_norm=False):
    layer = {"self_attn.in_proj_weight": (3 * d, d), "self_attn.in_proj_bias": (3 * d,),
             "self_attn.out_proj.weight": (d, d), "self_attn.out_proj.bias": (d,),
             "linear1.weight": (f, d), "linear1.bias": (f,), "linear2.weight": (d, f), "linear2.bias": (d,),
             "norm1.weight": (d,), "norm1.bias": (d,), "norm2.weight": (d,), "norm2.bias": (d,)}
    shapes = {"embedding.weight": (2, d // 2), "positional_encoding.weight": (n_positions, d // 2),
              "encoders.norm.weight": (d,), "encoders.norm.bias": (d,),
              "linear_head.weight": (1, d), "linear_head.bias": (1,)}
    out = {}
    for name in official_names(n_layers, norm, final_norm):
        out[name] = layer[name.split(".", 3)[3]] if name.startswith("encoders.layers.") else shapes[name]
    return out


def tokens(batch, length, seed=0):
    return np.random.default_rng(seed).integers(0, 2, size=(batch, length))


def randomized(model, seed=0):
    rng = np.random.default_rng(seed)
    model.flat[:] = rng.normal(scale=0.3, size=model.flat.size)
    for name, p in model.parameters().items():
        if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "encoders.norm.weight":
            p[:] = 1 + rng.uniform(-0.5, 0.5, size=p.shape)
    return model


# ================================================================================================
# Names, order, shapes
# ================================================================================================

@pytest.mark.parametrize("norm, final_norm, n_layers", [
    ("post", False, 1), ("post", False, 3), ("pre", False, 2), ("pre", True, 2), ("none", False, 2),
])
def test_parameter_names_order_and_shapes_are_official(norm, final_norm, n_layers):
    m = sf.Transformer(7, d_model=12, n_heads=3, n_layers=n_layers, d_ff=20, norm=norm, final_norm=final_norm)
    params = m.parameters()
    assert list(params) == official_names(n_layers, norm, final_norm)
    assert list(m.named_parameters()) == list(params)
    assert list(m.state_dict()) == list(params)
    assert list(m.gradients()) == list(params)
    expected = official_shapes(7, 12, 20, n_layers, norm, final_norm)
    assert {k: v.shape for k, v in params.items()} == expected
    assert m.num_parameters == sum(math.prod(s) for s in expected.values()) == m.flat.size
    if norm == "none":
        assert not any("norm" in k for k in params)
    # tensor_info describes the same layout, back to back in the flat buffer
    info = m.tensor_info
    assert [t["name"] for t in info] == list(params)
    offset = 0
    for t in info:
        assert t["offset"] == offset and t["size"] == math.prod(t["shape"])
        offset += t["size"]
    assert offset == m.flat.size


def test_d_ff_defaults_to_d_model():
    m = sf.Transformer(5, d_model=24, n_heads=4)
    assert m.config["d_ff"] == 24
    assert m.parameters()["encoders.layers.0.linear1.weight"].shape == (24, 24)


# ================================================================================================
# Zero-copy views
# ================================================================================================

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_parameters_are_writable_zero_copy_views(dtype):
    m = sf.Transformer(6, d_model=16, dtype=dtype)
    x = tokens(10, 6)
    params = m.parameters()
    flat = m.flat
    for name, p in params.items():
        assert p.dtype == np.dtype(dtype)
        assert p.flags.writeable and p.flags.c_contiguous
        assert np.shares_memory(p, flat), name
        assert np.shares_memory(p, m.parameters()[name])  # the same memory on every call
    # writing through a view changes forward
    before = m.forward(x)
    params["linear_head.bias"][...] += 1.0
    np.testing.assert_allclose(m.forward(x), before + 1.0, rtol=1e-6, atol=1e-6)
    # writing through flat changes the views and forward
    info = {t["name"]: t for t in m.tensor_info}
    t = info["encoders.layers.0.linear1.weight"]
    flat[t["offset"]:t["offset"] + t["size"]] = 0.0
    assert np.all(params["encoders.layers.0.linear1.weight"] == 0)
    assert not np.array_equal(m.forward(x), before + 1.0)
    # in-place ops on a view change forward; zeroing the head makes every output the bias
    params["linear_head.weight"][...] = 0
    params["linear_head.bias"][...] = 0.25
    np.testing.assert_array_equal(m.forward(x), np.full(10, 0.25, dtype=dtype))
    # flat is the same buffer each time
    assert np.shares_memory(m.flat, flat) and m.flat.ctypes.data == flat.ctypes.data


def test_flat_setter_and_flat_grad():
    m = sf.Transformer(5, d_model=8, dtype="float64")
    values = np.linspace(-1, 1, m.flat.size)
    view = m.flat
    m.flat = values
    np.testing.assert_array_equal(view, values)  # written in place, not rebound
    assert np.shares_memory(m.flat, view)
    loss, grads = m.loss_and_grad(tokens(4, 5), np.array([0.0, 1.0, 1.0, 0.0]))
    assert np.isfinite(loss)
    flat_grad = np.concatenate([g.ravel() for g in grads.values()])
    np.testing.assert_array_equal(m.flat_grad, flat_grad)
    for name, g in m.gradients().items():
        assert np.shares_memory(g, m.flat_grad)
        assert not np.shares_memory(grads[name], m.flat_grad)  # loss_and_grad returns copies


def test_views_keep_the_buffer_alive():
    """A view outlives every other reference to its model (run in a child: a use-after-free could crash)."""
    code = textwrap.dedent("""
        import gc
        import numpy as np
        import sensiformer as sf
        p = sf.Transformer(6, d_model=16, seed=3).parameters()['linear_head.weight']
        flat = sf.Transformer(6, d_model=16, seed=4).flat
        expected_p = sf.Transformer(6, d_model=16, seed=3).parameters()['linear_head.weight'].copy()
        expected_flat = sf.Transformer(6, d_model=16, seed=4).flat.copy()
        gc.collect()
        # churn the allocator so that freed buffers would be reused and overwritten
        junk = [sf.Transformer(6, d_model=16, seed=s) for s in range(20)]
        for j in junk:
            j.flat[:] = 123.0
        del junk
        gc.collect()
        assert np.array_equal(p, expected_p), 'view changed after its model was dropped'
        assert np.array_equal(flat, expected_flat), 'flat changed after its model was dropped'
        p[...] = 7.0
        print('OK', float(p.sum()), float(flat.sum()))
    """)
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("OK 112.0 ")


def test_state_dict_returns_copies():
    m = sf.Transformer(5, d_model=8, dtype="float64")
    x = tokens(6, 5)
    before = m.forward(x)
    state = m.state_dict()
    for name, v in state.items():
        assert not np.shares_memory(v, m.flat), name
        v[...] = 99.0
    np.testing.assert_array_equal(m.forward(x), before)
    # config is a copy too
    cfg = m.config
    cfg["d_model"] = 1000
    assert m.config["d_model"] == 8


def test_load_state_dict_round_trip_and_independence():
    a = randomized(sf.Transformer(6, d_model=16, n_layers=2, dtype="float64"), seed=1)
    b = sf.Transformer(6, d_model=16, n_layers=2, dtype="float64", seed=9)
    state = a.state_dict()
    b.load_state_dict(state)
    x = tokens(20, 6)
    np.testing.assert_array_equal(b.forward(x), a.forward(x))
    state["linear_head.bias"][...] = 5.0  # the model copied, did not keep the array
    np.testing.assert_array_equal(b.forward(x), a.forward(x))
    # a float32 state loads into a float64 model (value-preserving cast)
    c = sf.Transformer(6, d_model=16, n_layers=2, dtype="float64")
    c.load_state_dict({k: v.astype(np.float32) for k, v in a.state_dict().items()})
    np.testing.assert_array_equal(c.flat, a.flat.astype(np.float32).astype(np.float64))


# ================================================================================================
# Copies and files
# ================================================================================================

def test_astype_copies_values_both_ways():
    m64 = randomized(sf.Transformer(6, d_model=16, dtype="float64", norm="pre", final_norm=True), seed=2)
    m32 = m64.astype("float32")
    assert m32.dtype == np.float32 and m64.dtype == np.float64
    assert m32.config == dict(m64.config, dtype="float32")
    np.testing.assert_array_equal(m32.flat, m64.flat.astype(np.float32))
    assert not np.shares_memory(m32.flat, m64.flat)
    back = m32.astype(np.float64)  # np.dtype objects are accepted too
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back.flat, m32.flat.astype(np.float64))  # float32 -> float64 is exact
    x = tokens(50, 6)
    np.testing.assert_allclose(m32.forward(x), m64.forward(x), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(back.forward(x), m32.astype("float64").forward(x))
    # the copy is independent
    m32.flat[:] = 0
    assert np.any(m64.flat != 0)
    c = m64.copy()
    assert c.dtype == m64.dtype and c.config == m64.config
    np.testing.assert_array_equal(c.flat, m64.flat)
    c.flat[:] = 0
    assert np.any(m64.flat != 0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("config", [
    dict(norm="post"), dict(norm="pre", final_norm=True, activation="gelu"), dict(norm="none", activation="gelu_tanh"),
    dict(n_layers=3, identical_layers=False, ln_eps=0.0, d_ff=40, n_heads=4, seed=17),
])
def test_save_load_round_trip(tmp_path, dtype, config):
    m = randomized(sf.Transformer(9, d_model=16, dtype=dtype, **config), seed=4)
    path = tmp_path / "model.npz"
    m.save(path)
    assert path.exists() and not (tmp_path / "model.npz.tmp").exists()
    loaded = sf.load(path)
    assert loaded.config == m.config
    assert loaded.dtype == m.dtype
    assert list(loaded.parameters()) == list(m.parameters())
    np.testing.assert_array_equal(loaded.flat, m.flat)
    x = tokens(30, 9)
    np.testing.assert_array_equal(loaded.forward(x), m.forward(x))
    np.testing.assert_array_equal(loaded.forward(x[:, :4]), m.forward(x[:, :4]))
    # str paths work, and saving again overwrites
    m.flat[:] *= 0.5
    m.save(str(path))
    np.testing.assert_array_equal(sf.load(str(path)).flat, m.flat)


def test_saved_file_is_a_plain_npz_without_pickles(tmp_path):
    m = sf.Transformer(4, d_model=8)
    m.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as data:
        assert "__meta__" in data.files
        assert sorted(f for f in data.files if f.startswith("param/")) == sorted(f"param/{k}" for k in m.parameters())


# ================================================================================================
# Initialisation
# ================================================================================================

def test_same_seed_same_init_different_seed_different():
    a = sf.Transformer(6, d_model=16, seed=5)
    b = sf.Transformer(6, d_model=16, seed=5)
    c = sf.Transformer(6, d_model=16, seed=6)
    np.testing.assert_array_equal(a.flat, b.flat)
    for name in a.parameters():
        pa, pc = a.parameters()[name], c.parameters()[name]
        if "norm" in name or name.endswith("in_proj_bias") or name.endswith("out_proj.bias"):
            continue  # constant-initialised tensors (gain 1, zero bias) do not depend on the seed
        assert not np.array_equal(pa, pc), name


def test_init_is_torch_like():
    m = sf.Transformer(6, d_model=16, n_layers=2, seed=0)
    p = m.parameters()
    for i in range(2):
        assert np.all(p[f"encoders.layers.{i}.norm1.weight"] == 1)
        assert np.all(p[f"encoders.layers.{i}.norm2.bias"] == 0)
        assert np.all(p[f"encoders.layers.{i}.self_attn.in_proj_bias"] == 0)
        assert np.all(p[f"encoders.layers.{i}.self_attn.out_proj.bias"] == 0)
    bound = 1 / math.sqrt(16)
    assert np.all(np.abs(p["encoders.layers.0.linear1.weight"]) <= bound)
    assert np.all(np.abs(p["linear_head.weight"]) <= bound)
    # identical_layers (default): every layer starts as a copy of the first
    for s in LAYER_SUFFIXES:
        np.testing.assert_array_equal(p[f"encoders.layers.0.{s}"], p[f"encoders.layers.1.{s}"])
    q = sf.Transformer(6, d_model=16, n_layers=2, seed=0, identical_layers=False).parameters()
    assert not np.array_equal(q["encoders.layers.0.linear1.weight"], q["encoders.layers.1.linear1.weight"])


@pytest.mark.parametrize("identical_layers", [True, False])
def test_reinitialize_is_reproducible(identical_layers):
    m = sf.Transformer(6, d_model=16, n_layers=2, seed=3, identical_layers=identical_layers)
    init3 = m.flat.copy()
    view = m.parameters()["encoders.layers.1.linear1.weight"]
    m.flat[:] = 0.0
    m.reinitialize()  # default: the constructor's seed
    np.testing.assert_array_equal(m.flat, init3)
    m.reinitialize(11)
    np.testing.assert_array_equal(m.flat, sf.Transformer(6, d_model=16, n_layers=2, seed=11,
                                                         identical_layers=identical_layers).flat)
    after11 = m.flat.copy()
    m.reinitialize(11)
    np.testing.assert_array_equal(m.flat, after11)
    assert not np.array_equal(after11, init3)
    assert np.shares_memory(view, m.flat)  # views stay valid across reinitialisation
    assert m.config["seed"] == 3


# ================================================================================================
# Forward: lengths, batch sizes, dtypes, threads
# ================================================================================================

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("norm, final_norm", [("post", False), ("pre", True), ("none", False)])
def test_variable_lengths_match_a_truncated_positional_table(dtype, norm, final_norm):
    """Length L < n_positions uses the first L positional rows: the same as a model built for L."""
    n = 10
    m = randomized(sf.Transformer(n, d_model=16, n_heads=4, n_layers=2, norm=norm, final_norm=final_norm,
                                  dtype=dtype), seed=5)
    x = tokens(12, n, seed=1)
    for length in range(1, n + 1):
        out = m.forward(x[:, :length])
        assert out.shape == (12,) and out.dtype == np.dtype(dtype) and np.all(np.isfinite(out))
        short = sf.Transformer(length, d_model=16, n_heads=4, n_layers=2, norm=norm, final_norm=final_norm,
                               dtype=dtype)
        state = m.state_dict()
        state["positional_encoding.weight"] = state["positional_encoding.weight"][:length]
        short.load_state_dict(state)
        np.testing.assert_array_equal(short.forward(x[:, :length]), out)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batch_of_one_and_batch_independence(dtype):
    m = randomized(sf.Transformer(8, d_model=16, n_layers=2, dtype=dtype), seed=6)
    x = tokens(40, 8, seed=2)
    full = m.forward(x)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    scale = np.abs(full).max()
    for i in (0, 17, 39):
        one = m.forward(x[i:i + 1])
        assert one.shape == (1,) and one.dtype == np.dtype(dtype)
        np.testing.assert_allclose(one[0], full[i], rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(m.forward(x[::-1]), full[::-1], rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_output_dtypes_match_the_model(dtype):
    m = sf.Transformer(5, d_model=8, dtype=dtype)
    x = tokens(4, 5)
    y = np.array([0.0, 1.0, 1.0, 0.0])
    assert m.forward(x).dtype == np.dtype(dtype)
    assert m(x).dtype == np.dtype(dtype)
    assert isinstance(m.loss(x, y), float)
    loss, grads = m.loss_and_grad(x, y, loss="bce")
    assert isinstance(loss, float)
    assert all(g.dtype == np.dtype(dtype) for g in grads.values())
    assert m.flat.dtype == m.flat_grad.dtype == m.dtype == np.dtype(dtype)


def test_loss_matches_its_definition():
    m = randomized(sf.Transformer(6, d_model=16, dtype="float64"), seed=8)
    x = tokens(25, 6, seed=3)
    y = np.random.default_rng(1).uniform(size=25)
    out = m.forward(x)
    np.testing.assert_allclose(m.loss(x, y), np.mean((out - y) ** 2), rtol=1e-12)
    bce = np.mean(np.maximum(out, 0) - out * y + np.log1p(np.exp(-np.abs(out))))
    np.testing.assert_allclose(m.loss(x, y, loss="bce"), bce, rtol=1e-12)


def test_results_do_not_depend_on_thread_count():
    m = randomized(sf.Transformer(12, d_model=32, n_heads=4, n_layers=2), seed=7)
    x = tokens(300, 12, seed=4)
    np.testing.assert_array_equal(m.forward(x, n_threads=1), m.forward(x, n_threads=2))
    y = (np.arange(300) % 2).astype(float)
    _, g1 = m.loss_and_grad(x, y, n_threads=1)
    _, g2 = m.loss_and_grad(x, y, n_threads=2)
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k])
    assert m.last_threads >= 1


# ================================================================================================
# Build facts, threads, Estimate
# ================================================================================================

def test_show_config(capsys):
    info = sf.show_config(print_out=False)
    assert capsys.readouterr().out == ""
    assert isinstance(info["openmp"], bool)
    assert isinstance(info["cpu_path"], str) and info["cpu_path"]
    assert info["version"] == sf.__version__
    assert info["default_threads"] >= 1 and info["memory_limit"] > 0
    assert "build_flags" in info
    printed = sf.show_config()
    out = capsys.readouterr().out
    assert printed == info
    assert "openmp" in out and "cpu_path" in out and info["cpu_path"] in out


def test_num_threads_round_trip():
    sf.set_num_threads(None)
    default = sf.get_num_threads()
    assert default >= 1
    openmp = sf.show_config(print_out=False)["openmp"]
    for n in (1, 2, 3):
        sf.set_num_threads(n)
        assert sf.get_num_threads() == (n if openmp else 1)
        assert sf.show_config(print_out=False)["default_threads"] == sf.get_num_threads()
    sf.set_num_threads(1)
    m = sf.Transformer(8, d_model=16)
    m.forward(tokens(64, 8))
    assert m.last_threads == 1
    sf.set_num_threads(None)
    assert sf.get_num_threads() == default


def test_estimate_from_samples():
    s = [1.0, 2.0, 3.0, 4.0, 10.0]
    e = sf.Estimate.from_samples(s)
    assert e.value == pytest.approx(4.0)
    assert e.stderr == pytest.approx(np.std(s, ddof=1) / np.sqrt(5))
    assert e.n_samples == 5
    np.testing.assert_array_equal(e.samples, s)
    lo, hi = e.interval()
    assert lo == pytest.approx(e.value - 1.96 * e.stderr) and hi == pytest.approx(e.value + 1.96 * e.stderr)
    assert float(e) == e.value
    assert format(e, ".2f") == f"4.00 ± {e.stderr:.2f}"
    # 2-D input is flattened; a single sample has an undefined standard error
    e2 = sf.Estimate.from_samples(np.arange(6.0).reshape(2, 3))
    assert e2.n_samples == 6 and e2.value == pytest.approx(2.5)
    one = sf.Estimate.from_samples([3.0])
    assert one.value == 3.0 and math.isnan(one.stderr)
    # equality ignores the stored samples; the dataclass is frozen
    assert sf.Estimate(1.0, 0.5, 3) == sf.Estimate(1.0, 0.5, 3, np.zeros(3))
    with pytest.raises(Exception):
        e.value = 0.0
    # a large sample: stderr ~ sigma / sqrt(n)
    rng = np.random.default_rng(0)
    big = sf.Estimate.from_samples(rng.normal(2.0, 3.0, size=40_000))
    assert abs(big.value - 2.0) < 5 * big.stderr
    assert big.stderr == pytest.approx(3.0 / 200, rel=0.05)


def test_repr_and_properties():
    m = sf.Transformer(6, d_model=16, n_heads=4, n_layers=3, dtype="float64")
    r = repr(m)
    assert "n_positions=6" in r and "d_model=16" in r and "n_layers=3" in r and "float64" in r
    assert m.n_positions == 6
    assert str(m.num_parameters) in r
    gc.collect()


def test_workspace_bytes_grows_with_the_largest_batch_and_is_kept():
    model = sf.Transformer(6, d_model=16, seed=0)
    assert model.workspace_bytes == 0
    x = np.zeros((8, 6), np.uint8)
    model.forward(x)
    small = model.workspace_bytes
    assert small > 8 * 6 * 16 * 4  # at least one activation tensor of the batch
    model.forward(np.zeros((64, 6), np.uint8))
    assert model.workspace_bytes > small
    big = model.workspace_bytes
    model.forward(x)
    assert model.workspace_bytes == big
