"""a04's solution Dockerfile builds for real where a Docker engine answers, and its image
runs as a non-root user. Offline: its FROM line is swapped for the course's offline base
(plus a pip, which that base lacks), requirements.txt is empty, the app a stub."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers import ROOT, need

pytestmark = pytest.mark.docker


def _solution_dockerfile() -> str:
    import nbformat

    nb = nbformat.read(str(ROOT / "assignments" / "source" / "a04_deployment_spec"
                           / "a04_deployment_spec.ipynb"), as_version=4)
    (cell,) = [c for c in nb.cells
               if c.metadata.get("nbgrader", {}).get("grade_id") == "image_and_compose"]
    scope: dict = {}
    exec(cell.source, scope)  # noqa: S102 - the instructor's own solution cell
    return scope["DOCKERFILE"]


def test_a04_solution_dockerfile_builds_and_runs_as_non_root(tmp_path):
    from course_helpers import containers, images
    from course_helpers.images.lint import dockerfile_problems, parse_dockerfile

    need(containers.available(), "a Docker engine")
    need(images.image_exists(images.OFFLINE_BASE_IMAGE),
         f"the offline base image {images.OFFLINE_BASE_IMAGE} (`mlops-course image base`)")
    text = _solution_dockerfile()
    assert dockerfile_problems(text) == []
    first = parse_dockerfile(text)[0]
    assert first.keyword == "FROM"
    offline = text.replace(f"FROM {first.args}", f"FROM {images.OFFLINE_BASE_IMAGE}\n"
                           "RUN python3 -m venv /opt/pip && ln -s /opt/pip/bin/pip /usr/local/bin/pip", 1)
    (tmp_path / "Dockerfile").write_text(offline)
    (tmp_path / "requirements.txt").write_text("# nothing to install offline\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("app = None\n")
    client = containers.client()
    tag = f"mlops-course/test-a04:{uuid.uuid4().hex[:8]}"
    try:
        client.images.build(path=str(tmp_path), tag=tag, rm=True, forcerm=True, network_mode="none")
        out = client.containers.run(tag, entrypoint=["id", "-u"], remove=True, network_mode="none")
        assert out.decode().strip() not in ("", "0"), out
    finally:
        try:
            client.images.remove(tag, force=True)
        except Exception:  # noqa: BLE001 - a failed build leaves no image
            pass
