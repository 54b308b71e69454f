"""Every laptop: with the Linux-only calls made unavailable (no ``os.sched_getaffinity``, no
``taskset``, no cgroup file system, no ``fcntl``, no ``prctl``), the doctor, the profiles,
deployment specs and the local backend's start/stop still work, unpinned and unlimited."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit

STUB_SERVER = textwrap.dedent("""
    import http.server, os
    host, port = os.environ["MLOPS_REUSEPORT_BIND"].rsplit(":", 1)
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
        def log_message(self, *a):
            pass
    http.server.HTTPServer((host, int(port)), H).serve_forever()
""")


@pytest.fixture
def not_linux(monkeypatch, tmp_path):
    """This process as macOS (or any non-Linux laptop) looks to the course's code. Libraries
    that read ``sys.platform`` at import (psutil...) are imported first, as the real ones."""
    import psutil  # noqa: F401

    from course_helpers import config, containers, doctor, limits, supervisor  # noqa: F401
    from course_helpers.deploy import local, spec  # noqa: F401
    from course_helpers.serving import app, lifecycle, server  # noqa: F401

    monkeypatch.setattr(sys, "platform", "darwin")
    for name in ("sched_getaffinity", "sched_setaffinity"):
        if hasattr(os, name):
            monkeypatch.delattr(os, name)
    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: None if cmd == "taskset"
                        else which(cmd, *a, **k))
    monkeypatch.setattr(limits, "V1", tmp_path / "no-cgroup-v1")
    monkeypatch.setattr(limits, "V2", tmp_path / "no-cgroup-v2")
    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` raises ImportError
    yield


def test_limits_fall_back(not_linux, tmp_path):
    from course_helpers import limits

    assert limits.usable_cpus() == list(range(os.cpu_count() or 1))
    assert limits.cpu_prefix([0, 1]) == []
    assert limits.memory_prefix("replica", 512) is None
    assert limits.memory_limit_of("replica") is None
    assert limits.supported() is False
    limits.remove("replica")
    limits.remove_empty()
    with open(tmp_path / "lock", "w") as fh, limits.file_lock(fh) as locked:
        assert locked is False


def test_limits_on_linux_still_lock_and_pin(tmp_path):
    from course_helpers import limits

    if not sys.platform.startswith("linux"):
        pytest.skip("Linux behaviour")
    with open(tmp_path / "lock", "w") as fh, limits.file_lock(fh) as locked:
        assert locked is True
    if shutil.which("taskset"):
        assert limits.cpu_prefix([0])[1:] == ["-c", "0"]
    assert set(limits.usable_cpus()) == os.sched_getaffinity(0)


def test_doctor_and_profiles(not_linux, workspace):
    from course_helpers import config, doctor

    rep = doctor.report("smoke")
    assert rep["cpus"] > 0 and rep["memory_gb"] > 0 and rep["profile"] == "smoke"
    assert "CPUs" in doctor.render(rep)
    assert config.cpu_limit() > 0
    for name in ("smoke", "classroom", "full"):
        assert config.get_profile(name).name == name


def test_deployment_specs(not_linux):
    from course_helpers.deploy import DeploymentSpec

    n = os.cpu_count() or 1
    spec = DeploymentSpec.many_small("models:/m@champion", replicas=3, memory_mb=1536)
    sets = spec.cpu_sets()
    assert len(sets) == 3 and all(0 <= c < n for s in sets for c in s)
    big = DeploymentSpec.single_large("models:/m@champion", cpus=2)
    assert len(big.cpu_sets()[0]) == 2 or n == 1


def test_no_prctl_off_linux(not_linux):
    from course_helpers.serving import lifecycle

    assert lifecycle.set_parent_death_signal() is False  # no prctl: the watcher thread remains


def test_local_backend_starts_and_stops(not_linux, workspace, monkeypatch):
    """Real supervised processes, unpinned and without a cgroup; the server command and
    nginx are stand-ins (what is tested is the backend's own start/stop logic)."""
    from course_helpers.deploy import DeploymentSpec, local
    from course_helpers.serving import server
    from course_helpers.supervisor import Supervisor

    started: list[list[str]] = []
    monkeypatch.setattr(server, "gunicorn_command",
                        lambda *a, **k: [sys.executable, "-c", STUB_SERVER])
    real_start = Supervisor.start

    def start(self, name, cmd, **kw):
        started.append([str(c) for c in cmd])
        return real_start(self, name, cmd, **kw)

    monkeypatch.setattr(Supervisor, "start", start)

    class FakeLB:
        def __init__(self, name, *a, **k):
            self.url = "http://127.0.0.1:9"

        def start(self, upstreams, *a, **k):
            return self

        def stop(self):
            pass

    monkeypatch.setattr(local, "LoadBalancer", FakeLB)
    spec = DeploymentSpec.many_small("models:/m@champion", replicas=2, memory_mb=1024,
                                     name="portable")
    backend = local.LocalBackend(restart=False)
    dep = backend.up(spec)
    try:
        assert len(dep.replicas) == 2 and len(started) == 2
        for cmd in started:
            assert "taskset" not in " ".join(cmd) and "cgroup" not in " ".join(cmd), cmd
            assert cmd[0] == sys.executable
        assert all(Supervisor().get(r.name).is_alive() for r in dep.replicas)
    finally:
        backend.down(dep)
    assert all(Supervisor().get(r.name) is None or not Supervisor().get(r.name).is_alive()
               for r in dep.replicas)
