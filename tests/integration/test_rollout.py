"""Lesson 09 for real: nginx split/mirror/reload, and canaries under Locust load that roll
back (a seeded-fault challenger registered in MLflow) or promote (a healthy one)."""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.helpers import module_workspace, need

pytestmark = pytest.mark.integration
NAME = "rollout-it"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    need(shutil.which("nginx") is not None or os.path.exists("/usr/sbin/nginx"),
         "nginx (Debian package nginx)")
    yield from module_workspace(tmp_path_factory, "rollout")


@pytest.fixture(scope="module")
def backends(ws):
    """Two tiny HTTP servers (python -m http.server) as upstreams for nginx-only tests."""
    from course_helpers.supervisor import Supervisor, free_port

    sup, addrs = Supervisor(), []
    for n in ("a", "b"):
        port = free_port()
        sup.start(f"web-{n}", [sys.executable, "-m", "http.server", str(port), "--bind",
                               "127.0.0.1", "--directory", str(ws)], port=port)
        addrs.append(f"127.0.0.1:{port}")
    yield addrs
    for n in ("a", "b"):
        sup.stop(f"web-{n}")


def _get(url: str, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers)
    except OSError:
        return -1, {}


def test_split_is_sticky_and_within_tolerance(backends):
    from course_helpers.deploy.nginx import LoadBalancer, Server, Split, Upstream

    ups = [Upstream("va", [Server(backends[0])]), Upstream("vb", [Server(backends[1])])]
    lb = LoadBalancer("split-lb").start(ups, split=Split.of({"va": 20, "vb": 80}))
    try:
        for uid in ("alice", "bob", "carol"):
            seen = {_get(lb.url + "/", {"X-User-ID": uid})[1]["X-Variant"] for _ in range(5)}
            assert len(seen) == 1, f"{uid} saw {seen}"
            # the cookie gives the same user the same variant as the header
            cookie = _get(lb.url + "/", {"Cookie": f"user_id={uid}"})[1]["X-Variant"]
            assert cookie in seen
        n = 2000
        counts = collections.Counter(_get(lb.url + "/", {"X-User-ID": f"user-{i}"})[1]["X-Variant"]
                                     for i in range(n))
        # 20 % of 2000 has a binomial sd of ~18 users: 4 points is more than 4 sd
        assert abs(counts["va"] / n - 0.20) < 0.04, counts
    finally:
        lb.stop()


def test_weight_reloads_under_load_fail_no_request(backends):
    from course_helpers.deploy.nginx import LoadBalancer, Server, Upstream

    def ups(w):
        return [Upstream("app", [Server(backends[0], weight=100 - w),
                                 Server(backends[1], weight=w)])]

    lb = LoadBalancer("reload-lb").start(ups(0))
    codes, stop = [], threading.Event()

    def hammer():
        while not stop.is_set():
            codes.append(_get(lb.url + "/")[0])

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for w in (5, 25, 50, 100, 0, 50):
            lb.update(ups(w))
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=20)
        lb.stop()
    assert len(codes) > 50
    assert collections.Counter(codes) == {200: len(codes)}


def test_mirror_gives_the_shadow_the_same_request_id(ws, backends):
    from course_helpers.deploy.nginx import LoadBalancer, Server, Upstream

    ups = [Upstream("primary", [Server(backends[0])]), Upstream("shadow", [Server(backends[1])])]
    lb = LoadBalancer("mirror-lb").start(ups, mirror="shadow")
    try:
        for _ in range(5):
            code, headers = _get(lb.url + "/?probe=1")
            assert code == 200 and headers["X-Upstream"] == backends[0]
        time.sleep(0.5)
        shadow_log = (ws / "logs" / "web-b.log").read_text()
        assert shadow_log.count("GET /?probe=1") == 5
    finally:
        lb.stop()


SLOW_SERVER = """
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        time.sleep(float(sys.argv[2]))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_relayed_mirror_keeps_clients_off_a_slow_shadow(ws, backends):
    """nginx holds a client's keep-alive connection until the mirror subrequest is done: with
    a shadow 0.3 s slow, each next request on the connection waits for it. Through the relay
    the copy is acknowledged at once, and the shadow still gets every copy."""
    import http.client

    from course_helpers.deploy.nginx import LoadBalancer, Server, Upstream
    from course_helpers.supervisor import Supervisor, free_port

    port = free_port()
    Supervisor().start("slow-shadow", [sys.executable, "-c", SLOW_SERVER, str(port), "0.3"],
                       port=port)
    ups = [Upstream("primary", [Server(backends[0])]),
           Upstream("shadow", [Server(f"127.0.0.1:{port}")])]
    lb = LoadBalancer("relay-lb").start(ups, mirror="shadow", mirror_relay=False)
    took = {}
    try:
        for relay in (False, True):
            lb.update(ups, mirror="shadow", mirror_relay=relay)
            conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
            started = time.monotonic()
            for _ in range(4):  # one keep-alive connection, back to back
                conn.request("GET", "/?relay=1")
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 200
            took[relay] = time.monotonic() - started
            conn.close()
    finally:
        lb.stop()
        Supervisor().stop("slow-shadow")
    assert took[False] > 0.8, took  # three of the four requests waited for the shadow
    assert took[True] < took[False] / 3, took


@pytest.fixture(scope="module")
def prometheus(ws):
    """Lesson 08's Prometheus (1 s scrapes in smoke): the canary reads its metrics there."""
    from course_helpers import monitoring
    from course_helpers.config import find_binary

    need(find_binary("prometheus") is not None, "prometheus (Debian package prometheus)")
    prom = monitoring.start("smoke", rules=False)
    yield prom
    monitoring.stop()


@pytest.fixture(scope="module")
def models(ws):
    from course_helpers.rollout import faults

    champion = faults.ensure_champion(NAME, profile="smoke")
    bad = faults.make_challenger("errors", name=NAME, seed=1, profile="smoke", alias="bad")
    good = faults.make_challenger("none", name=NAME, seed=2, profile="smoke", alias="good")
    return {"champion": champion, "bad": bad, "good": good}


@pytest.fixture(scope="module")
def slow_model(models):
    """A challenger 40 ms slower per prediction (the champion answers in a few ms): a latency
    regression that never errors."""
    from course_helpers.rollout import faults

    return faults.make_challenger("slow", name=NAME, seed=3, profile="smoke", alias="slow",
                                  delay_ms=40)


@pytest.fixture(scope="module")
def pool(ws):
    """The champion's server, shared by the bad and the good canary (as in the notebook)."""
    from course_helpers.rollout.canary import ServerPool

    with ServerPool() as p:
        yield p


def _left_running() -> list[str]:
    """What the rollout left behind: its servers, nginx or Locust (not this module's web-*)."""
    from course_helpers import config
    from course_helpers.supervisor import Supervisor, tagged_processes

    names = [r["name"] for r in Supervisor().status() if r["alive"] and r["name"].startswith("rollout")]
    # this workspace's Locust only: other rollouts may run on the machine
    names += [f"locust {p.pid}" for p in tagged_processes(config.workspace(), "locust-rollout")]
    return names


def _canary(alias: str, **kw) -> dict:
    from course_helpers.rollout.canary import run_canary
    from course_helpers.rollout.decision import Thresholds

    return run_canary(f"models:/{NAME}@champion", f"models:/{NAME}@{alias}",
                      steps=[5, 25, 50, 100], interval_s=3, metrics=kw.pop("metrics", "scrape"),
                      thresholds=Thresholds(min_requests=10), users=4, rate_per_user=15,
                      profile="smoke", **kw)


def test_bad_canary_is_rolled_back_before_50_percent(ws, models, pool):
    from course_helpers import tracking
    rep = _canary("bad", servers=pool)
    assert rep["outcome"] == "rolled_back"
    assert max(s["weight"] for s in rep["steps"]) < 50
    last = rep["steps"][-1]
    assert last["verdict"] == "rollback"
    assert any(c["name"] == "error_ratio" and not c["passed"] for c in last["checks"])
    assert rep["rollback_s"] > 0 and rep["failed_requests"] > 0  # the users who saw the 500s
    assert tracking.resolve(NAME, "champion") == models["champion"]  # nothing promoted
    saved = json.loads((ws / "rollout" / "canary" / "rollout.json").read_text())
    assert saved["outcome"] == "rolled_back" and "failed_requests" in saved
    assert (ws / "rollout" / "canary" / "rollout.png").exists()
    assert not _left_running()


def test_slow_canary_is_rolled_back_on_latency_alone(ws, models, slow_model, pool):
    from course_helpers import tracking

    rep = _canary("slow", servers=pool)
    assert rep["outcome"] == "rolled_back", rep["steps"]
    assert max(s["weight"] for s in rep["steps"]) < 50
    checks = {c["name"]: c for c in rep["steps"][-1]["checks"]}
    assert not checks["p95_ratio_vs_stable"]["passed"], checks  # the latency check fired
    assert checks["p95_ratio_vs_stable"]["value"] > checks["p95_ratio_vs_stable"]["threshold"]
    assert checks["error_ratio"]["passed"] and checks["error_ratio"]["value"] == 0
    assert rep["failed_requests"] == 0  # slow, not broken: no user saw an error
    assert tracking.resolve(NAME, "champion") == models["champion"]
    saved = json.loads((ws / "rollout" / "canary" / "rollout.json").read_text())
    assert "p95_ratio_vs_stable" in saved["steps"][-1]["reason"]
    assert not _left_running()
    pool.release(f"models:/{NAME}@slow")  # nothing routes to a rolled-back canary again


def test_good_canary_is_promoted_and_previous_kept(ws, models, prometheus, pool):
    from course_helpers import monitoring, tracking

    rep = _canary("good", metrics="prometheus", servers=pool)
    assert rep["outcome"] == "promoted", rep["steps"]
    assert [s["weight"] for s in rep["steps"] if s["verdict"] in ("continue", "promote")
            and all(c["passed"] for c in s["checks"])] == [5, 25, 50, 100]
    assert tracking.resolve(NAME, "champion") == models["good"]
    assert tracking.resolve(NAME, "previous") == models["champion"]
    assert rep["failed_requests"] == 0  # four weight reloads under load, no failed request
    assert "rollout-canary" not in monitoring.jobs()  # its scrape targets are gone
    tracking.rollback(NAME)  # leave the registry as the other tests expect


def test_shadow_compares_logs_and_measures_the_mirror(ws, models, pool):
    import psutil

    from course_helpers.rollout.shadow import run_shadow

    tracks = pool.tracks({"stable": f"models:/{NAME}@champion", "shadow": f"models:/{NAME}@good"})
    procs = [psutil.Process(tr.handle.pid) for tr in tracks.values()]
    before = [p.cpu_affinity() for p in procs]
    rep = run_shadow(f"models:/{NAME}@champion", f"models:/{NAME}@good", profile="smoke",
                     servers=pool, duration_s=4)
    pooled = rep["pooled"]
    assert pooled["off"]["requests"] > 20 and pooled["mirror"]["requests"] > 20, pooled
    assert pooled["off"]["failures"] == pooled["mirror"]["failures"] == 0
    # every phase fell inside Locust's run: the same paced load in both conditions
    assert 0.8 < pooled["mirror"]["requests"] / pooled["off"]["requests"] < 1.25, pooled
    assert rep["mirror_p95_ratio"] == round(pooled["mirror"]["p95_ms"] / pooled["off"]["p95_ms"], 3)
    cmp = rep["comparison"]
    # the shadow saw the mirrored requests (and only those), joined on nginx's request id
    assert cmp["matched"] >= 0.8 * pooled["mirror"]["requests"], cmp
    assert 0.5 < cmp["agreement"] <= 1
    assert [p.cpu_affinity() for p in procs] == before  # isolation undone for the pool
    assert "p95_ratio_aa" in rep and pooled["off_aa"]["requests"] > 20  # the noise floor
    # nginx timed the same client requests (not the mirror's copies), phase by phase
    lb = rep["lb"]
    for cond in ("off", "mirror", "off_aa"):
        n = pooled[cond]["requests"]
        assert abs(lb[cond]["requests"] - n) <= 0.1 * n + 3, (lb, pooled)
        assert lb[cond]["upstream_p95_ms"] <= lb[cond]["p95_ms"] + 1, lb
    assert rep["lb_mirror_p95_ratio"] == round(lb["mirror"]["p95_ms"] / lb["off"]["p95_ms"], 3)
    assert "lb_p95_ratio_aa" in rep and (ws / "rollout" / "shadow" / "lb-access.log").exists()
    # 2 phases of 2 s for each of off, mirror and off again
    assert json.loads((ws / "rollout" / "shadow" / "shadow.json").read_text())["phases"] == 6
    from course_helpers.supervisor import Supervisor

    assert not [r for r in Supervisor().status() if r["alive"] and r["name"] == "shadow-lb"]


def test_ctrl_c_returns_traffic_and_stops_everything(ws, models, pool):
    """Interrupted as soon as the canary has traffic (weight 5 %, before its first analysis):
    the last config nginx ran routes to the stable server only, and nothing the rollout
    started is left, while the workspace's other servers (the kept pool's) still run."""
    import re

    kept = pool.tracks({"stable": f"models:/{NAME}@champion"})["stable"].handle

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "course_helpers.cli", "rollout", "canary",
                             "--stable", f"models:/{NAME}@champion",
                             "--canary", f"models:/{NAME}@good", "--interval", "30",
                             "--metrics", "scrape", "--profile", "smoke",
                             "--users", "1", "--rate", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    lines = []
    try:
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            lines.append(line)
            if "weight 5%" in line or time.monotonic() > deadline:
                break
        assert any("weight 5%" in l for l in lines), "".join(lines)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = "".join(lines) + rest
    assert proc.returncode == 130, out
    assert not _left_running()
    saved = json.loads((ws / "rollout" / "canary" / "rollout.json").read_text())
    assert saved["outcome"] == "interrupted" and saved["weight_at_exit"] == 0
    stable_at, canary_at = re.search(r"at http://(\S+), canary .* at http://(\S+)", out).groups()
    last_conf = (ws / "nginx" / "rollout-lb" / "nginx.conf").read_text()
    assert f"server {stable_at} " in last_conf and canary_at not in last_conf, last_conf
    from course_helpers.data import request_rows

    assert len(kept.predict(request_rows(1)[0])["predictions"]) == 1  # not stopped by the Ctrl-C
