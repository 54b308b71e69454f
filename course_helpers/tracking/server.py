"""The MLflow tracking server of the workspace: started lean through the supervisor, its CLI.

``mlflow server`` with its defaults starts 4 workers, a job runner and queue consumers (~11
processes, ~2.7 GB, measured for this course with MLflow 3.17); :func:`start_server` runs it
with one worker and no job execution (2 processes) on the workspace store.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from .. import config
from .store import (TELEMETRY_ENV, TrackingUnavailableError, artifacts_dir, check, local_uri,
                    store_dir, use)

SERVER_NAME = "mlflow"
#: ``mlflow server`` defaults to 4 workers plus a job runner and queue consumers (~11
#: processes, ~2.7 GB): over Binder's 2 GB. One worker and no job execution: 2 processes.
SERVER_ENV = {**TELEMETRY_ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
              "GIT_PYTHON_REFRESH": "quiet"}


# -- the server --------------------------------------------------------------------------
@dataclasses.dataclass
class TrackingServer:
    """A running ``mlflow server``: its URL (tracking URI and web UI), pid and start-up time."""

    name: str
    url: str
    port: int
    pid: int
    ready_s: float
    workspace: Path

    @property
    def ui_url(self) -> str:
        """Where a browser finds the UI: through jupyter-server-proxy on Binder, else direct."""
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
        if prefix and config.is_binder():
            return f"{prefix.rstrip('/')}/proxy/{self.port}/"
        return self.url

    def healthy(self) -> bool:
        try:
            check(self.url, timeout=2)
            return True
        except TrackingUnavailableError:
            return False

    def stop(self) -> bool:
        return stop_server(self.name, self.workspace)


def server_command(port: int, allowed_hosts: str | None = None) -> list[str]:
    """``mlflow server`` on loopback, one worker, on the workspace store."""
    cmd = ["mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", local_uri(),
           # artifacts go straight to the workspace (clients are on this machine); in a team,
           # ``--artifacts-destination s3://...`` makes the server proxy them instead.
           "--default-artifact-root", str(artifacts_dir()), "--no-serve-artifacts"]
    if allowed_hosts is None and config.is_binder():
        allowed_hosts = "*"  # the proxy forwards the public host name: MLflow would answer 403
    if allowed_hosts:
        cmd += ["--allowed-hosts", allowed_hosts]
    return cmd


def running_server(name: str = SERVER_NAME, workspace: Path | None = None) -> TrackingServer | None:
    """The server the supervisor recorded under ``name``, if it is alive and healthy."""
    from ..supervisor import Supervisor

    rec = Supervisor(workspace).get(name)
    if rec is None or not rec.is_alive() or not rec.port:
        return None
    srv = TrackingServer(name, f"http://127.0.0.1:{rec.port}", rec.port, rec.pid or 0, 0.0,
                         Supervisor(workspace).workspace)
    return srv if srv.healthy() else None


def start_server(name: str = SERVER_NAME, port: int | None = None, *, timeout: float = 120.0,
                 set_uri: bool = True, stop_on_exit: bool = True,
                 allowed_hosts: str | None = None) -> TrackingServer:
    """Start ``mlflow server`` (or return the one already running under ``name``).

    Waits until ``/health`` answers; ``set_uri`` points this process at it (:func:`use`).
    """
    from ..supervisor import Supervisor, free_port

    srv = running_server(name)
    if srv is None:
        sup = Supervisor()
        port = port or free_port()
        env = dict(SERVER_ENV)
        t0 = time.monotonic()
        rec = sup.start(name, server_command(port, allowed_hosts), port=port,
                        url=f"http://127.0.0.1:{port}/health", timeout=timeout, env=env,
                        stop_on_exit=stop_on_exit)
        srv = TrackingServer(name, f"http://127.0.0.1:{port}", port, rec.pid or 0,
                             round(time.monotonic() - t0, 2), sup.workspace)
    if set_uri:
        use(srv.url)
    return srv


def stop_server(name: str = SERVER_NAME, workspace: Path | None = None) -> bool:
    """Stop the server; if this process was pointed at it, fall back to the local store."""
    from ..supervisor import Supervisor

    sup = Supervisor(workspace)
    rec = sup.get(name)
    stopped = sup.stop(name)
    if rec is not None and rec.port and os.environ.get("MLFLOW_TRACKING_URI", "").startswith(
            f"http://127.0.0.1:{rec.port}"):
        use(local_uri())
    return stopped


# -- command line ------------------------------------------------------------------------
def _cli_start(args) -> int:
    srv = start_server(port=args.port, set_uri=False, stop_on_exit=False,
                       allowed_hosts=args.allowed_hosts)
    print(f"MLflow tracking server at {srv.url} (pid {srv.pid}, store {store_dir()})")
    print(f"use it: export MLFLOW_TRACKING_URI={srv.url} ; stop it: mlops-course mlflow down")
    return 0


def _cli_stop(args) -> int:
    print("stopped the tracking server" if stop_server() else "no tracking server was running")
    return 0


def _cli_status(args) -> int:
    srv = running_server()
    if srv is None:
        print(f"no tracking server; the local store is {local_uri()}")
        return 1
    print(f"tracking server at {srv.url} (pid {srv.pid}), store {store_dir()}")
    return 0


def register_cli(subparsers) -> None:
    # `mlops-course mlflow up|down|status` and its long form `tracking start|stop|status`
    for command, start, stop in (("mlflow", "up", "down"), ("tracking", "start", "stop")):
        p = subparsers.add_parser(command, help="the MLflow tracking server (lesson 06)")
        sub = p.add_subparsers(dest="tracking_cmd", required=True, metavar="ACTION")
        s = sub.add_parser(start, help="start `mlflow server` on the workspace store, in the background")
        s.add_argument("--port", type=int, help="default: a free port")
        s.add_argument("--allowed-hosts", help="Host headers to accept (default: local; '*' on Binder)")
        s.set_defaults(func=_cli_start)
        s = sub.add_parser(stop, help="stop it")
        s.set_defaults(func=_cli_stop)
        s = sub.add_parser("status", help="its URL, or the local store when none runs")
        s.set_defaults(func=_cli_status)
