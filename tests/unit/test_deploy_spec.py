import pytest

from course_helpers.deploy import DeploymentSpec, SpecError
from course_helpers.deploy.nginx import Server, Upstream, render_config

pytestmark = pytest.mark.unit


def test_topologies_have_the_same_totals():
    big = DeploymentSpec.single_large("m", cpus=2)
    small = DeploymentSpec.many_small("m", replicas=2)
    assert (big.replicas, big.workers_per_replica, big.cpus_total) == (1, 2, 2)
    assert (small.replicas, small.workers_per_replica, small.cpus_total) == (2, 1, 2)
    assert big.memory_mb_total == small.memory_mb_total


@pytest.mark.parametrize("kw, words", [
    ({"replicas": 0}, "replicas must be at least 1"),
    ({"replicas": 3, "cpus_per_replica": 1.0}, "this machine gives 2"),
    ({"memory_mb_per_replica": 64}, "too small to load the model"),
    ({"workers_per_replica": 0}, "at least 1 worker"),
    ({"topology": "medium"}, "unknown topology"),
])
def test_invalid_specs_are_refused_with_a_reason(kw, words):
    with pytest.raises(SpecError, match=words):
        DeploymentSpec(model_uri="m", **kw).validate(machine_cpus=2)


def test_cpu_sets_do_not_overlap():
    assert DeploymentSpec.many_small("m", replicas=2).cpu_sets(2) == [[0], [1]]
    assert DeploymentSpec.single_large("m", cpus=2).cpu_sets(2) == [[0, 1]]


def test_cpu_sets_come_from_the_affinity(monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})  # `taskset -c 3`
    half = DeploymentSpec.many_small("m", replicas=2, cpus=1)
    assert half.cpu_sets() == [[3], [3]], "replicas of half a CPU share the one CPU allowed"


def test_on_one_cpu_the_topologies_still_differ():
    from course_helpers.scaling import describe, specs

    one = specs("m", cpus=1)
    big, small = one["single-large"], one["many-small"]
    assert (big.replicas, big.workers_per_replica, big.cpus_total) == (1, 2, 1)
    assert (small.replicas, small.workers_per_replica, small.cpus_per_replica) == (2, 1, 0.5)
    big.validate(machine_cpus=1)
    small.validate(machine_cpus=1)
    assert describe(big) == "1 replica x 2 workers on 1 CPU"
    assert describe(small) == "2 replicas x 1 worker, 0.5 CPU each"
    two = specs("m", cpus=2)
    assert describe(two["single-large"]) == "1 replica x 2 workers on 2 CPUs"
    assert describe(two["many-small"]) == "2 replicas x 1 worker, 1 CPU each"


def test_fault_damage_counts_dark_seconds_and_recovery():
    import pandas as pd

    from course_helpers.scaling import damage

    tl = pd.DataFrame({"t": [100, 101, 102, 104, 105, 106],
                       "ok": [10, 4, 0, 6, 10, 3], "failed": [0, 2, 5, 1, 0, 0]})
    recovery, dark = damage(tl, killed_at=101.5)
    assert recovery == 104 + 1 - 101.5
    assert dark == 2  # 102 (only failures) and 103 (no answer at all); 106 is cut short
    assert damage(tl.assign(ok=1, failed=0), killed_at=101.5) == (0.0, 1)  # 103: silent


def test_nginx_config_has_weights_health_checks_and_retries(tmp_path):
    conf = render_config(tmp_path, 8080, [Upstream("model", [Server("127.0.0.1:1", 9),
                                                            Server("127.0.0.1:2", 1),
                                                            Server("127.0.0.1:3", 0)])])
    assert "server 127.0.0.1:1 weight=9 max_fails=3 fail_timeout=2s" in conf
    assert "keepalive_timeout 4s;" in conf  # shorter than the server's keep-alive (5 s)
    assert "127.0.0.1:3" not in conf, "weight 0 takes a server out of rotation"
    assert "proxy_next_upstream error timeout http_502 http_503" in conf
    assert "listen 127.0.0.1:8080;" in conf and "daemon off;" in conf
    assert str(tmp_path) in conf.split("pid ")[1].splitlines()[0]


def test_nginx_config_refuses_an_empty_upstream(tmp_path):
    from course_helpers.errors import CourseError

    with pytest.raises(CourseError, match="no server with a positive weight"):
        render_config(tmp_path, 8080, [Upstream("model", [Server("127.0.0.1:1", 0)])])


def test_ground_floor_does_not_reach_up_into_deploy():
    """Limits and cgroups live under the supervisor and the server, not in deploy/."""
    from pathlib import Path

    import course_helpers
    from course_helpers.deploy.recipe import _course_imports

    root = Path(course_helpers.__file__).parent
    for module, path in (("course_helpers.supervisor", root / "supervisor.py"),
                         ("course_helpers.serving.server", root / "serving" / "server.py"),
                         ("course_helpers.limits", root / "limits.py")):
        reached = {m for m in _course_imports(path, module) if m.startswith("course_helpers.deploy")}
        assert not reached, f"{module} imports {sorted(reached)}"
