"""The assignments' artefact tasks (a01 endpoint, a02 locustfile, a04 Dockerfile and compose,
a05 gate and workflow, a06 registry calls) through the course's nbgrader harness: every
solution keeps full autograded marks, every blank release scores none."""

from __future__ import annotations

import importlib.util

import pytest

from tests.helpers import need

pytestmark = pytest.mark.grading

TOTALS = {"a01_simple_system": 13, "a02_scaling": 13, "a03_pipelines": 13,
          "a04_deployment_spec": 14, "a05_ci_cd": 13, "a06_tracking": 10}


def test_solutions_full_marks_blanks_zero(workspace, capsys):
    need(importlib.util.find_spec("nbgrader") is not None, "nbgrader (pip install -e .)")
    need(importlib.util.find_spec("locust") is not None, "locust (a02 runs it)")
    from course_helpers import grading

    assert grading.grade_ci(list(TOTALS)) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    for a, total in TOTALS.items():
        row = next(ln for ln in out.splitlines() if ln.startswith(a))
        assert row.split()[:4] == [a, a, f"{total}/{total}", f"0/{total}"], out
