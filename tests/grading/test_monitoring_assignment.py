"""a08_monitoring through the course's nbgrader harness: the solution scores every
autograded point, the blank release scores none, and every kept mutant loses points."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.grading


def test_a08_solution_full_marks_blank_zero(workspace, capsys):
    from course_helpers import grading

    assert grading.grade_ci(["a08_monitoring"]) == 0
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if ln.startswith("a08_monitoring"))
    assert row.split()[:4] == ["a08_monitoring", "a08_monitoring", "11/11", "0/11"], out


def test_a08_mutants_lose_points(workspace, capsys):
    from course_helpers import grading
    from course_helpers.grading.mutants import load_mutants
    from tests.helpers import ROOT

    assert grading.grade_mutants(["a08_monitoring"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    mutants = load_mutants(ROOT / "assignments" / "source" / "a08_monitoring")
    assert len(mutants) >= 5
    for m in mutants:
        row = next(ln for ln in out.splitlines() if ln.split()[:2] == ["a08_monitoring", m.name])
        assert "caught" in row, row
