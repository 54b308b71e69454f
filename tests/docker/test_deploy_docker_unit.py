"""The Docker backend without an engine: readable errors, and the recipe it would run."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit


@pytest.fixture
def no_engine(monkeypatch):
    from course_helpers import containers

    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    containers.client.cache_clear()
    yield
    containers.client.cache_clear()  # later tests get a client for the real engine


def test_no_engine_is_the_one_sentence_error(no_engine, tmp_path):
    from course_helpers.deploy import DeploymentSpec, get_backend
    from course_helpers.errors import DockerUnavailableError

    backend = get_backend("docker")
    assert backend.name == "docker"
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(DockerUnavailableError) as err:
        backend.up(DeploymentSpec.many_small(str(tmp_path), replicas=1))
    message = str(err.value)
    assert message.startswith("No Docker engine answered") and "\n" not in message
    assert "--backend local" in message


def test_unsupported_settings_are_refused_before_anything_starts(tmp_path, monkeypatch):
    from course_helpers.deploy import DeploymentSpec
    from course_helpers.deploy.docker import DockerBackend
    from course_helpers.deploy.spec import SpecError

    backend = DockerBackend()
    monkeypatch.setattr(DockerBackend, "_client", staticmethod(lambda: pytest.fail("no engine")))
    with pytest.raises(SpecError, match="cache='lru'"):
        backend._check(DeploymentSpec.many_small(str(tmp_path), cache="redis"))
    with pytest.raises(SpecError, match="db=None"):
        backend._check(DeploymentSpec.many_small(str(tmp_path), db="/tmp/x.db"))
    with pytest.raises(SpecError, match="MLflow model directory"):
        backend._model_dir(DeploymentSpec.many_small(str(tmp_path)))


def test_gunicorn_command_and_health_check():
    from course_helpers.deploy.docker import gunicorn_command, healthcheck

    one = gunicorn_command(1)
    assert one[0] == "gunicorn" and "--preload" in one
    cmd = gunicorn_command(3)
    assert cmd[cmd.index("--workers") + 1] == "3"
    # any number of workers: each listens on its own SO_REUSEPORT socket
    # (MLOPS_REUSEPORT_BIND); the master's bind is a unix socket nobody calls
    for c in (one, cmd):
        assert "course_helpers.serving.worker.ReusePortWorker" in c
        assert c[c.index("--bind") + 1].startswith("unix:")
    check = healthcheck()
    assert "/ready" in check["test"][-1]
    assert check["interval"] == 2 * 10**9  # the engine counts in nanoseconds


def test_import_walk_follows_relative_and_lazy_imports(tmp_path):
    from course_helpers.deploy.docker import _course_imports

    src = tmp_path / "mod.py"
    src.write_text("from . import config\nfrom ..model import x\n"
                   "def f():\n    from .cache import y\n    import course_helpers.data\n"
                   "import numpy\n")
    found = _course_imports(src, "course_helpers.serving.mod")
    assert {"course_helpers.serving", "course_helpers.serving.config", "course_helpers.model",
            "course_helpers.serving.cache", "course_helpers.data"} <= found
    assert not any(f.startswith("numpy") for f in found)
