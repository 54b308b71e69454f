"""The integrity guard's and the feedback's own logic, without a kernel."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit

BASE = {"input transformers": ["a@1"], "AST transformers": [], "trace or profile functions": [],
        "exception display": ["x@1"], "streams and display hooks": ["s@1"],
        "namespace builtins": "1/1", "IPython shell methods": {"run_cell": 1},
        "IPython event callbacks": {"post_execute": {}}, "import hooks": {},
        "modules": {"math": 10}, "functions": {"math.isclose": [11, "math", ""]},
        "names": {"math": 10, "helper": 12}}


def _with(**changes):
    import copy

    state = copy.deepcopy(BASE)
    for key, value in changes.items():
        state[key.replace("_", " ")] = value
    return state


def test_nothing_changed_is_no_tampering():
    from course_helpers.grading.guard import changes

    assert changes(BASE, BASE, trusted={"math", "helper"}, rebinds=set()) == []


@pytest.mark.parametrize("key, value, expected", [
    ("input_transformers", ["a@1", "b@2"], "input transformers changed"),
    ("modules", {"math": 99}, "sys.modules entries replaced: math"),
    ("modules", {}, "sys.modules entries removed: math"),
    ("functions", {"math.isclose": [12, "__main__", "/tmp/ipykernel_1/1.py"]},
     "math.isclose replaced"),
    ("names", {"math": 10, "helper": 13}, "test helper helper replaced"),
    ("import_hooks", {"5": ["__main__", ""]}, "import hooks added by student code"),
])
def test_each_change_is_named(key, value, expected):
    from course_helpers.grading.guard import changes

    found = changes(BASE, _with(**{key: value}), trusted={"math", "helper"}, rebinds=set())
    assert any(expected in f for f in found), found


def test_library_changes_and_own_rebinds_are_allowed():
    from course_helpers.grading.guard import changes

    lib = _with(functions={"math.isclose": [12, "numpy.core", ""]},
                IPython_event_callbacks={"post_execute": {"7": [
                    "matplotlib_inline.backend_inline", "/usr/lib/python3/x.py"]}})
    assert changes(BASE, lib, trusted=set(), rebinds=set()) == []
    rebound = _with(names={"math": 10, "helper": 13})
    assert changes(BASE, rebound, trusted={"helper"}, rebinds={"helper"}) == []
    assert changes(BASE, rebound, trusted={"helper"}, rebinds=None) == []


def test_frozen_stdlib_import_hook_is_library_but_a_student_one_is_not():
    from course_helpers.grading.guard import _library

    # Prefect adds importlib's FileFinder path hook again (a03's set-up cell)
    assert _library("importlib._bootstrap_external", "<frozen importlib._bootstrap_external>")
    assert not _library("__main__", "<frozen importlib._bootstrap_external>")
    assert not _library("mine", "<frozen importlib._bootstrap_external>")


def test_bound_names_and_results():
    from course_helpers.grading.guard import _ends_with_expression, bound_names

    assert bound_names("import numpy as np\nx, y = 1, 2\ndef f():\n    z = 3\nclass C: pass"
                       ) >= {"np", "x", "y", "f", "C"}
    assert _ends_with_expression("x = 1\nx + 1")
    assert not _ends_with_expression("assert True\nprint('ok')")
    assert not _ends_with_expression("x = 1")


def test_hidden_tests_are_not_an_edit():
    import nbformat

    from course_helpers.grading.course import tampering, without_hidden_tests

    source = "# Hidden tests\n### BEGIN HIDDEN TESTS\nassert f(1) == 2\n### END HIDDEN TESTS"
    assert without_hidden_tests(source).strip() == "# Hidden tests"

    def nb(src):
        cell = nbformat.v4.new_code_cell(src)
        cell.metadata["nbgrader"] = {"grade_id": "t", "grade": True, "locked": True,
                                     "points": 1, "solution": False}
        return nbformat.v4.new_notebook(cells=[cell])

    release = nb("# Hidden tests\n")
    assert tampering(release, nb(source)) == []
    assert tampering(release, nb("assert True")) == ["t was edited (restored from the source)"]


def test_pending_answers_in_feedback():
    from course_helpers.grading.course import mark_pending

    html = ('<h4>nb (Score: 10.0 / 12.0)</h4><li><a href="#why">Written response</a> '
            '(Score: 0.0 / 2.0)</li><li><a href="#t">Test cell</a> (Score: 0.0 / 1.0)</li>'
            '<a name="why"></a><div class="panel-heading"><span class="pull-right">'
            'Score: 0.0 / 2.0 <a href="#top">(Top)</a>')
    out = mark_pending(html, {"why": 2.0})
    assert "Written response</a> (Score: pending / 2.0)" in out
    assert "Test cell</a> (Score: 0.0 / 1.0)" in out, "a failed test stays 0"
    assert "Score: pending / 2.0 <a" in out
    assert "(Score: 10.0 / 12.0; 2 pending, graded by hand)</h4>" in out
    assert mark_pending(html, {}) == html


def test_stale_mutant_and_bad_file(tmp_path):
    from course_helpers.errors import CourseError
    from course_helpers.grading.mutants import load_mutants

    (tmp_path / "mutants.yaml").write_text("- name: x\n  cell: c\n")
    with pytest.raises(CourseError, match="is not a list of mutants"):
        load_mutants(tmp_path)
    (tmp_path / "mutants.yaml").write_text(
        "- {name: x, cell: c, replace: [[a, b]]}\n- {name: x, cell: c, replace: [[a, b]]}\n")
    with pytest.raises(CourseError, match="names must be unique"):
        load_mutants(tmp_path)
    assert load_mutants(tmp_path / "nowhere") == []


def test_sandbox_choice_is_checked(monkeypatch):
    from course_helpers.errors import CourseError
    from course_helpers.grading import sandbox

    with pytest.raises(CourseError, match="unknown sandbox 'bogus'"):
        sandbox.resolve("bogus")
    monkeypatch.setattr(sandbox, "docker_sandbox_available", lambda image=None: (False, "no image"))
    with pytest.raises(CourseError, match="--sandbox docker: no image"):
        sandbox.resolve("docker")
    monkeypatch.setattr(sandbox, "process_sandbox_available", lambda: (False, "not Linux"))
    with pytest.raises(CourseError, match="no sandbox to grade in: Docker is not usable and "
                                          "not Linux"):
        sandbox.resolve("auto")
