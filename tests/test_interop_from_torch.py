"""``interop.from_torch`` reads the configuration from the module, or refuses to guess (issue 16,
point 2): a pre-LN, 4-head or GELU model built with PyTorch's own layers converts to the same
function without any argument."""

import numpy as np
import pytest

import sensiformer as sf

torch = pytest.importorskip("torch")
nn = torch.nn
from sensiformer import interop  # noqa: E402


class UserModel(nn.Module):
    """The official TorchModel's layout, written as a user would, with any encoder layer."""

    def __init__(self, layer, n_layers, n_positions=7, final_norm=None):
        super().__init__()
        d = layer.linear1.in_features
        self.embedding = nn.Embedding(2, d // 2)
        self.positional_encoding = nn.Embedding(n_positions, d // 2)
        self.encoders = nn.TransformerEncoder(layer, n_layers, norm=final_norm, enable_nested_tensor=False)
        self.linear_head = nn.Linear(d, 1)

    def forward(self, x):
        pos = self.positional_encoding(torch.arange(x.size(1))).repeat(x.size(0), 1, 1)
        return self.linear_head(self.encoders(torch.cat([self.embedding(x), pos], dim=-1)))[:, -1, 0]


def _layer(d=16, nhead=4, d_ff=24, activation="relu", norm_first=False, eps=1e-5, **kw):
    return nn.TransformerEncoderLayer(d, nhead, dim_feedforward=d_ff, dropout=0.0, activation=activation,
                                      layer_norm_eps=eps, batch_first=True, norm_first=norm_first, **kw)


def _randomized(module):
    torch.manual_seed(0)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return module.train()  # dropout is 0; training mode keeps torch off its fused inference path


def _max_difference(model, module, n=7):
    x = np.random.default_rng(0).integers(0, 2, size=(32, n))
    with torch.no_grad():
        expected = module(torch.from_numpy(x.astype(np.int64))).numpy()
    return float(np.max(np.abs(model.forward(x) - expected)))


VARIANTS = {
    "pre-LN 4 heads + final norm": lambda: UserModel(_layer(norm_first=True), 2, final_norm=nn.LayerNorm(16)),
    "pre-LN 4 heads": lambda: UserModel(_layer(norm_first=True), 3),
    "post-LN 4 heads gelu": lambda: UserModel(_layer(activation="gelu"), 2),
    "8 heads eps 1e-6": lambda: UserModel(_layer(nhead=8, eps=1e-6), 1),
    "gelu tanh module": lambda: UserModel(_layer(activation=nn.GELU(approximate="tanh"), norm_first=True), 2),
    "relu module, 1 head": lambda: UserModel(_layer(nhead=1, activation=nn.ReLU()), 2),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_configuration_is_read_from_the_module(variant):
    module = _randomized(VARIANTS[variant]())
    model = interop.from_torch(module)
    layer = module.encoders.layers[0]
    assert model.config["n_heads"] == layer.self_attn.num_heads
    assert model.config["norm"] == ("pre" if layer.norm_first else "post")
    assert model.config["ln_eps"] == layer.norm1.eps and model.config["d_ff"] == 24
    assert model.dtype == np.float64
    assert _max_difference(model, module) <= 1e-10


def test_identity_norms_read_as_norm_none():
    module = UserModel(_layer(), 2)
    for layer in module.encoders.layers:
        layer.norm1, layer.norm2 = nn.Identity(), nn.Identity()
    module = _randomized(module)
    model = interop.from_torch(module)
    assert model.config["norm"] == "none"
    assert _max_difference(model, module) <= 1e-10


def test_to_torch_round_trip_needs_no_arguments():
    model = sf.Transformer(7, d_model=16, n_heads=4, norm="pre", final_norm=True, activation="gelu_tanh",
                           ln_eps=1e-4, dtype="float64", seed=2)
    back = interop.from_torch(interop.to_torch(model))
    assert {k: back.config[k] for k in ("n_heads", "norm", "final_norm", "activation", "ln_eps")} == \
        dict(n_heads=4, norm="pre", final_norm=True, activation="gelu_tanh", ln_eps=1e-4)
    np.testing.assert_array_equal(back.flat, model.flat)


def test_seq2seq_configuration_is_read_from_the_module():
    config = dict(n_positions=5, d_model=16, n_heads=4, n_layers=1, n_decoder_layers=2, norm="pre",
                  activation="gelu", ln_eps=1e-6)
    module = _randomized(interop.scratchpad_module_class()(**config))
    model = interop.from_torch(module)
    assert {k: model.config[k] for k in config} == config
    x = np.random.default_rng(1).integers(0, 2, size=(8, 5))
    dec = model.teacher_forcing(np.cumsum(x, axis=1) % 2)
    with torch.no_grad():
        expected = module(torch.from_numpy(x.astype(np.int64)), torch.from_numpy(dec.astype(np.int64))).numpy()
    assert np.max(np.abs(model.forward(x, dec) - expected)) <= 1e-10


@pytest.mark.parametrize("given,message", [
    (dict(n_heads=2), r"n_heads=2 contradicts the module, which has n_heads=4"),
    (dict(norm="post"), r"norm='post' contradicts the module, which has norm='pre'"),
    (dict(activation="gelu"), r"activation='gelu' contradicts"),
    (dict(ln_eps=1e-6), r"ln_eps=1e-06 contradicts"),
])
def test_contradicting_arguments_are_refused(given, message):
    module = UserModel(_layer(norm_first=True), 2)
    with pytest.raises(ValueError, match=message):
        interop.from_torch(module, **given)


def test_agreeing_arguments_and_free_ones_are_accepted():
    module = UserModel(_layer(norm_first=True), 2)
    model = interop.from_torch(module, n_heads=4, norm="pre", dtype="float64", seed=5)
    assert model.config["seed"] == 5 and model.dtype == np.float64


def test_what_cannot_be_read_is_refused_not_guessed():
    # an activation sensiformer cannot recognise: refused, unless the caller names it
    module = UserModel(_layer(activation=lambda t: torch.nn.functional.gelu(t)), 2)
    with pytest.raises(ValueError, match="cannot tell which activation"):
        interop.from_torch(module)
    assert interop.from_torch(module, activation="gelu").config["activation"] == "gelu"
    # layers that disagree (sensiformer's share one configuration)
    mixed = UserModel(_layer(), 2)
    mixed.encoders.layers[1] = _layer(nhead=2)
    with pytest.raises(ValueError, match=r"differ in n_heads \(\[4, 2\]\)"):
        interop.from_torch(mixed)
    # a final norm after post-LN layers, batch_first=False: not the official architecture
    with pytest.raises(ValueError, match="final LayerNorm"):
        interop.from_torch(UserModel(_layer(), 2, final_norm=nn.LayerNorm(16)))
    with pytest.raises(ValueError, match="batch_first=False"):
        interop.from_torch(UserModel(_unbatched_layer(), 2))


def _unbatched_layer():
    return nn.TransformerEncoderLayer(16, 4, dim_feedforward=24, dropout=0.0, batch_first=False)


class _CustomLayer(nn.Module):
    """Parameters named like PyTorch's layer, but not one: nothing can be read from it."""

    def __init__(self, d=16, d_ff=24):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, 4, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(d, d_ff), nn.Linear(d_ff, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)


def test_unknown_layer_types_need_every_setting():
    module = UserModel(_layer(), 1)
    module.encoders.layers[0] = _CustomLayer()
    with pytest.raises(ValueError, match="pass n_heads, norm, ln_eps, activation"):
        interop.from_torch(module)
    with pytest.raises(ValueError, match="pass ln_eps, activation"):
        interop.from_torch(module, n_heads=4, norm="post")
    model = interop.from_torch(module, n_heads=4, norm="post", ln_eps=1e-5, activation="relu")
    assert model.config["n_heads"] == 4
