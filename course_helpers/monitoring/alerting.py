"""Alertmanager (Debian's ``prometheus-alertmanager``) and the course's webhook receiver.

:func:`start` runs, under the supervisor, on free loopback ports:

1. the webhook receiver (:mod:`.receiver`), also scraped by Prometheus as job
   ``model-monitor`` (it exports the drift gauges; a new receiver starts without the
   gauges an earlier session left);
2. Alertmanager, clustering off, with one route: every alert goes to the receiver, grouped
   by ``alertname`` and ``job``, with class-sized waits (``group_wait`` 1 s); each start
   begins with an empty notification log, so an alert that fires again is sent again;
3. registers Alertmanager with Prometheus (``monitoring/alertmanagers.json``, file_sd: no
   reload needed).

A firing alert labelled ``action="retrain"`` (the drift alert; add the label to any rule to
make it retrain) makes the receiver start :func:`retrain`: the lesson-03 pipeline's trigger
path (drop a batch into ``monitoring/inbox``, :func:`~course_helpers.pipeline.triggers.process_pending`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from .. import config
from ..errors import BinaryNotFoundError, CourseError
from ..supervisor import Supervisor, free_port
from . import discovery as targets
from .prometheus import monitoring_dir

ALERTMANAGER = "alertmanager"
RECEIVER = "alert-receiver"
RECEIVER_JOB = "model-monitor"
MISSING = ("`prometheus-alertmanager` was not found: install Debian's prometheus-alertmanager "
           "package: apt-get install prometheus-alertmanager")


def binary() -> str:
    for name in ("prometheus-alertmanager", "alertmanager"):
        path = config.find_binary(name)
        if path:
            return path
    raise BinaryNotFoundError(MISSING)


def alertmanager_config(receiver_url: str, group_wait_s: float = 1.0,
                        group_interval_s: float = 2.0, repeat_interval: str = "1h") -> str:
    """alertmanager.yml: one route to the course's webhook, resolved alerts included."""
    return "\n".join([
        "# Written by course_helpers.monitoring.alerting",
        "route:",
        "  receiver: course-webhook",
        "  group_by: [alertname, job]",
        f"  group_wait: {group_wait_s:g}s",
        f"  group_interval: {group_interval_s:g}s",
        f"  repeat_interval: {repeat_interval}",
        "receivers:",
        "  - name: course-webhook",
        "    webhook_configs:",
        f"      - url: {json.dumps(receiver_url)}",
        "        send_resolved: true",
        "",
    ])


def start(profile: str | None = None, timeout: float = 30.0) -> dict[str, str]:
    """Start the receiver and Alertmanager (or find them); returns their URLs."""
    sup = Supervisor()
    out = status()
    rdir = monitoring_dir()
    prof = config.get_profile(profile).name
    if not out.get("receiver"):
        # the gauges of an earlier session's last drift window would re-fire its alert now
        (rdir / "drift_metrics.json").unlink(missing_ok=True)
        port = free_port()
        sup.start(RECEIVER, [sys.executable, "-m", "course_helpers.monitoring.receiver",
                             "--port", str(port), "--dir", str(rdir), "--profile", prof],
                  port=port, url=f"http://127.0.0.1:{port}/health", timeout=timeout)
        out["receiver"] = f"http://127.0.0.1:{port}"
    targets.set_targets(RECEIVER_JOB, [out["receiver"]], {"component": "drift-monitor"})
    if not out.get("alertmanager"):
        exe = binary()
        port = free_port()
        cfg = rdir / "alertmanager.yml"
        cfg.write_text(alertmanager_config(out["receiver"] + "/alerts"))
        # a fresh notification log: one kept from an earlier start remembers alerts it
        # already sent and stays silent (up to repeat_interval) when they fire again
        shutil.rmtree(monitoring_dir() / "alertmanager-data", ignore_errors=True)
        data = monitoring_dir("alertmanager-data")
        sup.start(ALERTMANAGER, [exe, f"--config.file={cfg}", f"--storage.path={data}",
                                 f"--web.listen-address=127.0.0.1:{port}",
                                 "--cluster.listen-address=", "--log.level=warn",
                                 "--data.retention=2h"],
                  port=port, url=f"http://127.0.0.1:{port}/-/ready", timeout=timeout)
        out["alertmanager"] = f"http://127.0.0.1:{port}"
    am_file = rdir / "alertmanagers.json"
    tmp = rdir / ".alertmanagers.json.tmp"
    tmp.write_text(json.dumps([{"targets": [out["alertmanager"].removeprefix("http://")]}]))
    os.replace(tmp, am_file)
    return out


def status() -> dict[str, str | None]:
    """URLs of the running Alertmanager and receiver (None when not running)."""
    sup = Supervisor()
    out: dict[str, str | None] = {}
    for key, name in (("alertmanager", ALERTMANAGER), ("receiver", RECEIVER)):
        rec = sup.get(name)
        out[key] = f"http://127.0.0.1:{rec.port}" if rec and rec.is_alive() else None
    return out


def stop() -> list[str]:
    """Stop Alertmanager and the receiver; returns what was running."""
    sup = Supervisor()
    stopped = [name for name in (ALERTMANAGER, RECEIVER) if sup.stop(name)]
    (monitoring_dir() / "alertmanagers.json").write_text("[]")
    targets.remove_targets(RECEIVER_JOB)
    return stopped


def received(kind: str = "alerts", directory: Path | None = None) -> list[dict]:
    """What the receiver wrote: ``alerts`` (webhook notifications) or ``retrain`` (runs);
    ``directory``: where a :func:`retrain` started with ``--dir`` wrote them."""
    path = (directory or monitoring_dir()) / f"{kind}.jsonl"
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []


def send_test_alert(alertname: str = "ModelInputDrift", labels: dict | None = None,
                    minutes: float = 5.0) -> None:
    """Post an alert to Alertmanager's API directly (what Prometheus does), e.g. to test the
    route to the receiver without waiting for a rule."""
    import urllib.request

    am = status().get("alertmanager")
    if not am:
        raise CourseError("Alertmanager is not running: `mlops-course monitor up`")
    now = time.time()
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + minutes * 60))
    body = [{"labels": {"alertname": alertname, "severity": "ticket", "action": "retrain",
                        "job": RECEIVER_JOB, **(labels or {})},
             "annotations": {"summary": "a test alert sent by course_helpers"},
             "startsAt": iso, "endsAt": end}]
    req = urllib.request.Request(f"{am}/api/v2/alerts", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def warm_pipeline(timeout: float = 120.0):
    """Start the lesson-03 pipeline's Prefect server now, in a background thread, so that a
    retrain an alert starts later finds it running instead of starting it (5-15 s of CPU
    the first time, while a lesson's demos mostly wait on scrape and ``for:`` intervals).

    The server is kept (like ``mlops-course pipeline server start``) until ``cleanup`` or
    :func:`course_helpers.pipeline.orchestrator.stop_server`; a retrain started while it is
    still starting waits for it (the start holds the orchestrator's file lock). Returns the
    thread; its ``error`` attribute holds what went wrong, if anything (the retrain then
    starts the server itself)."""
    import threading

    from ..pipeline import orchestrator

    def run() -> None:
        try:
            thread.url = orchestrator.start_server(timeout, keep=True)
        except Exception as err:  # noqa: BLE001 - the retrain starts it itself then
            thread.error = err

    thread = threading.Thread(target=run, name="warm-pipeline", daemon=True)
    thread.url, thread.error = None, None
    thread.start()
    return thread


def wait_for_retrain(after: float = 0.0, timeout: float = 300.0, poll: float = 1.0,
                     directory: Path | None = None) -> dict:
    """Wait until a retrain run started after ``after`` (epoch seconds) finished; returns its
    ``finished`` record (``ok``, ``version``, ``alias``, ``run_id``...). ``directory``: as in
    :func:`received`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rec in received("retrain", directory):
            if rec.get("event") == "finished" and rec.get("at", 0) >= after:
                return rec
        time.sleep(poll)
    starts = [r for r in received("retrain", directory) if r.get("at", 0) >= after]
    raise CourseError(f"no retrain run finished within {timeout:g} s (records since: {starts}); "
                      f"see the retrain-* logs in {config.workspace_dir('logs')}")


# -- the retrain process the receiver starts ------------------------------------------------
def recent_data_path() -> Path:
    """Where the drift monitor leaves the most recent labelled window: the receiver retrains
    on it (``monitoring/recent.parquet``)."""
    return monitoring_dir() / "recent.parquet"


def retrain(key: str = "", alertname: str = "", profile: str | None = None,
            directory: Path | None = None) -> dict:
    """Drop the recent labelled data into ``monitoring/inbox`` and run the lesson-03 pipeline
    on it through its trigger path; appends a ``finished`` record to ``retrain.jsonl``."""
    from ..pipeline.triggers import drop_batch, process_pending

    directory = directory or monitoring_dir()
    inbox = directory / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    recent = recent_data_path()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if recent.exists():
        dest = inbox / f"recent-{alertname or 'alert'}-{stamp}.parquet"
        tmp = inbox / f".{dest.name}.tmp"
        shutil.copyfile(recent, tmp)
        os.replace(tmp, dest)
    else:
        rows = config.get_profile(profile).n_rows
        drop_batch(inbox, n_rows=rows, seed=int(time.time()) % 10_000)
    results = process_pending(inbox, echo=print, profile=profile)
    res = results[-1] if results else None
    record = {"event": "finished", "key": key, "alertname": alertname, "at": time.time(),
              "ok": bool(res and res.ok), "state": getattr(res, "state", None),
              "version": getattr(res, "version", None), "alias": getattr(res, "alias", None),
              "flow_run_id": getattr(res, "flow_run_id", None),
              "error": getattr(res, "error", "no batch was pending") if not (res and res.ok)
              else ""}
    with open(directory / "retrain.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m course_helpers.monitoring.alerting")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("retrain")
    r.add_argument("--dir")
    r.add_argument("--key", default="")
    r.add_argument("--alertname", default="")
    r.add_argument("--profile")
    args = ap.parse_args(argv)
    rec = retrain(args.key, args.alertname, args.profile, Path(args.dir) if args.dir else None)
    print(json.dumps(rec))
    return 0 if rec["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
