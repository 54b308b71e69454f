"""Images without a registry: offline base, host wheelhouse, limits read back, cleanup.

Needs a Docker engine and the offline base image (`mlops-course image base`, ~45 s once);
the wheelhouse needs PyPI once per workspace.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, need

pytestmark = pytest.mark.docker

TEST_IMAGE = "mlops-course/test-psutil:latest"  # kept between runs: a rebuild is a no-op


@pytest.fixture(scope="module")
def engine():
    from course_helpers import containers

    need(containers.available(), "a Docker engine")
    return containers.client()


@pytest.fixture(scope="module")
def offline_base(engine) -> str:
    from course_helpers import images

    need(images.image_exists(images.OFFLINE_BASE_IMAGE),
         f"the offline base image {images.OFFLINE_BASE_IMAGE} (`mlops-course image base`)")
    return images.OFFLINE_BASE_IMAGE


@pytest.fixture
def removed_afterwards(engine):
    """Collects containers; removes them after the test, passed or failed."""
    import docker

    boxes: list = []
    yield boxes
    for box in boxes:
        try:
            box.remove(force=True)
        except docker.errors.NotFound:
            pass


def test_offline_image_limits_and_wheels(workspace, offline_base, removed_afterwards):
    from course_helpers import images
    from course_helpers.supervisor import LABEL_WORKSPACE, Supervisor

    pins = images.locked_pins()
    wheels = images.wheelhouse(["psutil"])
    assert [p.name.split("-")[:2] for p in wheels.glob("*.whl")] == [["psutil", pins["psutil"]]]
    started = time.monotonic()
    assert images.wheelhouse(["psutil"]) == wheels  # cached: no pip run
    assert time.monotonic() - started < 2

    tag = images.build_image(
        TEST_IMAGE, ["psutil"], base=offline_base,
        files={"probe.py": "import psutil, sys\nprint(psutil.__version__, sys.prefix)\n"},
        cmd=["python", "probe.py"],
    )
    box = images.run_container("limits", tag, cpus=0.5, mem="256m",
                               command=["sleep", "120"], ports={8000: None})
    removed_afterwards.append(box)

    assert images.read_cgroup_limits(box) == {"cpus": 0.5, "memory_bytes": 256 * 1024**2}
    attrs = box.attrs["HostConfig"]
    assert attrs["NanoCpus"] == 500_000_000 and attrs["Memory"] == 256 * 1024**2

    probe = box.exec_run(["python", "probe.py"])
    assert probe.exit_code == 0, probe.output
    assert probe.output.decode().split() == [pins["psutil"], "/opt/venv"]
    assert box.exec_run(["id", "-u"]).output.strip() == b"10001"  # not root
    assert box.labels[LABEL_WORKSPACE] == str(workspace)
    assert box.ports["8000/tcp"][0]["HostIp"] == "127.0.0.1"
    assert images.host_port(box, 8000) > 0
    assert [r["container"] for r in Supervisor(workspace).status()] == [box.id]

    started = time.monotonic()
    assert images.build_image(  # unchanged context: no rebuild
        TEST_IMAGE, ["psutil"], base=offline_base,
        files={"probe.py": "import psutil, sys\nprint(psutil.__version__, sys.prefix)\n"},
        cmd=["python", "probe.py"],
    ) == tag
    assert time.monotonic() - started < 10


CHILD = """
import sys, time
from course_helpers import images
box = images.run_container("orphan", sys.argv[1], cpus=0.2, mem="64m", command=["sleep", "300"])
print(box.id, flush=True)
time.sleep(300)
"""


@pytest.mark.parametrize("lose_record", [False, True], ids=["recorded", "labels-only"])
def test_cleanup_removes_container_of_killed_process(workspace, offline_base, engine,
                                                     removed_afterwards, lose_record):
    import docker

    env = {**os.environ, "MLOPS_HOME": str(workspace)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, offline_base], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        container_id = child.stdout.readline().strip()
        assert container_id, child.stderr.read() if child.poll() is not None else "no id"
        removed_afterwards.append(engine.containers.get(container_id))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()
        child.stderr.close()
    assert engine.containers.get(container_id).status == "running"  # outlived its parent
    if lose_record:
        for record in (workspace / "run").glob("*.json"):
            record.unlink()

    cli = Path(sys.executable).with_name("mlops-course")
    cmd = [str(cli)] if cli.exists() else [sys.executable, "-m", "course_helpers.cli"]
    done = subprocess.run([*cmd, "cleanup"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "orphan" in done.stdout
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(container_id)


def test_missing_base_image_says_how_to_go_offline(workspace, engine):
    from course_helpers import images
    from course_helpers.errors import CourseError

    with pytest.raises(CourseError) as err:
        images.ensure_base_image("example.invalid/mlops-course/missing:0")
    message = str(err.value)
    assert "mlops-course image base" in message
    assert f"BASE_IMAGE={images.OFFLINE_BASE_IMAGE}" in message


def test_wheelhouse_names_the_package_without_a_wheel(workspace, engine):
    from course_helpers import images
    from course_helpers.errors import CourseError

    with pytest.raises(CourseError, match="no-such-package-mlops-course"):
        images.wheelhouse(["no-such-package-mlops-course==0.0.1"])
    assert not list((workspace / "wheelhouse").glob("*"))  # nothing half-made is left


def test_cgroup_limits_without_limits(workspace, offline_base, engine, removed_afterwards):
    from course_helpers import images
    from course_helpers.supervisor import container_labels

    box = engine.containers.run(offline_base, ["sleep", "60"], detach=True, network_mode="none",
                                labels=container_labels("unlimited"))
    removed_afterwards.append(box)
    assert images.read_cgroup_limits(box) == {"cpus": None, "memory_bytes": None}


def test_network_alias_and_healthcheck(workspace, offline_base, engine, removed_afterwards):
    """The base image's redis-server, reached by its course name on a course network."""
    import docker

    from course_helpers import images
    from course_helpers.supervisor import Supervisor

    cache = images.run_container(
        "cache", offline_base, cpus=0.25, mem="64m", network="lesson",
        command=["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"],
        healthcheck=["redis-cli", "ping"])
    removed_afterwards.append(cache)
    assert images.wait_healthy(cache, timeout=30) < 30
    client = images.run_container("client", offline_base, cpus=0.25, mem="64m",
                                  network="lesson", command=["sleep", "60"])
    removed_afterwards.append(client)
    assert client.exec_run(["redis-cli", "-h", "cache", "ping"]).output.strip() == b"PONG"

    network = images.container_name("lesson")
    assert engine.networks.list(names=[network])
    Supervisor(workspace).cleanup()
    assert not engine.networks.list(names=[network])
    for box in (cache, client):
        with pytest.raises(docker.errors.NotFound):
            box.reload()


def test_failed_build_shows_the_log_and_leaves_nothing(workspace, offline_base, engine):
    import docker

    from course_helpers import images
    from course_helpers.errors import CourseError

    tag = TEST_IMAGE.replace(":latest", ":broken")  # shares the test image's dependencies
    with pytest.raises(CourseError) as err:  # useradd refuses an existing user
        images.build_image(tag, ["psutil"], base=offline_base, user="root")
    assert f"building {tag} failed" in str(err.value)
    assert "useradd: user 'root' already exists" in str(err.value)
    assert not engine.images.list(filters={"dangling": True,
                                           "label": f"{images.LABEL_IMAGE}={tag}"})
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(tag)
