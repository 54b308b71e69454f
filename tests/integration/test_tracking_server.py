"""Tracking against a real `mlflow server`: lean start, runs, registry, aliases, lineage, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from course_helpers import tracking
from course_helpers.supervisor import ENV_TAG, Supervisor
from tests.helpers import module_workspace

pytestmark = pytest.mark.integration

NAME = "tracking-test-model"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    yield from module_workspace(tmp_path_factory, "tracking-home")


@pytest.fixture(scope="module")
def server(home):
    srv = tracking.start_server(set_uri=False)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def data():
    from course_helpers.pipeline import steps

    df = steps.make_batch(600, seed=1)
    X_tr, X_te, y_tr, y_te = steps.split(df)
    models = {p: steps.train(X_tr, y_tr, steps.config(p, n_estimators=10))
              for p in ("baseline", "crossed", "forest")}
    return df, X_tr, X_te, y_te, models


def test_server_is_two_processes_tagged_and_recorded(server, home):
    assert server.healthy() and server.url.startswith("http://127.0.0.1:")
    proc = psutil.Process(server.pid)
    family = [proc] + proc.children(recursive=True)
    assert len(family) <= 3, [p.cmdline()[:4] for p in family]  # not 11: one worker, no jobs
    assert proc.environ()[ENV_TAG] == f"{home}::mlflow"
    rss_mb = sum(p.memory_info().rss for p in family) / 2**20
    assert rss_mb < 1000, f"{rss_mb:.0f} MB: is it still starting 4 workers?"
    assert Supervisor(home).get("mlflow").port == server.port
    print(f"\nmlflow server ready in {server.ready_s} s, {len(family)} processes, {rss_mb:.0f} MB")


def test_starting_again_reuses_the_running_server(server):
    again = tracking.start_server(set_uri=False)
    assert (again.pid, again.url) == (server.pid, server.url)


def test_runs_registry_aliases_and_lineage(server, data):
    df, X_tr, X_te, y_te, models = data
    from course_helpers.pipeline import steps

    versions = {}
    for preset, model in models.items():
        m = steps.evaluate(model, X_te, y_te)
        logged = tracking.log_run("tracking-test", params={"preset": preset}, metrics=m,
                                  tags={"data.fingerprint": steps.fingerprint(df)}, model=model,
                                  X_example=X_tr, dataset=df, register_as=NAME,
                                  run_name=preset, uri=server.url)
        versions[preset] = logged.version
    assert sorted(versions.values()) == ["1", "2", "3"]

    runs = tracking.runs_table("tracking-test", uri=server.url)
    assert set(runs["params.preset"]) == {"baseline", "crossed", "forest"}
    assert runs["metrics.auc"].between(0.5, 1).all()

    assert tracking.resolve(NAME, "champion", server.url) is None
    first = tracking.promote(NAME, versions["baseline"], uri=server.url)
    assert (first.previous, first.version) == (None, "1")
    second = tracking.promote(NAME, versions["crossed"], reason="better auc", uri=server.url)
    assert (second.previous, second.version) == ("1", "2")
    table = tracking.versions_table(NAME, uri=server.url, metrics=("auc",))
    assert table.set_index("version").loc[2, "aliases"] == "champion"
    assert "better auc" in table.set_index("version").loc[2, "tags.promoted_to_champion"]

    assert tracking.resolve(NAME, "previous", server.url) == "1", "the old champion: @previous"

    back = tracking.rollback(NAME, uri=server.url)
    assert (back.previous, back.version) == ("2", "1")
    assert tracking.resolve(NAME, "champion", server.url) == "1"
    assert tracking.resolve(NAME, "previous", server.url) == "2", "rollback swaps the two"
    forward = tracking.rollback(NAME, uri=server.url)
    assert (forward.previous, forward.version) == ("1", "2")
    tracking.rollback(NAME, reason="drill", uri=server.url)
    assert tracking.resolve(NAME, "champion", server.url) == "1"
    assert "drill" in tracking.versions_table(NAME, uri=server.url).set_index(
        "version").loc[1, "tags.rolled_back_to"]

    c = tracking.client(server.url)
    c.delete_registered_model_alias(NAME, "previous")
    with pytest.raises(tracking.CourseError, match="no earlier version to roll back to"):
        tracking.rollback(NAME, uri=server.url)
    c.set_registered_model_alias(NAME, "previous", "2")

    lin = tracking.lineage(NAME, "champion", uri=server.url)
    assert lin["version"] == "1" and lin["params"] == {"preset": "baseline"}
    assert lin["run_tags"]["data.fingerprint"] == steps.fingerprint(df)
    assert lin["datasets"] and lin["datasets"][0]["context"] == "training"
    assert len(lin["datasets"][0]["digest"]) >= 8


def test_a_model_registered_through_the_server_loads_from_the_local_store(server, data):
    """One store, two doors: artifacts are in the workspace, so either URI can load them."""
    import mlflow.sklearn

    _, _, X_te, _, models = data
    tracking.promote(NAME, "3", alias="challenger", uri=server.url)  # the forest (skops + trees)
    with tracking.using(tracking.local_uri()):
        loaded = mlflow.sklearn.load_model(f"models:/{NAME}@challenger")
    assert (loaded.predict_proba(X_te) == models["forest"].predict_proba(X_te)).all()
    assert os.environ.get("MLFLOW_TRACKING_URI") is None, "using() must not leak the URI"


def test_copy_model_is_self_contained(server, data, tmp_path):
    """A registry model copied out loads with no tracking store at all (as in a container)."""
    import yaml

    _, _, X_te, _, models = data
    path = tracking.copy_model(f"models:/{NAME}/1", tmp_path / "copy", uri=server.url)
    meta = yaml.safe_load((path / "MLmodel").read_text())
    assert meta.get("model_id") is None and "sklearn" in meta["flavors"]
    assert meta["signature"]["inputs"], "the signature survives the rewrite"
    code = ("import sys, mlflow.sklearn, pandas as pd\n"
            "m = mlflow.sklearn.load_model(sys.argv[1])\n"
            "print(m.predict_proba(pd.read_json(sys.argv[2])).shape)")
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    rows = tmp_path / "rows.json"
    X_te.head(3).to_json(rows)
    out = subprocess.run([sys.executable, "-c", code, str(path), str(rows)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-800:]
    assert out.stdout.strip() == "(3, 2)"


def test_the_lesson01_server_follows_the_alias(server, home):
    """Promotion is an alias move: a restarted model server picks up the new champion."""
    from course_helpers.serving import serve

    tracking.promote(NAME, "1", uri=server.url)
    os.environ["MLFLOW_TRACKING_URI"] = server.url
    try:
        srv = serve(f"models:/{NAME}@champion", name="follow-alias", db=None, timeout=60)
        assert srv.get("/version")["model_version"] == "1"
        srv.stop()
        tracking.promote(NAME, "2", uri=server.url)
        srv = serve(f"models:/{NAME}@champion", name="follow-alias", db=None, timeout=60)
        assert srv.get("/version")["model_version"] == "2"
        srv.stop()
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def test_cli_start_status_stop(home):
    env = {**os.environ, "MLOPS_HOME": str(home / "cli")}
    cli = [sys.executable, "-m", "course_helpers.cli", "tracking"]
    out = subprocess.run(cli + ["start"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "MLflow tracking server at http://127.0.0.1:" in out.stdout
    status = subprocess.run(cli + ["status"], env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "tracking server at http://127.0.0.1:" in status.stdout
    stop = subprocess.run(cli + ["stop"], env=env, capture_output=True, text=True, timeout=60)
    assert "stopped the tracking server" in stop.stdout
    status = subprocess.run(cli + ["status"], env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 1 and "no tracking server" in status.stdout


def test_cleanup_stops_the_server_after_its_owner_is_killed(tmp_path):
    home = tmp_path / "owner-home"
    env = {**os.environ, "MLOPS_HOME": str(home)}
    code = textwrap.dedent("""
        import json, time
        from course_helpers import tracking
        srv = tracking.start_server()
        print(json.dumps({"pid": srv.pid, "url": srv.url}), flush=True)
        time.sleep(600)
    """)
    owner = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                             text=True)
    try:
        info = json.loads(owner.stdout.readline())
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        assert psutil.pid_exists(info["pid"]), "the server outlives its SIGKILLed owner"
        out = subprocess.run([sys.executable, "-m", "course_helpers.cli", "cleanup",
                              "--no-containers"], env=env, capture_output=True, text=True,
                             timeout=60)
        assert "stopped process mlflow" in out.stdout, out.stdout + out.stderr
        deadline = time.monotonic() + 10
        while psutil.pid_exists(info["pid"]) and time.monotonic() < deadline:
            try:
                if psutil.Process(info["pid"]).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.2)
        with pytest.raises(tracking.TrackingUnavailableError):
            tracking.check(info["url"])
    finally:
        if owner.poll() is None:
            owner.kill()
        Supervisor(home).cleanup(containers=False)


def test_stopped_server_gives_one_sentence(server, home):
    url = server.url
    assert tracking.stop_server()
    with pytest.raises(tracking.TrackingUnavailableError, match="no MLflow tracking server answered"):
        tracking.versions_table(NAME, uri=url)
