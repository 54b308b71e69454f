"""The prediction log: every prediction, written off the request path in batches.

SQLite (WAL) by default, PostgreSQL given a ``postgresql://`` URL. Rows still queued
are written by :meth:`PredictionLog.close`, so a graceful shutdown loses nothing.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

COLUMNS = ("request_id", "row_index", "ts", "model_name", "model_version", "variant", "inputs",
           "prediction", "probability", "latency_ms", "cache_hit")

SQLITE_DDL = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL, row_index INTEGER NOT NULL, ts REAL NOT NULL,
    model_name TEXT, model_version TEXT, variant TEXT, inputs TEXT NOT NULL,
    prediction INTEGER, probability REAL, latency_ms REAL, cache_hit INTEGER
)"""
POSTGRES_DDL = """
CREATE TABLE IF NOT EXISTS predictions (
    id BIGSERIAL PRIMARY KEY,
    request_id TEXT NOT NULL, row_index INTEGER NOT NULL, ts DOUBLE PRECISION NOT NULL,
    model_name TEXT, model_version TEXT, variant TEXT, inputs JSONB NOT NULL,
    prediction INTEGER, probability DOUBLE PRECISION, latency_ms DOUBLE PRECISION,
    cache_hit BOOLEAN
)"""


@dataclass
class Prediction:
    """One logged prediction (one input row of a request)."""

    request_id: str
    row_index: int
    ts: float
    model_name: str
    model_version: str
    variant: str
    inputs: dict
    prediction: int
    probability: float | None
    latency_ms: float
    cache_hit: bool

    def values(self, json_inputs: bool = True) -> tuple:
        return (self.request_id, self.row_index, self.ts, self.model_name, self.model_version,
                self.variant, json.dumps(self.inputs) if json_inputs else self.inputs,
                self.prediction, self.probability, self.latency_ms, self.cache_hit)


def _is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def sqlite_path(url: str) -> Path:
    return Path(url[len("sqlite:///"):] if url.startswith("sqlite:///") else url)


class DatabaseUnavailable(RuntimeError):
    """The prediction log's database cannot be reached."""


def redact(url: str) -> str:
    """A database URL without its password, fit for an error message."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return url.replace(f":{parts.password}@", ":***@") if parts.password else url


def check_database(url: str, timeout_s: int = 2, starting_s: float = 10.0) -> None:
    """Open a fresh connection and run ``SELECT 1``; raise :class:`DatabaseUnavailable`.

    ``timeout_s`` bounds each connection attempt (PostgreSQL counts whole seconds, at least
    2). A PostgreSQL server that answers "starting up" is reachable: it is asked again for
    up to ``starting_s`` seconds.
    """
    deadline = time.monotonic() + starting_s
    while True:
        try:
            _select_one(url, timeout_s)
            return
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            starting = getattr(err, "sqlstate", None) == "57P03" or "starting up" in str(err)
            if starting and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise DatabaseUnavailable(
                f"the prediction log database {redact(url)} cannot be reached ({first[:160]}): "
                f"start it, or serve with --db none") from None


def _select_one(url: str, timeout_s: int) -> None:
    if _is_postgres(url):
        import psycopg

        with psycopg.connect(url, connect_timeout=max(2, int(timeout_s))) as conn:
            conn.execute("SELECT 1")
        return
    path = sqlite_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=timeout_s)
    try:
        conn.execute("SELECT 1")
    finally:
        conn.close()


class _Backend:
    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = _is_postgres(url)
        self._connect()

    def _connect(self) -> None:
        url = self.url
        if self.postgres:
            import psycopg

            self.conn = psycopg.connect(url, autocommit=False, connect_timeout=5)
            with self.conn.cursor() as cur:
                # every gunicorn worker runs this at start; PostgreSQL's CREATE ... IF NOT
                # EXISTS is not safe against a concurrent one, so take turns (the lock ends
                # with the transaction)
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('predictions ddl'))")
                cur.execute(POSTGRES_DDL)
            self.conn.commit()
            self.sql = (f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES "
                        f"({', '.join(['%s'] * len(COLUMNS))})")
        else:
            path = sqlite_path(url)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute(SQLITE_DDL)
            self.conn.commit()
            self.sql = (f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES "
                        f"({', '.join(['?'] * len(COLUMNS))})")

    def write(self, rows: list[Prediction]) -> None:
        values = [r.values() for r in rows]
        if self.postgres:
            with self.conn.cursor() as cur:
                cur.executemany(self.sql, values)
        else:
            self.conn.executemany(self.sql, values)
        self.conn.commit()

    def reconnect(self) -> None:
        """After a failed write: drop the connection and open a new one (may raise)."""
        try:
            self.conn.close()
        except Exception:
            pass
        self._connect()

    def close(self) -> None:
        self.conn.close()


class PredictionLog:
    """Queue predictions with :meth:`log` (never blocks); a thread writes them in batches.

    ``flush_every_s`` bounds how stale the table is; ``batch_size`` bounds one transaction.
    """

    def __init__(self, url: str, flush_every_s: float = 0.2, batch_size: int = 500) -> None:
        self.url = url
        self.flush_every_s, self.batch_size = flush_every_s, batch_size
        self._q: queue.Queue[Prediction | None] = queue.Queue()
        self._backend = _Backend(url)  # fail fast on a bad URL, in the caller's thread
        self.written = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def log(self, rows: list[Prediction]) -> None:
        for r in rows:
            self._q.put(r)

    def _run(self) -> None:
        pending: list[Prediction] = []
        stopping = False
        while not stopping:
            deadline = time.monotonic() + self.flush_every_s
            while len(pending) < self.batch_size:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    item = self._q.get(timeout=timeout)
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                pending.append(item)
            if stopping:  # drain everything queued before the sentinel
                while True:
                    try:
                        item = self._q.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        pending.append(item)
            if pending:
                self._write(pending)
                pending = []

    def _write(self, rows: list[Prediction]) -> None:
        for attempt in range(5):
            try:
                self._backend.write(rows)
                self.written += len(rows)
                return
            except Exception:
                self.errors += 1
                time.sleep(0.1 * (attempt + 1))
                try:
                    self._backend.reconnect()
                except Exception:
                    pass
        # last resort: keep the rows on disk next to the database rather than lose them
        spill = Path(str(sqlite_path(self.url)) + ".unwritten.jsonl") if not self._backend.postgres \
            else Path("prediction-log.unwritten.jsonl")
        with open(spill, "a") as fh:
            for r in rows:
                fh.write(json.dumps(dict(zip(COLUMNS, r.values(json_inputs=False)))) + "\n")

    def close(self, timeout: float = 30.0) -> None:
        """Write everything still queued, then close the connection."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join(timeout=timeout)
        self._backend.close()


def read_predictions(url: str, sql: str = "SELECT * FROM predictions ORDER BY id"):
    """Query the log into a pandas DataFrame (SQLite path/URL or PostgreSQL URL)."""
    import pandas as pd

    if _is_postgres(url):
        import psycopg

        with psycopg.connect(url) as conn, conn.cursor() as cur:
            cur.execute(sql)
            cols = [d.name for d in cur.description]
            return pd.DataFrame(cur.fetchall(), columns=cols)
    with sqlite3.connect(str(sqlite_path(url))) as conn:
        return pd.read_sql_query(sql, conn)
