"""Test utilities shared across kinds of tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(ok: bool, what: str) -> None:
    """Skip naming the missing dependency on a laptop; fail in CI, where nothing may skip."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"CI must provide {what}; .ci/run installs it")
    pytest.skip(f"needs {what}")
