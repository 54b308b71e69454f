"""Prometheus metrics of the model server; correct under several gunicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set before the workers start (the server does it), each
worker writes its samples to files there and ``/metrics`` merges them.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest

# An unlabelled metric opens its file in the multiprocess directory as soon as it is created,
# here at import: in the gunicorn master (the app is preloaded), before its on_starting hook.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

# Bucket edges near the latency SLOs the course uses (50-300 ms), so p95 estimates are close.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
                   0.75, 1.0, 2.5)

REQUESTS = Counter("mlops_requests_total", "Prediction requests by HTTP status",
                   ["status", "model_version"])
LATENCY = Histogram("mlops_request_latency_seconds", "Prediction request latency",
                    ["model_version"], buckets=LATENCY_BUCKETS)
IN_FLIGHT = Gauge("mlops_requests_in_flight", "Prediction requests being served",
                  ["model_version"], multiprocess_mode="livesum")
CACHE_HITS = Counter("mlops_cache_hits_total", "Rows answered from the cache", ["model_version"])
CACHE_MISSES = Counter("mlops_cache_misses_total", "Rows the model had to predict",
                       ["model_version"])
CACHE_ERRORS = Counter("mlops_cache_errors_total",
                       "Cache calls that failed or timed out (the request was served without it)")
ROWS = Counter("mlops_predicted_rows_total", "Rows predicted (cached or not)", ["model_version"])


def exposition() -> tuple[bytes, str]:
    """The metrics text and its content type, merged across workers when multiprocess."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
