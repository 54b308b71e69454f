"""Shadow deployment: nginx ``mirror`` sends a copy of live traffic to the challenger, whose
answers the client never sees; both servers log their predictions, and
:func:`compare_logs` joins the logs on the request id nginx gives both copies.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from .. import config
from ..errors import CourseError

PREFIX = "shadow"


def read_log(db: str | Path):
    """A server's prediction log (SQLite) as a DataFrame."""
    import pandas as pd

    path = Path(str(db).removeprefix("sqlite:///"))
    if not path.exists():
        raise CourseError(f"no prediction log at {path}: was the server started with a db?")
    with sqlite3.connect(path, timeout=5) as con:
        return pd.read_sql_query("SELECT request_id, row_index, ts, model_version, variant, "
                                 "prediction, probability, latency_ms FROM predictions", con)


def compare_logs(primary, shadow) -> dict:
    """Agreement and latency of a shadow against the primary, from their prediction logs
    (paths or DataFrames), matched on ``(request_id, row_index)``.

    Returns ``matched`` (predictions both answered), ``primary_only`` (the shadow missed
    them: it was slow, down or erroring), ``agreement`` (share of matched predictions with
    the same class), ``max_probability_diff``, and the server-side latency (ms) of each,
    with ``latency_diff_p50_ms``/``latency_diff_p95_ms`` (shadow minus primary, per pair).
    """
    import numpy as np

    a = primary if hasattr(primary, "columns") else read_log(primary)
    b = shadow if hasattr(shadow, "columns") else read_log(shadow)
    key = ["request_id", "row_index"]
    m = a.merge(b, on=key, suffixes=("_primary", "_shadow"))
    out = {"primary_rows": len(a), "shadow_rows": len(b), "matched": len(m),
           "primary_only": int(len(a) - len(m)), "agreement": float("nan"),
           "max_probability_diff": float("nan")}
    if len(m):
        diff = m["latency_ms_shadow"] - m["latency_ms_primary"]
        out.update(
            agreement=float((m["prediction_primary"] == m["prediction_shadow"]).mean()),
            max_probability_diff=float(np.nanmax(np.abs(m["probability_primary"]
                                                         - m["probability_shadow"]))),
            primary_p95_ms=float(m["latency_ms_primary"].quantile(0.95)),
            shadow_p95_ms=float(m["latency_ms_shadow"].quantile(0.95)),
            latency_diff_p50_ms=float(diff.quantile(0.5)),
            latency_diff_p95_ms=float(diff.quantile(0.95)))
    return out


def run_shadow(stable_uri: str, shadow_uri: str, profile: str | None = None,
               out: str | Path | None = None, rate_per_user: float = 10.0,
               duration_s: int | None = None, servers=None) -> dict:
    """Serve ``stable_uri`` behind nginx, load it with Locust without and then with a mirror
    to ``shadow_uri``, compare client p95 (``mirror_p95_ratio`` = with / without) and the two
    prediction logs. Writes ``shadow.json``; stops everything it started. ``servers``: a
    :class:`.canary.ServerPool` to take the two model servers from (kept running)."""
    from ..deploy.nginx import LoadBalancer, Server, Upstream
    from ..loadtest import run_locust
    from .canary import stop_servers

    prof = config.get_profile(profile)
    duration_s = duration_s or prof.duration_s
    out = Path(out) if out else config.workspace_dir("rollout", "shadow")
    out.mkdir(parents=True, exist_ok=True)
    started: list[str] = []
    lb = LoadBalancer(f"{PREFIX}-lb")
    try:
        from .canary import start_tracks

        uris = {"stable": stable_uri, "shadow": shadow_uri}
        tracks = (servers.tracks(uris) if servers is not None
                  else start_tracks(uris, PREFIX, started))
        handles = {t: tr.handle for t, tr in tracks.items()}
        since = time.time()
        ups = [Upstream("primary", [Server(handles["stable"].url.removeprefix("http://"))]),
               Upstream("shadow", [Server(handles["shadow"].url.removeprefix("http://"))])]
        lb.start(ups, default="primary")
        started.append(lb.name)
        kw = dict(users=prof.users, duration_s=duration_s, rate_per_user=rate_per_user,
                  progress=False, out_dir=out)
        without = run_locust(lb.url, label="no-mirror", **kw)
        mirrored_from = time.time()
        lb.update(ups, default="primary", mirror="shadow")
        with_m = run_locust(lb.url, label="mirror", **kw)
        time.sleep(1)  # the last mirrored requests land in the shadow's log
        primary = read_log(handles["stable"].db)
        mirrored = read_log(handles["shadow"].db)  # the log outlives runs: this run's rows only
        comparison = compare_logs(primary[primary["ts"] >= mirrored_from],
                                  mirrored[mirrored["ts"] >= since])
    finally:
        if lb.name in started:
            lb.stop()
        stop_servers([n for n in started if n != lb.name])
    report = {"profile": prof.name, "stable": stable_uri, "shadow": shadow_uri,
              "p95_without_mirror_ms": without.p95_ms, "p95_with_mirror_ms": with_m.p95_ms,
              "mirror_p95_ratio": round(with_m.p95_ms / without.p95_ms, 3)
              if without.p95_ms else float("nan"),
              "requests_without": without.requests, "requests_with": with_m.requests,
              "failures_with": with_m.failures, "comparison": comparison}
    (out / "shadow.json").write_text(json.dumps(report, indent=2))
    report["out"] = str(out)
    return report
