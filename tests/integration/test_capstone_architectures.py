"""Lesson 10's comparison end to end: batch, online and streaming measured against a real
model server (lesson 01's gunicorn), which is gone afterwards."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_compare_measures_three_architectures(workspace):
    from course_helpers.capstone import architectures as arch
    from course_helpers.supervisor import Supervisor

    df = arch.compare("smoke", requests=60, events=60, batch_every_s=3600)
    assert list(df.index) == list(arch.ARCHITECTURES)
    assert (df[["p50_ms", "p95_ms", "rps", "usd_per_1m"]] > 0).all().all()
    assert (df["p95_ms"] >= df["p50_ms"]).all()
    # an in-process lookup beats a feature read plus an HTTP round trip to a model server
    assert df.loc["batch", "p95_ms"] < df.loc["online", "p50_ms"]
    # freshness: the schedule's half period for batch and daily features, measured lag for
    # the stream; predictions are computed at request time in online and streaming
    a = df.attrs
    assert df.loc["batch", "feature_age_s"] == pytest.approx(1800 + a["batch_job_s"], abs=1e-3)
    assert df.loc["online", "feature_age_s"] == 1800 and df.loc["online", "prediction_age_s"] == 0
    assert 0 < df.loc["streaming", "feature_age_s"] < 1
    assert a["events_replayed"] == 60 and a["requests"] == 60 and a["health_p50_ms"] > 0
    # cost: serving at the measured rate on the cheapest instance, plus the job's or the
    # updates' share per request
    online_cost = 0.0363 / (df.loc["online", "rps"] * 3600) * 1e6
    assert a["usd_per_hour"] == 0.0363
    assert df.loc["online", "usd_per_1m"] == pytest.approx(online_cost, rel=0.01)
    assert df.loc["streaming", "usd_per_1m"] > online_cost * 0.5
    assert all(df["failure_modes"].str.len() > 50)
    assert [r["name"] for r in Supervisor(workspace).status() if r["alive"]] == []
