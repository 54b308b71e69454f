"""Locust in the background for as long as a rollout lasts: ``start``, then ``stop`` -> totals.

The lesson-02 runner runs Locust for a fixed duration and waits; a canary lasts as long as
its analysis decides, so here Locust runs with a generous ``-t`` and is stopped with SIGTERM
(Locust then writes its JSON and the per-second timeline). Same locustfile, same payloads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .. import config
from ..errors import CourseError
from ..loadtest.runner import LOCUSTFILE, parse_json
from ..supervisor import ENV_TAG


class BackgroundLoad:
    """Paced Locust users against ``host`` until :meth:`stop` (or ``max_s``)."""

    def __init__(self, host: str, users: int, rate_per_user: float, max_s: int = 600,
                 out_dir: str | Path | None = None, label: str = "rollout") -> None:
        if not host.startswith(("http://127.", "http://localhost")):
            raise CourseError(f"load tests only target loopback addresses, not {host}")
        self.host, self.users, self.rate, self.max_s = host, users, rate_per_user, max_s
        out = Path(out_dir) if out_dir else config.workspace_dir("loadtests")
        out.mkdir(parents=True, exist_ok=True)
        self.stem = out / f"{label}-{time.strftime('%H%M%S')}-{os.getpid()}"
        self.label = label
        self.proc: subprocess.Popen | None = None
        self.started_file = Path(f"{self.stem}.started")

    def start(self, wait_first_s: float = 30.0) -> "BackgroundLoad":
        """Start Locust; return once its first request was answered (or after ``wait_first_s``)."""
        from ..data import request_rows

        rows = Path(f"{self.stem}.rows.json")
        rows.write_text(json.dumps(request_rows(500)))
        env = dict(os.environ, MLOPS_LOAD_ROWS=str(rows), MLOPS_LOAD_MIX="uniform",
                   MLOPS_LOAD_BATCH="1", MLOPS_LOAD_API="course",
                   MLOPS_LOAD_TIMELINE=f"{self.stem}.timeline.json", MLOPS_LOAD_SHAPE="constant",
                   MLOPS_LOAD_USERS=str(self.users), MLOPS_LOAD_DURATION=str(self.max_s),
                   MLOPS_LOAD_RATE=str(self.rate), MLOPS_LOAD_STARTED=str(self.started_file),
                   LOCUST_SKIP_MONKEY_PATCH_CHECK="1")
        env[ENV_TAG] = f"{config.workspace()}::locust-{self.label}"
        locust = str(Path(sys.executable).with_name("locust"))
        cmd = [locust, "-f", str(LOCUSTFILE), "--headless", "-u", str(self.users),
               "-r", str(self.users), "-t", f"{self.max_s}s", "--host", self.host,
               "--json-file", str(self.stem), "--only-summary", "--stop-timeout", "2",
               "--loglevel", "WARNING"]
        with open(f"{self.stem}.log", "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + wait_first_s
        while not self.started_file.exists() and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CourseError(f"locust exited at start (code {self.proc.returncode}); "
                                  f"see {self.stem}.log")
            time.sleep(0.1)
        return self

    def stop(self, timeout_s: float = 30.0) -> dict:
        """SIGTERM Locust, wait for its results; returns totals and the per-second
        ``timeline`` (list of ``{"t", "ok", "failed", "p50_ms", "p95_ms"}``)."""
        if self.proc is None:
            return {}
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        out: dict = {}
        if Path(f"{self.stem}.json").exists():
            out = parse_json(f"{self.stem}.json")
        tl = Path(f"{self.stem}.timeline.json")
        out["timeline"] = json.loads(tl.read_text()) if tl.exists() else []
        if "requests" not in out:  # JSON missing: totals from the timeline
            out["requests"] = sum(r["ok"] + r["failed"] for r in out["timeline"])
            out["failures"] = sum(r["failed"] for r in out["timeline"])
        self.proc = None
        return out

    def kill(self) -> None:
        """Stop at once (Ctrl-C paths): no results."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.proc = None
