"""One settings object: every variable the course reads, parsed and documented once."""

import re
from pathlib import Path

import pytest

from course_helpers import config
from course_helpers.config import PROFILE_NAMES, Settings, settings, variables

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_defaults_and_parsing(monkeypatch):
    for row in variables():
        monkeypatch.delenv(row["name"], raising=False)
    s = settings()
    assert (s.profile, s.cache, s.cache_size, s.predict_threads, s.backend) == \
        ("classroom", "lru", 10_000, 2, "auto")
    monkeypatch.setenv("MLOPS_CACHE_SIZE", " 12 ")
    monkeypatch.setenv("MLOPS_PREDICT_ON_LOOP", "TRUE")
    monkeypatch.setenv("MLOPS_CACHE", "")  # empty counts as unset
    monkeypatch.setenv("MLOPS_LOAD_RATE", "2.5")
    s = settings()  # read again: nothing cached
    assert (s.cache_size, s.predict_on_loop, s.cache, s.load_rate) == (12, True, "lru", 2.5)


def test_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("MLOPS_CACHE_SIZE", "lots")
    with pytest.raises(ValueError, match=r"MLOPS_CACHE_SIZE='lots' is not a whole number"):
        settings()


def test_profile_and_workspace_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_PROFILE", " Smoke ")
    assert config.get_profile().name == "smoke"
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "ws"))
    assert config.workspace() == (tmp_path / "ws").resolve()
    assert PROFILE_NAMES == ("smoke", "classroom", "full")


def test_server_settings_come_from_the_one_object(monkeypatch):
    from course_helpers.serving.app import Settings as ServerSettings

    monkeypatch.setenv("MLOPS_MODEL_URI", "/m")
    monkeypatch.setenv("MLOPS_DB", "none")
    monkeypatch.setenv("MLOPS_FOLLOW_ALIAS_S", "5")
    server = ServerSettings.from_env()
    assert (server.model_uri, server.db, server.follow_alias_s) == ("/m", None, 5.0)
    assert ServerSettings.from_env().to_env()["MLOPS_MODEL_URI"] == "/m"
    assert Settings.env_name("follow_alias_s") == "MLOPS_FOLLOW_ALIAS_S"


def test_server_settings_survive_a_stray_variable_in_the_parent(monkeypatch):
    """A server started with ``to_env()`` over the parent's environment runs with exactly the
    settings it was given, defaults included."""
    from course_helpers.serving.app import Settings as ServerSettings

    for name, value in {"MLOPS_PREDICT_ON_LOOP": "true", "MLOPS_PREDICT_THREADS": "7",
                        "MLOPS_FOLLOW_ALIAS_S": "9", "MLOPS_REDIS_URL": "redis://x:1"}.items():
        monkeypatch.setenv(name, value)
    given = ServerSettings(model_uri="/m", db=None)
    import os

    child = {**os.environ, **given.to_env()}
    monkeypatch.setattr(os, "environ", child)
    assert ServerSettings.from_env() == given


def test_server_defaults_are_the_documented_defaults():
    import dataclasses

    from course_helpers.serving.app import Settings as ServerSettings

    for f in dataclasses.fields(ServerSettings):
        if f.name != "model_uri":
            assert f.default == getattr(Settings, f.name), f.name


def test_every_variable_the_package_names_is_documented():
    documented = {row["name"] for row in variables()}
    assert len(documented) == len(variables())
    assert all(row["meaning"] for row in variables())
    used = set()
    for path in (ROOT / "course_helpers").rglob("*.py"):
        used |= set(re.findall(r"\bMLOPS_[A-Z0-9_]+\b", path.read_text()))
    assert used <= documented, f"document these in config.Settings: {sorted(used - documented)}"
