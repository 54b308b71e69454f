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
    assert b.decide() == (0.0, True)
    a.set(Fault())
    b._checked = -1.0
    assert b.decide() == (0.0, False)


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
