"""Lesson 08's live demo as one call: steady traffic, a fault, the burn-rate alert's life.

:func:`fault_demo` sends paced predictions from a background thread, switches the server's
fault on (``/admin/fault``), records the alert's state (inactive -> pending -> firing) every
``poll_s`` from Prometheus, switches the fault off once the alert fired (plus ``hold_s``),
and waits until it resolved. ``alert_delay_s`` is fault start -> firing.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

from ..errors import CourseError


class PacedLoad:
    """A background thread posting one prediction every ``1/rps`` seconds to ``url``
    (a closed loop would hide a fast-failing server, see DESIGN.md); counts answers by
    status."""

    def __init__(self, url: str, rps: float = 20.0, rows: int = 200) -> None:
        from ..data import request_rows

        self.bodies = [json.dumps({"row": r}).encode() for r in request_rows(rows, seed=11)]
        self.url, self.pause = url.rstrip("/") + "/predict", 1.0 / rps
        self.counts: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="paced-load")

    def _run(self) -> None:
        i = 0
        nxt = time.monotonic()
        while not self._stop.is_set():
            req = urllib.request.Request(self.url, data=self.bodies[i % len(self.bodies)],
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    resp.read()
                    code = resp.status
            except urllib.error.HTTPError as err:
                code = err.code
            except OSError:
                code = 0
            self.counts[code] = self.counts.get(code, 0) + 1
            i += 1
            nxt += self.pause
            self._stop.wait(max(0.0, nxt - time.monotonic()))

    def start(self) -> "PacedLoad":
        self._thread.start()
        return self

    def stop(self) -> dict[int, int]:
        self._stop.set()
        self._thread.join(timeout=15)
        return dict(self.counts)

    def __enter__(self) -> "PacedLoad":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def fault_demo(urls: str | list[str], job: str, error_rate: float = 0.3,
               latency_s: float = 0.0, latency_share: float = 1.0,
               alert: str = "ModelServerAvailabilityBurnRateFast",
               rps: float = 20.0, warmup_s: float = 4.0, hold_s: float = 3.0,
               timeout_s: float = 60.0, poll_s: float = 0.5,
               load_url: str | None = None) -> dict[str, Any]:
    """Run the demo against the replicas ``urls`` of scrape job ``job``; returns ``timeline``
    (``[(seconds since start, state)]``), ``fault_window`` (seconds), ``alert_delay_s``,
    ``resolve_s`` (fault off -> inactive), ``start``/``end`` (epoch, for dashboards) and
    the answers by HTTP status."""
    from ..serving.faults import set_fault
    from .prometheus import alert_state

    urls = [urls] if isinstance(urls, str) else list(urls)
    timeline: list[tuple[float, str]] = []
    t_start = time.time()
    t0 = time.monotonic()

    def record() -> str:
        state = alert_state(alert, job=job)
        timeline.append((round(time.monotonic() - t0, 2), state))
        return state

    def wait_until(pred, limit: float, what: str) -> float:
        begin = time.monotonic()
        while not pred(record()):
            if time.monotonic() - begin > limit:
                raise CourseError(f"{alert} did not {what} within {limit:g} s (last state "
                                  f"{timeline[-1][1]}): is Prometheus scraping job {job}? "
                                  f"see `mlops-course monitor status`")
            time.sleep(poll_s)
        return time.monotonic() - begin

    load = PacedLoad(load_url or urls[0], rps=rps).start()
    try:
        end_warm = time.monotonic() + warmup_s
        while time.monotonic() < end_warm:
            record()
            time.sleep(poll_s)
        on = time.monotonic() - t0
        set_fault(urls, error_rate=error_rate, latency_s=latency_s, latency_share=latency_share)
        try:
            delay = wait_until(lambda s: s == "firing", timeout_s, "fire")
            end_hold = time.monotonic() + hold_s
            while time.monotonic() < end_hold:
                record()
                time.sleep(poll_s)
        finally:
            set_fault(urls)  # off, whatever happened
        off = time.monotonic() - t0
        resolve = wait_until(lambda s: s == "inactive", timeout_s * 2, "resolve")
        record()
    finally:
        counts = load.stop()
    return {"timeline": timeline, "fault_window": (on, off), "alert_delay_s": round(delay, 2),
            "resolve_s": round(resolve, 2), "start": t_start, "end": time.time(),
            "answers": counts, "alert": alert, "job": job}
