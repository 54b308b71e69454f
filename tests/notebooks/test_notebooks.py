"""Every lesson notebook runs top to bottom in the smoke profile; time and memory are recorded."""

import pytest

from course_helpers.notebooks import has_outputs, notebook_paths, outputs_text, run_notebook

NOTEBOOKS = notebook_paths()


@pytest.mark.unit
def test_there_are_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].name == "00_welcome_and_setup.ipynb"


@pytest.mark.unit
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path):
    assert has_outputs(path) == [], f"{path.name}: strip outputs before committing"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_profile(path, workspace, record_property, monkeypatch):
    monkeypatch.setenv("MLOPS_BACKEND", "local")  # what Binder students run
    before = {p for p in path.parent.rglob("*")}
    result = run_notebook(path, profile="smoke", save_to=workspace / "executed")
    written = {p for p in path.parent.rglob("*")} - before
    assert not written, f"{path.name} wrote into the repository: {sorted(written)[:5]}"
    record_property("seconds", result.seconds)
    record_property("peak_rss_mb", result.peak_rss_mb)
    record_property("peak_pss_mb", result.peak_pss_mb)
    print(f"\n{path.stem}: {result.seconds} s, peak PSS {result.peak_pss_mb} MB, "
          f"RSS {result.peak_rss_mb} MB (kernel tree), "
          f"slowest cells {result.slowest_cells}")
    assert result.ok, result.error
    assert result.peak_rss_mb > 0


@pytest.mark.notebooks
def test_harness_reports_a_failing_cell_and_leftovers(tmp_path, workspace):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell("x = 1"), new_code_cell("raise ValueError('broken cell')")])
    bad = tmp_path / "bad.ipynb"
    nbformat.write(nb, str(bad))
    res = run_notebook(bad, profile="smoke")
    assert not res.ok and "broken cell" in res.error

    code = ("import sys\nfrom course_helpers.supervisor import Supervisor, free_port\n"
            "p = free_port()\nSupervisor().start('forgotten', [sys.executable, '-m', 'http.server',"
            " '--bind', '127.0.0.1', str(p)], port=p, stop_on_exit=False)")
    leaky = tmp_path / "leaky.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(code)]), str(leaky))
    res = run_notebook(leaky, profile="smoke")
    assert not res.ok and res.left_running == ["forgotten"]
    assert "left running" in res.error


@pytest.mark.notebooks
def test_lesson_02_on_one_cpu_still_compares_two_topologies(workspace):
    """As on Binder: the kernel and every server it starts pinned to one CPU (taskset -c 0)."""
    import os

    from tests.helpers import need

    need(0 in os.sched_getaffinity(0), "CPU 0 in this process's affinity")
    path = next(p for p in NOTEBOOKS if p.stem.startswith("02_"))
    # one CPU shared by the kernel, four servers and Locust: allow a slow cell (this test is
    # about what is compared; the time budget is the harness's table, not an assertion)
    result = run_notebook(path, profile="smoke", cpus=[0], env={"MLOPS_BACKEND": "local"},
                          save_to=workspace / "executed-1cpu", timeout_s=600)
    print(f"\n{path.stem} on CPU 0: {result.seconds} s, peak {result.peak_rss_mb} MB")
    assert result.ok, result.error
    assert result.cpus == 1
    text = outputs_text(workspace / "executed-1cpu" / path.name)
    assert ("1 CPU: 1 replica x 2 workers on 1 CPU against "
            "2 replicas x 1 worker, 0.5 CPU each") in text
    assert os.sched_getaffinity(0) != {0} or os.cpu_count() == 1, "the harness unpinned itself"


@pytest.mark.unit
def test_harness_table_flags_notebooks_over_budget():
    from course_helpers.notebooks import NotebookResult, render_table

    fast = NotebookResult("00_fast", True, 12.0, 300.0, cpus=1, slowest_cells=[(3, 8.0)])
    slow = NotebookResult("03_slow", True, 142.0, 1460.0, cpus=1)
    big = NotebookResult("05_big", True, 60.0, 1900.0, cpus=1, peak_pss_mb=1700.0)
    shared = NotebookResult("02_forked", True, 60.0, 1900.0, cpus=1, peak_pss_mb=1200.0)
    assert fast.within_budget and not slow.within_budget and not big.within_budget
    assert shared.within_budget, "pages shared by forked workers count once"
    table = render_table([fast, slow, big], "classroom")
    lines = table.splitlines()
    assert "ok" in lines[1] and "OVER" in lines[2] and "OVER" in lines[3]
    assert "3: 8" in lines[1]
    assert lines[4].split()[:2] == ["total", "214.0"] and "ok" in lines[4]
    capstone = NotebookResult("10_architecture_best_practices", True, 240.0, 1400.0, cpus=1)
    assert capstone.within_budget, "the capstone has its own wall-time budget"
    week = [NotebookResult(f"{i:02d}_x", True, 85.0, 900.0) for i in range(10)] + [capstone]
    assert "OVER" in render_table(week, "classroom").splitlines()[-2]


DOCKER_NOTEBOOKS = [p for p in NOTEBOOKS if p.stem.startswith("04_")]


@pytest.mark.docker
@pytest.mark.notebooks
@pytest.mark.parametrize("path", DOCKER_NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_with_the_docker_backend(path, workspace, monkeypatch):
    from course_helpers.containers import available
    from tests.helpers import need

    need(available(), "a Docker engine")
    monkeypatch.setenv("MLOPS_BACKEND", "docker")
    result = run_notebook(path, profile="smoke", save_to=workspace / "executed-docker")
    print(f"\n{path.stem} (docker): {result.seconds} s, peak {result.peak_rss_mb} MB")
    assert result.ok, result.error
