"""The course's Locust user: POSTs rows of the dataset to /predict.

Configured by environment variables set by ``course_helpers.loadtest.run_locust``:
``MLOPS_LOAD_ROWS`` (JSON file with a list of rows), ``MLOPS_LOAD_MIX`` (``uniform`` or
``zipf``), ``MLOPS_LOAD_ZIPF_A``, ``MLOPS_LOAD_BATCH`` (rows per request) and
``MLOPS_LOAD_API`` (``course`` posts to /predict; ``mlflow`` posts the same rows to
``mlflow models serve``'s /invocations, for comparisons) and ``MLOPS_LOAD_RATE`` (requests
per second per user, at most: paced users; 0 or unset: each user fires again at once).
Every variable is documented once in :class:`course_helpers.config.Settings`.
"""

import json
import os
import random
import time
from collections import defaultdict

import numpy as np
from locust import LoadTestShape, constant, constant_throughput, events, task
from locust.contrib.fasthttp import FastHttpUser

from course_helpers.config import settings

_env = settings()
if not _env.load_rows:
    raise SystemExit("MLOPS_LOAD_ROWS is not set: run this locustfile through "
                     "course_helpers.loadtest.run_locust, or set it to a JSON file of rows.")

ROWS = json.loads(open(_env.load_rows).read())
MIX = _env.load_mix
BATCH = _env.load_batch
API = _env.load_api
RATE = _env.load_rate
_rng = np.random.default_rng(_env.load_seed)
if MIX == "zipf":
    a = _env.load_zipf_a
    p = np.arange(1, len(ROWS) + 1, dtype=float) ** -a
    ORDER = _rng.choice(len(ROWS), size=200_000, p=p / p.sum()).tolist()
else:
    ORDER = _rng.integers(0, len(ROWS), size=200_000).tolist()
_pos = random.Random(os.getpid()).randrange(len(ORDER))


def _next_rows():
    global _pos
    out = []
    for _ in range(BATCH):
        _pos = (_pos + 1) % len(ORDER)
        out.append(ROWS[ORDER[_pos]])
    return out


class PredictUser(FastHttpUser):
    # unpaced users measure capacity (a closed loop); paced users offer a fixed rate, so a
    # fast failure (an nginx 502 in a millisecond) is not repeated at once
    wait_time = constant_throughput(RATE) if RATE > 0 else constant(0)

    @task
    def predict(self):
        rows = _next_rows()
        if API == "mlflow":
            path, body = "/invocations", {"dataframe_records": rows}
        else:
            path, body = "/predict", ({"row": rows[0]} if BATCH == 1 else {"rows": rows})
        with self.client.post(path, json=body, name=path, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")


# Exact per-second outcomes (Locust's own history smooths over a 10 s window, which would
# blur a fault-injection blip): {second: [ok, failed, [latencies ms]]}, written at the end.
TIMELINE_FILE = _env.load_timeline
_timeline = defaultdict(lambda: [0, 0, []])


# Written at the first response (epoch seconds), so that a caller timing actions "N seconds
# into the load" counts from when the load really began: starting Locust itself takes
# seconds on a busy machine.
STARTED_FILE = _env.load_started
_started = []


@events.request.add_listener
def _record(request_type, name, response_time, response_length, exception=None, **kw):
    now = time.time()
    if STARTED_FILE and not _started:
        _started.append(now - response_time / 1000)
        with open(STARTED_FILE + ".tmp", "w") as fh:
            fh.write(repr(_started[0]))
        os.replace(STARTED_FILE + ".tmp", STARTED_FILE)
    slot = _timeline[int(now)]
    if exception is None:
        slot[0] += 1
    else:
        slot[1] += 1
    if len(slot[2]) < 20_000:
        slot[2].append(response_time)


@events.quitting.add_listener
def _dump(environment, **kw):
    if not TIMELINE_FILE:
        return
    rows = []
    for sec in sorted(_timeline):
        ok, failed, lat = _timeline[sec]
        lat = np.asarray(lat) if lat else np.asarray([np.nan])
        rows.append({"t": sec, "ok": ok, "failed": failed,
                     "p50_ms": float(np.nanpercentile(lat, 50)),
                     "p95_ms": float(np.nanpercentile(lat, 95))})
    with open(TIMELINE_FILE, "w") as fh:
        json.dump(rows, fh)


SHAPE = _env.load_shape
MAX_USERS = _env.load_users
DURATION = _env.load_duration
STEPS = _env.load_steps

if SHAPE == "step":

    class StepLoad(LoadTestShape):
        """``STEPS`` equal steps of users up to MAX_USERS over DURATION seconds."""

        def tick(self):
            t = self.get_run_time()
            if t >= DURATION:
                return None
            step = min(STEPS - 1, int(t / (DURATION / STEPS)))
            users = max(1, round(MAX_USERS * (step + 1) / STEPS))
            return users, users

elif SHAPE == "ramp":

    class RampLoad(LoadTestShape):
        """Users grow linearly from 1 to MAX_USERS over DURATION seconds."""

        def tick(self):
            t = self.get_run_time()
            if t >= DURATION:
                return None
            users = max(1, round(MAX_USERS * t / DURATION))
            return users, MAX_USERS
