"""Answers that students could copy from the package they are given.

Lessons teach with ``course_helpers``, which students get; an assignment that asks for what the
package already does can be answered by copying it. This test lists, per assignment, the
solution lines (non-trivial, whitespace-normalised) that the package contains verbatim, and
holds each assignment to a ceiling: the tasks changed so far ask for a variant the package does
not provide, and the rest may not get worse. Lower a ceiling when a task changes."""

from __future__ import annotations

import pytest

from course_helpers.grading.student import answers_in_package
from tests.helpers import ROOT, need

pytestmark = pytest.mark.grading

SOURCE = ROOT / "assignments" / "source"
# shared lines allowed per assignment (a02's class name and a04's one-line range check are
# API and idiom, not an answer)
CEILING = {"a00_warmup": 0, "a01_simple_system": 1, "a02_scaling": 1, "a03_pipelines": 2,
           "a04_deployment_spec": 1, "a05_ci_cd": 1, "a06_tracking": 0, "a07_features": 3,
           "a08_monitoring": 0, "a09_rollout": 0}


def test_solution_lines_found_in_the_package_stay_under_their_ceiling(capsys):
    need(SOURCE.is_dir(), "assignments/source (the instructor's repository)")
    shared = answers_in_package(SOURCE, ROOT / "course_helpers")
    with capsys.disabled():
        for assignment in sorted(shared):
            print(f"\n{assignment}: {len(shared[assignment])} solution line(s) in the package")
            for line, where in shared[assignment]:
                print(f"    {where}: {line.strip()[:90]}")
    over = {a: len(lines) for a, lines in shared.items() if len(lines) > CEILING.get(a, 0)}
    assert not over, f"solution lines the package also holds (assignment: count): {over}"


def test_the_checker_finds_a_copied_line(tmp_path):
    import nbformat

    source, package = tmp_path / "source", tmp_path / "pkg"
    (source / "a99_x").mkdir(parents=True)
    package.mkdir()
    cell = nbformat.v4.new_code_cell(
        "def f(x):\n    ### BEGIN SOLUTION\n    return   sorted(x, key=abs)[::-1]  # top\n"
        "    ### END SOLUTION")
    cell.metadata["nbgrader"] = {"solution": True, "grade": False, "grade_id": "f",
                                 "locked": False, "schema_version": 3, "task": False}
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), source / "a99_x" / "a99_x.ipynb")
    (package / "m.py").write_text("def g(x):\n    return sorted(x, key=abs)[::-1]  # top\n")
    assert answers_in_package(source, package) == {
        "a99_x": [("return   sorted(x, key=abs)[::-1]  # top", "pkg/m.py")]}
    (package / "m.py").write_text("def g(x):\n    return sorted(x, key=abs)\n")
    assert answers_in_package(source, package) == {}
