"""CI/CD gates as functions, and the workflow templates checked offline against their schemas."""

from __future__ import annotations

import shlex

import pytest

from course_helpers import cicd
from course_helpers.pipeline import steps

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def split():
    return steps.split(steps.make_batch(1_200, seed=1))


@pytest.fixture(scope="module")
def good(split):
    X_tr, _, y_tr, _ = split
    return steps.train(X_tr, y_tr, steps.config("baseline"))


def test_templates_are_valid_workflows_offline():
    names = set(cicd.templates())
    assert {"ml-ci.yml", "ml-cd.yml", "ml-retrain.yml", "gitlab-ci.yml"} <= names
    for name, path in cicd.templates().items():
        ok, out = cicd.validate_workflow(path)
        assert ok, f"{name}: {out}"


def test_a_broken_workflow_is_caught(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("name: x\non: [push]\njobs:\n  build:\n    steps:\n      - run: echo hi\n")
    ok, out = cicd.validate_workflow(bad)  # a job without runs-on
    assert not ok and "runs-on" in out
    typo = tmp_path / "typo.yml"
    typo.write_text("name: x\non: [pusj]\njobs:\n  b:\n    runs-on: ubuntu-latest\n"
                    "    steps:\n      - run: echo hi\n")
    assert not cicd.validate_workflow(typo)[0]


def test_written_workflows_are_filled_in_and_valid(tmp_path):
    paths = cicd.write_workflows(tmp_path, python="3.12", profile="classroom")
    assert (tmp_path / ".github" / "workflows" / "ml-ci.yml") in paths
    assert (tmp_path / ".gitlab-ci.yml") in paths
    for path in paths:
        text = path.read_text()
        assert "${PYTHON}" not in text and "${PROFILE}" not in text
        assert cicd.validate_workflow(path)[0], path
    ci = (tmp_path / ".github/workflows/ml-ci.yml").read_text()
    assert 'python-version: "3.12"' in ci and "MLOPS_PROFILE: classroom" in ci
    assert "${{ github.ref }}" in ci, "GitHub's own expressions are left alone"


def test_every_workflow_command_is_a_real_cli_command():
    from course_helpers.cli import build_parser

    parser = build_parser()
    seen_stages = set()
    for name, path in cicd.templates().items():
        commands = cicd.workflow_commands(path)
        assert commands, f"{name} runs no mlops-course command"
        for _, cmd in commands:
            argv = shlex.split(cmd.replace('"$PRESET"', "baseline").replace('"$BATCH_SEED"', "1"))
            args = parser.parse_args(argv[1:])  # SystemExit on an unknown option
            if getattr(args, "stages", None):
                seen_stages |= set(args.stages.split(","))
    assert seen_stages == set(cicd.STAGES)


def test_model_gate_passes_a_good_model(split, good):
    _, X_te, _, y_te = split
    res = cicd.model_gate(good, X_te, y_te)
    assert res.passed, res.lines()
    names = [c.name for c in res.checks]
    assert names == ["quality floor", "no regression", "serving contract",
                     "valid, deterministic probabilities", "weakest slice", "latency"]


def test_model_gate_catches_a_regression_and_a_weak_slice(split, good):
    X_tr, X_te, y_tr, y_te = split
    weak = steps.train(X_tr, y_tr, steps.config("weak"))
    res = cicd.model_gate(weak, X_te, y_te, champion=good)
    failed = {c.name for c in res.checks if not c.passed}
    assert not res.passed and {"quality floor", "no regression", "weakest slice"} <= failed


def test_model_gate_catches_a_feature_computed_outside_the_model(split):
    """A column added in the notebook before fitting is one requests never carry."""
    from sklearn.linear_model import LogisticRegression

    X_tr, X_te, y_tr, y_te = split
    extra = LogisticRegression(max_iter=500).fit(X_tr.assign(f00_x_f01=X_tr.f00 * X_tr.f01), y_tr)
    res = cicd.model_gate(extra, X_te, y_te)
    contract = next(c for c in res.checks if c.name == "serving contract")
    assert not contract.passed and "f00_x_f01" in contract.detail and not res.passed
    assert "inside the model" in contract.detail
    assert all("not checked" in c.detail for c in res.checks if c.name != "serving contract")


def test_model_gate_catches_a_model_without_input_names(split):
    from sklearn.linear_model import LogisticRegression

    X_tr, X_te, y_tr, y_te = split
    positional = LogisticRegression(max_iter=500).fit(X_tr.to_numpy(), y_tr)
    contract = next(c for c in cicd.model_gate(positional, X_te, y_te).checks
                    if c.name == "serving contract")
    assert not contract.passed and "by position" in contract.detail


def test_the_serving_contract_ignores_the_order_of_request_keys(split, good):
    _, X_te, _, _ = split
    check = cicd.serving_contract(good, X_te[list(X_te.columns)[::-1]])
    assert check.passed and "by name" in check.detail


def test_delivery_refuses_a_store_inside_the_runner(workspace):
    with pytest.raises(cicd.CourseError, match="no tracking server configured"):
        cicd.require_tracking_server("sqlite:////tmp/x/mlflow.db")
    report = cicd.run_stages(["promote"], require_server=True)
    assert not report.ok and "MLFLOW_TRACKING_URI" in report.failed.error


def test_latency_budget(split, good):
    _, X_te, _, y_te = split
    res = cicd.model_gate(good, X_te, y_te, thresholds=cicd.Thresholds(max_latency_ms=1e-6))
    assert [c.name for c in res.checks if not c.passed] == ["latency"]


def test_data_gate_lists_every_problem():
    df = steps.corrupt_batch(steps.make_batch(500, seed=1), "nulls")
    df = df.drop(columns=["f12"])
    res = cicd.data_gate(df)
    assert not res.passed and len(res.checks) == 2
    assert cicd.data_gate(steps.make_batch(500, seed=1)).passed


def test_unknown_stage_is_one_sentence(workspace):
    from course_helpers.errors import CourseError

    with pytest.raises(CourseError, match="unknown stage"):
        cicd.run_stages(["deploy-to-prod"])


def test_stages_refuse_to_run_on_missing_artifacts(workspace):
    rep = cicd.run_stages(["train"], profile="smoke")
    assert not rep.ok and "run the `data` stage first" in rep.failed.error
    rep = cicd.run_stages(["model"], profile="smoke")
    assert not rep.ok and "run the `train` stage first" in rep.failed.error
