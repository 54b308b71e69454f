"""a10_capstone through the course's nbgrader harness: the solution scores every autograded
point, the blank release scores none (its mutants are checked by test_mutants.py); the shipped
week is what the stored real run and its seed give, in the capstone contract's format, and
students get only the notebook and that week (no generator, no stored run, no hidden week)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import ROOT, load_script

pytestmark = pytest.mark.grading

SOURCE = ROOT / "assignments" / "source" / "a10_capstone"
DAY_KEYS = {"day", "rows", "drift_score", "alerts", "pipeline_runs", "registered", "promoted",
            "rolled_back", "requests", "failed_requests", "p95_ms", "slo_budget_left",
            "cost_per_1m"}
SUMMARY_KEYS = {"drift_day", "drift_detected_day", "retrained_day", "bad_model_day",
                "bad_model_max_weight", "slo_met", "wall_s", "peak_mb"}
EVENT_KINDS = {"batch", "drift_alert", "alert", "pipeline_run", "registered", "gate",
               "canary_step", "promoted", "rolled_back", "replica_killed", "replica_healed",
               "day_failed"}


def _generator():
    return load_script(SOURCE / "instructor_artefacts.py", "a10_instructor_artefacts")


def test_a10_solution_full_marks_blank_zero(workspace, capsys):
    from course_helpers import grading

    assert grading.grade_ci(["a10_capstone"]) == 0
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if ln.startswith("a10_capstone"))
    assert row.split()[:4] == ["a10_capstone", "a10_capstone", "11/11", "0/11"], out


def test_shipped_week_is_the_stored_run_with_its_seeds_problems_in_the_contract_format():
    gen = _generator()
    assert gen.check() == [], "run assignments/source/a10_capstone/instructor_artefacts.py"
    report = json.loads((SOURCE / "data" / "capstone.json").read_text())
    assert [d["day"] for d in report["days"]] == list(range(1, len(report["days"]) + 1))
    for d in report["days"]:
        assert DAY_KEYS <= set(d) <= DAY_KEYS | {"status"}, sorted(d)
    assert set(report["summary"]) == SUMMARY_KEYS
    assert {e["kind"] for e in report["events"]} <= EVENT_KINDS
    head = (SOURCE / "data" / "timeline.csv").read_text().splitlines()[0]
    assert head.split(",") == ["t_s", "day", "requests", "failed_requests", "rps", "p95_ms",
                               "error_ratio", "drift_score", "version", "canary_weight",
                               "alerts_firing"]
    assert (SOURCE / "data" / "memory.csv").read_text().splitlines()[0] == "t_s,day,process,rss_mb"
    size = sum(p.stat().st_size for p in (SOURCE / "data").iterdir())
    assert size + (SOURCE / "instructor_base.json").stat().st_size < 200_000, size


def test_the_hidden_week_differs_from_the_shipped_one():
    gen = _generator()
    (first, _), (second, _) = gen.both()
    for key in ("leaks", "stuck", "missed"):
        assert first[key] != second[key], key  # hard-coding the visible answers loses points


def test_students_get_the_notebook_and_the_week_only(workspace, tmp_path):
    from course_helpers import grading
    from course_helpers.grading import student

    written = grading.release("a10_capstone", tmp_path / "student")
    names = sorted(p.relative_to(tmp_path / "student").as_posix() for p in written)
    assert names == ["a10_capstone.ipynb", "data/capstone.json", "data/memory.csv",
                     "data/timeline.csv"], names
    text = (tmp_path / "student" / "a10_capstone.ipynb").read_text()
    assert "_SECOND" not in text and "Instructor notes" not in text
    assert student.is_instructor_only("assignments/source/a10_capstone/instructor_artefacts.py")
    assert student.is_instructor_only("assignments/source/a10_capstone/instructor_base.json")
    assert student.is_instructor_only("anywhere/instructor_notes.md")
    assert not student.is_instructor_only("notebooks/10_architecture_best_practices.ipynb")
