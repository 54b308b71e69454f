"""The course locustfile plus every request's start time and latency, for comparisons that
switch a condition many times within one Locust run (:func:`.shadow.run_shadow`).

Writes ``[[start_epoch_s, latency_ms, ok], ...]`` to ``<MLOPS_LOAD_TIMELINE>.raw.json`` when
Locust quits. Run through :func:`course_helpers.loadtest.run_locust` with
``locustfile=RAW_LOCUSTFILE``.
"""

import json
import time

from locust import events

from course_helpers.loadtest.locustfile import *  # noqa: F401,F403 - the user class and listeners
from course_helpers.loadtest.locustfile import TIMELINE_FILE

_raw: list[list] = []


@events.request.add_listener
def _record_raw(request_type, name, response_time, response_length, exception=None, **kw):
    if len(_raw) < 1_000_000:
        _raw.append([round(time.time() - response_time / 1000, 4), round(response_time, 3),
                     exception is None])


@events.quitting.add_listener
def _dump_raw(environment, **kw):
    if TIMELINE_FILE:
        with open(TIMELINE_FILE + ".raw.json", "w") as fh:
            json.dump(_raw, fh)
