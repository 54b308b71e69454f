"""Fast checks of the Binder files and of the proxy launchers' configuration (no servers)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, need

pytestmark = pytest.mark.unit

BINDER = ROOT / "binder"


def test_runtime_is_python_311():
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"


def test_apt_packages():
    lines = {line.strip() for line in (BINDER / "apt.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    assert {"nginx", "redis-server", "prometheus", "prometheus-alertmanager"} <= lines


@pytest.mark.parametrize("name", ["postBuild", "start"])
def test_scripts_are_executable_bash(name):
    path = BINDER / name
    assert os.access(path, os.X_OK), f"binder/{name} must be executable (git mode 100755)"
    assert path.read_text().startswith("#!/bin/bash\n")
    need(shutil.which("bash") is not None, "bash")
    out = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_postbuild_stops_on_errors():
    assert re.search(r"^set -euo pipefail$", (BINDER / "postBuild").read_text(), re.M)


def test_start_ends_with_exec():
    lines = [line.strip() for line in (BINDER / "start").read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    assert lines[-1] == 'exec "$@"'


def test_start_sets_environment():
    need(shutil.which("bash") is not None, "bash")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    out = subprocess.run([str(BINDER / "start"), "env"], env=env, capture_output=True, text=True,
                         check=True)
    got = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert got["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert got["DO_NOT_TRACK"] == "true"
    assert got["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert got["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert got["MLOPS_PROFILE"] == "classroom"
    out = subprocess.run([str(BINDER / "start"), "env"], env={**env, "MLOPS_PROFILE": "smoke"},
                         capture_output=True, text=True, check=True)
    assert "MLOPS_PROFILE=smoke" in out.stdout.splitlines()


def test_requirements_carry_what_postbuild_needs():
    pins = {re.split(r"==", line)[0].lower() for line in
            (BINDER / "requirements.txt").read_text().splitlines() if "==" in line}
    # setuptools: postBuild installs the package without build isolation (offline, faster)
    assert {"jupyter-server-proxy", "jupyterlab", "nbgrader", "mlflow", "locust",
            "setuptools"} <= pins


def test_postbuild_writes_config_where_jupyter_looks():
    text = (BINDER / "postBuild").read_text()
    assert 'CONF="$PREFIX/etc/jupyter"' in text
    assert "--sys-prefix" in text and "--level=sys_prefix" in text
    for ext in ("nbgrader.server_extensions.formgrader", "nbgrader.server_extensions.course_list",
                "@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment"):
        assert ext in text


# --------------------------------------------------------------------------- course_helpers.proxy

@pytest.fixture
def mlops_home(tmp_path, monkeypatch):
    home = tmp_path / "mlops-home"
    monkeypatch.setenv("MLOPS_HOME", str(home))
    for var in ("MLOPS_LOCUSTFILE", "MLOPS_LOCUST_HOST"):
        monkeypatch.delenv(var, raising=False)
    return home


def _opt(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_mlflow_command_is_lean_and_local(mlops_home):
    from course_helpers import proxy

    cmd = proxy.mlflow_command(4321)
    assert cmd[1] == "server"
    assert _opt(cmd, "--host") == "127.0.0.1"
    assert _opt(cmd, "--port") == "4321"
    assert _opt(cmd, "--workers") == "1"
    assert _opt(cmd, "--allowed-hosts") == "*"
    assert _opt(cmd, "--backend-store-uri") == f"sqlite:///{mlops_home.resolve()}/mlflow/mlflow.db"
    assert _opt(cmd, "--default-artifact-root") == str(mlops_home.resolve() / "mlflow" / "artifacts")
    assert "--no-serve-artifacts" in cmd
    env = proxy.mlflow_environment()
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["DO_NOT_TRACK"] == "true"


def test_locust_launcher_runs_the_course_locustfile(mlops_home, monkeypatch, capsys):
    from course_helpers import proxy

    assert proxy.locust_command(8089)[1:] == ["-m", "course_helpers.proxy", "locust", "8089"]
    locustfile, env = proxy.locust_setup()
    rows = json.loads(open(env["MLOPS_LOAD_ROWS"]).read())
    assert locustfile.name == "locustfile.py" and locustfile.parent.name == "loadtest"
    assert len(rows) == 500 and isinstance(rows[0], dict)
    cmd = proxy.locust_argv(8089, locustfile)
    assert _opt(cmd, "-f") == str(locustfile)
    assert _opt(cmd, "--web-host") == "127.0.0.1"
    assert _opt(cmd, "--web-port") == "8089"
    assert "--host" not in cmd
    monkeypatch.setenv("MLOPS_LOCUST_HOST", "http://127.0.0.1:8000")
    assert _opt(proxy.locust_argv(8089, locustfile), "--host") == "http://127.0.0.1:8000"
    monkeypatch.setenv("MLOPS_LOCUSTFILE", "/somewhere/lf.py")
    assert proxy.locust_setup() == (Path("/somewhere/lf.py"), {})
    assert proxy.main(["bogus"]) == 2
    assert "usage" in capsys.readouterr().err


def test_fallback_locustfile_compiles(mlops_home):
    from course_helpers import proxy

    path = proxy._fallback_locustfile()
    compile(path.read_text(), str(path), "exec")
    assert path.is_relative_to(mlops_home.resolve())


def test_servers_are_valid_server_proxy_config(mlops_home):
    jsp = pytest.importorskip("jupyter_server_proxy.config")
    from course_helpers import proxy

    config = jsp.ServerProxy(servers=proxy.servers())
    assert set(config.servers) == {"mlflow", "locust", "dask", "prometheus"}
    prom = config.servers["prometheus"]
    assert prom.launcher_entry.title == "Prometheus"
    assert prom.launcher_entry.path_info == "prometheus/"
    assert prom.absolute_url is True
    mlflow = config.servers["mlflow"]
    assert mlflow.launcher_entry.title == "MLflow UI"
    assert mlflow.launcher_entry.path_info == "mlflow/"
    assert mlflow.timeout >= 60
    assert mlflow.absolute_url is False
    assert config.servers["locust"].launcher_entry.title == "Locust UI"


def test_proxy_import_is_light():
    code = ("import sys, course_helpers.proxy; "
            "heavy = {'mlflow', 'locust', 'pandas', 'sklearn', 'gevent'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_prometheus_launcher_serves_under_its_path(mlops_home):
    from course_helpers import proxy
    from course_helpers.monitoring.prometheus import launcher_command

    assert proxy.prometheus_command(9091, "/user/x/")[1:] == [
        "-m", "course_helpers.proxy", "prometheus", "9091", "/user/x/"]
    if not shutil.which("prometheus"):
        pytest.skip("needs Debian's prometheus")
    cmd = launcher_command(9091, "/user/x/")
    assert "--web.external-url=http://127.0.0.1:9091/user/x/prometheus/" in cmd
    assert "--web.listen-address=127.0.0.1:9091" in cmd
    assert any(c.startswith("--storage.tsdb.path=") and c.endswith("prometheus-ui-data")
               for c in cmd)
