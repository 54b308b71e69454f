"""Lesson 07 with real engines and processes: four engines agree, the bench enforces its
budget, a separately started Dask scheduler and worker run the same code, Redis serves
the offline values."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import pytest

from course_helpers.features import data, engines
from tests.helpers import need

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory):
    return data.generate(data.SIZES["smoke"], tmp_path_factory.mktemp("events"), show=False).path


def _assert_same(ref, other, engine):
    for a, b in zip(ref, other):
        pd.testing.assert_frame_equal(a, b, rtol=1e-9, atol=0, check_dtype=True,
                                      obj=f"{engine} vs pandas")


def test_four_engines_compute_identical_features(smoke_data, tmp_path, workspace):
    results = {}
    for engine in engines.ENGINES:
        engines.compute(engine, smoke_data, tmp_path / engine, memory_mb=1024)
        results[engine] = engines.read(tmp_path / engine)
    rolling, users = results["pandas"]
    assert len(rolling) == data.info(smoke_data).rows and len(users) > 500
    for engine in ("polars", "duckdb", "dask"):
        _assert_same(results["pandas"], results[engine], engine)


def test_bench_reports_an_engine_over_budget_as_failed_with_the_reason(smoke_data, tmp_path,
                                                                     workspace):
    from course_helpers.features import bench

    ok = bench.run_one("duckdb", smoke_data, tmp_path / "duckdb", memory_mb=600)
    assert ok["ok"] and ok["rows"] == data.info(smoke_data).rows and ok["peak_mb"] > 20, ok
    tight = bench.run_one("pandas", smoke_data, tmp_path / "pandas", memory_mb=60)
    assert not tight["ok"] and tight["rows"] is None
    assert "60 MB" in tight["error"], tight
    assert tight["limit"] in ("cgroup+observed", "observed")


def test_cli_bench_writes_results_json(smoke_data, tmp_path, workspace):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-m", "course_helpers.cli", "features", "bench",
                           "--profile", "smoke", "--engines", "pandas,polars", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads((out / "results.json").read_text())
    assert set(res) >= {"profile", "rows", "memory_mb", "engines"} and res["profile"] == "smoke"
    assert [e["engine"] for e in res["engines"]] == ["pandas", "polars"]
    for e in res["engines"]:
        assert set(e) >= {"engine", "rows", "wall_s", "peak_mb", "ok", "error"} and e["ok"]
    assert (out / "results.png").stat().st_size > 0
    assert "ratio_best_vs_pandas=" in proc.stdout


def test_separate_scheduler_and_worker_run_the_same_code(smoke_data, tmp_path, workspace):
    from course_helpers.features.cluster import start_cluster, wait_gone
    from course_helpers.supervisor import Supervisor

    cluster = start_cluster(workers=1, memory_mb=700)
    names = {r["name"] for r in Supervisor().status()}
    assert {"dask-scheduler", "dask-workers"} <= names
    engines.compute("dask", smoke_data, tmp_path / "remote", scheduler=cluster.address)
    engines.compute("pandas", smoke_data, tmp_path / "ref")
    _assert_same(engines.read(tmp_path / "ref"), engines.read(tmp_path / "remote"), "dask (remote)")
    stopped = Supervisor().cleanup(containers=False)  # what `mlops-course cleanup` does
    assert any("dask-scheduler" in s for s in stopped)
    assert wait_gone(cluster.address)


def test_a_scheduler_that_does_not_answer_is_one_sentence_within_10_s(smoke_data, tmp_path):
    from course_helpers.supervisor import free_port

    start = time.monotonic()
    with pytest.raises(engines.EngineError, match=r"no Dask scheduler answered at tcp://127\.0\.0\.1:\d+ within 10 s") as err:
        engines.compute("dask", smoke_data, tmp_path / "x", scheduler=f"tcp://127.0.0.1:{free_port()}")
    assert time.monotonic() - start < 12
    assert "\n" not in str(err.value)


def test_redis_online_store_matches_offline(smoke_data, workspace):
    from course_helpers.features import pit, store
    from course_helpers.services import start_redis

    from course_helpers.config import find_binary

    need(find_binary("redis-server") is not None, "redis-server (Debian package)")
    rolling = engines.rolling_features(data.load_events(smoke_data))
    at = rolling["ts"].quantile(0.8)
    online = store.OnlineStore(start_redis(name="features-redis"))
    assert online.kind == "redis" and online.materialize(rolling, at) > 100
    users = sorted(rolling["user_id"].unique()[:200].tolist()) + [10**9]  # one unknown user
    offline = pit.point_in_time_join(pd.DataFrame({"user_id": users, "label_ts": at}), rolling)
    pd.testing.assert_frame_equal(online.get(users, at)[offline.columns], offline,
                                  check_dtype=False)
    online.close()


def test_dask_dashboard_launcher_answers_under_its_proxy_prefix(workspace, monkeypatch):
    import urllib.request

    from course_helpers import proxy
    from course_helpers.supervisor import Supervisor, free_port

    port, sched = free_port(), free_port()
    monkeypatch.setenv(proxy.DASK_PORT_ENV, str(sched))
    cmd = proxy.dask_command(port, "/user/amy/")
    assert proxy.setup_dask()["absolute_url"] is True
    url = f"http://127.0.0.1:{port}/user/amy/dask/status"
    Supervisor().start("dask-launcher", cmd, url=url, timeout=60)
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200 and b"bokeh" in resp.read().lower()
    engines.connect(f"tcp://127.0.0.1:{sched}").close()  # the scheduler a cluster can join
