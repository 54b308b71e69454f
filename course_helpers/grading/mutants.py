"""Plausible wrong solutions ("mutants") that the tests of an assignment must catch.

Each assignment may keep ``mutants.yaml`` beside its notebook (``source/<a>/mutants.yaml``,
never released to students: ``nbgrader_config.py`` ignores it). A mutant is the
instructor's solution with a few exact text replacements in one solution cell, written
as a teacher expects students to err::

    - name: mean_not_median
      why: the mean where the task asks for the median
      cell: middle_value                  # grade_id of the solution cell
      notebook: aNN_example               # optional when the assignment has one notebook
      replace:
        - ["return statistics.median(values)",
           "return statistics.mean(values)"]

:func:`grade_mutants` autogrades every mutant like a submission: each must lose
autograded points, otherwise its tests let a wrong answer through.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from ..errors import CourseError

MUTANTS_FILE = "mutants.yaml"


@dataclasses.dataclass
class Mutant:
    """One wrong solution: replacements (old, new) in one solution cell of one notebook."""

    name: str
    why: str
    cell: str
    replace: list[tuple[str, str]]
    notebook: str | None = None


def load_mutants(folder: Path) -> list[Mutant]:
    """The mutants of an assignment folder ([] if it has no ``mutants.yaml``)."""
    import yaml

    path = folder / MUTANTS_FILE
    if not path.exists():
        return []
    try:
        data = yaml.safe_load(path.read_text()) or []
        mutants = [Mutant(name=str(m["name"]), why=str(m.get("why", "")), cell=str(m["cell"]),
                          replace=[(str(a), str(b)) for a, b in m["replace"]],
                          notebook=m.get("notebook")) for m in data]
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as err:
        raise CourseError(f"{path} is not a list of mutants (name, why, cell, replace: "
                          f"[[old, new], ...]): {err}") from None
    names = [m.name for m in mutants]
    if len(names) != len(set(names)):
        raise CourseError(f"{path}: mutant names must be unique")
    return mutants


def apply_mutant(source_nb: Path, mutant: Mutant, dest: Path) -> None:
    """Write the solution notebook with the mutant's replacements made in its cell."""
    import nbformat

    nb = nbformat.read(str(source_nb), as_version=4)
    cells = [c for c in nb.cells
             if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == mutant.cell]
    if not cells:
        raise CourseError(f"mutant {mutant.name}: no cell {mutant.cell!r} in {source_nb.name}")
    cell = cells[0]
    for old, new in mutant.replace:
        if old not in cell.source:
            raise CourseError(f"mutant {mutant.name} no longer applies: {old!r} is not in "
                              f"cell {mutant.cell} of {source_nb.name}; update mutants.yaml")
        cell.source = cell.source.replace(old, new)
    nbformat.write(nb, str(dest))


def _grade_chunk(course: str, assignment: str, mutants: list[Mutant], root: str,
                 timeout: int | None) -> tuple[list[tuple[str, ...]], list[str]]:
    """Autograde some mutants of one assignment in a scratch course of their own (run in a
    worker process). Returns (rows, problems)."""
    from . import _course, _pts

    course_path, root_path = Path(course), Path(root)
    sc = _course(root_path / "course", course_path / "source", [assignment], timeout,
                 course_path / "nbgrader_config.py")
    sc.generate(assignment)
    nbs = sc.notebooks(assignment)
    rows: list[tuple[str, ...]] = []
    problems: list[str] = []
    for m in mutants:
        nb = m.notebook or (nbs[0] if len(nbs) == 1 else None)
        if nb not in nbs:
            problems.append(f"{assignment}/{m.name}: say which notebook (notebook: one of "
                            f"{', '.join(nbs)})")
            continue
        student = f"mutant-{m.name}"
        work = root_path / "mutants" / m.name
        work.mkdir(parents=True)
        try:
            apply_mutant(sc.path("source", assignment) / f"{nb}.ipynb", m, work / f"{nb}.ipynb")
        except CourseError as err:
            problems.append(f"{assignment}: {err}")
            continue
        sc.submit(assignment, student, {nb: work / f"{nb}.ipynb"})
        sc.autograde(assignment, student, nb)
        res = sc.result(assignment, student, nb)
        failed = [c.grade_id for c in res.auto() if (c.score or 0) < c.max_score]
        caught = res.auto_score < res.auto_max
        rows.append((assignment, m.name, f"{_pts(res.auto_score)}/{_pts(res.auto_max)}",
                     "caught" if caught else "SURVIVED", ", ".join(failed) or "-"))
        if not caught:
            problems.append(f"{assignment}/{m.name} keeps full marks: {m.why}")
    return rows, problems


def default_workers() -> int:
    """Worker processes for :func:`grade_mutants`: two where this process may use two CPUs
    or more (each grades its share of an assignment's mutants), else one."""
    from .. import config

    return 2 if config.cpu_limit() >= 2 else 1


def grade_mutants(assignments: list[str] | None = None, *, timeout: int | None = None,
                  workers: int | None = None) -> int:
    """Autograde every mutant of every assignment (or those named) and print, per mutant,
    its score and the test cells that caught it. Returns 1 if a mutant keeps full
    autograded marks (or a mutants file is broken), else 0. Assignments without a
    ``mutants.yaml`` are listed and skipped. Up to ``workers`` (default
    :func:`default_workers`) processes share an assignment's mutants, one per four mutants,
    each with a scratch course of its own."""
    import concurrent.futures
    import multiprocessing

    from . import _pick, _print_table, _scratch, course_dir

    course = course_dir()
    names = _pick(course / "source", assignments)
    workers = max(1, workers or default_workers())
    rows: list[tuple[str, ...]] = []
    problems: list[str] = []
    skipped: list[str] = []
    root = _scratch("mutants")
    for a in names:
        try:
            mutants = load_mutants(course / "source" / a)
        except CourseError as err:
            problems.append(str(err))
            continue
        if not mutants:
            skipped.append(a)
            continue
        n = min(workers, max(1, len(mutants) // 4))  # a worker costs a spawn and a generate
        chunks = [mutants[i::n] for i in range(n)]
        args = [(str(course), a, chunk, str(root / a / f"w{i}"), timeout)
                for i, chunk in enumerate(chunks)]
        try:
            if n == 1:
                results = [_grade_chunk(*args[0])]
            else:
                ctx = multiprocessing.get_context("spawn")  # no forked nbgrader/zmq state
                with concurrent.futures.ProcessPoolExecutor(n, mp_context=ctx) as pool:
                    results = list(pool.map(_grade_chunk, *zip(*args)))
        except CourseError as err:
            problems.append(f"{a}: {err}")
            continue
        order = {m.name: i for i, m in enumerate(mutants)}
        got = sorted((r for chunk_rows, _ in results for r in chunk_rows),
                     key=lambda r: order[r[1]])
        rows += got
        problems += [p for _, chunk_problems in results for p in chunk_problems]
    _print_table(("assignment", "mutant", "score", "verdict", "failing tests"), rows)
    for a in skipped:
        print(f"{a}: no {MUTANTS_FILE} yet, skipped")
    total = len(rows)
    survived = sum(r[3] == "SURVIVED" for r in rows)
    print(f"\n{total - survived} of {total} mutants caught")
    if problems:
        print("\nFAILED:")
        print("\n".join(f"  {p}" for p in problems))
        print(f"nbgrader's files are kept in {root}")
        return 1
    shutil.rmtree(root, ignore_errors=True)
    return 0
