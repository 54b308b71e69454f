"""Run the pipeline on a schedule: Prefect's scheduler creates the runs, a runner executes them.

A trigger (:mod:`.triggers`) runs the pipeline *on an event*; a schedule runs it *at times*
("retrain every night on the latest data"). Two real Prefect processes do the work, both
started through the course's supervisor, so ``mlops-course cleanup`` stops them:

* ``prefect server start`` with its scheduler (:func:`.orchestrator.start_server` with
  ``scheduler=True``): every few seconds it turns each deployment's schedule into
  ``Scheduled`` flow runs. Prefect's ephemeral API server has no scheduler: it refuses.
* a runner (``flow.serve``) that creates the deployment ``training-pipeline/scheduled`` and
  executes each run when it is due, in a subprocess of its own.

Point ``path`` at a "latest batch" file and every tick trains on whatever is there now: an
unchanged file hits the cache and reuses its version; a new one trains, is gated, maybe
promoted.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CourseError
from ..model import MODEL_NAME
from . import orchestrator

RUNNER_NAME = "prefect-runner"
FLOW_NAME = "training-pipeline"
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


@dataclasses.dataclass
class ScheduledPipeline:
    """A pipeline deployment with an interval schedule, served by a supervised runner."""

    deployment: str
    deployment_id: str
    every_s: float
    api_url: str
    started_at: float

    def runs(self):
        """Its flow runs, oldest first, and the next two due: a DataFrame with the columns
        run, due (local time), late_s (start minus due), state, seconds, cached (tasks served
        from the cache), version, alias, promoted."""
        import pandas as pd

        runs = self._flow_runs()
        upcoming = [fr for fr in runs if fr.state and fr.state.type.value == "SCHEDULED"]
        shown = [fr for fr in runs if fr not in upcoming] + upcoming[:2]
        cols = ["run", "due", "late_s", "state", "seconds", "cached", "version", "alias",
                "promoted"]
        df = pd.DataFrame([_row(fr) for fr in shown], columns=cols)
        return df.astype({"cached": "Int64"})

    def wait(self, n: int = 1, timeout_s: float | None = None,
             echo: Callable[[str], Any] | None = None, progress: bool = True):
        """Block until ``n`` runs started after :func:`start` have finished; returns
        :meth:`runs`. ``timeout_s`` defaults to ``n`` intervals plus 3 minutes."""
        timeout_s = timeout_s if timeout_s is not None else n * self.every_s + 180
        deadline = time.monotonic() + timeout_s
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc=f"scheduled runs (every {self.every_s:g} s)", unit="run",
                       leave=False)
        seen: set[str] = set()
        try:
            while True:
                done = [fr for fr in self._flow_runs()
                        if fr.state and fr.state.type.value in FINAL]
                for fr in done:
                    if str(fr.id) not in seen:
                        seen.add(str(fr.id))
                        if bar is not None:
                            bar.update(1)
                        if echo:
                            r = _row(fr)
                            echo(f"{r['run']} due {r['due']}: {r['state']} in {r['seconds']} s, "
                                 f"{r['cached']} cached task(s), v{r['version']} @{r['alias']}")
                if len(done) >= n:
                    break
                if not _runner_alive():
                    raise CourseError("the Prefect runner stopped: "
                                      f"{_runner_log_tail() or 'no log'}")
                if time.monotonic() > deadline:
                    raise CourseError(
                        f"{len(done)} of {n} scheduled runs finished within {timeout_s:.0f} s; "
                        f"the runner's log: {_runner_log_tail()}")
                time.sleep(1.0)
        finally:
            if bar is not None:
                bar.close()
        return self.runs()

    def stop(self) -> None:
        """Pause the schedule, drop the runs not yet started and stop the runner."""
        from ..supervisor import Supervisor

        try:
            _unschedule(self.deployment_id)
            _wait_idle()
        finally:
            Supervisor().stop(RUNNER_NAME)

    def _flow_runs(self) -> list:
        from prefect import get_client
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[self.deployment_id])))
        since = self.started_at - 1
        return sorted((fr for fr in runs if fr.created and fr.created.timestamp() >= since),
                      key=lambda fr: fr.expected_start_time or fr.created)

    def __enter__(self) -> "ScheduledPipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(every_s: float = 30, *, preset: str = "baseline", path: str | Path | None = None,
          seed: int = 1, n_rows: int | None = None, profile: str | None = None,
          model_name: str = MODEL_NAME, tracking_uri: str | None = None,
          min_auc: float = 0.70, min_delta: float = 0.001, name: str = "scheduled",
          timeout_s: float = 120.0) -> ScheduledPipeline:
    """Schedule the pipeline every ``every_s`` seconds (at least 5) and start its runner.

    Starts (or reuses) the workspace's ``prefect server start``, then a runner that serves the
    deployment ``training-pipeline/<name>``. Stop it with :meth:`ScheduledPipeline.stop` (or
    use it as a context manager); ``mlops-course cleanup`` stops everything too.
    """
    from .. import tracking
    from ..supervisor import Supervisor
    from .flow import inputs

    if every_s < 5:
        raise CourseError(f"every_s={every_s:g}: the scheduler looks every 5 s; use 5 or more.")
    batch, cfg = inputs(preset, n_rows=n_rows, seed=seed, path=path, profile=profile)
    if path is not None and not Path(path).exists():
        raise CourseError(f"{path} does not exist: write a batch there first "
                          "(pipeline.triggers.drop_batch or `mlops-course pipeline drop-batch`).")
    uri = tracking.check(tracking_uri or tracking.current_uri())
    parameters = {"batch": batch, "train_config": cfg.to_dict(), "model_name": model_name,
                  "tracking_uri": uri, "min_auc": min_auc, "min_delta": min_delta}
    url = orchestrator.connect(timeout_s, scheduler=True)
    sup = Supervisor()
    sup.stop(RUNNER_NAME)  # one runner per workspace: a new schedule replaces the old one
    deployment = f"{FLOW_NAME}/{name}"
    old = _deployment_id(deployment)
    if old:
        _unschedule(old)  # runs left from an earlier schedule must not all fire at once
    started_at = time.time()
    spec = {"name": name, "every_s": every_s, "parameters": parameters}
    env = {**orchestrator.client_env(url), "PREFECT_RUNNER_POLL_FREQUENCY": "2",
           "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true", "PREFECT_LOGGING_LEVEL": "INFO"}
    rec = sup.start(RUNNER_NAME, [sys.executable, "-m", __name__, json.dumps(spec)], env=env)
    deadline = time.monotonic() + timeout_s
    while (dep_id := _deployment_id(deployment, newer_than=started_at)) is None:
        if not rec.is_alive():
            raise CourseError(f"the Prefect runner exited: {_runner_log_tail()}")
        if time.monotonic() > deadline:
            sup.stop(RUNNER_NAME)
            raise CourseError(f"the runner did not create {deployment} within {timeout_s:.0f} s: "
                              f"{_runner_log_tail()}")
        time.sleep(0.5)
    return ScheduledPipeline(deployment, dep_id, float(every_s), url, started_at)


def _deployment_id(name: str, newer_than: float | None = None) -> str | None:
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            dep = client.read_deployment_by_name(name)
        except ObjectNotFound:
            return None
    if newer_than is not None and dep.updated and dep.updated.timestamp() < newer_than - 1:
        return None  # the previous schedule's deployment, not yet updated by the new runner
    return str(dep.id)


def _unschedule(deployment_id: str) -> None:
    """Pause the deployment's schedule and delete its runs that have not started."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        client.pause_deployment(deployment_id)
        pending = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))))
        for fr in pending:
            client.delete_flow_run(fr.id)


def _row(fr) -> dict:
    from .flow import task_states
    from .prefect_compat import state_result

    state = fr.state.type.value if fr.state else "?"
    row = {"run": fr.name, "state": fr.state.name if fr.state else "?",
           "due": fr.expected_start_time.astimezone().strftime("%H:%M:%S")
           if fr.expected_start_time else "",
           "late_s": round((fr.start_time - fr.expected_start_time).total_seconds(), 1)
           if fr.start_time and fr.expected_start_time else None,
           "seconds": round(fr.total_run_time.total_seconds(), 1) if fr.total_run_time else None,
           "cached": None, "version": None, "alias": None, "promoted": None}
    if state in FINAL:
        row["cached"] = sum(t["state"] == "Cached" for t in task_states(str(fr.id)))
    if state == "COMPLETED":
        try:
            out = state_result(fr.state, raise_on_failure=False)
        except Exception:  # the result was not persisted (a run from another configuration)
            out = None
        if isinstance(out, dict):
            row.update(version=out.get("version"), alias=out.get("alias"),
                       promoted=out.get("promote"))
    return row


def _wait_idle(timeout_s: float = 60.0) -> None:
    """Let a run in progress finish: a run's process (a multiprocessing child of the runner)
    outlives its ``Completed`` state by a moment, and a runner stopped then cancels the run."""
    import psutil

    from ..supervisor import Supervisor

    rec = Supervisor().get(RUNNER_NAME)
    if rec is None or not rec.is_alive():
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            busy = [p for p in psutil.Process(rec.pid).children()  # not the resource_tracker
                    if p.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(p.cmdline())]
        except psutil.NoSuchProcess:
            return
        if not busy:
            return
        time.sleep(0.5)


def _runner_alive() -> bool:
    from ..supervisor import Supervisor

    rec = Supervisor().get(RUNNER_NAME)
    return rec is not None and rec.is_alive()


def _runner_log_tail() -> str:
    from ..supervisor import Supervisor

    rec = Supervisor().get(RUNNER_NAME)
    return rec.log_tail(8) if rec else ""


#: The first tick is due this many seconds after the runner creates the deployment (the
#: scheduler looks for new deployments every 2 s), not a whole interval later.
FIRST_TICK_S = 3.0


def _serve(spec: dict) -> None:
    """The runner process: create (or update) the deployment and execute its runs."""
    from datetime import datetime, timedelta, timezone

    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Interval

    from .flow import training_pipeline

    first = datetime.now(timezone.utc) + timedelta(seconds=FIRST_TICK_S)
    training_pipeline.serve(name=spec["name"],
                            schedule=Interval(timedelta(seconds=spec["every_s"]),
                                              anchor_date=first),
                            parameters=spec["parameters"], limit=1,
                            print_starting_message=False,
                            entrypoint_type=EntrypointType.MODULE_PATH)


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
