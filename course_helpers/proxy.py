"""jupyter-server-proxy launchers for the course's web UIs: the MLflow UI, the Locust UI, the
Dask dashboard and Prometheus (lesson 08).

``binder/postBuild`` registers them in ``$NB_PYTHON_PREFIX/etc/jupyter/jupyter_server_config.py``::

    from course_helpers.proxy import servers
    c.ServerProxy.servers.update(servers())

Then JupyterLab's launcher shows "MLflow UI" and "Locust UI"; they open at ``<server>/mlflow/``
and ``<server>/locust/`` (on mybinder.org: ``?urlpath=mlflow/``). jupyter-server-proxy starts
each process on its first request, on a free port bound to 127.0.0.1, and stops it with the
notebook server. Commands and environments are callables, so ``$MLOPS_HOME`` is read when the
UI starts, not when the image is built.

The Locust UI runs ``python -m course_helpers.proxy locust PORT``, which writes request rows of
the course dataset and execs Locust's web UI with the course locustfile (POST ``/predict``);
its Host field is filled with the URL of the model server running in the workspace
(``$MLOPS_LOCUST_HOST`` wins; with nothing running, type the service URL). A Locust that a lesson
starts itself on port 8089 stays reachable at ``<server>/proxy/8089/``.

On a laptop, the same two lines in ``~/.jupyter/jupyter_server_config.py`` give the same
launchers (do not run binder/postBuild there: it also hides nbgrader's instructor panels).

Importing this module is cheap (standard library and ``course_helpers.config`` only): the
notebook server imports it while reading its configuration.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .config import Settings, find_binary, settings, workspace_dir

#: Set for every process we start: nothing leaves loopback (MLflow ignores ``DO_NOT_TRACK=1``).
TELEMETRY_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}

#: ``mlflow server`` defaults to 4 workers plus a job runner (~11 processes, ~2.7 GB): over
#: Binder's 2 GB. One worker and no job execution: 2 processes, ~560 MB.
MLFLOW_SERVER_ENV = {**TELEMETRY_ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

#: Seconds jupyter-server-proxy waits for a UI to answer; a cold MLflow start on Binder
#: (imports plus the first SQLite migration) takes far longer than the default 5 s.
MLFLOW_TIMEOUT_S = 120.0
LOCUST_TIMEOUT_S = 60.0

DASK_TIMEOUT_S = 60.0
#: The scheduler the "Dask dashboard" launcher starts listens here (loopback); connect workers
#: with ``mlops-course features cluster --scheduler tcp://127.0.0.1:PORT``.
DASK_PORT_ENV = "MLOPS_DASK_SCHEDULER_PORT"
DASK_DEFAULT_PORT = Settings.dask_scheduler_port

LOCUSTFILE_ENV = "MLOPS_LOCUSTFILE"
LOCUST_HOST_ENV = "MLOPS_LOCUST_HOST"

_FALLBACK_LOCUSTFILE = '''\
"""Written by course_helpers.proxy: a minimal user for the Locust UI launcher.

Type the URL of the service to test (for example http://127.0.0.1:8000) in the Host field.
"""
from locust import FastHttpUser, between, task


class Visitor(FastHttpUser):
    wait_time = between(0.1, 0.5)

    @task
    def index(self):
        self.client.get("/")
'''


def mlflow_command(port: int) -> list[str]:
    """The lessons' ``mlflow server`` (course_helpers.tracking), accepting the proxy's Host."""
    from .tracking import server_command

    cmd = server_command(port, allowed_hosts="*")  # behind the proxy MLflow would answer 403
    return [find_binary(cmd[0]) or cmd[0], *cmd[1:]]


def mlflow_environment() -> dict[str, str]:
    return dict(MLFLOW_SERVER_ENV)


def _fallback_locustfile() -> Path:
    path = workspace_dir("locust") / "fallback_locustfile.py"
    if not path.exists() or path.read_text() != _FALLBACK_LOCUSTFILE:
        path.write_text(_FALLBACK_LOCUSTFILE)
    return path


def locust_setup() -> tuple[Path, dict[str, str]]:
    """The locustfile for the Locust UI launcher and the environment it needs.

    ``$MLOPS_LOCUSTFILE`` wins. Else the course's ``loadtest/locustfile.py`` (POSTs dataset rows
    to ``/predict``), with 500 rows of the course dataset written into the workspace. If the course data
    cannot be prepared, a minimal GET-``/`` user. Runs in the launcher process, not in the
    notebook server (it imports numpy).
    """
    env = settings().locustfile
    if env:
        return Path(env).expanduser().resolve(), {}
    course = Path(__file__).resolve().parent / "loadtest" / "locustfile.py"
    if course.is_file():
        try:
            import json

            from .data import request_rows

            rows = workspace_dir("locust") / "rows.json"
            rows.write_text(json.dumps(request_rows(500)))
            return course, {"MLOPS_LOAD_ROWS": str(rows), "LOCUST_SKIP_MONKEY_PATCH_CHECK": "1"}
        except Exception as exc:  # noqa: BLE001 - the UI should still open
            print(f"course locustfile unavailable ({exc!r}); using a minimal one", file=sys.stderr)
    return _fallback_locustfile(), {}


def locust_argv(port: int | str, locustfile: Path) -> list[str]:
    """Locust's web UI on loopback ``port``; the target host is typed in the UI unless preset."""
    cmd = [
        find_binary("locust") or "locust", "-f", str(locustfile),
        "--web-host", "127.0.0.1", "--web-port", str(port),
    ]
    host = settings().locust_host or running_server_url()
    if host:
        cmd += ["--host", host]
    return cmd


def running_server_url() -> str | None:
    """``http://127.0.0.1:PORT`` of a server the course runs in this workspace, for Locust's
    Host field: a model server (``mlops-course serve``, a lesson's) first, else the latest
    other server with a port; None when nothing runs (then the student types it)."""
    try:
        from .supervisor import Supervisor

        rows = [r for r in Supervisor().status() if r["alive"] and r["port"]]
    except Exception:  # noqa: BLE001 - the UI should still open
        return None
    if not rows:
        return None
    servers = [r for r in rows if "model-server" in r["name"]] or rows
    return f"http://127.0.0.1:{servers[-1]['port']}"


def locust_command(port: int) -> list[str]:
    """What jupyter-server-proxy runs: this module, which prepares the locustfile, then execs Locust."""
    return [sys.executable, "-m", "course_helpers.proxy", "locust", str(port)]


def locust_environment() -> dict[str, str]:
    return dict(TELEMETRY_ENV)


def dask_command(port: int, base_url: str = "/") -> list[str]:
    """A ``dask scheduler`` whose dashboard answers under ``<base_url>dask/`` on ``port``.

    The proxy keeps the full path (``absolute_url``), so the dashboard's own links work behind it.
    """
    sched = str(settings().dask_scheduler_port)
    prefix = base_url.rstrip("/") + "/dask"
    return [find_binary("dask") or "dask", "scheduler", "--host", "127.0.0.1", "--port", sched,
            "--dashboard-address", f"127.0.0.1:{port}", "--dashboard-prefix", prefix, "--no-show"]


def setup_dask() -> dict:
    """The ``dask`` proxy entry: a scheduler and its dashboard (workers join it separately)."""
    return {
        "command": dask_command,
        "timeout": DASK_TIMEOUT_S,
        "absolute_url": True,
        "new_browser_tab": True,
        "launcher_entry": _launcher("Dask dashboard", "dask"),
    }


ICONS = Path(__file__).resolve().parent / "proxy_icons"


def _launcher(title: str, icon: str) -> dict:
    """A launcher card with an icon. JupyterLab 4 draws a launcher item's image
    (``kernelIconUrl``, which jupyter-server-proxy sets from ``icon_path``) only in the
    "Notebook" and "Console" sections: in any other category the card is blank."""
    return {"enabled": True, "title": title, "category": "Notebook",
            "icon_path": str(ICONS / f"{icon}.svg")}


def setup_mlflow() -> dict:
    """The ``mlflow`` proxy entry (also usable as a ``jupyter_serverproxy_servers`` entry point)."""
    return {
        "command": mlflow_command,
        "environment": mlflow_environment,
        "timeout": MLFLOW_TIMEOUT_S,
        "absolute_url": False,
        "new_browser_tab": True,
        "launcher_entry": _launcher("MLflow UI", "mlflow"),
    }


def setup_locust() -> dict:
    """The ``locust`` proxy entry (also usable as a ``jupyter_serverproxy_servers`` entry point)."""
    return {
        "command": locust_command,
        "environment": locust_environment,
        "timeout": LOCUST_TIMEOUT_S,
        "absolute_url": False,
        "new_browser_tab": True,
        "launcher_entry": _launcher("Locust UI", "locust"),
    }


PROMETHEUS_TIMEOUT_S = 60.0


def prometheus_command(port: int, base_url: str = "/") -> list[str]:
    """What the Prometheus launcher runs: this module, which writes the workspace's config
    (targets, SLO rules) and execs Prometheus under ``<base_url>prometheus/``."""
    return [sys.executable, "-m", "course_helpers.proxy", "prometheus", str(port), base_url]


def setup_prometheus() -> dict:
    """The ``prometheus`` proxy entry (lesson 08): its own Prometheus on the workspace's targets
    and rules; ``?urlpath=prometheus/`` on Binder. The lessons' own Prometheus (``mlops-course
    monitor up``) opens at ``<server>/proxy/<its port>/``."""
    return {
        "command": prometheus_command,
        "timeout": PROMETHEUS_TIMEOUT_S,
        "absolute_url": True,
        "new_browser_tab": True,
        "launcher_entry": _launcher("Prometheus", "prometheus"),
    }


def servers() -> dict[str, dict]:
    """Everything for ``c.ServerProxy.servers``: ``{"mlflow": ..., "locust": ..., "dask": ...,
    "prometheus": ...}``."""
    return {"mlflow": setup_mlflow(), "locust": setup_locust(), "dask": setup_dask(),
            "prometheus": setup_prometheus()}


def main(argv: list[str] | None = None) -> int:
    """``python -m course_helpers.proxy locust PORT`` (the Locust UI launcher's process) or
    ``... prometheus PORT BASE_URL`` (the Prometheus launcher's)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 3 and args[0] == "prometheus":
        from .monitoring.prometheus import launcher_command

        cmd = launcher_command(int(args[1]), args[2])
        os.environ.setdefault("GOGC", "50")
        os.execvp(cmd[0], cmd)
    if len(args) != 2 or args[0] != "locust":
        print("usage: python -m course_helpers.proxy locust PORT | prometheus PORT BASE_URL",
              file=sys.stderr)
        return 2
    locustfile, extra = locust_setup()
    cmd = locust_argv(args[1], locustfile)
    os.environ.update({**TELEMETRY_ENV, **extra})
    os.execvp(cmd[0], cmd)
    return 1  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
