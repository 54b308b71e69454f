"""free_port never hands out one port twice in a row, even to threads asking side by side."""

import concurrent.futures

import pytest

pytestmark = pytest.mark.unit


def test_free_port_is_unique_across_threads():
    from course_helpers.supervisor import free_port

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        ports = list(pool.map(lambda _: free_port(), range(300)))
    assert len(set(ports)) == len(ports)
