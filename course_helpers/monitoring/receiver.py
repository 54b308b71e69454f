"""The course's webhook receiver: what Alertmanager calls, and the drift metrics exporter.

``python -m course_helpers.monitoring.receiver --port P --dir D [--profile smoke]`` serves on
127.0.0.1 (standard library only, ~20 MB):

* ``POST /alerts``: an Alertmanager webhook notification. Every notification is appended to
  ``D/alerts.jsonl``. Each *firing* alert carrying the label ``action="retrain"`` starts the
  lesson-03 pipeline once (per alert fingerprint and start time) through its trigger path:
  a supervised ``python -m course_helpers.monitoring.alerting retrain`` drops the recent
  labelled data into the inbox and runs :func:`course_helpers.pipeline.triggers.process_pending`;
  ``D/retrain.jsonl`` records what was started and how it ended.
* ``GET /alerts``: the notifications received so far (JSON list).
* ``GET /metrics``: the drift gauges the drift monitor last published
  (``D/drift_metrics.json``, see :func:`course_helpers.monitoring.drift.export`), in
  Prometheus's text format, so drift alerts go through the same Prometheus and Alertmanager.
* ``GET /health``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TRIGGER_LABEL = ("action", "retrain")


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(path: Path) -> str:
    """The drift gauges file as Prometheus text format ('' if none was published)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    lines, seen = [], set()
    for m in data.get("metrics", []):
        name = m["name"]
        if name not in seen:
            seen.add(name)
            lines.append(f"# HELP {name} {m.get('help', name)}")
            lines.append(f"# TYPE {name} gauge")
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(m.get("labels", {}).items()))
        value = float(m["value"])
        text = "NaN" if value != value else repr(value)
        lines.append(f"{name}{{{labels}}} {text}" if labels else f"{name} {text}")
    return "\n".join(lines) + "\n"


class Receiver:
    """State of one receiver: where it writes, which retrain runs it started."""

    def __init__(self, directory: Path, profile: str | None) -> None:
        self.dir = directory
        self.profile = profile
        self.lock = threading.Lock()
        self.started: set[str] = set()
        self.dir.mkdir(parents=True, exist_ok=True)

    def _append(self, name: str, record: dict) -> None:
        with self.lock, open(self.dir / name, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def notification(self, body: dict) -> list[str]:
        """Record one webhook notification; start retraining for new firing retrain alerts."""
        self._append("alerts.jsonl", {"received_at": time.time(), **body})
        started = []
        for alert in body.get("alerts", []):
            labels = alert.get("labels", {})
            if alert.get("status") != "firing" or labels.get(TRIGGER_LABEL[0]) != TRIGGER_LABEL[1]:
                continue
            key = f"{alert.get('fingerprint', '')}@{alert.get('startsAt', '')}"
            with self.lock:
                if key in self.started:
                    continue
                self.started.add(key)
            started.append(self.retrain(alert, key))
        return started

    def retrain(self, alert: dict, key: str) -> str:
        """Start the pipeline through its trigger path, supervised; returns the process name."""
        from ..supervisor import Supervisor

        n = len(self.started)
        name = f"retrain-{n}-{int(time.time())}"
        cmd = [sys.executable, "-m", "course_helpers.monitoring.alerting", "retrain",
               "--dir", str(self.dir), "--key", key,
               "--alertname", alert.get("labels", {}).get("alertname", "?")]
        if self.profile:
            cmd += ["--profile", self.profile]
        try:
            Supervisor().start(name, cmd, timeout=5, stop_on_exit=False)
            self._append("retrain.jsonl", {"event": "started", "process": name, "key": key,
                                           "alertname": alert.get("labels", {}).get("alertname"),
                                           "at": time.time()})
        except Exception as err:  # noqa: BLE001 - keep receiving alerts
            self._append("retrain.jsonl", {"event": "failed_to_start", "key": key,
                                           "error": str(err), "at": time.time()})
        return name


def make_handler(rcv: Receiver):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # quiet: the log file stays small
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/health":
                return self._send(200, b'{"status": "alive"}')
            if self.path == "/metrics":
                text = render_metrics(rcv.dir / "drift_metrics.json")
                return self._send(200, text.encode(), "text/plain; version=0.0.4")
            if self.path == "/alerts":
                try:
                    lines = (rcv.dir / "alerts.jsonl").read_text().splitlines()
                except OSError:
                    lines = []
                return self._send(200, ("[" + ",".join(lines) + "]").encode())
            return self._send(404, b'{"error": "try /alerts, /metrics or /health"}')

        def do_POST(self):
            if self.path != "/alerts":
                return self._send(404, b'{"error": "POST Alertmanager webhooks to /alerts"}')
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return self._send(400, b'{"error": "the body is not JSON"}')
            started = rcv.notification(body)
            return self._send(200, json.dumps({"retrain_started": started}).encode())

    return Handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m course_helpers.monitoring.receiver")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--profile")
    args = ap.parse_args(argv)
    rcv = Receiver(Path(args.dir), args.profile)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(rcv))
    print(f"receiver on 127.0.0.1:{args.port}, writing to {args.dir} (pid {os.getpid()})",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
