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

The package, by concern: :mod:`.store` (URIs, the client, telemetry and retry settings),
:mod:`.server` (``mlflow server`` and its CLI), :mod:`.runs` (experiments, logging a run),
:mod:`.registry` (versions, aliases, promotion and rollback, lineage). Everything public is
importable from ``course_helpers.tracking``. Importing it is cheap: mlflow and pandas are
imported inside the functions.
"""

from __future__ import annotations

from ..errors import CourseError
from .registry import (CHALLENGER, CHAMPION, PREVIOUS, Promotion, copy_model, delete_model,
                       lineage, promote, resolve, rollback, versions_table)
from .runs import LoggedRun, ensure_experiment, log_run, pip_requirements, runs_table, trusted_types
from .server import (SERVER_ENV, SERVER_NAME, TrackingServer, register_cli, running_server,
                     server_command, start_server, stop_server)
from .store import (CLIENT_ENV, TELEMETRY_ENV, TrackingUnavailableError, artifacts_dir, check,
                    client, current_uri, is_remote, local_uri, lost, quiet, store_dir, use, using)

__all__ = [
    "CHALLENGER", "CHAMPION", "CLIENT_ENV", "PREVIOUS", "SERVER_ENV", "SERVER_NAME",
    "TELEMETRY_ENV", "CourseError", "LoggedRun", "Promotion", "TrackingServer",
    "TrackingUnavailableError", "artifacts_dir", "check", "client", "copy_model",
    "current_uri", "delete_model", "ensure_experiment", "is_remote", "lineage", "local_uri",
    "log_run", "lost", "pip_requirements", "promote", "quiet", "register_cli", "resolve",
    "rollback", "running_server", "runs_table", "server_command", "start_server",
    "stop_server", "store_dir", "trusted_types", "use", "using", "versions_table",
]
