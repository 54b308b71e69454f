"""Seeded, offline event data for lesson 07: transactions as day-partitioned Parquet.

Layout under ``<dir>``::

    events/day=2026-03-02/part-0.parquet   user_id int64, item_id int64, amount float64,
    events/day=.../part-1.parquet          ts timestamp[us] (UTC, naive)
    labels/labels.parquet                  user_id, label_ts, label (0/1)

Every user has an activity rate that changes once, at a random day; for ``CHURN_SHARE`` of
users it drops to zero (they churn). A label asks "will this still-active user make no purchase
in the ``LABEL_HORIZON_DAYS`` days after ``label_ts``?": it depends on what happens *after* the
label time, so features that peek at later events score far better offline than anything
available at prediction time (the leakage demo).
Files are written one chunk at a time: memory stays bounded by ``chunk_rows`` whatever the size.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..errors import CourseError

#: Rows per profile: smoke for CI, classroom shows the engines apart on one CPU within the
#: lesson's 90 s budget, full is larger than Binder's memory.
SIZES: dict[str, int] = {"smoke": 100_000, "classroom": 1_000_000, "full": 50_000_000}
START = "2026-03-02"
DAYS = 28
EVENTS_PER_USER = 100       # on average over the 28 days
N_ITEMS = 5_000
LABEL_HORIZON_DAYS = 3
CHURN_SHARE = 0.35
LABELS_PER_DAY_SHARE = 0.05  # share of users that get a label (a prediction point) each day
SCHEMA = {"user_id": "int64", "item_id": "int64", "amount": "double", "ts": "timestamp[us]"}


class DataError(CourseError):
    """The event data is missing or does not have the expected schema."""


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What :func:`generate` wrote: row count, Parquet files and bytes on disk."""

    path: Path
    rows: int
    files: int
    bytes: int
    labels: int

    def __str__(self) -> str:
        return (f"{self.rows:,} rows in {self.files} files, {self.bytes / 2**20:.1f} MB "
                f"({self.labels:,} labels) at {self.path}")


def rows_for(profile: str | None = None) -> int:
    """Event rows for a profile name (default: ``$MLOPS_PROFILE`` or classroom)."""
    from ..config import get_profile

    return SIZES[get_profile(profile).name]


def default_dir(rows: int, seed: int = 0) -> Path:
    from ..config import workspace_dir

    return workspace_dir("features", f"events-{rows}-s{seed}")


def _users(n_users: int, rng):
    import numpy as np

    base = rng.lognormal(0.0, 0.8, n_users)
    change_day = rng.integers(1, DAYS + LABEL_HORIZON_DAYS, n_users)
    churn = rng.random(n_users) < CHURN_SHARE
    factor = np.where(churn, 0.0, np.exp(rng.normal(0.0, 0.5, n_users)))  # rate after change
    pref = rng.integers(0, N_ITEMS, n_users)                 # each user's favourite item
    spend = rng.lognormal(3.0, 0.5, n_users)                 # typical amount per user
    return base, change_day, factor, pref, spend


def _rates(base, change_day, factor, day: int):
    """Expected events per user on ``day`` (before normalisation)."""
    import numpy as np

    return base * np.where(day >= change_day, factor, 1.0)


def generate(rows: int | None = None, out: str | Path | None = None, *, profile: str | None = None,
             seed: int = 0, chunk_rows: int = 500_000, force: bool = False,
             show: bool = True) -> DataInfo:
    """Write about ``rows`` events (default: the profile's size) as hive-partitioned Parquet.

    Reuses the data when ``out`` already holds the same rows and seed (``force`` rewrites).
    Memory: O(chunk_rows + users), not O(rows).
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = int(rows or rows_for(profile))
    if rows < 1_000:
        raise ValueError(f"rows={rows}: use at least 1,000 events")
    out = Path(out) if out else default_dir(rows, seed)
    stamp = out / "_meta.json"
    if stamp.exists() and not force:
        meta = json.loads(stamp.read_text())
        if meta.get("rows_requested") == rows and meta.get("seed") == seed:
            return info(out)
    import shutil

    shutil.rmtree(out / "events", ignore_errors=True)
    shutil.rmtree(out / "labels", ignore_errors=True)
    rng = np.random.default_rng(seed)
    n_users = max(50, rows // EVENTS_PER_USER)
    base, change_day, factor, pref, spend = _users(n_users, rng)
    per_day = rows // DAYS
    scale = per_day / _rates(base, change_day, factor, 0).sum()
    start = pd.Timestamp(START)
    day_us = 86_400_000_000
    schema = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()),
                        ("amount", pa.float64()), ("ts", pa.timestamp("us"))])
    label_frames = []
    bar = progress(DAYS, "writing days", show)
    for day in range(DAYS):
        rate = _rates(base, change_day, factor, day)
        p = rate / rate.sum()
        date = (start + pd.Timedelta(days=day)).strftime("%Y-%m-%d")
        folder = out / "events" / f"day={date}"
        folder.mkdir(parents=True, exist_ok=True)
        for part, lo in enumerate(range(0, per_day, chunk_rows)):
            n = min(chunk_rows, per_day - lo)
            users = rng.choice(n_users, size=n, p=p)
            # strictly increasing microseconds within the chunk: no two events share a time
            span = day_us // ((per_day + chunk_rows - 1) // chunk_rows)
            offs = np.sort(rng.integers(0, span - n, n)) + np.arange(n) + part * span
            ts = start.value // 1000 + day * day_us + offs
            items = (pref[users] + rng.geometric(0.02, n) - 1) % N_ITEMS
            amount = np.round(spend[users] * rng.lognormal(0.0, 0.4, n), 2)
            order = rng.permutation(n)  # files are not sorted: engines must not rely on it
            table = pa.table({"user_id": users[order].astype("int64"),
                              "item_id": items[order].astype("int64"),
                              "amount": amount[order],
                              "ts": pa.array(ts[order], type=pa.timestamp("us"))}, schema=schema)
            pq.write_table(table, folder / f"part-{part}.parquet")
        # prediction points: a share of the users still active, at a random time of this day
        active = np.flatnonzero(rate > 0)
        k = min(len(active), max(1, int(n_users * LABELS_PER_DAY_SHARE)))
        who = rng.choice(active, size=k, replace=False)
        at = start.value // 1000 + day * day_us + rng.integers(0, day_us, k)
        future = sum(_rates(base, change_day, factor, d)[who] for d in
                     range(day + 1, day + 1 + LABEL_HORIZON_DAYS)) * scale
        label = (rng.poisson(future) == 0).astype("int64")
        label_frames.append(pd.DataFrame({"user_id": who.astype("int64"),
                                          "label_ts": pd.to_datetime(at, unit="us"),
                                          "label": label}))
        bar.update(1)
    bar.close()
    (out / "labels").mkdir(parents=True, exist_ok=True)
    labels = pd.concat(label_frames, ignore_index=True)
    labels["label_ts"] = labels["label_ts"].astype("datetime64[us]")
    labels.to_parquet(out / "labels" / "labels.parquet", index=False)
    stamp.write_text(json.dumps({"rows_requested": rows, "seed": seed, "start": START,
                                 "days": DAYS, "users": n_users}))
    return info(out)


class _Lines:
    """The progress bar when stderr is not a terminal: one line per finished step."""

    def __init__(self, total: int, desc: str) -> None:
        import time

        self.total, self.desc, self.n, self.t0 = total, desc, 0, time.monotonic()

    def update(self, n: int = 1, note: str = "") -> None:
        import sys
        import time

        self.n += n
        print(f"{self.desc}: {self.n}/{self.total}{' ' + note if note else ''} "
              f"({time.monotonic() - self.t0:.1f} s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def progress(total: int, desc: str, enabled: bool = True, per_step: bool = False):
    """tqdm (refreshing at most once a second) in a terminal or notebook; elsewhere a line
    per step when ``per_step`` (a line at the end otherwise)."""
    import sys

    from tqdm.auto import tqdm

    if not enabled:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty() or "ipykernel" in sys.modules:
        return tqdm(total=total, desc=desc, mininterval=1.0)
    if per_step:
        return _Lines(total, desc)
    bar = _Lines(total, desc)
    bar.update = lambda n=1, note="": setattr(bar, "n", bar.n + n)  # type: ignore[method-assign]
    bar.close = lambda: _Lines.update(bar, 0)  # type: ignore[method-assign]
    return bar


def events_glob(path: str | Path) -> str:
    """The glob over every events Parquet file (``<path>/events/day=*/*.parquet``)."""
    return str(Path(path) / "events" / "day=*" / "*.parquet")


def check(path: str | Path) -> Path:
    """Raise DataError with what to do if ``path`` has no events or a file has the wrong schema."""
    import pyarrow.parquet as pq

    path = Path(path)
    files = sorted((path / "events").glob("day=*/*.parquet")) if path.is_dir() else []
    if not files:
        raise DataError(
            f"no event data at {path}: create it with `mlops-course features data --profile "
            f"smoke` (or features.data.generate()).")
    for f in files:
        try:
            schema = pq.read_schema(f)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
            raise DataError(f"{f} is not a readable Parquet file ({exc}): delete it or "
                            f"regenerate the data with --force.") from None
        got = {name: str(schema.field(name).type) for name in schema.names}
        for name, want in SCHEMA.items():
            if got.get(name) != want:
                raise DataError(
                    f"{f} has column {name!r} as {got.get(name, 'missing')}, expected {want}: "
                    f"fix the writer or regenerate the data with --force.")
    return path


def info(path: str | Path) -> DataInfo:
    """Rows, files and bytes of the events under ``path`` (reads Parquet footers only)."""
    import pyarrow.parquet as pq

    path = check(path)
    files = sorted((path / "events").glob("day=*/*.parquet"))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    labels = path / "labels" / "labels.parquet"
    n_labels = pq.ParquetFile(labels).metadata.num_rows if labels.exists() else 0
    return DataInfo(path=path, rows=rows, files=len(files),
                    bytes=sum(f.stat().st_size for f in files), labels=n_labels)


def load_events(path: str | Path, columns: list[str] | None = None):
    """All events as one pandas DataFrame (the pandas way: everything in memory)."""
    import pandas as pd

    path = check(path)
    files = sorted((path / "events").glob("day=*/*.parquet"))
    cols = columns or list(SCHEMA)
    return pd.concat([pd.read_parquet(f, columns=cols) for f in files], ignore_index=True)


def load_labels(path: str | Path):
    import pandas as pd

    return pd.read_parquet(Path(path) / "labels" / "labels.parquet")
