"""Lesson 09's own logic: A/B statistics, the canary step decision, steps, nginx routing."""

from __future__ import annotations

import math
import time

import pytest

from course_helpers.errors import CourseError
from course_helpers.rollout import decision as d
from course_helpers.rollout import stats

pytestmark = pytest.mark.unit


def test_sample_size_reproduces_14745_per_arm():
    assert stats.sample_size(0.10, 0.01, alpha=0.05, power=0.8) == 14_745


def test_sample_size_bad_input_is_one_sentence():
    with pytest.raises(CourseError, match="strictly between 0 and 1"):
        stats.sample_size(1.2, 0.01)
    with pytest.raises(CourseError, match="must not be 0"):
        stats.sample_size(0.1, 0.0)


def test_srm_catches_a_broken_split_and_passes_a_fair_one():
    assert stats.srm_check(10_000, 10_050)["ok"]
    bad = stats.srm_check(10_000, 9_500)
    assert not bad["ok"] and bad["p_value"] < stats.SRM_ALPHA


def test_decide_ab_checks_srm_first():
    # B looks far better, but the split is broken: do not read the lift
    out = stats.decide_ab(1000, 10_000, 1300, 9_000)
    assert out["decision"] == "invalid_srm" and out["test"] is None
    assert stats.decide_ab(1000, 10_000, 1200, 10_000)["decision"] == "ship_b"
    assert stats.decide_ab(1200, 10_000, 1000, 10_000)["decision"] == "keep_a"
    assert stats.decide_ab(1000, 10_000, 1010, 10_000)["decision"] == "no_difference"


def test_ztest_ci_contains_lift_and_matches_direction():
    t = stats.ztest(1000, 10_000, 1100, 10_000)
    assert t["ci_low"] < t["lift"] < t["ci_high"]
    assert t["ci_low"] > 0 and t["p_value"] < 0.05
    assert math.isclose(t["relative_lift"], 0.1)


def test_assignment_is_sticky_and_balanced():
    import numpy as np

    ids = np.arange(20_000)
    a1, a2 = stats.assign(ids), stats.assign(ids)
    assert (a1 == a2).all()
    assert abs(a1.mean() - 0.5) < 0.02


def test_simulated_broken_split_fails_srm():
    pop = stats.simulate_population(20_000, drop_b=0.05, seed=3)
    assert stats.decide_ab(*pop.counts())["decision"] == "invalid_srm"


def test_peeking_inflates_false_positives_and_msprt_does_not():
    r = stats.peeking_simulation(n_sims=2_000, looks=50, batch=300)
    assert r["fpr_naive"] > 0.2
    assert abs(r["fpr_fixed"] - 0.05) < 0.02
    assert r["fpr_sequential"] <= 0.05


def _m(requests, errors=0, p95=20.0):
    return d.TrackMetrics(requests=requests, errors=errors, p95_ms=p95)


def test_decision_waits_with_too_few_requests_even_at_100():
    out = d.decide_step(_m(10), _m(1000), final=True)
    assert out.verdict == "wait" and out.failed_checks == 0


def test_decision_continue_then_promote():
    assert d.decide_step(_m(200), _m(800), final=False).verdict == "continue"
    assert d.decide_step(_m(200), None, final=True).verdict == "promote"


def test_latency_regression_with_healthy_errors_rolls_back():
    out = d.decide_step(_m(200, 0, p95=100.0), _m(800, 0, p95=20.0), final=False)
    assert out.verdict == "rollback"
    failed = {c["name"] for c in out.checks if not c["passed"]}
    assert failed == {"p95_ratio_vs_stable"}
    # twice as slow but only 6 ms: coarse buckets and few requests, not a regression
    assert d.decide_step(_m(200, 0, p95=12.0), _m(800, 0, p95=6.0), final=False).verdict == "continue"


def test_errors_roll_back_after_max_failed_checks():
    first = d.decide_step(_m(200, 20), _m(800), final=False, max_failed_checks=2)
    assert first.verdict == "continue" and first.failed_checks == 1
    second = d.decide_step(_m(200, 20), _m(800), final=False, failed_checks=1,
                           max_failed_checks=2)
    assert second.verdict == "rollback"
    check = next(c for c in second.checks if c["name"] == "error_ratio")
    assert check["value"] == 0.1 and check["threshold"] == 0.01


@pytest.mark.parametrize("text,msg", [("5,50,25,100", "increasing"), ("5,25,50", "end at 100"),
                                      ("0,100", "between 1 and 100"), ("a,b", "integer")])
def test_bad_steps_are_one_sentence(text, msg):
    with pytest.raises(ValueError, match=msg):
        d.parse_steps(text)
    assert d.parse_steps("5,25,50,100") == [5, 25, 50, 100]


def test_nginx_config_split_and_mirror(tmp_path):
    from course_helpers.deploy.nginx import Server, Split, Upstream, render_config

    ups = [Upstream("stable", [Server("127.0.0.1:1", weight=95), Server("127.0.0.1:2", weight=5)]),
           Upstream("shadow", [Server("127.0.0.1:3")])]
    conf = render_config(tmp_path, 8080, ups, split=Split.of({"stable": 80, "shadow": 20}),
                         mirror="shadow")
    assert "split_clients" in conf and "80% stable;" in conf and "* shadow;" in conf
    assert "mirror /_mirror;" in conf and "proxy_pass http://shadow$request_uri;" in conf
    assert "weight=95" in conf and "weight=5" in conf
    plain = render_config(tmp_path, 8080, ups[:1])
    assert "split_clients" not in plain and "mirror" not in plain
    with pytest.raises(CourseError, match="sum to 100"):
        render_config(tmp_path, 8080, ups, split=Split.of({"stable": 80, "shadow": 30}))
    with pytest.raises(CourseError, match="mirror upstream"):
        render_config(tmp_path, 8080, ups, mirror="nope")


def test_canary_without_prometheus_says_to_start_it(tmp_path, monkeypatch):
    from course_helpers.rollout.canary import prometheus_source

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    with pytest.raises(CourseError, match="mlops-course monitor up"):
        prometheus_source()


def test_histogram_quantile_matches_prometheus_interpolation():
    from course_helpers.rollout.metrics import histogram_quantile

    buckets = [(0.01, 50.0), (0.02, 90.0), (0.05, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.02 + 0.03 * 0.5)
    assert math.isnan(histogram_quantile(0.95, [(float("inf"), 0.0)]))


def test_rollout_ab_cli_writes_ab_json(tmp_path, monkeypatch, capsys):
    import json

    from course_helpers.cli import main

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    assert main(["rollout", "ab", "--profile", "smoke", "--out", str(tmp_path / "ab")]) == 0
    rep = json.loads((tmp_path / "ab" / "ab.json").read_text())
    assert rep["sample_size_per_arm"] == 14_745
    assert rep["broken_split"]["decision"] == "invalid_srm"
    assert rep["experiment"]["srm"]["ok"]
    assert rep["peeking"]["fpr_naive"] > 0.2 and rep["peeking"]["fpr_sequential"] <= 0.05
    assert "users per arm" in capsys.readouterr().out


def test_canary_cli_bad_steps_is_one_sentence_before_anything(tmp_path, monkeypatch, capsys):
    from course_helpers.cli import main

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    code = main(["rollout", "canary", "--stable", "models:/m@champion", "--canary",
                 "models:/m@challenger", "--steps", "5,25,50"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "end at 100" in err
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").glob("*.json"))


def test_faulty_model_fails_the_same_inputs_every_time():
    import numpy as np
    from sklearn.dummy import DummyClassifier

    from course_helpers.rollout.faults import FaultyModel, SeededFault

    X = np.random.default_rng(0).normal(size=(400, 3))
    base = DummyClassifier().fit(X, X[:, 0] > 0)
    m = FaultyModel(base, "errors", error_rate=0.2).fit(X)
    bad = m._failing(X)
    assert 0.12 < bad.mean() < 0.28 and (m._failing(X) == bad).all()
    with pytest.raises(SeededFault):
        m.predict_proba(X[bad][:1])
    assert m.predict_proba(X[~bad][:5]).shape == (5, 2)


def test_server_pool_starts_each_version_once_and_stops_them(monkeypatch):
    """The pool keys servers by resolved version: an alias that moved to a version already
    served reuses its server; close() stops each once."""
    from course_helpers.rollout import canary

    registry = {"champion": "1", "bad": "2", "good": "3"}
    started, stopped, warmed = [], [], []

    class Handle:
        def __init__(self, name):
            self.name, self.url = name, f"http://127.0.0.1:{9000 + len(started)}"

        def stop(self):
            stopped.append(self.name)

        def predict(self, row):
            warmed.append(self.name)

    def fake_start(uris, prefix, names, backend="local"):
        names.extend(f"{prefix}-{t}" for t in uris)
        started.extend(uris.values())
        return {t: canary.Track(t, u, Handle(f"{prefix}-{t}")) for t, u in uris.items()}

    monkeypatch.setattr(canary, "start_tracks", fake_start)
    monkeypatch.setattr(canary, "_resolve",
                        lambda uri, what: ("m", registry[uri.rpartition("@")[2]]))
    with canary.ServerPool() as pool:
        a = pool.tracks({"stable": "models:/m@champion", "canary": "models:/m@bad"})
        b = pool.tracks({"stable": "models:/m@champion", "canary": "models:/m@good"})
        assert a["stable"].handle is b["stable"].handle and b["canary"].track == "canary"
        registry.update(previous="1", champion="3")  # the good canary was promoted
        c = pool.tracks({"stable": "models:/m@previous", "shadow": "models:/m@champion"})
        assert c["stable"].handle is a["stable"].handle
        assert c["shadow"].handle is b["canary"].handle and c["shadow"].track == "shadow"
        assert started == ["models:/m@champion", "models:/m@bad", "models:/m@good"]
        assert len(warmed) == 3 * 20  # each new server answered its warm-up rows once
        assert pool.release("models:/m@bad") and not pool.release("models:/m@bad")
        assert stopped == [a["canary"].handle.name]
    assert sorted(stopped) == sorted(h.name for h in (a["stable"].handle, a["canary"].handle,
                                                      b["canary"].handle))
    assert pool.handles == {}


def test_isolate_shadow_nices_pins_and_restores():
    """Real processes: a 'shadow' with a child (as gunicorn's master and worker) and a
    'primary'; the shadow is niced, each is pinned to its own CPU, restore undoes both."""
    import os
    import subprocess
    import sys

    import psutil

    from course_helpers.rollout.shadow import isolate_shadow

    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', " \
           "'import time; time.sleep(30)']); time.sleep(30)"
    prim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    shad = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 10
        while not psutil.Process(shad.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = [psutil.Process(shad.pid)] + psutil.Process(shad.pid).children()
        assert len(tree) == 2
        before = [(p.nice(), p.cpu_affinity()) for p in tree]
        iso = isolate_shadow(prim.pid, shad.pid, niceness=7)
        assert all(p.nice() >= 7 for p in tree)
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            assert psutil.Process(prim.pid).cpu_affinity() == [cpus[0]] == iso.primary_cpus
            assert all(p.cpu_affinity() == [cpus[1]] for p in tree)
        else:
            assert iso.primary_cpus is None and iso.shadow_cpus is None
        iso.restore()
        assert [p.cpu_affinity() for p in tree] == [b[1] for b in before]
        if os.geteuid() == 0:  # lowering a niceness again needs root
            assert [p.nice() for p in tree] == [b[0] for b in before]
    finally:
        for p in (prim, shad):
            for c in psutil.Process(p.pid).children(recursive=True):
                c.kill()
            p.kill()
            p.wait()


def test_canary_refuses_an_unknown_backend_before_deploying():
    from course_helpers.errors import CourseError
    from course_helpers.rollout.canary import run_canary

    with pytest.raises(CourseError, match="--backend must be one of local, docker"):
        run_canary("models:/m@champion", "models:/m@challenger", backend="k8s")


def test_mirror_relay_acknowledges_copies_at_once(tmp_path):
    """The relay answers the mirror subrequest itself and mirrors the copy on to the shadow,
    so the client's keep-alive connection never waits for the shadow; without it, nginx's
    plain mirror goes to the shadow directly."""
    from course_helpers.deploy.nginx import Server, Upstream, render_config

    ups = [Upstream("stable", [Server("127.0.0.1:1")]), Upstream("shadow", [Server("127.0.0.1:2")])]
    relayed = render_config(tmp_path, 8080, ups, mirror="shadow", relay_port=8081)
    direct = render_config(tmp_path, 8080, ups, mirror="shadow")
    assert "proxy_pass http://127.0.0.1:8081$request_uri;" in relayed
    assert "listen 127.0.0.1:8081;" in relayed and "return 204;" in relayed
    assert relayed.count("proxy_pass http://shadow$request_uri;") == 1
    assert "8081" not in direct and direct.count("proxy_pass http://shadow$request_uri;") == 1


def test_lb_access_log_only_for_client_requests(tmp_path):
    """The timing log is declared once and written by the client-facing location only: the
    mirror's copies through the relay are not client requests."""
    from course_helpers.deploy.nginx import TIMING_LOG_FORMAT, Server, Upstream, render_config

    ups = [Upstream("stable", [Server("127.0.0.1:1")]), Upstream("shadow", [Server("127.0.0.1:2")])]
    conf = render_config(tmp_path, 8080, ups, mirror="shadow", relay_port=8081,
                         access_log=tmp_path / "lb.log")
    assert f"log_format timing '{TIMING_LOG_FORMAT}';" in conf
    assert conf.count(f"access_log {tmp_path / 'lb.log'} timing;") == 1
    relay = conf[conf.index("listen 127.0.0.1:8081;"):]
    assert "access_log" not in relay
    assert "log_format" not in render_config(tmp_path, 8080, ups)


def test_read_access_log_starts_and_retries(tmp_path):
    """Start = end - request time; nginx's retries add up; no upstream is NaN; junk skipped."""
    from course_helpers.rollout.shadow import read_access_log

    log = tmp_path / "lb.log"
    log.write_text("1700000000.250 0.007 0.005 200 aa\n"
                   "1700000001.000 0.012 0.003, 0.008 200 bb\n"
                   "1700000002.000 0.001 - 502 cc\n"
                   "1700000003.000 0.009 0.002 : 0.004 200 dd\n"
                   "\n")
    rows = read_access_log(log)
    assert rows.shape == (4, 4)
    assert rows[0, 0] == pytest.approx(1700000000.243) and rows[0, 1] == pytest.approx(7)
    assert rows[0, 2] == pytest.approx(5)
    assert rows[1, 2] == pytest.approx(11) and rows[1, 1] == pytest.approx(12)
    assert math.isnan(rows[2, 2]) and rows[2, 3] == 502
    assert rows[3, 2] == pytest.approx(6) and rows[3, 3] == 200


def test_assign_phases_by_start_time():
    """Each start counts for the phase it fell in ([from, to)); gaps (settling after a switch)
    and times outside the run count for none; a condition's phases pool."""
    from course_helpers.rollout.shadow import assign_phases

    phases = [{"condition": "off", "from": 10.3, "to": 11.5},
              {"condition": "mirror", "from": 11.8, "to": 13.0},
              {"condition": "mirror", "from": 13.3, "to": 14.5},
              {"condition": "off", "from": 14.8, "to": 16.0}]
    starts = [10.0, 10.3, 11.49, 11.5, 11.7, 11.8, 12.9, 13.1, 13.3, 15.0, 16.0]
    masks = assign_phases(starts, phases)
    assert set(masks) == {"off", "mirror"}
    assert masks["off"].tolist() == [False, True, True, False, False, False, False, False,
                                     False, True, False]
    assert masks["mirror"].tolist() == [False, False, False, False, False, True, True, False,
                                        True, False, False]
    assert not (masks["off"] & masks["mirror"]).any()
    assert assign_phases([], phases)["off"].shape == (0,)


def test_isolate_shadow_nices_its_own_session_group():
    """With autogroups, a niceness ranks processes only within their session: a shadow in
    its own session gets its group niced too, and back after restore; a shadow in the
    caller's session leaves the caller's group alone."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from course_helpers.rollout.shadow import isolate_shadow

    if not Path("/proc/self/autogroup").exists():
        pytest.skip("no autogroups on this kernel (CONFIG_SCHED_AUTOGROUP)")
    sleep = [sys.executable, "-c", "import time; time.sleep(30)"]
    prim = subprocess.Popen(sleep, start_new_session=True)
    own = subprocess.Popen(sleep, start_new_session=True)
    mine = subprocess.Popen(sleep)
    group = lambda p: Path(f"/proc/{p.pid}/autogroup").read_text().split()  # noqa: E731
    try:
        before = group(own)
        iso = isolate_shadow(prim.pid, own.pid, niceness=7, pin=False, autogroup=True)
        assert iso.autogroup and group(own)[2] == str(max(7, int(before[2])))
        iso.restore()
        if os.geteuid() == 0:  # lowering a niceness again needs root
            assert group(own) == before
        caller = Path("/proc/self/autogroup").read_text()
        iso = isolate_shadow(prim.pid, mine.pid, niceness=7, pin=False, autogroup=True)
        assert not iso.autogroup and Path("/proc/self/autogroup").read_text() == caller
        iso.restore()
    finally:
        for p in (prim, own, mine):
            p.kill()
            p.wait()
