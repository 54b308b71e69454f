"""A fault switch for live demos (lesson 08): make a share of ``/predict`` fail or slow down.

``POST /admin/fault`` with ``{"error_rate": 0.3}`` makes 30% of predictions answer 500;
``{"latency_s": 0.5, "latency_share": 0.2}`` delays 20% of them by 0.25-0.75 s (uniform:
a slow dependency, not a constant); ``{}`` clears it; ``GET /admin/fault`` shows the
current one. Errors are injected at the HTTP edge after the request body is read (the
client sees the answer, not a reset); the delay inside the prediction (a worker thread),
so the prediction log's ``latency_ms`` includes it like the metrics do.

Every gunicorn worker of a server reads the same small file (``fault.json`` in the server's
Prometheus multiprocess directory, or ``$MLOPS_FAULT_FILE``), re-checked at most every
0.25 s, so the switch reaches all workers of a replica, in a container too. A teaching switch:
a production server would not expose it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from pathlib import Path

FAULT_ENV = "MLOPS_FAULT_FILE"
RECHECK_S = 0.25


@dataclasses.dataclass(frozen=True)
class Fault:
    """``error_rate``: share of requests answered 500; ``latency_s`` added to a share
    ``latency_share`` of requests (default: all of them when ``latency_s`` > 0)."""

    error_rate: float = 0.0
    latency_s: float = 0.0
    latency_share: float = 1.0

    @classmethod
    def parse(cls, body: dict) -> "Fault":
        """From a JSON body; ValueError (one sentence) for unknown keys or values out of range."""
        if not isinstance(body, dict):
            raise ValueError('send a JSON object such as {"error_rate": 0.3} or '
                             '{"latency_s": 0.5, "latency_share": 0.2}; {} clears the fault')
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(body) - fields
        if unknown:
            raise ValueError(f"unknown fault field(s) {sorted(unknown)}: use {sorted(fields)}")
        try:
            fault = cls(**{k: float(v) for k, v in body.items()})
        except (TypeError, ValueError):
            raise ValueError("fault values must be numbers") from None
        if not 0 <= fault.error_rate <= 1 or not 0 <= fault.latency_share <= 1:
            raise ValueError("error_rate and latency_share are shares: between 0 and 1")
        if not 0 <= fault.latency_s <= 30:
            raise ValueError("latency_s must be between 0 and 30 seconds")
        return fault

    @property
    def active(self) -> bool:
        return self.error_rate > 0 or self.latency_s > 0


class FaultSwitch:
    """The fault every worker of this server shares (through a file when there is one)."""

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            path = os.environ.get(FAULT_ENV) or (
                Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]) / "fault.json"
                if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else None)
        self.path = Path(path) if path else None
        self._fault = Fault()
        self._checked = 0.0
        self._mtime: float | None = None

    def current(self) -> Fault:
        if self.path is None:
            return self._fault
        now = time.monotonic()
        if now - self._checked >= RECHECK_S:
            self._checked = now
            try:
                mtime = self.path.stat().st_mtime
            except OSError:
                self._fault, self._mtime = Fault(), None
                return self._fault
            if mtime != self._mtime:
                try:
                    self._fault = Fault.parse(json.loads(self.path.read_text()))
                    self._mtime = mtime
                except (OSError, ValueError):
                    pass  # half-written or bad: keep the previous one, read again later
        return self._fault

    def set(self, fault: Fault) -> Fault:
        self._fault = fault
        if self.path is not None:
            body = {k: v for k, v in dataclasses.asdict(fault).items()}
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(body))
            os.replace(tmp, self.path)
            self._checked = 0.0
        return fault

    def fail(self) -> bool:
        """For one request: answer 500?"""
        fault = self.current()
        return fault.error_rate > 0 and random.random() < fault.error_rate

    def delay(self) -> float:
        """For one request: seconds to add (0.5x-1.5x ``latency_s`` for a share of them)."""
        fault = self.current()
        if fault.latency_s <= 0 or random.random() >= fault.latency_share:
            return 0.0
        return fault.latency_s * random.uniform(0.5, 1.5)


def set_fault(urls: str | list[str], error_rate: float = 0.0, latency_s: float = 0.0,
              latency_share: float = 1.0, timeout: float = 10.0) -> list[dict]:
    """Switch the fault on every server in ``urls`` (replica URLs, not the load balancer:
    each replica must get it); all zeros clears it. Returns each server's answer."""
    import urllib.request

    urls = [urls] if isinstance(urls, str) else list(urls)
    body = json.dumps(dataclasses.asdict(Fault.parse(
        {"error_rate": error_rate, "latency_s": latency_s, "latency_share": latency_share}
    ))).encode()
    out = []
    for url in urls:
        req = urllib.request.Request(url.rstrip("/") + "/admin/fault", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            out.append(json.loads(resp.read()))
    return out
