"""Why bucket edges matter: quantiles estimated from a histogram vs the true ones.

Prometheus's ``histogram_quantile`` finds the bucket holding the q-th observation and
interpolates linearly inside it, so its error is up to a bucket's width. :func:`estimate`
does the same on raw samples for any set of edges, so one prediction log can be bucketed
with the server's edges (placed around the SLO threshold) and with prometheus_client's
defaults, and both compared with the true quantile.
"""

from __future__ import annotations

import numpy as np

#: prometheus_client's default histogram buckets (seconds)
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                   10.0)


def estimate(samples, buckets, q: float) -> float:
    """``histogram_quantile(q)`` over ``samples`` bucketed at ``buckets`` (upper edges,
    seconds; +Inf added): linear interpolation inside the bucket, from 0 for the first."""
    x = np.asarray(samples, dtype=float)
    if x.size == 0:
        raise ValueError("no samples: nothing to estimate")
    if not 0 <= q <= 1:
        raise ValueError("q is a quantile: between 0 and 1")
    edges = np.asarray(sorted(buckets), dtype=float)
    cum = np.array([(x <= e).sum() for e in edges] + [x.size], dtype=float)
    rank = q * x.size
    i = int(np.searchsorted(cum, rank, side="left"))
    if i >= edges.size:  # in the +Inf bucket: Prometheus answers the highest finite edge
        return float(edges[-1])
    lower = edges[i - 1] if i > 0 else 0.0
    below = cum[i - 1] if i > 0 else 0.0
    inside = cum[i] - below
    if inside <= 0:
        return float(edges[i])
    return float(lower + (edges[i] - lower) * (rank - below) / inside)


def compare(samples, buckets, qs=(0.5, 0.95, 0.99)):
    """A table: for each q, the true quantile, the estimates with ``buckets`` and with the
    default buckets, in milliseconds, and the relative errors."""
    import pandas as pd

    x = np.asarray(samples, dtype=float)
    rows = []
    for q in qs:
        true = float(np.quantile(x, q))
        ours, default = estimate(x, buckets, q), estimate(x, DEFAULT_BUCKETS, q)
        rows.append({"quantile": f"p{round(q * 100):d}", "true_ms": true * 1000,
                     "course_buckets_ms": ours * 1000, "default_buckets_ms": default * 1000,
                     "course_error": ours / true - 1 if true else np.nan,
                     "default_error": default / true - 1 if true else np.nan})
    return pd.DataFrame(rows).set_index("quantile").round(3)
