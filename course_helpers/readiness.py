"""Is it up yet? One probe and one readiness wait for every server the helpers start.

Ground floor: imports nothing from the course but :mod:`.errors`, so the supervisor, the
backends, the tracking and Prefect servers and the model server all wait the same way.

- :func:`probe` asks once: an ``http(s)://`` URL (what counts as ready is ``expect``) or a
  ``tcp://host:port`` address (a connection is accepted). The answer says why not.
- :func:`wait_until_ready` probes with backoff until ready, the timeout, or the process
  dies; the error is one sentence naming the URL, the timeout and the log file, then the
  log's last lines.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, Union

from .errors import ReadinessTimeoutError

#: What counts as ready: ``None`` (any answer below 500, or an accepted TCP connection),
#: one HTTP status (``200``), or a function of ``(status, body)``.
Expect = Union[None, int, Callable[[int, bytes], bool]]


@dataclasses.dataclass(frozen=True)
class Answer:
    """One probe's outcome: ``ok``, and ``detail`` (``HTTP 503``, ``connection refused``...)."""

    ok: bool
    detail: str

    def __bool__(self) -> bool:
        return self.ok


def _accepts(expect: Expect, status: int, body: bytes) -> bool:
    if expect is None:
        return status < 500
    if isinstance(expect, int):
        return status == expect
    try:
        return bool(expect(status, body))
    except ValueError:  # e.g. a body that is not the JSON the check wanted
        return False


def probe(url: str, *, expect: Expect = None, timeout: float = 2.0) -> Answer:
    """Ask ``url`` once (at most ``timeout`` seconds); ``tcp://host:port`` only connects."""
    if url.startswith("tcp://"):
        host, _, port = url.removeprefix("tcp://").rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
                return Answer(True, "connection accepted")
        except (OSError, ValueError) as err:
            return Answer(False, _reason(err))
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read() if err.fp else b""
    except (OSError, ValueError) as err:
        return Answer(False, _reason(err))
    return Answer(_accepts(expect, status, body), f"HTTP {status}")


def _reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None) or err
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "no answer in time"
    return str(reason).strip() or type(reason).__name__


def _alive(proc: Any) -> tuple[bool, int | None]:
    """(alive, exit code if known) of a Popen, a psutil.Process, a supervisor record or a
    function returning bool."""
    if proc is None:
        return True, None
    if isinstance(proc, subprocess.Popen):
        code = proc.poll()
        return code is None, code
    for method in ("is_alive", "is_running"):
        if hasattr(proc, method):
            return bool(getattr(proc, method)()), None
    return bool(proc()), None


def _tail(log: str | os.PathLike | Callable[[], str] | None, lines: int = 15) -> str:
    if log is None:
        return ""
    if callable(log):
        return log()
    try:
        with open(log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_until_ready(url: str, timeout: float, *, expect: Expect = None, proc: Any = None,
                     log: str | os.PathLike | Callable[[], str] | None = None,
                     name: str | None = None) -> float:
    """Probe ``url`` until it is ready (see :data:`Expect`); return the seconds it took.

    ``proc`` (a ``subprocess.Popen``, a ``psutil.Process``, anything with ``is_alive()``, or
    a function returning bool) ends the wait early when it dies. ``log`` (a file, or a
    function returning text) is named and its last lines shown in the error.
    Raises :class:`~course_helpers.errors.ReadinessTimeoutError`.
    """
    who = name or url
    start = time.monotonic()
    delay = 0.05
    answer = Answer(False, "not asked yet")
    while True:
        left = timeout - (time.monotonic() - start)
        answer = probe(url, expect=expect, timeout=max(0.2, min(2.0, left)))
        if answer:
            return time.monotonic() - start
        alive, code = _alive(proc)
        where = f"; its log: {log}" if isinstance(log, (str, os.PathLike)) else ""
        if not alive:
            code_text = f" (code {code})" if code is not None else ""
            raise ReadinessTimeoutError(
                f"{who} exited{code_text} before {url} was ready ({time.monotonic() - start:.3g} s "
                f"into a {timeout:.3g} s wait){where}. Last log lines:\n{_tail(log)}")
        if time.monotonic() - start > timeout:
            raise ReadinessTimeoutError(
                f"{who} was not ready at {url} after {timeout:.3g} s (last answer: "
                f"{answer.detail}){where}. Last log lines:\n{_tail(log)}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
