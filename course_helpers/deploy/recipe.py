"""The serving image's recipe: what goes into it and how a replica runs, for every backend.

The Docker backend (:mod:`.docker`), the local backend (:mod:`.local`, the same command and
settings without a container) and the rendered manifests (:mod:`.manifests`) all read it,
so a compose file or a Kubernetes Deployment runs exactly what the backends run. Nothing
here needs a Docker engine.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .spec import DeploymentSpec

#: The image's repository; tags are content hashes (and ``latest`` for the newest build).
IMAGE_REPOSITORY = "mlops-course/serving"
CONTAINER_PORT = 8000
MODEL_MOUNT = "/model"
LABEL_DEPLOYMENT = "org.mlops-course.deployment"
RECIPE_VERSION = "1"  # bump when the image recipe changes in a way the hash cannot see

#: What the server needs at run time, pinned by ``requirements.lock``. ``mlflow-skinny``
#: (MLflow's client without the tracking server, UI and their dependencies) plus ``skops``
#: (the format our models are saved in) loads the model at a fraction of full MLflow's size.
SERVING_REQUIREMENTS = (
    "fastapi", "pydantic", "gunicorn", "uvicorn", "uvicorn-worker", "uvloop", "httptools",
    "prometheus-client", "scikit-learn", "numpy", "pandas", "mlflow-skinny", "skops", "psutil",
    "swagger-ui-bundle",
)

#: The health check, as the container runs it (the base images have Python, not curl).
READY_PROBE = ("import urllib.request as u; "
               f"u.urlopen('http://127.0.0.1:{CONTAINER_PORT}/ready', timeout=2)")
HEALTHCHECK_INTERVAL_S = 2
HEALTHCHECK_TIMEOUT_S = 2
HEALTHCHECK_RETRIES = 3
HEALTHCHECK_START_S = 60  # failures while the model loads do not count

#: Server code and settings shared by every topology (see :func:`server_settings`).
WORKER_CLASS = "course_helpers.serving.worker.ReusePortWorker"
MAX_REQUESTS_PER_CONNECTION = 100


# the command and environment ------------------------------------------------------------------------------
def gunicorn_command(workers: int, port: int = CONTAINER_PORT) -> list[str]:
    """The server's command inside a container: :func:`serving.server.gunicorn_command` with
    the topology-independent settings of :func:`server_settings`, heartbeats in memory
    rather than on the overlay disk. ``port`` is where the workers listen (all interfaces)."""
    from ..serving.server import gunicorn_command as base

    cmd = base(workers, "unix:/tmp/gunicorn.sock", WORKER_CLASS)
    return cmd + ["--worker-tmp-dir", "/dev/shm"]


def server_settings(host: str, port: int) -> dict[str, str]:
    """The variables every replica gets, whatever its topology (1 worker or several), so
    that single-large and many-small run identical server code with identical settings:
    each worker listens on its own ``SO_REUSEPORT`` socket at ``host:port`` (the master's
    socket is a unix socket nobody calls), and a keep-alive connection is closed after
    :data:`MAX_REQUESTS_PER_CONNECTION` requests so that connections rebalance."""
    return {"MLOPS_REUSEPORT_BIND": f"{host}:{port}",
            "MLOPS_MAX_REQUESTS_PER_CONNECTION": str(MAX_REQUESTS_PER_CONNECTION)}


def is_registry_uri(uri: str) -> bool:
    """True for ``models:/...``, ``runs:/...`` and remote URLs (not a local directory)."""
    return "://" in uri or uri.startswith(("models:/", "runs:/"))


def container_env(spec: DeploymentSpec, model_uri: str | None = None,
                  tracking_uri: str | None = None) -> dict[str, str]:
    """Environment of a replica: the server's ``MLOPS_*`` settings and quiet MLflow.

    ``model_uri`` defaults to the mounted ``/model`` (local directories) or the spec's
    registry URI, which then needs ``tracking_uri``. The server settings are
    ``serving.app.Settings.to_env()``, defaults included.
    """
    if model_uri is None:
        model_uri = spec.model_uri if is_registry_uri(spec.model_uri) else MODEL_MOUNT
    from ..serving.app import Settings as ServerSettings  # fastapi: only when asked

    env = ServerSettings(model_uri=model_uri, cache=spec.cache, db=spec.db,
                         max_requests_per_connection=MAX_REQUESTS_PER_CONNECTION).to_env() | {
        "MLOPS_HOME": "/tmp/mlops",
        "PROMETHEUS_MULTIPROC_DIR": "/tmp/prometheus",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "PYTHONPATH": "/app",
    }
    env |= server_settings("0.0.0.0", CONTAINER_PORT)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def healthcheck() -> dict[str, Any]:
    """Docker's health check on ``/ready`` (times in nanoseconds, as the engine wants)."""
    ns = 1_000_000_000
    return {"test": ["CMD", "python", "-c", READY_PROBE],
            "interval": HEALTHCHECK_INTERVAL_S * ns, "timeout": HEALTHCHECK_TIMEOUT_S * ns,
            "retries": HEALTHCHECK_RETRIES, "start_period": HEALTHCHECK_START_S * ns}


#: Where the server starts; the image carries these and every course module they import.
SERVER_MODULES = ("course_helpers.serving.app", "course_helpers.serving.gunicorn_conf",
                  "course_helpers.serving.worker",
                  # lesson 09's seeded-fault challengers unpickle this class (skops)
                  "course_helpers.rollout.faults")
#: Host-side packages reached only through lazy imports the server never runs (the
#: supervisor's cleanup, for one): left out so that editing them does not rebuild the image.
HOST_ONLY = ("course_helpers.deploy", "course_helpers.images", "course_helpers.grading",
             "course_helpers.notebooks", "course_helpers.loadtest", "course_helpers.cli",
             *(f"course_helpers.rollout.{m}" for m in (
                 "ab", "canary", "containers", "decision", "load", "locust_raw", "manifests",
                 "metrics", "plots", "shadow", "stats")))


def _module_file(root: Path, module: str) -> Path | None:
    path = root.joinpath(*module.split(".")[1:])
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _course_imports(path: Path, module: str) -> set[str]:
    """Course modules ``module`` imports anywhere in its file (lazy imports included)."""
    import ast

    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "course_helpers"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            elif (node.module or "").split(".")[0] == "course_helpers":
                target = node.module
            else:
                continue
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names}  # may be submodules
    return found


def package_files() -> dict[str, bytes]:
    """The ``course_helpers`` sources the server needs: the modules it imports, found by
    reading the code (so an edit elsewhere in the package does not rebuild the image)."""
    root = Path(__file__).resolve().parent.parent
    seen: set[str] = set()
    todo = list(SERVER_MODULES)
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # a module needs its packages' __init__ too
            name = ".".join(parts[:i])
            path = _module_file(root, name)
            if path is None or name in seen or name.startswith(HOST_ONLY):
                continue
            seen.add(name)
            todo.extend(_course_imports(path, name))
    out = {}
    for name in sorted(seen):
        path = _module_file(root, name)
        out[f"course_helpers/{path.relative_to(root).as_posix()}"] = path.read_bytes()
    return out


def image_key(base: str, base_id: str, requirements: list[str], files: dict[str, bytes]) -> str:
    """Content hash of everything that goes into the serving image."""
    digest = hashlib.sha256()
    digest.update(json.dumps([RECIPE_VERSION, base, base_id, requirements,
                              gunicorn_command(1)]).encode())
    for name, data in sorted(files.items()):
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()[:12]
