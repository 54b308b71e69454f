"""Shared fixtures: an isolated workspace per test that always cleans up after itself."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_configure(config):
    """SIGTERM (a CI job stopped, `kill`) ends the run like Ctrl-C, so every fixture's
    clean-up still stops the servers and containers its test started."""
    import signal

    def _interrupt(signum, frame):
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """A fresh MLOPS_HOME; every process and container started in it is stopped afterwards."""
    from course_helpers.supervisor import Supervisor

    home = tmp_path / "mlops-home"
    home.mkdir()
    monkeypatch.setenv("MLOPS_HOME", str(home))
    try:
        yield home
    finally:
        Supervisor(home).cleanup()


@pytest.fixture
def supervisor(workspace):
    from course_helpers.supervisor import Supervisor

    return Supervisor(workspace)


@pytest.fixture(scope="session")
def logreg_uri(tmp_path_factory) -> str:
    """A small logistic-regression model saved in MLflow's format (a path URI)."""
    from course_helpers import model

    clf, X, _ = model.train("logreg", n_rows=500)
    return str(model.save(clf, tmp_path_factory.mktemp("models") / "logreg", X))
