"""Where runs and models live: the workspace store, its URIs, and MLflow's client settings.

``sqlite:///<workspace>/mlflow/mlflow.db`` (:func:`local_uri`) needs no server; an
``http(s)://`` URI names a tracking server (:mod:`.server`). Every helper checks a server URI
first and says in one sentence when it does not answer, instead of letting MLflow's HTTP
client retry for minutes. mlflow is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .. import config
from ..errors import CourseError
from ..readiness import probe

#: Nothing leaves loopback (MLflow ignores ``DO_NOT_TRACK=1``; it wants ``true``).
TELEMETRY_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}
#: MLflow's HTTP client retries a dead server with backoff for minutes by default.
CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


class TrackingUnavailableError(CourseError):
    """The tracking server named by a URI does not answer."""


def quiet() -> None:
    """Telemetry off, short HTTP retries, MLflow's chatter down to warnings. Call before importing mlflow."""
    import logging

    for key, value in {**TELEMETRY_ENV, **CLIENT_ENV, "GIT_PYTHON_REFRESH": "quiet",
                       "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
                       "MLFLOW_LOGGING_LEVEL": "WARNING"}.items():
        os.environ.setdefault(key, value)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # a retry of a dead server is one warning per attempt; the error that follows says it all
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


# -- the store ---------------------------------------------------------------------------
def store_dir() -> Path:
    """``<workspace>/mlflow``: the SQLite database and the artifacts."""
    return config.workspace_dir("mlflow")


def artifacts_dir() -> Path:
    path = store_dir() / "artifacts"
    path.mkdir(exist_ok=True)
    return path


def local_uri() -> str:
    """The direct (server-less) URI of the workspace store."""
    return f"sqlite:///{store_dir() / 'mlflow.db'}"


def current_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set (e.g. by :func:`use`), else the workspace's SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or local_uri()


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check(uri: str | None = None, timeout: float = 3.0) -> str:
    """Return ``uri`` if it can be used now; raise :class:`TrackingUnavailableError` otherwise.

    A SQLite URI is always usable. An ``http(s)://`` URI must answer ``/health``.
    """
    uri = uri or current_uri()
    if not is_remote(uri):
        return uri
    answer = probe(uri.rstrip("/") + "/health", expect=200, timeout=timeout)
    if answer:
        return uri
    raise TrackingUnavailableError(
        f"no MLflow tracking server answered at {uri} ({answer.detail}): start one with "
        f"`mlops-course mlflow up` (or tracking.start_server()), or unset "
        f"MLFLOW_TRACKING_URI to use the workspace's local store.")


def lost(uri: str) -> TrackingUnavailableError | None:
    """After a failure: the error to show if ``uri``'s server stopped answering, else None."""
    if not is_remote(uri):
        return None
    try:
        check(uri, timeout=2)
        return None
    except TrackingUnavailableError:
        return TrackingUnavailableError(
            f"the MLflow tracking server at {uri} stopped answering during the run: start one "
            f"with `mlops-course mlflow up` and run again (a model registered before it "
            f"stopped is found and reused, never registered twice).")


def use(uri: str | None = None) -> str:
    """Point this process (and what it starts) at ``uri`` (default: the local store).

    Checks that a server URI answers first. Returns the URI.
    """
    uri = check(uri or local_uri())
    os.environ["MLFLOW_TRACKING_URI"] = uri
    quiet()
    import sys

    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(uri)
    return uri


@contextlib.contextmanager
def using(uri: str | None = None) -> Iterator[str]:
    """``with using(uri):`` MLflow's fluent API (``mlflow.start_run``, ``load_model``...) talks
    to ``uri``; afterwards the previous URI is back.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into the process
    environment, so a bare call leaks into everything started later; this restores both.
    """
    uri = check(uri)
    quiet()
    import mlflow

    before_env = os.environ.get("MLFLOW_TRACKING_URI")
    before = mlflow.get_tracking_uri()  # what the fluent API resolved to before
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(before)
        if before_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before_env


def client(uri: str | None = None):
    """An ``MlflowClient`` for ``uri`` (default :func:`current_uri`), checked to be reachable."""
    uri = check(uri)
    quiet()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)
