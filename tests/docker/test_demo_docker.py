"""The showdown with real containers: `mlops-course demo --profile smoke --backend docker`."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import need

pytestmark = pytest.mark.docker


def test_demo_smoke_docker_writes_results(workspace, tmp_path):
    from course_helpers.containers import available

    need(available(), "a Docker engine")
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "course_helpers.cli", "demo", "--profile", "smoke",
         "--backend", "docker", "--out", str(out)],
        env=dict(os.environ, MLOPS_HOME=str(workspace)), capture_output=True, text=True,
        timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["backend"] == "docker"
    for key in ("single_large", "many_small"):
        assert res[key]["failures"] == 0 and res[key]["requests"] > 0
    ms, sl = res["many_small"]["fault_injection"], res["single_large"]["fault_injection"]
    assert {"failed_ratio", "dark_s", "recovery_s", "rate_per_user"} <= ms.keys()
    # the goal of the fault round: the survivor carries the load, the single replica goes dark
    assert ms["failed_ratio"] < 0.01 and ms["dark_s"] == 0, ms
    assert sl["dark_s"] >= 1 and sl["failed_ratio"] > ms["failed_ratio"], sl
    import docker

    left = docker.from_env(version="auto").containers.list(
        all=True, filters={"label": f"org.mlops-course.workspace={workspace}"})
    assert left == [], f"the demo left containers: {[c.name for c in left]}"
