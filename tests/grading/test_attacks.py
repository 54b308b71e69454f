"""Hostile submissions in one batch, each between honest students: forged scores are caught
(0 points, named in the CSV), the sandbox keeps student code away from the course, the
gradebook, the other students, the network, and leaves no process behind."""

from __future__ import annotations

import copy
import csv
import importlib.util
import socket
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

from tests.grading.submissions import (FORGERIES, _first_answer, snooping, solved_release)
from tests.helpers import ROOT, need

pytestmark = pytest.mark.grading

MARKER = "617.25"  # `sleep 617.25`: a process a student left behind would show it


def _write(folder: Path, student: str, nb: nbformat.NotebookNode) -> None:
    (folder / student).mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(folder / student / "a00_warmup.ipynb"))


def _batch(tmp: Path, sandbox: str, forgeries: list[str] | None = None) -> dict:
    """Grade honest students interleaved with every attack; return what the tests need."""
    from course_helpers import config, grading

    release = grading.release("a00_warmup", tmp / "release")[0]
    blank = nbformat.read(str(release), as_version=4)
    solved = solved_release(release)
    subs, out = tmp / "submissions", tmp / "results"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    paths = {"course": str(ROOT / "assignments"), "workspace": str(config.workspace()),
             "submissions": str(subs), "results": str(out)}
    attacks = {name: (blank, [_first_answer(code)]) for name, (code, _) in FORGERIES.items()
               if forgeries is None or name in forgeries}
    attacks["snooping"] = (solved, [_first_answer(snooping(paths, port, MARKER))])
    order = []
    for i, (name, (base, changes)) in enumerate(attacks.items()):
        _write(subs, f"{2 * i:02d}_honest", solved)
        nb = copy.deepcopy(base)
        for change in changes:
            change(nb)
        _write(subs, f"{2 * i + 1:02d}_{name}", nb)
        order.append(name)
    _write(subs, f"{2 * len(attacks):02d}_honest", solved)
    started = time.monotonic()
    try:
        assert grading.grade_batch("a00_warmup", str(subs), str(out), timeout=10,
                                   sandbox=sandbox) == 0
    finally:
        listener.close()
    elapsed = time.monotonic() - started
    with open(out / "grades.csv", newline="") as fh:
        rows = {r["student"].split("_", 1)[1] if not r["student"].endswith("honest")
                else r["student"]: r for r in csv.DictReader(fh)}
    left = subprocess.run(["pgrep", "-f", f"sleep {MARKER}"], capture_output=True, text=True)
    return {"rows": rows, "out": out, "subs": subs, "elapsed": elapsed,
            "left": left.stdout.split(), "paths": paths}


@pytest.fixture(scope="module")
def process_batch(tmp_path_factory):
    need(importlib.util.find_spec("nbgrader") is not None, "nbgrader (pip install -e .)")
    from course_helpers.grading.sandbox import process_sandbox_available

    ok, why = process_sandbox_available()
    need(ok, f"the process sandbox ({why})")
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("mlops-home")
    mp.setenv("MLOPS_HOME", str(home))
    try:
        yield _batch(tmp_path_factory.mktemp("attacks"), "process")
    finally:
        mp.undo()


DOCKER_FORGERIES = ["input_transformer", "fake_result"]


@pytest.fixture(scope="module")
def docker_batch(tmp_path_factory):
    need(importlib.util.find_spec("nbgrader") is not None, "nbgrader (pip install -e .)")
    from course_helpers.grading.sandbox import docker_sandbox_available, leftover_containers

    ok, why = docker_sandbox_available()
    need(ok, f"the docker sandbox ({why})")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_HOME", str(tmp_path_factory.mktemp("mlops-home")))
    try:
        result = _batch(tmp_path_factory.mktemp("attacks"), "docker", DOCKER_FORGERIES)
        result["containers"] = leftover_containers()
        yield result
    finally:
        mp.undo()


def _honest_ok(rows: dict) -> None:
    honest = {s: r for s, r in rows.items() if s.endswith("honest")}
    assert len(honest) == len(rows) - len(honest) + 1
    for student, row in honest.items():
        assert (row["score"], row["status"], row["tamper"]) == ("10", "ok", ""), (student, row)


@pytest.mark.parametrize("attack", sorted(FORGERIES))
def test_forged_score_is_caught(process_batch, attack):
    row = process_batch["rows"][attack]
    assert row["score"] == "0", row
    assert row["status"] == "tampered", row
    assert FORGERIES[attack][1] in row["tamper"], row
    _honest_ok(process_batch["rows"])


def test_snooping_student_is_contained(process_batch):
    row = process_batch["rows"]["snooping"]
    assert (row["score"], row["tamper"]) == ("10", ""), row  # snooping is not forging
    graded = _printed(process_batch["out"], "snooping")
    for word in ("LEAK", "WROTE", "CONNECTED"):
        assert word not in graded, graded
    assert graded.count("BLOCKED read") == 4 and graded.count("BLOCKED write") == 4, graded
    assert "BLOCKED network" in graded, graded
    assert "SPAWNED" in graded  # it could start a process inside the sandbox...
    assert process_batch["left"] == [], "...which must not outlive the batch"
    for path in process_batch["paths"].values():
        assert not (Path(path) / "planted.txt").exists()
    assert not (ROOT / "assignments" / "gradebook.db").exists()
    _honest_ok(process_batch["rows"])


@pytest.mark.docker
@pytest.mark.parametrize("attack", DOCKER_FORGERIES)
def test_docker_forged_score_is_caught(docker_batch, attack):
    row = docker_batch["rows"][attack]
    assert (row["score"], row["status"]) == ("0", "tampered"), row
    assert FORGERIES[attack][1] in row["tamper"], row
    _honest_ok(docker_batch["rows"])


@pytest.mark.docker
def test_docker_snooping_student_is_contained(docker_batch):
    row = docker_batch["rows"]["snooping"]
    assert (row["score"], row["tamper"]) == ("10", ""), row
    graded = _printed(docker_batch["out"], "snooping")
    for word in ("LEAK", "WROTE", "CONNECTED"):
        assert word not in graded, graded
    assert graded.count("BLOCKED read") == 4 and "BLOCKED network" in graded, graded
    assert docker_batch["left"] == [] and docker_batch["containers"] == []
    _honest_ok(docker_batch["rows"])


@pytest.mark.docker
@pytest.mark.parametrize("assignment", ["a00_warmup", "a01_simple_system", "a02_scaling",
                                        "a03_pipelines", "a04_deployment_spec"])
def test_docker_sandbox_runs_every_solution(workspace, tmp_path, assignment):
    """The grading image has what the assignments import: solutions keep full marks."""
    need(importlib.util.find_spec("nbgrader") is not None, "nbgrader (pip install -e .)")
    from course_helpers import grading
    from course_helpers.grading.sandbox import docker_sandbox_available

    ok, why = docker_sandbox_available()
    need(ok, f"the docker sandbox ({why})")
    source = ROOT / "assignments" / "source" / assignment
    (tmp_path / "subs" / "teacher").mkdir(parents=True)
    for nb in source.glob("*.ipynb"):
        nbformat.write(nbformat.read(str(nb), as_version=4),
                       str(tmp_path / "subs" / "teacher" / nb.name))
    assert grading.grade_batch(assignment, str(tmp_path / "subs"), str(tmp_path / "out"),
                               sandbox="docker") == 0
    with open(tmp_path / "out" / "grades.csv", newline="") as fh:
        (row,) = csv.DictReader(fh)
    auto_max = float(row["max_score"]) - float(row["manual_pending"])
    assert (float(row["score"]), row["status"], row["tamper"]) == (auto_max, "ok", ""), row


def _printed(out: Path, student_suffix: str) -> str:
    """Everything the first answer cell of that student printed when it was graded."""
    folder = next(s for s in (out / "autograded").iterdir() if s.name.endswith(student_suffix))
    nb = nbformat.read(str(folder / "a00_warmup.ipynb"), as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id")
                == "throughput")
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
