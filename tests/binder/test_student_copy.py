"""The students' repository (``mlops-course course student-copy``): no answers in it, and a
simulated Binder launch of it that gives students the course's assignments.

The copy is searched for every solution and hidden-test marker and line of
``assignments/source`` (and every line of mutants.yaml); then tests/binder/binder_sim.py
builds and launches it as mybinder.org would, and the nbgrader student panel's own HTTP API
lists, fetches, validates and submits an assignment.

Run: ``pytest tests/binder/test_student_copy.py -q -s`` (the Binder venv is reused from
/tmp/mlops-binder-env-* when binder/requirements.txt has not changed).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.binder.binder_sim import BinderSim, launched
from tests.helpers import ROOT

pytestmark = [pytest.mark.binder, pytest.mark.timeout(900)]

COURSE = "mlops-with-cloud"
SOURCE = ROOT / "assignments" / "source"
ASSIGNMENTS = sorted(p.name for p in SOURCE.iterdir() if any(p.glob("*.ipynb")))


@pytest.fixture(scope="module")
def copy_dir(tmp_path_factory):
    dest = tmp_path_factory.mktemp("student-copy") / "course-student"
    out = subprocess.run([sys.executable, "-m", "course_helpers.cli", "course", "student-copy",
                          str(dest), "--binder-repo", "someone/course-student"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    print(out.stdout)
    return dest


def test_no_sources_no_instructor_files(copy_dir):
    assert not (copy_dir / "assignments" / "source").exists()
    assert not (copy_dir / "tests" / "grading").exists()
    assert not list(copy_dir.rglob("mutants.yaml"))
    for name in ASSIGNMENTS:
        released = copy_dir / "assignments" / "release" / name / f"{name}.ipynb"
        assert released.is_file(), released
        assert "YOUR CODE HERE" in released.read_text()
    assert (copy_dir / "binder" / "postBuild").is_file()
    assert (copy_dir / "course_helpers" / "__init__.py").is_file()
    assert len(list((copy_dir / "notebooks").glob("*.ipynb"))) == len(
        list((ROOT / "notebooks").glob("*.ipynb")))


def _blocks(source: str, begin: str, end: str) -> list[str]:
    return re.findall(rf"^[ \t]*### {begin}.*?^[ \t]*### {end}", source, re.S | re.M)


def test_no_solution_or_hidden_test_text(copy_dir):
    """An independent grep: markers anywhere (but the code that strips them), and every
    distinctive line of a solution, a hidden test or a mutant in any notebook, markdown,
    text or config file of the copy."""
    import nbformat

    secrets: set[str] = set()
    for nb_path in SOURCE.glob("*/*.ipynb"):
        nb = nbformat.read(str(nb_path), as_version=4)
        for cell in nb.cells:
            blocks = (_blocks(cell.source, "BEGIN SOLUTION", "END SOLUTION")
                      + _blocks(cell.source, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"))
            if cell.get("metadata", {}).get("nbgrader", {}).get("solution") \
                    and cell.cell_type == "markdown":
                blocks.append(cell.source)
            for block in blocks:
                secrets |= {ln.strip() for ln in block.splitlines() if len(ln.strip()) >= 24}
    for mutants in SOURCE.glob("*/mutants.yaml"):
        secrets |= {ln.strip() for ln in mutants.read_text().splitlines() if len(ln.strip()) >= 24}
    secrets = {s for s in secrets if "###" not in s}
    # lines the release itself shows (prompts, stubs, visible tests) are not secrets
    released = "\n".join(p.read_text() for p in (copy_dir / "assignments" / "release").rglob("*.ipynb"))
    public = {json.loads(f'"{m}"').strip() for m in re.findall(r'"((?:[^"\\]|\\.)*)"', released)}
    secrets -= public
    assert len(secrets) > 100, "the sources should have many solution lines to look for"

    markers = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
    marker_code = {"course_helpers/grading/course.py", "course_helpers/grading/student.py"}
    found = []
    for path in copy_dir.rglob("*"):
        rel = path.relative_to(copy_dir).as_posix()
        if not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        if rel not in marker_code:
            found += [f"{rel}: {m}" for m in markers if m in text]
        if path.suffix in (".ipynb", ".md", ".txt", ".cfg", ".toml", ".json", ".yml", ".yaml",
                           ".sh", "") and not rel.startswith(("course_helpers/", "tests/")):
            if path.suffix == ".ipynb":
                nb = nbformat.read(str(path), as_version=4)
                text = "\n".join([c.source for c in nb.cells] + [
                    str(o.get("text", "")) + "".join(map(str, o.get("data", {}).values()))
                    for c in nb.cells for o in c.get("outputs", [])])
            lines = {ln.strip() for ln in text.splitlines()}
            found += [f"{rel}: {s[:60]}" for s in secrets if s in lines]
    assert found == []


def test_package_scan_agrees(copy_dir):
    from course_helpers.grading.student import find_leaks

    assert find_leaks(copy_dir, SOURCE) == []


def test_students_readme(copy_dir):
    text = (copy_dir / "README.md").read_text()
    assert "mybinder.org/v2/gh/someone/course-student/" in text
    assert "Running a graded class" not in text and "Instructor guide" not in text
    assert "assignments/source" not in text
    links = re.findall(r"\]\((assignments/release/[^)]+)\)", text)
    assert len(links) == len(ASSIGNMENTS)
    assert all((copy_dir / link).is_file() for link in links), links
    for nb in (copy_dir / "notebooks").glob("*.ipynb"):
        for link in re.findall(r"\]\(\.\./(assignments/[^)]+)\)", nb.read_text()):
            assert (copy_dir / link).is_file(), (nb.name, link)


def test_grade_fetch_in_the_copy(copy_dir, tmp_path):
    out = subprocess.run([sys.executable, "-m", "course_helpers.cli", "grade", "fetch",
                          "a00_warmup", str(tmp_path / "a00")], capture_output=True, text=True,
                         timeout=120, cwd=copy_dir,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(copy_dir),
                              "MLOPS_HOME": str(tmp_path / "ws")})
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "a00" / "a00_warmup.ipynb").is_file()


# --------------------------------------------------------------------------- on Binder

@pytest.fixture(scope="module")
def binder(copy_dir):
    with launched(copy_dir) as (sim, _):
        yield sim


def _post(binder: BinderSim, path: str, data: dict) -> tuple[int, dict]:
    body = "&".join(f"{k}={v}" for k, v in data.items()).encode()
    req = urllib.request.Request(binder.url(path), data=body, method="POST")
    req.add_header("Authorization", f"token {binder.token}")
    req.add_header("Content-Type", "application/x-www-form-urlencoded")
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.status, json.loads(resp.read())


def test_postbuild_released_the_assignments(binder):
    assert f"released {len(ASSIGNMENTS)} assignments" in binder.notes["postbuild_output"]
    status, body = binder.get("courses")
    assert status == 200 and json.loads(body) == {"success": True, "value": [COURSE]}, body
    status, body = binder.get(f"assignments?course_id={COURSE}")
    listed = json.loads(body)["value"]
    assert sorted(a["assignment_id"] for a in listed) == ASSIGNMENTS
    assert {a["status"] for a in listed} == {"released"}


def test_fetch_validate_submit_from_the_panel(binder):
    status, out = _post(binder, "assignments/fetch",
                        {"course_id": COURSE, "assignment_id": "a00_warmup"})
    assert status == 200 and out["success"], out
    fetched = binder.repo / "a00_warmup" / "a00_warmup.ipynb"
    assert fetched.is_file()
    status, out = _post(binder, "assignments/validate", {"path": "a00_warmup/a00_warmup.ipynb"})
    assert status == 200 and out["success"], out
    result = out["value"]
    assert result.get("failed"), result  # a blank copy fails its visible tests
    status, out = _post(binder, "assignments/submit",
                        {"course_id": COURSE, "assignment_id": "a00_warmup"})
    assert status == 200 and out["success"], out
    status, body = binder.get(f"assignments?course_id={COURSE}")
    states = {a["assignment_id"]: a["status"] for a in json.loads(body)["value"]}
    assert states["a00_warmup"] == "submitted", states


def test_login_shell_finds_the_course_command(binder):
    out = binder.run_as_user("bash", "-lc", "command -v mlops-course && mlops-course --help")
    assert out.returncode == 0, out.stdout + out.stderr
    assert Path(out.stdout.splitlines()[0]) == binder.env_dir / "bin" / "mlops-course"


def test_no_news_prompt_setting(binder):
    overrides = binder.env_dir / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    notification = json.loads(overrides.read_text())["@jupyterlab/apputils-extension:notification"]
    assert notification == {"fetchNews": "false", "checkForUpdates": False}


def test_nothing_left_running(binder):
    binder.stop()
    assert binder.lab.poll() is not None
    assert binder.tagged() == []
