"""a06's throwaway MLflow store: a copy of an empty migrated database, for this MLflow."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.unit


def test_template_matches_installed_mlflow(tmp_path):
    if importlib.util.find_spec("mlflow") is None:
        pytest.skip("needs mlflow")
    from course_helpers.tracking import scratch

    assert scratch.template_path().is_file(), (
        f"no empty-store template for this MLflow: run `python -m course_helpers.tracking.scratch` "
        f"and commit {scratch.template_path().name}")
    uri = scratch.scratch_store(tmp_path / "store")
    assert uri == f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    assert (tmp_path / "store" / "mlflow.db").stat().st_size > 100_000

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # raises on an out-of-date schema
    exp = client.create_experiment("x", artifact_location=(tmp_path / "a").as_uri())
    run = client.create_run(exp)
    client.create_registered_model("m")
    mv = client.create_model_version("m", source=f"runs:/{run.info.run_id}/model",
                                     run_id=run.info.run_id)
    client.set_registered_model_alias("m", "champion", mv.version)
    assert client.get_model_version_by_alias("m", "champion").version == mv.version


def test_unknown_version_falls_back_to_mlflow(tmp_path, monkeypatch):
    from course_helpers.tracking import scratch

    monkeypatch.setattr(scratch, "_mlflow_version", lambda: "0.0.0")
    uri = scratch.scratch_store(tmp_path)
    assert uri.endswith("/mlflow.db") and not (tmp_path / "mlflow.db").exists()  # MLflow builds it
