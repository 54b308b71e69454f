"""Start the model server with gunicorn + uvicorn workers, through the supervisor.

Never ``uvicorn --workers N``: its pre-bound socket lacks TCP_NODELAY and adds ~44 ms to
every keep-alive request (uvicorn issue 3149). gunicorn's UvicornWorker does not.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import urllib.request
from pathlib import Path

from .. import config
from ..tracking import current_uri
from ..supervisor import Supervisor, free_port


def post_predict(url: str, rows: list[dict] | dict, timeout: float = 30) -> dict:
    """POST one row (a dict) or a batch (a list of dicts) to ``url``/predict; the JSON answer."""
    body = {"row": rows} if isinstance(rows, dict) else {"rows": rows}
    req = urllib.request.Request(url + "/predict", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


@dataclasses.dataclass
class ServerHandle:
    """A running model server: its URL, name and settings; ``stop()`` ends it gracefully."""

    name: str
    url: str
    port: int
    pid: int
    workers: int
    db: str | None
    workspace: Path

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=10) as resp:
            return json.loads(resp.read())

    def predict(self, rows: list[dict] | dict, timeout: float = 30) -> dict:
        """POST one row (a dict) or a batch (a list of dicts) to /predict."""
        return post_predict(self.url, rows, timeout)

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as resp:
            return resp.read().decode()

    def stop(self, timeout: float = 30.0) -> bool:
        """Graceful stop: in-flight requests finish and the prediction log is flushed."""
        return Supervisor(self.workspace).stop(self.name, timeout=timeout)


def serve(model_uri: str, *, name: str = "model-server", port: int | None = None,
          workers: int = 1, cache: str = "lru", cache_size: int = 10_000,
          cache_ttl_s: float = 300.0, redis_url: str | None = None, db: str | None = "default",
          max_batch: int = 256, variant: str = "default", timeout: float = 90.0,
          cpus: list[int] | None = None, memory_mb: int | None = None,
          extra_env: dict[str, str] | None = None, follow_alias_s: float = 0.0,
          predict_on_loop: bool = False) -> ServerHandle:
    """Start the server on 127.0.0.1 and wait until ``/ready`` answers.

    Before anything starts, the model URI, Redis and the database are checked: a problem
    raises :class:`~course_helpers.serving.loading.ServerStartError` in one sentence.
    ``follow_alias_s`` > 0 with a ``models:/NAME@ALIAS`` URI polls the registry that often
    and swaps in the version the alias points at, without failing a request.
    ``predict_on_loop=True`` is lesson 01's teaching switch (see ``Settings``).

    ``db="default"`` logs predictions to ``<workspace>/serving/<name>.db`` (SQLite);
    pass a ``postgresql://`` URL, another path, or None to turn logging off.
    ``cpus`` pins the server to those CPU numbers (Linux ``taskset``); ``memory_mb`` puts it
    in a memory cgroup of that size where the OS allows (root), else it is not enforced.
    """
    from .app import Settings

    ws = config.workspace()
    port = port or free_port()
    if db in ("none", "off", ""):
        db = None
    if db == "default":
        db = str(config.workspace_dir("serving") / f"{name}.db")
    settings = Settings(model_uri=model_uri, cache=cache, cache_size=cache_size,
                        cache_ttl_s=cache_ttl_s, redis_url=redis_url, db=db,
                        max_batch=max_batch, variant=variant, follow_alias_s=follow_alias_s,
                        predict_on_loop=predict_on_loop,
                        # several workers share one socket: rebalance keep-alive connections
                        max_requests_per_connection=100 if workers > 1 else 0)
    preflight(settings)
    prom_dir = config.workspace_dir("serving", f"{name}.prom")
    env = settings.to_env() | {"PROMETHEUS_MULTIPROC_DIR": str(prom_dir),
                               "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
                               "MLFLOW_TRACKING_URI": current_uri()}
    env |= extra_env or {}
    if workers > 1:
        # each worker listens on its own SO_REUSEPORT socket (see serving/worker.py); the
        # master's own socket is a unix socket nobody calls
        env["MLOPS_REUSEPORT_BIND"] = f"127.0.0.1:{port}"
        master = f"unix:{config.workspace_dir('serving') / f'{name}.sock'}"
        cmd = gunicorn_command(workers, master, "course_helpers.serving.worker.ReusePortWorker")
    else:
        cmd = gunicorn_command(workers, f"127.0.0.1:{port}")
    if cpus:
        taskset = shutil.which("taskset")
        if taskset:
            cmd = [taskset, "-c", ",".join(str(c) for c in cpus)] + cmd
    if memory_mb:
        from ..limits import memory_prefix

        prefix = memory_prefix(name, memory_mb)
        if prefix:
            cmd = prefix + cmd
    rec = Supervisor(ws).start(name, cmd, port=port, url=f"http://127.0.0.1:{port}/ready",
                               timeout=timeout,
                               env=env)
    return ServerHandle(name, f"http://127.0.0.1:{port}", port, rec.pid, workers, db, ws)


def preflight(settings) -> None:
    """Check what the server needs before starting it; one sentence per problem.

    The same checks run again inside the server (``create_app``), for servers started
    without this function (containers, a hand-written gunicorn command).
    """
    from .cache import make_cache
    from .loading import ServerStartError, check_model, parse_alias
    from .store import check_database

    if settings.follow_alias_s and parse_alias(settings.model_uri) is None:
        raise ServerStartError(f"--follow-alias needs a models:/NAME@ALIAS model URI, "
                               f"not {settings.model_uri}")
    try:  # the cheap checks first
        if settings.cache == "redis":
            make_cache("redis", redis_url=settings.redis_url)
        if settings.db:
            check_database(settings.db)
    except (RuntimeError, ValueError) as err:
        raise ServerStartError(str(err)) from None
    check_model(settings.model_uri)


def gunicorn_command(workers: int, bind: str,
                     worker_class: str = "uvicorn_worker.UvicornWorker") -> list[str]:
    """gunicorn with uvicorn workers for the app; shared by local replicas and containers."""
    return ["gunicorn", "course_helpers.serving.app:create_app_from_env()",
            "--worker-class", worker_class, "--workers", str(workers),
            "--bind", bind, "--config", "python:course_helpers.serving.gunicorn_conf",
            "--preload",  # load the model once, before forking: workers start in milliseconds
            # no --pid file: after a crash it survives, and a restarted gunicorn refuses to start
            "--graceful-timeout", "20", "--timeout", "120", "--keep-alive", "5",
            "--log-level", "warning"]
