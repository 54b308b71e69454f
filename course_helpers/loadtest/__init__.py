"""Load tests with Locust, run as a bounded subprocess (importing locust in Jupyter hangs it)."""

from .runner import LoadResult, run_locust

__all__ = ["LoadResult", "run_locust"]
