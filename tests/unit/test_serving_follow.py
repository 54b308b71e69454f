"""AliasFollower's own logic (the registry is a test double here; the real mlflow server
run is tests/integration/test_serving_faults.py::test_follow_alias_...)."""

import types

import pytest

from course_helpers.serving.loading import AliasFollower, LoadedModel

pytestmark = pytest.mark.unit


def loaded(version: str, features=("a", "b")) -> LoadedModel:
    return LoadedModel("models:/m@champion", "m", version, f"uuid-{version}", list(features),
                       {f: float for f in features}, object(), True)


@pytest.fixture
def registry(monkeypatch):
    import mlflow

    state = {"version": "1"}

    class FakeClient:
        def __init__(self, **kwargs):
            pass

        def get_model_version_by_alias(self, name, alias):
            assert (name, alias) == ("m", "champion")
            return types.SimpleNamespace(version=state["version"])

    monkeypatch.setattr(mlflow, "MlflowClient", FakeClient)
    return state


def test_swaps_when_the_alias_moves_and_keeps_the_display_uri(registry):
    holder = types.SimpleNamespace(model=loaded("1"))
    calls = []

    def loader(uri, display_uri):
        calls.append((uri, display_uri))
        return loaded(uri.rsplit("/", 1)[1])

    follower = AliasFollower(holder, 0.5, loader=loader)
    assert follower.poll_once() is False and calls == []
    registry["version"] = "2"
    assert follower.poll_once() is True
    assert holder.model.version == "2" and calls == [("models:/m/2", "models:/m@champion")]


def test_refuses_a_version_with_other_features(registry, capsys):
    holder = types.SimpleNamespace(model=loaded("1"))
    follower = AliasFollower(holder, 0.5, loader=lambda uri, display_uri: loaded("2", ("a", "c")))
    registry["version"] = "2"
    assert follower.poll_once() is False and holder.model.version == "1"
    assert "other input features" in capsys.readouterr().err
    assert follower.poll_once() is False  # refused once, not reloaded every poll


def test_needs_an_alias_uri():
    holder = types.SimpleNamespace(model=loaded("1"))
    holder.model.uri = "/some/path"
    with pytest.raises(ValueError, match="models:/NAME@ALIAS"):
        AliasFollower(holder, 1.0)
