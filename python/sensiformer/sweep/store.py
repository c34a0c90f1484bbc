"""The embedded results store: one SQLite file, read back as pandas DataFrames.

Tables
------
``runs``     one row per finished run, keyed by ``RunConfig.key``: status, config, metrics,
             artifacts (JSON) and provenance columns (package version, git commit, engine build
             flags and CPU path, thread count, seed, host and process id of the worker, times).
``history``  per-step rows of every run that recorded a history: (key, step, metrics JSON).
``members``  which runs each sweep asked for (sweep name, index, key, tags): a sweep's
             membership is written before it starts, so ``pending()`` lists what is left.
``failures`` runs that raised (not results; a rerun tries them again).
``meta``     the schema version.

A run's row and its history are written in one transaction, so a crash or kill at any
moment leaves either the whole run or nothing of it. The file uses WAL journaling and a
busy timeout, so readers (a notebook, ``sensiformer show``) can watch a running sweep.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from pathlib import Path

import pandas as pd

SCHEMA_VERSION = 2  # 2: runs.pid (the worker process); version-1 files are upgraded on open
_PROVENANCE_COLUMNS = ("version", "git_commit", "build", "cpu_path", "openmp", "n_threads", "seed", "host",
                       "python", "numpy", "pid")
_RUN_COLUMNS = ("key", "status", "config", "metrics", "artifacts", "error", "started", "finished", "duration",
                *_PROVENANCE_COLUMNS)
_INTEGER_PROVENANCE = ("n_threads", "seed", "pid")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    metrics TEXT NOT NULL,
    artifacts TEXT NOT NULL,
    error TEXT,
    started REAL, finished REAL, duration REAL,
    version TEXT, git_commit TEXT, build TEXT, cpu_path TEXT, openmp TEXT,
    n_threads INTEGER, seed INTEGER, host TEXT, python TEXT, numpy TEXT, pid INTEGER
);
CREATE TABLE IF NOT EXISTS history (
    key TEXT NOT NULL,
    step INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (key, step)
);
CREATE TABLE IF NOT EXISTS members (
    sweep TEXT NOT NULL,
    idx INTEGER NOT NULL,
    key TEXT NOT NULL,
    tags TEXT NOT NULL,
    PRIMARY KEY (sweep, idx)
);
CREATE INDEX IF NOT EXISTS members_key ON members (key);
CREATE TABLE IF NOT EXISTS failures (
    key TEXT NOT NULL,
    sweep TEXT,
    config TEXT NOT NULL,
    error TEXT NOT NULL,
    time REAL NOT NULL
);
"""


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in the results store")


def _dumps(obj) -> str:
    # NaN/inf are kept (Python's json writes them), so diverged runs stay readable.
    return json.dumps(obj, default=_json_default, sort_keys=True)


class Store:
    """A SQLite results store (created if missing).

    Parameters
    ----------
    path : str or Path
        The database file, e.g. ``"results.db"``.
    timeout : float
        Seconds to wait for a lock held by another writer (SQLite's busy timeout).

    Examples
    --------
    >>> store = Store("results.db")            # doctest: +SKIP
    >>> store.runs(sweep="scaling/quick")      # doctest: +SKIP
    """

    def __init__(self, path, *, timeout: float = 60.0):
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            raise FileNotFoundError(f"directory {self.path.parent} does not exist")
        if self.path.is_dir():
            raise ValueError(f"the store {self.path} is a directory; give a file, e.g. {self.path / 'results.db'}")
        self.timeout = float(timeout)
        self._conn = None
        self._check_is_a_store()
        try:
            conn = self._raw()
            conn.executescript(_SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            version = conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()[0]
            if int(version) < SCHEMA_VERSION:
                version = self._upgrade(conn, int(version))
        except sqlite3.DatabaseError as err:  # locked, unreadable, damaged: SQLite's message says which
            self.close()
            raise ValueError(f"cannot use {self.path} as a results store: {err}") from None
        if int(version) > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} has schema version {version}; this sensiformer reads up to "
                               f"{SCHEMA_VERSION}: upgrade sensiformer")

    def _check_is_a_store(self) -> None:
        """Refuse, before writing anything into it, an existing file that is not a store: not
        SQLite, or a SQLite database of something else (it must not get our tables)."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        try:
            with contextlib.closing(sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                                    timeout=self.timeout)) as conn:
                tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as err:
            raise ValueError(f"{self.path} is not a sensiformer results store (SQLite): {err}") from None
        if tables and not {"meta", "runs"} <= tables:
            raise ValueError(f"{self.path} is a SQLite database but not a sensiformer results store "
                             f"(its tables: {', '.join(sorted(tables))})")

    def _upgrade(self, conn, version: int) -> int:
        """Bring an older file to this schema in one transaction (older sensiformers then refuse
        it by its version instead of writing rows of the old shape)."""
        with _Transaction(conn):
            columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
            if "pid" not in columns:
                conn.execute("ALTER TABLE runs ADD COLUMN pid INTEGER")
            conn.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION),))
        return SCHEMA_VERSION

    # ---- connection ---------------------------------------------------------------------------
    def _raw(self) -> sqlite3.Connection:
        """This process's connection (autocommit mode; reopened after a fork or unpickling)."""
        if self._conn is None or self._pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _connect(self) -> "_Transaction":
        """``with self._connect() as conn``: one IMMEDIATE transaction."""
        return _Transaction(self._raw())

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"Store({str(self.path)!r})"

    def __getstate__(self):  # a Store can be pickled (reopened lazily in the other process)
        return dict(path=self.path, timeout=self.timeout)

    def __setstate__(self, state):
        self.path, self.timeout, self._conn = state["path"], state["timeout"], None

    # ---- writing -----------------------------------------------------------------------------
    def add_members(self, sweep: str, items, replace: bool = True) -> None:
        """Record that ``sweep`` asks for these runs: ``items`` is a list of (idx, key, tags).

        ``replace`` (default) first forgets the sweep's previous membership, so a sweep rerun
        with a smaller grid no longer lists the runs it dropped (their results stay stored).
        """
        with self._connect() as conn:
            if replace:
                conn.execute("DELETE FROM members WHERE sweep = ?", (sweep,))
            conn.executemany("INSERT OR REPLACE INTO members VALUES (?, ?, ?, ?)",
                             [(sweep, int(i), key, _dumps(tags)) for i, key, tags in items])

    def write(self, result: dict) -> bool:
        """Write one finished run (as returned by ``sensiformer.sweep.execute``) atomically.

        Returns False (and writes nothing) if the key is already stored.
        """
        prov = result.get("provenance", {})
        history = result.get("history") or []
        with self._connect() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE key=?", (result["key"],)).fetchone():
                return False
            conn.execute(
                f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES ({', '.join('?' * len(_RUN_COLUMNS))})",
                (result["key"], result["status"], _dumps(result["config"]), _dumps(result["metrics"]),
                 _dumps(result.get("artifacts", {})), result.get("error"), result.get("started"),
                 result.get("finished"), result.get("duration"),
                 *[None if prov.get(c) is None else (int(prov[c]) if c in _INTEGER_PROVENANCE else str(prov[c]))
                   for c in _PROVENANCE_COLUMNS]))
            conn.executemany("INSERT OR REPLACE INTO history VALUES (?,?,?)",
                             [(result["key"], int(row["step"]), _dumps({k: v for k, v in row.items() if k != "step"}))
                              for row in history])
        return True

    def add_failure(self, key: str, config: dict, error: str, sweep: str | None = None) -> None:
        with self._connect() as conn:
            conn.execute("INSERT INTO failures VALUES (?,?,?,?,?)", (key, sweep, _dumps(config), error, time.time()))

    def delete(self, keys) -> int:
        """Remove runs (and their histories) so that the next sweep reruns them."""
        keys = [keys] if isinstance(keys, str) else list(keys)
        with self._connect() as conn:
            conn.executemany("DELETE FROM history WHERE key=?", [(k,) for k in keys])
            n = sum(conn.execute("DELETE FROM runs WHERE key=?", (k,)).rowcount for k in keys)
        return n

    # ---- reading ------------------------------------------------------------------------------
    def keys(self) -> set:
        """Keys of every finished run."""
        with self._connect() as conn:
            return {row[0] for row in conn.execute("SELECT key FROM runs")}

    def __contains__(self, key) -> bool:
        with self._connect() as conn:
            return conn.execute("SELECT 1 FROM runs WHERE key=?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        with self._connect() as conn:
            return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def sweeps(self) -> pd.DataFrame:
        """One row per sweep: how many runs it asks for and how many are finished / converged."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT m.sweep, COUNT(*), COUNT(r.key), SUM(r.status = 'ok'), "
                "SUM(json_extract(r.metrics, '$.converged') = 1) "
                "FROM members m LEFT JOIN runs r ON r.key = m.key GROUP BY m.sweep ORDER BY m.sweep").fetchall()
        return pd.DataFrame(rows, columns=["sweep", "runs", "finished", "ok", "converged"]).fillna(0)

    def pending(self, sweep: str) -> list:
        """Member keys of ``sweep`` without a finished run."""
        with self._connect() as conn:
            return [r[0] for r in conn.execute(
                "SELECT DISTINCT m.key FROM members m LEFT JOIN runs r ON r.key = m.key "
                "WHERE m.sweep = ? AND r.key IS NULL ORDER BY m.idx", (sweep,))]

    def result(self, key: str) -> dict:
        """One run as a dict: config, metrics, artifacts, provenance."""
        with self._connect() as conn:
            cur = conn.execute("SELECT * FROM runs WHERE key=?", (key,))
            row = cur.fetchone()
            if row is None:
                raise KeyError(key)
            cols = [c[0] for c in cur.description]
        rec = dict(zip(cols, row))
        for c in ("config", "metrics", "artifacts"):
            rec[c] = json.loads(rec[c])
        return rec

    def runs(self, *, sweep: str | None = None, status: str | None = None, artifacts: bool = False) -> pd.DataFrame:
        """Finished runs as one flat DataFrame.

        Columns: ``key``, ``status``, every config field, every metric, the provenance columns
        and the run's times; with ``sweep``, one row per member of that sweep (a run asked for
        twice appears twice) plus ``sweep``, ``idx`` and the member's tags; ``artifacts=True``
        adds the artifacts (e.g. ``predictions``) as columns.
        """
        with self._connect() as conn:
            if sweep is None:
                cur = conn.execute("SELECT NULL, NULL, NULL, r.* FROM runs r ORDER BY r.finished")
            else:
                cur = conn.execute("SELECT m.sweep, m.idx, m.tags, r.* FROM members m JOIN runs r ON r.key = m.key "
                                   "WHERE m.sweep = ? ORDER BY m.idx", (sweep,))
            rows = cur.fetchall()
            cols = ["sweep", "idx", "member_tags"] + [c[0] for c in cur.description][3:]
        records = []
        for row in rows:
            rec = dict(zip(cols, row))
            config = json.loads(rec.pop("config"))
            metrics = json.loads(rec.pop("metrics"))
            arts = json.loads(rec.pop("artifacts"))
            member_tags = json.loads(rec.pop("member_tags")) if rec["member_tags"] else None
            run_tags = config.pop("tags", {}) or {}
            flat = {"key": rec.pop("key"), "status": rec.pop("status")}
            if sweep is not None:
                flat["sweep"], flat["idx"] = rec.pop("sweep"), rec.pop("idx")
            else:
                rec.pop("sweep"), rec.pop("idx")
            for k, v in config.items():
                flat[k] = tuple(v) if isinstance(v, list) else v
            flat.update(metrics)
            for k, v in (member_tags if member_tags is not None else run_tags).items():
                flat.setdefault(k, v)
            if artifacts:
                for k, v in arts.items():
                    flat.setdefault(k, v)
            flat.update(rec)
            records.append(flat)
        df = pd.DataFrame.from_records(records)
        if status is not None and len(df):
            df = df[df["status"] == status].reset_index(drop=True)
        return df

    def history(self, keys=None, *, sweep: str | None = None, config_columns=("target", "n", "seed", "weight_decay", "lr")
                ) -> pd.DataFrame:
        """Per-step histories in long form: ``key``, ``step``, the recorded metrics, and the given
        config columns of each run (for grouping in plots)."""
        with self._connect() as conn:
            query = "SELECT h.key, h.step, h.metrics, r.config FROM history h JOIN runs r ON r.key = h.key"
            args = []
            if sweep is not None:
                query += " WHERE h.key IN (SELECT key FROM members WHERE sweep = ?)"
                args.append(sweep)
            query += " ORDER BY h.key, h.step"
            rows = conn.execute(query, args).fetchall()
        wanted = None if keys is None else set([keys] if isinstance(keys, str) else keys)
        records = []
        configs = {}
        for key, step, metrics, config in rows:
            if wanted is not None and key not in wanted:
                continue
            if key not in configs:
                c = json.loads(config)
                configs[key] = {k: c.get(k) for k in config_columns}
            records.append({"key": key, "step": step, **configs[key], **json.loads(metrics)})
        df = pd.DataFrame.from_records(records)
        if not len(df):
            df = pd.DataFrame(columns=["key", "step", *config_columns])
        return df

    def failures(self) -> pd.DataFrame:
        with self._connect() as conn:
            rows = conn.execute("SELECT key, sweep, error, time FROM failures ORDER BY time").fetchall()
        return pd.DataFrame(rows, columns=["key", "sweep", "error", "time"])

    def members(self, sweep: str) -> pd.DataFrame:
        with self._connect() as conn:
            rows = conn.execute("SELECT idx, key, tags FROM members WHERE sweep=? ORDER BY idx", (sweep,)).fetchall()
        return pd.DataFrame([dict(idx=i, key=k, **json.loads(t)) for i, k, t in rows])

    # ---- export --------------------------------------------------------------------------------
    def export(self, path, *, table: str = "runs", sweep: str | None = None) -> Path:
        """Write ``runs`` or ``history`` to ``.csv`` or ``.parquet`` (needs pyarrow: the
        ``sensiformer[parquet]`` extra). Returns the path."""
        path = Path(path)
        if table not in ("runs", "history"):
            raise ValueError(f"table must be 'runs' or 'history', got {table!r}")
        df = self.runs(sweep=sweep) if table == "runs" else self.history(sweep=sweep)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            df.to_csv(path, index=False)
        elif suffix in (".parquet", ".pq"):
            try:
                import pyarrow  # noqa: F401
            except ImportError as err:
                raise ImportError("Parquet export needs pyarrow: pip install 'sensiformer[parquet]'") from err
            for col in df.columns:  # tuples and mixed objects -> JSON text, which Parquet can hold
                if df[col].dtype == object and df[col].map(lambda v: isinstance(v, (tuple, list, dict))).any():
                    df[col] = df[col].map(lambda v: _dumps(list(v) if isinstance(v, tuple) else v))
            df.to_parquet(path, index=False)
        else:
            raise ValueError(f"export to .csv or .parquet, got {path.name!r}")
        return path


class _Transaction:
    """``with store._connect() as conn``: BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
        return False

