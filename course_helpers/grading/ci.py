"""``grade ci``: every solution scores full autograded marks, every blank release zero."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from ..errors import CourseError

if TYPE_CHECKING:
    from .course import NotebookResult


def grade_ci(assignments: list[str] | None = None, *, timeout: int | None = None) -> int:
    """Check every assignment (or those named): its solution scores full autograded marks
    and its blank release scores zero. Prints a table; returns 1 and names the assignment,
    notebook and failing cell (grade_id) if any check fails, else 0."""
    from . import BLANK, SOLUTION, _course, _pick, _print_table, _pts, _scratch, course_dir

    course = course_dir()
    names = _pick(course / "source", assignments)
    root = _scratch("ci")
    sc = _course(root / "course", course / "source", names, timeout,
                 course / "nbgrader_config.py")
    rows: list[tuple[str, ...]] = []
    problems: list[str] = []
    for a in names:
        try:
            sc.generate(a)
        except CourseError as err:
            problems.append(f"{a}: {err}")
            continue
        nbs = sc.notebooks(a)
        sc.submit(a, SOLUTION, {nb: sc.path("source", a) / f"{nb}.ipynb" for nb in nbs})
        sc.submit(a, BLANK, {nb: sc.path("release", a) / f"{nb}.ipynb" for nb in nbs})
        for nb in nbs:
            ok_sol, log_sol, t_sol = sc.autograde(a, SOLUTION, nb)
            sol = sc.result(a, SOLUTION, nb)
            ok_blank, log_blank, t_blank = sc.autograde(a, BLANK, nb)
            blank = sc.result(a, BLANK, nb)
            rows.append((a, nb, f"{_pts(sol.auto_score)}/{_pts(sol.auto_max)}",
                         f"{_pts(blank.auto_score)}/{_pts(blank.auto_max)}",
                         f"{t_sol:.1f}", f"{t_blank:.1f}"))
            problems += _ci_problems(f"{a}/{nb}", sol, ok_sol, log_sol, blank, ok_blank,
                                     log_blank)
    _print_table(("assignment", "notebook", "solution", "blank", "solution s", "blank s"), rows)
    if problems:
        print("\nFAILED:")
        print("\n".join(f"  {p}" for p in problems))
        print(f"nbgrader's files are kept in {root}")
        return 1
    shutil.rmtree(root, ignore_errors=True)
    print("\nOK: every solution scores full autograded marks and every blank release scores 0")
    return 0


def _ci_problems(where: str, sol: NotebookResult, ok_sol: bool, log_sol: str,
                 blank: NotebookResult, ok_blank: bool, log_blank: str) -> list[str]:
    from . import _last_error, _pts
    from .course import first_line

    out = []
    if not sol.auto():
        out.append(f"{where}: no autograded test cells")
    if not ok_sol:
        out.append(f"{where}: autograding the solution failed: {_last_error(log_sol)}")
    if not ok_blank:
        out.append(f"{where}: autograding the blank release failed: {_last_error(log_blank)}")
    for c in sol.auto():
        if (c.score or 0) < c.max_score:
            out.append(f"{where}: the solution loses points in cell {c.grade_id} "
                       f"({_pts(c.score)}/{_pts(c.max_score)}): {first_line(c.error) or '?'}")
    for c in blank.auto():
        if (c.score or 0) > 0:
            out.append(f"{where}: the blank release already scores in cell {c.grade_id} "
                       f"({_pts(c.score)}/{_pts(c.max_score)}): it passes without a solution")
    return out
