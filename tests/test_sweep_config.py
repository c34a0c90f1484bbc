"""RunConfig carries its probes in groups (sweep/probe_config.py); the flat form keeps every key and stored row."""

import dataclasses
import json

import pytest

from sensiformer.sweep import (Dynamics, FinalMeasurement, LengthEvaluation, ModelSensitivity, Predictions,
                               ProbeSettings, RunConfig, TrainSharpness, execute)
from sensiformer.sweep.config import FLAT_NAMES, GROUPS, flatten

#: name -> (the configuration as RunConfig took it before the probe groups, with flat names; its key then).
#: The keys were computed on main at 7b4373c, before RunConfig had groups: results stored under them stay valid.
PINNED = {
    "default": ({}, "25beb10352181dda06a0"),
    "scratchpad": (dict(model="scratchpad", n=8, d_model=32, batch_size=128, steps=2000, measure_batches=8),
                   "257fff0c5578522c699e"),
    "dynamics": (dict(n=25, dynamic_every=100, dynamic_batches=1, dynamic_repeats=500, measure=False,
                      weight_decay=0.0), "fcfbef9a8ae053849198"),
    "generalization_refit": (dict(target="table", n=6, target_table="0123456789abcdef", train_sharpness_repeats=8,
                                  sharpness_subset=16, sharpness_subset_seed=3, lr_schedule="cosine", steps=300),
                             "bcf586131b4aeeb773e3"),
    "generalization_fit": (dict(target="random", n=6, target_seed=1, train_subset=16, save_predictions=True,
                                measure=False), "94ab465d26a52985f654"),
    "spectrum": (dict(target="sparse_parity", target_bits=(0, 2), n=5, dynamic_every=50, dynamic_spectrum=True,
                      spectrum_samples=1024, measure=False), "c850da5907f173d0b130"),
    "spectrum_samples": (dict(n=24, dynamic_every=10, dynamic_spectrum=True, spectrum_samples=4096),
                         "a91c05503145c802be75"),
    "final_spectrum": (dict(n=8, final_spectrum=True, measure_batches=4), "aacc4cd82ce03ce5ce2f"),
    "eval_lengths": (dict(n=4, train_lengths=(2, 3, 4), eval_lengths=(2, 3, 4, 5, 6), length_chunk=10, measure=False,
                          positional="none"), "6474ed64dd315bb3d3be"),
    "init_sensitivity": (dict(n=6, d_model=8, n_layers=1, init="gaussian", steps=0, measure=False,
                              model_sensitivity=True, sensitivity_threshold=0.0, eval_batches=1),
                         "80ccf458272730574ff7"),
    "probe_settings": (dict(sharpness_sigma=0.05, sharpness_repeats=100, sharpness_seed=7, blowup_definition="theory",
                            measure_batches=8), "05d20e344afb317d17c0"),
}

#: the same configurations written with the groups
GROUPED = {
    "default": RunConfig(),
    "scratchpad": RunConfig(model="scratchpad", n=8, d_model=32, batch_size=128, steps=2000,
                            final=FinalMeasurement(batches=8)),
    "dynamics": RunConfig(n=25, dynamics=Dynamics(every=100, batches=1, repeats=500),
                          final=FinalMeasurement(enabled=False), weight_decay=0.0),
    "generalization_refit": RunConfig(target="table", n=6, target_table="0123456789abcdef",
                                      train_sharpness=TrainSharpness(repeats=8, subset=16, subset_seed=3),
                                      lr_schedule="cosine", steps=300),
    "generalization_fit": RunConfig(target="random", n=6, target_seed=1, train_subset=16,
                                    predictions=Predictions(save=True), final=FinalMeasurement(enabled=False)),
    "spectrum": RunConfig(target="sparse_parity", target_bits=(0, 2), n=5, dynamics=Dynamics(every=50, spectrum=True),
                          probe_settings=ProbeSettings(spectrum_samples=1024), final=FinalMeasurement(enabled=False)),
    "spectrum_samples": RunConfig(n=24, dynamics=Dynamics(every=10, spectrum=True),
                                  probe_settings=ProbeSettings(spectrum_samples=4096)),
    "final_spectrum": RunConfig(n=8, final=FinalMeasurement(batches=4, spectrum=True)),
    "eval_lengths": RunConfig(n=4, train_lengths=(2, 3, 4), length_evaluation=LengthEvaluation(lengths=(2, 3, 4, 5, 6)),
                              length_chunk=10, final=FinalMeasurement(enabled=False), positional="none"),
    "init_sensitivity": RunConfig(n=6, d_model=8, n_layers=1, init="gaussian", steps=0,
                                  final=FinalMeasurement(enabled=False),
                                  sensitivity=ModelSensitivity(enabled=True, threshold=0.0), eval_batches=1),
    "probe_settings": RunConfig(probe_settings=ProbeSettings(sharpness_sigma=0.05, sharpness_seed=7,
                                                             blowup_definition="theory"),
                                final=FinalMeasurement(batches=8, sharpness_repeats=100)),
}


@pytest.mark.parametrize("name", PINNED)
def test_keys_of_configurations_written_before_the_groups_are_unchanged(name):
    flat, key = PINNED[name]
    assert RunConfig.from_dict(flat).key == key, "the stored form: a store's or a configuration file's"
    assert GROUPED[name].key == key, "the same configuration written with the groups"
    assert RunConfig.from_dict(GROUPED[name].to_dict()) == GROUPED[name]
    stored = json.loads(json.dumps(GROUPED[name].to_dict()))  # as a store holds it
    assert all(stored[k] == json.loads(json.dumps(v)) for k, v in flat.items()), "the flat names, as before"


def test_every_probe_setting_has_one_flat_name_and_one_place():
    groups = dict(GROUPS)
    assert set(groups) == {"probe_settings", "final", "dynamics", "train_sharpness", "predictions", "sensitivity",
                           "length_evaluation"}
    names = [flat for kind in groups.values() for flat in kind().flat()]
    assert len(names) == len(set(names)) == len(FLAT_NAMES) == 19
    assert not set(names) & {f.name for f in dataclasses.fields(RunConfig)}, "a flat name is no RunConfig field"
    assert [type(e) for e in RunConfig().extras] == [TrainSharpness, Predictions, ModelSensitivity, LengthEvaluation]
    assert set(flatten(RunConfig())) == set(RunConfig().to_dict())


def test_the_constructor_takes_the_groups_and_names_where_a_flat_setting_went():
    with pytest.raises(TypeError, match=r"measure_batches is final=FinalMeasurement\(batches=\.\.\.\)"):
        RunConfig(n=4, measure_batches=8)
    with pytest.raises(TypeError, match=r"dynamic_every is dynamics=Dynamics\(every=\.\.\.\).*from_dict"):
        RunConfig(dynamic_every=10)
    with pytest.raises(TypeError, match="final must be a FinalMeasurement"):
        RunConfig(final=Dynamics())
    with pytest.raises(ValueError, match="final is given both as a FinalMeasurement and as its flat settings"):
        RunConfig.from_dict(dict(final=FinalMeasurement(), measure_batches=3))
    assert RunConfig.from_dict(dict(final=FinalMeasurement(batches=3))).final.batches == 3


@pytest.mark.parametrize("build, error, message", [
    (lambda: FinalMeasurement(batches=0), ValueError, r"FinalMeasurement.batches \(measure_batches\) must be positive"),
    (lambda: FinalMeasurement(sharpness_repeats=2.5), TypeError, "FinalMeasurement.sharpness_repeats must be an int"),
    (lambda: Dynamics(every=-1), ValueError, r"Dynamics.every \(dynamic_every\) must be >= 0, got -1"),
    (lambda: Dynamics(repeats=0), ValueError, r"Dynamics.repeats \(dynamic_repeats\) must be positive"),
    (lambda: ProbeSettings(sharpness_sigma=-0.1), ValueError, "ProbeSettings.sharpness_sigma must be finite and >= 0"),
    (lambda: ProbeSettings(blowup_definition="max"), ValueError, "blowup_definition must be 'official' or 'theory'"),
    (lambda: ProbeSettings(spectrum_samples=0), ValueError, "ProbeSettings.spectrum_samples must be positive"),
    (lambda: TrainSharpness(repeats=-2), ValueError, r"TrainSharpness.repeats \(train_sharpness_repeats\) must be >="),
    (lambda: ModelSensitivity(threshold="0.5"), TypeError, r"ModelSensitivity.threshold \(sensitivity_threshold\)"),
    (lambda: LengthEvaluation(lengths=(4, 5.5)), TypeError, r"LengthEvaluation.lengths \(eval_lengths\) must be an "),
    (lambda: RunConfig.from_dict(dict(measure_batches=0)), ValueError, r"\(measure_batches\) must be positive"),
    (lambda: RunConfig(model="scratchpad", predictions=Predictions(save=True),
                       sensitivity=ModelSensitivity(enabled=True)), ValueError,
     "does not support model_sensitivity, save_predictions"),
])
def test_bad_probe_settings_are_refused_naming_them(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_a_probe_that_is_off_keeps_its_settings_in_the_key():
    """measure=False with measure_batches=8 was a different run from measure=False alone: still so."""
    off = RunConfig(final=FinalMeasurement(enabled=False))
    assert RunConfig(final=FinalMeasurement(enabled=False, batches=8)).key != off.key
    assert RunConfig(sensitivity=ModelSensitivity(threshold=0.0)).key != RunConfig().key
    assert not off.final.active and not RunConfig().dynamics.active and Dynamics(every=5).active


def test_settings_are_normalised_so_equal_settings_share_a_key():
    assert RunConfig(final=FinalMeasurement(batches=8.0)).key == RunConfig(final=FinalMeasurement(batches=8)).key
    assert LengthEvaluation(lengths=[4, 5]).lengths == (4, 5)
    assert ModelSensitivity(threshold=0).threshold == 0.0 and isinstance(ModelSensitivity(threshold=0).threshold,
                                                                         float)


def test_a_run_records_what_its_groups_ask_for():
    cfg = RunConfig(target="random", n=4, seed=1, d_model=8, batch_size=16, steps=20, log_every=10, eval_batches=1,
                    train_subset=8, final=FinalMeasurement(batches=1, sharpness_repeats=2),
                    dynamics=Dynamics(every=10, repeats=2), train_sharpness=TrainSharpness(repeats=2),
                    predictions=Predictions(save=True), length_evaluation=LengthEvaluation(lengths=(3,)))
    out = execute(cfg)
    assert {"sharpness", "train_sharpness", "eval_accuracy@3", "convergence_step"} <= set(out["metrics"])
    assert "predictions" in out["artifacts"] and any("sharpness" in row for row in out["history"])
    assert out["config"] == cfg.to_dict() and out["key"] == cfg.key
