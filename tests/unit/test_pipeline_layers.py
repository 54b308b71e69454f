"""The layering of the pipeline, CI/CD and tracking modules: no import cycles, small modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.unit

PKG = ROOT / "course_helpers"


def imported_modules(path: Path) -> set[str]:
    """Every course_helpers module ``path`` imports, at any level (absolute dotted names)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0] + ".__init__"
    base = package.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            parts = base[:len(base) - node.level + 1] if node.level else []
            mod = ".".join(parts + ([node.module] if node.module else []))
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m.startswith("course_helpers")}


def test_tracking_never_imports_the_model_module():
    for path in (PKG / "tracking").glob("*.py"):
        assert "course_helpers.model" not in imported_modules(path), path.name


def test_the_flow_does_not_import_the_triggers():
    assert not any(m.startswith("course_helpers.pipeline.triggers")
                   for m in imported_modules(PKG / "pipeline" / "flow.py"))


@pytest.mark.parametrize("folder", ["pipeline", "tracking", "cicd"])
def test_modules_stay_small(folder):
    for path in (PKG / folder).glob("*.py"):
        assert len(path.read_text().splitlines()) <= 420, f"{path.name}: split it"
