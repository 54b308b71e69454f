"""Tracking helpers without a server: commands, environment, errors when a server is down."""

from __future__ import annotations

import time

import pytest

from course_helpers import tracking
from course_helpers.supervisor import free_port

pytestmark = pytest.mark.unit


def test_server_is_lean_and_loopback_only(workspace, monkeypatch):
    for var in ("BINDER_SERVICE_HOST", "BINDER_REQUEST", "BINDER_LAUNCH_HOST"):
        monkeypatch.delenv(var, raising=False)
    cmd = tracking.server_command(5055)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--workers") + 1] == "1"
    assert cmd[cmd.index("--backend-store-uri") + 1] == tracking.local_uri()
    assert str(workspace) in cmd[cmd.index("--default-artifact-root") + 1]
    assert "--allowed-hosts" not in cmd
    assert tracking.SERVER_ENV["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert tracking.SERVER_ENV["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert tracking.SERVER_ENV["DO_NOT_TRACK"] == "true"  # MLflow ignores "1"


def test_binder_accepts_the_proxy_host(workspace, monkeypatch):
    monkeypatch.setenv("BINDER_SERVICE_HOST", "x")
    cmd = tracking.server_command(5055)
    assert cmd[cmd.index("--allowed-hosts") + 1] == "*"


def test_local_store_needs_no_server(workspace, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.current_uri()
    assert uri == f"sqlite:///{workspace / 'mlflow' / 'mlflow.db'}"
    assert tracking.check(uri) == uri


def test_a_dead_server_is_one_sentence_and_fast(workspace, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    t0 = time.monotonic()
    with pytest.raises(tracking.TrackingUnavailableError) as err:
        tracking.runs_table("anything")
    assert time.monotonic() - t0 < 5, "must not sit in MLflow's HTTP retries"
    msg = str(err.value)
    assert msg.startswith(f"no MLflow tracking server answered at {url}")
    assert "mlops-course mlflow up" in msg and "\n" not in msg
    with pytest.raises(tracking.TrackingUnavailableError):
        tracking.use(url)


def test_lost_names_a_server_that_stopped_answering(workspace):
    assert tracking.lost(tracking.local_uri()) is None, "a local store cannot be lost"
    url = f"http://127.0.0.1:{free_port()}"
    err = tracking.lost(url)
    assert isinstance(err, tracking.TrackingUnavailableError)
    assert url in str(err) and "mlops-course mlflow up" in str(err)


def test_cli_status_without_server(workspace, capsys, monkeypatch):
    from course_helpers import cli

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cli.main(["tracking", "status"]) == 1
    assert "no tracking server; the local store is sqlite:///" in capsys.readouterr().out


def test_trees_are_trusted_even_inside_a_pipeline():
    from course_helpers.pipeline import steps

    assert tracking.trusted_types(steps.build_model(steps.config("forest"))) == [
        "sklearn.tree._tree.Tree"]
    assert tracking.trusted_types(steps.build_model(steps.config("baseline"))) is None
