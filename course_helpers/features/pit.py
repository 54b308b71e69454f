"""Point-in-time joins, the naive join that leaks, and the leakage experiment (lesson 07).

A label at time ``L`` may use a feature row only if the row's event time is strictly before
``L`` (an event at exactly ``L`` is the thing being predicted, or happens with it). The
rolling features of the user's last event before ``L`` are joined, plus ``secs_since_last``
= ``L`` minus that event's time. Feast's ``get_historical_features`` does the same as-of join
(with ``<=`` and a TTL; we use ``<`` and ``ttl_days``).
"""

from __future__ import annotations

import numpy as np

#: Feature columns a model sees (after a join).
MODEL_FEATURES = ["count_7d", "amount_sum_7d", "amount_mean_7d", "distinct_items_7d",
                  "secs_since_last"]
_ZERO_WHEN_MISSING = ["count_7d", "amount_sum_7d", "distinct_items_7d"]


def finish(joined, ttl_days: float | None = None):
    """Shared by the offline join and the online lookup: ``secs_since_last`` from
    ``label_ts - feature_ts``; users with no (or too old, past ``ttl_days``) history get
    zero counts and sums and NaN for the mean and ``secs_since_last``."""
    out = joined.copy()
    secs = (out["label_ts"] - out["feature_ts"]).dt.total_seconds()
    missing = out["feature_ts"].isna()
    if ttl_days is not None:
        missing |= secs > ttl_days * 86_400
    out["secs_since_last"] = secs.where(~missing)
    for col in _ZERO_WHEN_MISSING:
        out[col] = out[col].where(~missing, 0).astype("float64")
    out["amount_mean_7d"] = out["amount_mean_7d"].where(~missing)
    out["feature_ts"] = out["feature_ts"].where(~missing)
    return out


def point_in_time_join(labels, rolling, ttl_days: float | None = None):
    """For each row of ``labels`` (user_id, label_ts, ...), the features of the user's last
    event strictly before label_ts. Returns labels' rows in their order, with ``feature_ts``
    and MODEL_FEATURES added."""
    import pandas as pd

    left = labels.reset_index(drop=True).assign(_row=np.arange(len(labels)))
    left["label_ts"] = left["label_ts"].astype("datetime64[us]")
    right = rolling.rename(columns={"ts": "feature_ts"}).drop(columns=["secs_since_prev"],
                                                              errors="ignore")
    right["feature_ts"] = right["feature_ts"].astype("datetime64[us]")
    joined = pd.merge_asof(
        left.sort_values("label_ts", kind="stable"), right.sort_values("feature_ts", kind="stable"),
        left_on="label_ts", right_on="feature_ts", by="user_id", direction="backward",
        allow_exact_matches=False)
    joined = joined.sort_values("_row").drop(columns="_row").reset_index(drop=True)
    return finish(joined, ttl_days)


def naive_join(labels, rolling):
    """The common mistake: join each label to the user's *latest* feature row, whenever it
    happened (a snapshot of "current" features joined to historical labels)."""
    latest = (rolling.sort_values(["user_id", "ts"]).groupby("user_id").tail(1)
              .rename(columns={"ts": "feature_ts"}).drop(columns=["secs_since_prev"],
                                                         errors="ignore"))
    joined = labels.reset_index(drop=True).merge(latest, on="user_id", how="left")
    return finish(joined)


def _model():
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=60, learning_rate=0.1, random_state=0)


def leakage_experiment(labels, rolling, seed: int = 0) -> dict:
    """AUCs of a model trained on leaked (naive-join) vs point-in-time features.

    ``offline``: a random 30% of the labels before the last day, each model on its own join
    (what a notebook would report). ``next_day``: the labels of the last day, with the features
    a server has at prediction time (point-in-time) for both models.
    Returns ``{"leaked": {"offline_auc", "next_day_auc"}, "point_in_time": {...}, "n_train",
    "n_next_day", "leaked_rows_share"}``.
    """
    from sklearn.metrics import roc_auc_score

    labels = labels.reset_index(drop=True)
    day = labels["label_ts"].dt.floor("D")
    last = day == day.max()
    past = labels[~last].reset_index(drop=True)
    nxt = labels[last].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    test = rng.random(len(past)) < 0.3
    joins = {"leaked": naive_join(past, rolling), "point_in_time": point_in_time_join(past, rolling)}
    serve = point_in_time_join(nxt, rolling)
    out: dict = {"n_train": int((~test).sum()), "n_offline_test": int(test.sum()),
                 "n_next_day": len(nxt)}
    from threadpoolctl import threadpool_limits

    for name, df in joins.items():
        with threadpool_limits(1):
            model = _model().fit(df.loc[~test, MODEL_FEATURES], df.loc[~test, "label"])
            offline = roc_auc_score(df.loc[test, "label"],
                                    model.predict_proba(df.loc[test, MODEL_FEATURES])[:, 1])
            nd = roc_auc_score(serve["label"], model.predict_proba(serve[MODEL_FEATURES])[:, 1])
        out[name] = {"offline_auc": round(float(offline), 3), "next_day_auc": round(float(nd), 3)}
    leaked = joins["leaked"]
    out["leaked_rows_share"] = round(float((leaked["feature_ts"] >= leaked["label_ts"]).mean()), 3)
    return out
