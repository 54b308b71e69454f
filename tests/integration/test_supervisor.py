"""The supervisor against real processes: readiness, errors, and cleanup after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from course_helpers.errors import BinaryNotFoundError, PortInUseError, ReadinessTimeoutError
from course_helpers.supervisor import free_port, port_in_use
from tests.helpers import gone

pytestmark = pytest.mark.integration

HTTP = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1"]


def test_start_waits_for_port_then_stop(supervisor):
    port = free_port()
    rec = supervisor.start("web", HTTP + [str(port)], port=port, timeout=20)
    assert port_in_use(port)
    assert psutil.Process(rec.pid).is_running()
    assert [r["name"] for r in supervisor.status()] == ["web"]
    assert supervisor.stop("web")
    assert gone(rec.pid)
    assert supervisor.status() == []


def test_ready_by_health_url(supervisor):
    port = free_port()
    rec = supervisor.start("web", HTTP + [str(port)], url=f"http://127.0.0.1:{port}/", timeout=20)
    assert rec.url.endswith(f"{port}/")


def test_port_in_use_is_one_clear_sentence(supervisor):
    port = free_port()
    supervisor.start("first", HTTP + [str(port)], port=port)
    with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is already in use"):
        supervisor.start("second", HTTP + [str(port)], port=port)


def test_missing_binary_names_the_debian_package(supervisor, monkeypatch):
    monkeypatch.setattr("course_helpers.config.find_binary", lambda name: None)
    with pytest.raises(BinaryNotFoundError, match="Debian package `nginx`"):
        supervisor.start("lb", ["nginx", "-g", "daemon off;"], port=free_port())


def test_readiness_timeout_shows_last_log_lines_and_stops(supervisor):
    code = "import time; print('warming up the model', flush=True); time.sleep(60)"
    with pytest.raises(ReadinessTimeoutError) as err:
        supervisor.start("slow", [sys.executable, "-c", code], port=free_port(), timeout=1.5)
    assert "not ready" in str(err.value) and "warming up the model" in str(err.value)
    assert supervisor.status() == []
    assert not any("warming up" in " ".join(p.info["cmdline"] or [])
                   for p in psutil.process_iter(["cmdline"]))


def test_early_exit_reports_exit_code_and_log(supervisor):
    code = "import sys; print('bad config: no model', flush=True); sys.exit(3)"
    with pytest.raises(ReadinessTimeoutError, match=r"exited \(code 3\)[\s\S]*bad config"):
        supervisor.start("crash", [sys.executable, "-c", code], port=free_port(), timeout=10)


def test_stop_takes_the_whole_process_group(supervisor):
    port = free_port()
    script = textwrap.dedent(f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        subprocess.run([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port}"])
    """)
    rec = supervisor.start("tree", [sys.executable, "-c", script], port=port)
    family = [rec.pid] + [c.pid for c in psutil.Process(rec.pid).children(recursive=True)]
    assert len(family) >= 3
    supervisor.stop("tree")
    assert all(gone(pid) for pid in family)


def test_tagged_processes_find_a_server_and_its_children_by_name(supervisor):
    from course_helpers.supervisor import tagged_processes

    port = free_port()
    script = textwrap.dedent(f"""
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        subprocess.run([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port}"])
    """)
    rec = supervisor.start("tagged-tree", [sys.executable, "-c", script], port=port)
    family = {rec.pid} | {c.pid for c in psutil.Process(rec.pid).children(recursive=True)}
    assert {p.pid for p in tagged_processes(supervisor.workspace, "tagged")} == family
    assert tagged_processes(supervisor.workspace, "other") == []
    supervisor.stop("tagged-tree")
    assert all(gone(pid) for pid in family)


def test_cleanup_after_the_owner_was_sigkilled(workspace):
    """A Python process starts a server and a grandchild, then dies by SIGKILL."""
    port = free_port()
    owner = textwrap.dedent(f"""
        import json, sys, psutil
        from course_helpers.supervisor import Supervisor
        rec = Supervisor().start("orphan", {HTTP + [str(port)]!r}, port={port})
        print(json.dumps({{"pid": rec.pid}}), flush=True)
        import time; time.sleep(300)
    """)
    env = dict(os.environ, MLOPS_HOME=str(workspace))
    proc = subprocess.Popen([sys.executable, "-c", owner], stdout=subprocess.PIPE, env=env, text=True)
    try:
        pid = json.loads(proc.stdout.readline())["pid"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert psutil.pid_exists(pid) and port_in_use(port), "server should outlive its owner"
    out = subprocess.run([sys.executable, "-m", "course_helpers.cli", "cleanup", "--no-containers"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "stopped process orphan" in out.stdout
    assert gone(pid) and not port_in_use(port)


def test_cleanup_finds_strays_by_their_tag(workspace):
    """A process that left its group (daemonised) is still found through its environment tag."""
    port = free_port()
    script = textwrap.dedent(f"""
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
        subprocess.run([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port}"])
    """)
    env = dict(os.environ, MLOPS_HOME=str(workspace))
    out = subprocess.run(
        [sys.executable, "-c",
         f"from course_helpers.supervisor import Supervisor; "
         f"import sys; r = Supervisor().start('d', [sys.executable, '-c', {script!r}], port={port}, "
         f"stop_on_exit=False); print(r.pid)"],
        env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    leader = psutil.Process(int(out.stdout.strip()))
    stray = [c for c in leader.children(recursive=True) if "sleep(300)" in " ".join(c.cmdline())]
    assert stray and os.getpgid(stray[0].pid) != os.getpgid(leader.pid)
    subprocess.run([sys.executable, "-m", "course_helpers.cli", "cleanup", "--no-containers"],
                   env=env, check=True, capture_output=True, timeout=60)
    assert gone(leader.pid) and gone(stray[0].pid)


def test_exit_of_the_owner_stops_what_it_started(workspace):
    port = free_port()
    env = dict(os.environ, MLOPS_HOME=str(workspace))
    out = subprocess.run(
        [sys.executable, "-c",
         f"from course_helpers.supervisor import Supervisor; "
         f"r = Supervisor().start('w', {HTTP + [str(port)]!r}, port={port}); print(r.pid)"],
        env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert gone(int(out.stdout.strip())) and not port_in_use(port)


def test_cli_cleanup_with_nothing_running(workspace):
    env = dict(os.environ, MLOPS_HOME=str(workspace))
    out = subprocess.run([sys.executable, "-m", "course_helpers.cli", "cleanup", "--no-containers"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "nothing was running" in out.stdout
