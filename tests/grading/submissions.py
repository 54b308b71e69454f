"""Build a folder of student submissions of a00_warmup, good and bad, from the source notebook."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import nbformat

from tests.helpers import ROOT

SOURCE = ROOT / "assignments" / "source" / "a00_warmup" / "a00_warmup.ipynb"
STUB = "# YOUR CODE HERE\nraise NotImplementedError()"


def solved_release(release: Path) -> nbformat.NotebookNode:
    """The released notebook with the instructor's solutions typed in: a perfect student."""
    nb = nbformat.read(str(release), as_version=4)
    solutions = {c.metadata["nbgrader"]["grade_id"]: c.source
                 for c in nbformat.read(str(SOURCE), as_version=4).cells
                 if c.metadata.get("nbgrader", {}).get("solution")}
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in solutions:
            cell.source = "\n".join(line for line in solutions[gid].splitlines()
                                    if "BEGIN SOLUTION" not in line and "END SOLUTION" not in line)
    return nb


def index(nb: nbformat.NotebookNode, grade_id: str) -> int:
    return next(i for i, c in enumerate(nb.cells)
                if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _set(grade_id: str, source: str) -> Callable[[nbformat.NotebookNode], None]:
    def change(nb: nbformat.NotebookNode) -> None:
        nb.cells[index(nb, grade_id)].source = source
    return change


def _append(grade_id: str, code: str) -> Callable[[nbformat.NotebookNode], None]:
    def change(nb: nbformat.NotebookNode) -> None:
        nb.cells[index(nb, grade_id)].source += "\n" + code
    return change


def _delete(grade_id: str) -> Callable[[nbformat.NotebookNode], None]:
    def change(nb: nbformat.NotebookNode) -> None:
        del nb.cells[index(nb, grade_id)]
    return change


# student id -> the changes made to the instructor's solution, and the autograded score
# expected out of 10 (tasks: throughput 2, percentile 4, error rate 2, SLO 2)
CASES: dict[str, tuple[list[Callable], float]] = {
    "good": ([], 10),
    # an endless loop in the throughput cell: that cell times out; its tests fail (NameError)
    "loop": ([_set("throughput", "while True:\n    pass")], 8),
    # did not do task 2 and deleted its visible test: the test is put back and fails (task 4
    # uses task 2, so it fails too)
    "deleted_test": ([_set("latency_percentile", STUB), _delete("test_latency_percentile")], 4),
    # did not do task 2 and "fixed" its visible test: the test is restored and fails
    "edited_test": ([_set("latency_percentile", STUB),
                     _set("test_latency_percentile", "assert True  # trust me")], 4),
    # kills the kernel after defining error_rate: error rate and SLO tests lose their points
    "exits": ([_append("error_rate", "import os\nos._exit(1)")], 6),
}


def write_submissions(folder: Path, release: Path,
                      cases: dict[str, tuple[list[Callable], float]] = CASES,
                      *, invalid: str | None = "broken_json") -> dict[str, float]:
    """Write ``<student>/a00_warmup.ipynb`` for every case, starting from the released
    notebook ``release`` (plus a flat ``<invalid>.ipynb`` that is not JSON); returns the
    expected autograded score of each student."""
    base = solved_release(release)
    expected = {}
    for student, (changes, score) in cases.items():
        nb = copy.deepcopy(base)
        for change in changes:
            change(nb)
        (folder / student).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(folder / student / "a00_warmup.ipynb"))
        expected[student] = score
    if invalid:
        (folder / f"{invalid}.ipynb").write_text('{"cells": [ this is not JSON')
        expected[invalid] = 0
    return expected
