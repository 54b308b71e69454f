"""Lesson 10 for real: the smoke week end to end (Prometheus, Alertmanager, the pipeline, the
canary, nginx, Locust, MLflow), its artefact contract and acceptance facts, and Ctrl-C /
SIGTERM at two moments leaving nothing running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.helpers import module_workspace, need

pytestmark = pytest.mark.integration


def _have(binary: str) -> bool:
    return shutil.which(binary) is not None or os.path.exists(f"/usr/sbin/{binary}") or \
        os.path.exists(f"/usr/bin/{binary}")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    need(_have("nginx"), "nginx (Debian package nginx)")
    need(_have("prometheus"), "prometheus (Debian package prometheus)")
    need(_have("prometheus-alertmanager") or _have("alertmanager"),
         "alertmanager (Debian package prometheus-alertmanager)")
    yield from module_workspace(tmp_path_factory, "capstone")


def _left_running(ws) -> list[str]:
    """Every process of this workspace still alive: supervised or tagged (Locust)."""
    import psutil

    from course_helpers.supervisor import Supervisor, tagged_processes

    names = [r["name"] for r in Supervisor(ws).status() if r["alive"]]
    for p in tagged_processes(ws):
        try:
            names.append(f"{p.pid} {' '.join(p.cmdline()[:3])}")
        except psutil.Error:
            names.append(str(p.pid))
    return names


@pytest.fixture(scope="module")
def week(ws):
    from course_helpers.capstone import run_week

    return run_week("smoke", out=ws / "week", seed=0, verbose=True)


def test_smoke_week_writes_the_contract(ws, week):
    from course_helpers.capstone.week import (DAY_KEYS, EVENT_KINDS, SUMMARY_KEYS,
                                              TIMELINE_COLUMNS)

    out = ws / "week"
    for name in ("capstone.json", "timeline.csv", "memory.csv", "timeline.png", "report.md"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "capstone.json").read_text())
    assert data["profile"] == "smoke" and data["seed"] == 0
    assert [d["day"] for d in data["days"]] == [1, 2, 3]
    for d in data["days"]:
        assert set(DAY_KEYS) <= set(d) <= set(DAY_KEYS) | {"status"}, d
        assert d["status"] == "ok", d
        assert d["rows"] > 0 and d["requests"] > 0 and 0 <= d["slo_budget_left"] <= 1
        assert d["cost_per_1m"] > 0 and d["p95_ms"] > 0
    assert set(SUMMARY_KEYS) <= set(data["summary"])
    assert {e["kind"] for e in data["events"]} <= set(EVENT_KINDS)
    assert all(set(e) == {"t_s", "day", "kind", "detail"} for e in data["events"])
    tl = pd.read_csv(out / "timeline.csv")
    assert list(tl.columns) == list(TIMELINE_COLUMNS)
    assert len(tl) >= 10 and tl["requests"].sum() > 0 and tl["t_s"].is_monotonic_increasing
    mem = pd.read_csv(out / "memory.csv")
    assert list(mem.columns)[:4] == ["t_s", "day", "process", "rss_mb"]
    assert {"capstone-stable-r0", "prometheus", "alertmanager", "capstone"} <= set(mem["process"])
    ck = data["checklist"]
    assert ck["checked"] >= 10 and len(ck["items"]) > ck["checked"]  # some not checked


def test_smoke_week_meets_the_acceptance_facts(ws, week):
    s, plan = week.summary, week.data["plan"]
    days = {d["day"]: d for d in week.days}
    # the seeded drift is detected and retrained within one simulated day
    assert s["drift_detected_day"] == s["drift_day"] == plan["drift_day"]
    assert s["retrained_day"] is not None and s["retrained_day"] - s["drift_day"] <= 1
    assert "ModelInputDrift" in days[s["drift_day"]]["alerts"]
    assert days[s["drift_day"]]["pipeline_runs"] >= 1 and days[s["drift_day"]]["registered"]
    assert days[s["drift_day"]]["promoted"] == days[s["drift_day"]]["registered"][-1]
    # the bad model passed the offline gate, reached the canary, never beyond its second step
    bad = days[s["bad_model_day"]]
    assert bad["rolled_back"] and bad["promoted"] is None
    assert 0 < s["bad_model_max_weight"] <= plan["canary_steps"][1]
    assert any(g["stage"] == "model" and g["version"] == bad["rolled_back"] and g["passed"]
               for g in week.data["gates"])
    # a replica was killed once and healed; the SLO held over the week
    kinds = [e["kind"] for e in week.events]
    assert kinds.count("replica_killed") == 1 and kinds.count("replica_healed") == 1
    # production scaled in for the retrain (memory) and back out before its canary
    assert kinds.count("scaled") == 2 * sum(d["pipeline_runs"] for d in week.days)
    first = kinds.index("scaled")
    assert first < kinds.index("pipeline_run") < kinds.index("canary_step")
    assert kinds.index("scaled", first + 1) < kinds.index("canary_step")
    promotions = sum(1 for d in week.days if d["promoted"])
    restarts = week.data["restarts"]
    assert sum(restarts.values()) == 1 + 2 * promotions, restarts  # no crash of their own
    assert s["slo_met"] is True, week.days
    # the version in production follows the promotion
    tl = week.timeline()
    assert int(tl["version"].dropna().iloc[-1]) == int(days[s["drift_day"]]["promoted"])
    assert tl["canary_weight"].max() == 100  # the good canary went all the way
    # every checked practice passes, with evidence
    ck = week.data["checklist"]
    assert ck["score"] == ck["checked"], [i for i in ck["items"] if i["passed"] is False]
    assert s["wall_s"] > 0 and s["peak_mb"] > 0
    assert not _left_running(ws)


def _interrupt(ws, sig: int, after: str, out: str, api: bool = False) -> tuple[int, str]:
    """Run the smoke week as a user would (the CLI, or ``run_week`` from Python with
    ``api``), send ``sig`` once ``after`` is printed."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "course_helpers.cli", "capstone", "run", "--profile", "smoke",
           "--out", str(ws / out)]
    if api:  # no CLI around it: what stops the servers is run_week's own clean-up
        cmd = [sys.executable, "-c", "from course_helpers.capstone import run_week; "
               f"run_week('smoke', out={str(ws / out)!r})"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    lines = []
    try:
        deadline = time.monotonic() + 240
        for line in proc.stdout:
            lines.append(line)
            if after in line or time.monotonic() > deadline:
                break
        assert any(after in ln for ln in lines), "".join(lines)
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, "".join(lines) + rest


def test_sigterm_during_setup_leaves_nothing_running(ws, week):
    code, text = _interrupt(ws, signal.SIGTERM, "deploying", "term")
    assert code == 130, text
    assert "Traceback" not in text and "interrupted" in text
    assert not _left_running(ws)


def test_ctrl_c_during_the_canary_leaves_nothing_running(ws, week):
    """From Python (a notebook's Ctrl-C): run_week stops what it started, then re-raises."""
    code, text = _interrupt(ws, signal.SIGINT, "] gate:", "int", api=True)
    assert code in (-signal.SIGINT, 1, 130), text
    assert "KeyboardInterrupt" in text
    assert not _left_running(ws)
    saved = json.loads((ws / "int" / "capstone.json").read_text())
    assert saved["summary"].get("interrupted") is True
