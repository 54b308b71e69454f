import math

import pytest

from course_helpers import capacity

pytestmark = pytest.mark.unit


def test_littles_law():
    assert math.isclose(capacity.concurrency(200, 0.05), 10.0)


def test_replicas_needed_keeps_headroom():
    assert capacity.replicas_needed(1000, 500, utilisation=1.0) == 2
    assert capacity.replicas_needed(1000, 500, utilisation=0.7) == 3
    assert capacity.replicas_needed(1, 500) == 1
    with pytest.raises(ValueError, match="measure it first"):
        capacity.replicas_needed(100, 0)


def test_cost_per_million():
    # one $0.36/h machine serving 100 req/s: 360,000 predictions an hour -> $1 per million
    assert math.isclose(capacity.cost_per_million(0.36, 1, 100), 1.0)


def test_cost_table_uses_the_editable_prices():
    prices = capacity.load_prices()
    assert {"provider", "instance", "vcpus", "usd_per_hour"} <= set(prices.columns)
    results = {"single_large": {"rps": 700, "cpus_total": 2, "replicas": 1},
               "many_small": {"rps": 700, "cpus_total": 2, "replicas": 2}}
    table = capacity.cost_table(results, prices)
    assert set(table.topology) == {"single-large", "many-small"}
    ms = table[(table.topology == "many-small") & (table.provider == "aws")].iloc[0]
    assert ms.instances == 2 and ms.instance == "c7g.medium"


def test_cost_table_prices_the_sustained_throughput():
    results = {"single_large": {"rps": 350, "peak_rps": 700, "cpus_total": 2, "replicas": 1}}
    table = capacity.cost_table(results, capacity.load_prices(), provider="aws")
    row = table.iloc[0]
    assert row.sustained_rps == 700, "the ramp average (rps) is not the capacity"
    assert math.isclose(row.usd_per_million, capacity.cost_per_million(0.0725, 1, 700), abs_tol=1e-4)


def test_shipped_prices_are_linear_per_vcpu_within_a_family():
    """Lesson 02 says so: same price per vCPU at every size of one family."""
    prices = capacity.load_prices()
    aws = prices[prices.instance.str.startswith("c7g.")]
    per_vcpu = aws.usd_per_hour / aws.vcpus
    assert per_vcpu.max() / per_vcpu.min() < 1.01
