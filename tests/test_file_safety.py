"""Model files and checkpoints on disk (issue 16, point 11): unique temporary names, nothing left
behind by a failed or killed save, the previous file kept, unknown format versions refused."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import sensiformer as sf


def _model(seed=0, d_model=16):
    return sf.Transformer(n_positions=6, d_model=d_model, n_heads=2, n_layers=1, seed=seed)


def _temporaries(directory):
    return [p for p in os.listdir(directory) if p.endswith(".tmp")]


def test_concurrent_saves_to_one_path_do_not_collide(tmp_path):
    path = tmp_path / "m.npz"
    models = [_model(seed) for seed in (1, 2)]
    errors = []

    def writer(model):
        try:
            for _ in range(30):
                model.save(path)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    loaded = sf.load(path)
    assert any(np.array_equal(loaded.flat, m.flat) for m in models)
    assert _temporaries(tmp_path) == []


def test_concurrent_saves_from_two_processes(tmp_path):
    path = tmp_path / "m.npz"
    script = textwrap.dedent("""
        import sys
        import sensiformer as sf
        model = sf.Transformer(n_positions=6, d_model=16, n_heads=2, n_layers=1, seed=int(sys.argv[2]))
        for _ in range(20):
            model.save(sys.argv[1])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), str(seed)]) for seed in (1, 2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert any(np.array_equal(sf.load(path).flat, _model(seed).flat) for seed in (1, 2))
    assert _temporaries(tmp_path) == []


def _failing_savez(monkeypatch):
    """np.savez that writes part of the archive, then fails (a full disk)."""
    def savez(fh, **arrays):
        fh.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", savez)


def test_failed_model_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    old = _model(1)
    old.save(path)
    _failing_savez(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        _model(2).save(path)
    monkeypatch.undo()
    assert _temporaries(tmp_path) == []
    assert np.array_equal(sf.load(path).flat, old.flat)


def test_failed_checkpoint_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    trainer = sf.Trainer(_model(), sf.targets.Parity(6), batch_size=16)
    trainer.fit(3, progress=False)
    trainer.save_checkpoint(path)
    trainer.fit(2, progress=False)
    _failing_savez(monkeypatch)
    with pytest.raises(OSError):
        trainer.save_checkpoint(path)
    monkeypatch.undo()
    assert _temporaries(tmp_path) == []
    other = sf.Trainer(_model(), sf.targets.Parity(6), batch_size=16)
    other.load_checkpoint(path)
    assert other.step_count == 3


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_save_removes_temporaries_of_dead_writers_only(tmp_path):
    path = tmp_path / "m.npz"
    host = socket.gethostname()
    dead = tmp_path / f".m.npz.{host}.{_dead_pid()}.x1y2z3.tmp"
    alive = tmp_path / f".m.npz.{host}.{os.getpid()}.abc123.tmp"  # a save in flight in this process
    foreign = tmp_path / f".m.npz.otherhost.{_dead_pid()}.abc123.tmp"  # another host's (shared filesystem)
    unrelated = tmp_path / "notes.tmp"
    for p in (dead, alive, foreign, unrelated):
        p.write_bytes(b"x" * 100)
    _model().save(path)
    assert not dead.exists()
    assert alive.exists() and foreign.exists() and unrelated.exists()


KILLED_WRITER = textwrap.dedent("""
    import sys
    import sensiformer as sf
    model = sf.Transformer(n_positions=64, d_model=256, n_heads=2, n_layers=4, seed=1)
    trainer = sf.Trainer(model, sf.targets.Parity(6), batch_size=16)
    save = model.save if sys.argv[2] == "model" else trainer.save_checkpoint
    print("started", flush=True)
    while True:
        save(sys.argv[1])
""")


def _kill_a_writer_mid_save(path, kind):
    """Start a process saving to ``path`` in a loop and SIGKILL it while its temporary file exists;
    returns the temporary files it left."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path), kind], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        for _ in range(500):
            if _temporaries(path.parent):
                break
            subprocess.run(["sleep", "0.005"])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    return _temporaries(path.parent)


@pytest.mark.parametrize("kind", ["model", "checkpoint"])
def test_sigkill_during_saves_keeps_a_loadable_file_and_the_next_save_cleans_up(tmp_path, kind):
    path = tmp_path / "out.npz"
    model = sf.Transformer(n_positions=64, d_model=256, n_heads=2, n_layers=4, seed=1)
    trainer = sf.Trainer(model, sf.targets.Parity(6), batch_size=16)
    save, load = ((model.save, sf.load) if kind == "model" else (trainer.save_checkpoint, trainer.load_checkpoint))
    save(path)
    for _ in range(5):  # the kill can land between two saves; retry until it lands inside one
        left = _kill_a_writer_mid_save(path, kind)
        if left:
            break
    assert left, "the writer was never killed inside a save"
    load(path)  # the file on disk is always a whole one
    save(path)
    assert _temporaries(tmp_path) == []


def _rewrite_model_meta(path, **changes):
    with np.load(path) as data:
        contents = {k: data[k] for k in data.files}
    meta = json.loads(str(contents["__meta__"]))
    meta.update(changes)
    contents["__meta__"] = np.array(json.dumps(meta))
    np.savez(path, **contents)


def test_newer_model_format_is_refused_naming_the_version(tmp_path):
    path = tmp_path / "m.npz"
    _model().save(path)
    _rewrite_model_meta(path, format_version=999)
    with pytest.raises(ValueError, match=r"format_version 999.*newer sensiformer"):
        sf.load(path)


def test_saved_files_get_ordinary_permissions(tmp_path):
    path = tmp_path / "m.npz"
    _model().save(path)
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~umask


def test_saves_fsync_the_file_and_its_directory(tmp_path, monkeypatch):
    import stat

    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(stat.S_IFMT(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    _model().save(tmp_path / "m.npz")
    assert synced == [stat.S_IFREG, stat.S_IFDIR]  # the data before the rename, the rename after it
