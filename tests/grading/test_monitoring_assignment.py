"""a08_monitoring through the course's nbgrader harness: the solution scores every
autograded point, the blank release scores none (its ten mutants are graded once, by
test_mutants.py's `grade_mutants()` over every assignment: grading them here as well cost
about a minute of CI for the same check)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.grading


def test_a08_solution_full_marks_blank_zero(workspace, capsys):
    from course_helpers import grading

    assert grading.grade_ci(["a08_monitoring"]) == 0
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if ln.startswith("a08_monitoring"))
    assert row.split()[:4] == ["a08_monitoring", "a08_monitoring", "11/11", "0/11"], out

