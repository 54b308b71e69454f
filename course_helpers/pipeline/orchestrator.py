"""Prefect's API server for this workspace, started and stopped through the course's supervisor.

Left alone, Prefect 3 starts an "ephemeral" API server as a subprocess of whatever process
runs the first flow, on a random port, and that server outlives a SIGKILLed kernel. We start
Prefect's server ourselves instead, with its documented command (``prefect server start
--no-ui``, one process), keeping only the services that record flow and task runs (task runs
reach the server as events; ``--no-services`` would drop them) and switching the others off
with Prefect's documented ``PREFECT_SERVER_SERVICES_<NAME>_ENABLED`` settings; the scheduler
is on only when schedules need it. It runs through the supervisor:

* its pid is recorded under ``<workspace>/run/prefect.json`` and its environment carries the
  supervisor's tag, so ``mlops-course cleanup`` stops it even after its owner was killed;
* its state (SQLite) lives in ``<workspace>/prefect`` (``PREFECT_HOME``), its log in
  ``<workspace>/logs/prefect.log``;
* every flow of this process, ours or a student's ``@flow``, talks to it through
  ``PREFECT_API_URL``, so Prefect never starts a second, unsupervised one.

Importing this module does not import Prefect.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from .. import config
from ..errors import CourseError
from . import prefect_compat

SERVER_NAME = "prefect"
TELEMETRY_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true",
                 "MLFLOW_DISABLE_TELEMETRY": "true"}


def prefect_home():
    return config.workspace_dir("prefect")


def client_env(api_url: str | None = None) -> dict[str, str]:
    """What a process that runs flows needs in its environment (set before importing Prefect)."""
    home = prefect_home()
    env = {**TELEMETRY_ENV, "PREFECT_HOME": str(home),
           "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
           # a flow's own prints and task logs stay out of notebooks unless asked for
           "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING"),
           "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
           "PREFECT_CLIENT_ENABLE_METRICS": "false"}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def prepare_environment() -> None:
    """Give this process Prefect's client settings (workspace home, quiet logs, no telemetry)
    unless already set; called at run time, before the first flow (never at import)."""
    changed = False
    for key, value in client_env().items():
        if key not in os.environ:
            os.environ[key] = value
            changed = True
    if changed and "prefect" in sys.modules:
        prefect_compat.reload_settings()


#: services a course server does not need (work pools, pauses, automations...): off. The
#: task run recorder, event persister and log/event distributors stay on: they record runs.
UNUSED_SERVICES = ("CANCELLATION_CLEANUP", "FOREMAN", "LATE_RUNS", "PAUSE_EXPIRATIONS",
                   "REPOSSESSOR", "TRIGGERS", "EVENT_LOGGER", "CLEANUP_RECONCILER")


def server_env() -> dict[str, str]:
    """The API server's settings: no UI, quiet logs, only the services that record runs."""
    env = client_env()
    env.pop("PREFECT_API_URL", None)
    env.update({"PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
                "PREFECT_LOGGING_LEVEL": "WARNING",
                **{f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false"
                   for name in UNUSED_SERVICES}})
    return env


def server_command(port: int, scheduler: bool = False) -> list[str]:
    """``prefect server start`` on loopback, without the UI; with its scheduler if asked."""
    return [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
            "--port", str(port), "--no-ui", "--analytics-off", "--log-level", "WARNING",
            "--scheduler" if scheduler else "--no-scheduler"]


def scheduler_env() -> dict[str, str]:
    """``prefect server start`` with its services, the scheduler looking every few seconds
    (the default is every 60 s: too slow to watch in a lesson)."""
    env = server_env()
    env.update({"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
                "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "2",
                "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS": "2",
                "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS": "3"})
    return env


def _healthy(api_url: str) -> bool:
    from ..readiness import probe

    return probe(api_url + "/health", expect=200, timeout=3).ok


def server_url(scheduler: bool = False) -> str | None:
    """The API URL of this workspace's running Prefect server (one with a scheduler, if
    ``scheduler``), if any."""
    from ..supervisor import Supervisor

    rec = Supervisor().get(SERVER_NAME)
    if rec is None or not rec.port or not rec.is_alive():
        return None
    if scheduler and not has_scheduler(rec.cmd):
        return None
    url = f"http://127.0.0.1:{rec.port}/api"
    return url if _healthy(url) else None


def has_scheduler(cmd: list[str]) -> bool:
    """Whether a recorded server command runs the scheduler (not ``--no-services``)."""
    return cmd[1:5] == ["-m", "prefect", "server", "start"] and "--scheduler" in cmd


def start_server(timeout: float = 120.0, keep: bool = False, scheduler: bool = False) -> str:
    """Start this workspace's Prefect API server (or find the running one); returns its API URL.

    A first start creates its SQLite database: 5-15 s on a busy 2-core machine; later starts
    take a few seconds. Several processes may use one server at once (two pipelines running
    together): the start is done under a file lock, and each user holds a lease; the server
    stops when the last user's interpreter exits (unless ``keep``), or with
    ``mlops-course cleanup``.

    ``scheduler``: a full ``prefect server start`` whose scheduler creates the runs of
    scheduled deployments; a running API-only server is replaced by one (same database) if
    no other process is using it.
    """
    import fcntl

    from ..supervisor import Supervisor, free_port

    with open(prefect_home() / ".start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time; the others then find it
        url = server_url(scheduler)
        if not url:
            sup = Supervisor()
            if sup.get(SERVER_NAME) is not None:
                others = _other_users()
                if scheduler and server_url() and others:
                    raise CourseError(
                        "the Prefect server of this workspace runs without a scheduler and "
                        f"is in use (pids {', '.join(others)}): wait for those pipelines, or "
                        "`mlops-course pipeline server stop`, then start the schedule again.")
                _drain()
                sup.stop(SERVER_NAME)  # API-only, or recorded but dead or wedged
            for stale in _leases().iterdir():  # leases of a server that is gone
                stale.unlink(missing_ok=True)
            port = free_port()
            sup.start(SERVER_NAME, server_command(port, scheduler), port=port,
                      url=f"http://127.0.0.1:{port}/api/health", timeout=timeout,
                      env=scheduler_env() if scheduler else server_env(), stop_on_exit=False)
            url = f"http://127.0.0.1:{port}/api"
        if keep:
            (_leases() / "keep").touch()  # started on purpose: only a stop or cleanup ends it
        else:
            _take_lease()
    return url


def _leases():
    path = prefect_home() / "users"
    path.mkdir(exist_ok=True)
    return path


def _other_users() -> list[str]:
    import psutil

    return [p.name for p in _leases().iterdir()
            if p.name == "keep" or (p.name.isdigit() and p.name != str(os.getpid())
                                    and psutil.pid_exists(int(p.name)))]


def _take_lease() -> None:
    import atexit

    mine = _leases() / str(os.getpid())
    if not mine.exists():
        mine.touch()
        atexit.register(_release_lease)


def _release_lease() -> None:
    """Drop this process's lease; stop the server if nobody else still uses it."""
    import fcntl

    try:
        with open(prefect_home() / ".start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            (_leases() / str(os.getpid())).unlink(missing_ok=True)
            if not _other_users():
                stop_server()
    except Exception:
        pass  # never fail an interpreter's exit; `mlops-course cleanup` remains


def stop_server() -> bool:
    """Stop the server (flows of this process then need :func:`connect` again)."""
    from ..supervisor import Supervisor

    _drain()
    (_leases() / "keep").unlink(missing_ok=True)
    return Supervisor().stop(SERVER_NAME)


def connect(timeout: float = 120.0, scheduler: bool = False) -> str:
    """Start (or find) the server and point this process's Prefect at it; returns the API URL.

    Safe to call again, also after switching workspaces: Prefect re-reads its settings.
    """
    url = start_server(timeout, scheduler=scheduler)
    os.environ.update(client_env(url))
    if "prefect" in sys.modules:  # settings were read at import: read them again
        prefect_compat.reload_settings()
    return url


def _drain() -> None:
    """Flush Prefect's background log and event senders (before their server goes away)."""
    with contextlib.suppress(Exception):
        prefect_compat.flush()


@contextlib.contextmanager
def session(timeout: float = 120.0) -> Iterator[str]:
    """``with session() as api_url:`` run flows against this workspace's server, then flush."""
    url = connect(timeout)
    try:
        yield url
    finally:
        _drain()
