"""`mlops-course grade mutants`: every plausible wrong solution kept beside an assignment
loses points; a mutant that keeps full marks, or no longer applies, fails the check."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from tests.helpers import ROOT, need

pytestmark = pytest.mark.grading

ASSIGNMENTS = ROOT / "assignments"


@pytest.fixture(autouse=True)
def _needs_nbgrader():
    need(importlib.util.find_spec("nbgrader") is not None, "nbgrader (pip install -e .)")


# 68 mutants took 388 s on one worker at load 5-6 (2 CPUs shared); a03's 16 (each starts
# Prefect's temporary server) took 395 s on two workers at load 8
@pytest.mark.timeout(2400)
def test_every_mutant_loses_points(workspace, capsys):
    from course_helpers import grading
    from course_helpers.grading.mutants import load_mutants

    assert grading.grade_mutants() == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    for a in ("a00_warmup", "a01_simple_system", "a02_scaling", "a03_pipelines",
              "a04_deployment_spec", "a05_ci_cd", "a06_tracking", "a07_features",
              "a08_monitoring", "a09_rollout", "a10_capstone"):
        mutants = load_mutants(ASSIGNMENTS / "source" / a)
        assert len(mutants) >= 5, a
        for m in mutants:
            row = next(ln for ln in out.splitlines() if ln.split()[:2] == [a, m.name])
            assert "caught" in row, row
    for folder in sorted((ASSIGNMENTS / "source").iterdir()):
        if folder.is_dir() and not (folder / "mutants.yaml").exists():
            assert f"{folder.name}: no mutants.yaml yet, skipped" in out
    assert "SURVIVED" not in out


def test_surviving_or_stale_mutant_fails_the_check(workspace, tmp_path, monkeypatch, capsys):
    from course_helpers import grading

    course = tmp_path / "assignments"
    shutil.copytree(ASSIGNMENTS, course, ignore=shutil.ignore_patterns(
        "release", "submitted", "autograded", "feedback", "exchange", "gradebook.db"))
    (course / "source" / "a00_warmup" / "mutants.yaml").write_text(
        "- name: renamed_variable\n  why: a harmless rename, not a bug\n"
        "  cell: error_rate\n  replace:\n    - [failed, n_failed]\n"
        "- name: stale\n  why: its text is gone from the solution\n"
        "  cell: error_rate\n  replace:\n    - [no such text, x]\n")
    monkeypatch.setattr(grading, "course_dir", lambda: course)

    assert grading.grade_mutants(["a00_warmup"]) == 1
    out = capsys.readouterr().out
    assert "a00_warmup/renamed_variable keeps full marks: a harmless rename" in out
    assert "mutant stale no longer applies: 'no such text' is not in cell error_rate" in out
    assert "0 of 1 mutants caught" in out


def test_mutants_never_reach_students(workspace, tmp_path):
    from course_helpers import grading

    written = grading.release("a00_warmup", tmp_path / "student")
    assert [p.name for p in written] == ["a00_warmup.ipynb"]
