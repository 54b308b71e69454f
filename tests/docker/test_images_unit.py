"""The images helpers' own logic, and the no-engine message: no Docker engine needed."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit


@pytest.fixture
def fresh_client():
    from course_helpers import containers

    containers.client.cache_clear()
    yield containers.client
    containers.client.cache_clear()  # later tests get a client for the real engine


def test_no_engine_is_one_sentence_pointing_to_the_local_backend(monkeypatch, fresh_client):
    from course_helpers import containers
    from course_helpers.errors import DockerUnavailableError

    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    with pytest.raises(DockerUnavailableError) as err:
        fresh_client()
    message = str(err.value)
    assert "\n" not in message and len(message) < 400
    assert message.startswith("No Docker engine answered") and message.endswith(".")
    assert "local backend (--backend local)" in message
    assert containers.available() is False


def test_bare_requirements_get_the_lock_pins():
    from course_helpers.images import locked_pins, pin_requirements

    pins = {"psutil": "7.2.2", "scikit-learn": "1.9.1"}
    assert pin_requirements(["psutil", "scikit_learn", "six>=1", "fastapi[all]", "x==1"],
                            pins) == ["psutil==7.2.2", "scikit_learn==1.9.1", "six>=1",
                                      "fastapi[all]", "x==1"]
    assert pin_requirements(["Scikit-Learn[alldeps]"], pins) == ["Scikit-Learn[alldeps]==1.9.1"]
    lock = locked_pins()
    assert lock["psutil"] == "7.2.2" and "docker" in lock


def test_platform_tags_stop_at_bookworm_glibc():
    from course_helpers.images import manylinux_platforms

    tags = manylinux_platforms("x86_64")
    assert tags[0] == "manylinux_2_36_x86_64" and "manylinux_2_17_x86_64" in tags
    assert tags[-1] == "manylinux2014_x86_64" and "manylinux_2_38_x86_64" not in tags


def test_dockerfiles_install_offline_and_drop_root():
    from course_helpers.images import render_deps_dockerfile, render_dockerfile

    deps = render_deps_dockerfile("mlops-course/base:bookworm", ["psutil==7.2.2"], "abc")
    assert deps.splitlines()[1:3] == ["FROM mlops-course/base:bookworm",
                                      'LABEL org.mlops-course.deps="abc"']
    assert "pip install --no-index --find-links /wheels" in deps
    assert "pip install" not in render_deps_dockerfile("python:3.11-slim", [], "abc")

    app = render_dockerfile("python:3.11-slim", "x/app:deps-abc", has_files=True,
                            cmd=["python", "app.py"], labels={"org.mlops-course.image": "x/app"})
    assert app.splitlines()[1:3] == ["FROM python:3.11-slim",
                                     'LABEL org.mlops-course.image="x/app"']
    assert "COPY --from=x/app:deps-abc /opt/venv /opt/venv" in app and "wheels" not in app
    assert app.rstrip().endswith('USER app\nCMD ["python", "app.py"]')


def test_files_land_under_app_and_cannot_escape():
    from course_helpers.errors import CourseError
    from course_helpers.images.build import _context_path

    assert str(_context_path("serve.py")) == "app/serve.py"
    assert str(_context_path("/etc/nginx/conf.d/lb.conf")) == "etc/nginx/conf.d/lb.conf"
    for bad in ("../x", "/", "a/../../b"):
        with pytest.raises(CourseError):
            _context_path(bad)


@pytest.mark.parametrize("files, expected", [
    ({"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "50000", "/sys/fs/cgroup/cpu/cpu.cfs_period_us":
      "100000", "/sys/fs/cgroup/memory/memory.limit_in_bytes": "268435456"},
     {"cpus": 0.5, "memory_bytes": 268435456}),
    ({"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1", "/sys/fs/cgroup/cpu/cpu.cfs_period_us":
      "100000", "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712"},
     {"cpus": None, "memory_bytes": None}),
    ({"/sys/fs/cgroup/cpu.max": "150000 100000", "/sys/fs/cgroup/memory.max": "536870912"},
     {"cpus": 1.5, "memory_bytes": 536870912}),
    ({"/sys/fs/cgroup/cpu.max": "max 100000", "/sys/fs/cgroup/memory.max": "max"},
     {"cpus": None, "memory_bytes": None}),
], ids=["v1", "v1-unlimited", "v2", "v2-unlimited"])
def test_cgroup_files_parse(files, expected):
    from course_helpers.images import parse_cgroup_limits

    assert parse_cgroup_limits(files) == expected


def test_base_image_defaults_and_refuses_to_shadow_public_images(monkeypatch):
    from course_helpers import images
    from course_helpers.errors import CourseError

    monkeypatch.delenv("BASE_IMAGE", raising=False)
    assert images.base_image() == "python:3.11-slim"
    monkeypatch.setenv("BASE_IMAGE", images.OFFLINE_BASE_IMAGE)
    assert images.base_image() == images.OFFLINE_BASE_IMAGE
    for public in ("python:3.11-slim", "debian", "docker.io/library/python:3.11"):
        with pytest.raises(CourseError, match="refusing"):
            images.build_base_image(public)


def test_wheelhouse_never_empties_a_directory_it_did_not_make(tmp_path, monkeypatch):
    from course_helpers import images
    from course_helpers.errors import CourseError

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    mine = tmp_path / "my-project"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(CourseError, match="not a wheelhouse"):
        images.wheelhouse(["psutil"], dest=mine, arch="x86_64")
    assert (mine / "notes.txt").read_text() == "keep me"
