"""The training pipeline as a Prefect flow: the steps of :mod:`.steps`, orchestrated.

What Prefect adds to the plain functions:

* **retries, for transient errors only, with backoff**: ``ingest`` is retried up to twice,
  after 0.5 s then 1 s (``exponential_backoff``), and only when the error is transient
  (:func:`.steps.is_transient`: a timeout or a dropped connection, checked by a
  ``retry_condition_fn``); a missing file or a parse error fails at once. ``flaky=N``
  simulates a source that times out on its first N attempts. Validation is never retried:
  bad data stays bad.
* **caching**: ``ingest``, ``validate``, ``split`` and ``train`` are cached on the task, the
  content of its inputs and the source of the pipeline (this module and :mod:`.steps`): like
  Prefect's ``INPUTS + TASK_SOURCE``, but the same in every process (see :data:`CACHED`). A
  rerun on the same batch and config shows ``Cached`` and costs almost nothing, also when a
  scheduled run repeats a manual one; changing the data, the config or the code misses.
* **a record**: every flow and task run, its state, retries and duration, in the API server
  (:mod:`.orchestrator`), queryable with :func:`task_states`.

Registration is idempotent: a model is identified by (data fingerprint, config, code); a rerun
finds its version in the registry instead of registering a duplicate.

Importing this module imports Prefect (about 2 s) and changes nothing else;
``course_helpers.pipeline`` does not import it. :func:`run` prepares Prefect's environment
(:func:`.orchestrator.prepare_environment`) before the first flow runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.runtime import task_run as _task_run
from prefect.tasks import exponential_backoff

from .. import config as course_config
from .. import tracking
from ..errors import CourseError
from ..model import MODEL_NAME
from . import orchestrator, prefect_compat, steps
from .caching import CACHED, code_version, content_key, pipeline_source  # noqa: F401

EXPERIMENT = "training-pipeline"
#: a version's identity, set when it is created: a rerun finds it instead of registering twice
VERSION_TAGS = ("data.fingerprint", "config.key", "code.version")


# -- tasks -------------------------------------------------------------------------------
#: called with (task name, state name) as each task of a run in this process finishes; set by
#: :func:`run` to drive its progress bar
_on_task_done: list = []


def _report(task, task_run, state) -> None:
    """Prefect state hook (``on_completion`` / ``on_failure``): tell :func:`run`'s progress bar."""
    for callback in list(_on_task_done):
        callback(task.name, state.name)


HOOKS = {"on_completion": [_report], "on_failure": [_report]}
#: Seconds before each retry of a transient failure: 0.5, then 1 (doubling each time).
RETRY_DELAYS = exponential_backoff(backoff_factor=0.5)(2)


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect's ``retry_condition_fn``: retry only errors that may go away on their own."""
    return steps.is_transient(prefect_compat.state_result(state, raise_on_failure=False))


@task(name="ingest", retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_if_transient, cache_policy=CACHED, persist_result=True, **HOOKS)
def ingest(n_rows: int, seed: int, corrupt: str | None, path: str | None,
           source_key: str | None, flaky: int = 0):
    """Read (or generate) one batch. ``flaky``: time out on the first N attempts, like a shaky
    source."""
    attempt = _task_run.run_count
    if attempt <= flaky:
        raise TimeoutError(f"data source did not answer (simulated, attempt {attempt})")
    return steps.ingest(n_rows=n_rows, seed=seed, corrupt=corrupt, path=path)


@task(name="validate", cache_policy=CACHED, persist_result=True, **HOOKS)
def validate(df):
    return steps.validate(df)


@task(name="split", cache_policy=CACHED, persist_result=True, **HOOKS)
def split(df, test_size: float, seed: int):
    return steps.split(df, test_size=test_size, seed=seed)


@task(name="train", cache_policy=CACHED, persist_result=True, **HOOKS)
def train(X_train, y_train, cfg: dict):
    return steps.train(X_train, y_train, steps.TrainConfig.from_dict(cfg))


@task(name="evaluate", **HOOKS)
def evaluate(model, X_test, y_test) -> dict:
    return steps.evaluate(model, X_test, y_test)


@task(name="score-champion", **HOOKS)
def score_champion(model_name: str, X_test, y_test, uri: str) -> dict | None:
    """The current champion, re-scored on the candidate's test rows (a fair comparison)."""
    version = tracking.resolve(model_name, tracking.CHAMPION, uri)
    if version is None:
        return None
    import mlflow.sklearn

    with tracking.using(uri):
        champion = mlflow.sklearn.load_model(f"models:/{model_name}/{version}")
    return {"version": version, "metrics": steps.evaluate(champion, X_test, y_test)}


@task(name="gate", **HOOKS)
def gate(candidate: dict, champion: dict | None, min_auc: float, min_delta: float):
    return steps.gate(candidate, champion["metrics"] if champion else None, min_auc, min_delta)


@task(name="register", **HOOKS)
def register(model, batch_df, X_example, *, key: str, model_name: str, experiment: str,
             uri: str, params: dict, metrics: dict, champion: dict | None,
             decision: steps.GateDecision, tags: dict) -> dict:
    """Log the run and register the model (once per identity key); move the aliases."""
    c = tracking.client(uri)
    existing = [mv for mv in _versions(c, model_name) if (mv.tags or {}).get("pipeline.key") == key]
    reused = bool(existing)
    if reused:
        version = str(existing[0].version)
        run_id = existing[0].run_id
    else:
        logged = tracking.log_run(
            experiment, params=params,
            metrics={**metrics, **({"champion_auc": champion["metrics"]["auc"]} if champion else {})},
            tags={**tags, "gate": "promote" if decision.promote else "keep champion",
                  "gate.reasons": " | ".join(decision.reasons)},
            model=model, X_example=X_example, dataset=batch_df, register_as=model_name,
            version_tags={k: tags[k] for k in VERSION_TAGS} | {"pipeline.key": key},
            run_name=f"{params.get('preset', 'custom')}-{tags['data.fingerprint'][:6]}", uri=uri)
        version, run_id = str(logged.version), logged.run_id
    current = tracking.resolve(model_name, tracking.CHAMPION, uri)
    if decision.promote and current != version:
        tracking.promote(model_name, version, tracking.CHAMPION,
                         reason=f"gate: {decision.reasons[-1]}", uri=uri)
        alias = tracking.CHAMPION
    elif current == version:
        alias = tracking.CHAMPION
    else:
        c.set_registered_model_alias(model_name, tracking.CHALLENGER, version)
        alias = tracking.CHALLENGER
    return {"version": version, "run_id": run_id, "alias": alias, "reused": reused}


def _versions(c, name: str) -> list:
    return list(c.search_model_versions(f"name='{name}'"))  # [] for a model not yet registered


# -- the flow ----------------------------------------------------------------------------
@flow(name="training-pipeline", validate_parameters=False)
def training_pipeline(batch: dict, train_config: dict, model_name: str = MODEL_NAME,
                      experiment: str = EXPERIMENT, tracking_uri: str | None = None,
                      min_auc: float = 0.70, min_delta: float = 0.001, flaky: int = 0,
                      refresh_cache: bool = False) -> dict:
    """ingest -> validate -> split -> train -> evaluate (+ champion) -> gate -> register.

    ``refresh_cache``: recompute the cached steps (and overwrite their cache entries).
    """
    uri = tracking_uri or tracking.current_uri()
    cfg = steps.TrainConfig.from_dict(train_config)
    path = batch.get("path")
    # a missing file is ingest's error to report (it is not retried: it will not appear)
    source_key = steps.file_digest(path) if path and Path(path).is_file() else None
    fresh = {"refresh_cache": True} if refresh_cache else {}
    raw = ingest.with_options(**fresh)(batch.get("n_rows", 2_000), batch.get("seed", 0),
                                       batch.get("corrupt"), path, source_key, flaky=flaky)
    df = validate.with_options(**fresh)(raw)
    X_train, X_test, y_train, y_test = split.with_options(**fresh)(df, cfg.test_size, cfg.seed)
    model = train.with_options(**fresh)(X_train, y_train, cfg.to_dict())
    metrics = evaluate(model, X_test, y_test)
    champion = score_champion(model_name, X_test, y_test, uri)
    decision = gate(metrics, champion, min_auc, min_delta)
    fp = steps.fingerprint(df)
    key = hashlib.sha256(f"{fp}|{cfg.key()}|{code_version()}".encode()).hexdigest()[:16]
    params = {**cfg.to_dict(), "preset": batch.get("preset", "custom"), "rows": len(df)}
    from prefect.runtime import flow_run

    tags = {"data.fingerprint": fp, "config.key": cfg.key(), "code.version": code_version(),
            "pipeline.flow_run_id": str(flow_run.id), "pipeline.key": key,
            "data.source": path or f"seed={batch.get('seed', 0)},rows={batch.get('n_rows')}"}
    reg = register(model, df, X_train, key=key, model_name=model_name, experiment=experiment,
                   uri=uri, params=params, metrics=metrics, champion=champion,
                   decision=decision, tags=tags)
    return {"fingerprint": fp, "metrics": metrics, "champion": champion,
            "promote": decision.promote, "reasons": decision.reasons, **reg}


# -- running it --------------------------------------------------------------------------
@dataclasses.dataclass
class PipelineResult:
    """One pipeline run: its state, what it measured and decided, and each task's state."""

    ok: bool
    state: str
    flow_run_id: str
    seconds: float
    preset: str
    config: dict
    error: str = ""
    fingerprint: str | None = None
    metrics: dict | None = None
    champion: dict | None = None
    promote: bool = False
    reasons: list[str] = dataclasses.field(default_factory=list)
    version: str | None = None
    alias: str | None = None
    reused: bool = False
    model_name: str = MODEL_NAME
    tasks: list[dict] = dataclasses.field(default_factory=list)
    #: the failure may go away on its own (a source timing out, a tracking server down):
    #: a trigger leaves such a batch in its inbox for the next attempt
    transient: bool = False

    def summary(self) -> str:
        if not self.ok:
            return f"pipeline {self.state.lower()} after {self.seconds:.1f} s: {self.error}"
        auc = self.metrics["auc"] if self.metrics else float("nan")
        champ = (f"champion v{self.champion['version']} auc {self.champion['metrics']['auc']:.4f}"
                 if self.champion else "no champion yet")
        what = "reused" if self.reused else "registered"
        verdict = ("PROMOTED" if self.promote else "already the champion"
                   if self.alias == "champion" else "not promoted")
        return (f"{self.preset}: auc {auc:.4f} vs {champ} -> {verdict}; {what} "
                f"{self.model_name} v{self.version} as @{self.alias} ({self.seconds:.1f} s)")

    def task_table(self):
        import pandas as pd

        return pd.DataFrame(self.tasks)


def run(preset: str | dict | steps.TrainConfig = "baseline", *, n_rows: int | None = None,
        seed: int = 1, corrupt: str | None = None, path: str | Path | None = None,
        profile: str | None = None, model_name: str = MODEL_NAME, experiment: str = EXPERIMENT,
        tracking_uri: str | None = None, min_auc: float = 0.70, min_delta: float = 0.001,
        flaky: int = 0, refresh_cache: bool = False, raise_on_failure: bool = False,
        progress: bool = True, **overrides: Any) -> PipelineResult:
    """Run the pipeline once on one batch and return what happened (never raises for a failed run
    unless ``raise_on_failure``).

    The batch is ``path`` (CSV/Parquet) or ``n_rows`` (default: the profile's) seeded rows;
    ``preset`` names a config (:data:`steps.PRESETS`), ``overrides`` change its fields;
    ``refresh_cache`` recomputes the cached steps; ``progress`` shows a bar of the finished
    tasks (refreshed at most once a second).
    """
    batch, cfg = inputs(preset, n_rows=n_rows, seed=seed, corrupt=corrupt, path=path,
                        profile=profile, **overrides)
    name = batch["preset"]
    orchestrator.prepare_environment()
    uri = tracking.check(tracking_uri or tracking.current_uri())
    tracking.quiet()
    t0 = time.perf_counter()
    with orchestrator.session(), _quiet_failures(), _progress(name, progress):
        state = training_pipeline(batch, cfg.to_dict(), model_name, experiment, uri, min_auc,
                                  min_delta, flaky, refresh_cache, return_state=True)
        seconds = round(time.perf_counter() - t0, 2)
        flow_run_id = str(state.state_details.flow_run_id)
        tasks = task_states(flow_run_id)
    res = PipelineResult(ok=state.is_completed(), state=state.name, flow_run_id=flow_run_id,
                         seconds=seconds, preset=name, config=cfg.to_dict(),
                         model_name=model_name, tasks=tasks)
    if res.ok:
        out = prefect_compat.state_result(state)  # also inside Jupyter's event loop
        for key in ("fingerprint", "metrics", "champion", "promote", "reasons", "version",
                    "alias", "reused"):
            setattr(res, key, out[key])
    else:
        err = prefect_compat.state_result(state, raise_on_failure=False)
        lost = tracking.lost(uri)  # a server gone mid-run: say that, not its retries
        res.transient = lost is not None or steps.is_transient(err)
        err = lost or err
        res.error = str(err) if isinstance(err, BaseException) else str(state.message)
        if raise_on_failure:
            if isinstance(err, CourseError):
                raise err
            raise CourseError(f"the pipeline failed: {res.error}")
    return res


def inputs(preset: str | dict | steps.TrainConfig = "baseline", *, n_rows: int | None = None,
           seed: int = 1, corrupt: str | None = None, path: str | Path | None = None,
           profile: str | None = None, **overrides: Any) -> tuple[dict, steps.TrainConfig]:
    """The flow's ``batch`` parameter and training config for these choices."""
    cfg = steps.config(preset, **overrides)
    prof = course_config.get_profile(profile)
    if cfg.kind == "forest" and "n_estimators" not in overrides:
        cfg = dataclasses.replace(cfg, n_estimators=prof.n_estimators)
    name = preset if isinstance(preset, str) else "custom"
    batch = {"n_rows": n_rows or prof.n_rows, "seed": seed, "corrupt": corrupt,
             "path": str(Path(path).resolve()) if path else None, "preset": name}
    return batch, cfg


N_TASKS = 8


@contextlib.contextmanager
def _progress(label: str, show: bool):
    """A progress bar of the run's finished tasks (at most one refresh a second)."""
    if not show:
        yield
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=N_TASKS, desc=f"pipeline {label}", unit="task", mininterval=1, leave=False)

    def done(task: str, state: str) -> None:
        bar.set_postfix_str(f"{task}: {state}", refresh=False)
        bar.update(1)

    _on_task_done.append(done)
    try:
        yield
    finally:
        _on_task_done.remove(done)
        bar.close()


@contextlib.contextmanager
def _quiet_failures():
    """Prefect logs every failed task with a full traceback; the result says it in one line."""
    import logging

    loggers = [logging.getLogger(n) for n in ("prefect.flow_runs", "prefect.task_runs")]
    old = [lg.level for lg in loggers]
    if logging.getLogger("prefect").getEffectiveLevel() >= logging.WARNING:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, old):
            lg.setLevel(level)


def task_states(flow_run_id: str) -> list[dict]:
    """Each task run of a flow run, in order: task, state, attempts, seconds."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    rows = []
    for tr in sorted(runs, key=lambda r: (r.expected_start_time or r.created)):
        rows.append({"task": tr.task_key.split("-")[0] if not tr.name else tr.name.rsplit("-", 1)[0],
                     "state": tr.state.name if tr.state else "?",
                     "attempts": tr.run_count,
                     "seconds": round(tr.total_run_time.total_seconds(), 3)})
    return rows
