"""The Docker backend end to end: replicas behind nginx, limits, scale, crash, down.

Needs a Docker engine, the offline base image (`mlops-course image base`) and nginx. The
serving image is built once (a few minutes cold, PyPI for the wheelhouse) and then reused
by its content hash; a warm run of this module takes about a minute.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.helpers import need

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def engine():
    from course_helpers import containers

    need(containers.available(), "a Docker engine")
    return containers.client()


@pytest.fixture(scope="module")
def serving_image(engine):
    """The serving image, built on the offline base (kept between runs: a rebuild is a no-op)."""
    from course_helpers import config, images
    from course_helpers.deploy.docker import serving_image as build

    need(images.image_exists(images.OFFLINE_BASE_IMAGE),
         f"the offline base image {images.OFFLINE_BASE_IMAGE} (`mlops-course image base`)")
    need(bool(config.find_binary("nginx")), "nginx (sudo apt-get install nginx)")
    started = time.monotonic()
    tag = build(images.OFFLINE_BASE_IMAGE)
    print(f"\nserving image {tag}: ready in {time.monotonic() - started:.1f} s")
    return tag


def predict(url: str, row: dict, timeout: float = 10) -> dict:
    req = urllib.request.Request(url + "/predict", data=json.dumps({"row": row}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # a new connection each time
        return json.loads(resp.read())


def served_requests(url: str) -> float:
    """Prediction requests a replica has answered, from its own /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text)
               if f.name == "mlops_requests" for s in f.samples if s.name.endswith("_total"))


class ClientLoop:
    """A small client hitting the load balancer in a thread, counting failures."""

    def __init__(self, url: str, row: dict) -> None:
        self.url, self.row = url, row
        self.ok = 0
        self.failures: list[str] = []
        self.replicas: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                predict(self.url, self.row)
                self.ok += 1
            except (urllib.error.URLError, OSError) as err:
                self.failures.append(repr(err))
            time.sleep(0.01)

    def __enter__(self) -> "ClientLoop":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def test_many_small_behind_nginx(workspace, serving_image, engine, monkeypatch):
    from course_helpers import images
    from course_helpers.data import request_rows
    from course_helpers.deploy import DeploymentSpec, get_backend
    from course_helpers.deploy.docker import LABEL_DEPLOYMENT
    from course_helpers.model import prepare
    from course_helpers.supervisor import LABEL_WORKSPACE, Supervisor

    monkeypatch.setenv("BASE_IMAGE", images.OFFLINE_BASE_IMAGE)
    backend = get_backend("docker")
    assert backend.name == "docker"
    uri = prepare("logreg", profile="smoke")
    spec = DeploymentSpec.many_small(uri, replicas=2, memory_mb=1024, name="t04")
    row = request_rows(1)[0]
    timings = {}

    started = time.monotonic()
    dep = backend.up(spec)
    timings["up"] = time.monotonic() - started
    try:
        assert dep.backend == "docker" and len(dep.replicas) == 2
        answer = predict(dep.url, row)
        assert answer["predictions"] in ([0], [1])

        # limits, as the processes inside the containers see them
        for r in dep.replicas:
            box = engine.containers.get(r.container_id)
            assert images.read_cgroup_limits(box) == {"cpus": 1.0, "memory_bytes": 512 * 2**20}
            assert box.labels[LABEL_WORKSPACE] == str(workspace)
            assert box.labels[LABEL_DEPLOYMENT] == "t04"
            assert box.attrs["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
            assert all(b["HostIp"] == "127.0.0.1" for b in box.ports["8000/tcp"])
            nets = box.attrs["NetworkSettings"]["Networks"]
            assert [n for n in nets] == [images.container_name("t04-net")]
        rows = backend.status(dep)
        assert [(s["replica"], s["state"], s["ready"]) for s in rows] == [
            ("t04-r0", "running", True), ("t04-r1", "running", True)]

        # both replicas answer through the load balancer (each counts its own requests;
        # pids cannot tell them apart: every container has its own pid namespace)
        for _ in range(20):
            predict(dep.url, row)
        served = [served_requests(r.url) for r in dep.replicas]
        assert sum(served) >= 21 and min(served) >= 5, f"nginx split {served}"

        # scale in and out under a client loop: nginx reloads, no request fails
        with ClientLoop(dep.url, row) as loop:
            time.sleep(0.3)
            started = time.monotonic()
            backend.scale(dep, 1)
            timings["scale to 1"] = time.monotonic() - started
            assert [r.name for r in dep.replicas] == ["t04-r0"]
            assert len(engine.containers.list(filters={"label": f"{LABEL_DEPLOYMENT}=t04"})) == 1
            started = time.monotonic()
            backend.scale(dep, 2)
            timings["scale to 2"] = time.monotonic() - started
            time.sleep(0.3)
        assert loop.failures == [] and loop.ok > 20, (loop.ok, loop.failures[:3])
        timings["requests while scaling"] = loop.ok
        assert [r.name for r in dep.replicas] == ["t04-r0", "t04-r1"]
        assert all(s["ready"] for s in backend.status(dep))

        # a crash: Docker's restart policy brings the replica back, nginx routes around it
        with ClientLoop(dep.url, row) as loop:
            time.sleep(0.2)
            victim = backend.kill_replica(dep, 1)
            started = time.monotonic()
            box = engine.containers.get(victim.container_id)
            while box.attrs.get("RestartCount", 0) < 1:
                assert time.monotonic() - started < 30, "Docker did not restart the replica"
                time.sleep(0.1)
                box.reload()
            backend.wait_ready(dep, timeout=60)
            timings["back after kill"] = time.monotonic() - started
        assert box.attrs["State"]["Pid"] != victim.pid
        assert loop.ok > 10 and len(loop.failures) <= 1, (loop.ok, loop.failures[:3])
        timings["requests during the kill"] = loop.ok
        timings["failed"] = len(loop.failures)
        status = backend.status(dep)
        assert status[1]["restarts"] == 1 and status[1]["ready"]
        predict(dep.url, row)
    finally:
        started = time.monotonic()
        backend.down(dep)
        timings["down"] = time.monotonic() - started
        print("\n" + ", ".join(f"{k} {v:.1f} s" if isinstance(v, float) else f"{k} {v}"
                               for k, v in timings.items()))

    flt = {"label": [f"{LABEL_WORKSPACE}={workspace}"]}
    assert engine.containers.list(all=True, filters=flt) == []
    assert engine.networks.list(filters=flt) == []
    assert Supervisor(workspace).records() == []


def test_registry_model_and_a_kill_the_host_cannot_send(workspace, serving_image, monkeypatch):
    """A models:/ URI is copied for the containers; without host signals (Docker Desktop, not
    root) kill_replica kills gunicorn from inside, and the restart policy still applies."""
    from course_helpers import model
    from course_helpers.data import request_rows
    from course_helpers.deploy import DeploymentSpec
    from course_helpers.deploy import docker as docker_backend
    from course_helpers.images import OFFLINE_BASE_IMAGE

    clf, X, _ = model.train("logreg", n_rows=500)
    model.register(clf, X, alias="champion")
    backend = docker_backend.DockerBackend(base_image=OFFLINE_BASE_IMAGE)
    dep = backend.up(DeploymentSpec.many_small("models:/simple-system@champion", replicas=1,
                                               memory_mb=512, name="reg04"))
    try:
        row = request_rows(1)[0]
        assert predict(dep.url, row)["predictions"] in ([0], [1])

        def refuse(pid, sig):
            raise PermissionError(1, "Operation not permitted")

        with monkeypatch.context() as patched:  # only for this call: os is everyone's module
            patched.setattr(docker_backend.os, "kill", refuse)
            backend.kill_replica(dep, 0)
        started = time.monotonic()
        while backend.status(dep)[0]["restarts"] < 1:
            assert time.monotonic() - started < 30, "Docker did not restart the replica"
            time.sleep(0.1)
        backend.wait_ready(dep, timeout=60)
        assert predict(dep.url, row)["predictions"] in ([0], [1])
    finally:
        backend.down(dep)


def test_missing_base_image_says_what_to_run(engine):
    from course_helpers.deploy.docker import serving_image
    from course_helpers.errors import CourseError

    with pytest.raises(CourseError) as err:
        serving_image("mlops-course/no-such-base:none")
    assert "mlops-course image base" in str(err.value)
    assert "BASE_IMAGE=mlops-course/base:bookworm" in str(err.value)


def test_rendered_compose_file_runs(workspace, serving_image, engine, tmp_path):
    """The compose file from manifests runs the same thing: nginx in front, limits, health."""
    import os
    import subprocess

    from course_helpers.data import request_rows
    from course_helpers.deploy import DeploymentSpec, manifests
    from course_helpers.deploy.docker import serving_image as current_image
    from course_helpers.errors import BinaryNotFoundError
    from course_helpers.images import OFFLINE_BASE_IMAGE
    from course_helpers.model import prepare
    from course_helpers.supervisor import LABEL_WORKSPACE, container_labels, free_port

    try:
        cli = manifests.compose_command()
    except BinaryNotFoundError:
        cli = None
    need(cli is not None, "the compose CLI (`docker compose` or `docker-compose`)")
    spec = DeploymentSpec.many_small(prepare("logreg", profile="smoke"), replicas=2,
                                     memory_mb=1024, name="c04")
    image = current_image(OFFLINE_BASE_IMAGE)  # the fixture's build, unless the sources changed
    port = free_port()
    paths = manifests.write_manifests(spec, tmp_path, image=image, lb_port=port,
                                      lb_image=OFFLINE_BASE_IMAGE,
                                      labels=container_labels("c04"))
    cli += ["-p", f"c04-{os.getpid()}", "-f", str(paths["compose.yaml"])]
    flt = {"label": [f"{LABEL_WORKSPACE}={workspace}"]}
    started = time.monotonic()
    try:
        up = subprocess.run(cli + ["up", "-d"], capture_output=True, text=True, timeout=180)
        assert up.returncode == 0, up.stderr[-2000:]
        row = request_rows(1)[0]
        while True:
            try:
                answer = predict(f"http://127.0.0.1:{port}", row, timeout=3)
                break
            except (urllib.error.URLError, OSError):
                assert time.monotonic() - started < 90, "the compose deployment never answered"
                time.sleep(0.5)
        assert answer["predictions"] in ([0], [1])
        print(f"\ncompose up to first prediction: {time.monotonic() - started:.1f} s")
        servers = engine.containers.list(
            filters={"label": flt["label"] + ["org.mlops-course.deployment=c04"]})
        assert len(servers) == 3  # two replicas (deploy.replicas) and nginx
        limits = sorted((b.attrs["HostConfig"]["NanoCpus"], b.attrs["HostConfig"]["Memory"])
                        for b in servers)
        assert limits[1:] == [(10**9, 512 * 2**20)] * 2
    finally:
        subprocess.run(cli + ["down", "--remove-orphans", "-t", "5"], capture_output=True,
                       timeout=120)
    assert engine.containers.list(all=True, filters=flt) == []
    assert engine.networks.list(filters=flt) == []
