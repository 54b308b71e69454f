"""The Dockerfile rules a04 grades with, and the in-process schema check a04/a05 use."""

from __future__ import annotations

import pytest

from course_helpers.cicd.schemas import validate_text
from course_helpers.errors import CourseError
from course_helpers.images.lint import dockerfile_problems, parse_dockerfile

pytestmark = pytest.mark.unit

GOOD = """\
# syntax=docker/dockerfile:1
FROM python:3.11-slim AS base
RUN useradd --create-home app
WORKDIR /srv
COPY --chown=app requirements.txt ./
RUN pip install --no-cache-dir \\
      -r requirements.txt
COPY app/ app/
USER app
CMD ["gunicorn", "app.main:app", "--bind", "0.0.0.0:8000"]
"""


def codes(text: str) -> list[str]:
    return sorted(p.split(":", 1)[0] for p in dockerfile_problems(text))


def test_parse_joins_continuations_and_drops_comments():
    steps = parse_dockerfile(GOOD)
    assert [s.keyword for s in steps] == ["FROM", "RUN", "WORKDIR", "COPY", "RUN", "COPY",
                                          "USER", "CMD"]
    assert steps[4].args.split() == ["pip", "install", "--no-cache-dir", "-r", "requirements.txt"]
    assert steps[4].line == 6


def test_good_dockerfile_has_no_problems():
    assert dockerfile_problems(GOOD) == []


@pytest.mark.parametrize("change, code", [
    (("python:3.11-slim", "python"), "unpinned-base"),
    (("python:3.11-slim", "python:latest"), "unpinned-base"),
    (("python:3.11-slim", "python:slim"), "unpinned-base"),
    (("USER app\n", ""), "root-user"),
    (("USER app\n", "USER root\n"), "root-user"),
    (("WORKDIR /srv\n", "WORKDIR /srv\nENV DB_PASSWORD=hunter2\n"), "secret"),
    (("WORKDIR /srv\n", "WORKDIR /srv\nARG API_TOKEN=abc\n"), "secret"),
    (("COPY app/ app/\n", "COPY app/ .env app/\n"), "secret"),
    (("COPY --chown=app requirements.txt ./\n", "COPY . .\n"), "layer-order"),
    (("COPY app/ app/\n", ""), None),
    (('CMD ["gunicorn", "app.main:app", "--bind", "0.0.0.0:8000"]', "CMD gunicorn app.main:app"),
     "shell-cmd"),
])
def test_each_rule(change, code):
    broken = GOOD.replace(*change)
    assert broken != GOOD
    assert codes(broken) == ([code] if code else []), dockerfile_problems(broken)


def test_code_copied_before_install_and_no_from():
    moved = GOOD.replace("COPY app/ app/\n", "").replace("WORKDIR /srv\n", "WORKDIR /srv\nCOPY app/ app/\n")
    assert codes(moved) == ["layer-order"]
    assert "line 5" in dockerfile_problems(moved)[0]
    assert codes("RUN echo hi\n") == ["no-from"]
    assert dockerfile_problems(GOOD.replace("python:3.11-slim", "python@sha256:" + "a" * 64)) == []


def test_arg_without_value_and_build_stage_are_fine():
    two = ("FROM python:3.11-slim AS build\nRUN pip wheel -w /w numpy\n"
           "FROM build\nARG GITHUB_TOKEN\nRUN useradd app\nCOPY requirements.txt .\n"
           "RUN pip install -r requirements.txt\nCOPY --from=build /w /w\nCOPY app/ app/\n"
           "USER app\nCMD [\"python\", \"-m\", \"app\"]\n")
    assert dockerfile_problems(two) == []


def test_validate_text_workflow_and_compose():
    ok, msg = validate_text("on:\n  pull_request:\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
                            "    steps:\n      - run: echo\n")
    assert (ok, msg) == (True, "ok")
    ok, msg = validate_text("on: push\njobs:\n  a:\n    run-on: x\n    steps: []\n")
    assert not ok and msg.startswith("jobs/a")
    ok, msg = validate_text("services:\n  web:\n    imag: x\n", "vendor.compose-spec")
    assert not ok and "imag" in msg
    assert validate_text("a: [", "vendor.compose-spec")[1].startswith("not valid YAML")
    assert validate_text("", "vendor.compose-spec") == (False, "the document is empty")
    with pytest.raises(CourseError, match="no schema named 'vendor.nope'"):
        validate_text("a: 1", "vendor.nope")
