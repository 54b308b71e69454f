import pytest

from course_helpers import config

pytestmark = pytest.mark.unit


def test_profiles_are_ordered_by_size():
    smoke, classroom, full = (config.get_profile(n) for n in ("smoke", "classroom", "full"))
    assert smoke.duration_s < classroom.duration_s < full.duration_s
    assert smoke.n_rows < classroom.n_rows < full.n_rows


def test_profile_from_env_and_default(monkeypatch):
    monkeypatch.delenv("MLOPS_PROFILE", raising=False)
    assert config.get_profile().name == "classroom"
    monkeypatch.setenv("MLOPS_PROFILE", "Smoke")
    assert config.get_profile().name == "smoke"
    assert config.get_profile("full").name == "full"


def test_unknown_profile_names_the_choices():
    with pytest.raises(ValueError, match="smoke, classroom, full"):
        config.get_profile("huge")


def test_workspace_follows_mlops_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "ws"))
    assert config.workspace() == (tmp_path / "ws").resolve()
    assert (tmp_path / "ws").is_dir()
    assert config.workspace_dir("logs", "x").is_dir()


def test_default_workspace_is_in_the_repo_and_ignored(monkeypatch):
    monkeypatch.delenv("MLOPS_HOME", raising=False)
    root = config.repo_root()
    assert root is not None
    assert config.workspace(create=False) == root / ".mlops"
    assert ".mlops/" in (root / ".gitignore").read_text().splitlines()


def test_cpu_and_memory_are_positive_and_within_host():
    import os

    import psutil

    assert 0 < config.cpu_limit() <= os.cpu_count()
    assert 0 < config.memory_limit_bytes() <= psutil.virtual_memory().total


def test_cgroup_v2_quota_is_respected(monkeypatch):
    files = {"/sys/fs/cgroup/cpu.max": "50000 100000", "/sys/fs/cgroup/memory.max": str(2 * 2**30)}
    monkeypatch.setattr(config, "_read", files.get)
    assert config.cpu_limit() == 0.5
    assert config.memory_limit_bytes() == 2 * 2**30


def test_cgroup_v1_quota_is_respected(monkeypatch):
    files = {
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "150000",
        "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes": str(2**30),
    }
    monkeypatch.setattr(config, "_read", files.get)
    assert config.cpu_limit() == min(1.5, len(__import__("os").sched_getaffinity(0)))
    assert config.memory_limit_bytes() == 2**30


def test_unlimited_cgroup_falls_back_to_host(monkeypatch):
    import psutil

    files = {"/sys/fs/cgroup/cpu.max": "max 100000", "/sys/fs/cgroup/memory.max": "max"}
    monkeypatch.setattr(config, "_read", files.get)
    assert config.memory_limit_bytes() == psutil.virtual_memory().total


def test_binder_detection(monkeypatch):
    for var in ("BINDER_SERVICE_HOST", "BINDER_REQUEST", "BINDER_LAUNCH_HOST"):
        monkeypatch.delenv(var, raising=False)
    assert not config.is_binder()
    monkeypatch.setenv("BINDER_LAUNCH_HOST", "https://mybinder.org/")
    assert config.is_binder()
