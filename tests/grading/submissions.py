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


def _first_answer(code: str | dict[str, str]) -> Callable[[nbformat.NotebookNode], None]:
    """Put ``code`` at the top of the first answer cell (throughput), or replace the
    answer cells named in a dict."""
    def change(nb: nbformat.NotebookNode) -> None:
        if isinstance(code, dict):
            for grade_id, source in code.items():
                nb.cells[index(nb, grade_id)].source = source
            return
        cell = nb.cells[index(nb, "throughput")]
        cell.source = code + "\n" + cell.source
    return change


# Attacks on the score. Each is a blank submission (0 points when honest) whose first answer
# cell tries to make the tests pass anyway; the comment says what it gains without the guard.
# student id -> (code for the first answer cell, or {answer cell: its new source}; text the
# grades CSV must name)
FORGERIES: dict[str, tuple[str, str]] = {
    # every later cell, tests included, becomes `pass`: 10/10
    "input_transformer": ("get_ipython().input_transformers_cleanup.append("
                          "lambda lines: ['pass\\n'])", "input transformers changed"),
    # an AST transformer that empties every later cell: 10/10
    "ast_transformer": ("import ast\nclass Empty(ast.NodeTransformer):\n"
                        "    def visit_Module(self, node):\n"
                        "        node.body = []\n        return node\n"
                        "get_ipython().ast_transformers.append(Empty())",
                        "AST transformers changed"),
    # `except AssertionError` / `raise AssertionError` in the tests now mean something else
    "patched_builtins": ("import builtins\nbuiltins.AssertionError = type('AssertionError', "
                         "(Warning,), {})\nbuiltins.ValueError = Exception",
                         "builtins"),
    # math.isclose always true: throughput = 33 passes most throughput tests
    "patched_module_function": ("import math as _m\n_m.isclose = lambda *a, **k: True\n"
                                "def throughput(requests):\n    return 33.0",
                                "math.isclose replaced"),
    # the name `math` the tests use now points at a fake
    "replaced_helper": ("class _Fake:\n    @staticmethod\n    def isclose(*a, **k):\n"
                        "        return True\nmath = _Fake()\n"
                        "def throughput(requests):\n    return 33.0",
                        "test helper math replaced"),
    # a trace function (it could skip lines); here it only watches
    "settrace": ("import sys\nsys.settrace(lambda frame, event, arg: None)",
                 "trace or profile functions changed"),
    # a fake `math` module for every later `import math`
    "sys_modules": ("import sys, types\n_fake = types.ModuleType('math')\n"
                    "_fake.isclose = lambda *a, **k: True\nsys.modules['math'] = _fake",
                    "sys.modules entries replaced: math"),
    # errors are shown as a friendly line instead of a traceback
    "custom_exc": ("get_ipython().set_custom_exc((Exception,), lambda self, etype, value, tb, "
                   "tb_offset=None: print('all tests passed'))", "exception display changed"),
    # each function publishes an execute_result "1" before failing: nbgrader reads the first
    # execute_result of a test cell as partial credit, so every test cell scores 1
    "fake_result": ({"throughput": "import sys\ndef _score():\n    sys.displayhook(1)\n"
                                   "def throughput(requests):\n    _score()\n    return 0.0",
                     "latency_percentile": "def latency_percentile(requests, q):\n"
                                           "    _score()\n    return 0.0",
                     "error_rate": "def error_rate(requests):\n    _score()\n    return 0.0"},
                    "an execute_result appeared in a test cell"),
}


def snooping(paths: dict[str, str], port: int, marker: str) -> str:
    """Student code that tries to read, write, connect and outlive the batch; it prints
    LEAK/WROTE/CONNECTED/SPAWNED for each success and BLOCKED otherwise."""
    return f'''import os, socket, sqlite3, subprocess, glob
for what, path in {paths!r}.items():
    try:
        found = [p for p in glob.glob(path + "/**", recursive=True) if os.path.isfile(p)]
        print("LEAK" if found else "BLOCKED", "read", what, len(found))
    except OSError as err:
        print("BLOCKED", "read", what, type(err).__name__)
    for db in glob.glob(path + "/**/gradebook.db", recursive=True):
        try:
            sqlite3.connect(db).execute("DELETE FROM grade_cells").connection.commit()
            print("WROTE gradebook", db)
        except Exception as err:
            print("BLOCKED", "gradebook", type(err).__name__)
    try:
        with open(os.path.join(path, "planted.txt"), "w") as fh:
            fh.write("x")
        print("WROTE", what)
    except OSError as err:
        print("BLOCKED", "write", what, type(err).__name__)
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
    print("CONNECTED")
except OSError as err:
    print("BLOCKED", "network", type(err).__name__)
subprocess.Popen(["sleep", "{marker}"], start_new_session=True)
print("SPAWNED")
'''
