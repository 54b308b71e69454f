"""A real Prometheus (Debian's ``/usr/bin/prometheus``), supervised, and PromQL into DataFrames.

:func:`start` writes ``<workspace>/monitoring/prometheus.yml`` and starts Prometheus on a free
loopback port: one scrape job reads every file in ``monitoring/targets/`` (file-based service
discovery, see :mod:`.discovery`), the rule files in ``monitoring/rules/`` are evaluated, and
alerts go to the Alertmanagers listed in ``monitoring/alertmanagers.json`` (also file_sd,
so Alertmanager can start later). The scrape and evaluation interval is short in class
(1 s in ``smoke`` and ``classroom``, 5 s in ``full``); data is kept for one hour, which keeps
Prometheus small (measured in the notebook and the benchmark).

:func:`query` and :func:`query_range` call the HTTP API (``/api/v1/query``,
``/api/v1/query_range``) and return tidy DataFrames: one row per series (and timestamp),
one column per label, plus ``value``. A metric that does not exist gives an empty frame
whose ``attrs["note"]`` says so (and a warning), never an exception.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

from .. import config
from ..errors import BinaryNotFoundError, CourseError
from ..supervisor import Supervisor, free_port

NAME = "prometheus"
MISSING_BINARY = ("`prometheus` was not found: install Debian's prometheus package: "
                  "apt-get install prometheus")
#: scrape and rule evaluation interval per profile, seconds
INTERVALS = {"smoke": 1, "classroom": 1, "full": 5}
RETENTION = "1h"
#: the Go runtime's GC target: a lower value trades a little CPU for less resident memory
GOGC = "50"


class PrometheusNotRunning(CourseError):
    pass


def monitoring_dir(*parts: str) -> Path:
    """``<workspace>/monitoring/...``: config, targets, rules, data."""
    return config.workspace_dir("monitoring", *parts)


def binary() -> str:
    """Path of the prometheus binary; :class:`BinaryNotFoundError` (one sentence) if absent."""
    path = config.settings().prometheus_bin or config.find_binary("prometheus")
    if not path or not os.path.exists(path):
        raise BinaryNotFoundError(MISSING_BINARY)
    return path


def config_text(interval_s: float, targets_glob: str, rules_glob: str,
                alertmanagers_file: str) -> str:
    """prometheus.yml: one file_sd scrape job for every model server, the rules, Alertmanager."""
    iv = f"{interval_s:g}s"
    return "\n".join([
        "# Written by course_helpers.monitoring.prometheus: regenerated at every start.",
        "global:",
        f"  scrape_interval: {iv}",
        f"  scrape_timeout: {iv}",
        f"  evaluation_interval: {iv}",
        "rule_files:",
        f"  - {json.dumps(rules_glob)}",
        "alerting:",
        "  alertmanagers:",
        "    - file_sd_configs:",
        f"        - files: [{json.dumps(alertmanagers_file)}]",
        "          refresh_interval: 5s",
        "scrape_configs:",
        "  - job_name: course",  # each file_sd group sets its own job label
        "    metrics_path: /metrics",
        "    file_sd_configs:",
        f"      - files: [{json.dumps(targets_glob)}]",
        "        refresh_interval: 5s",
        "",
    ])


@dataclasses.dataclass
class Prometheus:
    """A running Prometheus: ``url``, ``port``, ``pid``; :meth:`stop` ends it."""

    url: str
    port: int
    pid: int | None
    interval_s: float
    config_path: Path

    def rss_mb(self) -> float:
        """Resident memory of the Prometheus process, MB."""
        import psutil

        try:
            return psutil.Process(self.pid).memory_info().rss / 2**20
        except (psutil.NoSuchProcess, TypeError):
            return 0.0

    def reload(self) -> None:
        """Re-read the config and rule files (SIGHUP). Targets need no reload."""
        reload()

    def stop(self) -> bool:
        return stop()


def _handle(rec) -> Prometheus:
    try:
        iv = float(json.loads((monitoring_dir() / "prometheus.json").read_text())["interval_s"])
    except (OSError, ValueError, KeyError):
        iv = 1.0
    return Prometheus(url=f"http://127.0.0.1:{rec.port}", port=rec.port, pid=rec.pid,
                      interval_s=iv, config_path=monitoring_dir() / "prometheus.yml")


def running() -> Prometheus | None:
    """The Prometheus of this workspace if one runs (supervisor state), else None."""
    rec = Supervisor().get(NAME)
    if rec is None or not rec.is_alive():
        return None
    return _handle(rec)


def url() -> str:
    """Base URL of the running Prometheus; :class:`PrometheusNotRunning` if there is none."""
    prom = running()
    if prom is None:
        raise PrometheusNotRunning("no Prometheus runs in this workspace: start one with "
                                   "`mlops-course monitor up` or monitoring.start()")
    return prom.url


def start(profile: str | None = None, interval_s: float | None = None,
          retention: str = RETENTION, rules: bool = True, timeout: float = 60.0,
          register_servers: bool = True) -> Prometheus:
    """Start Prometheus (or return the one already running) and wait until it is ready.

    ``interval_s`` defaults to the profile's (1 s in smoke/classroom). ``rules``: write the
    SLO recording and alerting rules (:mod:`.rules`) into ``monitoring/rules/`` first.
    ``register_servers``: add the model servers the supervisor already runs as targets.
    A new Prometheus starts with an empty database: series do not outlive a session.
    """
    from . import discovery as _targets

    prom = running()
    if prom is not None:
        if register_servers:
            _targets.register_supervised_servers()
        return prom
    exe = binary()
    cfg, iv = prepare(profile, interval_s, rules)
    if register_servers:
        _targets.prune_dead()
        _targets.register_supervised_servers()
    port = free_port()
    # a fresh TSDB: an earlier session's last samples stay current for the 5-minute lookback
    # after a restart (no staleness marker) and would fire its alerts again, drift included
    shutil.rmtree(monitoring_dir() / "prometheus-data", ignore_errors=True)
    cmd = command(exe, cfg, port, monitoring_dir("prometheus-data"), iv, retention)
    rec = Supervisor().start(NAME, cmd, port=port,
                             url=f"http://127.0.0.1:{port}/-/ready", timeout=timeout,
                             env={"GOGC": GOGC}, cwd=str(monitoring_dir()))
    (monitoring_dir() / "prometheus.json").write_text(json.dumps({"interval_s": iv,
                                                                  "port": port}))
    return _handle(rec)


def prepare(profile: str | None = None, interval_s: float | None = None,
            rules: bool = True) -> tuple[Path, float]:
    """Write ``monitoring/prometheus.yml`` (and the SLO rules); returns (path, interval)."""
    from . import discovery

    prof = config.get_profile(profile)
    iv = float(interval_s or INTERVALS.get(prof.name, 1))
    base = monitoring_dir()
    rules_dir = monitoring_dir("rules")
    if rules:
        from .rules import write_rules

        write_rules(rules_dir, profile=prof.name)
    am_file = base / "alertmanagers.json"
    if not am_file.exists():
        am_file.write_text("[]")
    cfg = base / "prometheus.yml"
    cfg.write_text(config_text(iv, str(discovery.targets_dir() / "*.json"),
                               str(rules_dir / "*.yml"), str(am_file)))
    check = check_config(cfg)
    if check:
        raise CourseError(f"the generated Prometheus config does not parse: {check}")
    return cfg, iv


def command(exe: str, cfg: Path, port: int, data: Path, interval_s: float,
            retention: str = RETENTION, external_url: str | None = None) -> list[str]:
    """The prometheus command line: loopback only, small retention, lifecycle API on."""
    cmd = [exe, f"--config.file={cfg}", f"--web.listen-address=127.0.0.1:{port}",
           f"--storage.tsdb.path={data}", f"--storage.tsdb.retention.time={retention}",
           "--web.enable-lifecycle", "--query.max-concurrency=4",
           f"--rules.alert.resend-delay={max(1, int(interval_s))}s", "--log.level=warn"]
    if external_url:
        cmd.append(f"--web.external-url={external_url}")
    return cmd


def launcher_command(port: int, base_url: str = "/") -> list[str]:
    """What the JupyterLab launcher runs: a Prometheus of its own (own data directory) on
    the workspace's config and targets, answering under ``<base_url>prometheus/``."""
    cfg, iv = prepare()
    prefix = base_url.rstrip("/") + "/prometheus/"
    return command(binary(), cfg, port, monitoring_dir("prometheus-ui-data"), iv,
                   external_url=f"http://127.0.0.1:{port}{prefix}")


def stop() -> bool:
    """Stop this workspace's Prometheus. True if one was running."""
    return Supervisor().stop(NAME)


def reload() -> None:
    """Make the running Prometheus re-read its config and rules (SIGHUP)."""
    prom = running()
    if prom is None:
        raise PrometheusNotRunning("no Prometheus runs in this workspace: nothing to reload")
    os.kill(prom.pid, signal.SIGHUP)


def check_config(path: str | Path) -> str:
    """``promtool check config``: '' if the file is valid, else promtool's message."""
    import subprocess

    tool = config.find_binary("promtool")
    if not tool:
        return ""  # nothing to check with: Prometheus itself will complain at start
    out = subprocess.run([tool, "check", "config", "--syntax-only", str(path)],
                         capture_output=True, text=True)
    if out.returncode == 0:
        return ""
    return (out.stderr or out.stdout).strip()


# -- the HTTP API ---------------------------------------------------------------------------
def _api(path: str, params: dict, base: str | None = None, timeout: float = 30.0) -> dict:
    base = base or url()
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    req = urllib.request.Request(f"{base}{path}", data=query.encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        try:
            body = json.loads(err.read())
        except ValueError:
            raise CourseError(f"Prometheus answered HTTP {err.code} to {path}") from None
    except OSError as err:
        raise PrometheusNotRunning(f"Prometheus at {base} did not answer ({err}): is it "
                                   f"running? `mlops-course monitor status`") from None
    if body.get("status") != "success":
        raise CourseError(f"Prometheus refused the query: {body.get('error', body)}")
    for w in body.get("warnings") or []:
        warnings.warn(f"Prometheus: {w}", stacklevel=3)
    return body["data"]


def _get(path: str, base: str | None = None) -> dict:
    base = base or url()
    try:
        with urllib.request.urlopen(f"{base}{path}", timeout=10) as resp:
            return json.loads(resp.read())["data"]
    except OSError as err:
        raise PrometheusNotRunning(f"Prometheus at {base} did not answer ({err}): is it "
                                   f"running? `mlops-course monitor status`") from None


def _ts(at) -> float | None:
    if at is None:
        return None
    if isinstance(at, (int, float)):
        return float(at)
    import pandas as pd

    return pd.Timestamp(at).timestamp()


def _empty(promql: str, columns: list[str]):
    import pandas as pd

    df = pd.DataFrame(columns=columns)
    note = (f"no series match {promql!r}: the metric does not exist yet, has no samples in "
            f"this window, or the label filter matches nothing (check `monitoring.targets()`)")
    df.attrs["note"] = note
    warnings.warn(note, stacklevel=3)
    return df


def query(promql: str, at=None, base_url: str | None = None):
    """Evaluate ``promql`` at one instant (``at``: a timestamp, datetime or None for now).

    Returns a DataFrame: one row per series, one column per label, plus ``value`` (float)
    and ``timestamp`` (seconds). A scalar result gives one row without labels.
    """
    import pandas as pd

    data = _api("/api/v1/query", {"query": promql, "time": _ts(at)}, base_url)
    kind, result = data["resultType"], data["result"]
    if kind in ("scalar", "string"):
        return pd.DataFrame([{"timestamp": float(result[0]), "value": float(result[1])}])
    if not result:
        return _empty(promql, ["timestamp", "value"])
    rows = []
    for item in result:
        ts, val = item["value"] if kind == "vector" else item["values"][-1]
        rows.append({**item["metric"], "timestamp": float(ts), "value": float(val)})
    return pd.DataFrame(rows)


def query_range(promql: str, start, end, step: float | str = 1.0, base_url: str | None = None):
    """Evaluate ``promql`` from ``start`` to ``end`` every ``step`` seconds.

    Returns a long DataFrame: one row per (series, time), label columns, ``time``
    (pandas datetime, UTC), ``t`` (seconds since ``start``) and ``value``.
    """
    import pandas as pd

    t0, t1 = _ts(start), _ts(end)
    data = _api("/api/v1/query_range", {"query": promql, "start": t0, "end": t1,
                                        "step": step}, base_url)
    rows = []
    for item in data["result"]:
        for ts, val in item["values"]:
            rows.append({**item["metric"], "t": float(ts) - t0, "value": float(val),
                         "time": pd.Timestamp(float(ts), unit="s", tz="UTC")})
    if not rows:
        return _empty(promql, ["time", "t", "value"])
    return pd.DataFrame(rows)


def targets(base_url: str | None = None):
    """Prometheus's view of its targets: job, instance, health, last error, labels."""
    import pandas as pd

    data = _get("/api/v1/targets?state=active", base_url)
    rows = [{**t["labels"], "health": t["health"], "last_error": t.get("lastError", ""),
             "last_scrape": t.get("lastScrape")} for t in data.get("activeTargets", [])]
    return pd.DataFrame(rows, columns=None if rows else ["job", "instance", "health"])


def wait_for_targets(n: int = 1, job: str | None = None, timeout: float = 30.0,
                     base_url: str | None = None) -> float:
    """Wait until at least ``n`` targets (of ``job``) are up; returns the seconds it took."""
    t0 = time.monotonic()
    while True:
        df = targets(base_url)
        if not df.empty:
            sel = df if job is None else df[df["job"] == job]
            if (sel["health"] == "up").sum() >= n:
                return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            seen = "none" if df.empty else ", ".join(f"{r.job}/{r.instance}={r.health}"
                                                     for r in df.itertuples())
            raise CourseError(f"Prometheus did not see {n} healthy target(s)"
                              f"{' of job ' + job if job else ''} within {timeout:g} s "
                              f"(targets: {seen}); check the servers with `mlops-course status`")
        time.sleep(0.5)


def alerts(base_url: str | None = None):
    """Alerts Prometheus holds now: one row per alert (name, state, labels, active since)."""
    import pandas as pd

    data = _get("/api/v1/alerts", base_url)
    rows = [{**a["labels"], "state": a["state"], "active_at": a.get("activeAt"),
             "value": a.get("value")} for a in data.get("alerts", [])]
    return pd.DataFrame(rows, columns=None if rows else ["alertname", "state"])


def alert_state(name: str, base_url: str | None = None, **labels: str) -> str:
    """``inactive``, ``pending`` or ``firing`` for alert ``name`` (the most advanced state of
    its instances matching ``labels``)."""
    df = alerts(base_url)
    if df.empty:
        return "inactive"
    sel = df[df["alertname"] == name]
    for k, v in labels.items():
        sel = sel[sel[k] == v] if k in sel else sel.iloc[0:0]
    states = set(sel["state"])
    return "firing" if "firing" in states else ("pending" if "pending" in states else "inactive")
