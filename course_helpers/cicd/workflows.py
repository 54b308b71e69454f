"""Workflow files: the GitHub Actions and GitLab CI templates, written into a project and
validated offline against their JSON schemas (``check-jsonschema``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ..errors import CourseError

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
WORKFLOW_SCHEMAS = {"github": "vendor.github-workflows", "gitlab": "vendor.gitlab-ci"}


def templates() -> dict[str, Path]:
    """Workflow templates shipped with the course: name -> path."""
    return {p.name: p for p in sorted(TEMPLATES.rglob("*.yml"))}


def write_workflows(dest: str | Path, python: str = "3.11", profile: str = "smoke") -> list[Path]:
    """Copy the templates into a project: ``.github/workflows/*.yml`` and ``.gitlab-ci.yml``."""
    from string import Template

    dest = Path(dest)
    out = []
    for name, src in templates().items():
        text = Template(src.read_text()).safe_substitute(PYTHON=python, PROFILE=profile)
        target = (dest / ".gitlab-ci.yml") if src.parent.name == "gitlab" else \
            dest / ".github" / "workflows" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        out.append(target)
    return out


def workflow_kind(path: str | Path) -> str:
    path = Path(path)
    return "gitlab" if "gitlab" in path.name or path.parent.name == "gitlab" else "github"


def validate_workflow(path: str | Path, kind: str | None = None) -> tuple[bool, str]:
    """Validate a workflow file offline against its JSON schema (``check-jsonschema``)."""
    from ..config import find_binary

    exe = find_binary("check-jsonschema")
    if not exe:
        raise CourseError("`check-jsonschema` was not found: pip install -e . from the course repo")
    schema = WORKFLOW_SCHEMAS[kind or workflow_kind(path)]
    out = subprocess.run([exe, "--builtin-schema", schema, str(path)], capture_output=True,
                         text=True, timeout=120)
    return out.returncode == 0, _concise((out.stdout + out.stderr).strip())


def _concise(text: str) -> str:
    """check-jsonschema's "Best Match" line (what to fix), else its whole output."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Best Match:" and i + 1 < len(lines):
            return lines[i + 1].strip()
    return text


def workflow_commands(path: str | Path, prefix: str = "mlops-course ") -> list[tuple[str, str]]:
    """``(job, command)`` for every shell line starting with ``prefix``, in file order."""
    import yaml

    doc = yaml.safe_load(Path(path).read_text())
    found = []
    if workflow_kind(path) == "github":
        for job, spec in (doc.get("jobs") or {}).items():
            for step in spec.get("steps", []):
                found += [(job, ln) for ln in str(step.get("run", "")).splitlines()]
    else:
        for job, spec in doc.items():
            if isinstance(spec, dict) and "script" in spec:
                found += [(job, ln) for ln in spec["script"]]
    return [(job, ln.strip()) for job, ln in found if ln.strip().startswith(prefix)]
