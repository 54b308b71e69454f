"""Lesson 07's own logic: the reference rolling features, point-in-time joins, the online
store (SQLite), data checks and the errors students meet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from course_helpers.features import data, engines, pit, store

pytestmark = pytest.mark.unit


def _events(n=400, users=7, seed=3, ties=True):
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp("2026-03-02") + pd.to_timedelta(rng.integers(0, 20 * 86_400, n), unit="s")
    df = pd.DataFrame({"user_id": rng.integers(0, users, n).astype("int64"),
                       "item_id": rng.integers(0, 6, n).astype("int64"),
                       "amount": rng.integers(100, 5000, n) / 100, "ts": ts.astype("datetime64[us]")})
    if ties:  # same user, same time, different items
        dup = df.iloc[:20].copy()
        dup["item_id"] = (dup["item_id"] + 1) % 6
        df = pd.concat([df, dup], ignore_index=True)
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # out of order


def _brute(events, days=7):
    rows = []
    w = pd.Timedelta(days=days)
    for (u, t), _ in events.groupby(["user_id", "ts"]):
        mine = events[events.user_id == u]
        win = mine[(mine.ts > t - w) & (mine.ts <= t)]
        before = mine[mine.ts < t].ts
        n_here = int((mine.ts == t).sum())
        for k in range(n_here):
            prev = (t - before.max()).total_seconds() if len(before) else np.nan
            rows.append({"user_id": u, "ts": t, "count_7d": len(win),
                         "amount_sum_7d": win.amount.sum(), "amount_mean_7d": win.amount.mean(),
                         "distinct_items_7d": win.item_id.nunique(),
                         "secs_since_prev": prev if k == 0 else 0.0})
    return pd.DataFrame(rows)


def test_rolling_features_match_a_brute_force_count_with_ties_and_any_order():
    ev = _events()
    got = engines.rolling_features(ev)
    want = _brute(ev)
    assert list(got.columns) == engines.ROLLING_COLUMNS
    assert len(got) == len(ev)
    got_cmp = got.drop(columns="secs_since_prev").reset_index(drop=True)
    want_cmp = want.drop(columns="secs_since_prev").reset_index(drop=True)
    want_cmp["ts"] = want_cmp["ts"].astype("datetime64[us]")
    pd.testing.assert_frame_equal(got_cmp, want_cmp, check_dtype=False, rtol=1e-12)
    # the time since the previous event: the first of a user's events has none
    firsts = got.groupby("user_id").head(1)
    assert firsts["secs_since_prev"].isna().all()
    assert (got["secs_since_prev"].dropna() >= 0).all()


def test_the_students_pandas_baseline_equals_the_reference_with_ties_and_any_order():
    ev = _events()
    want = engines.rolling_features(ev)
    got = engines.rolling_features_baseline(ev)
    pd.testing.assert_frame_equal(got, want, rtol=1e-9, atol=0)
    t0 = pd.Timestamp("2026-03-02")
    edges = pd.DataFrame({"user_id": [1, 1, 1], "item_id": [5, 5, 6], "amount": [1.0, 2.0, 4.0],
                          "ts": [t0, t0 + pd.Timedelta(days=7),
                                 t0 + pd.Timedelta(days=7, microseconds=1)]})
    pd.testing.assert_frame_equal(engines.rolling_features_baseline(edges),
                                  engines.rolling_features(edges), rtol=1e-9, atol=0)


def test_the_polars_plan_equals_the_reference_with_ties_and_any_order():
    import polars as pl

    ev = _events()
    got = engines.polars_rolling(pl.from_pandas(ev).lazy()).collect().to_pandas()
    got = got.sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
    want = engines.rolling_features(ev)
    pd.testing.assert_frame_equal(got.astype(want.dtypes.to_dict()), want, rtol=1e-9, atol=0)


def test_window_edges_are_seven_days_open_on_the_left():
    t0 = pd.Timestamp("2026-03-02")
    ev = pd.DataFrame({"user_id": [1, 1, 1], "item_id": [5, 5, 6], "amount": [1.0, 2.0, 4.0],
                       "ts": [t0, t0 + pd.Timedelta(days=7), t0 + pd.Timedelta(days=7, microseconds=1)]})
    got = engines.rolling_features(ev)
    # at exactly t0 + 7 days the event at t0 has left the window (ts - 7 days < t)
    assert got["count_7d"].tolist() == [1, 1, 2]
    assert got["distinct_items_7d"].tolist() == [1, 1, 2]
    assert got["amount_sum_7d"].tolist() == [1.0, 2.0, 6.0]


def _labels():
    t0 = pd.Timestamp("2026-03-02")
    return pd.DataFrame({"user_id": [1, 1, 2, 99],
                         "label_ts": [t0 + pd.Timedelta(days=1), t0 + pd.Timedelta(days=9),
                                      t0 + pd.Timedelta(hours=5), t0 + pd.Timedelta(days=3)],
                         "label": [0, 1, 0, 1]})


def _small_events():
    t0 = pd.Timestamp("2026-03-02")
    return pd.DataFrame({
        "user_id": [1, 1, 1, 2, 2],
        "item_id": [1, 2, 1, 3, 3],
        "amount": [10.0, 20.0, 30.0, 5.0, 7.0],
        "ts": [t0, t0 + pd.Timedelta(days=1), t0 + pd.Timedelta(days=7.5), t0 + pd.Timedelta(hours=5),
               t0 + pd.Timedelta(days=2)]})


def test_point_in_time_join_uses_only_earlier_events():
    ev = _small_events()
    rolling = engines.rolling_features(ev)
    j = pit.point_in_time_join(_labels(), rolling)
    # user 1 at day 1: the event at exactly day 1 is excluded; only the one at t0
    assert j.loc[0, "count_7d"] == 1 and j.loc[0, "amount_sum_7d"] == 10.0
    assert j.loc[0, "secs_since_last"] == 86_400
    # user 1 at day 9: the event at day 7.5, whose window holds days 1 and 7.5
    assert j.loc[1, "count_7d"] == 2 and j.loc[1, "distinct_items_7d"] == 2
    assert j.loc[1, "secs_since_last"] == 1.5 * 86_400
    # user 2 at hour 5: the event at hour 5 is not before the label -> no history
    assert j.loc[2, "count_7d"] == 0 and np.isnan(j.loc[2, "secs_since_last"])
    # user 99 has no events at all
    assert j.loc[3, "count_7d"] == 0 and np.isnan(j.loc[3, "amount_mean_7d"])
    assert (j["feature_ts"].isna() | (j["feature_ts"] < j["label_ts"])).all()


def test_point_in_time_join_equals_the_join_on_data_cut_at_each_label():
    ev = _events(n=600, users=5, ties=False)
    rng = np.random.default_rng(0)
    labels = pd.DataFrame({"user_id": rng.integers(0, 6, 40),
                           "label_ts": ev["ts"].sample(40, random_state=1).to_numpy()})
    full = pit.point_in_time_join(labels, engines.rolling_features(ev))
    for i, lab in labels.iterrows():  # no future: deleting later events changes nothing
        cut = ev[ev.ts < lab.label_ts]
        alone = pit.point_in_time_join(labels.iloc[[i]], engines.rolling_features(cut))
        pd.testing.assert_frame_equal(full.iloc[[i]].reset_index(drop=True), alone,
                                      check_dtype=False)


def test_naive_join_uses_the_future():
    j = pit.naive_join(_labels(), engines.rolling_features(_small_events()))
    assert (j["feature_ts"] >= j["label_ts"]).any()


def test_online_store_serves_what_the_offline_join_computes(tmp_path):
    ev = _events(n=800, users=9)
    rolling = engines.rolling_features(ev)
    at = pd.Timestamp("2026-03-15 12:00")
    s = store.OnlineStore(tmp_path / "online.db")
    assert s.materialize(rolling, at) > 0
    users = list(range(0, 11))  # 9 and 10 have no events
    online = s.get(users, at)
    offline = pit.point_in_time_join(pd.DataFrame({"user_id": users, "label_ts": [at] * 11}), rolling)
    pd.testing.assert_frame_equal(online[offline.columns], offline, check_dtype=False)
    assert store.FeatureLookup(s).lookup(10, at)["count_7d"] == 0.0
    s.close()


def test_missing_data_folder_and_schema_mismatch_say_what_to_do(tmp_path):
    with pytest.raises(data.DataError, match="no event data at .*features data"):
        data.check(tmp_path / "nope")
    info = data.generate(2_000, tmp_path / "d", show=False)
    assert info.rows > 1_900 and info.files == data.DAYS and info.labels > 0
    bad = next((tmp_path / "d" / "events").glob("day=*/*.parquet"))
    df = pd.read_parquet(bad)
    df["amount"] = df["amount"].astype(str)
    df.to_parquet(bad, index=False)
    with pytest.raises(data.DataError, match="column 'amount' as (large_)?string, expected double"):
        engines.compute("duckdb", tmp_path / "d", tmp_path / "out")


def test_generator_is_seeded(tmp_path):
    a = data.generate(3_000, tmp_path / "a", seed=5, show=False)
    b = data.generate(3_000, tmp_path / "b", seed=5, show=False)
    pd.testing.assert_frame_equal(data.load_events(a.path), data.load_events(b.path))
    pd.testing.assert_frame_equal(data.load_labels(a.path), data.load_labels(b.path))


def test_unknown_or_missing_engine_errors():
    with pytest.raises(engines.EngineError, match="unknown engine 'spark'"):
        engines.compute("spark", ".", ".")
    with pytest.raises(engines.EngineError, match="pip install 'nosuchengine'"):
        engines.require("nosuchengine")
    with pytest.raises(engines.EngineError, match="for the dask engine only"):
        engines.compute("polars", ".", ".", scheduler="tcp://127.0.0.1:1")


def test_ratio_and_table():
    from course_helpers.features import bench

    res = {"rows": 10, "memory_mb": 100, "engines": [
        {"engine": "pandas", "rows": 10, "wall_s": 8.0, "peak_mb": 90, "ok": True, "error": None},
        {"engine": "polars", "rows": 10, "wall_s": 2.0, "peak_mb": 50, "ok": True, "error": None},
        {"engine": "dask", "rows": None, "wall_s": 1.0, "peak_mb": 120, "ok": False, "error": "x"}]}
    assert bench.ratio_best_vs_pandas(res) == 4.0
    assert bench.table([res])["ok"].tolist() == [True, True, False]


def test_cli_has_the_features_commands():
    from course_helpers.cli import build_parser

    args = build_parser().parse_args(["features", "bench", "--profile", "smoke", "--engines",
                                      "pandas,duckdb", "--memory-mb", "900", "--out", "x"])
    assert (args.profile, args.engines, args.memory_mb, args.out) == ("smoke", "pandas,duckdb",
                                                                       900, "x")
    assert build_parser().parse_args(["features", "data", "--profile", "smoke"]).func
