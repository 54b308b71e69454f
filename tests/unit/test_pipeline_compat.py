"""The Prefect adapter (pipeline.prefect_compat): fails loudly when an upgrade changes what it
relies on. No server needed: states are built directly."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def test_state_result_outside_and_inside_an_event_loop():
    from prefect.states import Completed, Failed

    from course_helpers.pipeline.prefect_compat import state_result

    done = Completed(data={"version": "3"})
    assert state_result(done) == {"version": "3"}

    async def in_a_loop():  # what a Jupyter kernel's main thread looks like
        raw = done.result()
        awaitable = asyncio.iscoroutine(raw)
        if awaitable:
            raw.close()
        return awaitable, state_result(done), state_result(Failed(data=TimeoutError("late")),
                                                           raise_on_failure=False)

    awaitable, value, error = asyncio.run(in_a_loop())
    # the reason the adapter exists: if this changes, state.result() may be called directly
    assert awaitable, "Prefect's State.result() no longer returns a coroutine inside a loop"
    assert value == {"version": "3"}
    assert isinstance(error, TimeoutError)
    with pytest.raises(TimeoutError):
        state_result(Failed(data=TimeoutError("late")))


def test_reload_settings_picks_up_a_new_api_url():
    code = (
        "import os\n"
        "from prefect.settings import get_current_settings\n"
        "from course_helpers.pipeline import prefect_compat\n"
        "os.environ['PREFECT_API_URL'] = 'http://127.0.0.1:9/api'\n"
        "prefect_compat.reload_settings()\n"
        "print(get_current_settings().api.url)\n")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "http://127.0.0.1:9/api"


def test_flush_finds_prefects_background_workers():
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    from course_helpers.pipeline.prefect_compat import flush

    for worker in (APILogWorker, EventsWorker):
        assert callable(getattr(worker, "drain_all", None)), f"{worker.__name__}.drain_all is gone"
    flush(timeout=1)  # nothing to send: returns at once, also with no server


def test_importing_the_flow_changes_no_environment_variable():
    code = ("import os, json\nbefore = dict(os.environ)\n"
            "import course_helpers.pipeline.flow\n"
            "print(json.dumps(sorted(k for k in os.environ if os.environ.get(k) != before.get(k))))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_api_server_is_prefects_documented_command():
    from course_helpers.pipeline import orchestrator

    api = orchestrator.server_command(4200)
    assert api[1:5] == ["-m", "prefect", "server", "start"] and "--no-scheduler" in api
    assert ["--host", "127.0.0.1"] == api[5:7]
    assert not orchestrator.has_scheduler(api)
    sched = orchestrator.server_command(4200, scheduler=True)
    assert "--scheduler" in sched and orchestrator.has_scheduler(sched)
    assert not any(k.startswith("PREFECT__") for k in orchestrator.server_env())
