"""a07_features through the course's nbgrader harness: the solution scores every
autograded point, the blank release scores none."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.grading


def test_a07_solution_full_marks_blank_zero(workspace, capsys):
    from course_helpers import grading

    assert grading.grade_ci(["a07_features"]) == 0
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if ln.startswith("a07_features"))
    assert row.split()[:4] == ["a07_features", "a07_features", "9/9", "0/9"], out
