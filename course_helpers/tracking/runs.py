"""Experiments and runs: log a training run (params, metrics, dataset digest, model) and query
runs. Also how the course's models are saved in MLflow's format (requirements, skops types)."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any

from .store import artifacts_dir, check, client, using


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


def pip_requirements() -> list[str]:
    """Explicit requirements (inferring them spawns a subprocess costing ~5 s a model)."""
    import importlib.metadata as md

    return [f"{p}=={md.version(p)}" for p in ("scikit-learn", "numpy", "pandas", "mlflow")]


def trusted_types(model) -> list[str] | None:
    """Types skops must be told to trust to save ``model`` (ours): trees, also inside pipelines."""
    from sklearn.base import BaseEstimator
    from sklearn.ensemble import BaseEnsemble
    from sklearn.tree import BaseDecisionTree

    parts = [model]
    if isinstance(model, BaseEstimator):
        parts += [v for v in model.get_params(deep=True).values() if isinstance(v, BaseEstimator)]
    # a course class that wraps a model (lesson 09's FaultyModel) names itself
    types = sorted({t for p in parts for t in getattr(p, "skops_trusted_types_", [])})
    if any(isinstance(p, (BaseEnsemble, BaseDecisionTree)) for p in parts):
        types.append("sklearn.tree._tree.Tree")
    return types or None


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
