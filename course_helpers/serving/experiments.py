"""Lesson 01's measured experiments on the server, kept out of the notebook."""

from __future__ import annotations


def liveness_under_load(model_uri: str, *, users: int = 6, duration_s: int = 5,
                        rows: list[dict] | None = None) -> "pd.DataFrame":  # noqa: F821
    """Saturate ``/predict`` with Locust while probing ``/health`` every 50 ms, for the two
    designs of the predict handler: in a worker thread (the server's design) and on the
    event loop (a naive ``async def`` that calls the model directly).

    One worker, no cache, no log. Returns one line per design: predictions/s, failed
    predictions, and the probe latencies (ms): p50, p99, max, probes that failed (timeout 1 s).
    """
    import pandas as pd

    from ..loadtest import run_locust
    from .client import HealthProbe
    from .server import serve

    out = []
    for design, on_loop in (("worker thread (def)", False), ("event loop (async def)", True)):
        name = "liveness-" + ("loop" if on_loop else "thread")
        srv = serve(model_uri, name=name, workers=1, cache="none", db=None,
                    predict_on_loop=on_loop)
        try:
            with HealthProbe(srv.url) as probe:
                res = run_locust(srv.url, users=users, spawn_rate=users, duration_s=duration_s,
                                 rows=rows, label=name)
        finally:
            srv.stop()
        h = probe.summary()
        out.append({"predict handler": design, "predictions/s": round(res.rps, 1),
                    "failed predictions": res.failures, "/health p50 ms": round(h["p50_ms"], 1),
                    "/health p99 ms": round(h["p99_ms"], 1), "/health max ms": round(h["max_ms"], 1),
                    "/health probes failed": h["failed"], "probes": h["probes"]})
    return pd.DataFrame(out).set_index("predict handler")
