"""nbgrader end to end: assignment CI, the student self-check, a batch of bad submissions."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.grading.submissions import CASES, _set, write_submissions
from tests.helpers import ROOT, need

pytestmark = pytest.mark.grading

ASSIGNMENTS = ROOT / "assignments"


def _sandbox() -> str:
    """The fast sandbox where there is one (the docker sandbox has its own tests)."""
    from course_helpers.grading.sandbox import process_sandbox_available

    return "process" if process_sandbox_available()[0] else "auto"


@pytest.fixture(autouse=True)
def _needs_nbgrader(monkeypatch):
    need(importlib.util.find_spec("nbgrader") is not None, "nbgrader (pip install -e .)")
    # a new gradebook runs `alembic`: the harness must find it even without the venv on PATH
    monkeypatch.setenv("PATH", "/usr/bin:/bin")


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if "__pycache__" not in p.parts}


def _no_kernels_left() -> list[str]:
    """Jupyter kernels this test process started and that still run."""
    import psutil

    time.sleep(0.5)  # a kernel being shut down may take a moment to exit
    left = []
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.status() != psutil.STATUS_ZOMBIE and "ipykernel" in " ".join(p.cmdline()):
                left.append(" ".join(p.cmdline()))
    return left


def test_importing_grading_does_not_import_nbgrader():
    out = subprocess.run([sys.executable, "-c", "import sys, course_helpers.grading, "
                          "course_helpers.cli; print('nbgrader' in sys.modules)"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_ci_solution_full_marks_blank_zero(workspace, capsys):
    from course_helpers import grading

    before = _tree(ASSIGNMENTS)
    assert grading.grade_ci(["a00_warmup"]) == 0
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if ln.startswith("a00_warmup"))
    assert row.split()[:4] == ["a00_warmup", "a00_warmup", "10/10", "0/10"], out
    assert "OK:" in out
    assert _tree(ASSIGNMENTS) == before, "grading wrote into the checkout"
    assert not list((workspace / "grading").iterdir()), "scratch left behind after success"
    assert _no_kernels_left() == []


def test_ci_fails_naming_the_cell(workspace, tmp_path, monkeypatch, capsys):
    import nbformat

    from course_helpers import grading
    from tests.grading.submissions import index

    course = tmp_path / "assignments"
    shutil.copytree(ASSIGNMENTS, course, ignore=shutil.ignore_patterns(
        "release", "submitted", "autograded", "feedback", "exchange", "gradebook.db"))
    path = course / "source" / "a00_warmup" / "a00_warmup.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    # a wrong solution (counts 4xx as errors) and a test that passes without any solution
    nb.cells[index(nb, "error_rate")].source = nb.cells[index(nb, "error_rate")].source.replace(
        "status >= 500", "status >= 400")
    nb.cells[index(nb, "test_throughput")].source = "assert True"
    nbformat.write(nb, str(path))
    monkeypatch.setattr(grading, "course_dir", lambda: course)

    assert grading.grade_ci() == 1
    out = capsys.readouterr().out
    assert "a00_warmup/a00_warmup: the solution loses points in cell test_error_rate" in out
    assert "AssertionError: 1 of 4 requests is a 5xx" in out
    assert "a00_warmup/a00_warmup: the blank release already scores in cell test_throughput" in out


def test_ci_names_unknown_assignment(workspace):
    from course_helpers import grading
    from course_helpers.errors import CourseError

    with pytest.raises(CourseError, match="no assignment named a99_nope.*a00_warmup"):
        grading.grade_ci(["a99_nope"])


def test_check_blank_release_then_solution(workspace, tmp_path, monkeypatch, capsys):
    from course_helpers import grading

    student = tmp_path / "student"
    released = grading.release("a00_warmup", student)
    assert [p.name for p in released] == ["a00_warmup.ipynb"]
    text = released[0].read_text()
    assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text

    monkeypatch.chdir(student)  # the default: the notebook in the current directory
    assert grading.grade_check("a00_warmup") == 0
    out = capsys.readouterr().out
    assert "FAIL  test_throughput" in out and "NotImplementedError" in out
    assert "test_throughput_hidden" in out and "hidden tests" in out
    assert "why_p95" in out and "graded by hand" in out
    assert "visible tests: 0/5 points" in out

    solution = ASSIGNMENTS / "source" / "a00_warmup" / "a00_warmup.ipynb"
    assert grading.grade_check("a00_warmup", str(solution)) == 0
    out = capsys.readouterr().out
    assert "PASS  test_latency_percentile" in out and "FAIL" not in out
    assert "visible tests: 5/5 points; hidden tests: 5 more; graded by hand: 2 more" in out


def test_check_unreadable_notebook_is_a_clear_error(workspace, tmp_path):
    from course_helpers import grading
    from course_helpers.errors import CourseError

    bad = tmp_path / "a00_warmup.ipynb"
    bad.write_text("{ not json")
    with pytest.raises(CourseError, match="not a readable notebook"):
        grading.grade_check("a00_warmup", str(bad))
    with pytest.raises(CourseError, match="does not exist"):
        grading.grade_check("a00_warmup", str(tmp_path / "nope.ipynb"))


def test_batch_survives_bad_submissions(workspace, tmp_path, capsys):
    from course_helpers import grading

    release = grading.release("a00_warmup", tmp_path / "release")[0]
    cases = dict(CASES)
    # a loop that ignores the interrupt: the kernel is replaced instead of stalling the rest
    cases["stubborn_loop"] = ([_set("throughput", "import signal\nsignal.signal("
                                    "signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass")], 8)
    # os._exit inside a function the tests call: every test cell calling it kills a kernel
    cases["exits_in_tests"] = ([_set("error_rate", "import os\n\ndef error_rate(requests):\n"
                                     "    os._exit(1)")], 6)
    subs = tmp_path / "submissions"
    expected = write_submissions(subs, release, cases)
    out = tmp_path / "results"

    started = time.monotonic()
    assert grading.grade_batch("a00_warmup", str(subs), str(out), timeout=5,
                               sandbox=_sandbox()) == 0
    elapsed = time.monotonic() - started
    printed = capsys.readouterr().out
    assert str(out / "grades.csv") in printed

    with open(out / "grades.csv", newline="") as fh:
        rows = {r["student"]: r for r in csv.DictReader(fh)}
    assert set(rows) == set(expected)
    for student, score in expected.items():
        assert float(rows[student]["score"]) == score, (student, rows[student])
        assert rows[student]["max_score"] == "12"
        assert rows[student]["assignment"] == "a00_warmup"
    assert rows["good"]["status"] == "ok" and rows["good"]["manual_pending"] == "2"
    assert rows["broken_json"]["status"] == "invalid"
    assert "broken_json.ipynb is not a readable notebook" in rows["broken_json"]["notes"]
    assert "throughput timed out" in rows["loop"]["notes"]
    assert "throughput timed out" in rows["stubborn_loop"]["notes"]
    assert "test_latency_percentile was deleted" in rows["deleted_test"]["notes"]
    assert "test_latency_percentile was edited" in rows["edited_test"]["notes"]
    assert "error_rate killed the kernel" in rows["exits"]["notes"]
    assert "test_error_rate killed the kernel" in rows["exits_in_tests"]["notes"]

    # the deleted test cell was put back and run; the edited one restored
    graded = {s: (out / "autograded" / s / "a00_warmup.ipynb").read_text()
              for s in ("deleted_test", "edited_test")}
    assert "was missing from the submission" in graded["deleted_test"]
    assert "trust me" not in graded["edited_test"]
    assert (out / "feedback" / "good" / "a00_warmup.html").stat().st_size > 0
    assert not (out / "feedback" / "broken_json").exists()

    # bounded: two 5 s timeouts and a few kernel restarts, not 30 s per cell
    assert elapsed < 150, f"batch took {elapsed:.0f} s"
    assert _no_kernels_left() == []


def test_batch_accepts_flat_and_nbgrader_layouts(workspace, tmp_path, capsys):
    from course_helpers import grading

    release = grading.release("a00_warmup", tmp_path / "release")[0]
    subs = tmp_path / "subs"
    write_submissions(subs, release, {"amy": ([], 10)}, invalid=None)
    (subs / "bo" / "a00_warmup").mkdir(parents=True)  # nbgrader's submitted/ layout
    shutil.copyfile(subs / "amy" / "a00_warmup.ipynb", subs / "bo" / "a00_warmup" /
                    "a00_warmup.ipynb")
    shutil.copyfile(release, subs / "cy.ipynb")  # flat, blank
    (subs / "di").mkdir()  # one notebook under another name
    shutil.copyfile(subs / "amy" / "a00_warmup.ipynb", subs / "di" / "Copy of warmup.ipynb")
    (subs / "ed").mkdir()  # nothing to grade
    (subs / ".ipynb_checkpoints").mkdir()
    # a copy of the instructor's notebook: it holds the hidden tests, which is not an edit
    shutil.copyfile(ASSIGNMENTS / "source" / "a00_warmup" / "a00_warmup.ipynb", subs / "fa.ipynb")

    assert grading.grade_batch("a00_warmup", str(subs), str(tmp_path / "out"),
                               sandbox=_sandbox()) == 0
    with open(tmp_path / "out" / "grades.csv", newline="") as fh:
        rows = {r["student"]: r for r in csv.DictReader(fh)}
    assert {s: float(r["score"]) for s, r in rows.items()} == {
        "amy": 10, "bo": 10, "cy": 0, "di": 10, "ed": 0, "fa": 10}
    assert "edited" not in rows["fa"]["notes"], rows["fa"]
    # the written answer is not graded yet: pending, not 0
    html = (tmp_path / "out" / "feedback" / "amy" / "a00_warmup.html").read_text()
    assert "Written response</a> (Score: pending / 2.0)" in html
    assert "2 pending, graded by hand)</h4>" in html
    assert "graded Copy of warmup.ipynb as a00_warmup.ipynb" in rows["di"]["notes"]
    assert rows["ed"]["status"] == "missing"
    assert "a00_warmup.ipynb is missing" in rows["ed"]["notes"]


def test_batch_rejects_a_missing_folder(workspace, tmp_path):
    from course_helpers import grading
    from course_helpers.errors import CourseError

    with pytest.raises(CourseError, match="not a folder of submissions"):
        grading.grade_batch("a00_warmup", str(tmp_path / "nowhere"))
