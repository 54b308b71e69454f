"""Grading with nbgrader: instructor CI, student self-check, and batches of submissions.

The course directory is ``assignments/`` (``nbgrader_config.py``, ``source/<assignment>/``).
Every function here copies what it needs into a scratch directory under the workspace
(``<workspace>/grading/``) and runs nbgrader there, so the checkout is only ever read.
nbgrader is imported inside the functions: importing this package stays fast.
"""

from __future__ import annotations

import csv
import dataclasses
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .. import config
from ..errors import CourseError

if TYPE_CHECKING:
    from .course import NotebookResult, ScratchCourse

SOLUTION, BLANK, YOU = "ci-solution", "ci-blank", "you"
CSV_FIELDS = ["student", "assignment", "score", "max_score", "manual_pending", "status", "notes"]


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
            config_file: Path | None) -> ScratchCourse:
    from .course import ScratchCourse

    return ScratchCourse(root, source, assignments, timeout=timeout, config_file=config_file)


def release(assignment: str, dest: str | Path) -> list[Path]:
    """Generate the student version of an assignment (solutions and hidden tests removed)
    into ``dest``; returns the files written."""
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


# --------------------------------------------------------------------------- grade ci
def grade_ci(assignments: list[str] | None = None, *, timeout: int | None = None) -> int:
    """Check every assignment (or those named): its solution scores full autograded marks
    and its blank release scores zero. Prints a table; returns 1 and names the assignment,
    notebook and failing cell (grade_id) if any check fails, else 0."""
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


# ------------------------------------------------------------------------ grade check
def grade_check(assignment: str, notebook: str | None = None, *,
                timeout: int | None = None) -> int:
    """Run a student's notebook against the visible tests and print, per test cell,
    pass/fail and points, and the total on the visible tests.

    ``notebook`` defaults to the first that exists of ``./<nb>.ipynb``,
    ``./<assignment>/<nb>.ipynb`` and ``assignments/release/<assignment>/<nb>.ipynb``.
    Test cells and read-only cells are restored from the course source, as in grading.
    Returns 0; raises CourseError if the notebook cannot be found or read."""
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


# ------------------------------------------------------------------------ grade batch
@dataclasses.dataclass
class Submission:
    """One student's notebooks (notebook name -> file) and what was odd about them."""

    student: str
    files: dict[str, Path]
    notes: list[str] = dataclasses.field(default_factory=list)


def find_submissions(folder: Path, assignment: str, names: list[str]) -> list[Submission]:
    """Submissions in ``folder``, one per student; see :func:`grade_batch` for the layouts."""
    subs: dict[str, Submission] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_file() and entry.suffix == ".ipynb" and entry.stem not in subs:
            if len(names) == 1:
                subs[entry.stem] = Submission(entry.stem, {names[0]: entry})
            else:
                subs[entry.stem] = Submission(entry.stem, {}, [
                    f"{entry.name}: a single file cannot hold the {len(names)} notebooks"])
        elif entry.is_dir():
            subs[entry.name] = _student_folder(entry, assignment, names)
    return list(subs.values())


def _student_folder(folder: Path, assignment: str, names: list[str]) -> Submission:
    sub = Submission(folder.name, {})
    for where in (folder, folder / assignment):
        for name in names:
            if name not in sub.files and (where / f"{name}.ipynb").is_file():
                sub.files[name] = where / f"{name}.ipynb"
    if not sub.files and len(names) == 1:  # one notebook under another name: take it
        others = sorted(p for w in (folder, folder / assignment) if w.is_dir()
                        for p in w.glob("*.ipynb"))
        if len(others) == 1:
            sub.files[names[0]] = others[0]
            sub.notes.append(f"graded {others[0].name} as {names[0]}.ipynb")
    for name in names:
        if name not in sub.files:
            sub.notes.append(f"{name}.ipynb is missing")
    return sub


def grade_batch(assignment: str, submissions_dir: str, out: str | None = None, *,
                timeout: int | None = None) -> int:
    """Autograde a folder of student notebooks; write grades.csv, HTML feedback and the
    autograded notebooks into ``out`` (default ``<workspace>/grading/results/<assignment>``).

    Accepted layouts, one student per entry of ``submissions_dir`` (names starting with
    ``.`` or ``_`` are skipped):

    * ``<student_id>/<notebook>.ipynb`` (the notebook names of ``source/<assignment>/``);
    * ``<student_id>/<assignment>/<notebook>.ipynb`` (nbgrader's ``submitted/`` layout);
    * ``<student_id>.ipynb``, for an assignment with a single notebook;
    * a student folder holding exactly one notebook under another name, for an assignment
      with a single notebook (noted in the CSV).

    A bad submission never stops the batch: a cell is bounded by the cell timeout, a
    kernel killed by a cell is replaced (that cell and what depends on it score 0), deleted
    test cells are put back and edited ones restored, and a notebook that is not valid JSON
    scores 0 with the reason in the CSV. ``score`` counts autograded points;
    ``manual_pending`` is what remains to be graded by hand."""
    from tqdm import tqdm

    course = course_dir()
    _pick(course / "source", [assignment])
    folder = Path(submissions_dir).expanduser()
    if not folder.is_dir():
        raise CourseError(f"{folder} is not a folder of submissions")
    dest = Path(out).expanduser() if out else (
        config.workspace() / "grading" / "results" / assignment)
    root = _scratch("batch")
    try:
        sc = _course(root / "course", course / "source", [assignment], timeout,
                     course / "nbgrader_config.py")
        sc.generate(assignment)
        names = sc.notebooks(assignment)
        subs = find_submissions(folder, assignment, names)
        if not subs:
            raise CourseError(f"no submissions in {folder}: expected <student_id>/<notebook>"
                              ".ipynb or <student_id>.ipynb")
        dest.mkdir(parents=True, exist_ok=True)
        rows = []
        bar = tqdm(subs, desc=f"grading {assignment}", unit="student", file=sys.stderr)
        for sub in bar:
            bar.set_postfix_str(sub.student)
            try:
                rows.append(_grade_one(sc, assignment, names, sub, dest))
            except Exception as err:  # noqa: BLE001 - one student never stops the batch
                rows.append({"student": sub.student, "assignment": assignment, "score": "0",
                             "max_score": _pts(sc.max_score(assignment)), "manual_pending": "0",
                             "status": "error", "notes": f"{type(err).__name__}: {err}"})
        bar.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    with open(dest / "grades.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    _print_table(("student", "score", "status", "notes"),
                 [(r["student"], f"{r['score']}/{r['max_score']}", r["status"],
                   _short(r["notes"])) for r in rows])
    print(f"\nwrote {dest / 'grades.csv'}; feedback in {dest / 'feedback'}")
    return 0


def _short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _grade_one(sc: ScratchCourse, assignment: str, names: list[str], sub: Submission,
               dest: Path) -> dict[str, str]:
    from .course import read_notebook, tampering

    notes = list(sub.notes)
    readable: dict[str, Path] = {}
    for name, path in sub.files.items():
        try:
            submitted = read_notebook(path)
        except CourseError as err:
            notes.append(str(err).replace(str(path), path.name))
            continue
        readable[name] = path
        notes += tampering(read_notebook(sc.path("release", assignment) / f"{name}.ipynb"),
                           submitted)
    max_score = sc.max_score(assignment)
    row = {"student": sub.student, "assignment": assignment, "score": "0",
           "max_score": _pts(max_score), "manual_pending": "0", "notes": ""}
    if not readable:
        row["status"] = "invalid" if sub.files else "missing"
        row["notes"] = "; ".join(notes)
        return row
    sc.submit(assignment, sub.student, readable)
    ok, log, _ = sc.autograde(assignment, sub.student)
    if not ok:
        row["status"] = "error"
        row["notes"] = "; ".join([*notes, f"autograding failed: {_last_error(log)}"])
        return row
    results = [sc.result(assignment, sub.student, name) for name in readable]
    for res in results:
        notes += res.events
    row["score"] = _pts(sum(r.auto_score for r in results))
    row["manual_pending"] = _pts(sum(r.manual_max for r in results))
    row["status"] = "ok" if len(readable) == len(names) else "partial"
    row["notes"] = "; ".join(notes)
    for kind, files in (("feedback", sc.feedback(assignment, sub.student)),
                        ("autograded", sorted(sc.path("autograded", assignment, sub.student)
                                              .glob("*.ipynb")))):
        target = dest / kind / sub.student
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for f in files:
            shutil.copyfile(f, target / f.name)
    return row
