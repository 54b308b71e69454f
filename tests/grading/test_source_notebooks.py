"""The committed assignment notebooks: outputs stripped, nbgrader metadata sound."""

from __future__ import annotations

import json

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.grading

NOTEBOOKS = sorted((ROOT / "assignments" / "source").glob("*/*.ipynb"))


def test_there_are_assignments():
    assert NOTEBOOKS, "no notebooks in assignments/source"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; strip them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_nbgrader_metadata(path):
    nbformat = pytest.importorskip("nbformat")
    from nbgrader.nbgraderformat import MetadataValidator

    nb = nbformat.read(str(path), as_version=4)
    MetadataValidator().validate_nb(nb)  # raises on a malformed cell
    ids = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if "nbgrader" in c.metadata]
    assert len(ids) == len(set(ids)), "grade_ids must be unique"
    text = path.read_text()
    assert "mlops-course grade check " + path.parent.name in text, "print the self-check command"
    graded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert any(c.cell_type == "markdown" for c in graded), "one manually graded answer"
    assert any("BEGIN HIDDEN TESTS" in c.source for c in graded), "hidden tests"
