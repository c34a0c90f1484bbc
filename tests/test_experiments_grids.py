"""The paper presets reproduce the official sweep grids of paper.md §4 exactly."""

import collections
import itertools

import numpy as np
import pandas as pd
import pytest

from sensiformer import experiments as E
from sensiformer import sweep
from sensiformer.sweep import table_to_hex
from sensiformer.sweep.config import flatten

DEFAULTS = dict(d_model=128, n_heads=2, n_layers=2, batch_size=1024, lr=3e-4, weight_decay=0.1, steps=10_000,
                sharpness_sigma=0.02, sharpness_repeats=10, blowup_definition="official", dtype="float32")


def settings(c, **expected):
    """The official sweep's settings, by their flat names."""
    want, flat = dict(DEFAULTS, **expected), flatten(c)
    return {k: flat[k] for k in want} == want


def test_length_scaling_1():
    configs = E.scaling("paper").configs()
    assert len(configs) == 1080
    got = [(c.n, c.seed, c.target) for c in configs]
    want = list(itertools.product(range(4, 31), range(10), ("parity", "majority", "first", "mean")))
    assert got == want
    assert all(settings(c) and c.final.enabled and c.final.batches == 1000 for c in configs)
    assert len({c.key for c in configs}) == 1080


def test_length_scaling_2():
    configs = E.scaling("paper", variant="long").configs()
    assert len(configs) == 600
    lengths = [4, 31, 57, 84, 111, 138, 164, 191, 218, 245, 271, 298, 325, 352, 378, 405, 432, 459, 485, 512]
    assert sorted({c.n for c in configs}) == lengths
    assert {(c.n, c.seed, c.target) for c in configs} == set(
        itertools.product(lengths, range(10), ("majority", "first", "mean")))
    assert all(settings(c, d_model=4, batch_size=128) for c in configs)


def test_tradeoff_random_sweeps():
    configs = E.tradeoff("paper").configs()
    parts = collections.defaultdict(list)
    for c in configs:
        parts[c.tags["part"]].append(c)
    assert {k: len(v) for k, v in parts.items()} == dict(tradeoff_1=1000, tradeoff_2=1000, tradeoff_3=500,
                                                          tradeoff_4=500)
    for name, runs in parts.items():
        lengths = {c.n for c in runs}
        seeds = [c.seed for c in runs]
        targets = {c.target for c in runs}
        assert all(1e-4 <= c.lr <= 5e-4 and 0.0 <= c.weight_decay <= 0.4 for c in runs)
        assert all(settings(c, lr=c.lr, weight_decay=c.weight_decay) for c in runs)
        if name in ("tradeoff_1", "tradeoff_2"):
            assert lengths == set(range(4, 26)), "n ~ U{4..25}: every value appears in 1000 draws"
            assert min(seeds) >= 0 and max(seeds) <= 1000
            assert targets == ({"majority", "first", "mean"} if name == "tradeoff_1" else {"parity"})
        else:
            assert lengths == {5, 10, 15, 20}
            assert targets == {"parity", "majority", "first", "mean"}
            lo, hi = (0, 1000) if name == "tradeoff_3" else (1001, 2000)
            assert lo <= min(seeds) and max(seeds) <= hi
        lrs = np.array([c.lr for c in runs])
        assert abs(lrs.mean() - 3e-4) < 2e-5, "uniform on [1e-4, 5e-4]"
    # reproducible draws
    assert [c.key for c in E.tradeoff("paper").configs()] == [c.key for c in configs]
    assert [c.key for c in E.tradeoff("paper", sample_seed=1).configs()] != [c.key for c in configs]
    # the quick preset draws lr from the official range too: a wider range lets every target reach large
    # blowups and hides PARITY's frontier moving outward with n (issue 17 point 4)
    quick_lrs = [c.lr for c in E.tradeoff("quick").configs()]
    assert 1e-4 <= min(quick_lrs) and max(quick_lrs) <= 5e-4


@pytest.mark.parametrize("variant,count,wds,steps", [("20k", 404, (0.0, 0.1, 0.2, 0.3), 20_000),
                                                     ("100k", 202, (0.0, 0.1), 100_000)])
def test_dynamic_metrics(variant, count, wds, steps):
    configs = E.dynamics("paper", variant=variant).configs()
    assert len(configs) == count
    assert {(c.seed, c.weight_decay) for c in configs} == set(itertools.product(range(101), wds))
    assert all(settings(c, weight_decay=c.weight_decay, steps=steps) and c.target == "parity" and c.n == 25
               and c.dynamics == sweep.Dynamics(every=100, batches=1, repeats=500) and not c.final.enabled
               for c in configs)


def test_scratchpad():
    exp = E.scratchpad("paper")
    configs = exp.configs()
    lengths = [4, 39, 74, 109, 144, 179, 215, 250, 285, 320, 355, 390, 426, 461, 496, 531, 566, 601, 637, 672, 707,
               742, 777, 812, 848, 883, 918, 953, 988, 1024]
    assert len(configs) == 300
    assert {(c.n, c.seed) for c in configs} == set(itertools.product(lengths, range(10)))
    assert [(c.n, c.seed) for c in configs] == list(itertools.product(lengths, range(10))), "the grid's order"
    assert all(settings(c, d_model=32, batch_size=128) and c.model == "scratchpad" and c.target == "parity"
               and c.final.enabled and c.final.batches == 1000 and c.eval_batches == 1000 and c.log_every == 100
               for c in configs)
    assert len({c.key for c in configs}) == 300


def test_generalization_first_step():
    configs = E.generalization("paper").configs()
    assert len(configs) == 400, "only the fit stage can be built without results"
    by_m = collections.Counter(c.train_subset for c in configs)
    assert by_m == {256: 100, 128: 100, 512: 100, 1024: 100}
    assert {(c.seed, c.target_seed) for c in configs if c.train_subset == 256} == set(
        itertools.product(range(10), range(10)))
    assert all(c.n == 10 and c.target == "random" and c.predictions.save and not c.final.enabled for c in configs)


def test_generalization_second_step_from_a_full_manifest():
    """With every fit succeeding, the manifest has 200 + 300 entries and the refits are
    5 x 200 = 1000 and 5 x 300 = 1500 runs (generalization_second_step_{1,2})."""
    from sensiformer.experiments.generalization import refit_configs

    exp = E.generalization("paper")
    rows = []
    for group, kinds in (("256_random", (("learned", 256), ("random", 256))),
                         ("128_512", (("learned", 128), ("learned", 512), ("learned", 1024)))):
        for kind, m in kinds:
            for i in range(100):
                rows.append(dict(group=group, kind=kind, n=10, m=m, target_seed=i % 10, seed=i // 10,
                                 parent=f"p{m}-{i}", random_seed=None, average_sensitivity=2.0,
                                 table=table_to_hex(np.random.default_rng(len(rows)).integers(0, 2, 1024))))
    manifest = pd.DataFrame(rows)
    configs = refit_configs(manifest, exp.params)
    groups = collections.Counter(c.tags["group"] for c in configs)
    assert groups == {"256_random": 1000, "128_512": 1500}
    assert {c.seed for c in configs} == set(range(5))
    assert all(c.target == "table" and c.train_subset is None and c.final.enabled and c.steps == 10_000
               for c in configs)
    learned = [c for c in configs if c.tags["kind"] == "learned"]
    assert all(c.train_sharpness.repeats == 100 and c.train_sharpness.subset == c.tags["m"] for c in learned)


def test_presets_and_overrides():
    for fn in E.EXPERIMENTS.values():
        for preset in ("ci", "quick", "paper"):
            assert fn(preset).configs() or fn is E.generalization
        with pytest.raises(ValueError, match="preset"):
            fn("huge")
        with pytest.raises(TypeError, match="unknown parameter"):
            fn("ci", no_such_parameter=1)
    exp = E.scaling("quick", lengths=range(4, 7), steps=10)
    assert exp.sweep.startswith("scaling/quick+") and E.scaling("quick").sweep == "scaling/quick"
    assert E.scaling("quick", steps=E.scaling("quick").params["steps"]).sweep == "scaling/quick"
    assert {c.n for c in exp.configs()} == {4, 5, 6} and {c.steps for c in exp.configs()} == {10}
    assert E.scaling("paper", variant="long").sweep == "scaling-long/paper"


def test_generalization_refits_have_their_own_optimisation():
    """The quick preset refits with d=64 and a cosine decay (its fits stay d=32, constant lr); the
    paper preset refits exactly like its fits."""
    from sensiformer.experiments.generalization import refit_configs

    manifest = pd.DataFrame([dict(group=g, kind=k, n=10, m=256 if g == "256_random" else 128, target_seed=0, seed=0,
                                  parent="p", random_seed=None, average_sensitivity=3.0,
                                  table=table_to_hex(np.zeros(1024, dtype=np.uint8)))
                             for g, k in (("256_random", "learned"), ("256_random", "random"), ("128", "learned"))
                             for _ in range(4)])
    quick = E.generalization("quick")
    fits, refits = quick.configs(), refit_configs(manifest, quick.params)
    assert {(c.d_model, c.lr_schedule, c.steps) for c in fits} == {(32, "constant", 2000)}
    assert {(c.d_model, c.lr_schedule, c.steps, c.lr, c.batch_size) for c in refits} == {(64, "cosine", 10_000, 2e-3,
                                                                                          128)}
    assert len(refits) == 9, "3 per group and kind"
    paper = E.generalization("paper")
    assert {(c.d_model, c.lr_schedule, c.lr, c.batch_size) for c in refit_configs(manifest, paper.params)} == {
        (128, "constant", 3e-4, 1024)}
    custom = refit_configs(manifest, E.generalization("quick", refit_lr=1e-3, refit_batch_size=64).params)
    assert {(c.lr, c.batch_size) for c in custom} == {(1e-3, 64)}
