"""The capstone's own logic: plans, bad input, SLO budget, load bucketing, the checklist."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from course_helpers.capstone import plan as planmod
from course_helpers.capstone import week
from course_helpers.capstone.checklist import AREAS, checklist, evaluate
from course_helpers.errors import CourseError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("profile", ["smoke", "classroom", "full"])
def test_every_profile_seeds_each_event_on_its_own_day(profile):
    p = planmod.make_plan(profile)
    assert 3 <= p.days <= planmod.MAX_DAYS
    days = {p.drift_day, p.bad_model_day}
    assert len(days) == 2 and all(1 <= d <= p.days for d in days | {p.kill_day})
    assert p.kill_day < p.drift_day < p.bad_model_day  # a quiet kill, then drift, then the bad model
    assert p.canary_steps == tuple(sorted(p.canary_steps)) and p.canary_steps[-1] == 100
    seen = [e for d in range(1, p.days + 1) for e in p.events_on(d)]
    assert seen.count("drift") == seen.count("bad_model") == seen.count("kill") == 1


def test_days_override_and_bad_input_say_one_sentence():
    assert planmod.make_plan("smoke", 7).days == 7
    for bad in (2, 0, -1, 31, 3.5, "4", True):
        with pytest.raises(CourseError, match="--days must be a whole number from 3"):
            planmod.make_plan("smoke", bad)
    with pytest.raises(CourseError, match="unknown profile 'huge'"):
        planmod.make_plan("huge")


def test_cli_rejects_bad_days_and_profile_with_exit_2(capsys):
    from course_helpers.cli import main

    assert main(["capstone", "run", "--profile", "smoke", "--days", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--days must be a whole number" in err
    for argv in (["--days", "x"], ["--profile", "huge"]):
        with pytest.raises(SystemExit) as exc:
            main(["capstone", "run", *argv])
        assert exc.value.code == 2


def test_schedule_skips_the_drift_day():
    p = planmod.make_plan("full", 9)
    assert p.retrain_every == 3
    sched = [d for d in range(1, 10) if "schedule" in p.events_on(d)]
    assert sched == [d for d in (3, 6, 9) if d != p.drift_day]


def test_budget_left():
    assert week.budget_left(0, 0, 0.99) == 1.0
    assert week.budget_left(1000, 0, 0.99) == 1.0
    assert week.budget_left(1000, 5, 0.99) == 0.5
    assert week.budget_left(1000, 10, 0.99) == 0.0
    assert week.budget_left(1000, 50, 0.99) == 0.0  # clipped: never negative


def test_drift_score_is_the_largest_psi():
    assert week.drift_score({"psi": {"f00": 0.02, "f01": 0.31, "f02": float("nan")}}) == 0.31
    assert week.drift_score({}) == 0.0


def test_cost_per_1m_uses_the_cheapest_one_vcpu_instance():
    prices = pd.DataFrame({"provider": ["a", "b"], "instance": ["x", "y"], "vcpus": [1, 2],
                           "memory_gb": [2, 4], "usd_per_hour": [0.036, 0.01]})
    # the 2-vCPU one is cheaper but the week runs 1-CPU replicas: both are >= 1, cheapest wins
    assert week.cost_per_1m(100.0, 2, prices) == pytest.approx(0.01 * 2 / (100 * 3600) * 1e6,
                                                              rel=1e-3)
    assert week.cost_per_1m(0.0, 2, prices) is None
    assert week.cost_per_1m(50.0, 2) > 0  # the shipped price table


def test_bucket_load_sums_seconds_into_samples():
    seconds = [{"t": 100, "ok": 10, "failed": 0, "p95_ms": 5.0},
               {"t": 101, "ok": 8, "failed": 2, "p95_ms": 9.0},
               {"t": 102, "ok": 10, "failed": 0, "p95_ms": float("nan")},
               {"t": 103, "ok": 10, "failed": 0, "p95_ms": 4.0}]
    rows = week.bucket_load([101.6, 103.6], seconds)
    assert [r["requests"] for r in rows] == [20, 20]
    assert rows[0]["failed_requests"] == 2 and rows[0]["error_ratio"] == 0.1
    assert rows[0]["p95_ms"] == 9.0 and rows[1]["p95_ms"] == 4.0  # NaN seconds ignored
    assert rows[1]["rps"] == pytest.approx(10.0)
    assert week.bucket_load([], seconds) == []


def test_weight_at():
    pts = [(10.0, 10), (20.0, 25), (30.0, 0)]
    assert [week.weight_at(pts, t) for t in (5, 10, 25, 31)] == [0, 10, 25, 0]


def _run_data(**over) -> dict:
    """A capstone.json as a good week writes it (values invented for the scorer's sake)."""
    days = [{"day": d, "rows": 1000, "drift_score": 0.02 if d != 2 else 0.1, "alerts": [],
             "pipeline_runs": int(d == 2), "registered": [], "promoted": None,
             "rolled_back": None, "requests": 500, "failed_requests": 0, "p95_ms": 9.0,
             "slo_budget_left": 1.0, "cost_per_1m": 1.3, "status": "ok"} for d in (1, 2, 3)]
    gate_lines = ["[model] passed (0.1 s)", "  PASS quality floor: auc 0.85",
                  "  PASS serving contract: selects its 30 inputs by name",
                  "  PASS weakest slice: auc 0.80 on the worst f00 quartile"]
    data = {
        "profile": "smoke", "seed": 0, "days": days,
        "summary": {"drift_day": 2, "drift_detected_day": 2, "retrained_day": 2,
                    "bad_model_day": 3, "bad_model_max_weight": 10, "slo_met": True,
                    "wall_s": 80.0, "peak_mb": 1200.0},
        "events": [{"t_s": 1.0, "day": 1, "kind": "replica_killed", "detail": "SIGKILL r1"},
                   {"t_s": 5.0, "day": 1, "kind": "replica_healed", "detail": "back in 4 s"},
                   {"t_s": 9.0, "day": 2, "kind": "alert", "detail": "ModelInputDrift firing"},
                   {"t_s": 19.0, "day": 2, "kind": "pipeline_run", "detail": "v2"}],
        "plan": {"canary_steps": [10, 25, 50, 100]},
        "slo": {"availability": 0.99, "p95_ms": 500},
        "gates": [{"day": d, "stage": "data", "passed": True, "lines": []} for d in (1, 2, 3)]
        + [{"day": 2, "stage": "model", "version": "2", "champion": "1", "passed": True,
            "lines": gate_lines},
           {"day": 3, "stage": "model", "version": "3", "champion": "2", "passed": True,
            "lines": gate_lines}],
        "canaries": [{"day": 2, "version": "2", "bad": False, "outcome": "promoted",
                      "max_weight": 100, "steps": [{"weight": w, "verdict": "continue",
                                                    "reason": ""} for w in (10, 25, 50, 100)]},
                     {"day": 3, "version": "3", "bad": True, "outcome": "rolled_back",
                      "max_weight": 10, "steps": [{"weight": 10, "verdict": "rollback",
                                                   "reason": "p95"}]}],
        "lineage": [{"version": v, "how": "x", "run_id": "r", "data": "fp", "code": "c"}
                    for v in ("1", "2", "3")],
    }
    data.update(over)
    return data


def test_checklist_of_a_good_week_passes_every_checked_item():
    ck = evaluate(_run_data())
    table = ck.table()
    assert set(table["area"]) == set(AREAS)
    assert list(table.columns) == ["area", "item", "result", "evidence"]
    checked = table[table["result"] != "not checked"]
    assert (checked["result"] == "PASS").all(), checked
    assert ck.score == ck.checked == len(checked)
    assert ck.not_checked and ck.checked < len(ck.items)  # listed, not counted
    assert all(table["evidence"].str.len() > 0)


def test_checklist_fails_the_lines_the_evidence_contradicts():
    data = _run_data()
    data["canaries"][1]["max_weight"] = 50  # the bad model went past the second step
    data["lineage"][2] = {"version": "3", "how": "by hand", "run_id": "r"}  # no data/code
    data["summary"]["slo_met"] = False
    data["gates"][0]["passed"] = False
    ck = evaluate(data)
    failed = set(ck.table().query("result == 'FAIL'")["item"])
    assert any("rolled back" in i for i in failed)
    assert any("traces to its data and code" in i for i in failed)
    assert any("SLO" in i for i in failed)
    assert any("schema" in i for i in failed)
    assert ck.score == ck.checked - 4


def test_checklist_without_events_lists_them_as_not_checked():
    data = _run_data(canaries=[], lineage=[], gates=[], events=[])
    data["summary"].update(drift_day=None, retrained_day=None, drift_detected_day=None)
    ck = evaluate(data)
    t = ck.table().set_index("item")["result"]
    for key in ("rolled back", "heals", "traces to", "gated against"):
        assert t[[i for i in t.index if key in i][0]] == "not checked"


def test_checklist_reads_and_stores_into_the_run_dir(tmp_path):
    (tmp_path / "capstone.json").write_text(json.dumps(_run_data()))
    pd.DataFrame({"t_s": [1.0], "day": [1], "rps": [10.0], "p95_ms": [5.0]}).to_csv(
        tmp_path / "timeline.csv", index=False)
    ck = checklist(tmp_path)
    stored = json.loads((tmp_path / "capstone.json").read_text())["checklist"]
    assert stored["score"] == ck.score and stored["checked"] == ck.checked
    assert len(stored["items"]) == len(ck.items)
    with pytest.raises(CourseError, match="run `mlops-course capstone run` first"):
        checklist(tmp_path / "nope")


def test_report_md_and_plot_from_artefacts(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from course_helpers.capstone.report import report_md, timeline_plot

    data = _run_data()
    (tmp_path / "capstone.json").write_text(json.dumps(data))
    rows = [{"t_s": float(t), "day": 1 + t // 4, "requests": 10, "failed_requests": 0,
             "rps": 10.0, "p95_ms": 5.0, "error_ratio": 0.0, "drift_score": 0.02,
             "version": 1 + (t > 6), "canary_weight": 10 * (4 < t < 7), "alerts_firing": 0}
            for t in range(12)]
    pd.DataFrame(rows).to_csv(tmp_path / "timeline.csv", index=False)
    fig = timeline_plot(tmp_path)
    assert len(fig.axes) >= 5
    md = report_md(data)
    assert "drift seeded on day 2, detected on day 2" in md and "rolled_back" in md


def test_checklist_skew_item_reads_the_served_vs_offline_check():
    ok = {"day": 0, "version": "1", "rows": 50, "max_abs_diff": 0.0, "passed": True}
    bad = {"day": 2, "version": "2", "rows": 50, "max_abs_diff": 0.3, "passed": False}
    item = lambda ck: ck.table().set_index("item")["result"].filter(like="skew").iloc[0]  # noqa: E731
    assert item(evaluate(_run_data(skew=[ok]))) == "PASS"
    assert item(evaluate(_run_data(skew=[ok, bad]))) == "FAIL"
    assert "max |diff| 0.3" in evaluate(_run_data(skew=[bad, ok])).table().query(
        "item.str.contains('skew')")["evidence"].iloc[0]


def _fake_day(day: int) -> dict:
    return {"day": day, "rows": 10, "drift_score": 0.0, "alerts": [], "pipeline_runs": 0,
            "registered": [], "promoted": None, "rolled_back": None, "requests": 100,
            "failed_requests": 0, "p95_ms": 5.0, "slo_budget_left": 1.0, "cost_per_1m": 1.0,
            "status": "ok"}


@pytest.mark.parametrize("fatal", [False, True])
def test_a_failing_day_is_recorded_and_the_week_goes_on_or_stops(tmp_path, monkeypatch, fatal):
    """The day loop alone (servers replaced): a failure is kept in ``status`` with what the
    day measured; the week goes on while production serves, else stops naming the day."""
    calls = []

    def run_day(self, day):
        calls.append(day)
        if day == 2:
            self.partial = _fake_day(2) | {"requests": 42}
            raise week.DayFailed("the pipeline run failed: boom\ntraceback lines", fatal=fatal)
        return _fake_day(day)

    monkeypatch.setattr(week.Week, "setup", lambda self: None)
    monkeypatch.setattr(week.Week, "teardown", lambda self: None)
    monkeypatch.setattr(week.Week, "run_day", run_day)
    monkeypatch.setattr(week, "_healthy", lambda w: True)
    if fatal:
        with pytest.raises(CourseError, match=r"^day 2 failed and production is not serving"):
            week.run_week("smoke", 3, out=tmp_path, verbose=False)
        assert calls == [1, 2]
    else:
        rep = week.run_week("smoke", 3, out=tmp_path, verbose=False)
        assert calls == [1, 2, 3]
        assert [d["status"] for d in rep.days] == ["ok", "failed: the pipeline run failed: boom",
                                                   "ok"]
        assert rep.days[1]["requests"] == 42  # what the day measured before it failed
        assert rep.summary["slo_met"] is False  # a failed day is not a met SLO
    data = json.loads((tmp_path / "capstone.json").read_text())
    assert data["days"][1]["status"].startswith("failed: ")
    assert [e["kind"] for e in data["events"]] == ["day_failed"]
    assert (tmp_path / "timeline.csv").exists() and (tmp_path / "memory.csv").exists()


def test_the_supervisors_record_folder_is_refused_as_out(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    with pytest.raises(CourseError, match="choose another --out"):
        week.run_week("smoke", out=tmp_path / "run", verbose=False)


def test_reap_retrains_waits_for_the_receivers_retrain_process_then_stops_it(workspace):
    import sys
    import time

    from course_helpers.monitoring.prometheus import monitoring_dir
    from course_helpers.supervisor import Supervisor

    sup = Supervisor()
    before = time.time() - 1
    rows = []
    for name, seconds in (("retrain-1-quick", "0.3"), ("retrain-2-stuck", "60")):
        sup.start(name, [sys.executable, "-c", f"import time; time.sleep({seconds})"])
        rows.append({"event": "started", "process": name, "at": time.time()})
    (monitoring_dir() / "retrain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    t0 = time.time()
    assert week._reap_retrains(before, timeout_s=2.0) == ["retrain-1-quick", "retrain-2-stuck"]
    assert time.time() - t0 < 15
    assert all(sup.get(n) is None for n in ("retrain-1-quick", "retrain-2-stuck"))
    assert week._reap_retrains(time.time()) == []


def test_each_day_materialises_lesson_07_features_into_its_online_store(workspace, tmp_path):
    from course_helpers.capstone.report import report_md
    from course_helpers.features import data as fdata

    w = week.Week(planmod.make_plan("smoke"), tmp_path, verbose=False)
    w._setup_features()
    try:
        first, second = w._day_features(1), w._day_features(2)
        one_day = fdata.load_events(tmp_path / "features")
        one_day = one_day[one_day["ts"] < pd.Timestamp(fdata.START) + pd.Timedelta(days=1)]
        assert first["events"] == len(one_day) > 0
        assert first["users_materialised"] == one_day["user_id"].nunique()
        assert second["window_events"] == first["events"] + second["events"]
        assert second["users_materialised"] >= first["users_materialised"]
        served = w.store.get([int(one_day["user_id"].iloc[0])], at="2026-03-04")
        assert served["feature_ts"].iloc[0] < pd.Timestamp("2026-03-04")
        assert 0 < second["feature_age_s_median"] < 86_400
    finally:
        w.store.close()
    md = report_md({"profile": "smoke", "seed": 0, "days": [], "features": w.features,
                    "summary": {k: None for k in week.SUMMARY_KEYS} | {"slo_met": True}})
    assert f"{first['events']} transactions of {first['data_day']}" in md
