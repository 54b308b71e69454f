"""Lesson 10's architecture comparison: its pieces without a server (the whole comparison
against a real model server is in tests/integration/test_capstone_architectures.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from course_helpers import capacity
from course_helpers.capstone import architectures as arch
from course_helpers.features import pit, store

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    import os

    saved = os.environ.get("MLOPS_HOME")
    os.environ["MLOPS_HOME"] = str(tmp_path_factory.mktemp("arch"))
    try:
        yield arch.build_product(rows=20_000, seed=0)
    finally:
        if saved is None:
            os.environ.pop("MLOPS_HOME", None)
        else:
            os.environ["MLOPS_HOME"] = saved


def test_fill_gives_the_model_numbers_only():
    df = pd.DataFrame({"count_7d": [0.0, 3.0], "amount_sum_7d": [0.0, 30.0],
                       "amount_mean_7d": [np.nan, 10.0], "distinct_items_7d": [0.0, 2.0],
                       "secs_since_last": [np.nan, 60.0], "other": [1, 2]})
    X = arch._fill(df)
    assert list(X.columns) == pit.MODEL_FEATURES
    assert not X.isna().any().any()
    assert X.loc[0, "secs_since_last"] == arch.NO_HISTORY_S and X.loc[0, "amount_mean_7d"] == 0
    assert X.loc[1].tolist() == [3.0, 30.0, 10.0, 2.0, 60.0]


def test_product_ratios_come_from_the_data(product):
    from course_helpers.features.data import DAYS

    assert product.users == product.events["user_id"].nunique()
    assert product.events_per_request == pytest.approx(len(product.events) / len(product.labels))
    assert product.scored_per_request == pytest.approx(product.users * DAYS / len(product.labels))
    assert (product.rolling["ts"] >= product.as_of).sum() > 0, "no stream after the last run"
    assert product.model.predict_proba(arch._fill(pit.point_in_time_join(
        product.labels, product.rolling)))[:, 1].std() > 0


def test_batch_scores_every_user_once_and_serves_lookups(product, tmp_path):
    import sqlite3

    out = arch.measure_batch(product, requests=50, db_path=tmp_path / "p.db")
    assert len(out["latencies_ms"]) == 50 and out["rps"] > 0 and out["job_s"] > 0
    db = sqlite3.connect(tmp_path / "p.db")
    (n,), = db.execute("SELECT COUNT(*) FROM predictions").fetchall()
    users_before = product.rolling.loc[product.rolling["ts"] < product.as_of, "user_id"].nunique()
    assert n == out["scored"] == users_before
    assert all(0 <= p <= 1 for (p,) in db.execute("SELECT p FROM predictions"))


def test_streaming_updates_match_the_offline_join(product):
    """Per-event updates of the online store give exactly the point-in-time features the
    model was trained on: no training/serving skew."""
    s = store.OnlineStore()
    s.materialize(product.rolling, product.as_of)
    update_ms, ages_ms = arch.replay(s, product.rolling, product.as_of, events=40)
    assert len(update_ms) == len(ages_ms) == 40
    assert all(a >= u > 0 for u, a in zip(update_ms, ages_ms))
    later = product.rolling[product.rolling["ts"] >= product.as_of].sort_values("ts").head(40)
    at = later["ts"].max() + pd.Timedelta(microseconds=1)
    users = sorted(later["user_id"].unique())
    online = s.get(users, at)
    offline = pit.point_in_time_join(pd.DataFrame({"user_id": users, "label_ts": at}),
                                     product.rolling)
    pd.testing.assert_frame_equal(arch._fill(online).reset_index(drop=True),
                                  arch._fill(offline).reset_index(drop=True))
    stale = store.OnlineStore()
    stale.materialize(product.rolling, product.as_of)
    assert not arch._fill(stale.get(users, at)).equals(arch._fill(online)), \
        "the stream changed nothing: the comparison would not show fresher features"


def test_cheapest_instance_and_bad_provider():
    prices = capacity.load_prices()
    inst = arch._cheapest(prices, None)
    assert inst["usd_per_hour"] == prices["usd_per_hour"].min()
    assert arch._cheapest(prices, "gcp")["provider"] == "gcp"
    with pytest.raises(ValueError, match="use one of"):
        arch._cheapest(prices, "ibm")


def test_compare_refuses_a_bad_schedule():
    with pytest.raises(ValueError, match="batch_every_s"):
        arch.compare("smoke", batch_every_s=0)


def test_plot_has_three_panels():
    import matplotlib

    matplotlib.use("Agg")
    df = pd.DataFrame({"p50_ms": [0.01, 5.0, 5.0], "p95_ms": [0.02, 9.0, 9.0],
                       "feature_age_s": [43200.0, 43200.0, 0.004],
                       "usd_per_1m": [0.01, 0.05, 0.9]},
                      index=pd.Index(list(arch.ARCHITECTURES), name="architecture"))
    df.attrs["instance"] = "aws c7g.medium (1 vCPU, $0.0363/h)"
    axes = arch.plot(df)
    assert len(axes) == 3 and axes[1].get_yscale() == "log"
    assert [t.get_text() for t in axes[0].get_xticklabels()] == list(arch.ARCHITECTURES)


def test_cloud_map_covers_every_box_with_facts():
    df = arch.cloud_map()
    assert set(df.index) == {"model server", "load balancer", "tracking and registry",
                             "pipeline orchestrator", "metrics and alerts", "feature store",
                             "cache", "database", "object storage", "load generator"}
    assert list(df.columns) == ["ours", "lesson", "aws", "gcp", "azure", "kubernetes"]
    assert (df.map(len) > 0).all().all()
    # the Kubernetes forms the course renders are named by functions that exist
    import importlib

    import re

    text = " ".join(df["kubernetes"])
    refs = set(re.findall(r"\b((?:deploy|rollout)\.manifests\.[a-z_]+)", text))
    assert {"deploy.manifests.kubernetes", "deploy.manifests.service",
            "rollout.manifests.argo_rollout", "rollout.manifests.flagger_canary"} <= refs
    for ref in refs:
        mod, fn = ref.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(f"course_helpers.{mod}"), fn)), ref


def test_kubernetes_kinds_are_what_lessons_04_and_09_render():
    kinds = arch.kubernetes_kinds()
    assert kinds["lesson 04: deploy.manifests.kubernetes"] == [
        "Deployment", "Service", "HorizontalPodAutoscaler"]
    assert "Rollout" in kinds["lesson 09: rollout.manifests.argo_rollout"]
    assert "Canary" in kinds["lesson 09: rollout.manifests.flagger_canary"]


def test_what_breaks_first_scales_demand_by_events_per_request():
    df = pd.DataFrame(index=pd.Index(list(arch.ARCHITECTURES), name="architecture"))
    df.attrs.update({"events_per_request": 50.0, "service_ms": {
        "model server (1 worker)": 2.0, "online store read": 1.0,
        "stream update (per event)": 0.5, "batch lookup (database)": 0.01}})
    out = arch.what_breaks_first(df, traffic_rps=10.0)
    assert list(out.index)[0] == "stream update (per event)"  # 10 x 50 events x 0.5 ms
    assert out.loc["stream update (per event)", "load_1x"] == pytest.approx(0.25)
    assert out.loc["model server (1 worker)", "capacity_rps_per_cpu"] == 500.0
    assert out.loc["model server (1 worker)", "load_100x"] == pytest.approx(2.0)
    assert out.loc["model server (1 worker)", "cpus_100x"] == capacity.replicas_needed(1000, 500)
    assert out.loc["batch lookup (database)", "cpus_10x"] == 1
    with pytest.raises(ValueError, match="traffic_rps"):
        arch.what_breaks_first(df, 0)
