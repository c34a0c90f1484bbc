"""The results store and run keys: hashing, atomic writes, reading back, export."""

import dataclasses
import json
import math
import sqlite3

import numpy as np
import pandas as pd
import pytest

from sensiformer.sweep import RunConfig, Store, hex_to_table, table_to_hex
from sensiformer.sweep.config import HASH_VERSION, flatten


def fake_result(key="k1", steps=(100, 200), status="ok", **metrics):
    m = dict(eval_loss=1e-4, converged=True, sharpness=0.01, sharpness_stderr=0.001, param_norm=10.0)
    m.update(metrics)
    return dict(key=key, status=status, error=None, config=dict(RunConfig(n=5).to_dict(), tags={"part": "a"}),
                metrics=m, artifacts={"predictions": "ff"}, history=[dict(step=s, loss=1.0 / s) for s in steps],
                provenance=dict(version="0.1.0", git_commit="abc", build="-O3", cpu_path="x86-64-v3", openmp=True,
                                n_threads=1, seed=0, host="h", python="3.11", numpy="2"),
                started=1.0, finished=2.0, duration=1.0)


# ---- keys ------------------------------------------------------------------------------------
def test_key_is_stable_and_ignores_tags():
    a = RunConfig(target="parity", n=6, seed=3, tags={"x": 1})
    b = RunConfig(target="parity", n=6, seed=3)
    assert a.key == b.key and len(a.key) == 20
    assert RunConfig.from_dict(a.to_dict()).key == a.key
    assert a.to_dict()["tags"] == {"x": 1}


def test_key_normalises_numbers():
    assert RunConfig(weight_decay=0).key == RunConfig(weight_decay=0.0).key
    assert RunConfig(lr=1e-3).key == RunConfig(lr=0.001).key
    assert RunConfig(n=np.int64(7)).key == RunConfig(n=7).key
    assert RunConfig(train_lengths=[2, 3]).key == RunConfig(train_lengths=(2, 3)).key


def test_every_hashed_field_changes_the_key():
    base = RunConfig(n=8)
    changes = dict(target="majority", n=9, target_seed=1, model="scratchpad", d_model=64, n_heads=4, n_layers=3, d_ff=7,
                   norm="pre", ln_eps=0.0, dtype="float64", n_positions=12, seed=1, lr=1e-3, weight_decay=0.2,
                   batch_size=64, steps=5, log_every=10, train_subset=16, subset_seed=4, train_lengths=(4, 8),
                   length_chunk=5, eval_batches=3, measure=False, measure_batches=3, sharpness_sigma=0.01,
                   sharpness_repeats=3, sharpness_seed=1, blowup_definition="theory", dynamic_every=10,
                   dynamic_batches=2, dynamic_repeats=3, save_predictions=True, train_sharpness_repeats=2,
                   sharpness_subset=8, sharpness_subset_seed=1, eval_lengths=(9,), init="gaussian",
                   model_sensitivity=True, sensitivity_threshold=0.0, lr_schedule="cosine",
                   dynamic_spectrum=True, spectrum_samples=7, positional="sinusoidal", norm_type="rms",
                   rope_base=500.0, final_spectrum=True)
    hashed = set(flatten(base)) - {"tags"}  # every setting by its flat name, the probe groups' included
    with_target = {"target_table", "target_bits"}  # only valid with their target: checked below
    assert hashed | with_target == set(changes) | with_target, "a new field needs a case here"
    assert "tags" not in hashed
    keys = {base.key}
    for name, value in changes.items():
        keys.add(RunConfig.from_dict({**base.to_dict(), name: value}).key)
    assert len(keys) == len(changes) + 1
    t = RunConfig(target="table", n=3, target_table=table_to_hex([0, 1, 1, 0, 1, 0, 0, 1]))
    assert t.key != dataclasses.replace(t, target_table=table_to_hex([1, 1, 1, 0, 1, 0, 0, 1])).key
    sparse = RunConfig(target="sparse_parity", n=6, target_bits=(0, 3))
    assert sparse.key != dataclasses.replace(sparse, target_bits=(0, 4)).key
    assert HASH_VERSION == 1


def test_late_fields_at_their_defaults_keep_the_earlier_keys():
    """Keys computed before ``lr_schedule`` existed (pinned) still find their stored results."""
    from sensiformer.sweep.config import LATE_FIELDS

    assert RunConfig(n=8).key == "9ac4ab4d374782736b84"
    assert RunConfig(target="majority", n=12, seed=3, lr=1e-3, train_subset=64).key == "361ef5fff901619f32be"
    assert set(LATE_FIELDS) <= set(flatten(RunConfig()))
    assert not set(LATE_FIELDS) & set(RunConfig(n=8).hashed_fields())
    cosine = RunConfig(n=8, lr_schedule="cosine")
    assert cosine.hashed_fields()["lr_schedule"] == "cosine" and cosine.key != RunConfig(n=8).key
    assert RunConfig.from_dict(RunConfig(n=8).to_dict()).to_dict()["lr_schedule"] == "constant"
    assert RunConfig.from_dict(cosine.to_dict()).key == cosine.key
    with pytest.raises(ValueError, match="lr_schedule"):
        RunConfig(lr_schedule="step")


@pytest.mark.parametrize("name, value", [("positional", "none"), ("positional", "rope"), ("norm_type", "rms"),
                                         ("rope_base", 100.0)])
def test_model_options_are_late_fields(name, value):
    """The paper's encoding and norm stay out of the key (pinned above); any other is in it and survives a
    round trip through the store's dict."""
    from sensiformer.sweep.config import LATE_FIELDS

    assert LATE_FIELDS[name] == getattr(RunConfig(), name)
    other = RunConfig(n=8, **{name: value})
    assert other.hashed_fields()[name] == value and other.key != RunConfig(n=8).key
    assert RunConfig.from_dict(other.to_dict()).key == other.key
    assert RunConfig(n=8).to_dict()[name] == LATE_FIELDS[name]


@pytest.mark.parametrize("name, value", [("positional", "rotary"), ("positional", "Concat"), ("positional", ["add"]),
                                         ("norm_type", "batch"), ("norm_type", None)])
def test_model_options_refuse_unknown_names(name, value):
    with pytest.raises(ValueError, match=f"{name} must be one of"):
        RunConfig(**{name: value})


@pytest.mark.parametrize("value, error", [(0, ValueError), (-1.0, ValueError), (float("inf"), ValueError),
                                          ("1e4", TypeError)])
def test_rope_base_is_a_positive_number(value, error):
    with pytest.raises(error, match="rope_base"):
        RunConfig(positional="rope", rope_base=value)


def test_model_options_come_from_the_engine_vocabulary():
    from sensiformer import _vocabulary
    from sensiformer.sweep.config import NORM_TYPES, POSITIONALS

    assert set(POSITIONALS) == set(_vocabulary.POSITIONALS) and POSITIONALS[0] == "concat"
    assert set(NORM_TYPES) == set(_vocabulary.NORM_TYPES)


def test_config_validation():
    with pytest.raises(ValueError, match="target"):
        RunConfig(target="xor")
    with pytest.raises(ValueError, match="target_table"):
        RunConfig(target="table", n=4)
    with pytest.raises(TypeError, match="integer"):
        RunConfig(n=4.5)
    with pytest.raises(ValueError, match="unknown RunConfig fields"):
        RunConfig.from_dict({"n": 4, "learning_rate": 1})


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 10])
def test_table_hex_round_trip(n):
    bits = np.random.default_rng(n).integers(0, 2, 2**n)
    text = table_to_hex(bits)
    assert np.array_equal(hex_to_table(text, n), bits)
    assert len(text) * 4 == max(2**n, 4)


# ---- store -------------------------------------------------------------------------------------
def test_store_is_wal_with_busy_timeout(tmp_path):
    store = Store(tmp_path / "r.db", timeout=7)
    conn = store._raw()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 7000


def test_write_and_read_back(tmp_path):
    store = Store(tmp_path / "r.db")
    assert store.write(fake_result("k1"))
    assert not store.write(fake_result("k1")), "a key is written once"
    store.write(fake_result("k2", status="diverged", eval_loss=float("nan"), converged=False))
    assert len(store) == 2 and "k1" in store and store.keys() == {"k1", "k2"}
    runs = store.runs()
    assert list(runs["key"]) == ["k1", "k2"]
    row = runs.iloc[0]
    assert row["n"] == 5 and row["sharpness"] == 0.01 and row["part"] == "a"
    for col in ("version", "git_commit", "build", "cpu_path", "openmp", "n_threads", "seed", "host", "duration"):
        assert col in runs, col
    assert math.isnan(runs.iloc[1]["eval_loss"])
    assert "predictions" not in runs and store.runs(artifacts=True).iloc[0]["predictions"] == "ff"
    hist = store.history()
    assert list(hist.columns[:2]) == ["key", "step"] and len(hist) == 4
    assert set(store.history(keys="k1")["step"]) == {100, 200}
    assert store.result("k1")["metrics"]["param_norm"] == 10.0
    assert store.delete(["k2"]) == 1 and len(store) == 1 and len(store.history()) == 2


def test_members_and_pending(tmp_path):
    store = Store(tmp_path / "r.db")
    store.add_members("s", [(0, "k1", {"a": 1}), (1, "k2", {"a": 2}), (2, "k1", {"a": 3})])
    assert store.pending("s") == ["k1", "k2"]
    store.write(fake_result("k1"))
    assert store.pending("s") == ["k2"]
    runs = store.runs(sweep="s")
    assert list(runs["idx"]) == [0, 2] and list(runs["a"]) == [1, 3], "one row per member, with its tags"
    sweeps = store.sweeps()
    assert sweeps.iloc[0].to_dict() == dict(sweep="s", runs=3, finished=2, ok=2, converged=2)
    store.add_members("s", [(0, "k2", {})])  # the sweep now asks for less: its membership is replaced
    assert store.pending("s") == ["k2"] and len(store.runs(sweep="s")) == 0 and len(store) == 1


def test_a_failed_write_leaves_nothing(tmp_path):
    store = Store(tmp_path / "r.db")
    bad = fake_result("k1")
    bad["history"].append(dict(step=300, loss=object()))  # not JSON-serialisable: fails mid-transaction
    with pytest.raises(TypeError):
        store.write(bad)
    assert len(store) == 0 and len(store.history()) == 0
    assert store.write(fake_result("k1")) and len(store.history()) == 2


def test_concurrent_readers_and_a_second_writer(tmp_path):
    path = tmp_path / "r.db"
    a, b = Store(path), Store(path)
    a.write(fake_result("k1"))
    assert b.keys() == {"k1"}
    b.write(fake_result("k2"))
    assert a.keys() == {"k1", "k2"}
    raw = sqlite3.connect(path)  # any SQLite client can read the file
    assert raw.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2
    raw.close()


def test_store_pickles(tmp_path):
    import pickle

    store = Store(tmp_path / "r.db")
    store.write(fake_result("k1"))
    assert pickle.loads(pickle.dumps(store)).keys() == {"k1"}


def test_export_csv_and_parquet(tmp_path):
    store = Store(tmp_path / "r.db")
    store.write(fake_result("k1"))
    store.write(fake_result("k2"))
    csv = store.export(tmp_path / "runs.csv")
    back = pd.read_csv(csv)
    assert list(back["key"]) == ["k1", "k2"] and "sharpness" in back
    assert len(pd.read_csv(store.export(tmp_path / "h.csv", table="history"))) == 4
    with pytest.raises(ValueError, match="csv or .parquet"):
        store.export(tmp_path / "runs.xlsx")
    pytest.importorskip("pyarrow")
    pq = pd.read_parquet(store.export(tmp_path / "runs.parquet"))
    assert list(pq["key"]) == ["k1", "k2"]
    assert json.loads(pq["train_lengths"].iloc[0]) == []


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "r.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value='99' WHERE name='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="schema version 99"):
        Store(path)


def test_a_version_1_store_is_upgraded_in_place_and_keeps_its_runs(tmp_path):
    """Stores written before runs recorded the worker's pid gain the column (empty for their
    runs); older sensiformers then refuse the file by its version instead of writing into it."""
    from sensiformer.sweep.store import _SCHEMA

    path = tmp_path / "r.db"
    assert ", pid INTEGER" in _SCHEMA
    with sqlite3.connect(path) as conn:  # the version-1 file: no pid column
        conn.executescript(_SCHEMA.replace(", pid INTEGER", ""))
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        conn.execute("INSERT INTO runs (key, status, config, metrics, artifacts, host) "
                     "VALUES ('old', 'ok', '{}', '{\"eval_loss\": 0.5}', '{}', 'node1')")
    conn.close()
    store = Store(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()[0] == "2"
    conn.close()
    old = store.result("old")
    assert old["pid"] is None and old["host"] == "node1" and old["metrics"] == {"eval_loss": 0.5}
    assert store.write(dict(key="new", status="ok", config={}, metrics={}, provenance=dict(host="node2", pid=123)))
    assert store.result("new")["pid"] == 123 and set(store.runs()["pid"].fillna(0)) == {0, 123}
