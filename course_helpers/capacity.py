"""Capacity and cost from measured throughput: how many replicas, and what a prediction costs."""

from __future__ import annotations

import math
from pathlib import Path

PRICES_CSV = Path(__file__).with_name("data") / "instance_prices.csv"


def concurrency(rps: float, latency_s: float) -> float:
    """Little's law: requests in flight L = arrival rate lambda x time in the system W."""
    if rps < 0 or latency_s < 0:
        raise ValueError("rate and latency must be non-negative")
    return rps * latency_s


def replicas_needed(target_rps: float, per_replica_rps: float, utilisation: float = 0.7) -> int:
    """Replicas so that each runs at most at ``utilisation`` of its measured throughput.

    Running near 100% makes queues (and p95) explode; 0.6-0.75 keeps headroom for bursts
    and for losing one replica.
    """
    if per_replica_rps <= 0:
        raise ValueError("per-replica throughput must be positive (measure it first)")
    if not 0 < utilisation <= 1:
        raise ValueError("utilisation must be in (0, 1]")
    return max(1, math.ceil(target_rps / (per_replica_rps * utilisation)))


def load_prices(path: str | Path | None = None):
    """The editable instance price table (provider, instance, vcpus, memory_gb, usd_per_hour)."""
    import pandas as pd

    return pd.read_csv(path or PRICES_CSV, comment="#")


def cost_per_million(usd_per_hour: float, instances: int, rps: float) -> float:
    """Dollars per million predictions for ``instances`` machines serving ``rps`` together."""
    if rps <= 0:
        raise ValueError("throughput must be positive")
    return usd_per_hour * instances / (rps * 3600) * 1e6


def cost_table(results: dict, prices=None, provider: str | None = None):
    """Cost per million predictions of each topology of a showdown, on the priced instances.

    single-large runs on one instance with ``cpus_total`` vCPUs; many-small on ``replicas``
    instances of ``cpus_per_replica`` vCPUs (the smallest priced instance that has them).
    Throughput is what each topology sustained with all users on (``peak_rps``; the ramp
    average ``rps`` only when that is missing): the capacity you would pay for.
    """
    import pandas as pd

    prices = load_prices() if prices is None else prices
    if provider:
        prices = prices[prices["provider"] == provider]
    rows = []
    for key in ("single_large", "many_small"):
        if key not in results:
            continue
        r = results[key]
        rps = r.get("peak_rps") or r["rps"]
        vcpus_each = r["cpus_total"] / r["replicas"]
        match = prices[prices["vcpus"] >= vcpus_each].sort_values("usd_per_hour")
        for provider_name, group in match.groupby("provider"):
            inst = group.iloc[0]
            rows.append({
                "topology": key.replace("_", "-"), "provider": provider_name,
                "instance": inst["instance"], "instances": r["replicas"],
                "usd_per_hour": round(inst["usd_per_hour"] * r["replicas"], 4),
                "sustained_rps": rps,
                "usd_per_million": round(cost_per_million(inst["usd_per_hour"], r["replicas"],
                                                          rps), 4),
            })
    return pd.DataFrame(rows)
