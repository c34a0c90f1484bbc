"""sensiformer's optimizers (run by the C engine) against torch.optim, in float64.

Both sides start from identical weights and see the same batches; sensiformer's gradients
come from ``model.loss_and_grad`` and torch's from autograd (they agree to ~1e-14, see
test_torch_equivalence.py), or, in the ``feed="ours"`` variants, torch is handed sensiformer's
gradient bit for bit so that only the update rules are compared. After each of a few steps
every parameter tensor must agree to ``||ours - torch|| / ||torch|| <= 1e-12``: both sides apply
the same handful of double-precision operations per element per step (torch's single-tensor
code path), so they differ by a few ulps per step, i.e. ~1e-16 relative to parameters of size
O(0.1-1) (measured worst 5.5e-16 with identical gradients), while any wrong formula (bias
correction, decay placement, momentum order) is off by >= 1e-6. With autograd gradients Adam
legitimately amplifies rounding noise in exactly-zero gradient components (see ``run_both``;
measured worst 1.8e-11, on in_proj_bias), which a measured first-order allowance covers.

Also: gradient clipping vs ``torch.nn.utils.clip_grad_norm_``, the warm-up/cosine schedule vs a
hand-written formula (and vs torch's LambdaLR in a run), and a 200-step training trajectory of
the C loop (``Trainer.fit``) against torch.optim.AdamW on the same batches.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import interop

pytestmark = pytest.mark.torch

RTOL = 1e-12
NO_DECAY_KINDS = {"token_embedding", "positional", "bias", "norm_weight", "norm_bias"}


def rel_err(ours, ref):
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    scale = np.linalg.norm(ref.ravel())
    diff = np.linalg.norm((ours - ref).ravel())
    return diff / scale if scale > 0 else diff


def make_pair(random_model, seed=0, **overrides):
    cfg = dict(n_positions=6, d_model=8, n_heads=2, n_layers=2, d_ff=12, norm="post", activation="gelu")
    cfg.update(overrides)
    model = random_model(seed=seed, **cfg)
    module = interop.to_torch(model)
    return model, module


def make_batches(n, batch=6, seq_len=5, seed=0):
    """Batches shorter than n_positions: the last positional row gets zero gradients, which
    Adam must leave alone (0/(0+eps)) but weight decay must still shrink."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 2, size=(batch, seq_len), dtype=np.uint8), rng.normal(size=batch)) for _ in range(n)]


def torch_param_groups(model, module, decay_all, weight_decay):
    if decay_all:
        return [dict(params=list(module.parameters()), weight_decay=weight_decay)]
    kinds = {t["name"]: t["kind"] for t in model.tensor_info}
    params = dict(module.named_parameters())
    decay = [p for n, p in params.items() if kinds[n] not in NO_DECAY_KINDS]
    no_decay = [p for n, p in params.items() if kinds[n] in NO_DECAY_KINDS]
    assert decay and no_decay
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


def torch_backward(torch, module, x, y):
    module.zero_grad(set_to_none=True)
    out = module(torch.from_numpy(x.astype(np.int64)))
    loss = torch.nn.functional.mse_loss(out, torch.from_numpy(y))
    loss.backward()
    return float(loss.item())


def compare_params(model, module, what, allowance=None):
    """Per tensor: ||ours - torch|| <= RTOL * ||torch|| (+ the autograd allowance, see run_both)."""
    errors, bad = {}, {}
    for name, p in module.named_parameters():
        ref = p.detach().numpy()
        diff = float(np.linalg.norm((model.parameters()[name] - ref).ravel()))
        limit = RTOL * float(np.linalg.norm(ref.ravel())) + (allowance[name] if allowance else 0.0)
        errors[name] = rel_err(model.parameters()[name], ref)
        if not diff <= limit:
            bad[name] = (diff, limit)
    assert not bad, f"{what}: parameters differ (abs diff, limit): {bad}"
    return max(errors.values())


def run_both(torch, model, module, opt, topt, batches, feed="autograd", clip=None, scheduler=None):
    """Steps both optimizers on the same batches; returns (our grad norms, torch's).

    feed="ours": torch's .grad is set to sensiformer's gradient, bit for bit, so only the
    update rules differ, and every tensor must agree to RTOL.

    feed="autograd": torch uses its own autograd gradient, which differs from ours by rounding
    (~1e-16 absolute). For SGD that enters the parameters linearly (times lr and a momentum
    factor <= 1/(1 - momentum) + 1) and stays far below RTOL. Adam, however, divides by
    sqrt(v) + eps, so a component whose exact gradient is zero (the key part of in_proj_bias:
    softmax ignores a shift common to all keys; its computed gradient is pure rounding noise)
    gets an update lr * noise / eps on each side: ~1e-10 absolute here, which is legitimate.
    So in this mode each tensor may in addition differ by the first-order bound
    ``steps * sum_k lr_k * ||g_ours_k - g_torch_k|| * amplification`` with amplification
    1/eps (Adam) or 1/(1 - momentum) + 1 (SGD), measured from the actual gradient
    differences; that stays ~1e-9 relative, while a wrong update rule is off by >= 1e-6.
    """
    opt.bind(model)
    hyper = opt.hyper
    amplification = (1 / hyper["eps"] if type(opt).__name__ in ("Adam", "AdamW")
                      else 1 / (1 - hyper["momentum"]) + 1)
    allowance = {name: 0.0 for name, _ in module.named_parameters()} if feed == "autograd" else None
    ours_norms, torch_norms = [], []
    for k, (x, y) in enumerate(batches):
        value, grads = model.loss_and_grad(x, y)
        tvalue = torch_backward(torch, module, x, y)
        assert abs(value - tvalue) <= 1e-12 * abs(tvalue)
        if feed == "ours":
            for name, p in module.named_parameters():
                p.grad = torch.from_numpy(grads[name].copy())
        else:
            for name, p in module.named_parameters():
                gdiff = float(np.linalg.norm((grads[name] - p.grad.numpy()).ravel()))
                allowance[name] += len(batches) * opt.lr_at(k) * gdiff * amplification
        if clip is not None:
            torch_norms.append(float(torch.nn.utils.clip_grad_norm_(module.parameters(), clip, foreach=False)))
        else:
            torch_norms.append(float(torch.linalg.vector_norm(
                torch.cat([p.grad.reshape(-1) for p in module.parameters()]))))
        ours_norms.append(opt.step())
        topt.step()
        if scheduler is not None:
            scheduler.step()
        assert opt.step_count == k + 1
        compare_params(model, module, f"after step {k + 1}", allowance)
    np.testing.assert_allclose(ours_norms, torch_norms, rtol=1e-12)
    return ours_norms, torch_norms


# (id, sensiformer factory, torch factory(groups), decay_all, weight_decay)
OPTIMIZERS = [
    ("adamw-default", lambda: sf.AdamW(lr=1e-2),
     lambda t, g: t.optim.AdamW(g, lr=1e-2, foreach=False), True, 0.01),
    ("adamw-wd0.1-decay_all=False", lambda: sf.AdamW(lr=1e-2, weight_decay=0.1, decay_all=False),
     lambda t, g: t.optim.AdamW(g, lr=1e-2, foreach=False), False, 0.1),
    ("adamw-betas-eps", lambda: sf.AdamW(lr=3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.3),
     lambda t, g: t.optim.AdamW(g, lr=3e-3, betas=(0.8, 0.95), eps=1e-6, foreach=False), True, 0.3),
    ("adam-wd", lambda: sf.Adam(lr=1e-2, weight_decay=0.05),
     lambda t, g: t.optim.Adam(g, lr=1e-2, foreach=False), True, 0.05),
    ("adam-wd-decay_all=False", lambda: sf.Adam(lr=1e-2, weight_decay=0.05, decay_all=False),
     lambda t, g: t.optim.Adam(g, lr=1e-2, foreach=False), False, 0.05),
    ("adam-no-wd", lambda: sf.Adam(lr=1e-2),
     lambda t, g: t.optim.Adam(g, lr=1e-2, foreach=False), True, 0.0),
    ("sgd-plain", lambda: sf.SGD(lr=0.05),
     lambda t, g: t.optim.SGD(g, lr=0.05, foreach=False), True, 0.0),
    ("sgd-wd", lambda: sf.SGD(lr=0.05, weight_decay=0.02),
     lambda t, g: t.optim.SGD(g, lr=0.05, foreach=False), True, 0.02),
    ("sgd-momentum-wd", lambda: sf.SGD(lr=0.05, momentum=0.9, weight_decay=0.02),
     lambda t, g: t.optim.SGD(g, lr=0.05, momentum=0.9, foreach=False), True, 0.02),
    ("sgd-momentum-dampening-wd", lambda: sf.SGD(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.02),
     lambda t, g: t.optim.SGD(g, lr=0.05, momentum=0.8, dampening=0.3, foreach=False), True, 0.02),
    ("sgd-nesterov-wd", lambda: sf.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.02),
     lambda t, g: t.optim.SGD(g, lr=0.05, momentum=0.9, nesterov=True, foreach=False), True, 0.02),
    ("sgd-nesterov-wd-decay_all=False",
     lambda: sf.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1, decay_all=False),
     lambda t, g: t.optim.SGD(g, lr=0.05, momentum=0.9, nesterov=True, foreach=False), False, 0.1),
]


def _optimizer_params():
    return [pytest.param(o, id=o[0]) for o in OPTIMIZERS]


@pytest.mark.parametrize("feed", ["autograd", "ours"])
@pytest.mark.parametrize("spec", _optimizer_params())
def test_optimizer_steps_match_torch(torch, random_model, spec, feed):
    _, make_ours, make_torch, decay_all, wd = spec
    model, module = make_pair(random_model, seed=1)
    opt = make_ours()
    topt = make_torch(torch, torch_param_groups(model, module, decay_all, wd))
    before = model.flat.copy()
    run_both(torch, model, module, opt, topt, make_batches(5), feed=feed)
    assert rel_err(model.flat, before) > 1e-3  # the steps really moved the parameters


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_decay_mask_follows_tensor_kinds(torch, random_model, kind):
    """With zero gradients (lr > 0, pure decay) only 'weight' tensors shrink when
    decay_all=False; every tensor shrinks with decay_all=True."""
    for decay_all in (True, False):
        model, _ = make_pair(random_model, seed=2, norm="pre", final_norm=True)
        opt = (sf.AdamW(lr=0.1, weight_decay=0.5, decay_all=decay_all) if kind == "adamw"
               else sf.SGD(lr=0.1, weight_decay=0.5, decay_all=decay_all))
        opt.bind(model)
        before = model.state_dict()
        model.flat_grad[:] = 0.0
        opt.step()
        for t in model.tensor_info:
            new, old = model.parameters()[t["name"]], before[t["name"]]
            if decay_all or t["kind"] not in NO_DECAY_KINDS:
                np.testing.assert_allclose(new, old * (1 - 0.1 * 0.5), rtol=1e-15, err_msg=t["name"])
            else:
                np.testing.assert_array_equal(new, old, err_msg=t["name"])


@pytest.mark.parametrize("feed", ["autograd", "ours"])
@pytest.mark.parametrize("clip_factor", [0.3, 10.0])
@pytest.mark.parametrize("which", ["sgd-momentum", "adamw"])
def test_gradient_clipping_matches_clip_grad_norm(torch, random_model, which, clip_factor, feed):
    """clip_norm rescales the global gradient as torch.nn.utils.clip_grad_norm_
    (coefficient max_norm / (norm + 1e-6), only when < 1); step() returns the pre-clip norm."""
    model, module = make_pair(random_model, seed=3)
    batches = make_batches(5, seed=3)
    x0, y0 = batches[0]
    model.loss_and_grad(x0, y0)
    clip = clip_factor * float(np.linalg.norm(model.flat_grad))  # 0.3: always clipping; 10: never
    if which == "sgd-momentum":
        opt = sf.SGD(lr=0.05, momentum=0.9, weight_decay=0.01, clip_norm=clip)
        topt = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01, foreach=False)
    else:
        opt = sf.AdamW(lr=1e-2, weight_decay=0.1, clip_norm=clip)
        topt = torch.optim.AdamW(module.parameters(), lr=1e-2, weight_decay=0.1, foreach=False)
    ours, theirs = run_both(torch, model, module, opt, topt, batches, feed=feed, clip=clip)
    if clip_factor < 1:
        assert all(n > clip for n in ours)  # clipping was active at every step


def test_sgd_dampening_minimal():
    """Minimal reproduction of the dampening bug: two SGD steps with gradient 1 from 0.

    torch: buf1 = g = 1, p1 = -1; buf2 = 0.8 * 1 + (1 - 0.3) * 1 = 1.5, p2 = -2.5.
    """
    model = sf.Transformer(n_positions=2, d_model=4, n_heads=1, n_layers=1, dtype="float64")
    model.flat[:] = 0.0
    opt = sf.SGD(lr=1.0, momentum=0.8, dampening=0.3).bind(model)
    for _ in range(2):
        model.flat_grad[:] = 1.0
        opt.step()
    np.testing.assert_allclose(opt.state_dict()["exp_avg"], 1.5, rtol=1e-15)
    np.testing.assert_allclose(model.flat, -2.5, rtol=1e-15)


def test_clipping_changes_the_update(random_model):
    """Guard against a clip_norm that is silently ignored: SGD with and without clipping."""
    a = random_model(seed=4, n_positions=5, d_model=8, n_heads=2, n_layers=1)
    b = a.copy()
    x, y = make_batches(1, seq_len=5)[0]
    grad_norm = None
    for model, clip in ((a, None), (b, 1e-3)):
        opt = sf.SGD(lr=0.1, clip_norm=clip).bind(model)
        start = model.flat.copy()
        model.loss_and_grad(x, y)
        grad_norm = float(np.linalg.norm(model.flat_grad))
        returned = opt.step()
        assert returned == pytest.approx(grad_norm, rel=1e-12)
        step = np.linalg.norm(model.flat - start)
        expected = 0.1 * (grad_norm if clip is None else grad_norm * clip / (grad_norm + 1e-6))
        assert step == pytest.approx(expected, rel=1e-10)


def expected_lr(step, lr, warmup, total, min_lr):
    """Linear warm-up lr * (step + 1) / warmup, then cosine from lr to min_lr at total_steps
    (flat at lr when there is no horizon, flat at min_lr after it)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if total <= warmup:
        return lr
    progress = min(1.0, (step - warmup) / (total - warmup))
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize("warmup,total,min_lr", [(10, 100, 1e-5), (0, 50, 0.0), (1, 2, 1e-4), (7, 7, 0.0),
                                                 (25, 0, 0.0)])
def test_warmup_cosine_schedule(random_model, warmup, total, min_lr):
    model = random_model(seed=0, n_positions=3, d_model=4, n_heads=1, n_layers=1)
    opt = sf.AdamW(lr=2e-3, schedule="cosine", warmup_steps=warmup, total_steps=total, min_lr=min_lr).bind(model)
    for step in range(0, max(total, warmup) + 20):
        assert opt.lr_at(step) == pytest.approx(expected_lr(step, 2e-3, warmup, total, min_lr), rel=1e-14,
                                                abs=1e-18), step
    if warmup:
        assert opt.lr_at(0) == pytest.approx(2e-3 / warmup)
        assert opt.lr_at(warmup - 1) == pytest.approx(2e-3)
    if total > warmup:
        assert opt.lr_at(total) == pytest.approx(min_lr, abs=1e-18)
        assert opt.lr_at(10 * total) == pytest.approx(min_lr, abs=1e-18)


def test_constant_schedule(random_model):
    model = random_model(seed=0, n_positions=3, d_model=4, n_heads=1, n_layers=1)
    flat = sf.SGD(lr=0.3).bind(model)
    assert all(flat.lr_at(s) == 0.3 for s in (0, 1, 10, 10**6))
    # "constant" with a warm-up: linear warm-up, then flat
    warm = sf.SGD(lr=0.3, warmup_steps=4).bind(model.copy())
    assert [warm.lr_at(s) for s in range(6)] == pytest.approx([0.075, 0.15, 0.225, 0.3, 0.3, 0.3], rel=1e-15)


def test_schedule_drives_the_updates_like_lambdalr(torch, random_model):
    """The scheduled lr is the one the steps use: SGD+momentum with warm-up/cosine against
    torch.optim.SGD with LambdaLR(expected_lr / lr), stepping past the horizon."""
    model, module = make_pair(random_model, seed=5)
    lr, warmup, total, min_lr = 0.05, 3, 7, 0.005
    opt = sf.SGD(lr=lr, momentum=0.9, weight_decay=0.01, schedule="cosine", warmup_steps=warmup,
                 total_steps=total, min_lr=min_lr)
    topt = torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9, weight_decay=0.01, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(topt, lambda s: expected_lr(s, lr, warmup, total, min_lr) / lr)
    run_both(torch, model, module, opt, topt, make_batches(9, seed=5), scheduler=sched)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_training_trajectory_matches_torch(torch, optimizer):
    """200 steps of the C training loop (Trainer.fit) against torch.optim on the exact batches
    the loop uses (trainer.sample_batch(k)): per-step losses agree to 1e-6 relative.

    The two runs differ by rounding (~1e-16 per operation) that training can amplify, Adam's
    normalisation of near-zero gradient components especially (see run_both). Measured over
    these 200 steps: losses agree to ~1e-15, final weights to ~1e-10 (AdamW; the key bias) and
    ~2e-15 (SGD). 1e-6 catches any systematic difference (a wrong batch, a skipped step, an
    off-by-one bias correction: >= 1e-4) without depending on how chaotic amplification is.
    """
    n, batch, steps = 6, 32, 200
    model = sf.Transformer(n_positions=n, d_model=16, n_heads=2, n_layers=2, dtype="float64", seed=7)
    module = interop.to_torch(model)  # identical initial weights
    if optimizer == "adamw":
        opt = sf.AdamW(lr=1e-3, weight_decay=0.1)
        topt = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=0.1, foreach=False)
    else:
        opt = sf.SGD(lr=0.05, momentum=0.9, weight_decay=0.01)
        topt = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01, foreach=False)
    trainer = sf.Trainer(model, sf.targets.Parity(n), optimizer=opt, batch_size=batch, seed=11)
    batches = [trainer.sample_batch(k) for k in range(steps)]
    for x, y in batches[:3]:
        assert x.shape == (batch, n) and y.shape == (batch,)
        np.testing.assert_array_equal(y, x.sum(axis=1) % 2)
    assert not np.array_equal(batches[0][0], batches[1][0])

    history = trainer.fit(steps, log_every=1, progress=False)
    assert len(history) == steps and list(history["step"]) == list(range(1, steps + 1))
    assert opt.step_count == steps

    torch_losses = []
    for x, y in batches:
        torch_losses.append(torch_backward(torch, module, x, y))
        topt.step()
    ours = history["loss"].to_numpy()
    torch_losses = np.array(torch_losses)
    rel = np.abs(ours - torch_losses) / np.abs(torch_losses)
    assert rel.max() <= 1e-6, (int(rel.argmax()), float(rel.max()))
    # the loss really changed over training (so the comparison is not trivially flat)
    assert abs(ours[-20:].mean() - ours[:20].mean()) > 1e-3
    # the lr column and the final weights agree too
    np.testing.assert_array_equal(history["lr"].to_numpy(), [opt.lr_at(k) for k in range(steps)])
    for name, p in module.named_parameters():
        assert rel_err(model.parameters()[name], p.detach().numpy()) <= 1e-6, name


def test_optimizer_state_dict_round_trip(random_model):
    """Saving and restoring the optimizer state mid-run continues bit for bit."""
    model = random_model(seed=6, n_positions=5, d_model=8, n_heads=2, n_layers=1)
    batches = make_batches(6, seq_len=5, seed=6)
    reference = model.copy()
    ref_opt = sf.AdamW(lr=1e-2, weight_decay=0.1).bind(reference)
    for x, y in batches:
        reference.loss_and_grad(x, y)
        ref_opt.step()

    opt = sf.AdamW(lr=1e-2, weight_decay=0.1).bind(model)
    for x, y in batches[:3]:
        model.loss_and_grad(x, y)
        opt.step()
    state, weights = opt.state_dict(), model.flat.copy()
    resumed = random_model(seed=99, n_positions=5, d_model=8, n_heads=2, n_layers=1)
    resumed.flat[:] = weights
    opt2 = sf.AdamW(lr=1e-2, weight_decay=0.1).bind(resumed)
    opt2.load_state_dict(state)
    assert opt2.step_count == 3
    for x, y in batches[3:]:
        resumed.loss_and_grad(x, y)
        opt2.step()
    np.testing.assert_array_equal(resumed.flat, reference.flat)
