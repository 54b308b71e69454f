"""SLOs of the model server as Prometheus recording and alerting rules, and their tests.

Two SLOs over a 30-day period, per scrape job (one deployment or server):

* availability: 99.9% of ``/predict`` requests answer without a 5xx;
* latency: 99% of ``/predict`` requests answer within 300 ms (a bucket edge of the server's
  histogram, see ``serving/metrics.py``: the ratio is exact, not interpolated).

Alerts follow the SRE workbook's multiwindow, multi-burn-rate recipe: **page** when the
error budget burns 14.4x too fast over 1 h *and* over 5 m (2% of a 30-day budget gone in an
hour; the short window makes it resolve minutes after the fault ends), **ticket** when it
burns 6x over 6 h *and* 30 m.

A class cannot wait an hour, so every duration (windows, ``for``) is divided by a **time
scale factor**: 60 in the ``smoke`` and ``classroom`` profiles (1 h becomes 60 s, 5 m becomes
5 s, with a 1 s scrape interval), 12 in ``full``, 1 for production (:data:`SCALES`). The
burn-rate thresholds do not change: only the clock runs faster. Recording rules keep the
production names (``..._ratio_rate1h``) at every scale so queries read the same; the file's
header says which scale it was written for.

:func:`promtool_test` runs ``promtool test rules`` on a generated test (series that must and
must not fire), at any scale: the series are the same, the clock is scaled.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from .. import config
from ..errors import BinaryNotFoundError, CourseError

PERIOD_DAYS = 30
AVAILABILITY_OBJECTIVE = 0.999
LATENCY_OBJECTIVE = 0.99
LATENCY_THRESHOLD_S = 0.3

#: window name -> seconds (production)
WINDOWS = {"5m": 300, "30m": 1800, "1h": 3600, "6h": 21600}
#: (alert suffix, severity, burn-rate factor, long window, short window, for)
POLICIES = [("Fast", "page", 14.4, "1h", "5m", 120),
            ("Slow", "ticket", 6.0, "6h", "30m", 900)]
#: profile -> time scale factor (durations are divided by it)
SCALES = {"smoke": 60.0, "classroom": 60.0, "full": 12.0, "production": 1.0}

REQUESTS = "mlops_requests_total"
LATENCY = "mlops_request_latency_seconds"

ANNOTATIONS = {
    "availability": "{sev}: the model server burns its availability error budget "
                    "{rate:g}x too fast (99.9% of /predict without a 5xx over 30 days)",
    "latency": "{sev}: the model server burns its latency error budget {rate:g}x too fast "
               "(99% of /predict within 300 ms over 30 days)",
}


def scale_for(profile: str | None) -> float:
    """The time scale factor of a profile name (or ``production``)."""
    if profile == "production":
        return 1.0
    return SCALES[config.get_profile(profile).name]


def _dur(seconds: float) -> str:
    """A Prometheus duration: whole seconds, at least 1 s."""
    s = max(1, int(round(seconds)))
    for unit, n in (("h", 3600), ("m", 60)):
        if s % n == 0:
            return f"{s // n}{unit}"
    return f"{s}s"


def _ratio_exprs(window: str) -> dict[str, str]:
    return {
        # 5xx share of requests; 0 (not "no data") while no 5xx was ever counted
        "availability": (
            f'(sum by (job) (rate({REQUESTS}{{status=~"5.."}}[{window}])) '
            f'or sum by (job) (rate({REQUESTS}[{window}])) * 0)\n'
            f'/ sum by (job) (rate({REQUESTS}[{window}]))'),
        # share of requests slower than the threshold (a bucket edge: exact)
        "latency": (
            f'1 - sum by (job) (rate({LATENCY}_bucket{{le="{LATENCY_THRESHOLD_S:g}"}}[{window}]))\n'
            f'/ sum by (job) (rate({LATENCY}_count[{window}]))'),
    }


def record_name(slo: str, window: str) -> str:
    """``job:slo_availability_errors:ratio_rate1h`` and friends (production window names)."""
    return f"job:slo_{slo}_errors:ratio_rate{window}"


def slo_rules(scale: float = 1.0, interval_s: float = 1.0) -> dict:
    """The rule groups (a dict ready for YAML): recording rules for both SLOs over the four
    windows, then page and ticket burn-rate alerts, with every duration divided by ``scale``.
    Windows never get shorter than 4 evaluation intervals (``rate`` needs two samples)."""
    def win(name: str) -> str:
        return _dur(max(WINDOWS[name] / scale, 4 * interval_s))

    records = []
    for slo in ("availability", "latency"):
        for name in WINDOWS:
            records.append({"record": record_name(slo, name),
                            "expr": _ratio_exprs(win(name))[slo]})
    alerts = []
    budgets = {"availability": 1 - AVAILABILITY_OBJECTIVE, "latency": 1 - LATENCY_OBJECTIVE}
    for slo, budget in budgets.items():
        for suffix, sev, rate, long_w, short_w, for_s in POLICIES:
            threshold = round(rate * budget, 6)
            alerts.append({
                "alert": f"ModelServer{slo.capitalize()}BurnRate{suffix}",
                "expr": (f"{record_name(slo, long_w)} > {threshold:g}\n"
                         f"and {record_name(slo, short_w)} > {threshold:g}"),
                "for": _dur(max(for_s / scale, interval_s)),
                "labels": {"severity": sev, "slo": slo, "burn_rate": f"{rate:g}"},
                "annotations": {"summary": ANNOTATIONS[slo].format(sev=sev, rate=rate)},
            })
    alerts.append({
        "alert": "ModelInputDrift",
        "expr": "max by (job) (mlops_drift_alert) > 0",
        "for": _dur(interval_s),
        "labels": {"severity": "ticket", "slo": "model", "action": "retrain"},
        "annotations": {"summary": "ticket: the model's inputs or predictions drifted from the "
                                   "training reference (see mlops_drift_flagged_features)"},
    })
    return {"groups": [{"name": "slo-records", "interval": _dur(interval_s), "rules": records},
                       {"name": "slo-alerts", "interval": _dur(interval_s), "rules": alerts}]}


def _yaml(data: dict) -> str:
    """YAML with multi-line strings as literal blocks (readable PromQL)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value: str):
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, width=100)


def dump(rules: dict, scale: float) -> str:
    head = (f"# Written by course_helpers.monitoring.rules: SLO rules at time scale 1/{scale:g}"
            f"{' (production)' if scale == 1 else ' (every window and for divided by ' + format(scale, 'g') + '; names keep production windows)'}.\n")
    return head + _yaml(rules)


def write_rules(directory: str | Path, profile: str | None = None,
                scale: float | None = None, interval_s: float | None = None) -> Path:
    """Write ``slo.yml`` into ``directory`` for a profile's scale; returns its path."""
    from .prometheus import INTERVALS

    prof = config.get_profile(profile if profile != "production" else None).name
    scale = scale if scale is not None else scale_for(profile)
    iv = interval_s if interval_s is not None else (60.0 if scale == 1 else INTERVALS[prof])
    path = Path(directory) / "slo.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump(slo_rules(scale, iv), scale))
    return path


# -- promtool ------------------------------------------------------------------------------
def promtool() -> str:
    tool = config.find_binary("promtool")
    if not tool:
        raise BinaryNotFoundError("`promtool` was not found: install Debian's prometheus "
                                  "package: apt-get install prometheus")
    return tool


def check_rules(path: str | Path) -> str:
    """``promtool check rules``: '' when the file is valid, else promtool's message (for a
    rule file that does not parse: its own words, not a traceback)."""
    out = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True,
                         text=True)
    return "" if out.returncode == 0 else (out.stderr or out.stdout).strip()


def add_rules(rules: str | Path, name: str = "custom") -> Path:
    """Validate a rule file (a path, or YAML text) with ``promtool check rules`` and install
    it as ``monitoring/rules/<name>.yml``; a running Prometheus re-reads its rules.

    A file that does not parse raises :class:`CourseError` with promtool's own message
    (what is wrong and where), not a traceback."""
    from .prometheus import monitoring_dir, reload, running

    text = Path(rules).read_text() if isinstance(rules, Path) or (
        isinstance(rules, str) and "\n" not in rules and Path(rules).is_file()) else str(rules)
    with tempfile.TemporaryDirectory(prefix="rules-check-") as work:
        candidate = Path(work) / f"{name}.yml"
        candidate.write_text(text)
        problem = check_rules(candidate).replace(f"{candidate}: ", "")
    if problem:
        lines = [ln.strip() for ln in problem.splitlines()]
        detail = "; ".join(dict.fromkeys(
            ln for ln in lines if ln and not ln.startswith(("Checking", "FAILED"))))
        raise CourseError(f"the rule file {name}.yml does not parse: {detail}")
    dest = monitoring_dir("rules") / f"{name}.yml"
    dest.write_text(text)
    if running() is not None:
        reload()
    return dest


def _alert(name: str, slo: str, sev: str, rate: float) -> dict:
    return {"exp_labels": {"severity": sev, "slo": slo, "burn_rate": f"{rate:g}",
                           "job": "model"},
            "exp_annotations": {"summary": ANNOTATIONS[slo].format(sev=sev, rate=rate)}}


def test_spec(rule_file: str, scale: float = 1.0) -> dict:
    """A ``promtool test rules`` file: for each SLO, a fast burn (page and ticket fire), a
    slow burn (ticket only) and a healthy server (nothing fires), on a clock scaled by
    ``scale`` (1 sample a minute at scale 1)."""
    step = 60.0 / scale

    def t(minutes: float) -> str:
        return _dur(minutes * 60 / scale)

    ok = 'mlops_requests_total{job="model", status="200"}'
    bad = 'mlops_requests_total{job="model", status="500"}'
    fast = ["ModelServerAvailabilityBurnRateFast", "ModelServerAvailabilityBurnRateSlow"]
    tests = [
        {   # healthy for 60 samples, then 9% errors (100 of 1100 a minute): page after ~9 min
            "interval": _dur(step),
            "input_series": [{"series": ok, "values": "0+1000x480"},
                             {"series": bad, "values": "0x60 0+100x420"}],
            "alert_rule_test": [
                {"eval_time": t(59), "alertname": fast[0], "exp_alerts": []},
                {"eval_time": t(64), "alertname": fast[0], "exp_alerts": []},  # 1 h window: 0.8%
                {"eval_time": t(80), "alertname": fast[0],
                 "exp_alerts": [_alert(fast[0], "availability", "page", 14.4)]},
                {"eval_time": t(95), "alertname": fast[1],
                 "exp_alerts": [_alert(fast[1], "availability", "ticket", 6.0)]},
            ]},
        {   # a slow burn: 1% errors (10 of 1010 a minute) for 7 h: a ticket, never a page
            "interval": _dur(step),
            "input_series": [{"series": ok, "values": "0+1000x480"},
                             {"series": bad, "values": "0+10x480"}],
            "alert_rule_test": [
                {"eval_time": t(400), "alertname": fast[0], "exp_alerts": []},
                {"eval_time": t(400), "alertname": fast[1],
                 "exp_alerts": [_alert(fast[1], "availability", "ticket", 6.0)]},
            ]},
        {   # healthy: 0.05% errors, under the 0.1% budget: silence
            "interval": _dur(step),
            "input_series": [{"series": ok, "values": "0+2000x480"},
                             {"series": bad, "values": "0+1x480"}],
            "alert_rule_test": [
                {"eval_time": t(400), "alertname": fast[0], "exp_alerts": []},
                {"eval_time": t(400), "alertname": fast[1], "exp_alerts": []},
            ]},
        {   # latency: 20% of requests over 300 ms from minute 60 (budget 1%: 20x): page
            "interval": _dur(step),
            "input_series": [
                {"series": 'mlops_request_latency_seconds_bucket{job="model", le="0.3"}',
                 "values": "0+1000x60 60000+800x120"},
                {"series": 'mlops_request_latency_seconds_count{job="model"}',
                 "values": "0+1000x180"}],
            "alert_rule_test": [
                {"eval_time": t(59), "alertname": "ModelServerLatencyBurnRateFast",
                 "exp_alerts": []},
                {"eval_time": t(110), "alertname": "ModelServerLatencyBurnRateFast",
                 "exp_alerts": [_alert("", "latency", "page", 14.4)]},
            ]},
    ]
    return {"rule_files": [rule_file], "evaluation_interval": _dur(step), "tests": tests}


def promtool_test(profile: str | None = "production", scale: float | None = None,
                  workdir: str | Path | None = None) -> tuple[bool, str]:
    """Write the rules and their test at a scale and run ``promtool test rules``.

    Returns ``(passed, promtool's output)``.
    """
    import yaml

    scale = scale if scale is not None else scale_for(profile)
    work = Path(workdir or tempfile.mkdtemp(prefix="slo-test-"))
    work.mkdir(parents=True, exist_ok=True)
    rules = work / "slo.yml"
    rules.write_text(dump(slo_rules(scale, 60.0 / scale), scale))
    problem = check_rules(rules)
    if problem:
        raise CourseError(f"the generated rules do not parse: {problem}")
    test = work / "slo_test.yml"
    test.write_text(yaml.safe_dump(test_spec("slo.yml", scale), sort_keys=False))
    out = subprocess.run([promtool(), "test", "rules", test.name], cwd=work,
                         capture_output=True, text=True)
    return out.returncode == 0, (out.stdout + out.stderr).strip()
