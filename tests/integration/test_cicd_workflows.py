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


def champion(env) -> str | None:
    uri = f"sqlite:///{Path(env['MLOPS_HOME']) / 'mlflow' / 'mlflow.db'}"
    return tracking.resolve(MODEL, "champion", uri)


def test_pull_request_then_delivery_then_a_worse_change(runner_env, tmp_path):
    templates = cicd.templates()
    # 1. a pull request: the ml-ci job, step by step
    for job, cmd in cicd.workflow_commands(templates["ml-ci.yml"]):
        out = sh(cmd, runner_env)
        assert out.returncode == 0, f"{job}: {cmd}\n{out.stdout}\n{out.stderr[-1500:]}"
    assert champion(runner_env) is None, "CI on a pull request must not promote"
    summary = (tmp_path / "summary.md").read_text()
    assert "| model | ✅ |" in summary

    # 2. GitLab's delivery job, which picks up the state the earlier jobs left
    gitlab = [c for _, c in cicd.workflow_commands(templates["gitlab-ci.yml"])]
    assert gitlab[:-1] == [c for _, c in cicd.workflow_commands(templates["ml-ci.yml"])]
    out = sh(gitlab[-1], runner_env)
    assert out.returncode == 0, out.stdout + out.stderr[-1500:]
    assert champion(runner_env) == "1"

    # 3. the delivery workflow with a better config moves the alias
    cd = cicd.workflow_commands(templates["ml-cd.yml"])
    outputs = []
    for job, cmd in cd:
        out = sh(cmd, {**runner_env, "PRESET": "crossed"})
        assert out.returncode == 0, f"{job}: {cmd}\n{out.stdout}\n{out.stderr[-1500:]}"
        outputs.append(out.stdout)
    assert champion(runner_env) == "2"
    assert "simple-system@champion: v1 -> v2" in outputs[0]
    assert any(ln.split()[:2] == ["2", "champion"] for ln in outputs[-1].splitlines()), outputs[-1]

    # 4. the same workflow with a worse config stops at the model gate; production is untouched
    out = sh(cd[0][1], {**runner_env, "PRESET": "weak"})
    assert out.returncode == 1
    assert "CI failed at the model gate: FAIL quality floor" in out.stderr
    assert champion(runner_env) == "2"


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
