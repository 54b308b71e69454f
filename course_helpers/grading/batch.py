"""``grade batch``: autograde a folder of submissions, each kernel in a sandbox."""

from __future__ import annotations

import csv
import dataclasses
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .. import config
from ..errors import CourseError

if TYPE_CHECKING:
    from .course import ScratchCourse

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
                timeout: int | None = None, sandbox: str = "auto") -> int:
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
    ``manual_pending`` is what remains to be graded by hand; ``tamper`` names what the
    integrity checks caught (those tests score 0); ``seconds`` is the grading time.

    ``sandbox`` is where student code runs: ``process`` (namespaces, an unprivileged
    user, limits), ``docker`` (one container per kernel from the grading image) or
    ``auto`` (docker if its image is built, else process); see ``sandbox.py``."""
    from tqdm import tqdm

    from . import (CSV_FIELDS, _course, _hidden_from_students, _pick, _print_table, _pts,
                   _scratch, course_dir)
    from .sandbox import resolve

    mode = resolve(sandbox)
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
                     course / "nbgrader_config.py", mode,
                     _hidden_from_students(folder.resolve(), dest.resolve()))
        sc.generate(assignment)
        names = sc.notebooks(assignment)
        subs = find_submissions(folder, assignment, names)
        if not subs:
            raise CourseError(f"no submissions in {folder}: expected <student_id>/<notebook>"
                              ".ipynb or <student_id>.ipynb")
        dest.mkdir(parents=True, exist_ok=True)
        rows = []
        bar = tqdm(subs, desc=f"grading {assignment} ({mode} sandbox)", unit="student",
                   file=sys.stderr, mininterval=1.0)
        for sub in bar:
            bar.set_postfix_str(sub.student)
            try:
                rows.append(_grade_one(sc, assignment, names, sub, dest))
            except Exception as err:  # noqa: BLE001 - one student never stops the batch
                rows.append({"student": sub.student, "assignment": assignment, "score": "0",
                             "max_score": _pts(sc.max_score(assignment)), "manual_pending": "0",
                             "status": "error", "tamper": "", "seconds": "",
                             "notes": f"{type(err).__name__}: {err}"})
        bar.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    with open(dest / "grades.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    _print_table(("student", "score", "status", "s", "notes"),
                 [(r["student"], f"{r['score']}/{r['max_score']}", r["status"], r["seconds"],
                   _short("; ".join(x for x in (r["tamper"] and "TAMPER: " + r["tamper"],
                                                r["notes"]) if x))) for r in rows])
    print(f"\nwrote {dest / 'grades.csv'}; feedback in {dest / 'feedback'}")
    return 0


def _short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _grade_one(sc: ScratchCourse, assignment: str, names: list[str], sub: Submission,
               dest: Path) -> dict[str, str]:
    from . import _last_error, _pts
    from .course import read_notebook, tampering

    started = time.monotonic()
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
           "max_score": _pts(max_score), "manual_pending": "0", "notes": "", "tamper": "",
           "seconds": ""}
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
    row["tamper"] = "; ".join(t for r in results for t in r.tamper)
    if row["tamper"]:
        row["status"] = "tampered"
    row["seconds"] = f"{time.monotonic() - started:.1f}"
    for kind, files in (("feedback", sc.feedback(assignment, sub.student)),
                        ("autograded", sorted(sc.path("autograded", assignment, sub.student)
                                              .glob("*.ipynb")))):
        target = dest / kind / sub.student
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for f in files:
            shutil.copyfile(f, target / f.name)
    return row
