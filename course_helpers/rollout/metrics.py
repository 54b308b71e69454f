"""Where the canary controller reads each track's metrics: Prometheus, or the servers directly.

Both implement the small interface the controller needs: ``mark()`` starts an analysis
window, ``read()`` returns ``{"stable": TrackMetrics, "canary": TrackMetrics}`` for the
window since the last mark (requests, 5xx errors, p95 latency in ms of the server's
``mlops_request_latency_seconds`` histogram).

* :class:`PrometheusSource` (lesson 08's Prometheus, the real thing): each server is a
  scrape target labelled ``track="stable"`` or ``track="canary"``; ``read`` runs PromQL
  ``increase`` and ``histogram_quantile`` over the window.
* :class:`ScrapeSource`: reads ``/metrics`` of each server at ``mark`` and ``read`` and
  subtracts, with the same bucket interpolation as ``histogram_quantile``. For machines
  without Prometheus, and to check the Prometheus numbers.
"""

from __future__ import annotations

import math
import time
import urllib.request
from typing import Protocol

from .decision import TrackMetrics

REQUESTS = "mlops_requests_total"
LATENCY = "mlops_request_latency_seconds"


class MetricsSource(Protocol):
    def mark(self) -> None: ...

    def read(self) -> dict[str, TrackMetrics]: ...


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' ``histogram_quantile``: ``buckets`` are cumulative ``(le, count)`` pairs
    (``le`` in seconds, ``inf`` last); linear interpolation inside the bucket. NaN if empty."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return float("nan")
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le  # as Prometheus: the upper bound of the last finite bucket
            width = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / width if width else 1)
        prev_le, prev_count = le, count
    return prev_le


def parse_metrics(text: str) -> dict:
    """``{"requests": n, "errors": n5xx, "buckets": {le: count}}`` summed over label sets."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {"requests": 0.0, "errors": 0.0, "buckets": {}}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == REQUESTS:
                out["requests"] += s.value
                if str(s.labels.get("status", "")).startswith("5"):
                    out["errors"] += s.value
            elif s.name == LATENCY + "_bucket":
                le = float(s.labels["le"])
                out["buckets"][le] = out["buckets"].get(le, 0.0) + s.value
    return out


def _scrape(url: str) -> dict:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=5) as resp:
            return parse_metrics(resp.read().decode())
    except OSError:
        return {"requests": 0.0, "errors": 0.0, "buckets": {}}


def _delta(now: dict, then: dict) -> TrackMetrics:
    buckets = [(le, c - then["buckets"].get(le, 0.0)) for le, c in now["buckets"].items()]
    p95 = histogram_quantile(0.95, buckets)
    return TrackMetrics(requests=now["requests"] - then["requests"],
                        errors=now["errors"] - then["errors"],
                        p95_ms=p95 * 1000 if not math.isnan(p95) else float("nan"))


class ScrapeSource:
    """Reads the servers' ``/metrics`` directly: ``urls`` maps track -> server URL."""

    name = "scrape"

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls
        self._base: dict[str, dict] = {}

    def mark(self) -> None:
        self._base = {track: _scrape(url) for track, url in self.urls.items()}

    def read(self) -> dict[str, TrackMetrics]:
        return {track: _delta(_scrape(url), self._base.get(track, {"requests": 0.0,
                                                                   "errors": 0.0,
                                                                   "buckets": {}}))
                for track, url in self.urls.items()}


class PrometheusSource:
    """PromQL over the window since ``mark`` (at least two scrape intervals long).

    ``query`` is a function PromQL -> list of ``(labels, value)`` or a DataFrame with a
    ``value`` column (lesson 08's ``monitoring.query``); each track is the scrape job
    ``<job>-<track>`` whose targets carry the label ``track="<track>"``.
    """

    name = "prometheus"

    def __init__(self, query, job: str = "rollout", scrape_interval_s: float = 1.0) -> None:
        self.query, self.job, self.scrape_interval_s = query, job, scrape_interval_s
        self._since = time.time()

    def mark(self) -> None:
        self._since = time.time()

    def _scalar(self, promql: str) -> float:
        import warnings

        with warnings.catch_warnings():  # no series (no 5xx yet, no traffic): handled below
            warnings.simplefilter("ignore", UserWarning)
            res = self.query(promql)
        try:  # a DataFrame (monitoring.query) or a list of (labels, value)
            values = list(res["value"]) if hasattr(res, "columns") else [v for _, v in res]
        except (KeyError, TypeError):
            values = []
        return float(values[0]) if values else float("nan")

    def read(self) -> dict[str, TrackMetrics]:
        window = max(int(math.ceil(time.time() - self._since)), int(2 * self.scrape_interval_s) + 1)
        out = {}
        for track in ("stable", "canary"):
            sel = f'job="{self.job}-{track}",track="{track}"'
            req = self._scalar(f"sum(increase({REQUESTS}{{{sel}}}[{window}s]))")
            err = self._scalar(f'sum(increase({REQUESTS}{{{sel},status=~"5.."}}[{window}s]))')
            p95 = self._scalar(f"histogram_quantile(0.95, sum by (le) "
                               f"(rate({LATENCY}_bucket{{{sel}}}[{window}s])))")
            out[track] = TrackMetrics(requests=0.0 if math.isnan(req) else req,
                                      errors=0.0 if math.isnan(err) else err,
                                      p95_ms=p95 * 1000 if not math.isnan(p95) else float("nan"))
        return out
