"""Checkpoint/resume: bit-identical continuation, atomic writes, damaged files refused whole."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import checkpoint


def make_trainer(optimizer=None, **kwargs):
    model = sf.Transformer(8, d_model=16, seed=0)
    return sf.Trainer(model, sf.targets.Parity(8), optimizer=optimizer or sf.AdamW(lr=1e-3), batch_size=64,
                      seed=3, **kwargs)


@pytest.mark.parametrize("optimizer", [lambda: sf.AdamW(lr=1e-3), lambda: sf.SGD(lr=1e-2, momentum=0.9)])
def test_resume_continues_bit_identically(tmp_path, optimizer):
    straight = make_trainer(optimizer())
    straight.fit(40, log_every=10, progress=False)
    first = make_trainer(optimizer())
    first.fit(20, log_every=10, progress=False)
    first.save_checkpoint(tmp_path / "ck.npz")
    resumed = make_trainer(optimizer())
    resumed.load_checkpoint(tmp_path / "ck.npz")
    assert resumed.step_count == 20
    resumed.fit(20, log_every=10, progress=False)
    assert np.array_equal(straight.model.flat, resumed.model.flat)
    assert straight.history["loss"].tolist() == resumed.history["loss"].tolist()


def test_damaged_checkpoint_is_refused_and_changes_nothing(tmp_path):
    trainer = make_trainer()
    trainer.fit(10, progress=False)
    path = tmp_path / "ck.npz"
    trainer.save_checkpoint(path)
    raw = path.read_bytes()
    other = make_trainer()
    before = other.model.flat.copy()
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(sf.CheckpointError, match="not a readable checkpoint"):
        other.load_checkpoint(tmp_path / "truncated.npz")
    # flip one byte inside the stored parameters: the checksum catches it
    import zipfile

    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp_path / "flipped.npz", "w") as zout:
        for item in zin.infolist():
            data = bytearray(zin.read(item.filename))
            if item.filename == "params.npy":
                data[-3] ^= 0x40
            zout.writestr(item, bytes(data))
    with pytest.raises(sf.CheckpointError, match="checksum"):
        other.load_checkpoint(tmp_path / "flipped.npz")
    assert np.array_equal(other.model.flat, before)
    assert other.step_count == 0


def test_checkpoint_from_a_different_setup_is_refused(tmp_path):
    trainer = make_trainer()
    trainer.save_checkpoint(tmp_path / "ck.npz")
    other = sf.Trainer(sf.Transformer(8, d_model=16, seed=0), sf.targets.Majority(8), batch_size=64, seed=3)
    with pytest.raises(sf.CheckpointError, match="different"):
        other.load_checkpoint(tmp_path / "ck.npz")


def test_checkpoint_callback_writes_during_fit(tmp_path):
    trainer = make_trainer()
    trainer.fit(30, log_every=10, progress=False, callbacks=[sf.Checkpoint(tmp_path / "ck.npz", every=10)])
    resumed = make_trainer()
    resumed.load_checkpoint(tmp_path / "ck.npz")
    assert resumed.step_count == 30
    assert np.array_equal(resumed.model.flat, trainer.model.flat)


CHILD = textwrap.dedent("""
    import sys, sensiformer as sf
    model = sf.Transformer(8, d_model=64, seed=0)
    trainer = sf.Trainer(model, sf.targets.Parity(8), batch_size=64, seed=3)
    print("started", flush=True)
    for _ in range(100000):
        trainer.fit(5, log_every=5, progress=False)
        trainer.save_checkpoint(sys.argv[1])
""")


def test_sigkill_during_checkpointing_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "ck.npz"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        rng = np.random.default_rng()
        for _ in range(50):  # wait for a first checkpoint, then kill at a random moment
            if path.exists():
                break
            subprocess.run(["sleep", "0.1"])
        subprocess.run(["sleep", str(0.2 + rng.uniform(0, 0.8))])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert path.exists()
    trainer = sf.Trainer(sf.Transformer(8, d_model=64, seed=0), sf.targets.Parity(8), batch_size=64, seed=3)
    trainer.load_checkpoint(path)
    assert trainer.step_count > 0 and trainer.step_count % 5 == 0
    steps = trainer.step_count
    trainer.fit(5, log_every=5, progress=False)
    assert trainer.step_count == steps + 5
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp") and not p.startswith(".")]


def rewrite_checkpoint_meta(path, **changes):
    """Change a checkpoint's metadata and re-seal its checksum (a crafted, checksum-valid file)."""
    with np.load(path) as data:
        contents = {k: data[k] for k in data.files}
    meta = json.loads(str(contents.pop("__meta__")))
    contents.pop("__checksum__")
    meta.update(changes)
    meta = json.dumps(meta)
    np.savez(path, __meta__=np.array(meta), __checksum__=np.array(checkpoint._digest(meta, contents)), **contents)


def test_newer_checkpoint_format_is_refused_naming_the_version(tmp_path):
    path = tmp_path / "ck.npz"
    trainer = make_trainer()
    trainer.save_checkpoint(path)
    rewrite_checkpoint_meta(path, format_version=999)
    with pytest.raises(sf.CheckpointError, match=r"format_version 999.*newer sensiformer"):
        trainer.load_checkpoint(path)


def test_checkpoint_with_disagreeing_counters_is_refused(tmp_path):
    path = tmp_path / "ck.npz"
    trainer = make_trainer()
    trainer.fit(10, progress=False)
    trainer.save_checkpoint(path)
    rewrite_checkpoint_meta(path, optimizer_step=13)  # the mid-fit file: step 10, optimizer step 13
    fresh = make_trainer()
    before = fresh.model.flat.copy()
    with pytest.raises(sf.CheckpointError, match="counters disagree"):
        fresh.load_checkpoint(path)
    assert fresh.step_count == 0 and np.array_equal(fresh.model.flat, before)
