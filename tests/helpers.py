"""Test utilities shared across kinds of tests."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def load_script(path: Path, name: str) -> ModuleType:
    """Import a script that is not in a package (``scripts/``, an assignment's instructor
    tools) as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def need(ok: bool, what: str) -> None:
    """Skip naming the missing dependency on a laptop; fail in CI, where nothing may skip."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"CI must provide {what}; .ci/run installs it")
    pytest.skip(f"needs {what}")


def gone(pid: int, within: float = 10.0) -> bool:
    """True once ``pid`` has exited (or is a zombie) within ``within`` seconds."""
    import time

    import psutil

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def module_workspace(tmp_path_factory, prefix: str):
    """A workspace shared by a module's tests (servers cost seconds to start): sets
    MLOPS_HOME, unsets MLFLOW_TRACKING_URI, and restores both and stops everything after."""
    from course_helpers.supervisor import Supervisor

    home = tmp_path_factory.mktemp(prefix)
    saved = {k: os.environ.get(k) for k in ("MLOPS_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["MLOPS_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        yield home
    finally:
        Supervisor(home).cleanup(containers=False)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
