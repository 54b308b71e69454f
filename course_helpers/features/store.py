"""A small online feature store: materialise the offline features, read them at request time.

The offline store is the Parquet feature table (``engines``); :meth:`OnlineStore.materialize`
copies each user's latest row before a time into Redis (a hash per user) or SQLite (a table),
and :meth:`OnlineStore.get` serves them, finished by the same :func:`pit.finish` the offline
join uses, so online and offline values cannot drift apart (training/serving skew).
Feast calls these pieces: entity (``user_id``), feature view (the rolling table), offline
store (Parquet), online store (Redis/SQLite), ``materialize`` and ``get_online_features``.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from .pit import finish

STORED = ["feature_ts", "count_7d", "amount_sum_7d", "amount_mean_7d", "distinct_items_7d"]


def latest_before(rolling, as_of):
    """Each user's last feature row with ``ts < as_of`` (what materialisation copies)."""
    import pandas as pd

    as_of = pd.Timestamp(as_of)
    rows = rolling[rolling["ts"] < as_of].sort_values(["user_id", "ts"]).groupby("user_id").tail(1)
    return rows.rename(columns={"ts": "feature_ts"})[["user_id", *STORED]].reset_index(drop=True)


class OnlineStore:
    """Redis when ``url`` is ``redis://...``, else SQLite at ``url`` (a path, default in memory).

    >>> store = OnlineStore("/tmp/online.db"); store.materialize(rolling, "2026-03-30")
    >>> store.get([1, 2], at="2026-03-30")
    """

    def __init__(self, url: str | Path | None = None, prefix: str = "feat") -> None:
        self.url = str(url) if url else ":memory:"
        self.prefix = prefix
        if self.url.startswith("redis://"):
            import redis

            self.kind = "redis"
            self._r = redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)
            self._r.ping()
        else:
            self.kind = "sqlite"
            self._db = sqlite3.connect(self.url)
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {prefix} (user_id INTEGER PRIMARY KEY, "
                             "row TEXT NOT NULL)")

    def materialize(self, rolling, as_of) -> int:
        """Copy each user's latest row before ``as_of``; returns how many users were written."""
        rows = latest_before(rolling, as_of)
        payload = {int(r["user_id"]): json.dumps({
            "feature_ts": r["feature_ts"].isoformat(), "count_7d": int(r["count_7d"]),
            "amount_sum_7d": float(r["amount_sum_7d"]), "amount_mean_7d": float(r["amount_mean_7d"]),
            "distinct_items_7d": int(r["distinct_items_7d"])}) for _, r in rows.iterrows()}
        if self.kind == "redis":
            pipe = self._r.pipeline()
            for user, value in payload.items():
                pipe.set(f"{self.prefix}:{user}", value)
            pipe.execute()
        else:
            with self._db:
                self._db.executemany(f"INSERT OR REPLACE INTO {self.prefix} VALUES (?, ?)",
                                     list(payload.items()))
        return len(payload)

    def _fetch(self, users: list[int]) -> list[str | None]:
        if self.kind == "redis":
            got = self._r.mget([f"{self.prefix}:{u}" for u in users])
            return [g.decode() if g else None for g in got]
        q = f"SELECT user_id, row FROM {self.prefix} WHERE user_id IN ({','.join('?' * len(users))})"
        found = dict(self._db.execute(q, users).fetchall()) if users else {}
        return [found.get(u) for u in users]

    def get(self, user_ids, at, ttl_days: float | None = None):
        """Features for ``user_ids`` at request time ``at``: one row per user, in order, with
        the columns of :func:`pit.point_in_time_join` (without the label)."""
        import pandas as pd

        users = [int(u) for u in user_ids]
        rows = []
        for user, raw in zip(users, self._fetch(users)):
            row = json.loads(raw) if raw else dict.fromkeys(STORED)
            rows.append({"user_id": user, "label_ts": pd.Timestamp(at), **row})
        df = pd.DataFrame(rows)
        df["label_ts"] = df["label_ts"].astype("datetime64[us]")
        df["feature_ts"] = pd.to_datetime(df["feature_ts"]).astype("datetime64[us]")
        for col in STORED[1:]:
            df[col] = df[col].astype("float64")
        return finish(df, ttl_days)

    def close(self) -> None:
        if self.kind == "redis":
            self._r.close()
        else:
            self._db.close()


class FeatureLookup:
    """The thin request-time service: ``lookup(user_id)`` returns the model's feature vector."""

    def __init__(self, store: OnlineStore, columns: list[str] | None = None) -> None:
        from .pit import MODEL_FEATURES

        self.store = store
        self.columns = columns or MODEL_FEATURES

    def lookup(self, user_id: int, at) -> dict:
        row = self.store.get([user_id], at).iloc[0]
        return {c: (None if row[c] != row[c] else float(row[c])) for c in self.columns}
