"""A per-assignment cell budget that the grader, not the student's notebook, decides.

a03 starts Prefect's temporary API server in a set-up cell (10-21 s on a quiet machine, up to a
minute on a loaded grader): its cells get ``CELL_BUDGET_S["a03_pipelines"]``, stated in the
assignment's introduction, whatever the default cell timeout."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.helpers import ROOT, need

pytestmark = pytest.mark.grading


def test_budget_never_below_the_default_and_stated_in_the_assignment():
    from course_helpers.grading.execute import CELL_BUDGET_S, cell_budget

    assert cell_budget("a00_warmup", 30) == 30
    assert cell_budget("a03_pipelines", 5) == CELL_BUDGET_S["a03_pipelines"] > 30
    assert cell_budget("a03_pipelines", 500) == 500
    assert cell_budget("a03_pipelines", None) is None
    for assignment, seconds in CELL_BUDGET_S.items():
        nb = json.loads((ROOT / "assignments" / "source" / assignment / f"{assignment}.ipynb"
                         ).read_text())
        intro = "".join(nb["cells"][0]["source"])
        assert f"**{seconds} s**" in intro, f"{assignment} must state its cell budget"


def test_a03_grades_with_a_default_timeout_shorter_than_prefects_start(workspace, capsys):
    """With a 5 s default, a03's Prefect cells still run: the grader applies a03's budget
    (nbconvert re-reads the config when a notebook starts, so it is set per cell)."""
    need(importlib.util.find_spec("nbgrader") is not None, "nbgrader (pip install -e .)")
    need(importlib.util.find_spec("prefect") is not None, "prefect (a03 runs a flow)")
    from course_helpers import grading

    assert grading.grade_ci(["a03_pipelines"], timeout=5) == 0, capsys.readouterr().out


def test_a03_prefect_flow_runs_in_the_process_sandbox(workspace, tmp_path):
    """The student's flow runs for real inside the process sandbox (no network, its own
    loopback for Prefect's temporary server): the solution keeps every autograded point."""
    import csv

    import nbformat

    need(importlib.util.find_spec("nbgrader") is not None, "nbgrader (pip install -e .)")
    from course_helpers import grading
    from course_helpers.grading.sandbox import process_sandbox_available

    ok, why = process_sandbox_available()
    need(ok, f"the process sandbox ({why})")
    source = ROOT / "assignments" / "source" / "a03_pipelines" / "a03_pipelines.ipynb"
    (tmp_path / "subs").mkdir()
    nbformat.write(nbformat.read(str(source), as_version=4), str(tmp_path / "subs" / "ada.ipynb"))
    assert grading.grade_batch("a03_pipelines", str(tmp_path / "subs"), str(tmp_path / "out"),
                               sandbox="process") == 0
    with open(tmp_path / "out" / "grades.csv", newline="") as fh:
        (row,) = csv.DictReader(fh)
    auto_max = float(row["max_score"]) - float(row["manual_pending"])
    assert (float(row["score"]), row["status"], row["tamper"]) == (auto_max, "ok", ""), row
    assert auto_max == 13, row
