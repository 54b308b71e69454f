"""The only place the course relies on Prefect behaviour that is not a documented public API.

Everything else in :mod:`course_helpers.pipeline` uses Prefect's documented interface (flows,
tasks, ``State.result()``, ``get_client``, ``prefect server start``). Three needs have no
public answer in Prefect 3.9; each is wrapped here, and ``tests/unit/test_pipeline_compat.py``
fails loudly when an upgrade changes the behaviour it relies on:

* :func:`state_result`: ``State.result()`` is documented as synchronous outside an event
  loop and awaitable (``await state.aresult()``) inside one. A Jupyter kernel's main thread
  has a running loop, so there a plain call returns a coroutine. We call the documented
  synchronous form from a worker thread, where no loop runs. (Uses only public calls; it is
  here because it depends on how Prefect decides between the two.)
* :func:`reload_settings`: Prefect reads its settings (``PREFECT_API_URL``...) from the
  environment when imported; a kernel that switches servers afterwards needs them re-read
  (``prefect.context.refresh_global_settings_context``, not in the API reference).
* :func:`flush`: Prefect ships logs and events to the API from background workers; before we
  stop the server they are flushed (``APILogWorker`` / ``EventsWorker.drain_all``, internal).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
from typing import Any


def in_event_loop() -> bool:
    """True when this thread runs an asyncio loop (a Jupyter kernel's main thread does)."""
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def state_result(state: Any, raise_on_failure: bool = True) -> Any:
    """``state.result(raise_on_failure=...)``, synchronously, also inside a running event loop.

    Outside a loop this is exactly the documented call; inside one, the same call is made
    from a worker thread, where Prefect takes its synchronous path.
    """
    if not in_event_loop():
        return _checked(state.result(raise_on_failure=raise_on_failure))
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="prefect-result") as pool:
        return pool.submit(lambda: _checked(state.result(raise_on_failure=raise_on_failure))
                           ).result()


def _checked(value: Any) -> Any:
    if inspect.isawaitable(value):  # Prefect changed how it picks sync vs async: fix here
        if inspect.iscoroutine(value):
            value.close()
        raise RuntimeError("Prefect's State.result() returned an awaitable outside an event "
                           "loop: course_helpers.pipeline.prefect_compat needs updating")
    return value


def reload_settings() -> None:
    """Make an already imported Prefect re-read its settings from the environment."""
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()


def flush(timeout: float = 5.0) -> None:
    """Send the logs and events Prefect still holds to the API server (best effort)."""
    import sys

    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    def drain() -> None:
        for worker in (APILogWorker, EventsWorker):
            with contextlib.suppress(Exception):
                result = worker.drain_all(timeout=timeout, at_exit=False)
                if inspect.isawaitable(result):
                    asyncio.run(_await(result))

    if in_event_loop():
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(drain).result()
    else:
        drain()


async def _await(awaitable: Any) -> Any:
    return await awaitable
