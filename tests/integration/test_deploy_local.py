"""The local backend for real: gunicorn replicas pinned to CPUs behind a real nginx."""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from course_helpers.data import request_rows
from course_helpers.deploy import DeploymentSpec
from course_helpers.deploy.local import LocalBackend
from tests.helpers import need

pytestmark = pytest.mark.integration
ROW = request_rows(1)[0]


@pytest.fixture(autouse=True)
def _nginx():
    need(shutil.which("nginx") is not None or os.path.exists("/usr/sbin/nginx"),
         "nginx (Debian package nginx)")


def post(url: str) -> int:
    req = urllib.request.Request(url + "/predict", data=json.dumps({"row": ROW}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return -1


class Loop:
    """A client hammering the load balancer in a thread, counting outcomes."""

    def __init__(self, url: str) -> None:
        self.url, self.codes, self.stop = url, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            self.codes.append(post(self.url))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)


def test_many_small_up_scale_down(workspace, logreg_uri):
    backend = LocalBackend()
    dep = backend.up(DeploymentSpec.many_small(logreg_uri, replicas=2, name="ms"))
    try:
        assert {post(dep.url) for _ in range(10)} == {200}
        status = backend.status(dep)
        assert [s["ready"] for s in status] == [True, True]
        assert [s["cpus"] for s in status] == [[0], [1]]
        from course_helpers import limits

        for s in status:  # really pinned, and (as root) really limited
            import psutil

            assert psutil.Process(s["pid"]).cpu_affinity() == s["cpus"]
            if limits.supported():
                assert s["memory_limit_mb"] == dep.spec.memory_mb_per_replica
                procs = (limits.V1 / limits.PARENT / s["replica"] / "cgroup.procs")
                if procs.exists():
                    members = {int(x) for x in procs.read_text().split()}
                    family = {s["pid"]} | {c.pid for c in psutil.Process(s["pid"]).children()}
                    assert family <= members
        with Loop(dep.url) as loop:
            time.sleep(0.5)
            dep = backend.scale(dep, 1)
            time.sleep(0.5)
            dep = backend.scale(dep, 2)
            time.sleep(0.5)
        assert len(loop.codes) > 20 and set(loop.codes) == {200}, \
            f"requests failed during scale/reload: {sorted(set(loop.codes))}"
        assert len(dep.replicas) == 2
    finally:
        backend.down(dep)
    from course_helpers.supervisor import Supervisor

    assert Supervisor(workspace).status() == []


def test_many_small_survives_a_crash_without_a_restart(workspace, logreg_uri):
    backend = LocalBackend(restart=False)  # no restart policy: only the load balancer helps
    dep = backend.up(DeploymentSpec.many_small(logreg_uri, replicas=2, name="ms"))
    try:
        with Loop(dep.url) as loop:
            time.sleep(0.5)
            backend.kill_replica(dep, 0)
            time.sleep(2)
        after = loop.codes[len(loop.codes) // 2:]
        assert set(after) == {200}, "the survivor should answer everything after the crash"
        assert loop.codes.count(200) >= len(loop.codes) - 2, "a crash costs at most a few requests"
        assert [s["alive"] for s in backend.status(dep)] == [False, True]
    finally:
        backend.down(dep)


def test_single_large_goes_dark_until_restarted(workspace, logreg_uri):
    backend = LocalBackend(restart=False)
    dep = backend.up(DeploymentSpec.single_large(logreg_uri, cpus=2, name="sl"))
    try:
        assert post(dep.url) == 200
        backend.kill_replica(dep, 0)
        time.sleep(0.5)
        assert {post(dep.url) for _ in range(5)} == {502}
    finally:
        backend.down(dep)


def test_the_restart_policy_brings_a_crashed_replica_back(workspace, logreg_uri):
    backend = LocalBackend(restart=True)
    dep = backend.up(DeploymentSpec.single_large(logreg_uri, cpus=1, name="sl"))
    try:
        backend.kill_replica(dep, 0)
        deadline = time.monotonic() + 60
        while post(dep.url) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert post(dep.url) == 200
        assert backend.restarts == {"sl-r0": 1}
    finally:
        backend.down(dep)


def test_down_during_a_restart_leaves_nothing_running(workspace, logreg_uri):
    """down() does not wait for the watchdog's restart to finish: it stops that process too."""
    import psutil

    from course_helpers.supervisor import Supervisor

    backend = LocalBackend(restart=True)
    dep = backend.up(DeploymentSpec.many_small(logreg_uri, replicas=2, name="ms"))
    try:
        old = Supervisor().get("ms-r0").pid
        backend.kill_replica(dep, 0)
        deadline = time.monotonic() + 30
        while backend.restarts.get("ms-r0", 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the watchdog noticed and is starting a new ms-r0
        assert backend.restarts.get("ms-r0") == 1
        rec = Supervisor().get("ms-r0")
        starting = rec.pid if rec and rec.pid != old else None
    finally:
        backend.down(dep)
    assert [r.name for r in Supervisor().records() if r.name.startswith("ms-")] == []
    if starting is not None:
        assert not psutil.pid_exists(starting) or \
            psutil.Process(starting).status() == psutil.STATUS_ZOMBIE


def test_crash_and_recover_waits_for_the_restarted_replica(workspace, logreg_uri):
    from course_helpers.deploy import crash_and_recover

    backend = LocalBackend(restart=True)
    dep = backend.up(DeploymentSpec.many_small(logreg_uri, replicas=2, name="ms"))
    try:
        back = crash_and_recover(backend, dep, index=1, timeout_s=90)
        assert back["answers"] >= 1, "the other replica answered meanwhile"
        assert back["seconds"] > 0
        states = backend.status(dep)
        assert states[1]["restarts"] == 1 and all(s["ready"] for s in states)
    finally:
        backend.down(dep)


def test_demo_smoke_local_writes_results(workspace, tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "course_helpers.cli", "demo", "--profile", "smoke",
         "--backend", "local", "--out", str(out)],
        env=dict(os.environ, MLOPS_HOME=str(workspace)), capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"Deployments will use +the local backend", proc.stdout), proc.stdout[:2000]
    res = json.loads((out / "results.json").read_text())
    assert res["profile"] == "smoke" and res["backend"] == "local"
    for key in ("single_large", "many_small"):
        r = res[key]
        assert {"requests", "failures", "rps", "p50_ms", "p95_ms", "replicas",
                "workers_per_replica", "cpus_total"} <= r.keys()
        assert r["failures"] == 0 and r["requests"] > 0
        assert {"failed_requests", "recovery_s"} <= r["fault_injection"].keys()
    ms, sl = res["many_small"]["fault_injection"], res["single_large"]["fault_injection"]
    assert {"failed_ratio", "dark_s", "recovery_s", "rate_per_user"} <= ms.keys()
    # the goal of the fault round: the survivor carries the load, the single replica goes dark
    assert ms["failed_ratio"] < 0.01 and ms["dark_s"] == 0, ms
    assert sl["dark_s"] >= 1 and sl["failed_ratio"] > ms["failed_ratio"], sl
    for name in ("load.png", "fault.png", "topologies.png", "report.md"):
        assert (out / name).stat().st_size > 0
    from course_helpers.supervisor import Supervisor

    assert Supervisor(workspace).status() == [], "the demo left something running"
