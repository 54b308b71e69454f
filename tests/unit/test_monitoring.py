"""Lesson 08's own logic without servers: file_sd targets, the generated config and rules
(checked by the real promtool), the fault switch, the drift gauges' text format."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers import need

pytestmark = pytest.mark.unit


def has_promtool() -> None:
    need(shutil.which("promtool") is not None, "promtool (Debian package prometheus)")


def test_set_targets_writes_file_sd_and_keeps_labels(workspace):
    from course_helpers.monitoring import discovery

    path = discovery.set_targets("canary", ["http://127.0.0.1:1234/", "127.0.0.1:1235"],
                                 {"track": "canary"})
    group = json.loads(path.read_text())
    assert group == [{"targets": ["127.0.0.1:1234", "127.0.0.1:1235"],
                      "labels": {"track": "canary", "job": "canary"}}]
    # a scaling deployment rewrites the targets without labels: the track label stays
    discovery.set_targets("canary", ["127.0.0.1:1234"])
    assert discovery.read_targets("canary")["labels"] == {"track": "canary", "job": "canary"}
    assert set(discovery.jobs()) == {"canary"}
    assert discovery.remove_targets("canary") and discovery.jobs() == {}


@pytest.mark.parametrize("targets, labels, words", [
    (["127.0.0.1"], None, "host:port"),
    (["http://x:1/metrics://"], None, "host:port"),
    (["127.0.0.1:1"], {"__name__": "x"}, "label name"),
    (["127.0.0.1:1"], {"track": 3}, "must be a string"),
])
def test_set_targets_refuses_bad_input_in_one_sentence(workspace, targets, labels, words):
    from course_helpers.monitoring import discovery

    with pytest.raises(ValueError, match=words):
        discovery.set_targets("job", targets, labels)


def test_register_deployment_keeps_rollout_labels(workspace):
    from course_helpers.deploy.base import Deployment, Replica
    from course_helpers.deploy.spec import DeploymentSpec
    from course_helpers.monitoring import discovery

    spec = DeploymentSpec(model_uri="x", name="canary", replicas=2)
    dep = Deployment(spec, "local", [Replica("canary-r0", "http://127.0.0.1:9001"),
                                     Replica("canary-r1", "http://127.0.0.1:9002")], "http://lb")
    discovery.register_deployment(dep, {"track": "canary"})
    dep.replicas = dep.replicas[:1]  # scaled in
    discovery.register_deployment(dep)
    group = discovery.read_targets("canary")
    assert group["targets"] == ["127.0.0.1:9001"]
    assert group["labels"] == {"deployment": "canary", "backend": "local", "track": "canary",
                               "job": "canary"}
    discovery.unregister_deployment(dep)
    assert discovery.read_targets("canary") is None


def test_missing_prometheus_binary_is_one_sentence(workspace, monkeypatch):
    from course_helpers.errors import BinaryNotFoundError
    from course_helpers.monitoring import prometheus

    monkeypatch.setenv("MLOPS_PROMETHEUS_BIN", "/nonexistent/prometheus")
    with pytest.raises(BinaryNotFoundError, match="apt-get install prometheus"):
        prometheus.start("smoke")


def test_url_without_prometheus_says_how_to_start_it(workspace):
    from course_helpers.monitoring import prometheus

    with pytest.raises(prometheus.PrometheusNotRunning, match="monitor up"):
        prometheus.url()


def test_generated_config_is_valid(tmp_path):
    has_promtool()
    from course_helpers.monitoring import prometheus

    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(prometheus.config_text(1, str(tmp_path / "t/*.json"), str(tmp_path / "r/*.yml"),
                                          str(tmp_path / "am.json")))
    assert prometheus.check_config(cfg) == ""
    cfg.write_text("global: [not: a mapping")
    assert prometheus.check_config(cfg)  # promtool's own words


def test_rules_scale_every_duration_not_the_thresholds():
    from course_helpers.monitoring import rules

    prod = rules.slo_rules(1.0, 60)
    klass = rules.slo_rules(60.0, 1)
    p_alerts = {r["alert"]: r for r in prod["groups"][1]["rules"]}
    c_alerts = {r["alert"]: r for r in klass["groups"][1]["rules"]}
    fast = "ModelServerAvailabilityBurnRateFast"
    assert "> 0.0144" in p_alerts[fast]["expr"] and "> 0.0144" in c_alerts[fast]["expr"]
    assert p_alerts[fast]["for"] == "2m" and c_alerts[fast]["for"] == "2s"
    assert p_alerts["ModelServerLatencyBurnRateSlow"]["expr"].count("> 0.06") == 2
    records = {r["record"]: r["expr"] for r in klass["groups"][0]["rules"]}
    assert "[1m]" in records["job:slo_availability_errors:ratio_rate1h"]
    assert "[5s]" in records["job:slo_availability_errors:ratio_rate5m"]
    assert 'le="0.3"' in records["job:slo_latency_errors:ratio_rate1h"]
    assert rules.scale_for("classroom") == 60 and rules.scale_for("production") == 1


@pytest.mark.parametrize("scale", [1.0, 60.0])
def test_promtool_test_rules_pass_at_production_and_class_scale(tmp_path, scale):
    has_promtool()
    from course_helpers.monitoring import rules

    ok, out = rules.promtool_test(scale=scale, workdir=tmp_path)
    assert ok, out


def test_promtool_catches_a_wrong_threshold(tmp_path, monkeypatch):
    """The rule tests have teeth: a page threshold of 1x (instead of 14.4x) fails them."""
    has_promtool()
    from course_helpers.monitoring import rules

    monkeypatch.setattr(rules, "POLICIES", [("Fast", "page", 1.0, "1h", "5m", 120),
                                            ("Slow", "ticket", 6.0, "6h", "30m", 900)])
    ok, out = rules.promtool_test(scale=1.0, workdir=tmp_path)
    assert not ok and "FAILED" in out


def test_a_rule_file_that_does_not_parse_gives_promtools_message(tmp_path):
    has_promtool()
    from course_helpers.monitoring import rules

    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n- name: x\n  rules:\n  - alert: X\n    expr: rate(foo[5m]\n")
    msg = rules.check_rules(bad)
    assert msg and "Traceback" not in msg


def test_fault_parse_and_switch(tmp_path):
    from course_helpers.serving.faults import Fault, FaultSwitch

    assert Fault.parse({}) == Fault() and not Fault().active
    with pytest.raises(ValueError, match="between 0 and 1"):
        Fault.parse({"error_rate": 2})
    with pytest.raises(ValueError, match="unknown fault"):
        Fault.parse({"errors": 0.1})
    a, b = FaultSwitch(tmp_path / "fault.json"), FaultSwitch(tmp_path / "fault.json")
    a.set(Fault(error_rate=1.0))
    b._checked = -1.0
    assert b.current().error_rate == 1.0  # another worker sees it through the file
    assert b.fail() and b.delay() == 0.0
    a.set(Fault(latency_s=0.2, latency_share=1.0))
    b._checked = -1.0
    assert not b.fail() and 0.1 <= b.delay() <= 0.3
    a.set(Fault())
    b._checked = -1.0
    assert not b.fail() and b.delay() == 0.0


def test_receiver_renders_drift_gauges(tmp_path):
    from course_helpers.monitoring.receiver import render_metrics

    (tmp_path / "m.json").write_text(json.dumps({"metrics": [
        {"name": "mlops_drift_psi", "labels": {"feature": "f00"}, "value": 0.3, "help": "PSI"},
        {"name": "mlops_drift_psi", "labels": {"feature": "f01"}, "value": 0.01},
        {"name": "mlops_drift_alert", "value": 1}]}))
    text = render_metrics(tmp_path / "m.json")
    from prometheus_client.parser import text_string_to_metric_families

    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert len(fams["mlops_drift_psi"].samples) == 2
    assert fams["mlops_drift_alert"].samples[0].value == 1
    assert render_metrics(tmp_path / "missing.json") == ""


# -- drift ---------------------------------------------------------------------------------
def test_psi_uses_reference_quantiles_and_survives_empty_bins():
    import numpy as np

    from course_helpers.monitoring import drift

    rng = np.random.default_rng(0)
    ref = rng.normal(size=20_000)
    same = drift.psi(ref, rng.normal(size=5_000))
    assert same < 3 * drift.psi_bias(5_000, 20_000)
    shifted = drift.psi(ref, rng.normal(0.5, 1, size=5_000))
    assert 0.1 < shifted < 0.5
    # every value beyond the reference's range: one open bin holds all, the rest are empty
    far = drift.psi(ref, np.full(100, 50.0))
    assert np.isfinite(far) and far > 5
    # a discrete feature: duplicate quantile edges are dropped, not empty bins
    assert len(drift.quantile_edges(np.repeat([0.0, 1.0], 500), 10)) == 2  # not 9
    assert drift.psi(np.repeat([0.0, 1.0], 500), np.repeat([0.0, 1.0], 50)) < 1e-9
    with pytest.raises(ValueError, match="no non-null"):
        drift.psi(ref, [np.nan])


def test_benjamini_hochberg_matches_the_step_up_rule():
    import numpy as np

    from course_helpers.monitoring.drift import benjamini_hochberg

    p = np.array([0.01, 0.04, 0.03, 0.2, np.nan])
    # sorted 0.01, 0.03, 0.04, 0.2 vs k/4*0.05 = .0125, .025, .0375, .05: only 0.01 passes
    assert list(benjamini_hochberg(p, 0.05)) == [True, False, False, False, False]
    # step-up: 0.04 passes at k=3 of m=3 (0.05), so all three below it are rejected
    assert list(benjamini_hochberg([0.04, 0.03, 0.02], 0.05)) == [True, True, True]
    assert not benjamini_hochberg([], 0.05).any()


def test_scenarios_are_seeded_and_quality_checks_catch_the_incident():
    from course_helpers.monitoring import drift

    a, ya = drift.make_window("covariate", 3, 200, seed=1, onset=2)
    b, yb = drift.make_window("covariate", 3, 200, seed=1, onset=2)
    assert a.equals(b) and (ya == yb).all()
    ref, _ = drift.make_window("none", 0, 2_000, seed=9)
    clean, _ = drift.make_window("quality", 0, 500, seed=1, onset=5)
    assert drift.quality_checks(clean, ref) == []
    bad, _ = drift.make_window("quality", 6, 500, seed=1, onset=5)
    problems = " ".join(drift.quality_checks(bad, ref))
    assert "f03" in problems and "unit change" in problems and "f05" in problems
    with pytest.raises(ValueError, match="unknown scenario"):
        drift.make_window("gradual", 0, 10)


def test_monitor_flags_covariate_shift_and_concept_only_through_labels():
    from course_helpers.monitoring import drift

    X_ref, y_ref, model = drift.reference("smoke")
    mon = drift.DriftMonitor().fit(X_ref, model, y_ref)
    X, y = drift.make_window("covariate", 1, 1_000, seed=3, onset=0)
    res = mon.check(X, y)
    assert res["alert"] and set(res["flagged_features"]) <= {"f00", "f01", "f02"}
    assert res["flagged_features"]
    X, y = drift.make_window("concept", 1, 1_000, seed=3, onset=0)
    res = mon.check(X, y)
    assert res["flagged_features"] == [] and res["alert"]
    assert any("AUC" in r for r in res["reasons"])


def test_monitor_psi_equals_the_plain_function():
    from course_helpers.monitoring import drift

    X_ref, _ = drift.make_window("none", 0, 3_000, seed=5)
    X, _ = drift.make_window("covariate", 1, 400, seed=5, onset=0)
    res = drift.DriftMonitor().fit(X_ref).check(X)
    for c in ("f00", "f10"):
        assert res["psi"][c] == pytest.approx(drift.psi(X_ref[c], X[c]), abs=1e-5)


def test_add_rules_refuses_a_broken_file_with_promtools_words(workspace, tmp_path, monkeypatch):
    has_promtool()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    from course_helpers.errors import CourseError
    from course_helpers.monitoring import rules

    bad = "groups:\n- name: x\n  rules:\n  - alert: X\n    expr: rate(foo[5m]\n"
    with pytest.raises(CourseError, match="does not parse") as err:
        rules.add_rules(bad, "broken")
    assert "Traceback" not in str(err.value) and len(str(err.value)) < 600
    assert "unclosed left parenthesis" in str(err.value), "promtool's own words"
    assert "rules-check-" not in str(err.value) and "FAILED" not in str(err.value)
    assert not list(tmp_path.glob("rules-check-*")), "the check left its files"
    good = "groups:\n- name: x\n  rules:\n  - alert: X\n    expr: up == 0\n"
    assert rules.add_rules(good, "mine").read_text() == good


def test_monitor_drift_cli_writes_drift_json_and_a_plot(workspace, tmp_path, capsys):
    from course_helpers.cli import main

    assert main(["monitor", "drift", "--scenario", "quality", "--profile", "smoke",
                 "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "drift.json").read_text())
    assert (tmp_path / "drift.png").stat().st_size > 0
    assert data["scenario"] == "quality" and data["n_windows"] == len(data["windows"])
    for w in data["windows"]:
        assert {"psi", "ks_p", "flagged_features", "alert"} <= set(w)
        assert len(w["psi"]) == len(w["ks_p"]) == 30
    assert data["detection_rate"] == 1.0 and data["false_alarm_rate"] == 0.0
    assert "wrote" in capsys.readouterr().out
    gauges = json.loads((workspace / "monitoring" / "drift_metrics.json").read_text())
    assert any(m["name"] == "mlops_drift_alert" and m["value"] == 1.0 for m in gauges["metrics"])


def test_ks_from_a_presorted_reference_equals_scipy():
    """The drift monitor's KS (reference sorted once in fit) gives ks_2samp's D and p,
    ties and unequal sizes included."""
    import numpy as np
    from scipy.stats import ks_2samp

    from course_helpers.monitoring import drift

    g = np.random.default_rng(3)
    for decimals, n, m in ((1, 2000, 300), (3, 500, 37), (6, 1000, 1)):
        ref = np.sort(np.round(g.normal(size=n), decimals))
        cur = np.round(g.normal(0.2, 1.0, size=m), decimals)
        d = drift.ks_statistic(ref, np.searchsorted(ref, ref, side="right") / n, cur)
        want = ks_2samp(ref, cur, method="asymp")
        assert d == want.statistic
        assert drift.ks_asymp_pvalues([d], n, [m])[0] == want.pvalue


def test_wait_for_retrain_reads_the_directory_a_retrain_was_given(workspace, tmp_path):
    """The capstone's scheduled retrain writes to its own ``--dir``; the same wait reads it."""
    from course_helpers.errors import CourseError
    from course_helpers.monitoring import alerting

    (tmp_path / "retrain.jsonl").write_text(
        json.dumps({"event": "finished", "at": 5.0, "ok": False}) + "\n"
        + json.dumps({"event": "finished", "at": 20.0, "ok": True, "version": "3"}) + "\n")
    rec = alerting.wait_for_retrain(after=10.0, timeout=1, poll=0.1, directory=tmp_path)
    assert rec["version"] == "3"
    with pytest.raises(CourseError, match="no retrain run finished"):
        alerting.wait_for_retrain(after=10.0, timeout=0.3, poll=0.1)  # the workspace's: none
