"""a09_rollout through the course's nbgrader harness: the solution scores every autograded
point, the blank release scores none (its mutants are checked by test_mutants.py)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.grading


def test_a09_solution_full_marks_blank_zero(workspace, capsys):
    from course_helpers import grading

    assert grading.grade_ci(["a09_rollout"]) == 0
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if ln.startswith("a09_rollout"))
    assert row.split()[:4] == ["a09_rollout", "a09_rollout", "9/9", "0/9"], out

