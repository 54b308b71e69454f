"""The pipeline with real Prefect (a supervised API server) and a real MLflow tracking server."""

from __future__ import annotations

import contextlib
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
from tests.helpers import gone, module_workspace

pytestmark = pytest.mark.integration

MODEL = "pipeline-test"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    yield from module_workspace(tmp_path_factory, "pipeline-home")


@pytest.fixture(scope="module")
def mlflow_url(home):
    srv = tracking.start_server(set_uri=False)
    yield srv.url
    srv.stop()


def run(preset="baseline", **kw):
    from course_helpers import pipeline

    kw.setdefault("n_rows", 1_000)
    return pipeline.run(preset, model_name=MODEL, **kw)


def states(res) -> dict[str, str]:
    return {t["task"]: t["state"] for t in res.tasks}


def test_first_run_retries_registers_and_crowns(home, mlflow_url):
    res = run(tracking_uri=mlflow_url, flaky=1)
    assert res.ok, res.error
    ingest = next(t for t in res.tasks if t["task"] == "ingest")
    assert ingest["attempts"] == 2, "the flaky source failed once and was retried"
    assert res.promote and (res.version, res.alias) == ("1", "champion")
    assert tracking.resolve(MODEL, "champion", mlflow_url) == "1"
    lin = tracking.lineage(MODEL, "champion", uri=mlflow_url)
    assert lin["run_tags"]["data.fingerprint"] == res.fingerprint
    assert lin["run_tags"]["pipeline.flow_run_id"] == res.flow_run_id
    assert lin["version_tags"]["pipeline.key"]


def test_prefect_server_is_supervised_not_ephemeral(home):
    rec = Supervisor(home).get("prefect")
    assert rec is not None and rec.is_alive()
    proc = psutil.Process(rec.pid)
    assert proc.environ()[ENV_TAG] == f"{home}::prefect"
    assert proc.environ()["PREFECT_HOME"] == str(home / "prefect")
    assert proc.environ().get("PREFECT_SERVER_ANALYTICS_ENABLED") == "false"
    # Prefect did not start its own unsupervised server as a child of this process
    def cmdline(p) -> str:
        try:
            return " ".join(p.cmdline())
        except psutil.Error:  # a zombie or a process that just ended: not a server
            return ""

    servers = [p for p in psutil.Process().children(recursive=True)
               if ("prefect.server.api.server:create_app" in cmdline(p)
                   or "prefect server start" in cmdline(p)) and p.pid != rec.pid]
    assert servers == [], [p.pid for p in servers]
    # Prefect's documented command, one process, no scheduler
    assert proc.cmdline()[1:5] == ["-m", "prefect", "server", "start"]
    assert "--no-scheduler" in proc.cmdline() and not proc.children()
    assert (home / "prefect" / "storage").is_dir(), "cached results live in the workspace"


def test_a_permanent_error_is_not_retried(home, mlflow_url, tmp_path):
    res = run(tracking_uri=mlflow_url, path=tmp_path / "missing.parquet")
    assert not res.ok and not res.transient
    ingest = next(t for t in res.tasks if t["task"] == "ingest")
    assert ingest["attempts"] == 1, "a missing file fails the same way every time"


def test_a_source_down_past_the_retries_is_a_transient_failure(home, mlflow_url):
    t0 = time.monotonic()
    res = run(tracking_uri=mlflow_url, seed=11, flaky=5)
    assert not res.ok and res.transient and "did not answer" in res.error
    ingest = next(t for t in res.tasks if t["task"] == "ingest")
    assert ingest["attempts"] == 3, "two retries, then the run fails"
    assert time.monotonic() - t0 >= 1.5, "backoff: 0.5 s, then 1 s between the attempts"


def test_rerun_is_cached_and_idempotent(home, mlflow_url):
    before = tracking.versions_table(MODEL, uri=mlflow_url)
    res = run(tracking_uri=mlflow_url)
    assert res.ok, res.error
    assert states(res) == {"ingest": "Cached", "validate": "Cached", "split": "Cached",
                           "train": "Cached", "evaluate": "Completed",
                           "score-champion": "Completed", "gate": "Completed",
                           "register": "Completed"}
    assert res.reused and (res.version, res.alias) == ("1", "champion")
    after = tracking.versions_table(MODEL, uri=mlflow_url)
    assert len(after) == len(before), "a rerun must not register a duplicate version"


def test_worse_config_is_not_promoted(home, mlflow_url):
    res = run("weak", tracking_uri=mlflow_url)
    assert res.ok and not res.promote
    assert (res.version, res.alias) == ("2", "challenger")
    assert any(r.startswith("FAIL") for r in res.reasons)
    assert res.champion["version"] == "1"
    assert tracking.resolve(MODEL, "champion", mlflow_url) == "1"
    assert states(res)["ingest"] == "Cached" and states(res)["train"] == "Completed"


def test_better_config_is_promoted(home, mlflow_url):
    res = run("crossed", tracking_uri=mlflow_url)
    assert res.ok and res.promote, res.reasons
    assert tracking.resolve(MODEL, "champion", mlflow_url) == res.version == "3"
    assert res.metrics["auc"] > res.champion["metrics"]["auc"]


@pytest.mark.parametrize("corrupt, words", [("nulls", "null value"),
                                            ("missing_column", "missing column 'f12'")])
def test_bad_batch_stops_before_training(home, mlflow_url, corrupt, words):
    n_versions = len(tracking.versions_table(MODEL, uri=mlflow_url))
    res = run(tracking_uri=mlflow_url, corrupt=corrupt, seed=5)
    assert not res.ok and res.state == "Failed"
    assert words in res.error and res.error.startswith("batch rejected by the data checks")
    assert [t["task"] for t in res.tasks] == ["ingest", "validate"]
    assert len(tracking.versions_table(MODEL, uri=mlflow_url)) == n_versions
    with pytest.raises(tracking.CourseError, match="batch rejected"):
        run(tracking_uri=mlflow_url, corrupt=corrupt, seed=5, raise_on_failure=True)


def test_trigger_runs_once_per_new_batch(home, mlflow_url, tmp_path):
    from course_helpers.pipeline import triggers

    inbox = tmp_path / "inbox"
    good = triggers.drop_batch(inbox, n_rows=800, seed=7)
    triggers.drop_batch(inbox, n_rows=800, seed=8, corrupt="out_of_range")
    results = triggers.watch(inbox, poll_s=0.2, timeout_s=120, max_batches=2,
                             model_name=MODEL, tracking_uri=mlflow_url)
    assert [r.ok for r in results] == [True, False]
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == [good.name]
    assert len(list((inbox / "rejected").iterdir())) == 1
    # the same batch delivered again is skipped, not retrained
    import shutil

    shutil.copy(inbox / "processed" / good.name, inbox / "again.parquet")
    assert triggers.process_pending(inbox, model_name=MODEL, tracking_uri=mlflow_url) == []
    book = triggers.ledger(inbox)
    assert len(book) == 2 and sum(v["ok"] for v in book.values()) == 1


def test_trigger_leaves_a_transient_failure_for_the_next_trigger(home, mlflow_url, tmp_path):
    from course_helpers.pipeline import triggers

    inbox = tmp_path / "inbox"
    batch = triggers.drop_batch(inbox, n_rows=800, seed=12)
    [down] = triggers.process_pending(inbox, model_name=MODEL, tracking_uri=mlflow_url, flaky=5)
    assert not down.ok and down.transient and batch.exists()
    assert triggers.ledger(inbox)[triggers.digest(batch)]["status"] == "retry"
    [up] = triggers.process_pending(inbox, model_name=MODEL, tracking_uri=mlflow_url)
    assert up.ok, up.error
    assert (inbox / "processed" / batch.name).exists() and not batch.exists()


def test_cli_run_registers_then_keeps_champion_against_worse(home, mlflow_url, tmp_path):
    env = {**os.environ, "MLOPS_HOME": str(tmp_path / "cli-home")}
    env.pop("MLFLOW_TRACKING_URI", None)
    cli = [sys.executable, "-m", "course_helpers.cli", "pipeline"]
    cmd = cli + ["run", "--profile", "smoke"]

    def call(args, timeout=240):
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)

    try:
        # one Prefect server for the four commands below (each would otherwise start its own)
        assert "Prefect API at http://127.0.0.1:" in call(cli + ["server", "start"]).stdout
        first = call(cmd + ["--json"])
        assert first.returncode == 0, first.stderr[-2000:]
        out = json.loads(first.stdout)
        assert out["promote"] and out["alias"] == "champion" and out["version"] == "1"
        second = call(cmd + ["--preset", "weak", "--require-promotion"])
        assert second.returncode == 3, second.stdout + second.stderr[-2000:]
        assert "not promoted" in second.stdout and "FAIL" in second.stdout
        status = call(cli + ["status"], timeout=120)
        lines = status.stdout.splitlines()
        assert any(ln.split()[:2] == ["1", "champion"] for ln in lines), status.stdout
        assert any(ln.split()[:2] == ["2", "challenger"] for ln in lines), status.stdout
        bad = call(cmd + ["--corrupt", "constant_label"])
        assert bad.returncode == 2
        assert bad.stderr.strip().splitlines()[-1].startswith(
            "error: the pipeline run failed: batch rejected by the data checks")
        assert "stopped" in call(cli + ["server", "stop"], timeout=60).stdout
        left = Supervisor(tmp_path / "cli-home").status()
        assert not [r for r in left if r["alive"]], left
    finally:
        Supervisor(tmp_path / "cli-home").cleanup(containers=False)


def test_cleanup_stops_prefect_after_its_owner_is_killed(tmp_path):
    home = tmp_path / "owner"
    env = {**os.environ, "MLOPS_HOME": str(home)}
    code = textwrap.dedent("""
        import time
        from course_helpers import pipeline
        from course_helpers.supervisor import Supervisor
        pipeline.connect()
        print(Supervisor().get("prefect").pid, flush=True)
        time.sleep(600)
    """)
    owner = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                             text=True)
    try:
        pid = int(owner.stdout.readline())
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        assert psutil.pid_exists(pid) and not gone(pid, 1), "Prefect's server outlives its owner"
        out = subprocess.run([sys.executable, "-m", "course_helpers.cli", "cleanup",
                              "--no-containers"], env=env, capture_output=True, text=True,
                             timeout=60)
        assert "stopped process prefect" in out.stdout, out.stdout + out.stderr
        assert gone(pid, 15.0)
    finally:
        if owner.poll() is None:
            owner.kill()
        Supervisor(home).cleanup(containers=False)


def test_two_pipelines_at_once_both_register(tmp_path):
    """Two `pipeline run`s against one MLflow server, sharing one workspace's Prefect server."""
    home = tmp_path / "ws"
    env = dict(os.environ, MLOPS_HOME=str(home))
    env.pop("MLFLOW_TRACKING_URI", None)
    cli = [sys.executable, "-m", "course_helpers.cli"]
    try:
        up = subprocess.run(cli + ["mlflow", "up"], env=env, capture_output=True, text=True,
                            timeout=180)
        assert up.returncode == 0, up.stderr
        url = next(w for w in up.stdout.split() if w.startswith("http://"))
        runs = [subprocess.Popen(cli + ["pipeline", "run", "--profile", "smoke", "--rows", "800",
                                        "--tracking-uri", url, "--model-name", f"twin-{i}",
                                        "--seed", str(i + 1)],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
                for i in range(2)]
        outs = [p.communicate(timeout=300)[0] for p in runs]
        assert [p.returncode for p in runs] == [0, 0], "\n".join(o[-1500:] for o in outs)
        for i in range(2):
            assert tracking.resolve(f"twin-{i}", "champion", url) == "1"
        # the shared Prefect server went away with its last user
        assert Supervisor(home).get("prefect") is None or not Supervisor(home).get("prefect").is_alive()
    finally:
        Supervisor(home).cleanup(containers=False)


def test_killed_mlflow_server_gives_a_clear_error_and_no_half_registered_version(tmp_path):
    """SIGKILL the tracking server while a pipeline logs to it: the run fails in one sentence,
    within seconds; whatever the registry holds afterwards is complete, and a rerun registers
    exactly one version."""
    import sqlite3

    home = tmp_path / "ws"
    env = dict(os.environ, MLOPS_HOME=str(home))
    env.pop("MLFLOW_TRACKING_URI", None)
    cli = [sys.executable, "-m", "course_helpers.cli"]
    model = "killed-server"
    try:
        up = subprocess.run(cli + ["mlflow", "up"], env=env, capture_output=True, text=True,
                            timeout=180)
        assert up.returncode == 0, up.stderr
        url = next(w for w in up.stdout.split() if w.startswith("http://"))
        server_pid = Supervisor(home).get("mlflow").pid
        db = home / "mlflow" / "mlflow.db"
        run = [*cli, "pipeline", "run", "--profile", "smoke", "--rows", "800",
               "--tracking-uri", url, "--model-name", model]
        proc = subprocess.Popen(run, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:  # the run is being logged
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
                try:
                    if con.execute("select count(*) from runs").fetchone()[0]:
                        break
                except sqlite3.OperationalError:  # tables not there yet
                    pass
            time.sleep(0.02)
        os.killpg(server_pid, signal.SIGKILL)  # the server and its worker
        killed_at = time.monotonic()
        out, err = proc.communicate(timeout=180)
        assert proc.returncode != 0, out
        assert time.monotonic() - killed_at < 45, "no minutes of retries"
        last = err.strip().splitlines()[-1]
        assert last.startswith("error:") and "MLflow" in last and url in last, err[-2000:]
        assert "Traceback" not in err and "Retrying" not in err, err[-2000:]
        assert "mlops-course mlflow up" in last

        Supervisor(home).stop("mlflow")
        up = subprocess.run(cli + ["mlflow", "up"], env=env, capture_output=True, text=True,
                            timeout=180)
        assert up.returncode == 0, up.stderr
        url = next(w for w in up.stdout.split() if w.startswith("http://"))
        c = tracking.client(url)
        for mv in c.search_model_versions(f"name='{model}'"):  # none, or complete ones
            assert {"pipeline.key", "data.fingerprint"} <= set(mv.tags), mv
        again = subprocess.run([*run[:-4], "--tracking-uri", url, "--model-name", model],
                               env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        versions = c.search_model_versions(f"name='{model}'")
        assert [str(mv.version) for mv in versions] == ["1"], "registered once, not twice"
        assert tracking.resolve(model, "champion", url) == "1"
    finally:
        Supervisor(home).cleanup(containers=False)
