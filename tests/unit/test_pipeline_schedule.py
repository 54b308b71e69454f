"""Schedule arguments and server commands, without starting anything."""

from __future__ import annotations

import pytest

from course_helpers.errors import CourseError
from course_helpers.pipeline import orchestrator, schedule
from course_helpers.supervisor import Supervisor

pytestmark = pytest.mark.unit


def test_too_short_an_interval_is_refused_before_anything_starts(workspace):
    with pytest.raises(CourseError, match="every_s=1.*5 or more"):
        schedule.start(1)
    with pytest.raises(CourseError, match="does not exist.*drop-batch"):
        schedule.start(10, path=workspace / "missing.parquet")
    assert Supervisor(workspace).records() == []


def test_the_scheduler_server_is_prefect_server_start_on_loopback(workspace):
    cmd = orchestrator.server_command(4242, scheduler=True)
    assert orchestrator.has_scheduler(cmd) and "--scheduler" in cmd and "--no-ui" in cmd
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert not orchestrator.has_scheduler(orchestrator.server_command(4242))
    env = orchestrator.scheduler_env()
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["DO_NOT_TRACK"] == "true"
    assert float(env["PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"]) <= 5
    assert env["PREFECT_HOME"] == str(workspace / "prefect")
    assert "PREFECT_API_URL" not in env
