"""Scheduled pipeline runs: a real `prefect server start` with its scheduler and a real runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from course_helpers import tracking
from course_helpers.errors import CourseError
from course_helpers.supervisor import Supervisor
from tests.helpers import gone, module_workspace

pytestmark = pytest.mark.integration

MODEL = "scheduled-test"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    yield from module_workspace(tmp_path_factory, "schedule-home")


def test_api_only_server_in_use_is_not_replaced(home):
    from course_helpers.pipeline import orchestrator, schedule

    orchestrator.start_server(keep=True)  # like `mlops-course pipeline server start`
    try:
        with pytest.raises(CourseError, match="without a scheduler.*pipeline server stop"):
            schedule.start(10, profile="smoke", model_name=MODEL)
        assert Supervisor(home).get(schedule.RUNNER_NAME) is None, "no runner was started"
    finally:
        orchestrator.stop_server()


def test_schedule_runs_the_latest_batch_at_each_tick_then_stops(home, tmp_path):
    from course_helpers.pipeline import schedule, steps

    latest = tmp_path / "latest.parquet"
    steps.ingest(n_rows=800, seed=1).to_parquet(latest, index=False)
    sched = schedule.start(6, path=latest, profile="smoke", model_name=MODEL)
    try:
        server = Supervisor(home).get("prefect")
        assert server.cmd[1:5] == ["-m", "prefect", "server", "start"] and "--scheduler" in server.cmd
        first = sched.wait(1, progress=False)
        done = first[first["state"] == "Completed"]
        assert len(done) == 1, first
        assert (done.iloc[0]["version"], done.iloc[0]["alias"]) == ("1", "champion")

        # new data lands between two ticks: the next run trains on it (no cached step)
        steps.ingest(n_rows=800, seed=7).to_parquet(latest.with_suffix(".tmp"), index=False)
        os.replace(latest.with_suffix(".tmp"), latest)
        table = sched.wait(2, progress=False)
        if table[table["state"] == "Completed"].iloc[1]["version"] == "1":
            table = sched.wait(3, progress=False)  # that run had read the file just before
        done = table[table["state"] == "Completed"]
        fresh = done[done["version"] == "2"]
        assert len(fresh) == 1 and fresh.iloc[0]["cached"] == 0, table
        assert int(done.iloc[0]["cached"]) == 0
        versions = tracking.versions_table(MODEL)
        assert sorted(versions["version"].astype(str)) == ["1", "2"], "one version per batch"
    finally:
        sched.stop()
    runner = Supervisor(home).get(schedule.RUNNER_NAME)
    assert runner is None, "the runner was stopped"
    left = sched.runs()
    assert "Scheduled" not in set(left["state"]), left
    assert "Cancelled" not in set(left["state"]), "stop() let the last run finish"
    from prefect import get_client

    with get_client(sync_client=True) as client:
        assert client.read_deployment(sched.deployment_id).paused


def test_cleanup_stops_runner_and_server_after_the_owner_is_killed(tmp_path):
    ws = tmp_path / "owner"
    env = {**os.environ, "MLOPS_HOME": str(ws)}
    env.pop("MLFLOW_TRACKING_URI", None)
    code = textwrap.dedent("""
        import time
        from course_helpers.pipeline import schedule
        from course_helpers.supervisor import Supervisor
        schedule.start(3600, profile="smoke")
        sup = Supervisor()
        print(sup.get("prefect").pid, sup.get("prefect-runner").pid, flush=True)
        time.sleep(600)
    """)
    owner = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                             text=True)
    try:
        pids = [int(p) for p in owner.stdout.readline().split()]
        assert len(pids) == 2, "the owner printed the server's and the runner's pids"
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        assert all(psutil.pid_exists(p) and not gone(p, 1) for p in pids), "both outlive it"
        out = subprocess.run([sys.executable, "-m", "course_helpers.cli", "cleanup",
                              "--no-containers"], env=env, capture_output=True, text=True,
                             timeout=90)
        assert "prefect-runner" in out.stdout and "process prefect" in out.stdout, out.stdout
        assert all(gone(p, 15.0) for p in pids)
    finally:
        if owner.poll() is None:
            owner.kill()
        Supervisor(ws).cleanup(containers=False)
