"""A checkpoint round trip (training resumes bit for bit), a model file round trip, and a damaged
checkpoint refused whole."""

import numpy as np

import sensiformer as sf


def make_trainer():
    model = sf.Transformer(8, d_model=16, seed=0)
    return sf.Trainer(model, sf.targets.Parity(8), optimizer=sf.AdamW(lr=1e-3), batch_size=64, seed=3)


def test_checkpoint_round_trip_resumes_bit_for_bit(errors, tmp_path):
    straight = make_trainer()
    straight.fit(12, log_every=4, progress=False)
    first = make_trainer()
    first.fit(6, log_every=3, progress=False)
    first.save_checkpoint(tmp_path / "ck.npz")
    resumed = make_trainer()
    resumed.load_checkpoint(tmp_path / "ck.npz")
    assert resumed.step_count == 6
    resumed.fit(6, log_every=3, progress=False)
    errors.equal("parameters after resuming", resumed.model.flat, straight.model.flat)


def test_model_file_round_trip(errors, tmp_path):
    model = sf.Seq2SeqTransformer(5, d_model=8, dtype="float64", seed=4)
    model.save(tmp_path / "m.npz")
    back = sf.load(tmp_path / "m.npz")
    assert type(back) is type(model) and back.config == model.config
    errors.equal("parameters", back.flat, model.flat)


def test_damaged_checkpoint_is_refused_and_changes_nothing(tmp_path):
    trainer = make_trainer()
    trainer.fit(2, progress=False)
    trainer.save_checkpoint(tmp_path / "ck.npz")
    raw = (tmp_path / "ck.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    other = make_trainer()
    before = other.model.flat.copy()
    try:
        other.load_checkpoint(tmp_path / "cut.npz")
    except sf.CheckpointError as err:
        assert "cut.npz" in str(err)
    else:
        raise AssertionError("a truncated checkpoint was loaded")
    assert np.array_equal(other.model.flat, before) and other.step_count == 0
