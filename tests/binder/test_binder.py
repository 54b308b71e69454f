"""Binder: a simulated mybinder.org launch, and repo2docker's reading of binder/.

The simulation (tests/binder/binder_sim.py) builds a fresh venv from binder/requirements.txt,
runs binder/postBuild as an unprivileged user, starts ``binder/start jupyter lab`` and checks
what a student gets: JupyterLab, the MLflow and Locust launchers through jupyter-server-proxy
(real servers started on demand), and nbgrader's student panels without the instructor ones.
Timings are printed (run with ``-s``): venv install, postBuild, /lab, first MLflow answer.

Run: ``pytest tests/binder -q -s``. Slow part: the venv (~1 min with a warm network/cache).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.binder.binder_sim import ANSI, launched, log
from tests.helpers import ROOT, need

pytestmark = [pytest.mark.binder, pytest.mark.timeout(900)]

INSTRUCTOR_PLUGINS = {"@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment",
                      "@jupyter/nbgrader:course-list"}
STUDENT_PLUGINS = {"@jupyter/nbgrader:assignment-list", "@jupyter/nbgrader:validate-assignment"}


@pytest.fixture(scope="module")
def binder():
    need(shutil.which("git") is not None, "git")
    with launched(ROOT) as (sim, _):
        yield sim


def test_lab_answers(binder):
    status, body = binder.get("lab")
    assert status == 200
    assert "JupyterLab" in body
    assert binder.timings["lab_200_s"] < 120


def test_start_sets_environment(binder):
    import psutil

    env = psutil.Process(binder.lab.pid).environ()  # start exec'd into jupyter: same pid
    assert env["MLOPS_PROFILE"] == "classroom"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["DO_NOT_TRACK"] == "true"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert "jupyter-lab" in " ".join(psutil.Process(binder.lab.pid).cmdline())


def test_course_package_installed_for_the_user(binder):
    out = binder.run_as_user(
        str(binder.env_dir / "bin" / "python"), "-c",
        "import course_helpers, course_helpers.config as c; "
        "print(course_helpers.__file__); print(c.workspace(create=False))")
    assert out.returncode == 0, out.stderr
    module_file, workspace = out.stdout.split()
    assert Path(module_file).is_relative_to(binder.repo), "editable install from the checkout"
    assert Path(workspace) == binder.repo / ".mlops"
    cli = binder.run_as_user(str(binder.env_dir / "bin" / "mlops-course"), "--help")
    assert cli.returncode == 0, cli.stderr


def test_server_extensions(binder):
    out = binder.run_as_user(str(binder.env_dir / "bin" / "jupyter"), "server", "extension", "list")
    text = ANSI.sub("", out.stdout + out.stderr)
    state = dict(re.findall(r"^\s+(\S+) (enabled|disabled)\s*$", text, re.M))
    assert state.get("jupyter_server_proxy") == "enabled", text
    assert state.get("nbgrader.server_extensions.formgrader") == "disabled", text
    assert state.get("nbgrader.server_extensions.course_list") == "disabled", text
    assert state.get("nbgrader.server_extensions.assignment_list") == "enabled", text
    assert state.get("nbgrader.server_extensions.validate_assignment") == "enabled", text
    # ...and what the running server really loaded
    log_text = binder.log_text()
    assert "jupyter_server_proxy | extension was successfully loaded" in log_text
    assert "nbgrader.server_extensions.assignment_list | extension was successfully loaded" in log_text
    assert "nbgrader.server_extensions.formgrader | extension was successfully" not in log_text


def test_nbgrader_student_panels_only(binder):
    assert binder.get("formgrader")[0] == 404, "formgrader must be off for students"
    assert binder.get("formgraders")[0] == 404, "course list (instructor) must be off"
    config = binder.page_config()
    disabled = set(config.get("disabledExtensions", []))
    assert INSTRUCTOR_PLUGINS <= disabled, disabled
    assert not STUDENT_PLUGINS & disabled, disabled
    locked = config.get("lockedExtensions", [])
    assert INSTRUCTOR_PLUGINS <= set(locked), locked
    # The assignment list works: postBuild released the course's assignments into the exchange.
    status, body = binder.get("courses")
    assert status == 200
    assert json.loads(body) == {"success": True, "value": ["mlops-with-cloud"]}, body


def test_launchers_listed(binder):
    status, body = binder.get("server-proxy/servers-info")
    assert status == 200
    entries = {s["name"]: s["launcher_entry"] for s in json.loads(body)["server_processes"]}
    assert entries["mlflow"]["enabled"] and entries["mlflow"]["title"] == "MLflow UI"
    assert entries["locust"]["enabled"] and entries["locust"]["title"] == "Locust UI"
    assert entries["mlflow"]["path_info"] == "mlflow/"
    for name in ("mlflow", "locust"):  # without an icon JupyterLab draws a blank card
        status, svg = binder.get(f"server-proxy/icon/{name}")
        assert status == 200 and "<svg" in svg, (name, status, svg[:200])


def _asset(html: str, prefix: str) -> str:
    """The first relative script URL of a page (it must load through the proxy too)."""
    srcs = re.findall(r'<script[^>]*\ssrc="([^"]+)"', html)
    assert srcs, html[:500]
    src = srcs[0]
    assert not src.startswith(("/", "http")), f"absolute asset URL breaks under the proxy: {src}"
    return prefix + src.removeprefix("./")


def test_mlflow_launcher(binder):
    status, body, elapsed = binder.poll("mlflow/", lambda s, b: s == 200, timeout=150)
    binder.timings["mlflow_first_200_s"] = elapsed
    log(f"/mlflow/ (MLflow started on demand by the proxy) answered {status} after {elapsed:.1f} s")
    assert status == 200, body[:2000] + binder.log_text()[-3000:]
    assert "<title>MLflow</title>" in body
    assert binder.get(_asset(body, "mlflow/"))[0] == 200
    assert binder.get("mlflow/health") == (200, "OK")
    status, body = binder.get("mlflow/ajax-api/2.0/mlflow/experiments/search?max_results=5")
    assert status == 200, body
    assert json.loads(body)["experiments"][0]["name"] == "Default"
    assert (binder.repo / ".mlops" / "mlflow" / "mlflow.db").is_file()

    procs = [p for p in binder.tagged() if "mlflow" in " ".join(p.cmdline())]
    rss_mb = sum(p.memory_info().rss for p in procs) / 2**20
    log(f"MLflow server: {len(procs)} processes, {rss_mb:.0f} MB resident")
    server = next(p for p in procs if "server" in p.cmdline())
    cmd = server.cmdline()
    assert cmd[cmd.index("--workers") + 1] == "1"
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert server.environ()["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert len(procs) <= 3, [p.cmdline() for p in procs]
    assert server.ppid() == binder.lab.pid, "started by jupyter-server-proxy"


def test_locust_launcher(binder):
    status, body, elapsed = binder.poll("locust/", lambda s, b: s == 200, timeout=90)
    binder.timings["locust_first_200_s"] = elapsed
    log(f"/locust/ (Locust web UI started on demand) answered {status} after {elapsed:.1f} s")
    assert status == 200, body[:2000]
    assert "<title>Locust</title>" in body
    assert '"available_user_classes": []' not in body, "the locustfile defines no user"
    assert binder.get(_asset(body, "locust/"))[0] == 200


def test_nothing_left_running(binder):
    binder.stop()
    assert binder.lab.poll() is not None
    assert binder.tagged() == []


# --------------------------------------------------------------------------- repo2docker

def test_repo2docker_reads_binder_dir():
    """``jupyter-repo2docker --no-build --debug``: the Dockerfile it would build (no engine needed)."""
    r2d = Path(sys.executable).parent / "jupyter-repo2docker"
    need(r2d.exists(), "jupyter-repo2docker (the dev extra)")
    out = subprocess.run(
        [str(r2d), "--no-build", "--debug", "--user-id", "1000", "--user-name", "jovyan", "."],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    # build-script file names are escaped: -2e is ".", -2d is "-", -2f is "/"
    decoded = re.sub(r"-([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), out.stdout)
    assert "Python version unspecified" not in text
    assert "Building conda environment for python=3.11" in text
    assert "environment.py-3.11-linux-64.lock" in decoded
    # repo2docker sorts binder/apt.txt
    assert ("apt-get install --yes --no-install-recommends nginx prometheus "
            "prometheus-alertmanager redis-server") in out.stdout
    install = out.stdout.index('pip install --no-cache-dir -r "binder/requirements.txt"')
    copy_repo = out.stdout.index("COPY --chown=1000:1000 src/ ${REPO_DIR}/")
    post_build = out.stdout.index("RUN ./binder/postBuild")
    assert install < copy_repo < post_build, "postBuild runs after the pins, in a user-owned repo"
    assert 'R2D_ENTRYPOINT="${REPO_DIR}/binder/start"' in out.stdout
    assert "environment.yml" not in out.stdout, "binder/ must win over the root environment.yml"
