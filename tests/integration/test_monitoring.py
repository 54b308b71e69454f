"""Lesson 08 with real servers: Prometheus scraping a model server and a scaling deployment
(file_sd), PromQL into DataFrames, the fault switch driving a burn-rate alert from inactive
to firing and back, Alertmanager delivering it to the course's webhook receiver, and a
retrain alert starting the lesson-03 pipeline."""

from __future__ import annotations

import shutil
import threading
import time
import urllib.request

import pytest

from tests.helpers import module_workspace, need

pytestmark = pytest.mark.integration

FAST = "ModelServerAvailabilityBurnRateFast"


def has_prometheus() -> None:
    need(shutil.which("prometheus") is not None, "prometheus (Debian package prometheus)")


def has_alertmanager() -> None:
    need(shutil.which("prometheus-alertmanager") is not None,
         "prometheus-alertmanager (Debian package prometheus-alertmanager)")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    yield from module_workspace(tmp_path_factory, "monitoring")


@pytest.fixture(scope="module")
def server(home, logreg_uri):
    from course_helpers.serving import serve

    handle = serve(logreg_uri, name="m08", db=None)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def prom(home, server):
    has_prometheus()
    from course_helpers import monitoring

    p = monitoring.start("smoke")  # registers the running server as job "m08"
    # the retrain test's pipeline needs lesson 03's Prefect server: start it now, in the
    # background, while the tests below wait on scrapes and alert states
    from course_helpers.monitoring import alerting

    alerting.warm_pipeline()
    yield p
    p.stop()


class Load:
    """A background thread posting one prediction every ``pause`` seconds."""

    def __init__(self, url: str, pause: float = 0.02) -> None:
        import json

        from course_helpers.data import request_rows

        self.body = json.dumps({"row": request_rows(1)[0]}).encode()
        self.url, self.pause = url + "/predict", pause
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop_flag.is_set():
            req = urllib.request.Request(self.url, data=self.body,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    resp.read()
            except OSError:
                pass
            time.sleep(self.pause)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join(timeout=15)


def wait_state(name: str, want: str, timeout: float, **labels) -> float:
    from course_helpers import monitoring

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if monitoring.alert_state(name, **labels) == want:
            return time.monotonic() - t0
        time.sleep(0.25)
    raise AssertionError(f"{name} did not become {want} within {timeout} s "
                         f"(now {monitoring.alert_state(name, **labels)})")


def test_prometheus_scrapes_the_server_and_answers_queries(prom, server):
    from course_helpers import monitoring

    assert prom.url == monitoring.url()
    monitoring.wait_for_targets(1, job="m08", timeout=30)
    for _ in range(20):
        server.predict({f"f{i:02d}": 0.1 * i for i in range(30)})
    time.sleep(2.5)
    df = monitoring.query('sum by (job) (mlops_requests_total{job="m08"})')
    assert list(df["job"]) == ["m08"] and df["value"].iloc[0] >= 20
    end = time.time()
    rng = monitoring.query_range('sum by (job) (mlops_requests_total{job="m08"})',
                                 end - 5, end, 1)
    assert {"time", "t", "value", "job"} <= set(rng.columns) and len(rng) >= 1
    assert prom.rss_mb() < 150


def test_a_missing_metric_gives_an_empty_frame_with_a_note(prom):
    from course_helpers import monitoring

    with pytest.warns(UserWarning, match="no series match"):
        df = monitoring.query("no_such_metric_total")
    assert df.empty and "no series match" in df.attrs["note"]
    with pytest.warns(UserWarning):
        assert monitoring.query_range("no_such_metric_total", time.time() - 5, time.time()).empty


def test_a_bad_query_is_one_sentence(prom):
    from course_helpers import monitoring
    from course_helpers.errors import CourseError

    with pytest.raises(CourseError, match="Prometheus refused the query"):
        monitoring.query("sum(rate(")


def test_targets_follow_a_scaling_deployment_without_restart(prom, logreg_uri):
    need(shutil.which("nginx") is not None, "nginx")
    from course_helpers import monitoring
    from course_helpers.deploy import DeploymentSpec
    from course_helpers.deploy.local import LocalBackend

    backend = LocalBackend(restart=False)
    spec = DeploymentSpec(model_uri=logreg_uri, name="m08dep", replicas=1,
                          cpus_per_replica=1, memory_mb_per_replica=600)
    dep = backend.up(spec)
    try:
        monitoring.wait_for_targets(1, job="m08dep", timeout=30)
        monitoring.set_targets("m08dep", [r.url for r in dep.replicas], {"track": "canary"})
        backend.scale(dep, 2)
        monitoring.wait_for_targets(2, job="m08dep", timeout=30)
        df = monitoring.targets()
        mine = df[df["job"] == "m08dep"]
        assert set(mine["track"]) == {"canary"} and set(mine["deployment"]) == {"m08dep"}
        assert prom.pid == monitoring.running().pid  # no restart
    finally:
        backend.down(dep)
    assert "m08dep" not in monitoring.jobs()


def test_fault_drives_the_fast_burn_alert_and_alertmanager_delivers_it(prom, server):
    has_alertmanager()
    from course_helpers import monitoring
    from course_helpers.monitoring import alerting
    from course_helpers.serving.faults import set_fault

    urls = alerting.start("smoke")
    assert urls["alertmanager"] and urls["receiver"]
    with Load(server.url):
        time.sleep(3)
        assert monitoring.alert_state(FAST, job="m08") == "inactive"
        t0 = time.monotonic()
        set_fault(server.url, error_rate=0.5)
        try:
            wait_state(FAST, "pending", 30, job="m08")
            wait_state(FAST, "firing", 30, job="m08")
            fired_s = time.monotonic() - t0
            deadline = time.monotonic() + 30
            while not any(a.get("status") == "firing" and a["labels"].get("alertname") == FAST
                          for n in alerting.received() for a in n.get("alerts", [])):
                assert time.monotonic() < deadline, "the receiver got no firing notification"
                time.sleep(0.5)
        finally:
            set_fault(server.url)  # clear
        wait_state(FAST, "inactive", 60, job="m08")
    print(f"alert firing {fired_s:.1f} s after the fault started")
    deadline = time.monotonic() + 30
    while not any(n.get("status") == "resolved" and n["commonLabels"].get("alertname") == FAST
                  for n in alerting.received()):
        assert time.monotonic() < deadline, "no resolved notification reached the receiver"
        time.sleep(0.5)


def test_a_retrain_alert_runs_the_pipeline(prom, home):
    """alert -> Alertmanager -> webhook receiver -> lesson-03 trigger path -> a registered
    challenger in MLflow."""
    has_alertmanager()
    from course_helpers import tracking
    from course_helpers.model import MODEL_NAME
    from course_helpers.monitoring import alerting, drift

    alerting.start("smoke")
    t0 = time.time()
    drift.export({"alert": True, "psi": {"f00": 0.4}, "ks_p": {"f00": 1e-6},
                  "flagged_features": ["f00"], "window": 1})
    rec = alerting.wait_for_retrain(after=t0, timeout=240)
    assert rec["ok"], rec
    assert rec["alertname"] == "ModelInputDrift"
    versions = tracking.versions_table(MODEL_NAME)
    assert str(rec["version"]) in set(versions["version"].astype(str))
    assert (home / "monitoring" / "inbox" / "processed").is_dir()


def test_cleanup_stops_prometheus_alertmanager_and_the_receiver(workspace):
    """`mlops-course monitor up` leaves them running on purpose; `cleanup` stops all three."""
    has_prometheus()
    has_alertmanager()
    import psutil

    from course_helpers.cli import main
    from course_helpers.supervisor import Supervisor

    assert main(["monitor", "up", "--profile", "smoke"]) == 0
    recs = {r.name: r for r in Supervisor().records()}
    assert {"prometheus", "alertmanager", "alert-receiver"} <= set(recs)
    pids = [recs[n].pid for n in ("prometheus", "alertmanager", "alert-receiver")]
    assert main(["monitor", "status"]) == 0
    assert main(["cleanup", "--no-containers"]) == 0
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_an_alert_that_fires_again_after_a_restart_is_delivered_again(workspace):
    """Running the lesson twice in one workspace: Alertmanager restarted must not remember
    (and so withhold) the notification it sent the first time."""
    has_alertmanager()
    import json

    from course_helpers.monitoring import alerting

    def delivered() -> int:
        return sum(n["status"] == "firing" and n["commonLabels"].get("alertname") == "Again"
                   for n in alerting.received())

    for round_ in (1, 2):
        am = alerting.start("smoke")["alertmanager"]
        body = json.dumps([{"labels": {"alertname": "Again", "job": "x"}}]).encode()
        urllib.request.urlopen(urllib.request.Request(
            am + "/api/v2/alerts", data=body, headers={"Content-Type": "application/json"}),
            timeout=10).read()
        deadline = time.monotonic() + 15
        while delivered() < round_:
            assert time.monotonic() < deadline, f"start {round_}: the alert was not delivered"
            time.sleep(0.2)
        alerting.stop()


def test_a_new_session_does_not_refire_the_last_sessions_drift_alarm(workspace):
    """The drift gauges of an earlier session's last window are not exported again (they
    fired the drift alert, and started a retrain, as soon as lesson 08 was run again)."""
    has_alertmanager()
    from course_helpers.monitoring import alerting, drift

    drift.export({"alert": True, "flagged_features": ["f00"], "window": 3})
    receiver = alerting.start("smoke")["receiver"]
    with urllib.request.urlopen(receiver + "/metrics", timeout=10) as resp:
        assert "mlops_drift_alert" not in resp.read().decode()
    drift.export({"alert": False, "window": 4})
    with urllib.request.urlopen(receiver + "/metrics", timeout=10) as resp:
        assert "mlops_drift_alert 0.0" in resp.read().decode()



def test_a_new_prometheus_starts_without_the_last_sessions_series(workspace):
    """A restarted Prometheus kept an earlier session's last samples current for its
    5-minute lookback, so their alerts (the drift alert) fired again at once."""
    has_prometheus()
    has_alertmanager()
    import warnings

    from course_helpers import monitoring
    from course_helpers.monitoring import alerting, drift

    def drift_series() -> int:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the empty frame's note
            return len(monitoring.query("mlops_drift_window"))

    alerting.start("smoke")  # the receiver exports the drift gauges
    drift.export({"alert": False, "window": 1})
    monitoring.start("smoke")
    deadline = time.monotonic() + 30
    while drift_series() == 0:
        assert time.monotonic() < deadline, "Prometheus never scraped the drift gauges"
        time.sleep(0.5)
    alerting.stop()  # the session ends: nothing exports the gauges any more
    monitoring.stop()
    monitoring.start("smoke")
    assert drift_series() == 0, "the last session's drift series is still current"
