"""Grading with nbgrader: instructor CI, student self-check, batches, mutants.

The course directory is ``assignments/`` (``nbgrader_config.py``, ``source/<assignment>/``).
Every function here copies what it needs into a scratch directory under the workspace
(``<workspace>/grading/``) and runs nbgrader there, so the checkout is only ever read.
nbgrader is imported inside the functions: importing this package stays fast.

Modules: ``ci`` (solutions full marks, blanks zero), ``check`` (a student's self-check),
``batch`` (a folder of submissions, sandboxed), ``mutants`` (wrong solutions must lose
points), ``course`` (the scratch nbgrader course), ``execute``/``guard`` (how cells run
and are checked), ``sandbox`` (where the student's kernel runs), ``student`` (the released
assignments and the students' repository, ``mlops-course course release|student-copy``).
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .. import config
from ..errors import CourseError

if TYPE_CHECKING:
    from .course import ScratchCourse

SOLUTION, BLANK, YOU = "ci-solution", "ci-blank", "you"
CSV_FIELDS = ["student", "assignment", "score", "max_score", "manual_pending", "status",
              "tamper", "notes", "seconds"]


def course_dir() -> Path:
    """The nbgrader course directory of this checkout (``<repo>/assignments``)."""
    root = config.repo_root()
    path = root / "assignments" if root else None
    if path is None or not (path / "source").is_dir():
        raise CourseError("the nbgrader course directory (assignments/source) was not found: "
                          "run this from a clone of the course repository")
    return path


def list_assignments(source: Path) -> list[str]:
    """Assignments in ``source``: the subdirectories that hold a notebook."""
    return sorted(p.name for p in source.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and any(p.glob("*.ipynb")))


def _pick(source: Path, wanted: list[str] | None) -> list[str]:
    available = list_assignments(source)
    unknown = [a for a in wanted or [] if a not in available]
    if unknown:
        raise CourseError(f"no assignment named {', '.join(unknown)} in {source}: "
                          f"choose from {', '.join(available) or '(none)'}")
    return list(wanted or available)


def _plural(points: float) -> str:
    return f"{points:g} point" + ("" if points == 1 else "s")


def _scratch(kind: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=config.workspace_dir("grading")))


def _pts(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def _course(root: Path, source: Path, assignments: list[str], timeout: int | None,
            config_file: Path | None, sandbox: str = "none",
            hide: list[Path] | None = None) -> ScratchCourse:
    from .course import ScratchCourse

    return ScratchCourse(root, source, assignments, timeout=timeout, config_file=config_file,
                         sandbox=sandbox, hide=hide)


def _hidden_from_students(*extra: Path) -> list[Path]:
    """Folders a sandboxed kernel must not see: the course, the workspace, the inputs and
    outputs of the batch, and the course directory of the repository Python runs from."""
    out = [course_dir(), config.workspace(), *extra]
    for repo in {config.repo_root(), Path(sys.prefix).resolve().parent}:
        if repo is not None and (repo / "assignments").is_dir():
            out.append(repo / "assignments")
    return [p.resolve() for p in out]


def release(assignment: str, dest: str | Path) -> list[Path]:
    """Generate the student version of an assignment (solutions and hidden tests removed)
    into ``dest``; returns the files written. In the students' repository (no sources) it
    copies the released version from ``assignments/release/<assignment>/``."""
    from .student import copy_tree, released_in_students_copy

    released = released_in_students_copy(assignment)
    if released is not None:
        return copy_tree(released, Path(dest).expanduser())
    course = course_dir()
    _pick(course / "source", [assignment])
    root = _scratch("release")
    try:
        sc = _course(root / "course", course / "source", [assignment], None,
                     course / "nbgrader_config.py")
        sc.generate(assignment)
        target = Path(dest).expanduser()
        target.mkdir(parents=True, exist_ok=True)
        written = []
        for f in sorted(sc.path("release", assignment).rglob("*")):
            if f.is_file():
                out = target / f.relative_to(sc.path("release", assignment))
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, out)
                written.append(out)
        return written
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _last_error(log: str) -> str:
    """The most telling line of a failed nbgrader run: the innermost exception, if any."""
    from .course import first_line

    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    raised = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", ln)
              and not ln.startswith("nbgrader.converters.base.NbGraderException")]
    errors = [ln for ln in lines if ln.startswith("[ERROR]") and "Traceback" not in ln]
    return first_line((raised or errors or lines or ["no log"])[-1 if raised else 0], 300)


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())


# the commands, re-exported; each module imports what it shares from here at call time
from .batch import Submission, find_submissions, grade_batch  # noqa: E402
from .check import grade_check  # noqa: E402
from .ci import grade_ci  # noqa: E402
from .mutants import grade_mutants  # noqa: E402

__all__ = ["Submission", "course_dir", "find_submissions", "grade_batch", "grade_check",
           "grade_ci", "grade_mutants", "list_assignments", "release"]
