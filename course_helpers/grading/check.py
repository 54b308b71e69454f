"""``grade check``: a student runs the visible tests of their notebook, cell by cell."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CourseError

if TYPE_CHECKING:
    from .course import NotebookResult


def grade_check(assignment: str, notebook: str | None = None, *,
                timeout: int | None = None) -> int:
    """Run a student's notebook against the visible tests and print, per test cell,
    pass/fail and points, and the total on the visible tests.

    ``notebook`` defaults to the first that exists of ``./<nb>.ipynb``,
    ``./<assignment>/<nb>.ipynb`` and ``assignments/release/<assignment>/<nb>.ipynb``.
    Test cells and read-only cells are restored from the course source, as in grading.
    Returns 0; raises CourseError if the notebook cannot be found or read."""
    from . import YOU, _course, _last_error, _pick, _scratch, course_dir
    from .course import read_notebook, strip_hidden_tests

    started = time.monotonic()
    try:
        course: Path | None = course_dir()
    except CourseError:
        course = None  # an installed package without the course: grade against the notebook
    if course is not None:
        _pick(course / "source", [assignment])
        names = sorted(p.stem for p in (course / "source" / assignment).glob("*.ipynb"))
    else:
        names = [Path(notebook).stem if notebook else assignment]
    mine = _find_student_notebooks(assignment, names, notebook, course)
    for path in mine.values():
        read_notebook(path)
    root = _scratch("check")
    reference = root / "reference" / assignment
    if course is not None:
        shutil.copytree(course / "source" / assignment, reference)
    else:
        reference.mkdir(parents=True)
        for name, path in mine.items():
            shutil.copyfile(path, reference / f"{name}.ipynb")
    for nb_path in reference.glob("*.ipynb"):
        strip_hidden_tests(nb_path)
    try:
        sc = _course(root / "course", root / "reference", [assignment], timeout,
                     course / "nbgrader_config.py" if course else None)
        sc.generate(assignment)
        sc.submit(assignment, YOU, mine)
        ok, log, _ = sc.autograde(assignment, YOU)
        if not ok:
            print(f"could not run your notebook: {_last_error(log)}")
        for name in names:
            if name in mine:
                _print_check(sc.result(assignment, YOU, name), mine[name])
            else:
                print(f"{name}.ipynb: not found, so not checked")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"({time.monotonic() - started:.1f} s)")
    return 0


def _find_student_notebooks(assignment: str, names: list[str], notebook: str | None,
                            course: Path | None) -> dict[str, Path]:
    if notebook:
        path = Path(notebook).expanduser()
        if not path.is_file():
            raise CourseError(f"{path} does not exist")
        if len(names) == 1:
            return {names[0]: path.resolve()}
        if path.stem not in names:
            raise CourseError(f"{path.name} is not a notebook of {assignment}: "
                              f"expected one of {', '.join(n + '.ipynb' for n in names)}")
        return {path.stem: path.resolve()}
    found: dict[str, Path] = {}
    tried: list[Path] = []
    for name in names:
        candidates = [Path.cwd() / f"{name}.ipynb", Path.cwd() / assignment / f"{name}.ipynb"]
        if course is not None:
            candidates.append(course / "release" / assignment / f"{name}.ipynb")
        tried += candidates
        hit = next((p for p in candidates if p.is_file()), None)
        if hit:
            found[name] = hit
    if not found:
        raise CourseError(f"no notebook of {assignment} found (looked for "
                          f"{', '.join(str(p) for p in tried)}): pass its path, as in "
                          f"`mlops-course grade check {assignment} PATH`")
    return found


def _print_check(res: NotebookResult, path: Path) -> None:
    from . import _plural, _pts

    print(f"{res.assignment} · {res.notebook}.ipynb  ({path})")
    visible = res.auto(visible_only=True)
    width = max([len(c.grade_id) for c in res.cells] + [8])
    for c in res.cells:
        if c.kind == "manual":
            print(f"  hand  {c.grade_id:<{width}}  {_plural(c.max_score)}, graded by hand")
        elif c.hidden:
            print(f"  ----  {c.grade_id:<{width}}  {_plural(c.max_score)}, hidden tests: "
                  "they run when the assignment is graded")
        else:
            ok = (c.score or 0) >= c.max_score
            tail = "" if ok else f"  {c.error}"
            print(f"  {'PASS' if ok else 'FAIL'}  {c.grade_id:<{width}}  "
                  f"{_pts(c.score)}/{_pts(c.max_score)}{tail}")
    hidden = sum(c.max_score for c in res.auto() if c.hidden)
    print(f"visible tests: {_pts(sum(c.score or 0 for c in visible))}/"
          f"{_pts(sum(c.max_score for c in visible))} points"
          + (f"; hidden tests: {_pts(hidden)} more" if hidden else "")
          + (f"; graded by hand: {_pts(res.manual_max)} more" if res.manual_max else ""))
    for event in res.events:
        print(f"  note: {event}")
