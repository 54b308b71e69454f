"""One feature definition, four engines: pandas, polars (lazy, streaming), DuckDB (SQL over the
Parquet files) and Dask distributed. Every engine writes the same two tables under ``out``:

``rolling/`` one row per event: ``user_id``, ``ts`` and, over the user's events with
    ``ts - 7 days < event ts <= ts`` (the event itself included): ``count_7d``,
    ``amount_sum_7d``, ``amount_mean_7d``, ``distinct_items_7d``; plus ``secs_since_prev``
    (seconds since the user's previous event, NaN for the first).
``users/`` one row per user over all events: ``n_events``, ``amount_sum``, ``amount_mean``,
    ``distinct_items``, ``first_ts``, ``last_ts``.

:func:`rolling_features` (pandas and numpy, vectorised) is the reference and the one function
used offline, online (``features.store``) and on every Dask partition. The ``pandas`` engine is
the baseline a student writes first, :func:`rolling_features_baseline` (``groupby().rolling``
and a per-window ``apply``): the benchmark's ``ratio_best_vs_pandas`` is measured against it.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

from ..errors import CourseError
from .data import check, events_glob

ENGINES = ("pandas", "polars", "duckdb", "dask")
WINDOW_DAYS = 7
ROLLING_COLUMNS = ["user_id", "ts", "count_7d", "amount_sum_7d", "amount_mean_7d",
                   "distinct_items_7d", "secs_since_prev"]
USER_COLUMNS = ["user_id", "n_events", "amount_sum", "amount_mean", "distinct_items",
                "first_ts", "last_ts"]
_PIP = {"polars": "polars", "duckdb": "duckdb", "dask": "dask[distributed]",
        "distributed": "dask[distributed]", "pyarrow": "pyarrow"}


class EngineError(CourseError):
    """An engine is unknown, not installed, or cannot reach its scheduler."""


def require(module: str):
    """Import ``module`` or raise EngineError naming the pip package to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pkg = _PIP.get(module.split(".")[0], module)
        raise EngineError(f"the {module.split('.')[0]} engine is not installed: "
                          f"pip install '{pkg}' (or pip install -e . in the course repo).") from None


# --- the reference: pandas + numpy --------------------------------------------------------
def rolling_features(events, window_days: int = WINDOW_DAYS):
    """Per-event rolling features of ``events`` (columns user_id, item_id, amount, ts).

    Input order does not matter. Returns a DataFrame sorted by (user_id, ts) with
    ROLLING_COLUMNS; events sharing a timestamp all see each other (a window is a time range).
    Vectorised: O(n log n) with numpy searches, no Python loop per row.
    """
    import numpy as np
    import pandas as pd

    df = events[["user_id", "item_id", "amount", "ts"]].sort_values(
        ["user_id", "ts"], kind="stable").reset_index(drop=True)
    n = len(df)
    if n == 0:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
            ROLLING_COLUMNS, ["int64", "datetime64[us]", "int64", "float64", "float64", "int64",
                              "float64"])})
    user = df["user_id"].to_numpy()
    t = df["ts"].to_numpy().astype("datetime64[us]").astype(np.int64)
    w = int(window_days) * 86_400_000_000
    new = np.r_[True, user[1:] != user[:-1]]
    code = np.cumsum(new) - 1
    first = np.flatnonzero(new)[code]
    rel = t - t.min() + 1
    bits = int(rel.max() + w + 1).bit_length()
    if bits + int(code.max()).bit_length() > 62:
        raise ValueError("time span x users too large for one key: split the input by user")
    key = (code << bits) | rel
    hi = np.searchsorted(key, key, side="right") - 1                 # last event at <= ts
    lo = np.maximum(np.searchsorted(key, key - w, side="right"), first)  # first event > ts - w
    count = hi - lo + 1
    csum = df.groupby(code, sort=False)["amount"].cumsum().to_numpy()
    amount = df["amount"].to_numpy()
    total = csum[hi] - csum[lo] + amount[lo]
    # distinct items: occurrence j of an item is the latest one inside the window of every
    # query time in [t_j, min(t_j + w, next occurrence of the same item) - 1]
    order = np.lexsort((t, df["item_id"].to_numpy(), user))
    same = np.r_[(user[order][1:] == user[order][:-1])
                 & (df["item_id"].to_numpy()[order][1:] == df["item_id"].to_numpy()[order][:-1]),
                 False]
    nxt = np.full(n, np.iinfo(np.int64).max // 4)
    nxt[order[:-1][same[:-1]]] = rel[order[1:][same[:-1]]]
    end = np.minimum(rel + w - 1, nxt - 1)
    ekey = np.sort((code << bits) | np.maximum(end, 0))
    distinct = (hi - first + 1) - (np.searchsorted(ekey, key, side="left") - first)
    prev = np.r_[np.nan, (t[1:] - t[:-1]) / 1e6]
    prev[new] = np.nan
    return pd.DataFrame({
        "user_id": user.astype("int64"), "ts": df["ts"].astype("datetime64[us]").to_numpy(),
        "count_7d": count.astype("int64"), "amount_sum_7d": total,
        "amount_mean_7d": total / count, "distinct_items_7d": distinct.astype("int64"),
        "secs_since_prev": prev})


def user_aggregates(events):
    """Per-user aggregates over all of ``events``; sorted by user_id, USER_COLUMNS."""
    g = events.groupby("user_id", sort=True)
    out = g.agg(n_events=("amount", "size"), amount_sum=("amount", "sum"),
                amount_mean=("amount", "mean"), distinct_items=("item_id", "nunique"),
                first_ts=("ts", "min"), last_ts=("ts", "max")).reset_index()
    out["n_events"] = out["n_events"].astype("int64")
    out["distinct_items"] = out["distinct_items"].astype("int64")
    return out[USER_COLUMNS]


# --- engines -------------------------------------------------------------------------------
def _fresh(out: Path) -> None:
    for sub in ("rolling", "users"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True, exist_ok=True)


def rolling_features_baseline(events, window_days: int = WINDOW_DAYS):
    """The pandas version a student writes first: same output as :func:`rolling_features`.

    ``groupby("user_id").rolling("7D", closed="right")`` on a time index for count, sum and
    mean; ``.apply(lambda w: len(np.unique(w)), raw=True)`` on that window for distinct items
    (one Python call per event); ``groupby(...).diff()`` for the time since the previous event;
    then every row takes the last value of its (user, ts) group, so that events sharing a
    timestamp all see each other (pandas' window for a row stops at that row).
    """
    import numpy as np
    import pandas as pd

    df = events[["user_id", "item_id", "amount", "ts"]].sort_values(
        ["user_id", "ts"], kind="stable").reset_index(drop=True)
    df["ts"] = df["ts"].astype("datetime64[us]")
    roll = df.set_index("ts").groupby("user_id").rolling(f"{int(window_days)}D", closed="right")
    out = pd.DataFrame({
        "user_id": df["user_id"].astype("int64"), "ts": df["ts"],
        "count_7d": roll["amount"].count().to_numpy().astype("int64"),
        "amount_sum_7d": roll["amount"].sum().to_numpy(),
        "amount_mean_7d": roll["amount"].mean().to_numpy(),
        "distinct_items_7d": roll["item_id"].apply(lambda w: len(np.unique(w)), raw=True)
        .to_numpy().astype("int64"),
        "secs_since_prev": df.groupby("user_id")["ts"].diff().dt.total_seconds()})
    cols = ["count_7d", "amount_sum_7d", "amount_mean_7d", "distinct_items_7d"]
    out[cols] = out.groupby(["user_id", "ts"])[cols].transform("last")
    return out[ROLLING_COLUMNS]


def run_pandas(data: Path, out: Path, **_) -> None:
    """The student's first version: read every file into one DataFrame, compute with
    :func:`rolling_features_baseline` and ``groupby().agg``, write. Memory grows with the data."""
    from .data import load_events

    events = load_events(data)
    rolling_features_baseline(events).to_parquet(out / "rolling" / "part-0.parquet", index=False)
    user_aggregates(events).to_parquet(out / "users" / "part-0.parquet", index=False)


def polars_rolling(lf):
    """The rolling table as a polars lazy plan over ``lf`` (columns user_id, item_id, amount, ts).

    Count and sum are ``rolling_sum_by`` over each user's time-sorted rows (a window is a time
    range: rows sharing a timestamp see each other). Distinct items without a per-window set:
    an event stops counting for its item at ``end`` = min(its time + 7 days, the user's next
    event of the same item), so distinct(t) = (#events at <= t) - (#ends at <= t), the second
    found by an as-of join on the user's sorted ends.
    """
    pl = require("polars")
    w = WINDOW_DAYS * 86_400_000_000
    after = pl.col("user_id").shift(-1) == pl.col("user_id")
    lf = (lf.select("user_id", "item_id", "amount", "ts")
          .with_columns(t=pl.col("ts").dt.epoch("us"), one=pl.lit(1, pl.Int64))
          .sort("user_id", "item_id", "t")
          .with_columns(end=pl.min_horizontal(pl.col("t") + w, pl.when(
              after & (pl.col("item_id").shift(-1) == pl.col("item_id"))).then(pl.col("t").shift(-1))))
          .sort("user_id", "t"))
    window = {"by": "t", "window_size": f"{w}i", "closed": "right"}
    feats = lf.with_columns(
        count_7d=pl.col("one").rolling_sum_by(**window).over("user_id"),
        amount_sum_7d=pl.col("amount").rolling_sum_by(**window).over("user_id"),
        seen=pl.col("t").rank("max").over("user_id").cast(pl.Int64),
        secs_since_prev=pl.when(pl.col("user_id").shift(1) == pl.col("user_id"))
        .then(pl.col("t").diff()) / 1e6)
    ended = (lf.select("user_id", "end").sort("user_id", "end")
             .with_columns(ended=pl.int_range(1, pl.len() + 1).over("user_id")))
    return (feats.join_asof(ended, left_on="t", right_on="end", by="user_id", strategy="backward")
            .select("user_id", "ts", "count_7d", "amount_sum_7d",
                    (pl.col("amount_sum_7d") / pl.col("count_7d")).alias("amount_mean_7d"),
                    (pl.col("seen") - pl.col("ended").fill_null(0)).alias("distinct_items_7d"),
                    "secs_since_prev"))


def run_polars(data: Path, out: Path, memory_mb: int | None = None, **_) -> None:
    """A lazy plan over the files, run by polars' streaming engine, written with sink_parquet."""
    pl = require("polars")
    lf = pl.scan_parquet(events_glob(data), hive_partitioning=False)
    polars_rolling(lf).sink_parquet(out / "rolling" / "part-0.parquet", engine="streaming")
    users = lf.group_by("user_id").agg(
        pl.len().cast(pl.Int64).alias("n_events"), pl.col("amount").sum().alias("amount_sum"),
        pl.col("amount").mean().alias("amount_mean"),
        pl.col("item_id").n_unique().cast(pl.Int64).alias("distinct_items"),
        pl.col("ts").min().alias("first_ts"), pl.col("ts").max().alias("last_ts"))
    users.sink_parquet(out / "users" / "part-0.parquet", engine="streaming")


ROLLING_SQL = """
SELECT user_id, ts,
  COUNT(*) OVER w AS count_7d,
  SUM(amount) OVER w AS amount_sum_7d,
  AVG(amount) OVER w AS amount_mean_7d,
  COUNT(DISTINCT item_id) OVER w AS distinct_items_7d,
  (epoch_us(ts) - epoch_us(LAG(ts) OVER (PARTITION BY user_id ORDER BY ts))) / 1e6
    AS secs_since_prev
FROM read_parquet('{glob}')
WINDOW w AS (PARTITION BY user_id ORDER BY ts
             RANGE BETWEEN INTERVAL '{days} days' - INTERVAL '1 microsecond' PRECEDING
             AND CURRENT ROW)
"""
USERS_SQL = """
SELECT user_id, COUNT(*) AS n_events, SUM(amount) AS amount_sum, AVG(amount) AS amount_mean,
  COUNT(DISTINCT item_id) AS distinct_items, MIN(ts) AS first_ts, MAX(ts) AS last_ts
FROM read_parquet('{glob}') GROUP BY user_id
"""


def run_duckdb(data: Path, out: Path, memory_mb: int | None = None, **_) -> None:
    """SQL over the Parquet files; past ``memory_limit`` DuckDB spills to ``out/tmp``."""
    duckdb = require("duckdb")
    con = duckdb.connect()
    if memory_mb:
        # leave room for the Python process and DuckDB's own overhead beyond its buffer pool
        con.execute(f"SET memory_limit = '{max(64, int(memory_mb * 0.6))}MB'")
    con.execute(f"SET temp_directory = '{out / 'tmp'}'")
    con.execute("SET preserve_insertion_order = false")
    glob = events_glob(data)
    con.execute(f"COPY ({ROLLING_SQL.format(glob=glob, days=WINDOW_DAYS)}) "
                f"TO '{out / 'rolling' / 'part-0.parquet'}' (FORMAT parquet)")
    con.execute(f"COPY ({USERS_SQL.format(glob=glob)}) "
                f"TO '{out / 'users' / 'part-0.parquet'}' (FORMAT parquet)")
    con.close()
    shutil.rmtree(out / "tmp", ignore_errors=True)


def connect(address: str, timeout_s: float = 10.0):
    """A dask Client for ``tcp://host:port``; EngineError in one sentence if nobody answers."""
    require("distributed")
    from dask.distributed import Client

    try:
        return Client(address, timeout=f"{timeout_s}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise EngineError(
            f"no Dask scheduler answered at {address} within {timeout_s:.0f} s ({type(exc).__name__}): "
            f"start one (`mlops-course features cluster`) or leave out --scheduler.") from None


def run_dask(data: Path, out: Path, memory_mb: int | None = None, scheduler: str | None = None,
             workers: int = 2, **_) -> None:
    """Shuffle events so each user lives in one partition, then run :func:`rolling_features`
    on every partition. With ``scheduler`` the work goes to that cluster; else a LocalCluster
    of ``workers`` processes sharing ``memory_mb`` (each spills, pauses, then is restarted
    at its own limit)."""
    require("distributed")
    import dask
    import dask.dataframe as dd
    import pandas as pd
    from dask.distributed import Client, LocalCluster

    files = sorted(str(p) for p in (data / "events").glob("day=*/*.parquet"))
    cluster = None
    if scheduler:
        client = connect(scheduler)
    else:
        per_worker = f"{max(128, int((memory_mb or 2048) * 0.8 / workers))}MB"
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               memory_limit=per_worker, host="127.0.0.1",
                               dashboard_address=None, local_directory=str(out / "dask-tmp"))
        client = Client(cluster, set_as_default=False)
    try:
        with dask.config.set(scheduler=client, **{"dataframe.shuffle.method": "tasks"}):
            ddf = dd.read_parquet(files, columns=["user_id", "item_id", "amount", "ts"])
            parts = max(2, len(files) // 2)
            by_user = ddf.shuffle("user_id", npartitions=parts)
            meta_r = rolling_features(ddf._meta)
            meta_u = user_aggregates(pd.DataFrame({c: ddf._meta[c] for c in ddf._meta}))
            roll = by_user.map_partitions(rolling_features, meta=meta_r)
            users = by_user.map_partitions(user_aggregates, meta=meta_u)
            dask.compute(
                roll.to_parquet(str(out / "rolling"), write_index=False, compute=False),
                users.to_parquet(str(out / "users"), write_index=False, compute=False))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        shutil.rmtree(out / "dask-tmp", ignore_errors=True)


RUNNERS = {"pandas": run_pandas, "polars": run_polars, "duckdb": run_duckdb, "dask": run_dask}


def compute(engine: str, data: str | Path, out: str | Path, *, memory_mb: int | None = None,
            scheduler: str | None = None) -> Path:
    """Compute both feature tables of the events under ``data`` with ``engine`` into ``out``."""
    if engine not in RUNNERS:
        raise EngineError(f"unknown engine {engine!r}: choose from {', '.join(ENGINES)}.")
    if scheduler and engine != "dask":
        raise EngineError("--scheduler is for the dask engine only.")
    data = check(data)
    out = Path(out)
    _fresh(out)
    RUNNERS[engine](data, out, memory_mb=memory_mb, scheduler=scheduler)
    return out


def read(out: str | Path):
    """(rolling, users) as pandas DataFrames, sorted and with the reference dtypes."""
    import pandas as pd

    out = Path(out)
    tables = []
    for sub, cols, keys in (("rolling", ROLLING_COLUMNS, ["user_id", "ts"]),
                            ("users", USER_COLUMNS, ["user_id"])):
        files = sorted((out / sub).glob("*.parquet"))
        df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)[cols]
        for c in df.columns:
            if c.endswith("ts"):
                df[c] = df[c].astype("datetime64[us]")
            elif c in ("user_id", "n_events", "count_7d", "distinct_items", "distinct_items_7d"):
                df[c] = df[c].astype("int64")
            else:
                df[c] = df[c].astype("float64")
        tables.append(df.sort_values(keys, kind="stable").reset_index(drop=True))
    return tuple(tables)

