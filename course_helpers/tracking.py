"""Experiment tracking and the model registry (lesson 06): an MLflow server, runs, aliases, lineage.

Two ways to reach the same store, both inside the workspace (``<workspace>/mlflow/``):

* **direct**: ``sqlite:///<workspace>/mlflow/mlflow.db`` (:func:`local_uri`). No server, no
  extra memory; what the pipeline and the serving code use unless told otherwise.
* **server**: :func:`start_server` runs ``mlflow server`` on that same database through the
  course's supervisor (one worker, no job runner: 2 processes, ~560 MB instead of ~2.7 GB),
  with its web UI. Clients then use ``http://127.0.0.1:<port>``.

On one machine both write artifacts straight into ``<workspace>/mlflow/artifacts``
(experiments are created with that location), so a model registered one way loads the other
way. When the server is down, every helper here says so in one sentence instead of letting
MLflow's HTTP client retry for minutes.

Importing this module is cheap: mlflow and pandas are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import config
from .errors import CourseError

SERVER_NAME = "mlflow"
CHAMPION = "champion"
CHALLENGER = "challenger"
#: the version ``@champion`` pointed to before its last move: what :func:`rollback` restores
PREVIOUS = "previous"

#: Nothing leaves loopback (MLflow ignores ``DO_NOT_TRACK=1``; it wants ``true``).
TELEMETRY_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}
#: ``mlflow server`` defaults to 4 workers plus a job runner and queue consumers (~11
#: processes, ~2.7 GB): over Binder's 2 GB. One worker and no job execution: 2 processes.
SERVER_ENV = {**TELEMETRY_ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
              "GIT_PYTHON_REFRESH": "quiet"}
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
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            if resp.status == 200:
                return uri
            problem = f"HTTP {resp.status}"
    except urllib.error.HTTPError as err:
        problem = f"HTTP {err.code}"
    except (OSError, ValueError) as err:
        problem = getattr(err, "reason", None) or err
    raise TrackingUnavailableError(
        f"no MLflow tracking server answered at {uri} ({problem}): start one with "
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
    from .supervisor import Supervisor

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
    from .supervisor import Supervisor, free_port

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
    from .supervisor import Supervisor

    sup = Supervisor(workspace)
    rec = sup.get(name)
    stopped = sup.stop(name)
    if rec is not None and rec.port and os.environ.get("MLFLOW_TRACKING_URI", "").startswith(
            f"http://127.0.0.1:{rec.port}"):
        use(local_uri())
    return stopped


# -- experiments and runs ----------------------------------------------------------------
def ensure_experiment(name: str, uri: str | None = None) -> str:
    """The id of experiment ``name``, created with its artifacts in the workspace if new."""
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = (artifacts_dir() / _safe(name)).as_uri()
    try:
        return c.create_experiment(name, artifact_location=location)
    except Exception:  # created meanwhile by someone else
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


@dataclasses.dataclass
class LoggedRun:
    """What :func:`log_run` produced: the run, the logged model and the registered version."""

    run_id: str
    experiment_id: str
    model_uri: str | None = None
    version: str | None = None


def log_run(experiment: str, *, params: dict | None = None, metrics: dict | None = None,
            tags: dict | None = None, model=None, X_example=None, dataset=None,
            dataset_name: str = "training", register_as: str | None = None,
            version_tags: dict | None = None, run_name: str | None = None,
            uri: str | None = None) -> LoggedRun:
    """Log one training run: params, metrics, tags, the dataset (with its digest) and the model.

    ``dataset`` is a DataFrame (its digest becomes the run's lineage); ``register_as`` also
    registers the model as a new version of that name, created together with its
    ``version_tags`` (one request: a version never exists without them).
    """
    import io

    import mlflow

    uri = check(uri)
    exp_id = ensure_experiment(experiment, uri)
    with using(uri), warnings.catch_warnings(), \
            mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
        # MLflow's own pandas-4 deprecations and schema hints are not the student's business
        warnings.filterwarnings("ignore", module="mlflow")
        warnings.filterwarnings("ignore", category=UserWarning)
        if params:
            mlflow.log_params(params)
        if metrics:
            mlflow.log_metrics(metrics)
        if tags:
            mlflow.set_tags(tags)
        if dataset is not None:
            target = "label" if "label" in dataset.columns else None
            mlflow.log_input(mlflow.data.from_pandas(dataset, name=dataset_name, targets=target),
                             context="training")
        model_uri = version = None
        if model is not None:
            from .model import pip_requirements

            if X_example is None:
                raise ValueError("log_run needs X_example (a few input rows) to log a model")
            from mlflow.models import infer_signature

            example = X_example.head(2)
            out = model.predict_proba(example) if hasattr(model, "predict_proba") \
                else model.predict(example)
            with contextlib.redirect_stderr(io.StringIO()):  # "Successfully registered ..."
                info = mlflow.sklearn.log_model(
                    model, name="model", signature=infer_signature(example, out),
                    input_example=example, pip_requirements=pip_requirements(),
                    skops_trusted_types=trusted_types(model))
                model_uri = info.model_uri
                if register_as:
                    mv = mlflow.register_model(model_uri, register_as, tags=version_tags)
                    version = str(mv.version)
    return LoggedRun(run.info.run_id, exp_id, model_uri, version)


def trusted_types(model) -> list[str] | None:
    """Types skops must be told to trust to save ``model`` (ours): trees, also inside pipelines."""
    from sklearn.base import BaseEstimator
    from sklearn.ensemble import BaseEnsemble
    from sklearn.tree import BaseDecisionTree

    parts = [model]
    if isinstance(model, BaseEstimator):
        parts += [v for v in model.get_params(deep=True).values() if isinstance(v, BaseEstimator)]
    if any(isinstance(p, (BaseEnsemble, BaseDecisionTree)) for p in parts):
        return ["sklearn.tree._tree.Tree"]
    return None


def runs_table(experiment: str, uri: str | None = None, max_results: int = 200,
               order_by: str | None = None):
    """The experiment's runs as a DataFrame: run id, name, start time, params and metrics."""
    import pandas as pd

    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return pd.DataFrame(columns=["run_id", "run_name", "start_time", "status"])
    runs = c.search_runs([exp.experiment_id], max_results=max_results,
                         order_by=[order_by] if order_by else ["attributes.start_time DESC"])
    rows = []
    for r in runs:
        row: dict[str, Any] = {"run_id": r.info.run_id, "run_name": r.info.run_name,
                               "start_time": pd.to_datetime(r.info.start_time, unit="ms"),
                               "status": r.info.status}
        row.update({f"params.{k}": v for k, v in sorted(r.data.params.items())})
        row.update({f"metrics.{k}": v for k, v in sorted(r.data.metrics.items())})
        rows.append(row)
    return pd.DataFrame(rows)


# -- the registry ------------------------------------------------------------------------
def resolve(name: str, alias: str = CHAMPION, uri: str | None = None) -> str | None:
    """The version ``name@alias`` points to, or None if the alias (or the model) does not exist."""
    c = client(uri)
    try:
        return str(c.get_model_version_by_alias(name, alias).version)
    except Exception as err:  # RESOURCE_DOES_NOT_EXIST / INVALID_PARAMETER_VALUE
        if "RESOURCE_DOES_NOT_EXIST" in str(err) or "not found" in str(err).lower() or \
                "INVALID_PARAMETER_VALUE" in str(err):
            return None
        raise


def versions_table(name: str, uri: str | None = None, metrics: tuple[str, ...] = ()):
    """Every version of ``name``: aliases, run, creation time, tags and the run's ``metrics``."""
    import pandas as pd

    c = client(uri)
    try:
        aliases = c.get_registered_model(name).aliases or {}
    except Exception:
        return pd.DataFrame(columns=["version", "aliases", "run_id", "created"])
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for mv in c.search_model_versions(f"name='{name}'"):
        row: dict[str, Any] = {
            "version": int(mv.version),
            "aliases": ",".join(sorted(by_version.get(str(mv.version), []))),
            "run_id": mv.run_id, "created": pd.to_datetime(mv.creation_timestamp, unit="ms")}
        if metrics and mv.run_id:
            data = c.get_run(mv.run_id).data.metrics
            row.update({m: data.get(m) for m in metrics})
        row.update({f"tags.{k}": v for k, v in sorted((mv.tags or {}).items())})
        rows.append(row)
    return pd.DataFrame(rows).sort_values("version").reset_index(drop=True) if rows else \
        pd.DataFrame(columns=["version", "aliases", "run_id", "created"])


@dataclasses.dataclass
class Promotion:
    """An alias move: ``name@alias`` went from ``previous`` (None: it did not exist) to ``version``."""

    name: str
    alias: str
    previous: str | None
    version: str


def promote(name: str, version: str | int, alias: str = CHAMPION, reason: str = "",
            uri: str | None = None) -> Promotion:
    """Point ``name@alias`` at ``version``.

    The rollback convention, for ``@champion``: the version it leaves gets ``@previous``, so
    :func:`rollback` (or anyone with registry access) can swap them back. MLflow moves one
    alias per request and has no transaction over two, so the order is chosen for the
    servers, which read only ``@champion``: ``@previous`` moves first (for a moment both name
    the old version, which is harmless), then ``@champion`` moves in one request, so a server
    sees the old version or the new one, never a mix. If another promotion moved
    ``@champion`` meanwhile, this raises instead of reporting a move that did not stick.
    """
    c = client(uri)
    version = str(version)
    c.get_model_version(name, version)  # raises if it does not exist
    current = resolve(name, alias, uri)
    if current == version:
        return Promotion(name, alias, current, version)
    if alias == CHAMPION and current is not None:
        c.set_registered_model_alias(name, PREVIOUS, current)
    c.set_registered_model_alias(name, alias, version)
    _confirm(name, alias, version, uri)
    c.set_model_version_tag(name, version, f"promoted_to_{alias}",
                            time.strftime("%Y-%m-%dT%H:%M:%S") + (f" {reason}" if reason else ""))
    return Promotion(name, alias, current, version)


def rollback(name: str, reason: str = "", uri: str | None = None) -> Promotion:
    """Swap ``@champion`` and ``@previous``: the champion goes back to the version it replaced,
    and the version rolled back from keeps ``@previous`` (a second call rolls forward again).

    ``@champion`` moves first (that is what the servers read), then ``@previous``.
    """
    c = client(uri)
    current = resolve(name, CHAMPION, uri)
    target = resolve(name, PREVIOUS, uri)
    if target is None or target == current:
        raise CourseError(f"{name}@{CHAMPION} has no earlier version to roll back to "
                          f"(it points to {current or 'nothing'} and there is no "
                          f"@{PREVIOUS}): promote a version with tracking.promote instead.")
    c.set_registered_model_alias(name, CHAMPION, target)
    _confirm(name, CHAMPION, target, uri)
    if current is not None:
        c.set_registered_model_alias(name, PREVIOUS, current)
    c.set_model_version_tag(name, target, "rolled_back_to",
                            time.strftime("%Y-%m-%dT%H:%M:%S") + (f" {reason}" if reason else ""))
    return Promotion(name, CHAMPION, current, target)


def _confirm(name: str, alias: str, version: str, uri: str | None) -> None:
    now = resolve(name, alias, uri)
    if now != version:
        raise CourseError(f"{name}@{alias} points to {now}, not {version}: another promotion "
                          f"moved it at the same time; look at tracking.versions_table("
                          f"{name!r}) and promote again if needed.")


def copy_model(model_uri: str, dest: str | Path, uri: str | None = None) -> Path:
    """Download ``models:/...`` or ``runs:/...`` into ``dest`` as a self-contained model
    directory, loadable with no tracking store (e.g. inside a container); returns its path.

    MLflow 3 records the logged model's id in ``MLmodel`` and looks it up in a tracking store
    when loading; the copy's ``MLmodel`` is rewritten without it through ``mlflow.models.Model``.
    """
    quiet()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow.models import Model

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with using(uri or current_uri()):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri,
                                                         dst_path=str(dest)))
    meta = local / "MLmodel"
    if meta.exists():
        model = Model.load(str(meta))
        model.model_id = None
        model.save(str(meta))
    return local.resolve()


def delete_model(name: str, uri: str | None = None) -> bool:
    """Delete a registered model with all its versions and aliases (runs stay). True if it existed."""
    c = client(uri)
    try:
        c.delete_registered_model(name)
    except Exception as err:
        if "RESOURCE_DOES_NOT_EXIST" in str(err) or "not found" in str(err).lower():
            return False
        raise
    return True


def lineage(name: str, ref: str | int = CHAMPION, uri: str | None = None) -> dict[str, Any]:
    """Where a model version came from: its run, params, metrics, dataset digests and tags.

    ``ref`` is an alias (``champion``) or a version number.
    """
    c = client(uri)
    ref = str(ref)
    mv = c.get_model_version(name, ref) if ref.isdigit() else c.get_model_version_by_alias(name, ref)
    out: dict[str, Any] = {"model": name, "version": str(mv.version),
                           "aliases": list(mv.aliases or []), "source": mv.source,
                           "run_id": mv.run_id, "version_tags": dict(mv.tags or {})}
    if mv.run_id:
        run = c.get_run(mv.run_id)
        out.update(experiment_id=run.info.experiment_id, run_name=run.info.run_name,
                   params=dict(run.data.params), metrics=dict(run.data.metrics),
                   run_tags={k: v for k, v in run.data.tags.items()
                             if not k.startswith("mlflow.") or k == "mlflow.source.git.commit"},
                   datasets=[{"name": d.dataset.name, "digest": d.dataset.digest,
                              "context": next((t.value for t in d.tags
                                               if t.key == "mlflow.data.context"), None)}
                             for d in (run.inputs.dataset_inputs if run.inputs else [])])
    return out


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
