"""Lesson 09's canary controller on lesson 02's Docker backend: the champion and a seeded-fault
challenger as containers behind the controller's nginx weights, Prometheus scraping their
published ports, the challenger rolled back automatically (about 30 s warm).

Needs a Docker engine, the offline base image, nginx and prometheus. The ``workspace``
fixture removes every container labelled with the test's workspace, even when it fails.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers import need

pytestmark = pytest.mark.docker
NAME = "rollout-docker"


@pytest.fixture
def engine_ready(workspace, monkeypatch):
    from course_helpers import config, containers, images
    from course_helpers.deploy.docker import serving_image

    need(containers.available(), "a Docker engine")
    need(images.image_exists(images.OFFLINE_BASE_IMAGE),
         f"the offline base image {images.OFFLINE_BASE_IMAGE} (`mlops-course image base`)")
    need(bool(config.find_binary("nginx")), "nginx (sudo apt-get install nginx)")
    need(config.find_binary("prometheus") is not None, "prometheus (Debian package prometheus)")
    monkeypatch.setenv("BASE_IMAGE", images.OFFLINE_BASE_IMAGE)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    serving_image(images.OFFLINE_BASE_IMAGE)  # a no-op once built for these sources
    return containers.client()


def test_bad_canary_in_containers_is_rolled_back(workspace, engine_ready):
    from course_helpers import monitoring, tracking
    from course_helpers.rollout import faults
    from course_helpers.rollout.canary import run_canary
    from course_helpers.rollout.decision import Thresholds
    from course_helpers.supervisor import LABEL_WORKSPACE

    champion = faults.ensure_champion(NAME, profile="smoke")
    faults.make_challenger("errors", name=NAME, seed=1, profile="smoke", alias="bad")

    def containers_now() -> list[str]:
        flt = {"label": f"{LABEL_WORKSPACE}={workspace}"}
        return [b.id for b in engine_ready.containers.list(all=True, filters=flt)]

    monitoring.start("smoke", rules=False)
    try:
        started = time.monotonic()
        rep = run_canary(f"models:/{NAME}@champion", f"models:/{NAME}@bad", steps=[5, 25, 50, 100],
                         interval_s=3, metrics="prometheus", users=4, rate_per_user=15,
                         thresholds=Thresholds(min_requests=10), profile="smoke",
                         backend="docker", verbose=False)
        seconds = time.monotonic() - started
    finally:
        monitoring.stop()
    print(f"\ndocker canary: {rep['outcome']} in {seconds:.1f} s, rollback_s {rep.get('rollback_s')}")
    ids = {t: tr["container"] for t, tr in rep["tracks"].items()}
    assert set(ids) == {"stable", "canary"} and all(ids.values())  # both ran in containers
    assert rep["backend"] == "docker" and rep["outcome"] == "rolled_back", rep["steps"]
    assert max(s["weight"] for s in rep["steps"]) < 50
    last = rep["steps"][-1]
    assert any(c["name"] == "error_ratio" and not c["passed"] for c in last["checks"])
    assert last["canary_requests"] >= 10  # Prometheus scraped the canary's container
    assert rep["failed_requests"] > 0  # the users who met the seeded fault
    assert tracking.resolve(NAME, "champion") == champion
    saved = json.loads((workspace / "rollout" / "canary" / "rollout.json").read_text())
    assert saved["outcome"] == "rolled_back" and saved["backend"] == "docker"
    assert containers_now() == []  # the controller took its containers down
    assert not [j for j in monitoring.jobs() if j.startswith("rollout")]
