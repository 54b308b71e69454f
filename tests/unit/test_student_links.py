"""Lessons and the README link to the student version of each assignment, never to its source.

``assignments/release/<a>/<a>.ipynb`` exists in both repositories: generated (git-ignored) in
the instructor's by ``mlops-course course release`` and committed in the students' by
``mlops-course course student-copy``.
"""

from __future__ import annotations

import re

import pytest

from course_helpers.errors import CourseError
from course_helpers.grading import student
from tests.helpers import ROOT

pytestmark = pytest.mark.unit

DOCS = [ROOT / "README.md", *sorted((ROOT / "notebooks").glob("*.ipynb"))]
LINK = re.compile(r"assignments/release/(a\d\d_[a-z0-9_]+)/([a-z0-9_]+\.ipynb)")


def _assignments() -> set[str]:
    for folder in ("source", "release"):  # the instructor's repository, else the students'
        path = ROOT / "assignments" / folder
        if path.is_dir():
            return {p.name for p in path.iterdir() if p.is_dir() and any(p.glob("*.ipynb"))}
    return set()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_no_link_to_sources(doc):
    links = re.findall(r"\]\(([^)]*assignments/source[^)]*)\)", doc.read_text())
    assert links == [], f"{doc.name} links to {links}: link to assignments/release/<a>/<a>.ipynb"


def test_every_assignment_linked_from_readme_and_its_lesson():
    assignments = _assignments()
    assert assignments
    readme = {m.group(1) for m in LINK.finditer((ROOT / "README.md").read_text())}
    assert readme == assignments
    for name in assignments:
        lesson = next((ROOT / "notebooks").glob(f"{name[1:3]}_*.ipynb"))
        links = LINK.findall(lesson.read_text())
        assert (name, f"{name}.ipynb") in links, f"{lesson.name} does not link to {name}"
    for doc in DOCS:
        for name, nb in LINK.findall(doc.read_text()):
            assert name in assignments and nb == f"{name}.ipynb", (doc.name, name, nb)


def test_instructor_only_paths():
    assert student.is_instructor_only("assignments/source/a00_warmup/a00_warmup.ipynb")
    assert student.is_instructor_only("assignments/source/a00_warmup/mutants.yaml")
    assert student.is_instructor_only("somewhere/else/mutants.yaml")
    assert student.is_instructor_only("tests/grading/submissions.py")
    assert not student.is_instructor_only("notebooks/00_welcome_and_setup.ipynb")
    assert not student.is_instructor_only("course_helpers/grading/check.py")


def test_both_licences_reach_the_students_copy():
    """MIT for the code, CC BY 4.0 for the course text: tracked, copied, named in the README
    that students get."""
    files = student.repo_files(ROOT)
    for name in ("LICENSE", "LICENSE-CONTENT"):
        assert name in files and not student.is_instructor_only(name), name
    assert "CC BY 4.0" in (ROOT / "LICENSE-CONTENT").read_text()
    out = student.student_readme((ROOT / "README.md").read_text(), "org/course-student")
    assert "LICENSE-CONTENT" in out and "MIT" in out


def test_students_readme_drops_instructor_sections():
    text = ("# Course\n\nIntro.\n\n[![Binder](https://mybinder.org/badge_logo.svg)]"
            "(https://mybinder.org/v2/gh/org/course/main?urlpath=lab)\n\n## Lessons\n\n"
            "[a00](assignments/source/a00_x/a00_x.ipynb)\n\n## Instructor guide\n\nsecret\n\n"
            "## Running a graded class\n\nmore\n\n## Troubleshooting\n\nok\n")
    out = student.student_readme(text, "org/course-student")
    assert "mybinder.org/v2/gh/org/course-student/main" in out
    assert "assignments/release/a00_x/a00_x.ipynb" in out and "assignments/source" not in out
    assert "Instructor guide" not in out and "graded class" not in out
    assert "## Troubleshooting" in out and "students' copy" in out


def test_secret_lines_and_scan(tmp_path):
    import nbformat

    src = tmp_path / "source" / "a99_demo"
    src.mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("def area(r):\n    ### BEGIN SOLUTION\n"
                                  "    return 3.14159 * r * r  # the real answer\n"
                                  "    ### END SOLUTION\n"),
        nbformat.v4.new_code_cell("assert area(1) > 3\n### BEGIN HIDDEN TESTS\n"
                                  "assert abs(area(2) - 12.56636) < 1e-6\n### END HIDDEN TESTS\n"),
    ]
    nbformat.write(nb, str(src / "a99_demo.ipynb"))
    (src / "mutants.yaml").write_text("- name: diameter_not_radius_squared\n")
    secrets = student.secret_lines(tmp_path / "source")
    assert secrets["return 3.14159 * r * r  # the real answer"][0] == "solution"
    assert secrets["assert abs(area(2) - 12.56636) < 1e-6"][0] == "hidden-test"
    assert secrets["- name: diameter_not_radius_squared"][0] == "mutant"

    copy = tmp_path / "copy"
    (copy / "notebooks").mkdir(parents=True)
    (copy / "course_helpers").mkdir()
    (copy / "notebooks" / "x.ipynb").write_text(nbformat.writes(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1\nassert abs(area(2) - 12.56636) < 1e-6\n")])))
    (copy / "course_helpers" / "geo.py").write_text("return 3.14159 * r * r  # the real answer\n")
    (copy / "notes.md").write_text("### BEGIN SOLUTION\n")
    found = {(f.path, f.kind, f.overlap) for f in student.scan(copy, tmp_path / "source")}
    assert found == {("notebooks/x.ipynb", "hidden-test", False),
                     ("course_helpers/geo.py", "solution", True),
                     ("notes.md", "marker", False)}
    assert len(student.find_leaks(copy, tmp_path / "source")) == 2


def test_student_copy_refuses_bad_destinations(tmp_path):
    if not (ROOT / "assignments" / "source").is_dir():
        pytest.skip("the students' repository has no sources to copy from")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(CourseError, match="is not empty"):
        student.student_copy(tmp_path / "full")
    with pytest.raises(CourseError, match="inside the course checkout"):
        student.student_copy(ROOT / "some-copy")
