"""The course's Locust user: POSTs rows of the dataset to /predict.

Configured by environment variables set by ``course_helpers.loadtest.run_locust``:
``MLOPS_LOAD_ROWS`` (JSON file with a list of rows), ``MLOPS_LOAD_MIX`` (``uniform`` or
``zipf``), ``MLOPS_LOAD_ZIPF_A``, ``MLOPS_LOAD_BATCH`` (rows per request) and
``MLOPS_LOAD_API`` (``course`` posts to /predict; ``mlflow`` posts the same rows to
``mlflow models serve``'s /invocations, for comparisons).
"""

import json
import os
import random

import numpy as np
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser

ROWS = json.loads(open(os.environ["MLOPS_LOAD_ROWS"]).read())
MIX = os.environ.get("MLOPS_LOAD_MIX", "uniform")
BATCH = int(os.environ.get("MLOPS_LOAD_BATCH", "1"))
API = os.environ.get("MLOPS_LOAD_API", "course")
_rng = np.random.default_rng(int(os.environ.get("MLOPS_LOAD_SEED", "7")))
if MIX == "zipf":
    a = float(os.environ.get("MLOPS_LOAD_ZIPF_A", "1.2"))
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
    wait_time = constant(0)

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
