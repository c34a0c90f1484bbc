"""The paper's main empirical claim in miniature: the sharpness of fitted PARITY models grows
with the input length much faster than that of fitted MAJORITY models (Hahn & Rofin 2024,
Fig. 1), over 5 seeds, with a margin.

A small, fast configuration: d=16, one head, d_ff=64, AdamW(2e-3, wd 0.1), batch 32. PARITY at
n=12 needs a push to be fitted in a few thousand steps: the training rows are every input plus
the inputs of Hamming weight <= 2 repeated 20 times (mixing in sparse inputs makes parity
learnable, Abbe et al. 2023). A model counts as fitted at the first check (every 250 steps)
where its MSE on every input of {0,1}^n is below 1e-3 (the paper's convergence threshold), and
its sharpness (sigma=0.02, the same noise draws for every model) is measured there, on the full
input space (n=6) or on one fixed set of 1024 inputs (n=12). As the paper keeps only converged
runs, each (target, n) takes the first 5 seeds whose model is fitted (a PARITY(12) run misses
the step budget now and then: at a constant lr some runs sit on a 3e-3 plateau for thousands of
steps, so the budget is 10,000 steps).

At this scale MAJORITY's sharpness is not flat: it grows about 1-1.8x from n=6 to n=12 (its
sensitivity grows like sqrt(n)); PARITY's grows about 1.5-4x (its sensitivity is n). Single
seeds scatter by up to 5x, so the comparison uses geometric means over seeds, and the margins
are modest: parity grows >= 1.5x and >= 1.2x as much as majority.
"""

import numpy as np
import pytest

import sensiformer as sf

FITTED, MAX_SEEDS = 5, 10
CHECK_EVERY, MAX_STEPS = 250, 10000


def fitted_sharpness(target_class, n, seed):
    """Sharpness of a model trained to fit the target, or None if it did not fit in time."""
    target = target_class(n)
    x = sf.targets.all_inputs(n)
    y = target(x)
    sparse = x[x.sum(axis=1) <= 2]
    rows = np.concatenate([x] + [sparse] * 20)
    model = sf.Transformer(n, d_model=16, n_heads=1, d_ff=64, seed=seed)
    trainer = sf.Trainer(model, data=(rows, target(rows)), optimizer=sf.AdamW(lr=2e-3, weight_decay=0.1),
                         batch_size=32, seed=seed, n_threads=1)
    for _ in range(MAX_STEPS // CHECK_EVERY):
        trainer.fit(CHECK_EVERY, log_every=CHECK_EVERY, progress=False)
        if model.loss(x, y) < 1e-3:
            break
    else:
        return None
    if len(x) > 1024:
        x = x[np.random.default_rng(0).choice(len(x), 1024, replace=False)]
        y = target(x)
    return sf.probes.sharpness(model.astype("float64"), x, y, repeats=20, seed=0).value


def first_fitted(target_class, n):
    values = []
    for seed in range(MAX_SEEDS):
        value = fitted_sharpness(target_class, n, seed)
        if value is not None:
            values.append(value)
        if len(values) == FITTED:
            return np.array(values)
    pytest.fail(f"only {len(values)} of {MAX_SEEDS} seeds fitted {target_class.__name__}({n})")


@pytest.mark.slow
def test_parity_sharpness_grows_with_length_much_faster_than_majority():
    sharp = {(t.__name__, n): first_fitted(t, n) for t in (sf.targets.Parity, sf.targets.Majority) for n in (6, 12)}
    geo = {key: float(np.exp(np.log(np.maximum(v, 1e-12)).mean())) for key, v in sharp.items()}
    parity_growth = geo["Parity", 12] / geo["Parity", 6]
    majority_growth = geo["Majority", 12] / geo["Majority", 6]
    report = {k: np.round(v, 4).tolist() for k, v in sharp.items()}
    assert parity_growth >= 1.5, report
    assert parity_growth >= 1.2 * majority_growth, report
