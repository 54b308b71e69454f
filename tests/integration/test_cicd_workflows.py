"""The workflow templates' commands, executed for real, in order, the way a runner would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from course_helpers import cicd, tracking
from course_helpers.supervisor import Supervisor
from tests.helpers import ROOT

pytestmark = pytest.mark.integration

MODEL = "simple-system"


def sh(cmd: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """One workflow `run:` line through bash, like a runner (venv bin first on PATH)."""
    return subprocess.run(["bash", "-c", cmd], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def runner_env(tmp_path):
    home = tmp_path / "runner"
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLOPS_HOME": str(home), "MLOPS_PROFILE": "smoke",
           "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    env.pop("MLFLOW_TRACKING_URI", None)
    yield env
    Supervisor(home).cleanup(containers=False)


def champion(env, uri: str | None = None) -> str | None:
    uri = uri or f"sqlite:///{Path(env['MLOPS_HOME']) / 'mlflow' / 'mlflow.db'}"
    return tracking.resolve(MODEL, "champion", uri)


def run_ci(env, preset: str = "baseline", code: bool = True) -> list[subprocess.CompletedProcess]:
    """ml-ci's steps for a change that trains ``preset`` (the train step gets ``--preset``);
    ``code=False`` skips the code gate (a change of configuration only)."""
    outs = []
    for job, cmd in cicd.workflow_commands(cicd.templates()["ml-ci.yml"]):
        if not code and cmd.endswith("--stages code"):
            continue
        if cmd.endswith("--stages train"):
            cmd += f" --preset {preset}"
        outs.append(sh(cmd, env))
        if outs[-1].returncode:
            break
    return outs


@pytest.mark.timeout(900)  # three CI runs and two deliveries, each a fresh CLI process
def test_pull_request_then_delivery_of_the_tested_artifact(runner_env, tmp_path, workspace):
    import mlflow.pyfunc
    import pandas as pd

    templates = cicd.templates()
    cd = [c for _, c in cicd.workflow_commands(templates["ml-cd.yml"])]
    # 1. a pull request: the ml-ci job, step by step; it never promotes
    for out in run_ci(runner_env):
        assert out.returncode == 0, out.stdout + out.stderr[-1500:]
    assert champion(runner_env) is None, "CI on a pull request must not promote"
    assert "| model | ✅ |" in (tmp_path / "summary.md").read_text()

    # 2. delivery without a tracking server: a clear refusal, nothing registered
    out = sh(cd[0], runner_env)
    assert out.returncode == 1
    assert "no tracking server configured" in out.stderr and "MLFLOW_TRACKING_URI" in out.stderr
    assert champion(runner_env) is None

    # 3. with the team's server: the artifact CI tested is promoted, nothing is retrained
    server = tracking.start_server(set_uri=False, timeout=300)
    env = {**runner_env, "MLFLOW_TRACKING_URI": server.url}
    out = sh(cd[0], env)
    assert out.returncode == 0, out.stdout + out.stderr[-1500:]
    assert "[train]" not in out.stdout and "[promote] passed" in out.stdout
    assert champion(env, server.url) == "1"
    ci_dir = Path(runner_env["MLOPS_HOME"]) / "ci"
    rows = pd.read_parquet(ci_dir / "test.parquet").drop(columns="label").head(50)
    tested = mlflow.pyfunc.load_model(str(ci_dir / "candidate")).predict(rows)
    with tracking.using(server.url):
        served = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(rows)
    assert (tested == served).all(), "the registered model is the one CI tested"
    status = sh(cd[1], env)
    assert any(ln.split()[:2] == ["1", "champion"] for ln in status.stdout.splitlines())

    # 4. a better change goes through CI, then delivery: v2 is champion, v1 keeps @previous
    for out in run_ci(runner_env, "crossed", code=False):
        assert out.returncode == 0, out.stdout + out.stderr[-1500:]
    out = sh(cd[0], env)
    assert out.returncode == 0, out.stdout + out.stderr[-1500:]
    assert "simple-system@champion: v1 -> v2, @previous: v1" in out.stdout
    assert tracking.resolve(MODEL, "previous", server.url) == "1"

    # 5. a worse change stops at CI's model gate: there is no artifact to deliver
    outs = run_ci(runner_env, "weak", code=False)
    assert outs[-1].returncode == 1
    assert "CI failed at the model gate: FAIL quality floor" in outs[-1].stderr
    assert champion(env, server.url) == "2"

    # 6. GitLab: the same CI steps, then the same guarded promotion
    gitlab = [c for _, c in cicd.workflow_commands(templates["gitlab-ci.yml"])]
    assert gitlab[:-1] == [c for _, c in cicd.workflow_commands(templates["ml-ci.yml"])]
    assert gitlab[-1] == cd[0]
    server.stop()


def test_a_bad_batch_stops_the_data_step(runner_env):
    out = sh("mlops-course ci run --stages data,train,model --corrupt out_of_range", runner_env)
    assert out.returncode == 1
    assert out.stderr.strip().startswith("CI failed at the data gate: FAIL data contract: "
                                         "column f07: ")
    assert "value(s) fail in_range(-8.0, 8.0)" in out.stderr
    assert "[train]" not in out.stdout, "nothing runs after a failed gate"


def test_the_code_gate_names_the_failing_test(tmp_path):
    test = tmp_path / "test_broken_step.py"
    test.write_text("import pytest\npytestmark = pytest.mark.unit\n\n"
                    "def test_ok():\n    assert 1\n\n"
                    "def test_split_keeps_all_rows():\n    assert 3 == 4\n")
    res = cicd.code_gate([test])
    assert not res.passed
    assert "1 failed, 1 passed" in res.checks[0].detail
    assert "test_split_keeps_all_rows" in res.error
